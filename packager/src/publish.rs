//! `mast publish REPO --to DEST`: copies a verified repository to a mirror so that no reader ever sees it
//! half-written.
//!
//! The repository directory is verified first ([`plan`]): a repository a site would refuse is never
//! published, and nothing is uploaded before that check passes. Then, each object only if the destination
//! lacks it (`exists` before `put`, so a second run of an unchanged repository uploads nothing):
//!
//! 1. chunks, then the bundle and index targets (immutable, content-addressed; several in flight);
//! 2. each release's links ([`MirrorWrite::link_release`]: the Flux artifact, release and channel tags and
//!    referrers on OCI; nothing on directories and HTTP origins);
//! 3. the versioned metadata: targets roles, snapshot, then the root chain;
//! 4. `metadata/timestamp.json`, last, and only when it differs from the destination's.
//!
//! Every object a timestamp (transitively) names is therefore on the destination before that timestamp is,
//! and a publish killed at any instant leaves the old release fully readable; the next run picks up where
//! it stopped. A destination whose timestamp is newer than the repository's is refused: publishing would
//! roll every reader back, and they would refuse it anyway.

mod plan;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use mast_mirror::{
    Mirror, MirrorError, MirrorOptions, MirrorRead, MirrorSpec, MirrorWrite, PresignCommand,
};
use mast_protocol::tuf::{Signed, Timestamp};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::task::JoinSet;

use self::plan::{Plan, Upload};

/// Text for people, JSON for programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// `mast publish` arguments.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The repository directory (a mirror layout; `REPO/.mast/` is never published).
    #[arg(value_name = "REPO")]
    pub repo: PathBuf,
    /// The destination: `dir:PATH`, `http(s)://ORIGIN/PATH`, `oci://REGISTRY/REPOSITORY` or
    /// `oci+http://…` for a plain-HTTP registry.
    #[arg(long, value_name = "DEST")]
    pub to: MirrorSpec,
    /// For http(s) destinations that take uploads only through signed URLs: a command printing one
    /// (run as `CMD… METHOD PATH CONTENT_TYPE`).
    #[arg(long, value_name = "CMD")]
    pub presign_cmd: Option<String>,
    /// Extra CA certificates (PEM) to trust for https and oci destinations.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Registry user name, for oci destinations.
    #[arg(long, env = "MAST_REGISTRY_USER", value_name = "USER")]
    pub registry_user: Option<String>,
    /// Registry password or token, for oci destinations.
    #[arg(
        long,
        env = "MAST_REGISTRY_PASSWORD",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub registry_password: Option<String>,
    /// Uploads in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Attempts per request when the destination fails transiently (a connection reset, a timeout, HTTP
    /// 5xx, 408 or 429), with backoff doubling from 250 ms.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub attempts: u32,
    /// Where the releases come from (a CI or git URL), for the OCI `source` annotation.
    #[arg(long, value_name = "URL", default_value = "")]
    pub source: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Why a publish stopped. Nothing was uploaded when the repository failed verification.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The repository does not verify; nothing was published.
    #[error("{}: {reason}; nothing was published", file.display())]
    Repository {
        /// The file (or directory) at fault.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A local file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The destination failed; what was uploaded before stays, and is all immutable.
    #[error("{destination}: {source}")]
    Destination {
        /// The destination.
        destination: String,
        /// What it said.
        #[source]
        source: MirrorError,
    },
    /// The destination's timestamp is newer than the repository's: publishing would roll readers back.
    #[error(
        "{destination} serves timestamp version {remote}, newer than the repository's {local}; refusing to roll it back"
    )]
    Stale {
        /// The destination.
        destination: String,
        /// Its timestamp version.
        remote: u64,
        /// The repository's.
        local: u64,
    },
    /// A flag that does not fit the destination.
    #[error("{0}")]
    Usage(String),
}

impl crate::ExitStatus for PublishError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Repository { .. } | Self::Stale { .. } => crate::exit::DATA,
            Self::Io { source, .. } => crate::io_exit_code(source),
            Self::Destination { .. } => crate::exit::IO,
            Self::Usage(_) => crate::exit::USAGE,
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishReport {
    /// The destination.
    pub destination: String,
    /// Objects uploaded (the timestamp included).
    pub uploaded: u64,
    /// Objects the destination already had.
    pub skipped: u64,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Chunks uploaded.
    pub chunks_uploaded: u64,
    /// Targets uploaded.
    pub targets_uploaded: u64,
    /// Metadata files uploaded, the timestamp included.
    pub metadata_uploaded: u64,
    /// The timestamp version the destination now serves.
    pub timestamp_version: u64,
    /// Whether the timestamp was written (false: the destination had these exact bytes).
    pub timestamp_uploaded: bool,
    /// Releases linked, as `channel/number`.
    pub releases: Vec<String>,
}

/// Runs `mast publish` and prints its report on stdout.
pub fn command(args: PublishArgs) -> Result<(), PublishError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| PublishError::Io {
            path: PathBuf::from("(tokio runtime)"),
            source,
        })?;
    let report = runtime.block_on(publish(&args, OffsetDateTime::now_utc()))?;
    print_report(args.output, &report).map_err(|source| PublishError::Io {
        path: PathBuf::from("(stdout)"),
        source,
    })
}

impl std::fmt::Display for PublishReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "published to {}: {} uploaded ({} bytes: {} chunks, {} targets, {} metadata), {} already there; timestamp version {}{}",
            self.destination,
            self.uploaded,
            self.bytes_uploaded,
            self.chunks_uploaded,
            self.targets_uploaded,
            self.metadata_uploaded,
            self.skipped,
            self.timestamp_version,
            if self.timestamp_uploaded {
                ""
            } else {
                " (unchanged)"
            },
        )
    }
}

/// Prints a report on stdout: its text, or one JSON document. A reader that closed the pipe early
/// (`mast verify … | head -1`) is not a failure.
pub(crate) fn print_report<R: std::fmt::Display + Serialize>(
    format: OutputFormat,
    report: &R,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let text = match format {
        OutputFormat::Text => report.to_string(),
        OutputFormat::Json => {
            serde_json::to_string_pretty(report).map_err(std::io::Error::other)?
        }
    };
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Verifies `args.repo` as of `now`, then uploads what the destination lacks, in the order above.
pub async fn publish(
    args: &PublishArgs,
    now: OffsetDateTime,
) -> Result<PublishReport, PublishError> {
    let options = mirror_options(args)?;
    let created = created_annotation();
    let checking = Progress::spinner(&format!("verifying {}", args.repo.display()));
    let plan = plan::plan(&args.repo, now, &created, &args.source).await;
    checking.finish();
    let plan = plan?;
    let mirror =
        Mirror::open(&args.to, &options).map_err(|e| PublishError::Usage(e.to_string()))?;
    let destination = mirror.describe();
    let dest = |source| PublishError::Destination {
        destination: destination.clone(),
        source,
    };
    let mirror = Arc::new(mirror);
    let retry = Retry {
        attempts: args.attempts,
    };
    check_not_stale(&mirror, &plan, &destination, retry).await?;

    let progress = Progress::new(plan.total_bytes());
    let mut report = PublishReport {
        destination: destination.clone(),
        timestamp_version: plan.timestamp_version,
        ..PublishReport::default()
    };
    let jobs = usize::from(args.jobs);
    let batch = Batch {
        mirror: &mirror,
        progress: &progress,
        retry,
    };
    report.chunks_uploaded = batch
        .upload_all(&plan.chunks, jobs, &mut report)
        .await
        .map_err(dest)?;
    report.targets_uploaded = batch
        .upload_all(&plan.targets, jobs, &mut report)
        .await
        .map_err(dest)?;
    for release in &plan.releases {
        retry
            .run(|| mirror.link_release(release))
            .await
            .map_err(dest)?;
        report
            .releases
            .push(format!("{}/{}", release.channel, release.number));
    }
    // One at a time, in order: roots last of these, just before the timestamp.
    report.metadata_uploaded = batch
        .upload_all(&plan.metadata, 1, &mut report)
        .await
        .map_err(dest)?;
    report.timestamp_uploaded = retry
        .run(|| put_timestamp(&mirror, &plan.timestamp))
        .await
        .map_err(dest)?;
    progress.advance(plan.timestamp.length);
    if report.timestamp_uploaded {
        report.uploaded += 1;
        report.metadata_uploaded += 1;
        report.bytes_uploaded += plan.timestamp.length;
    } else {
        report.skipped += 1;
    }
    progress.finish();
    Ok(report)
}

fn mirror_options(args: &PublishArgs) -> Result<MirrorOptions, PublishError> {
    let presign = args
        .presign_cmd
        .as_deref()
        .map(PresignCommand::parse)
        .transpose()
        .map_err(|e| PublishError::Usage(e.to_string()))?;
    if presign.is_some() && !matches!(args.to, MirrorSpec::Http(_)) {
        return Err(PublishError::Usage(
            "--presign-cmd applies to http(s) destinations only".to_owned(),
        ));
    }
    let credentials = match (&args.registry_user, &args.registry_password) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        (None, None) => None,
        _ => {
            return Err(PublishError::Usage(
                "--registry-user and --registry-password go together".to_owned(),
            ));
        }
    };
    if let Some(ca) = &args.ca_file
        && !ca.is_file()
    {
        return Err(PublishError::Usage(format!(
            "--ca-file {}: not a file",
            ca.display()
        )));
    }
    Ok(MirrorOptions {
        ca_file: args.ca_file.clone(),
        presign,
        credentials,
    })
}

/// The OCI `created` annotation: `SOURCE_DATE_EPOCH` when set (reproducible builds), else the Unix epoch,
/// as the bundle tar's mtimes are. A time of publishing would change the artifact manifest's digest at
/// every run and re-point tags that have not changed.
fn created_annotation() -> String {
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    mast_protocol::tuf::Expiry::new(epoch).to_string()
}

/// Refuses to replace a newer timestamp on the destination. One that does not parse is not ours to judge
/// (readers refuse it) and is replaced.
async fn check_not_stale(
    mirror: &Mirror,
    plan: &Plan,
    destination: &str,
    retry: Retry,
) -> Result<(), PublishError> {
    let Some(remote) = retry
        .run(|| remote_timestamp(mirror, &plan.timestamp))
        .await
        .map_err(|source| PublishError::Destination {
            destination: destination.to_owned(),
            source,
        })?
    else {
        return Ok(());
    };
    match Signed::<Timestamp>::from_slice(&remote) {
        Ok(ts) if ts.version() > plan.timestamp_version => Err(PublishError::Stale {
            destination: destination.to_owned(),
            remote: ts.version(),
            local: plan.timestamp_version,
        }),
        _ => Ok(()),
    }
}

async fn remote_timestamp(
    mirror: &Mirror,
    timestamp: &Upload,
) -> Result<Option<Vec<u8>>, MirrorError> {
    // Generous: a destination's timestamp is not trusted here, only compared.
    match mirror.get(&timestamp.object, 1 << 20).await {
        Ok(response) => Ok(Some(response.bytes().await?)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the timestamp unless the destination has these exact bytes; returns whether it wrote.
async fn put_timestamp(mirror: &Mirror, timestamp: &Upload) -> Result<bool, MirrorError> {
    let bytes = read(&timestamp.path).await?;
    if remote_timestamp(mirror, timestamp).await?.as_deref() == Some(&bytes[..]) {
        return Ok(false);
    }
    mirror.put(&timestamp.object, bytes).await?;
    Ok(true)
}

/// How often to try a request that failed for a reason that may pass.
#[derive(Debug, Clone, Copy)]
struct Retry {
    attempts: u32,
}

impl Retry {
    /// Runs `op` until it succeeds, fails for good, or has been tried `attempts` times. Every request
    /// publish makes is idempotent (an existence check, a read, a put of the same bytes under the same
    /// name), so trying again is always safe.
    async fn run<T, F, Fut>(self, mut op: F) -> Result<T, MirrorError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, MirrorError>>,
    {
        let mut delay = std::time::Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if attempt < self.attempts && transient(&e) => {
                    tracing::warn!(error = %e, attempt, "transient failure; trying again");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A failure that may pass: the connection (reset, refused, timed out) or the server (5xx, 408, 429).
fn transient(e: &MirrorError) -> bool {
    match e {
        MirrorError::Http { .. } => true,
        MirrorError::Status { status, .. } => *status >= 500 || matches!(*status, 408 | 429),
        _ => false,
    }
}

/// What every upload of one publish shares.
struct Batch<'a> {
    mirror: &'a Arc<Mirror>,
    progress: &'a Progress,
    retry: Retry,
}

impl Batch<'_> {
    /// Uploads each object the destination lacks, `jobs` at a time; returns how many it uploaded. On the first
    /// failure the rest are abandoned (what landed is immutable and harmless).
    async fn upload_all(
        &self,
        uploads: &[Upload],
        jobs: usize,
        report: &mut PublishReport,
    ) -> Result<u64, MirrorError> {
        let uploaded = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut set = JoinSet::new();
        let mut queue = uploads.iter();
        let mut outcome = Ok(());
        loop {
            while outcome.is_ok() && set.len() < jobs {
                let Some(upload) = queue.next() else { break };
                let (mirror, upload) = (Arc::clone(self.mirror), upload.clone());
                let (uploaded, bytes) = (Arc::clone(&uploaded), Arc::clone(&bytes));
                let (progress, retry) = (self.progress.clone(), self.retry);
                set.spawn(async move {
                let sent = retry.run(|| upload_one(&mirror, &upload)).await?;
                if sent {
                    uploaded.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(upload.length, Ordering::Relaxed);
                    tracing::debug!(object = %upload.object, length = upload.length, "uploaded");
                }
                progress.advance(upload.length);
                Ok::<(), MirrorError>(())
            });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            let result = joined
                .unwrap_or_else(|e| Err(MirrorError::Config(format!("upload task failed: {e}"))));
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome?;
        let n = uploaded.load(Ordering::Relaxed);
        report.uploaded += n;
        report.skipped += uploads.len() as u64 - n;
        report.bytes_uploaded += bytes.load(Ordering::Relaxed);
        Ok(n)
    }
}

/// Puts `upload` unless the destination has it; returns whether it did.
async fn upload_one(mirror: &Mirror, upload: &Upload) -> Result<bool, MirrorError> {
    if mirror.exists(&upload.object).await? {
        return Ok(false);
    }
    mirror
        .put(&upload.object, read(&upload.path).await?)
        .await?;
    Ok(true)
}

async fn read(path: &Path) -> Result<Bytes, MirrorError> {
    tokio::fs::read(path)
        .await
        .map(Bytes::from)
        .map_err(|source| MirrorError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// A byte progress bar on a terminal's stderr; nothing at all otherwise (CI logs stay clean).
#[derive(Clone)]
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(total: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} publishing [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self(Some(bar))
    }

    /// A spinner with `message` while a step of unknown length runs (on a terminal only).
    fn spinner(message: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new_spinner().with_message(message.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Self(Some(bar))
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
