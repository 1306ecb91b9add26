//! The TUF client workflow (specification 1.0, §5 "Detailed client workflow") as a sans-IO state machine.
//!
//! A [`Session`] starts from [`TrustedMetadata`] and the time the update cycle started. The caller loops on
//! [`Session::step`], which says what to do: fetch a file (and hand back its bytes, or say it is missing or
//! unchanged), store a newly trusted file durably, or stop because the refresh is complete or a target was
//! found. The session never touches a socket, a file or a clock, so every branch of the workflow is driven
//! by plain bytes in tests, and the agent, the packager's `verify` and the `tuf` conformance CLI all share
//! one implementation.
//!
//! Newly trusted metadata is handed out as [`StoreOp::Save`] *before* anything that depends on it is
//! requested: the caller persists it and calls [`Session::stored`]. A crash between the two leaves the
//! previous trusted state, which is still valid; a crash after leaves the new one. Either way the next
//! start resumes from a state this workflow produced.

use std::collections::{BTreeSet, VecDeque};

use time::OffsetDateTime;

use crate::tuf::error::{RootChainError, TufError};
use crate::tuf::metadata::{
    MetaFile, Role, Root, Signed, Snapshot, TargetFile, Targets, Timestamp,
};
use crate::tuf::trusted::{
    TrustedMetadata, parse, snapshot_meta, top_role, verify_delegated, verify_under_root,
};
use crate::tuf::verify::{IntegrityError, verify_bytes, verify_threshold};

/// Size caps per role, applied while downloading when the referring metadata pins no length (root and
/// timestamp never have one). They bound what a hostile mirror can make a site download or parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest `N.root.json`.
    pub root_max: u64,
    /// Largest `timestamp.json`.
    pub timestamp_max: u64,
    /// Largest snapshot.
    pub snapshot_max: u64,
    /// Largest targets or delegated targets file.
    pub targets_max: u64,
    /// Most root versions walked in one refresh (python-tuf uses 256 too).
    pub max_root_rotations: u32,
    /// Most targets roles visited when looking up one target (python-tuf uses 32).
    pub max_delegations: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            root_max: 512 * 1024,
            timestamp_max: 16 * 1024,
            snapshot_max: 4 * 1024 * 1024,
            targets_max: 32 * 1024 * 1024,
            max_root_rotations: 256,
            max_delegations: 32,
        }
    }
}

/// A role, top-level or delegated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleName {
    /// `root`.
    Root,
    /// `timestamp`.
    Timestamp,
    /// `snapshot`.
    Snapshot,
    /// `targets`.
    Targets,
    /// A delegated targets role.
    Delegated(String),
}

impl RoleName {
    /// The role's name as metadata spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Root => "root",
            Self::Timestamp => "timestamp",
            Self::Snapshot => "snapshot",
            Self::Targets => "targets",
            Self::Delegated(name) => name,
        }
    }

    /// The file name of the trusted copy: `root.json`, `targets.json`, or a delegated role's name quoted as
    /// python-tuf quotes it (so a hostile role name such as `../x` cannot escape a metadata directory).
    pub fn file_name(&self) -> String {
        format!("{}.json", quote_role_name(self.as_str()))
    }

    fn versioned_file_name(&self, version: u64) -> String {
        format!("{version}.{}", self.file_name())
    }
}

/// Percent-encodes a role name like Python's `urllib.parse.quote(name, safe="")`.
pub fn quote_role_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A file the session needs from the mirror's metadata directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The role the file belongs to.
    pub role: RoleName,
    /// The file name relative to the metadata base (`3.root.json`, `timestamp.json`, …).
    pub file: String,
    /// Read at most this many bytes; more is an error, so stop reading one byte past it.
    pub max_length: u64,
}

/// A trusted metadata file to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedFile {
    /// Its role.
    pub role: RoleName,
    /// Its version.
    pub version: u64,
    /// The bytes exactly as fetched (their hash is what snapshot and timestamp pin).
    pub bytes: Vec<u8>,
}

/// A change the caller must make durable before the session goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Keep this file as the trusted copy of its role (replacing the previous one).
    Save(TrustedFile),
    /// Forget the trusted copy of this role: a key rotation made it untrustworthy (§5.3.11).
    Discard(RoleName),
}

/// What the caller must do next.
#[derive(Debug)]
pub enum Next<'a> {
    /// Fetch a file, then call [`Session::fetched`], [`Session::not_found`] or [`Session::not_modified`].
    Fetch(&'a FetchRequest),
    /// Make this durable, then call [`Session::stored`].
    Store(&'a StoreOp),
    /// The refresh is complete: every top-level role is trusted, current and unexpired.
    Refreshed,
    /// The target looked up with [`Session::find_target`] is listed, with this length, hashes and custom
    /// data, by a trusted targets role.
    Found(&'a TargetFile),
}

enum Phase {
    RootChain { next: u64, walked: u32 },
    Timestamp,
    Snapshot,
    Targets,
    Refreshed,
    Search(Search),
    Found(TargetFile),
    Failed,
}

struct Search {
    target: String,
    /// Roles still to visit, with the role that delegated to each; popped from the end (pre-order DFS).
    stack: Vec<(String, String)>,
    visited: BTreeSet<String>,
    budget: u32,
}

/// One update cycle: refresh the top-level metadata, then optionally look up targets.
pub struct Session {
    trusted: TrustedMetadata,
    now: OffsetDateTime,
    limits: Limits,
    phase: Phase,
    request: Option<FetchRequest>,
    store: VecDeque<StoreOp>,
}

impl Session {
    /// Starts an update cycle at `now` (§5.1: the time is fixed for the whole cycle).
    pub fn new(trusted: TrustedMetadata, now: OffsetDateTime, limits: Limits) -> Self {
        let next = trusted.root.version() + 1;
        Self {
            trusted,
            now,
            limits,
            phase: Phase::RootChain { next, walked: 0 },
            request: None,
            store: VecDeque::new(),
        }
    }

    /// What the caller must do next. Errors end the session.
    pub fn step(&mut self) -> Result<Next<'_>, TufError> {
        if !self.store.is_empty() {
            return Ok(Next::Store(&self.store[0]));
        }
        if self.request.is_some() {
            return Err(TufError::Usage("a fetch is outstanding; answer it first"));
        }
        let result = self.advance();
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        match result? {
            Step::Fetch(req) => Ok(Next::Fetch(self.request.insert(req))),
            Step::Refreshed => Ok(Next::Refreshed),
            Step::Found => match &self.phase {
                Phase::Found(t) => Ok(Next::Found(t)),
                _ => Err(TufError::Usage("internal: found without a target")),
            },
        }
    }

    /// Hands over the bytes of the file last requested. The caller has stopped reading at
    /// `max_length + 1` bytes, so an over-long file is detected here without being read whole.
    pub fn fetched(&mut self, bytes: &[u8]) -> Result<(), TufError> {
        let req = self
            .request
            .take()
            .ok_or(TufError::Usage("no fetch is outstanding"))?;
        let result = if bytes.len() as u64 > req.max_length {
            Err(TufError::Integrity {
                file: req.file.clone(),
                source: IntegrityError::TooLong {
                    limit: req.max_length,
                },
            })
        } else {
            self.accept(&req, bytes)
        };
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        result
    }

    /// Says the file last requested is not on the mirror. Only the next root may be absent: that is how
    /// the root chain ends (§5.3.3).
    pub fn not_found(&mut self) -> Result<(), TufError> {
        let req = self
            .request
            .take()
            .ok_or(TufError::Usage("no fetch is outstanding"))?;
        let result = match self.phase {
            Phase::RootChain { .. } => self.finish_root_chain(),
            _ => Err(TufError::Missing { file: req.file }),
        };
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        result
    }

    /// Says `timestamp.json` has not changed since the trusted copy was fetched (an HTTP 304). This is the
    /// common case on an idle poll, and costs no parsing or signature checks.
    pub fn not_modified(&mut self) -> Result<(), TufError> {
        let req = self
            .request
            .take()
            .ok_or(TufError::Usage("no fetch is outstanding"))?;
        let result = match (&self.phase, &self.trusted.timestamp) {
            (Phase::Timestamp, Some(ts)) => {
                check_expiry(ts, &req.file, self.now).map(|()| self.phase = Phase::Snapshot)
            }
            _ => Err(TufError::Usage(
                "not-modified is only meaningful for a trusted timestamp.json",
            )),
        };
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        result
    }

    /// Confirms the [`StoreOp`] last returned by [`Session::step`] is durable.
    pub fn stored(&mut self) {
        self.store.pop_front();
    }

    /// Starts looking up `target` through targets and its delegations (§5.6.7). Only after
    /// [`Next::Refreshed`] or a previous lookup.
    pub fn find_target(&mut self, target: &str) -> Result<(), TufError> {
        if !matches!(self.phase, Phase::Refreshed | Phase::Found(_)) || !self.store.is_empty() {
            return Err(TufError::Usage("find_target needs a completed refresh"));
        }
        self.phase = Phase::Search(Search {
            target: target.to_owned(),
            stack: vec![("targets".to_owned(), "root".to_owned())],
            visited: BTreeSet::new(),
            budget: self.limits.max_delegations,
        });
        Ok(())
    }

    /// The trusted metadata, in whatever state the session reached.
    pub fn trusted(&self) -> &TrustedMetadata {
        &self.trusted
    }

    /// Ends the session, returning the trusted metadata.
    pub fn into_trusted(self) -> TrustedMetadata {
        self.trusted
    }

    fn advance(&mut self) -> Result<Step, TufError> {
        loop {
            match &mut self.phase {
                Phase::RootChain { next, walked } => {
                    if *walked >= self.limits.max_root_rotations {
                        self.finish_root_chain()?;
                        continue;
                    }
                    return Ok(Step::Fetch(FetchRequest {
                        role: RoleName::Root,
                        file: RoleName::Root.versioned_file_name(*next),
                        max_length: self.limits.root_max,
                    }));
                }
                Phase::Timestamp => {
                    return Ok(Step::Fetch(FetchRequest {
                        role: RoleName::Timestamp,
                        file: RoleName::Timestamp.file_name(),
                        max_length: self.limits.timestamp_max,
                    }));
                }
                Phase::Snapshot => {
                    let meta = self.timestamp()?.signed.snapshot_meta().clone();
                    if let Some(s) = self
                        .trusted
                        .snapshot
                        .as_ref()
                        .filter(|s| s.version() == meta.version)
                    {
                        // The trusted snapshot is the one timestamp names: nothing to download.
                        check_expiry(
                            s,
                            &self.file_for(&RoleName::Snapshot, meta.version),
                            self.now,
                        )?;
                        self.phase = Phase::Targets;
                        continue;
                    }
                    return Ok(Step::Fetch(self.meta_request(
                        RoleName::Snapshot,
                        &meta,
                        self.limits.snapshot_max,
                    )));
                }
                Phase::Targets => {
                    let meta = self.snapshot_meta_for("targets")?;
                    if let Some(t) = self
                        .trusted
                        .targets
                        .as_ref()
                        .filter(|t| t.version() == meta.version)
                    {
                        check_expiry(
                            t,
                            &self.file_for(&RoleName::Targets, meta.version),
                            self.now,
                        )?;
                        self.phase = Phase::Refreshed;
                        continue;
                    }
                    return Ok(Step::Fetch(self.meta_request(
                        RoleName::Targets,
                        &meta,
                        self.limits.targets_max,
                    )));
                }
                Phase::Refreshed => return Ok(Step::Refreshed),
                Phase::Found(_) => return Ok(Step::Found),
                Phase::Failed => return Err(TufError::Usage("the session already failed")),
                Phase::Search(_) => return self.advance_search(),
            }
        }
    }

    fn advance_search(&mut self) -> Result<Step, TufError> {
        let Phase::Search(search) = &mut self.phase else {
            return Err(TufError::Usage("internal: not searching"));
        };
        while let Some((role, parent)) = search.stack.last().cloned() {
            if search.visited.contains(&role) {
                search.stack.pop();
                continue;
            }
            if search.budget == 0 {
                break;
            }
            let doc = if role == "targets" {
                self.trusted
                    .targets
                    .as_ref()
                    .ok_or(TufError::Usage("internal: no trusted targets"))?
            } else {
                let meta = snapshot_meta(&self.trusted, &role)?;
                match self.trusted.delegated.get(&role) {
                    Some(d)
                        if d.version() == meta.version
                            && verify_delegated(&self.trusted, &parent, &role, d).is_ok()
                            && !d.expires().is_expired(self.now) =>
                    {
                        d
                    }
                    _ => {
                        let rn = RoleName::Delegated(role.clone());
                        let file = if self.trusted.root.signed.consistent_snapshot {
                            rn.versioned_file_name(meta.version)
                        } else {
                            rn.file_name()
                        };
                        let max_length = meta
                            .length
                            .map_or(self.limits.targets_max, |l| l.min(self.limits.targets_max));
                        return Ok(Step::Fetch(FetchRequest {
                            role: rn,
                            file,
                            max_length,
                        }));
                    }
                }
            };
            search.stack.pop();
            if let Some(t) = doc.signed.targets.get(&search.target) {
                self.phase = Phase::Found(t.clone());
                return Ok(Step::Found);
            }
            search.visited.insert(role.clone());
            search.budget -= 1;
            if let Some(delegations) = &doc.signed.delegations {
                let mut children = Vec::new();
                for d in delegations
                    .roles
                    .iter()
                    .filter(|d| d.is_delegated_path(&search.target))
                {
                    children.push((d.name.clone(), role.clone()));
                    if d.terminating {
                        search.stack.clear();
                        break;
                    }
                }
                search.stack.extend(children.into_iter().rev());
            }
        }
        let Phase::Search(search) = &self.phase else {
            unreachable!("checked above")
        };
        Err(TufError::TargetNotFound(search.target.clone()))
    }

    fn accept(&mut self, req: &FetchRequest, bytes: &[u8]) -> Result<(), TufError> {
        match self.phase {
            Phase::RootChain { next, walked } => self.accept_root(req, bytes, next, walked),
            Phase::Timestamp => self.accept_timestamp(req, bytes),
            Phase::Snapshot => self.accept_snapshot(req, bytes),
            Phase::Targets => self.accept_targets(req, bytes),
            Phase::Search(_) => self.accept_delegated(req, bytes),
            _ => Err(TufError::Usage(
                "internal: fetched bytes in a phase that requests none",
            )),
        }
    }

    /// §5.3.4–5.3.8: N+1 must be signed by a threshold of N's root keys and of its own, and be version N+1.
    fn accept_root(
        &mut self,
        req: &FetchRequest,
        bytes: &[u8],
        next: u64,
        walked: u32,
    ) -> Result<(), TufError> {
        let file = &req.file;
        let new = parse::<Root>(file, bytes)?;
        let chain = |reason| TufError::RootChain {
            file: file.clone(),
            reason,
        };
        let trusted = &self.trusted.root.signed;
        let rk = top_role(trusted, "root");
        verify_threshold(&new, "root", &trusted.keys, &rk.keyids, rk.threshold)
            .map_err(|e| chain(RootChainError::NotSignedByTrusted(e)))?;
        if new.version() != next {
            return Err(chain(RootChainError::Version {
                expected: next,
                found: new.version(),
            }));
        }
        let nk = top_role(&new.signed, "root");
        verify_threshold(&new, "root", &new.signed.keys, &nk.keyids, nk.threshold)
            .map_err(|e| chain(RootChainError::NotSelfSigned(e)))?;

        let previous = std::mem::replace(&mut self.trusted.root, new);
        let dropped = self.trusted.after_root_change(&previous.signed);
        self.store.push_back(StoreOp::Save(TrustedFile {
            role: RoleName::Root,
            version: next,
            bytes: bytes.to_vec(),
        }));
        self.store.extend(dropped.into_iter().map(StoreOp::Discard));
        self.phase = Phase::RootChain {
            next: next + 1,
            walked: walked + 1,
        };
        Ok(())
    }

    /// §5.3.10: the newest root must not be expired.
    fn finish_root_chain(&mut self) -> Result<(), TufError> {
        let file = RoleName::Root.versioned_file_name(self.trusted.root.version());
        check_expiry(&self.trusted.root, &file, self.now)?;
        self.phase = Phase::Timestamp;
        Ok(())
    }

    /// §5.4: threshold, no rollback of the timestamp or of the snapshot version it names, not expired.
    fn accept_timestamp(&mut self, req: &FetchRequest, bytes: &[u8]) -> Result<(), TufError> {
        let file = &req.file;
        let new = parse::<Timestamp>(file, bytes)?;
        self.verify_top(&new, file)?;
        if let Some(old) = &self.trusted.timestamp {
            if new.version() < old.version() {
                return Err(rollback(file, "timestamp", old.version(), new.version()));
            }
            if new.version() == old.version() {
                // Same version (a CDN that ignores If-None-Match): keep the trusted copy, as python-tuf does.
                check_expiry(old, file, self.now)?;
                self.phase = Phase::Snapshot;
                return Ok(());
            }
            let (old_snap, new_snap) = (
                old.signed.snapshot_meta().version,
                new.signed.snapshot_meta().version,
            );
            if new_snap < old_snap {
                return Err(rollback(file, "snapshot", old_snap, new_snap));
            }
        }
        check_expiry(&new, file, self.now)?;
        let version = new.version();
        self.trusted.timestamp = Some(new);
        self.save(RoleName::Timestamp, version, bytes);
        self.phase = Phase::Snapshot;
        Ok(())
    }

    /// §5.5: length and hashes from timestamp, threshold, the version timestamp names, no targets role
    /// removed or rolled back relative to the trusted snapshot, not expired.
    fn accept_snapshot(&mut self, req: &FetchRequest, bytes: &[u8]) -> Result<(), TufError> {
        let file = &req.file;
        let meta = self.timestamp()?.signed.snapshot_meta().clone();
        check_meta_bytes(file, bytes, &meta)?;
        let new = parse::<Snapshot>(file, bytes)?;
        self.verify_top(&new, file)?;
        if new.version() != meta.version {
            return Err(mismatch(file, "timestamp", meta.version, new.version()));
        }
        if let Some(old) = &self.trusted.snapshot {
            for (name, old_meta) in &old.signed.meta {
                let found = new.signed.meta.get(name).map_or(0, |m| m.version);
                if found < old_meta.version {
                    return Err(rollback(
                        file,
                        name.trim_end_matches(".json"),
                        old_meta.version,
                        found,
                    ));
                }
            }
        }
        check_expiry(&new, file, self.now)?;
        let version = new.version();
        self.trusted.snapshot = Some(new);
        self.save(RoleName::Snapshot, version, bytes);
        self.phase = Phase::Targets;
        Ok(())
    }

    /// §5.6: length and hashes from snapshot, threshold, the version snapshot names, not expired.
    fn accept_targets(&mut self, req: &FetchRequest, bytes: &[u8]) -> Result<(), TufError> {
        let file = &req.file;
        let meta = self.snapshot_meta_for("targets")?;
        check_meta_bytes(file, bytes, &meta)?;
        let new = parse::<Targets>(file, bytes)?;
        self.verify_top(&new, file)?;
        if new.version() != meta.version {
            return Err(mismatch(file, "snapshot", meta.version, new.version()));
        }
        check_expiry(&new, file, self.now)?;
        let version = new.version();
        self.trusted.targets = Some(new);
        self.save(RoleName::Targets, version, bytes);
        self.phase = Phase::Refreshed;
        Ok(())
    }

    /// §5.6.7.2: a delegated role, verified with the keys its delegator lists.
    fn accept_delegated(&mut self, req: &FetchRequest, bytes: &[u8]) -> Result<(), TufError> {
        let file = &req.file;
        let Phase::Search(search) = &self.phase else {
            return Err(TufError::Usage("internal: not searching"));
        };
        let Some((role, parent)) = search.stack.last().cloned() else {
            return Err(TufError::Usage("internal: no role pending"));
        };
        let meta = snapshot_meta(&self.trusted, &role)?;
        check_meta_bytes(file, bytes, &meta)?;
        let new = parse::<Targets>(file, bytes)?;
        verify_delegated(&self.trusted, &parent, &role, &new).map_err(|source| {
            TufError::Threshold {
                file: file.clone(),
                source,
            }
        })?;
        if new.version() != meta.version {
            return Err(mismatch(file, "snapshot", meta.version, new.version()));
        }
        check_expiry(&new, file, self.now)?;
        let version = new.version();
        self.trusted.delegated.insert(role.clone(), new);
        self.save(RoleName::Delegated(role), version, bytes);
        Ok(())
    }

    fn verify_top<T: Role>(&self, doc: &Signed<T>, file: &str) -> Result<(), TufError> {
        verify_under_root(&self.trusted.root.signed, doc).map_err(|source| TufError::Threshold {
            file: file.to_owned(),
            source,
        })
    }

    fn save(&mut self, role: RoleName, version: u64, bytes: &[u8]) {
        self.store.push_back(StoreOp::Save(TrustedFile {
            role,
            version,
            bytes: bytes.to_vec(),
        }));
    }

    fn timestamp(&self) -> Result<&Signed<Timestamp>, TufError> {
        self.trusted
            .timestamp
            .as_ref()
            .ok_or(TufError::Usage("internal: no trusted timestamp"))
    }

    fn snapshot_meta_for(&self, role: &str) -> Result<MetaFile, TufError> {
        snapshot_meta(&self.trusted, role)
    }

    fn file_for(&self, role: &RoleName, version: u64) -> String {
        if self.trusted.root.signed.consistent_snapshot {
            role.versioned_file_name(version)
        } else {
            role.file_name()
        }
    }

    fn meta_request(&self, role: RoleName, meta: &MetaFile, cap: u64) -> FetchRequest {
        let file = self.file_for(&role, meta.version);
        FetchRequest {
            role,
            file,
            max_length: meta.length.map_or(cap, |l| l.min(cap)),
        }
    }
}

enum Step {
    Fetch(FetchRequest),
    Refreshed,
    Found,
}

fn check_meta_bytes(file: &str, bytes: &[u8], meta: &MetaFile) -> Result<(), TufError> {
    verify_bytes(bytes, meta.length, meta.hashes.as_ref()).map_err(|source| TufError::Integrity {
        file: file.to_owned(),
        source,
    })
}

fn check_expiry<T: Role>(doc: &Signed<T>, file: &str, now: OffsetDateTime) -> Result<(), TufError> {
    if doc.expires().is_expired(now) {
        return Err(TufError::Expired {
            file: file.to_owned(),
            role: T::NAME.to_owned(),
            expires: doc.expires(),
            now,
        });
    }
    Ok(())
}

fn rollback(file: &str, role: &str, trusted: u64, found: u64) -> TufError {
    TufError::Rollback {
        file: file.to_owned(),
        role: role.to_owned(),
        trusted,
        found,
    }
}

fn mismatch(file: &str, listed_by: &'static str, expected: u64, found: u64) -> TufError {
    TufError::VersionMismatch {
        file: file.to_owned(),
        listed_by,
        expected,
        found,
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
