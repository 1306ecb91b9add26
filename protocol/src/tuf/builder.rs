//! Repository-side builders: signing, root creation and rotation, and an in-memory TUF repository that the
//! packager loads from disk, edits, commits and writes back.
//!
//! Nothing here touches a file or a clock. The packager reads the repository's files, hands them to
//! [`Repository::load`], edits, calls [`Repository::commit`] with the keys it holds and the current time, and
//! writes what [`Repository::files`] returns. Every document this module signs is checked against its role's
//! threshold before it is kept, so a repository built here never publishes metadata that will not verify.
//!
//! Layout follows python-tuf with `consistent_snapshot: true`: `metadata/N.root.json` for the whole root
//! chain, `metadata/N.targets.json`, `metadata/N.snapshot.json`, `metadata/N.<quoted role>.json`, the one
//! mutable `metadata/timestamp.json`, and targets under `targets/<dir>/<sha256>.<basename>`.

use std::collections::{BTreeMap, BTreeSet};

use time::{Duration, OffsetDateTime};

use crate::canonical::CanonicalError;
use crate::crypto::{Key, KeyId, SigningKey};
use crate::tuf::metadata::{Expiry, MetadataError, Role, Signature, Signed};
use crate::tuf::verify::{IntegrityError, ThresholdError};

mod commit;
mod load;
mod naming;
mod repository;
mod root;

pub use naming::{consistent_target_path, metadata_path};
pub use repository::{DelegationSpec, Repository};
pub use root::{RoleSpec, RootSpec, SigningStatus, new_root, root_signing_status, rotate_root};

/// Why a repository operation was refused. Names the role, file or key involved.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A threshold of 0, or above the number of distinct keys that could meet it.
    #[error("{role}: threshold {threshold} is impossible with {distinct_keys} distinct key(s)")]
    Threshold {
        /// The role being defined.
        role: String,
        /// The threshold asked for.
        threshold: u64,
        /// Distinct public keys listed for the role.
        distinct_keys: u64,
    },
    /// A key mast would never count: not ed25519, malformed, or of small order.
    #[error("{role}: key {keyid} is unusable: {reason}")]
    UnusableKey {
        /// The role the key was meant for.
        role: String,
        /// The key's id.
        keyid: KeyId,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A signing key was given for a role that does not list it.
    #[error("key {keyid} is not a {role} key in the trusted metadata")]
    KeyNotInRole {
        /// The key's id.
        keyid: KeyId,
        /// The role it was given for.
        role: String,
    },
    /// The keys given cannot reach the role's threshold; nothing was changed.
    #[error("not enough keys to sign: {0}")]
    NotEnoughKeys(#[source] ThresholdError),
    /// No such targets role in the repository.
    #[error("no targets role named {0:?}")]
    UnknownRole(String),
    /// A delegated role by this name already exists.
    #[error("a role named {0:?} already exists")]
    RoleExists(String),
    /// A name mast will not give a delegated role.
    #[error("role name {name:?} is refused: {reason}")]
    RoleName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The delegated role is not trusted for this target path, so clients would never look there.
    #[error("role {role:?} is not delegated target {target:?}")]
    TargetNotDelegated {
        /// The delegated role.
        role: String,
        /// The target path.
        target: String,
    },
    /// A target path a mirror could not serve safely as a file.
    #[error("target name {name:?} is refused: {reason}")]
    TargetName {
        /// The target path.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A target without a sha256 hash, which consistent-snapshot naming needs.
    #[error("target {0:?} has no sha256 hash")]
    MissingSha256(String),
    /// Metadata was built or edited but not yet committed (signed), so it cannot be published.
    #[error("{0} has changes that are not committed")]
    Uncommitted(String),
    /// A root that does not follow the one before it, or does not suit a consistent-snapshot repository.
    #[error("root version {version}: {reason}")]
    RootChain {
        /// The version of the root refused.
        version: u64,
        /// Why.
        reason: String,
    },
    /// A root not signed by a threshold of the root keys of `by_version` (itself or its predecessor).
    #[error(
        "root version {version} lacks signatures of root version {by_version}'s keys: {source}"
    )]
    RootSignatures {
        /// The root being checked.
        version: u64,
        /// The root whose keys were counted.
        by_version: u64,
        /// The count.
        #[source]
        source: ThresholdError,
    },
    /// `now` plus a lifetime, or a version plus one, does not fit.
    #[error("{role}: {what} overflows")]
    Overflow {
        /// The role being built.
        role: String,
        /// `expiry` or `version`.
        what: &'static str,
    },
    /// A refresh window at least as long as the timestamp's lifetime would re-sign on every call.
    #[error("refresh window {window} must be shorter than the timestamp lifetime {lifetime}")]
    RefreshWindow {
        /// The window given.
        window: Duration,
        /// The timestamp lifetime.
        lifetime: Duration,
    },
    /// Content that cannot be put in canonical form (a float in a custom field).
    #[error("{role}: cannot encode metadata: {source}")]
    Encode {
        /// The role being encoded.
        role: String,
        /// What the encoder said.
        #[source]
        source: CanonicalError,
    },
    /// A file that loading needs is not among the files given.
    #[error("{0}: missing")]
    MissingFile(String),
    /// A file given to [`Repository::load`] does not parse.
    #[error("{file}: {source}")]
    Metadata {
        /// The file.
        file: String,
        /// Why it does not parse.
        #[source]
        source: MetadataError,
    },
    /// A file's bytes differ from the length or hash its referrer signed.
    #[error("{file}: {source}")]
    Integrity {
        /// The file.
        file: String,
        /// The mismatch.
        #[source]
        source: IntegrityError,
    },
    /// A file is not signed by a threshold of its role's keys.
    #[error("{file}: {source}")]
    Signatures {
        /// The file.
        file: String,
        /// The count.
        #[source]
        source: ThresholdError,
    },
    /// A file whose contents contradict the metadata that points at it.
    #[error("{file}: {reason}")]
    Inconsistent {
        /// The file.
        file: String,
        /// What disagrees.
        reason: String,
    },
}

/// How long each role's metadata stays valid when (re)signed. Defaults are DESIGN.md's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiries {
    /// Root: one year, since rotating it is an offline ceremony.
    pub root: Duration,
    /// Targets (and delegated targets roles): 90 days.
    pub targets: Duration,
    /// Snapshot: 14 days.
    pub snapshot: Duration,
    /// Timestamp: 7 days, so a site offline for days still holds valid metadata when it comes back.
    pub timestamp: Duration,
}

impl Default for Expiries {
    fn default() -> Self {
        Self {
            root: Duration::days(365),
            targets: Duration::days(90),
            snapshot: Duration::days(14),
            timestamp: Duration::days(7),
        }
    }
}

impl Expiries {
    /// The lifetime of a role; delegated roles take the targets lifetime.
    pub fn lifetime(&self, role: &str) -> Duration {
        match role {
            "root" => self.root,
            "snapshot" => self.snapshot,
            "timestamp" => self.timestamp,
            _ => self.targets,
        }
    }

    /// When metadata of `role` signed at `now` expires.
    pub fn expiry(&self, role: &str, now: OffsetDateTime) -> Result<Expiry, BuildError> {
        now.checked_add(self.lifetime(role))
            .map(Expiry::new)
            .ok_or_else(|| BuildError::Overflow {
                role: role.to_owned(),
                what: "expiry",
            })
    }
}

/// The signing keys the caller holds, per role. Roles a commit does not re-sign need none.
///
/// Named apart from [`crate::tuf::RoleKeys`], which is the public key ids and threshold of a role. Root is
/// absent: root is signed by its holders one at a time with [`Signed::sign`], not by a commit.
#[derive(Debug, Default, Clone)]
pub struct RoleSigners<'a> {
    /// Keys for `targets`.
    pub targets: Vec<&'a SigningKey>,
    /// Keys for `snapshot`.
    pub snapshot: Vec<&'a SigningKey>,
    /// Keys for `timestamp`.
    pub timestamp: Vec<&'a SigningKey>,
    /// Keys for delegated targets roles, by role name.
    pub delegated: BTreeMap<String, Vec<&'a SigningKey>>,
}

impl<'a> RoleSigners<'a> {
    /// The keys given for `role` (empty when none).
    pub fn for_role(&self, role: &str) -> &[&'a SigningKey] {
        match role {
            "targets" => &self.targets,
            "snapshot" => &self.snapshot,
            "timestamp" => &self.timestamp,
            other => self.delegated.get(other).map_or(&[], Vec::as_slice),
        }
    }
}

impl<T: Role> Signed<T> {
    /// Adds `key`'s signature over the canonical signed bytes, replacing any earlier signature by the same
    /// key id, so that signing twice (an operator re-running `mast root sign`) changes nothing.
    ///
    /// This does not check that the role lists the key: a root being passed around for signatures is not
    /// trusted yet. [`root_signing_status`] and the repository's commit do that check.
    pub fn sign(&mut self, key: &SigningKey) {
        let signature = Signature {
            keyid: key.key_id(),
            sig: key.sign_hex(self.canonical_signed()),
        };
        match self
            .signatures
            .iter_mut()
            .find(|s| s.keyid == signature.keyid)
        {
            Some(existing) => *existing = signature,
            None => self.signatures.push(signature),
        }
    }

    /// Replaces the content, dropping every signature, since none of them covers the new content.
    pub fn replace_content(&mut self, signed: T) -> Result<(), BuildError> {
        *self = Signed::unsigned(signed).map_err(|source| BuildError::Encode {
            role: T::NAME.to_owned(),
            source,
        })?;
        Ok(())
    }
}

/// Who may sign a role: its keys, key ids and threshold, borrowed from the metadata that delegates to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trust<'r> {
    pub(crate) keys: &'r BTreeMap<KeyId, Key>,
    pub(crate) keyids: &'r [KeyId],
    pub(crate) threshold: u64,
}

/// The distinct role keys with a valid signature on `doc`, counted as [`crate::tuf::verify::verify_threshold`]
/// counts them (one per public key), so what this reports and what verification accepts agree.
pub(crate) fn valid_signers<T: Role>(doc: &Signed<T>, trust: Trust<'_>) -> BTreeSet<KeyId> {
    let msg = doc.canonical_signed();
    let mut publics = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for id in trust.keyids {
        let Some(key) = trust.keys.get(id) else {
            continue;
        };
        let valid = doc
            .signatures
            .iter()
            .any(|s| &s.keyid == id && key.verify(id, msg, &s.sig).is_ok());
        if valid && publics.insert(key.keyval.public.as_str()) {
            ids.insert(id.clone());
        }
    }
    ids
}

/// Checks that a key is one mast's verifier will count, and returns its id.
pub(crate) fn check_key(role: &str, key: &Key) -> Result<KeyId, BuildError> {
    let keyid = key.key_id();
    let unusable = |reason| BuildError::UnusableKey {
        role: role.to_owned(),
        keyid: keyid.clone(),
        reason,
    };
    if key.keytype != "ed25519" || key.scheme != "ed25519" {
        return Err(unusable("not an ed25519 key"));
    }
    let mut public = [0u8; 32];
    hex::decode_to_slice(&key.keyval.public, &mut public)
        .map_err(|_| unusable("public key is not 32 bytes of hex"))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&public)
        .map_err(|_| unusable("public key is not a curve point"))?;
    // verify_strict refuses small-order keys, so a root listing one has a threshold it can never meet.
    if vk.is_weak() {
        return Err(unusable("public key has small order"));
    }
    Ok(keyid)
}

/// Validates a role's keys and threshold; returns the key ids in the order given, without repeats.
pub(crate) fn check_role_keys(
    role: &str,
    keys: &[Key],
    threshold: u64,
) -> Result<Vec<(KeyId, Key)>, BuildError> {
    let mut out: Vec<(KeyId, Key)> = Vec::with_capacity(keys.len());
    let mut publics = BTreeSet::new();
    for key in keys {
        let id = check_key(role, key)?;
        publics.insert(key.keyval.public.to_ascii_lowercase());
        if !out.iter().any(|(seen, _)| seen == &id) {
            out.push((id, key.clone()));
        }
    }
    // Two ids for one public key count once toward a threshold (see verify_threshold), so only distinct
    // public keys can meet it.
    let distinct_keys = publics.len() as u64;
    if threshold == 0 || threshold > distinct_keys {
        return Err(BuildError::Threshold {
            role: role.to_owned(),
            threshold,
            distinct_keys,
        });
    }
    Ok(out)
}

/// Wraps content for signing, naming the role if it cannot be encoded.
pub(crate) fn unsigned<T: Role>(role: &str, content: T) -> Result<Signed<T>, BuildError> {
    Signed::unsigned(content).map_err(|source| BuildError::Encode {
        role: role.to_owned(),
        source,
    })
}

/// The published bytes of a document, naming the role if it cannot be encoded.
pub(crate) fn to_bytes<T: Role>(role: &str, doc: &Signed<T>) -> Result<Vec<u8>, BuildError> {
    doc.to_bytes().map_err(|source| BuildError::Encode {
        role: role.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuf::metadata::{Common, Targets};

    fn doc() -> Signed<Targets> {
        let expires = Expiry::parse("2030-01-01T00:00:00Z").unwrap();
        Signed::unsigned(Targets {
            common: Common::new("targets", 1, expires),
            targets: BTreeMap::new(),
            delegations: None,
            extra: BTreeMap::new(),
        })
        .unwrap()
    }

    #[test]
    fn signing_twice_with_one_key_keeps_one_signature() {
        let (a, b) = (
            SigningKey::from_seed(&[1; 32]),
            SigningKey::from_seed(&[2; 32]),
        );
        let mut d = doc();
        d.sign(&a);
        d.sign(&b);
        d.sign(&a);
        assert_eq!(d.signatures.len(), 2);
        assert_eq!(d.signatures[0].keyid, a.key_id());
        let keys = [(a.key_id(), a.public()), (b.key_id(), b.public())].into();
        let ids = [a.key_id(), b.key_id()];
        let trust = Trust {
            keys: &keys,
            keyids: &ids,
            threshold: 2,
        };
        assert_eq!(valid_signers(&d, trust).len(), 2);
    }

    #[test]
    fn replacing_content_drops_signatures() {
        let mut d = doc();
        d.sign(&SigningKey::from_seed(&[1; 32]));
        let mut content = d.signed.clone();
        content.common.version = 2;
        d.replace_content(content).unwrap();
        assert!(d.signatures.is_empty());
        assert_eq!(d.version(), 2);
        assert!(String::from_utf8_lossy(d.canonical_signed()).contains(r#""version":2"#));
    }

    #[test]
    fn role_key_checks() {
        let a = SigningKey::from_seed(&[1; 32]).public();
        let err = check_role_keys("snapshot", &[a.clone(), a.clone()], 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "snapshot: threshold 2 is impossible with 1 distinct key(s)"
        );
        assert!(matches!(
            check_role_keys("snapshot", std::slice::from_ref(&a), 0),
            Err(BuildError::Threshold { threshold: 0, .. })
        ));
        // The identity point is a valid encoding of a small-order key.
        let mut weak = a.clone();
        weak.keyval.public = format!("01{}", "00".repeat(31));
        let err = check_role_keys("root", &[weak], 1).unwrap_err();
        assert!(err.to_string().contains("small order"), "{err}");
        let mut rsa = a;
        rsa.keytype = "rsa".into();
        assert!(matches!(
            check_role_keys("root", &[rsa], 1),
            Err(BuildError::UnusableKey { .. })
        ));
    }

    #[test]
    fn default_expiries_follow_design() {
        let e = Expiries::default();
        assert_eq!(e.lifetime("root"), Duration::days(365));
        assert_eq!(e.lifetime("targets"), Duration::days(90));
        assert_eq!(e.lifetime("some-delegated-role"), Duration::days(90));
        assert_eq!(e.lifetime("snapshot"), Duration::days(14));
        assert_eq!(e.lifetime("timestamp"), Duration::days(7));
    }
}
