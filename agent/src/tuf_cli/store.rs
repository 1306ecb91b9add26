//! Trusted metadata as plain files in one directory, the layout python-tuf's `ngclient` keeps and the
//! conformance suite inspects: `root.json`, `timestamp.json`, `snapshot.json`, `targets.json`, and each
//! delegated role under its quoted name (`RoleName::file_name`, so `../x` is `..%2Fx.json`).
//!
//! Every save is a temporary file in the same directory, written, fsynced, renamed over the old copy, and
//! the directory fsynced: a crash leaves the old file or the new one, never a torn one. That is what
//! [`TrustStore`] asks ("durable when it returns").

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mast_mirror::client::TrustStore;
use mast_protocol::tuf::{
    Persisted, RoleName, Signed, StoreOp, Targets, TrustedMetadata, TufError,
};

use super::TufCliError;

/// Trusted metadata kept as files in a directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// The store in `dir` (which must exist).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Where `role`'s trusted copy lives.
    pub fn path(&self, role: &RoleName) -> PathBuf {
        self.dir.join(role.file_name())
    }

    /// Writes `bytes` as `role`'s trusted copy, atomically and durably.
    pub fn save(&self, role: &RoleName, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.path(role), bytes)
    }

    /// Rebuilds trust from the files: `root.json` must verify; a top-level role that no longer verifies
    /// is removed from the directory and logged (the next refresh fetches it again). Delegated roles
    /// reachable from the trusted `targets.json` are loaded too; the session re-verifies each one against
    /// its delegator and snapshot before using it, and fetches it again if it does not pass.
    pub fn load(&self) -> Result<TrustedMetadata, TufCliError> {
        let read = |role: &RoleName| -> Result<Option<Vec<u8>>, TufCliError> {
            let path = self.path(role);
            match fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(TufCliError::Io { path, source }),
            }
        };
        let root = read(&RoleName::Root)?.ok_or_else(|| TufCliError::NotInitialised {
            dir: self.dir.clone(),
        })?;
        let (timestamp, snapshot, targets) = (
            read(&RoleName::Timestamp)?,
            read(&RoleName::Snapshot)?,
            read(&RoleName::Targets)?,
        );
        let persisted = Persisted {
            root: &root,
            timestamp: timestamp.as_deref(),
            snapshot: snapshot.as_deref(),
            targets: targets.as_deref(),
        };
        let (mut trusted, dropped) =
            TrustedMetadata::from_persisted(persisted).map_err(|source| TufCliError::Trust {
                path: self.path(&RoleName::Root),
                source,
            })?;
        for discarded in dropped {
            tracing::warn!(role = discarded.role.as_str(), reason = %discarded.reason,
                "trusted metadata no longer verifies; removing it");
            self.remove(&discarded.role)
                .map_err(|source| TufCliError::Io {
                    path: self.path(&discarded.role),
                    source,
                })?;
        }
        self.load_delegated(&mut trusted)?;
        Ok(trusted)
    }

    /// Loads the delegated roles reachable from trusted targets, each role once.
    fn load_delegated(&self, trusted: &mut TrustedMetadata) -> Result<(), TufCliError> {
        let children = |doc: Option<&Signed<Targets>>| {
            doc.and_then(|d| d.signed.delegations.as_ref())
                .map(|d| d.roles.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let mut queue = children(trusted.targets());
        let mut seen = BTreeSet::new();
        while let Some(name) = queue.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let role = RoleName::Delegated(name.clone());
            let path = self.path(&role);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(TufCliError::Io { path, source }),
            };
            if let Err(e) = trusted.add_persisted_delegated(&name, &bytes) {
                tracing::warn!(role = %name, error = %e,
                    "trusted delegated role does not parse; ignoring it");
                continue;
            }
            queue.extend(children(trusted.delegated(&name)));
        }
        Ok(())
    }

    fn remove(&self, role: &RoleName) -> io::Result<()> {
        match fs::remove_file(self.path(role)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl TrustStore for FileStore {
    fn apply(&mut self, op: &StoreOp) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (role, result) = match op {
            StoreOp::Save(file) => (&file.role, self.save(&file.role, &file.bytes)),
            StoreOp::Discard(role) => (role, self.remove(role)),
        };
        result.map_err(|source| {
            Box::new(TufCliError::Io {
                path: self.path(role),
                source,
            }) as Box<dyn std::error::Error + Send + Sync>
        })
    }
}

/// Writes `path` through a temporary file beside it: write, fsync, rename, fsync the directory.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let staging = staging_path(path);
    let result = (|| {
        let mut file = File::create(&staging)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&staging, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        // Best effort: the staging file is ours and useless now; the error that matters is `result`.
        let _ = fs::remove_file(&staging);
    }
    result
}

/// A staging name beside `path`, hidden, unique to this process.
pub(super) fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.part", std::process::id()))
}

/// Makes a rename or removal in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Checks `bytes` is a root signed by a threshold of its own keys (not its expiry: an old root may still
/// be walked forward), for `init`.
pub(super) fn check_root(path: &Path, bytes: &[u8]) -> Result<(), TufCliError> {
    TrustedMetadata::new(bytes)
        .map(|_| ())
        .map_err(|source: TufError| TufCliError::Trust {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use mast_protocol::tuf::TrustedFile;

    use super::*;

    #[test]
    fn saves_atomically_by_quoted_name_and_discards() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::new(dir.path());
        let save = |role: RoleName| {
            StoreOp::Save(TrustedFile {
                role,
                version: 1,
                bytes: b"{}".to_vec(),
            })
        };
        store.apply(&save(RoleName::Timestamp)).unwrap();
        store
            .apply(&save(RoleName::Delegated("../x".to_owned())))
            .unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["..%2Fx.json", "timestamp.json"]);
        store.apply(&StoreOp::Discard(RoleName::Timestamp)).unwrap();
        store.apply(&StoreOp::Discard(RoleName::Snapshot)).unwrap();
        assert!(!dir.path().join("timestamp.json").exists());
    }

    #[test]
    fn an_empty_directory_is_not_initialised() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileStore::new(dir.path()).load().unwrap_err();
        assert!(matches!(err, TufCliError::NotInitialised { .. }), "{err}");
    }
}
