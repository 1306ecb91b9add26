//! The repository directory: a mirror layout plus the packager's private state.
//!
//! ```text
//! REPO/metadata/N.root.json  N.targets.json  N.snapshot.json  timestamp.json
//! REPO/targets/channels/<channel>/<release>/<sha256>.bundle.tar.gz   …/<sha256>.index.json
//! REPO/chunks/<sha256>
//! REPO/.mast/config.json         lifetimes, remembered online key paths (never published)
//! REPO/.mast/root.pending.json   a root version still collecting signatures (never published)
//! REPO/.mast/lock                held (flock) by every command that writes
//! ```
//!
//! Everything outside `.mast/` is exactly what a mirror serves, so [`mast_mirror::DirMirror`] reads a
//! repository directly and publishing is "copy what the destination lacks, `timestamp.json` last". Every
//! file is written atomically (temporary file, fsync, rename), immutable files first and
//! `metadata/timestamp.json` last: a crash at any instant leaves the previous timestamp in force, pointing
//! at files that are all there, plus perhaps some unreferenced new ones.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use mast_protocol::tuf::builder::metadata_path;
use mast_protocol::tuf::metadata::Role as _;
use mast_protocol::tuf::{BuildError, Expiries, Repository, Root, Signed, Snapshot, Timestamp};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::{ExitStatus, exit, io_exit_code};

/// The packager's private directory inside a repository.
pub const STATE_DIR: &str = ".mast";

const CONFIG_FILE: &str = "config.json";
const PENDING_ROOT_FILE: &str = "root.pending.json";
const LOCK_FILE: &str = "lock";
const TIMESTAMP_FILE: &str = "metadata/timestamp.json";

/// Why the repository directory could not be read, locked or written. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Neither published metadata nor a pending first root: not a repository.
    #[error(
        "{0}: not a mast repository (no metadata/timestamp.json); create one with `mast repo init`"
    )]
    NotARepository(PathBuf),
    /// The first root still lacks signatures, so there is no published metadata yet.
    #[error("{0}: root version 1 is still collecting signatures; finish with `mast root sign`")]
    NotPublished(PathBuf),
    /// `repo init` into a directory that holds files.
    #[error("{0}: exists and is not empty")]
    NotEmpty(PathBuf),
    /// Another `mast` holds the lock.
    #[error("{0}: locked by another mast process; try again when it has finished")]
    Locked(PathBuf),
    /// The published metadata does not load (tampered, torn, or not made by a TUF tool).
    #[error("{repo}: {source}")]
    Metadata {
        /// The repository.
        repo: PathBuf,
        /// What the loader found.
        #[source]
        source: BuildError,
    },
    /// A private state file does not parse.
    #[error("{path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The root in force has expired: clients refuse everything signed under it.
    #[error(
        "{file}: root version {version} expired at {expires}; sites refuse the whole repository until a new root is published (`mast root rotate`, then `mast root sign`)"
    )]
    RootExpired {
        /// The root's file.
        file: String,
        /// Its version.
        version: u64,
        /// Its expiry.
        expires: String,
    },
    /// An immutable file exists with other content.
    #[error("{0}: exists with different content; refusing to replace an immutable file")]
    Conflict(PathBuf),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: mast_mirror::MirrorError,
    },
}

impl ExitStatus for RepoError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Io { source, .. } => io_exit_code(source),
            Self::NotARepository(_) => exit::NO_INPUT,
            Self::NotEmpty(_) => exit::CANT_CREATE,
            Self::Locked(_) => exit::TEMP_FAIL,
            Self::Write { .. } => exit::IO,
            Self::NotPublished(_)
            | Self::Metadata { .. }
            | Self::State { .. }
            | Self::RootExpired { .. }
            | Self::Conflict(_) => exit::DATA,
        }
    }
}

/// Lifetimes in seconds, as stored in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifetimes {
    /// Root.
    pub root: i64,
    /// Targets.
    pub targets: i64,
    /// Snapshot.
    pub snapshot: i64,
    /// Timestamp.
    pub timestamp: i64,
}

/// Private key files remembered for the online roles, so releases and cron refreshes need no flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedKeys {
    /// The targets key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<PathBuf>,
    /// The snapshot key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<PathBuf>,
    /// The timestamp key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<PathBuf>,
}

/// `.mast/config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// How long each role's metadata is valid when signed.
    pub lifetimes: Lifetimes,
    /// Remembered online key paths.
    #[serde(default)]
    pub keys: RememberedKeys,
    /// Online key paths to remember once the pending root that trusts them is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_keys: Option<RememberedKeys>,
}

/// A repository directory.
#[derive(Debug, Clone)]
pub struct RepoDir {
    root: PathBuf,
}

/// The repository lock; released when dropped (or when the process dies, as flock locks are).
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

/// What [`RepoDir::write_metadata`] and [`RepoDir::write_blobs`] wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Written {
    /// Files written, relative to the repository, in the order written.
    pub files: Vec<String>,
    /// Versioned metadata files replaced: leftovers of an interrupted run that no timestamp referenced.
    pub replaced_leftovers: Vec<String>,
}

impl RepoConfig {
    /// A configuration with `expiries` and nothing remembered.
    pub fn new(expiries: &Expiries) -> Self {
        Self {
            lifetimes: Lifetimes {
                root: expiries.root.whole_seconds(),
                targets: expiries.targets.whole_seconds(),
                snapshot: expiries.snapshot.whole_seconds(),
                timestamp: expiries.timestamp.whole_seconds(),
            },
            keys: RememberedKeys::default(),
            pending_keys: None,
        }
    }

    /// The lifetimes as the builders take them.
    pub fn expiries(&self) -> Expiries {
        Expiries {
            root: Duration::seconds(self.lifetimes.root),
            targets: Duration::seconds(self.lifetimes.targets),
            snapshot: Duration::seconds(self.lifetimes.snapshot),
            timestamp: Duration::seconds(self.lifetimes.timestamp),
        }
    }
}

impl RepoDir {
    /// The repository at `root` (nothing is read yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `REPO/.mast/<name>`.
    fn state(&self, name: &str) -> PathBuf {
        self.root.join(STATE_DIR).join(name)
    }

    /// Whether `metadata/timestamp.json` exists, i.e. the repository has been published at least once.
    pub fn is_published(&self) -> bool {
        self.root.join(TIMESTAMP_FILE).is_file()
    }

    /// Takes the repository lock, failing at once (exit 75) when another process holds it.
    pub fn lock(&self) -> Result<RepoLock, RepoError> {
        let path = self.state(LOCK_FILE);
        let io = |source| RepoError::Io {
            path: path.clone(),
            source,
        };
        let dir = self.root.join(STATE_DIR);
        if !self.root.is_dir() {
            return Err(RepoError::NotARepository(self.root.clone()));
        }
        std::fs::create_dir_all(&dir).map_err(|source| RepoError::Io {
            path: dir.clone(),
            source,
        })?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(RepoLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(RepoError::Locked(path)),
            Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
        }
    }

    /// Reads `.mast/config.json`; a repository made by another tool has none and gets the defaults.
    pub fn config(&self) -> Result<RepoConfig, RepoError> {
        let path = self.state(CONFIG_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RepoError::State {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(RepoConfig::new(&Expiries::default()))
            }
            Err(source) => Err(RepoError::Io { path, source }),
        }
    }

    /// Writes `.mast/config.json`.
    pub fn save_config(&self, config: &RepoConfig) -> Result<(), RepoError> {
        let path = self.state(CONFIG_FILE);
        let mut bytes = serde_json::to_vec_pretty(config).map_err(|e| RepoError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        write(&path, &bytes)
    }

    /// The root version still collecting signatures, if any.
    pub fn pending_root(&self) -> Result<Option<Signed<Root>>, RepoError> {
        let path = self.state(PENDING_ROOT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                Signed::<Root>::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| RepoError::State {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RepoError::Io { path, source }),
        }
    }

    /// Stores a root that is still collecting signatures.
    pub fn save_pending_root(&self, root: &Signed<Root>) -> Result<(), RepoError> {
        let path = self.state(PENDING_ROOT_FILE);
        let bytes = root.to_bytes().map_err(|e| RepoError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write(&path, &bytes)
    }

    /// Forgets the pending root (it was published).
    pub fn remove_pending_root(&self) -> Result<(), RepoError> {
        let path = self.state(PENDING_ROOT_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RepoError::Io { path, source }),
        }
    }

    /// Loads and verifies the published metadata (root chain, then timestamp → snapshot → targets and
    /// delegated roles, with signatures, lengths and hashes), with the repository's lifetimes for the next
    /// commit. Expiry is not checked: an expired repository must still be refreshable.
    pub fn load(&self) -> Result<Repository, RepoError> {
        if !self.is_published() {
            return Err(if self.state(PENDING_ROOT_FILE).is_file() {
                RepoError::NotPublished(self.root.clone())
            } else {
                RepoError::NotARepository(self.root.clone())
            });
        }
        let files = self.metadata_files()?;
        let mut repo = Repository::load(files).map_err(|source| RepoError::Metadata {
            repo: self.root.clone(),
            source,
        })?;
        repo.set_expiries(self.config()?.expiries());
        Ok(repo)
    }

    /// The metadata files loading needs: every root, the timestamp, and the snapshot and targets versions
    /// they name. Older versions are not read, so loading stays fast in a repository with years of history.
    fn metadata_files(&self) -> Result<BTreeMap<String, Vec<u8>>, RepoError> {
        let mut files = BTreeMap::new();
        let dir = self.root.join("metadata");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RepoError::Io { path, source }
        };
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".root.json") && !name.starts_with('.') {
                self.read_into(&mut files, &format!("metadata/{name}"))?;
            }
        }
        let timestamp = self.read_into(&mut files, TIMESTAMP_FILE)?;
        // Unverified parses, only to find names; Repository::load verifies everything it is given.
        let Some(timestamp) = timestamp.and_then(|b| Signed::<Timestamp>::from_slice(&b).ok())
        else {
            return Ok(files);
        };
        let snapshot_file = metadata_path(Snapshot::NAME, timestamp.signed.snapshot_meta().version);
        let Some(snapshot) = self
            .read_into(&mut files, &snapshot_file)?
            .and_then(|b| Signed::<Snapshot>::from_slice(&b).ok())
        else {
            return Ok(files);
        };
        for (name, meta) in &snapshot.signed.meta {
            if let Some(role) = name.strip_suffix(".json") {
                self.read_into(&mut files, &metadata_path(role, meta.version))?;
            }
        }
        Ok(files)
    }

    /// Reads `relative` into `files` if it exists; returns a copy of its bytes.
    fn read_into(
        &self,
        files: &mut BTreeMap<String, Vec<u8>>,
        relative: &str,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let path = self.root.join(relative);
        match std::fs::read(&path) {
            Ok(bytes) => {
                files.insert(relative.to_owned(), bytes.clone());
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RepoError::Io { path, source }),
        }
    }

    /// Writes the immutable, content-named files of `blobs` (chunks, targets) that are not there yet, each
    /// atomically, and returns the ones written.
    ///
    /// A file already present under its name is the same file (its name carries its digest and every write
    /// is atomic); only its length is compared, as a cheap guard against a foreign file. A name only ever
    /// appears on complete, durable bytes, as with [`mast_mirror::write_atomic`], at a fraction of the cost for the hundreds of chunks of a release: the
    /// temporary files of a batch are all written before any is fsynced, so the first fsync's journal
    /// commit carries them all and the rest find nothing left to flush, and each directory is fsynced once
    /// at the end instead of once per file. Measured on ext4: 660 chunks of a 50 MB bundle in well under
    /// a second instead of about five.
    pub fn write_blobs<'a>(
        &self,
        blobs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Vec<String>, RepoError> {
        use std::io::Write as _;
        const BATCH: usize = 256;
        let mut wanted = Vec::new();
        for (relative, bytes) in blobs {
            let path = self.root.join(relative);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.len() == bytes.len() as u64 => continue,
                Ok(_) => return Err(RepoError::Conflict(path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(RepoError::Io { path, source }),
            }
            if !wanted.iter().any(|(r, _, _)| *r == relative) {
                wanted.push((relative, path, bytes));
            }
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut written = Vec::with_capacity(wanted.len());
        for (n, batch) in wanted.chunks(BATCH).enumerate() {
            let mut temps: Vec<(PathBuf, &PathBuf, File)> = Vec::with_capacity(batch.len());
            let result = (|| -> Result<(), RepoError> {
                for (i, (_, path, bytes)) in batch.iter().enumerate() {
                    let io = |source| RepoError::Io {
                        path: path.clone(),
                        source,
                    };
                    let dir = path.parent().unwrap_or(&self.root).to_path_buf();
                    if !dirs.contains(&dir) {
                        std::fs::create_dir_all(&dir).map_err(io)?;
                        dirs.push(dir.clone());
                    }
                    // Hidden, and unique per process, batch and entry: never a layout name.
                    let tmp = dir.join(format!(".blob.tmp-{}-{n}-{i}", std::process::id()));
                    let mut file = File::create(&tmp).map_err(io)?;
                    temps.push((tmp, path, file.try_clone().map_err(io)?));
                    file.write_all(bytes).map_err(io)?;
                }
                for (_, path, file) in &temps {
                    file.sync_all().map_err(|source| RepoError::Io {
                        path: (*path).clone(),
                        source,
                    })?;
                }
                for (tmp, path, _) in &temps {
                    std::fs::rename(tmp, path).map_err(|source| RepoError::Io {
                        path: (*path).clone(),
                        source,
                    })?;
                }
                Ok(())
            })();
            if let Err(e) = result {
                for (tmp, _, _) in &temps {
                    let _ = std::fs::remove_file(tmp);
                }
                return Err(e);
            }
            written.extend(batch.iter().map(|(relative, _, _)| (*relative).to_owned()));
        }
        for dir in &dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| RepoError::Io {
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(written)
    }

    /// Writes every metadata file of `repo` the directory lacks, `metadata/timestamp.json` last.
    ///
    /// A versioned file that exists with other bytes is a leftover of an interrupted run (versions are only
    /// ever assigned above those the timestamp in force refers to), so it is replaced and reported. Root
    /// files never are: the chain on disk is what was loaded.
    pub fn write_metadata(&self, repo: &Repository) -> Result<Written, RepoError> {
        let files = repo.files().map_err(|source| RepoError::Metadata {
            repo: self.root.clone(),
            source,
        })?;
        let mut written = Written::default();
        let mut timestamp = None;
        for (name, bytes) in files {
            if name == TIMESTAMP_FILE {
                timestamp = Some(bytes);
                continue;
            }
            let path = self.root.join(&name);
            match std::fs::read(&path) {
                Ok(existing) if existing == bytes => continue,
                Ok(_) if name.ends_with(".root.json") => return Err(RepoError::Conflict(path)),
                Ok(_) => written.replaced_leftovers.push(name.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(RepoError::Io { path, source }),
            }
            write(&path, &bytes)?;
            written.files.push(name);
        }
        if let Some(bytes) = timestamp {
            let path = self.root.join(TIMESTAMP_FILE);
            if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                write(&path, &bytes)?;
                written.files.push(TIMESTAMP_FILE.to_owned());
            }
        }
        Ok(written)
    }
}

/// Refuses to go on under a root that has expired: everything signed would be refused by every site.
pub fn check_root_fresh(repo: &Repository, now: OffsetDateTime) -> Result<(), RepoError> {
    let root = repo.root();
    if root.expires().is_expired(now) {
        return Err(RepoError::RootExpired {
            file: metadata_path("root", root.version()),
            version: root.version(),
            expires: root.expires().to_string(),
        });
    }
    Ok(())
}

/// Writes a file atomically, creating its directory.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
    mast_mirror::write_atomic(path, bytes).map_err(|source| RepoError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_written_once_across_batches_and_conflicts_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoDir::new(dir.path());
        let names: Vec<String> = (0..600).map(|i| format!("chunks/{i:064x}")).collect();
        let datas: Vec<Vec<u8>> = (0..600).map(|i| vec![i as u8; 1 + i % 7]).collect();
        let blobs = || {
            names
                .iter()
                .zip(&datas)
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .chain([("targets/a/b.json", b"{}".as_slice())])
        };
        let written = repo.write_blobs(blobs()).unwrap();
        assert_eq!(written.len(), 601);
        for (name, data) in names.iter().zip(&datas) {
            assert_eq!(&std::fs::read(dir.path().join(name)).unwrap(), data);
        }
        // Nothing is written twice, and no temporary file is left behind.
        assert!(repo.write_blobs(blobs()).unwrap().is_empty());
        let leftovers = std::fs::read_dir(dir.path().join("chunks"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(leftovers, 0);
        // A file under a blob's name with another length is not silently trusted.
        let err = repo
            .write_blobs([("targets/a/b.json", b"{\"x\":1}".as_slice())])
            .unwrap_err();
        assert!(matches!(err, RepoError::Conflict(_)), "{err}");
    }
}
