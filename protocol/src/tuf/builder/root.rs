//! Building root metadata, rotating it, and telling the operator which root signatures are still missing.
//!
//! A root N+1 is trusted by clients only when it is signed by a threshold of root N's root keys **and** by a
//! threshold of its own root keys (TUF §5.3.4–5.3.5). The holders of those keys are usually different people
//! on different days, so the packager builds N+1 unsigned ([`rotate_root`]), each holder adds a signature
//! with [`Signed::sign`], and [`root_signing_status`] says after each step what is still missing.

use std::collections::{BTreeMap, BTreeSet};

use crate::crypto::{Key, KeyId};
use crate::tuf::metadata::{Common, Expiry, Role, RoleKeys, Root, Signed, TOP_LEVEL_ROLES};

use super::{BuildError, Trust, check_role_keys, unsigned, valid_signers};

/// The public keys of one role and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    /// Public keys whose signatures count. Repeats are ignored.
    pub keys: Vec<Key>,
    /// How many distinct keys must sign; at least 1 and at most the number of distinct keys.
    pub threshold: u64,
}

/// The keys and thresholds of the four top-level roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSpec {
    /// Root's keys: offline, held by people.
    pub root: RoleSpec,
    /// Targets' keys: sign releases.
    pub targets: RoleSpec,
    /// Snapshot's keys: usually online.
    pub snapshot: RoleSpec,
    /// Timestamp's keys: online.
    pub timestamp: RoleSpec,
}

impl RootSpec {
    /// The spec a root already carries, as the starting point for a rotation that changes one role.
    pub fn from_root(root: &Root) -> Result<Self, BuildError> {
        let role = |name: &str| -> Result<RoleSpec, BuildError> {
            let chain = |reason: String| BuildError::RootChain {
                version: root.common.version,
                reason,
            };
            let role = root
                .role(name)
                .ok_or_else(|| chain(format!("no {name} role")))?;
            let keys = role
                .keyids
                .iter()
                .map(|id| {
                    root.keys
                        .get(id)
                        .cloned()
                        .ok_or_else(|| chain(format!("{name} lists key {id} that keys lacks")))
                })
                .collect::<Result<_, _>>()?;
            Ok(RoleSpec {
                keys,
                threshold: role.threshold,
            })
        };
        Ok(Self {
            root: role("root")?,
            targets: role("targets")?,
            snapshot: role("snapshot")?,
            timestamp: role("timestamp")?,
        })
    }

    fn role(&self, name: &str) -> &RoleSpec {
        match name {
            "root" => &self.root,
            "targets" => &self.targets,
            "snapshot" => &self.snapshot,
            _ => &self.timestamp,
        }
    }
}

/// Where the signing of a root stands: counts of valid signatures against both thresholds it must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningStatus {
    /// Distinct root keys of the new root that have signed it validly.
    pub have_new: u64,
    /// The new root's root threshold.
    pub need_new: u64,
    /// Distinct root keys of the previous root that have signed the new one validly (0 without a previous).
    pub have_prev: u64,
    /// The previous root's root threshold (0 without a previous).
    pub need_prev: u64,
    /// Root key ids that have not signed validly yet, of each root whose threshold is not met yet; sorted.
    /// Empty once the status is complete: further signatures are allowed but not needed.
    pub missing_keyids: Vec<KeyId>,
}

impl SigningStatus {
    /// Whether both thresholds are met, so the root can be published.
    pub fn is_complete(&self) -> bool {
        self.have_new >= self.need_new && self.have_prev >= self.need_prev
    }
}

/// A root at `version` with `consistent_snapshot: true` (mast's naming depends on it), unsigned.
///
/// Refuses a threshold of 0, a threshold above the role's distinct keys, and keys mast would never count.
pub fn new_root(
    spec: &RootSpec,
    version: u64,
    expires: Expiry,
) -> Result<Signed<Root>, BuildError> {
    if version == 0 {
        return Err(BuildError::RootChain {
            version,
            reason: "versions start at 1".to_owned(),
        });
    }
    let mut keys = BTreeMap::new();
    let mut roles = BTreeMap::new();
    for name in TOP_LEVEL_ROLES {
        let role = spec.role(name);
        let checked = check_role_keys(name, &role.keys, role.threshold)?;
        let keyids = checked.iter().map(|(id, _)| id.clone()).collect();
        keys.extend(checked);
        roles.insert(
            name.to_owned(),
            RoleKeys {
                keyids,
                threshold: role.threshold,
                extra: BTreeMap::new(),
            },
        );
    }
    let root = Root {
        common: Common::new(Root::NAME, version, expires),
        consistent_snapshot: true,
        keys,
        roles,
        extra: BTreeMap::new(),
    };
    unsigned(Root::NAME, root)
}

/// Root N+1 following `trusted` (root N), with the keys and thresholds of `spec`, unsigned.
///
/// Clients accept it only once it carries valid signatures from a threshold of N's root keys **and** a
/// threshold of N+1's root keys; collect them with [`Signed::sign`] and check with [`root_signing_status`]
/// before publishing. Fields of N that mast does not know are carried over, since other tools may rely on
/// them.
pub fn rotate_root(
    trusted: &Root,
    spec: &RootSpec,
    expires: Expiry,
) -> Result<Signed<Root>, BuildError> {
    let version = trusted
        .common
        .version
        .checked_add(1)
        .ok_or_else(|| BuildError::Overflow {
            role: Root::NAME.to_owned(),
            what: "version",
        })?;
    let mut next = new_root(spec, version, expires)?;
    if !trusted.extra.is_empty() {
        let mut content = next.signed.clone();
        content.extra = trusted.extra.clone();
        next.replace_content(content)?;
    }
    Ok(next)
}

/// Which root signatures `new` has and still needs: a threshold of its own root keys and, when it follows
/// `previous`, a threshold of the previous root's root keys.
///
/// Counting is [`crate::tuf::verify::verify_threshold`]'s (one per distinct public key, bad signatures
/// ignored), so a complete status means a client will accept the root's signatures.
pub fn root_signing_status(new: &Signed<Root>, previous: Option<&Signed<Root>>) -> SigningStatus {
    let mut missing = BTreeSet::new();
    let (have_new, need_new, unsigned_new) = count(new, &new.signed);
    if have_new < need_new {
        missing.extend(unsigned_new);
    }
    let (have_prev, need_prev) = match previous {
        Some(prev) => {
            let (have, need, unsigned_prev) = count(new, &prev.signed);
            if have < need {
                missing.extend(unsigned_prev);
            }
            (have, need)
        }
        None => (0, 0),
    };
    SigningStatus {
        have_new,
        need_new,
        have_prev,
        need_prev,
        missing_keyids: missing.into_iter().collect(),
    }
}

/// Checks that `root` is signed by a threshold of `by`'s root keys, naming both versions if not.
pub(crate) fn check_root_signed_by(
    root: &Signed<Root>,
    by: &Signed<Root>,
) -> Result<(), BuildError> {
    let (valid, threshold, _) = count(root, &by.signed);
    if valid >= threshold {
        return Ok(());
    }
    Err(BuildError::RootSignatures {
        version: root.version(),
        by_version: by.version(),
        source: crate::tuf::verify::ThresholdError {
            role: Root::NAME.to_owned(),
            valid,
            threshold,
        },
    })
}

/// Valid signers of `doc` among `by`'s root keys: (count, threshold, role key ids that did not sign).
fn count(doc: &Signed<Root>, by: &Root) -> (u64, u64, BTreeSet<KeyId>) {
    let Some(role) = by.role(Root::NAME) else {
        // Unreachable for a validated root; a root with no root role can authorise nothing.
        return (0, u64::MAX, BTreeSet::new());
    };
    let trust = Trust {
        keys: &by.keys,
        keyids: &role.keyids,
        threshold: role.threshold,
    };
    let signed = valid_signers(doc, trust);
    let missing = role
        .keyids
        .iter()
        .filter(|id| !signed.contains(*id))
        .cloned()
        .collect();
    (signed.len() as u64, role.threshold, missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;
    use crate::tuf::verify::verify_threshold;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32])
    }

    fn spec(root: &[&SigningKey], threshold: u64) -> RootSpec {
        let one = |k: &SigningKey| RoleSpec {
            keys: vec![k.public()],
            threshold: 1,
        };
        RootSpec {
            root: RoleSpec {
                keys: root.iter().map(|k| k.public()).collect(),
                threshold,
            },
            targets: one(&key(10)),
            snapshot: one(&key(11)),
            timestamp: one(&key(12)),
        }
    }

    fn expires() -> Expiry {
        Expiry::parse("2030-01-01T00:00:00Z").unwrap()
    }

    #[test]
    fn new_root_round_trips_and_refuses_bad_thresholds() {
        let r = new_root(&spec(&[&key(1)], 1), 1, expires()).unwrap();
        assert!(r.signed.consistent_snapshot);
        let back = Signed::<Root>::from_slice(&r.to_bytes().unwrap()).unwrap();
        assert_eq!(back.canonical_signed(), r.canonical_signed());
        assert_eq!(RootSpec::from_root(&r.signed).unwrap(), spec(&[&key(1)], 1));

        let err = new_root(&spec(&[&key(1)], 0), 1, expires()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "root: threshold 0 is impossible with 1 distinct key(s)"
        );
        assert!(new_root(&spec(&[&key(1), &key(2)], 3), 1, expires()).is_err());
        assert!(new_root(&spec(&[&key(1)], 1), 0, expires()).is_err());
    }

    #[test]
    fn rotation_needs_both_thresholds() {
        let (old, a, b, c) = (key(1), key(2), key(3), key(4));
        let mut v1 = new_root(&spec(&[&old], 1), 1, expires()).unwrap();
        v1.sign(&old);
        let mut v2 = rotate_root(&v1.signed, &spec(&[&a, &b, &c], 2), expires()).unwrap();
        assert_eq!(v2.version(), 2);

        let status = root_signing_status(&v2, Some(&v1));
        assert_eq!(
            (
                status.have_new,
                status.need_new,
                status.have_prev,
                status.need_prev
            ),
            (0, 2, 0, 1)
        );
        let mut all = vec![old.key_id(), a.key_id(), b.key_id(), c.key_id()];
        all.sort();
        assert_eq!(status.missing_keyids, all);
        assert!(!status.is_complete());

        v2.sign(&a);
        v2.sign(&a);
        let status = root_signing_status(&v2, Some(&v1));
        assert_eq!((status.have_new, status.have_prev), (1, 0));
        assert!(!status.is_complete());

        v2.sign(&old);
        let status = root_signing_status(&v2, Some(&v1));
        assert_eq!((status.have_new, status.have_prev), (1, 1));
        let mut unsigned_new = vec![b.key_id(), c.key_id()];
        unsigned_new.sort();
        assert_eq!(status.missing_keyids, unsigned_new);
        assert!(!status.is_complete());
        assert!(check_root_signed_by(&v2, &v2).is_err());
        check_root_signed_by(&v2, &v1).unwrap();

        v2.sign(&c);
        let status = root_signing_status(&v2, Some(&v1));
        assert!(status.is_complete(), "{status:?}");
        assert!(status.missing_keyids.is_empty());

        // What a TUF client checks: both thresholds, through the verifier itself.
        let role = v1.signed.role("root").unwrap();
        verify_threshold(&v2, "root", &v1.signed.keys, &role.keyids, role.threshold).unwrap();
        let role = v2.signed.role("root").unwrap();
        verify_threshold(&v2, "root", &v2.signed.keys, &role.keyids, role.threshold).unwrap();
    }

    #[test]
    fn a_signature_by_a_stranger_does_not_count() {
        let mut v1 = new_root(&spec(&[&key(1)], 1), 1, expires()).unwrap();
        v1.sign(&key(99));
        let status = root_signing_status(&v1, None);
        assert_eq!(
            (status.have_new, status.need_new, status.need_prev),
            (0, 1, 0)
        );
        assert_eq!(status.missing_keyids, vec![key(1).key_id()]);
    }
}
