//! `mast repo init`: a new repository with root version 1.
//!
//! When the root keys given include enough private keys to meet the root threshold, root 1 is signed and
//! the repository is published at once (empty targets, snapshot and timestamp, signed with the online
//! keys). When they are public keys of offline holders, root 1 waits in `.mast/root.pending.json` until
//! `mast root sign` has collected the threshold, and the first publication happens then.

use std::fmt;
use std::path::{Path, PathBuf};

use mast_protocol::tuf::builder::{RoleSpec, new_root, root_signing_status};
use mast_protocol::tuf::{BuildError, Expiries, Repository, RootSpec};
use serde::Serialize;
use time::OffsetDateTime;

use crate::durations::{Lifetime, display_duration};
use crate::keys::{KeyError, RoleKey, load_role_key};
use crate::repo::{RememberedKeys, RepoConfig, RepoDir, RepoError, Written};
use crate::root::{SigningReport, signing_report};
use crate::signers::{OnlineKeyPaths, OnlineKeys, OnlineRole, SignersError};
use crate::{ExitStatus, exit};

/// Why `repo init` refused. Nothing is written when it does.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The directory.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// An online key.
    #[error(transparent)]
    Signers(#[from] SignersError),
    /// The keys and thresholds do not make a valid root.
    #[error("{0}")]
    Root(#[source] BuildError),
    /// An online role given only a public key while root 1 is complete and must be published now.
    #[error(
        "{flag} {path}: a public key; the first publication signs {role} now, so give its private key (or give only public root keys and publish later with `mast root sign`)"
    )]
    PublicOnlineKey {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The role.
        role: &'static str,
    },
}

impl ExitStatus for InitError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Key(e) => e.exit_code(),
            Self::Repo(e) => e.exit_code(),
            Self::Signers(e) => e.exit_code(),
            Self::Root(_) | Self::PublicOnlineKey { .. } => exit::USAGE,
        }
    }
}

/// What `repo init` needs.
#[derive(Debug, Clone)]
pub struct InitArgs {
    /// The directory to create.
    pub dir: PathBuf,
    /// Root key files (private or public).
    pub root_keys: Vec<PathBuf>,
    /// Root threshold.
    pub root_threshold: u64,
    /// Targets key files.
    pub targets_keys: Vec<PathBuf>,
    /// Snapshot key files.
    pub snapshot_keys: Vec<PathBuf>,
    /// Timestamp key files.
    pub timestamp_keys: Vec<PathBuf>,
    /// `--expires` flags.
    pub lifetimes: Vec<Lifetime>,
    /// Whether to remember the online private keys' paths in `.mast/config.json`.
    pub remember_keys: bool,
}

/// What `repo init` did.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// The repository.
    pub repo: PathBuf,
    /// Whether root 1 was complete and the repository published.
    pub published: bool,
    /// Root 1's signing status.
    pub root: SigningReport,
    /// Lifetimes per role.
    pub lifetimes: Vec<String>,
    /// Remembered online key paths.
    pub remembered_keys: RememberedKeys,
    /// Files written.
    pub written: Written,
}

/// Creates the repository. Every key is read and the root built and checked before the directory is
/// created, so a refused init leaves nothing behind.
pub fn init(args: &InitArgs, now: OffsetDateTime) -> Result<InitReport, InitError> {
    check_empty(&args.dir)?;
    let load = |paths: &[PathBuf]| -> Result<Vec<RoleKey>, KeyError> {
        paths.iter().map(|p| load_role_key(p)).collect()
    };
    let root_keys = load(&args.root_keys)?;
    let targets = load(&args.targets_keys)?;
    let snapshot = load(&args.snapshot_keys)?;
    let timestamp = load(&args.timestamp_keys)?;
    let spec = |keys: &[RoleKey], threshold| RoleSpec {
        keys: keys.iter().map(|k| k.public.clone()).collect(),
        threshold,
    };
    let root_spec = RootSpec {
        root: spec(&root_keys, args.root_threshold),
        targets: spec(&targets, 1),
        snapshot: spec(&snapshot, 1),
        timestamp: spec(&timestamp, 1),
    };
    let expiries = crate::durations::apply(Expiries::default(), &args.lifetimes);
    let expires = expiries.expiry("root", now).map_err(InitError::Root)?;
    let mut root = new_root(&root_spec, 1, expires).map_err(InitError::Root)?;
    for key in root_keys.iter().filter_map(|k| k.private.as_ref()) {
        root.sign(key);
    }
    let status = root_signing_status(&root, None);
    let remembered = remembered(&targets, &snapshot, &timestamp)?;

    let mut config = RepoConfig::new(&expiries);
    if args.remember_keys {
        config.keys = remembered;
    }
    let repo_dir = RepoDir::new(&args.dir);
    let report_root = signing_report(&root, None, &status);
    let mut written = Written::default();
    let published = status.is_complete();
    if published {
        // Sign the empty repository fully in memory first: a key problem must stop init before any file.
        let online = [
            (OnlineRole::Targets, &targets, "--targets-key"),
            (OnlineRole::Snapshot, &snapshot, "--snapshot-key"),
            (OnlineRole::Timestamp, &timestamp, "--timestamp-key"),
        ];
        for (role, keys, flag) in online {
            if let Some(public_only) = keys.iter().find(|k| k.private.is_none()) {
                return Err(InitError::PublicOnlineKey {
                    flag,
                    path: public_only.path.clone(),
                    role: role.name(),
                });
            }
        }
        let paths = OnlineKeyPaths {
            targets: args.targets_keys.first().cloned(),
            snapshot: args.snapshot_keys.first().cloned(),
            timestamp: args.timestamp_keys.first().cloned(),
        };
        let keys = OnlineKeys::load(&paths, &RememberedKeys::default())?;
        let mut repo = Repository::create(root, now, expiries).map_err(InitError::Root)?;
        repo.commit(&keys.signers(), now).map_err(InitError::Root)?;
        create_dir(&args.dir)?;
        let _lock = repo_dir.lock()?;
        repo_dir.save_config(&config)?;
        written = repo_dir.write_metadata(&repo)?;
    } else {
        create_dir(&args.dir)?;
        let _lock = repo_dir.lock()?;
        repo_dir.save_config(&config)?;
        repo_dir.save_pending_root(&root)?;
    }
    Ok(InitReport {
        repo: args.dir.clone(),
        published,
        root: report_root,
        lifetimes: ["root", "targets", "snapshot", "timestamp"]
            .iter()
            .map(|r| format!("{r}={}", display_duration(expiries.lifetime(r))))
            .collect(),
        remembered_keys: config.keys,
        written,
    })
}

/// The absolute paths of the first private key of each online role.
fn remembered(
    targets: &[RoleKey],
    snapshot: &[RoleKey],
    timestamp: &[RoleKey],
) -> Result<RememberedKeys, InitError> {
    let first_private = |keys: &[RoleKey]| -> Result<Option<PathBuf>, InitError> {
        let Some(key) = keys.iter().find(|k| k.private.is_some()) else {
            return Ok(None);
        };
        let absolute = std::path::absolute(&key.path).map_err(|source| {
            InitError::Key(KeyError::Io {
                path: key.path.clone(),
                source,
            })
        })?;
        Ok(Some(absolute))
    };
    Ok(RememberedKeys {
        targets: first_private(targets)?,
        snapshot: first_private(snapshot)?,
        timestamp: first_private(timestamp)?,
    })
}

/// Refuses a directory that exists with entries in it.
fn check_empty(dir: &Path) -> Result<(), InitError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RepoError::NotEmpty(dir.to_path_buf()).into());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RepoError::Io {
            path: dir.to_path_buf(),
            source,
        }
        .into()),
    }
}

fn create_dir(dir: &Path) -> Result<(), InitError> {
    std::fs::create_dir_all(dir).map_err(|source| {
        InitError::Repo(RepoError::Io {
            path: dir.to_path_buf(),
            source,
        })
    })
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "repository {}", self.repo.display())?;
        writeln!(f, "lifetimes  {}", self.lifetimes.join(" "))?;
        write!(f, "{}", self.root)?;
        if self.published {
            write!(
                f,
                "\npublished  {} files (timestamp.json last)",
                self.written.files.len()
            )
        } else {
            write!(
                f,
                "\nroot 1 is pending in .mast/; each holder runs `mast root sign {} --key KEY`",
                self.repo.display()
            )
        }
    }
}
