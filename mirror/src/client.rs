//! The TUF client workflow over a mirror: [`mast_protocol::tuf::Session`] driven by real reads.
//!
//! The session decides (which file, how many bytes at most, what to trust, what to store); this module only
//! does what it asks: reads each file from a [`MirrorRead`] within its cap, hands the bytes back, and makes
//! every newly trusted file durable through a [`TrustStore`] *before* the session may go on. Targets (a
//! bundle, a chunk index) are then read with [`fetch_target`], which checks length and sha256 while the
//! bytes stream, so nothing unverified reaches the caller's sink as a finished file.
//!
//! The agent runs this over its mirror list with an SQLite [`TrustStore`]; `mast verify` runs it with a
//! [`MemoryStore`], as a site with no state would.
//!
//! An idle poll costs one small request: given the [`Validators`] a mirror sent with the trusted
//! `timestamp.json` ([`Client::revalidate_timestamp`]), the timestamp is read conditionally, and a "not
//! modified" answer ends the refresh without another byte (the session still checks expiry).

use std::collections::BTreeMap;
use std::io::Write;

use mast_protocol::digest::{Sha256Digest, Sha256Hasher};
use mast_protocol::tuf::builder::consistent_target_path;
use mast_protocol::tuf::verify::IntegrityError;
use mast_protocol::tuf::{
    Limits, Next, Persisted, RoleName, Session, StoreOp, TargetFile, TrustedMetadata, TufError,
};
use time::OffsetDateTime;

use crate::{Conditions, Fetched, MirrorError, MirrorRead, ObjectPath};

/// Why a refresh, lookup or target download failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TUF workflow refused what the mirror served (or the mirror lacked a required file).
    #[error(transparent)]
    Tuf(#[from] TufError),
    /// Reading from the mirror failed for a reason other than a missing file.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The trust store could not make a change durable; the session stopped before using it.
    #[error("storing trusted {role} metadata: {source}")]
    Store {
        /// The role being stored or discarded.
        role: String,
        /// What the store said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A target's bytes differ from its signed length or sha256.
    #[error("{object}: {reason}")]
    Target {
        /// The target's path on the mirror.
        object: String,
        /// What differed.
        reason: String,
    },
    /// The caller's sink refused the bytes (a full disk).
    #[error("{object}: writing: {source}")]
    Sink {
        /// The target's path on the mirror.
        object: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Where trusted metadata is kept. [`Client`] calls [`TrustStore::apply`] for each [`StoreOp`] the session
/// hands out and continues only when it returns `Ok`: a store must be durable when it returns (for SQLite,
/// a committed transaction with `synchronous=FULL`), because the session uses the file right after.
pub trait TrustStore {
    /// Saves or discards one role's trusted copy.
    fn apply(&mut self, op: &StoreOp) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// A [`TrustStore`] in memory, for one-shot verification (`mast verify`) and tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    /// Each role's trusted bytes, by role.
    pub files: BTreeMap<RoleName, Vec<u8>>,
    /// Every operation applied, in order.
    pub log: Vec<StoreOp>,
}

impl MemoryStore {
    /// A store whose trusted root is `root` (the bytes the session's [`TrustedMetadata`] was made from).
    pub fn with_root(root: Vec<u8>) -> Self {
        Self {
            files: BTreeMap::from([(RoleName::Root, root)]),
            log: Vec::new(),
        }
    }

    /// The trusted files as [`Persisted`] bytes, to start a later session from, if a root was stored.
    pub fn persisted(&self) -> Option<Persisted<'_>> {
        let bytes = |role: &RoleName| self.files.get(role).map(Vec::as_slice);
        Some(Persisted {
            root: bytes(&RoleName::Root)?,
            timestamp: bytes(&RoleName::Timestamp),
            snapshot: bytes(&RoleName::Snapshot),
            targets: bytes(&RoleName::Targets),
        })
    }
}

impl TrustStore for MemoryStore {
    fn apply(&mut self, op: &StoreOp) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match op {
            StoreOp::Save(file) => {
                self.files.insert(file.role.clone(), file.bytes.clone());
            }
            StoreOp::Discard(role) => {
                self.files.remove(role);
            }
        }
        self.log.push(op.clone());
        Ok(())
    }
}

/// What a mirror said identifies its `timestamp.json` (an HTTP `ETag` and `Last-Modified`, an OCI manifest
/// digest). Kept with the trusted timestamp, per mirror: another mirror's validators mean nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`, or an OCI tag's manifest digest.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
}

/// How this cycle's `timestamp.json` read went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampRead {
    /// Not read (yet).
    NotRead,
    /// The mirror said it has not changed since the validators given: nothing was downloaded.
    NotModified,
    /// Downloaded, with these validators (to revalidate with next time, if the session kept it).
    Fetched(Validators),
}

/// One update cycle against one mirror: [`Client::refresh`], then any number of [`Client::find_target`].
///
/// Like the [`Session`] it drives, a client that returned an error is spent: start a new one from the
/// store's trusted state (which never holds anything the session had not verified).
pub struct Client<'m, M, S> {
    mirror: &'m M,
    store: S,
    session: Session,
    revalidate: Option<Validators>,
    timestamp: TimestampRead,
    cache_control: Option<String>,
}

/// What the session asked for, owned, so the session can be borrowed again to answer it.
enum Action {
    Fetch { file: String, max_length: u64 },
    Store(StoreOp),
    Refreshed,
    Found(TargetFile),
}

impl<'m, M: MirrorRead, S: TrustStore> Client<'m, M, S> {
    /// A cycle starting from `trusted` at `now` (fixed for the whole cycle, TUF §5.1).
    pub fn new(
        mirror: &'m M,
        store: S,
        trusted: TrustedMetadata,
        now: OffsetDateTime,
        limits: Limits,
    ) -> Self {
        Self {
            mirror,
            store,
            session: Session::new(trusted, now, limits),
            revalidate: None,
            timestamp: TimestampRead::NotRead,
            cache_control: None,
        }
    }

    /// Reads `timestamp.json` conditionally: "not modified" while the mirror's copy still has
    /// `validators` (those [`Client::timestamp_read`] gave when the trusted timestamp was fetched from this
    /// mirror). Ignored when no timestamp is trusted yet.
    pub fn revalidate_timestamp(mut self, validators: Validators) -> Self {
        if self.session.trusted().timestamp().is_some() {
            self.revalidate = Some(validators);
        }
        self
    }

    /// How this cycle read `timestamp.json`.
    pub fn timestamp_read(&self) -> &TimestampRead {
        &self.timestamp
    }

    /// The `Cache-Control` the mirror sent with this cycle's `timestamp.json` (full or "not modified"
    /// answer), as sent. A scheduler may read `max-age` from it; it says nothing about trust.
    pub fn timestamp_cache_control(&self) -> Option<&str> {
        self.cache_control.as_deref()
    }

    /// Walks the root chain and refreshes timestamp, snapshot and targets (TUF §5.3–5.6), storing each
    /// newly trusted file before going on.
    pub async fn refresh(&mut self) -> Result<(), ClientError> {
        match self.drive().await? {
            None => Ok(()),
            Some(_) => Err(TufError::Usage("refresh ended in a lookup").into()),
        }
    }

    /// Looks `name` up through targets and its delegations (after [`Client::refresh`]). A name no trusted
    /// role lists is [`TufError::TargetNotFound`].
    pub async fn find_target(&mut self, name: &str) -> Result<TargetFile, ClientError> {
        self.session.find_target(name)?;
        self.drive()
            .await?
            .ok_or_else(|| TufError::Usage("lookup ended without a target").into())
    }

    /// The trusted metadata so far.
    pub fn trusted(&self) -> &TrustedMetadata {
        self.session.trusted()
    }

    /// The mirror this client reads.
    pub fn mirror(&self) -> &'m M {
        self.mirror
    }

    /// Ends the cycle, returning the store.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Runs the session until it is refreshed (`None`) or found a target (`Some`).
    async fn drive(&mut self) -> Result<Option<TargetFile>, ClientError> {
        loop {
            let action = match self.session.step()? {
                Next::Fetch(req) => Action::Fetch {
                    file: req.file.clone(),
                    max_length: req.max_length,
                },
                Next::Store(op) => Action::Store(op.clone()),
                Next::Refreshed => Action::Refreshed,
                Next::Found(target) => Action::Found(target.clone()),
            };
            match action {
                Action::Fetch { file, max_length } => self.fetch(&file, max_length).await?,
                Action::Store(op) => {
                    self.store.apply(&op).map_err(|source| ClientError::Store {
                        role: match &op {
                            StoreOp::Save(f) => f.role.as_str().to_owned(),
                            StoreOp::Discard(r) => r.as_str().to_owned(),
                        },
                        source,
                    })?;
                    self.session.stored();
                }
                Action::Refreshed => return Ok(None),
                Action::Found(target) => return Ok(Some(target)),
            }
        }
    }

    /// Answers one fetch request: bytes, not modified, not found, or the error that ends the cycle.
    async fn fetch(&mut self, file: &str, max_length: u64) -> Result<(), ClientError> {
        let object = ObjectPath::metadata(file)?;
        tracing::debug!(mirror = %self.mirror.describe(), %object, max_length, "fetching metadata");
        let conditions = match (&self.revalidate, object.is_mutable()) {
            (Some(v), true) => {
                Conditions::revalidate(v.etag.as_deref(), v.last_modified.as_deref())
            }
            _ => Conditions::default(),
        };
        let read = match self.mirror.get_with(&object, max_length, &conditions).await {
            Ok(Fetched::NotModified { cache_control }) if object.is_mutable() => {
                self.cache_control = cache_control;
                self.timestamp = TimestampRead::NotModified;
                return Ok(self.session.not_modified()?);
            }
            Ok(Fetched::Full(response)) => {
                if object.is_mutable() {
                    self.cache_control.clone_from(&response.cache_control);
                    self.timestamp = TimestampRead::Fetched(Validators {
                        etag: response.etag.clone(),
                        last_modified: response.last_modified.clone(),
                    });
                }
                response.bytes().await
            }
            // Nothing asked for either; a mirror that answers so is broken.
            Ok(Fetched::NotModified { .. } | Fetched::Partial { .. }) => {
                Err(MirrorError::Protocol {
                    object: object.as_path(),
                    reason: "answered a plain read as not modified or partial".to_owned(),
                })
            }
            Err(e) => Err(e),
        };
        match read {
            Ok(bytes) => Ok(self.session.fetched(&bytes)?),
            Err(e) if e.is_not_found() => Ok(self.session.not_found()?),
            // Over the cap: the session's own error, so it carries the TUF error kind `length`.
            Err(MirrorError::TooLarge { limit, .. }) => Err(TufError::Integrity {
                file: file.to_owned(),
                source: IntegrityError::TooLong { limit },
            }
            .into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The mirror object of target `name` (its consistent-snapshot path, `targets/DIR/<sha256>.BASENAME`).
pub fn target_object(name: &str, target: &TargetFile) -> Result<ObjectPath, ClientError> {
    let path = consistent_target_path(name, target).map_err(|e| ClientError::Target {
        object: name.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(ObjectPath::target(
        path.strip_prefix("targets/").unwrap_or(&path),
    )?)
}

/// Reads target `name` into `sink`, checking the signed length and sha256 as the bytes stream: the read
/// stops one piece past the signed length, and the digest is compared at the end. The sink sees bytes
/// before they are verified, so write to a staging file and keep it only when this returns `Ok`.
pub async fn fetch_target<M: MirrorRead>(
    mirror: &M,
    name: &str,
    target: &TargetFile,
    sink: &mut impl Write,
) -> Result<(), ClientError> {
    let object = target_object(name, target)?;
    let sha256 = object.sha256().ok_or_else(|| ClientError::Target {
        object: object.as_path(),
        reason: "no sha256".to_owned(),
    })?;
    fetch_verified(mirror, &object, target.length, &sha256, sink).await
}

/// Reads `object` into `sink`, checking that it is exactly `length` bytes with digest `sha256` (a target,
/// or a chunk named by the signed index).
pub async fn fetch_verified<M: MirrorRead>(
    mirror: &M,
    object: &ObjectPath,
    length: u64,
    sha256: &Sha256Digest,
    sink: &mut impl Write,
) -> Result<(), ClientError> {
    let mismatch = |reason: String| ClientError::Target {
        object: object.as_path(),
        reason,
    };
    let mut response = match mirror.get(object, length).await {
        Err(MirrorError::TooLarge { .. }) => {
            return Err(mismatch(format!("longer than the signed {length} bytes")));
        }
        other => other?,
    };
    let mut hasher = Sha256Hasher::new();
    loop {
        let piece = match response.chunk().await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(MirrorError::TooLarge { .. }) => {
                return Err(mismatch(format!("longer than the signed {length} bytes")));
            }
            Err(e) => return Err(e.into()),
        };
        hasher.update(&piece);
        sink.write_all(&piece).map_err(|source| ClientError::Sink {
            object: object.as_path(),
            source,
        })?;
    }
    let read = hasher.len();
    let actual = hasher.finish();
    if read != length || actual != *sha256 {
        return Err(mismatch(format!(
            "got {read} bytes with sha256 {actual}, signed: {length} bytes with sha256 {sha256}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use mast_protocol::crypto::SigningKey;
    use mast_protocol::tuf::builder::{
        Expiries, Repository, RoleSigners, RoleSpec, RootSpec, new_root,
    };
    use mast_protocol::tuf::{ErrorKind, Expiry};
    use time::Duration;

    use super::*;
    use crate::DirMirror;

    struct Fixture {
        dir: tempfile::TempDir,
        root: Vec<u8>,
        keys: Vec<SigningKey>,
        repo: Repository,
        now: OffsetDateTime,
    }

    impl Fixture {
        fn new() -> Self {
            let now = OffsetDateTime::now_utc();
            let keys: Vec<SigningKey> =
                (1..=4u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
            let one = |k: &SigningKey| RoleSpec {
                keys: vec![k.public()],
                threshold: 1,
            };
            let spec = RootSpec {
                root: one(&keys[0]),
                targets: one(&keys[1]),
                snapshot: one(&keys[2]),
                timestamp: one(&keys[3]),
            };
            let mut root = new_root(&spec, 1, Expiry::new(now + Duration::days(365))).unwrap();
            root.sign(&keys[0]);
            let root_bytes = root.to_bytes().unwrap();
            let repo = Repository::create(root, now, Expiries::default()).unwrap();
            Self {
                dir: tempfile::tempdir().unwrap(),
                root: root_bytes,
                keys,
                repo,
                now,
            }
        }

        fn add_target(&mut self, name: &str, bytes: &[u8]) -> TargetFile {
            let target = TargetFile {
                length: bytes.len() as u64,
                hashes: [("sha256".to_owned(), Sha256Digest::of(bytes).to_hex())].into(),
                custom: None,
                extra: BTreeMap::new(),
            };
            write(
                self.dir.path(),
                &consistent_target_path(name, &target).unwrap(),
                bytes,
            );
            self.repo.add_target(name, target.clone()).unwrap();
            target
        }

        fn commit(&mut self) {
            let signers = RoleSigners {
                targets: vec![&self.keys[1]],
                snapshot: vec![&self.keys[2]],
                timestamp: vec![&self.keys[3]],
                delegated: BTreeMap::new(),
            };
            self.repo.commit(&signers, self.now).unwrap();
            for (name, bytes) in self.repo.files().unwrap() {
                write(self.dir.path(), &name, &bytes);
            }
        }

        fn client(&self) -> Client<'static, DirMirror, MemoryStore> {
            let mirror: &'static DirMirror = Box::leak(Box::new(DirMirror::new(self.dir.path())));
            Client::new(
                mirror,
                MemoryStore::with_root(self.root.clone()),
                TrustedMetadata::new(&self.root).unwrap(),
                self.now,
                Limits::default(),
            )
        }
    }

    fn write(root: &Path, name: &str, bytes: &[u8]) {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[tokio::test]
    async fn refreshes_stores_before_use_finds_and_fetches_a_target() {
        let mut f = Fixture::new();
        let target = f.add_target("channels/prod/1/bundle.tar.gz", b"bundle bytes");
        f.commit();
        let mut client = f.client();
        client.refresh().await.unwrap();
        let found = client
            .find_target("channels/prod/1/bundle.tar.gz")
            .await
            .unwrap();
        assert_eq!(found, target);
        let mut out = Vec::new();
        fetch_target(
            client.mirror(),
            "channels/prod/1/bundle.tar.gz",
            &found,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(out, b"bundle bytes");
        let store = client.into_store();
        let saved: Vec<&str> = store
            .log
            .iter()
            .map(|op| match op {
                StoreOp::Save(f) => f.role.as_str(),
                StoreOp::Discard(r) => r.as_str(),
            })
            .collect();
        assert_eq!(saved, ["timestamp", "snapshot", "targets"]);
        // The stored state starts a later session that trusts the same versions.
        let (trusted, dropped) =
            TrustedMetadata::from_persisted(store.persisted().unwrap()).unwrap();
        assert!(dropped.is_empty());
        assert_eq!(trusted.targets().unwrap().version(), 1);
    }

    #[tokio::test]
    async fn refuses_a_tampered_target_and_a_missing_snapshot() {
        let mut f = Fixture::new();
        let target = f.add_target("a.txt", b"honest");
        f.commit();
        let path = f
            .dir
            .path()
            .join(consistent_target_path("a.txt", &target).unwrap());
        std::fs::write(&path, b"hacked").unwrap();
        let mut client = f.client();
        client.refresh().await.unwrap();
        let found = client.find_target("a.txt").await.unwrap();
        let err = fetch_target(client.mirror(), "a.txt", &found, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Target { .. }), "{err}");
        std::fs::write(&path, b"honest and longer").unwrap();
        let err = fetch_target(client.mirror(), "a.txt", &found, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("longer than the signed"), "{err}");

        let missing = f.dir.path().join("metadata/1.snapshot.json");
        std::fs::remove_file(missing).unwrap();
        let mut client = f.client();
        match client.refresh().await.unwrap_err() {
            ClientError::Tuf(e) => assert_eq!(e.kind(), ErrorKind::Missing),
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn an_idle_poll_revalidates_the_timestamp_and_downloads_nothing() {
        let mut f = Fixture::new();
        f.add_target("a.txt", b"a");
        f.commit();
        let mut client = f.client();
        client.refresh().await.unwrap();
        let TimestampRead::Fetched(validators) = client.timestamp_read().clone() else {
            panic!("{:?}", client.timestamp_read())
        };
        assert!(validators.etag.is_some());
        let store = client.into_store();
        let (dir, now) = (f.dir.path().to_path_buf(), f.now);
        let restart = move |store: &MemoryStore| {
            let (trusted, _) = TrustedMetadata::from_persisted(store.persisted().unwrap()).unwrap();
            let mirror: &'static DirMirror = Box::leak(Box::new(DirMirror::new(&dir)));
            Client::new(mirror, store.clone(), trusted, now, Limits::default())
        };

        let mut idle = restart(&store).revalidate_timestamp(validators.clone());
        idle.refresh().await.unwrap();
        assert_eq!(idle.timestamp_read(), &TimestampRead::NotModified);
        assert_eq!(
            idle.into_store().log.len(),
            store.log.len(),
            "nothing new stored"
        );

        // A new timestamp has another validator: read in full, verified, stored.
        f.add_target("b.txt", b"b");
        f.commit();
        let mut busy = restart(&store).revalidate_timestamp(validators.clone());
        busy.refresh().await.unwrap();
        assert!(matches!(busy.timestamp_read(), TimestampRead::Fetched(v) if *v != validators));
        assert!(busy.find_target("b.txt").await.is_ok());
    }

    #[tokio::test]
    async fn an_oversized_timestamp_is_a_length_error_and_a_failing_store_stops_the_cycle() {
        let mut f = Fixture::new();
        f.commit();
        struct Refuse;
        impl TrustStore for Refuse {
            fn apply(
                &mut self,
                _: &StoreOp,
            ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                Err("disk full".into())
            }
        }
        let mirror = DirMirror::new(f.dir.path());
        let trusted = || TrustedMetadata::new(&f.root).unwrap();
        let mut client = Client::new(&mirror, Refuse, trusted(), f.now, Limits::default());
        let err = client.refresh().await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Store { role, .. } if role == "timestamp"),
            "{err}"
        );

        let limits = Limits {
            timestamp_max: 10,
            ..Limits::default()
        };
        let mut client = Client::new(&mirror, MemoryStore::default(), trusted(), f.now, limits);
        match client.refresh().await.unwrap_err() {
            ClientError::Tuf(e) => assert_eq!(e.kind(), ErrorKind::Length),
            other => panic!("{other}"),
        }
    }
}
