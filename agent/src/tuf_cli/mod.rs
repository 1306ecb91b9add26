//! `mast-agent tuf`: a plain TUF client with the command line of the TUF conformance suite's
//! client-under-test (`tuf-conformance`, `CLIENT-CLI.md`), over the same code the agent trusts.
//!
//! ```text
//! mast-agent tuf --metadata-dir D init ROOT_JSON
//! mast-agent tuf --metadata-dir D --metadata-url U refresh
//! mast-agent tuf --metadata-dir D --metadata-url U --target-name T [--target-name T2 …] \
//!                --target-base-url B --target-dir TD download
//! ```
//!
//! The workflow is [`mast_mirror::client::Client`] driving `mast_protocol`'s sans-IO session, exactly as
//! the agent runs it; only the edges differ. Trusted metadata lives as plain files in `D`
//! ([`store::FileStore`], written before it is used), metadata is read from `U/NAME` and targets from
//! `B/…` ([`remote::Remote`]), and a downloaded target is written to `TD` under its name percent-encoded
//! as python-tuf's `ngclient` does (`apps/web.yaml` is `TD/apps%2Fweb.yaml`), through a staging file
//! renamed into place only once its length and sha256 match. A target already in `TD` with the signed
//! length and hashes is not downloaded again.
//!
//! Exit status: 0 on success, 1 on any failure (with the reason on stderr), as the conformance suite
//! expects. None of this reads the agent's configuration or state database.

pub mod remote;
pub mod store;

use std::fs::{self, File};
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use mast_mirror::client::{Client, ClientError};
use mast_mirror::tls;
use mast_protocol::tuf::verify::verify_hashes;
use mast_protocol::tuf::{Limits, RoleName, TargetFile, TufError, quote_role_name};
use time::OffsetDateTime;

use remote::{DownloadError, Remote, TargetNaming};
use store::{FileStore, check_root, staging_path};

/// Arguments of `mast-agent tuf`: the conformance CLI's options, given before the action.
#[derive(Debug, Args)]
pub struct TufArgs {
    /// Where trusted metadata is kept, as plain files (root.json, timestamp.json, …).
    #[arg(long, value_name = "DIR")]
    pub metadata_dir: PathBuf,
    /// Base URL of the repository's metadata files (`URL/timestamp.json`, `URL/2.root.json`).
    #[arg(long, value_name = "URL")]
    pub metadata_url: Option<String>,
    /// A target to download (repeatable).
    #[arg(long = "target-name", value_name = "NAME")]
    pub target_names: Vec<String>,
    /// Base URL of the repository's target files.
    #[arg(long, value_name = "URL")]
    pub target_base_url: Option<String>,
    /// Where downloaded targets are written.
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: TufAction,
}

/// The conformance CLI's three actions.
#[derive(Debug, Subcommand)]
pub enum TufAction {
    /// Trust ROOT_JSON: check it is a root signed by a threshold of its own keys, copy it to
    /// METADATA_DIR/root.json. Nothing is fetched.
    Init {
        /// The initial trusted root.json.
        trusted_root: PathBuf,
    },
    /// Run the TUF client workflow: root chain, timestamp, snapshot, targets.
    Refresh,
    /// Refresh, then look up each --target-name (delegations included), download and verify it into
    /// --target-dir, unless a file with the signed length and hashes is already there.
    Download,
}

/// Why a `tuf` command failed.
#[derive(Debug, thiserror::Error)]
pub enum TufCliError {
    /// A required option is missing or a URL is unusable.
    #[error("{0}")]
    Usage(String),
    /// The metadata directory holds no root.json.
    #[error("{}: no trusted root.json (run `mast-agent tuf --metadata-dir DIR init ROOT_JSON` first)", .dir.display())]
    NotInitialised {
        /// The metadata directory.
        dir: PathBuf,
    },
    /// A root to trust does not verify.
    #[error("{}: {source}", .path.display())]
    Trust {
        /// The root file.
        path: PathBuf,
        /// Why.
        #[source]
        source: TufError,
    },
    /// The TUF workflow failed: the repository refused, unreachable, or the store failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A target's download failed or its bytes did not verify.
    #[error("target {name}: {source}")]
    Download {
        /// The target.
        name: String,
        /// Why.
        #[source]
        source: DownloadError,
    },
    /// The async runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(#[source] io::Error),
    /// Local file I/O.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// What one `download` did with one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Downloaded, verified and written here.
    Downloaded(PathBuf),
    /// Already here with the signed length and hashes; nothing was downloaded.
    Cached(PathBuf),
}

/// Runs `mast-agent tuf …`, printing the error (and its causes) on stderr; 0 on success, 1 on failure.
pub fn main(args: &TufArgs) -> ExitCode {
    // Warnings (a trusted file that no longer verifies) go to stderr; without them the client still works.
    if let Err(e) = crate::telemetry::init(crate::telemetry::LogFormat::Plain) {
        eprintln!("mast-agent tuf: logging: {e}");
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message.push_str(": ");
                    message.push_str(&text);
                }
                source = cause.source();
            }
            eprintln!("mast-agent tuf: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one `tuf` action.
pub fn run(args: &TufArgs) -> Result<(), TufCliError> {
    let usage = |what: &str| TufCliError::Usage(what.to_owned());
    // Options are checked before anything is opened: a bad command line fails without side effects.
    let target_dir = match &args.action {
        TufAction::Init { trusted_root } => return init(&args.metadata_dir, trusted_root),
        TufAction::Refresh => None,
        TufAction::Download => {
            if args.target_names.is_empty() {
                return Err(usage("download needs at least one --target-name"));
            }
            if args.target_base_url.is_none() {
                return Err(usage("download needs --target-base-url"));
            }
            let dir = args.target_dir.as_deref();
            Some(dir.ok_or_else(|| usage("download needs --target-dir"))?)
        }
    };
    let metadata_url = args
        .metadata_url
        .as_deref()
        .ok_or_else(|| usage("--metadata-url is required"))?;
    let client = tls::http_client(None).map_err(|e| TufCliError::Usage(e.to_string()))?;
    let remote = Remote::new(metadata_url, args.target_base_url.as_deref(), client)
        .map_err(|e| TufCliError::Usage(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TufCliError::Runtime)?;
    let now = OffsetDateTime::now_utc();
    runtime.block_on(async {
        let Some(target_dir) = target_dir else {
            return refresh(&args.metadata_dir, &remote, now).await;
        };
        let names = &args.target_names;
        for fetched in download(&args.metadata_dir, &remote, names, target_dir, now).await? {
            match fetched {
                Fetched::Downloaded(path) => println!("downloaded {}", path.display()),
                Fetched::Cached(path) => println!("up to date {}", path.display()),
            }
        }
        Ok(())
    })
}

/// `init`: trusts `root` (a root signed by a threshold of its own keys) by copying it to `dir/root.json`.
pub fn init(dir: &Path, root: &Path) -> Result<(), TufCliError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TufCliError::Io { path, source }
    };
    let bytes = fs::read(root).map_err(io(root))?;
    check_root(root, &bytes)?;
    fs::create_dir_all(dir).map_err(io(dir))?;
    FileStore::new(dir)
        .save(&RoleName::Root, &bytes)
        .map_err(io(&dir.join("root.json")))?;
    println!(
        "trusted {} as {}",
        root.display(),
        dir.join("root.json").display()
    );
    Ok(())
}

/// `refresh`: the TUF workflow from the trusted files in `dir`, storing each newly trusted file there.
pub async fn refresh(dir: &Path, remote: &Remote, now: OffsetDateTime) -> Result<(), TufCliError> {
    let store = FileStore::new(dir);
    let trusted = store.load()?;
    let mut client = Client::new(remote, store, trusted, now, Limits::default());
    client.refresh().await?;
    let t = client.trusted();
    let version = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    println!(
        "refreshed: root {}, timestamp {}, snapshot {}, targets {}",
        t.root().version(),
        version(t.timestamp().map(|m| m.version())),
        version(t.snapshot().map(|m| m.version())),
        version(t.targets().map(|m| m.version())),
    );
    Ok(())
}

/// `download`: refresh, then each target in `names`, in order, into `target_dir`.
pub async fn download(
    dir: &Path,
    remote: &Remote,
    names: &[String],
    target_dir: &Path,
    now: OffsetDateTime,
) -> Result<Vec<Fetched>, TufCliError> {
    let store = FileStore::new(dir);
    let trusted = store.load()?;
    let mut client = Client::new(remote, store, trusted, now, Limits::default());
    client.refresh().await?;
    let naming = if client.trusted().root().signed.consistent_snapshot {
        TargetNaming::Consistent
    } else {
        TargetNaming::Plain
    };
    fs::create_dir_all(target_dir).map_err(|source| TufCliError::Io {
        path: target_dir.to_path_buf(),
        source,
    })?;
    let mut done = Vec::with_capacity(names.len());
    for name in names {
        let target = client.find_target(name).await?;
        let path = target_dir.join(quote_role_name(name));
        if matches_signed(&path, &target).map_err(|source| TufCliError::Io {
            path: path.clone(),
            source,
        })? {
            tracing::debug!(target = %name, path = %path.display(), "already downloaded");
            done.push(Fetched::Cached(path));
            continue;
        }
        fetch_into(remote, name, &target, naming, &path).await?;
        done.push(Fetched::Downloaded(path));
    }
    Ok(done)
}

/// Downloads `name` to a staging file beside `path`, checks it and renames it into place.
///
/// The file is not fsynced: a target is only ever used after its length and hashes are checked again
/// (a later `download` re-reads any file already in place), so what a power loss can leave — an empty or
/// torn file under the final name — is found wrong and downloaded again. The trusted metadata, which
/// rollback protection rests on, is written durably (`store.rs`).
async fn fetch_into(
    remote: &Remote,
    name: &str,
    target: &TargetFile,
    naming: TargetNaming,
    path: &Path,
) -> Result<(), TufCliError> {
    let failed = |source| TufCliError::Download {
        name: name.to_owned(),
        source,
    };
    let io = |source| TufCliError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (url, sha256) = remote.target_url(name, target, naming).map_err(failed)?;
    let staging = staging_path(path);
    let result = async {
        let mut file = File::create(&staging).map_err(io)?;
        // Written as received, on this thread: `download` hashes on another, so receiving and writing
        // share one core while hashing, the costlier, has the other. The blocking write holds nothing
        // else up (this runtime runs this download alone); the kernel buffers the socket meanwhile.
        remote
            .download(&url, target.length, &sha256, &mut |piece| {
                file.write_all(&piece)
            })
            .await
            .map_err(|e| match e {
                DownloadError::Sink { source, .. } => io(source),
                e => failed(e),
            })?;
        // sha256 was checked while streaming; any other hash listed (sha512) is checked on the file.
        if target.hashes.keys().any(|a| a != "sha256") {
            check_hashes(&staging, target).map_err(|reason| {
                failed(DownloadError::Mismatch {
                    url: url.clone(),
                    reason,
                })
            })?;
        }
        fs::rename(&staging, path).map_err(io)
    }
    .await;
    if result.is_err() {
        // Best effort: unverified bytes must not stay behind; the error that matters is `result`.
        let _ = fs::remove_file(&staging);
    }
    result
}

/// Whether `path` holds exactly the signed length and hashes.
fn matches_signed(path: &Path, target: &TargetFile) -> io::Result<bool> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() != target.length {
        return Ok(false);
    }
    let Some(sha256) = mast_protocol::tuf::verify::signed_sha256(&target.hashes) else {
        return Ok(false);
    };
    let mut hasher = mast_protocol::digest::Sha256Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    if hasher.finish() != sha256 {
        return Ok(false);
    }
    Ok(!target.hashes.keys().any(|a| a != "sha256") || check_hashes(path, target).is_ok())
}

/// Checks every hash mast knows (sha256, sha512) of the file at `path`, read whole: only for targets
/// that list more than sha256, which mast's own repositories never do.
fn check_hashes(path: &Path, target: &TargetFile) -> Result<(), String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    verify_hashes(&bytes, &target.hashes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_target_must_match_length_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let target = TargetFile {
            length: 5,
            hashes: [(
                "sha256".to_owned(),
                mast_protocol::digest::Sha256Digest::of(b"hello").to_hex(),
            )]
            .into(),
            custom: None,
            extra: Default::default(),
        };
        assert!(!matches_signed(&path, &target).unwrap());
        fs::write(&path, b"hellO").unwrap();
        assert!(!matches_signed(&path, &target).unwrap());
        fs::write(&path, b"hello!").unwrap();
        assert!(!matches_signed(&path, &target).unwrap());
        fs::write(&path, b"hello").unwrap();
        assert!(matches_signed(&path, &target).unwrap());
    }
}
