//! `mast timestamp refresh`: keeps the online metadata valid, for cron.
//!
//! The timestamp (and the snapshot, when it would expire before the new timestamp or within the window)
//! is re-signed only when it expires within the window, so running it every hour costs nothing and
//! writes nothing until it is due. `--force` re-signs the timestamp regardless. Targets and root are never
//! signed here (their keys are offline or with release engineers); when they near expiry the report warns.

use std::fmt;
use std::path::{Path, PathBuf};

use mast_protocol::tuf::{BuildError, Repository};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::durations::display_duration;
use crate::repo::{RepoDir, RepoError, Written, check_root_fresh};
use crate::signers::{OnlineKeyPaths, OnlineKeys, OnlineRole, SignersError};
use crate::{ExitStatus, exit};

/// Why a refresh failed. Nothing is written when it does.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The repository.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// An online key.
    #[error(transparent)]
    Signers(#[from] SignersError),
    /// The builder refused (window too long, keys short of a threshold).
    #[error("{0}")]
    Build(#[source] BuildError),
}

impl ExitStatus for RefreshError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Repo(e) => e.exit_code(),
            Self::Signers(e) => e.exit_code(),
            Self::Build(BuildError::RefreshWindow { .. }) => exit::USAGE,
            Self::Build(_) => exit::DATA,
        }
    }
}

/// What a refresh did.
#[derive(Debug, Serialize)]
pub struct RefreshReport {
    /// The repository.
    pub repo: PathBuf,
    /// Roles re-signed (empty when nothing was due).
    pub signed: Vec<String>,
    /// The window used.
    pub window: String,
    /// Timestamp version and expiry after the refresh.
    pub timestamp: RoleState,
    /// Snapshot version and expiry after the refresh.
    pub snapshot: RoleState,
    /// Roles this command does not sign that expire within the window (or have expired).
    pub warnings: Vec<String>,
    /// Files written.
    pub written: Written,
}

/// A role's version and expiry.
#[derive(Debug, Clone, Serialize)]
pub struct RoleState {
    /// Version.
    pub version: u64,
    /// Expiry.
    pub expires: String,
}

/// Re-signs what is due. `window` defaults to half the shorter of the timestamp and snapshot lifetimes.
pub fn refresh(
    repo_path: &Path,
    keys: &OnlineKeyPaths,
    window: Option<Duration>,
    force: bool,
    now: OffsetDateTime,
) -> Result<RefreshReport, RefreshError> {
    let dir = RepoDir::new(repo_path);
    let _lock = dir.lock()?;
    let mut repo = dir.load()?;
    check_root_fresh(&repo, now)?;
    let config = dir.config()?;
    let expiries = config.expiries();
    let window = window.unwrap_or_else(|| expiries.timestamp.min(expiries.snapshot) / 2);
    let keys = OnlineKeys::load(keys, &config.keys)?;
    keys.require(&[OnlineRole::Timestamp])?;
    keys.check_against(&repo.root().signed)?;
    let signers = keys.signers();
    let result = if force {
        repo.commit(&signers, now)
    } else {
        repo.refresh_timestamp(&signers, now, window)
    };
    let signed = result.map_err(|e| match e {
        // The snapshot was due but no key for it was found: say which flag is missing, not a count.
        BuildError::NotEnoughKeys(ref t)
            if t.role == "snapshot" && !keys.has(OnlineRole::Snapshot) =>
        {
            match keys.require(&[OnlineRole::Snapshot]) {
                Err(missing) => RefreshError::Signers(missing),
                Ok(()) => RefreshError::Build(e),
            }
        }
        other => RefreshError::Build(other),
    })?;
    let written = if signed.is_empty() {
        Written::default()
    } else {
        dir.write_metadata(&repo)?
    };
    Ok(RefreshReport {
        repo: repo_path.to_path_buf(),
        signed,
        window: display_duration(window),
        timestamp: RoleState {
            version: repo.timestamp().version(),
            expires: repo.timestamp().expires().to_string(),
        },
        snapshot: RoleState {
            version: repo.snapshot().version(),
            expires: repo.snapshot().expires().to_string(),
        },
        warnings: warnings(&repo, now, window),
        written,
    })
}

/// Roles a refresh cannot re-sign that expire within `window`.
fn warnings(repo: &Repository, now: OffsetDateTime, window: Duration) -> Vec<String> {
    let horizon = now.saturating_add(window);
    [
        ("root", repo.root().expires(), "mast root rotate"),
        ("targets", repo.targets().expires(), "mast release"),
    ]
    .into_iter()
    .filter(|(_, expires, _)| expires.at() <= horizon)
    .map(|(role, expires, fix)| {
        let state = if expires.is_expired(now) {
            "expired"
        } else {
            "expires"
        };
        format!("{role} {state} at {expires}; re-sign it with `{fix}`")
    })
    .collect()
}

impl fmt::Display for RefreshReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.signed.is_empty() {
            writeln!(
                f,
                "nothing due within {}: timestamp v{} expires {}, snapshot v{} expires {}",
                self.window,
                self.timestamp.version,
                self.timestamp.expires,
                self.snapshot.version,
                self.snapshot.expires
            )?;
        } else {
            writeln!(f, "signed     {}", self.signed.join(", "))?;
            writeln!(
                f,
                "timestamp  v{} expires {}",
                self.timestamp.version, self.timestamp.expires
            )?;
            writeln!(
                f,
                "snapshot   v{} expires {}",
                self.snapshot.version, self.snapshot.expires
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "WARN       {w}")?;
        }
        write!(f, "repository {}", self.repo.display())
    }
}
