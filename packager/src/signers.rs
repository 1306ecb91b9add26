//! Online signing keys (targets, snapshot, timestamp): where they come from, and checking them against
//! the root before anything is signed.
//!
//! A key for a role comes from, in order: its flag (`--targets-key`), its environment variable
//! (`MAST_TARGETS_KEY`; the binary maps both to the same argument), or the path remembered in
//! `REPO/.mast/config.json` by `mast repo init`. Root keys never come from anywhere but a flag.

use std::path::{Path, PathBuf};

use mast_protocol::crypto::SigningKey;
use mast_protocol::tuf::{RoleSigners, Root};

use crate::keys::{KeyError, load_signing_key};
use crate::repo::RememberedKeys;
use crate::{ExitStatus, exit};

/// Why an online key is missing or wrong. Names the flag or the file.
#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    /// A key file that does not load.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// No key for a role this command must sign.
    #[error(
        "no {role} key: pass {flag} KEY, set {env}, or remember one in the repository with `mast repo init`"
    )]
    Missing {
        /// The role.
        role: &'static str,
        /// Its flag.
        flag: &'static str,
        /// Its environment variable.
        env: &'static str,
    },
    /// A key the root does not list for the role.
    #[error("{flag} {path}: key {keyid} is not a {role} key of root version {root_version}")]
    NotInRole {
        /// The role.
        role: &'static str,
        /// Its flag.
        flag: &'static str,
        /// The key file.
        path: PathBuf,
        /// The key's id.
        keyid: String,
        /// The root in force.
        root_version: u64,
    },
}

impl ExitStatus for SignersError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Key(e) => e.exit_code(),
            Self::Missing { .. } => exit::USAGE,
            Self::NotInRole { .. } => exit::DATA,
        }
    }
}

/// Key paths given on the command line (or through the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnlineKeyPaths {
    /// `--targets-key`.
    pub targets: Option<PathBuf>,
    /// `--snapshot-key`.
    pub snapshot: Option<PathBuf>,
    /// `--timestamp-key`.
    pub timestamp: Option<PathBuf>,
}

/// An online role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnlineRole {
    /// `targets`.
    Targets,
    /// `snapshot`.
    Snapshot,
    /// `timestamp`.
    Timestamp,
}

/// The online keys found, loaded.
#[derive(Debug, Default)]
pub struct OnlineKeys {
    targets: Option<(PathBuf, SigningKey)>,
    snapshot: Option<(PathBuf, SigningKey)>,
    timestamp: Option<(PathBuf, SigningKey)>,
}

impl OnlineRole {
    /// The role's name in metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::Targets => "targets",
            Self::Snapshot => "snapshot",
            Self::Timestamp => "timestamp",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Targets => "--targets-key",
            Self::Snapshot => "--snapshot-key",
            Self::Timestamp => "--timestamp-key",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Self::Targets => "MAST_TARGETS_KEY",
            Self::Snapshot => "MAST_SNAPSHOT_KEY",
            Self::Timestamp => "MAST_TIMESTAMP_KEY",
        }
    }
}

impl OnlineKeys {
    /// Loads the keys given, falling back to the remembered ones. A file that is named but does not load
    /// is an error even when this command would not need it: a wrong path should surface on the first run.
    pub fn load(given: &OnlineKeyPaths, remembered: &RememberedKeys) -> Result<Self, SignersError> {
        let one = |given: &Option<PathBuf>, remembered: &Option<PathBuf>| {
            given
                .as_ref()
                .or(remembered.as_ref())
                .map(|path| load_signing_key(path).map(|key| (path.clone(), key)))
                .transpose()
        };
        Ok(Self {
            targets: one(&given.targets, &remembered.targets)?,
            snapshot: one(&given.snapshot, &remembered.snapshot)?,
            timestamp: one(&given.timestamp, &remembered.timestamp)?,
        })
    }

    fn slot(&self, role: OnlineRole) -> Option<&(PathBuf, SigningKey)> {
        match role {
            OnlineRole::Targets => self.targets.as_ref(),
            OnlineRole::Snapshot => self.snapshot.as_ref(),
            OnlineRole::Timestamp => self.timestamp.as_ref(),
        }
    }

    /// Whether a key for `role` was found.
    pub fn has(&self, role: OnlineRole) -> bool {
        self.slot(role).is_some()
    }

    /// Fails naming the flag when a key for any of `roles` is missing.
    pub fn require(&self, roles: &[OnlineRole]) -> Result<(), SignersError> {
        for &role in roles {
            if !self.has(role) {
                return Err(SignersError::Missing {
                    role: role.name(),
                    flag: role.flag(),
                    env: role.env(),
                });
            }
        }
        Ok(())
    }

    /// Fails naming the flag and the file when a key found is not listed for its role by `root`, before
    /// the builder would refuse it with only a key id.
    pub fn check_against(&self, root: &Root) -> Result<(), SignersError> {
        for role in [
            OnlineRole::Targets,
            OnlineRole::Snapshot,
            OnlineRole::Timestamp,
        ] {
            let Some((path, key)) = self.slot(role) else {
                continue;
            };
            let keyid = key.key_id();
            let listed = root
                .role(role.name())
                .is_some_and(|r| r.keyids.contains(&keyid));
            if !listed {
                return Err(SignersError::NotInRole {
                    role: role.name(),
                    flag: role.flag(),
                    path: path.clone(),
                    keyid: keyid.as_str().to_owned(),
                    root_version: root.common.version,
                });
            }
        }
        Ok(())
    }

    /// The keys as the builder takes them.
    pub fn signers(&self) -> RoleSigners<'_> {
        let keys = |role| self.slot(role).map(|(_, k)| k).into_iter().collect();
        RoleSigners {
            targets: keys(OnlineRole::Targets),
            snapshot: keys(OnlineRole::Snapshot),
            timestamp: keys(OnlineRole::Timestamp),
            delegated: Default::default(),
        }
    }

    /// The file a role's key came from.
    pub fn path(&self, role: OnlineRole) -> Option<&Path> {
        self.slot(role).map(|(p, _)| p.as_path())
    }
}
