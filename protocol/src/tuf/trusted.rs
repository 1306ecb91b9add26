//! What a client trusts: the newest root and, once a refresh has reached them, the other roles.
//!
//! Trust is rebuilt from persisted bytes at every start and re-checked against the root, so a tampered or
//! stale state file can only lose trust, never add it.

use std::collections::BTreeMap;

use crate::tuf::client::RoleName;
use crate::tuf::error::TufError;
use crate::tuf::metadata::{MetaFile, Role, RoleKeys, Root, Signed, Snapshot, Targets, Timestamp};
use crate::tuf::verify::{ThresholdError, verify_threshold};

/// A trusted role that was dropped while loading persisted state, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// The role.
    pub role: RoleName,
    /// Why it no longer verifies.
    pub reason: String,
}

/// Persisted trusted metadata, as bytes, to start a session from.
#[derive(Debug, Default, Clone, Copy)]
pub struct Persisted<'a> {
    /// The newest trusted root.
    pub root: &'a [u8],
    /// The trusted timestamp, if any.
    pub timestamp: Option<&'a [u8]>,
    /// The trusted snapshot, if any.
    pub snapshot: Option<&'a [u8]>,
    /// The trusted top-level targets, if any.
    pub targets: Option<&'a [u8]>,
}

/// Metadata the client trusts: a root always, the other roles once a refresh has reached them.
#[derive(Debug, Clone)]
pub struct TrustedMetadata {
    pub(super) root: Signed<Root>,
    pub(super) timestamp: Option<Signed<Timestamp>>,
    pub(super) snapshot: Option<Signed<Snapshot>>,
    pub(super) targets: Option<Signed<Targets>>,
    pub(super) delegated: BTreeMap<String, Signed<Targets>>,
}

impl TrustedMetadata {
    /// Trusts `root` (shipped with the agent or copied by an operator): it must be valid and signed by a
    /// threshold of its own root keys. Its expiry is checked at the end of the next root update, not here,
    /// so that an old embedded root can still be walked forward.
    pub fn new(root: &[u8]) -> Result<Self, TufError> {
        let root = parse::<Root>("root.json", root)?;
        let rk = top_role(&root.signed, "root");
        verify_threshold(&root, "root", &root.signed.keys, &rk.keyids, rk.threshold).map_err(
            |source| TufError::Threshold {
                file: "root.json".to_owned(),
                source,
            },
        )?;
        Ok(Self {
            root,
            timestamp: None,
            snapshot: None,
            targets: None,
            delegated: BTreeMap::new(),
        })
    }

    /// Rebuilds trust from persisted files. The root must verify; any other role that no longer verifies
    /// under it (or whose parent role was dropped) is discarded and reported, never trusted.
    pub fn from_persisted(p: Persisted<'_>) -> Result<(Self, Vec<Discarded>), TufError> {
        let mut trusted = Self::new(p.root)?;
        let mut dropped = Vec::new();
        // Each role is only as good as the one that names its version, so a gap ends the chain.
        let mut chain_ok = true;
        let root = &trusted.root.signed;
        let timestamp = load_persisted(
            root,
            RoleName::Timestamp,
            p.timestamp,
            &mut chain_ok,
            &mut dropped,
        );
        let snapshot = load_persisted(
            root,
            RoleName::Snapshot,
            p.snapshot,
            &mut chain_ok,
            &mut dropped,
        );
        let targets = load_persisted(
            root,
            RoleName::Targets,
            p.targets,
            &mut chain_ok,
            &mut dropped,
        );
        (trusted.timestamp, trusted.snapshot, trusted.targets) = (timestamp, snapshot, targets);
        Ok((trusted, dropped))
    }

    /// Adds a persisted delegated role. It is checked against its delegator's keys and snapshot's version
    /// when a lookup reaches it, and fetched again if it does not pass.
    pub fn add_persisted_delegated(&mut self, name: &str, bytes: &[u8]) -> Result<(), TufError> {
        let doc = parse::<Targets>(&RoleName::Delegated(name.to_owned()).file_name(), bytes)?;
        self.delegated.insert(name.to_owned(), doc);
        Ok(())
    }

    /// The trusted root.
    pub fn root(&self) -> &Signed<Root> {
        &self.root
    }

    /// The trusted timestamp.
    pub fn timestamp(&self) -> Option<&Signed<Timestamp>> {
        self.timestamp.as_ref()
    }

    /// The trusted snapshot.
    pub fn snapshot(&self) -> Option<&Signed<Snapshot>> {
        self.snapshot.as_ref()
    }

    /// The trusted top-level targets.
    pub fn targets(&self) -> Option<&Signed<Targets>> {
        self.targets.as_ref()
    }

    /// A trusted delegated targets role.
    pub fn delegated(&self, name: &str) -> Option<&Signed<Targets>> {
        self.delegated.get(name)
    }

    /// After a new root is trusted: drop what it no longer vouches for. §5.3.11 asks to forget timestamp and
    /// snapshot whenever either role's keys change — that is how a repository recovers after an attacker
    /// with a stolen online key fast-forwarded versions — and anything that no longer meets its threshold
    /// under the new root goes too.
    pub(super) fn after_root_change(&mut self, previous: &Root) -> Vec<RoleName> {
        let rotated = |name: &str| previous.role(name) != self.root.signed.role(name);
        let mut dropped = Vec::new();
        let online_rotated = rotated("timestamp") || rotated("snapshot");
        let root = &self.root.signed;
        if (online_rotated
            || self
                .timestamp
                .as_ref()
                .is_some_and(|t| verify_under_root(root, t).is_err()))
            && self.timestamp.take().is_some()
        {
            dropped.push(RoleName::Timestamp);
        }
        if (online_rotated
            || self
                .snapshot
                .as_ref()
                .is_some_and(|s| verify_under_root(root, s).is_err()))
            && self.snapshot.take().is_some()
        {
            dropped.push(RoleName::Snapshot);
        }
        if self
            .targets
            .as_ref()
            .is_some_and(|t| verify_under_root(root, t).is_err())
            && self.targets.take().is_some()
        {
            dropped.push(RoleName::Targets);
        }
        dropped
    }
}

pub(super) fn parse<T: Role>(file: &str, bytes: &[u8]) -> Result<Signed<T>, TufError> {
    Signed::<T>::from_slice(bytes).map_err(|source| TufError::Metadata {
        file: file.to_owned(),
        source,
    })
}

/// A validated root always has the four top-level roles (see `Root::validate`); the fallback is an empty
/// role with an unreachable threshold, so a bug here fails closed.
pub(super) fn top_role<'a>(root: &'a Root, name: &str) -> &'a RoleKeys {
    static NONE: std::sync::OnceLock<RoleKeys> = std::sync::OnceLock::new();
    root.role(name).unwrap_or_else(|| {
        NONE.get_or_init(|| RoleKeys {
            keyids: Vec::new(),
            threshold: u64::MAX,
            extra: BTreeMap::new(),
        })
    })
}

pub(super) fn snapshot_meta(trusted: &TrustedMetadata, role: &str) -> Result<MetaFile, TufError> {
    let snapshot = trusted
        .snapshot
        .as_ref()
        .ok_or(TufError::Usage("internal: no trusted snapshot"))?;
    snapshot
        .signed
        .meta
        .get(&format!("{role}.json"))
        .cloned()
        .ok_or_else(|| TufError::NotInSnapshot {
            role: role.to_owned(),
        })
}

pub(super) fn verify_delegated(
    trusted: &TrustedMetadata,
    parent: &str,
    role: &str,
    doc: &Signed<Targets>,
) -> Result<(), ThresholdError> {
    let parent_doc = if parent == "targets" {
        trusted.targets.as_ref()
    } else {
        trusted.delegated.get(parent)
    };
    let delegations = parent_doc.and_then(|p| p.signed.delegations.as_ref());
    let entry = delegations.and_then(|d| d.roles.iter().find(|r| r.name == role));
    match (delegations, entry) {
        (Some(d), Some(r)) => verify_threshold(doc, role, &d.keys, &r.keyids, r.threshold),
        _ => Err(ThresholdError {
            role: role.to_owned(),
            valid: 0,
            threshold: 1,
        }),
    }
}

/// Loads one persisted top-level role if everything before it loaded and it still verifies under `root`.
fn load_persisted<T: Role>(
    root: &Root,
    role: RoleName,
    bytes: Option<&[u8]>,
    chain_ok: &mut bool,
    dropped: &mut Vec<Discarded>,
) -> Option<Signed<T>> {
    let Some(bytes) = bytes else {
        *chain_ok = false;
        return None;
    };
    let verdict = if *chain_ok {
        parse::<T>(&role.file_name(), bytes)
            .map_err(|e| e.to_string())
            .and_then(|doc| {
                verify_under_root(root, &doc)
                    .map(|()| doc)
                    .map_err(|e| e.to_string())
            })
    } else {
        Err("a role it depends on was discarded".to_owned())
    };
    verdict
        .map_err(|reason| {
            dropped.push(Discarded { role, reason });
            *chain_ok = false;
        })
        .ok()
}

/// Checks a top-level role's signatures against the keys and threshold `root` gives it.
pub(super) fn verify_under_root<T: Role>(
    root: &Root,
    doc: &Signed<T>,
) -> Result<(), ThresholdError> {
    let rk = top_role(root, T::NAME);
    verify_threshold(doc, T::NAME, &root.keys, &rk.keyids, rk.threshold)
}
