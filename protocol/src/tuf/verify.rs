//! Signature thresholds, and length and hash checks of fetched bytes.

use std::collections::{BTreeMap, BTreeSet};

use crate::crypto::{Key, KeyId};
use crate::digest::Sha256Digest;
use crate::tuf::metadata::{Hashes, Role, Signed};

/// Not enough distinct trusted keys signed a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{role}: {valid} valid signature(s) from distinct trusted keys, {threshold} required")]
pub struct ThresholdError {
    /// The role whose keys were counted.
    pub role: String,
    /// Distinct trusted keys with a valid signature.
    pub valid: u64,
    /// How many were required.
    pub threshold: u64,
}

/// Fetched bytes differ from what trusted metadata says about them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// More bytes than the signed length (or the size cap when none is signed).
    #[error("longer than the {limit} bytes allowed")]
    TooLong {
        /// The allowed length.
        limit: u64,
    },
    /// A different length than the signed one.
    #[error("length {found} differs from the signed length {expected}")]
    Length {
        /// The signed length.
        expected: u64,
        /// What arrived.
        found: u64,
    },
    /// A hash does not match.
    #[error("{algorithm} {found} differs from the signed {expected}")]
    Hash {
        /// `sha256` or `sha512`.
        algorithm: &'static str,
        /// The signed value.
        expected: String,
        /// The value of what arrived.
        found: String,
    },
    /// No hash mast can compute is listed.
    #[error("no sha256 or sha512 hash is listed (found {0:?})")]
    NoKnownHash(Vec<String>),
}

/// Counts valid signatures on `doc` from distinct keys among `keyids`; errors below `threshold`.
///
/// Each key counts once however many signatures carry its id, and two ids for the same public key count
/// once: the threshold is over keys, not over signature entries.
pub fn verify_threshold<T: Role>(
    doc: &Signed<T>,
    role: &str,
    keys: &BTreeMap<KeyId, Key>,
    keyids: &[KeyId],
    threshold: u64,
) -> Result<(), ThresholdError> {
    let msg = doc.canonical_signed();
    let mut counted_ids = BTreeSet::new();
    let mut counted_publics = BTreeSet::new();
    for id in keyids {
        if counted_ids.contains(id) {
            continue;
        }
        let Some(key) = keys.get(id) else { continue };
        let valid = doc
            .signatures
            .iter()
            .filter(|s| &s.keyid == id)
            .any(|s| key.verify(id, msg, &s.sig).is_ok());
        if valid && counted_publics.insert(key.keyval.public.clone()) {
            counted_ids.insert(id.clone());
        }
    }
    let valid = counted_ids.len() as u64;
    if valid >= threshold {
        Ok(())
    } else {
        Err(ThresholdError {
            role: role.to_owned(),
            valid,
            threshold,
        })
    }
}

/// Checks `bytes` against a signed length (when given) and the hashes mast can compute (when given).
pub fn verify_bytes(
    bytes: &[u8],
    length: Option<u64>,
    hashes: Option<&Hashes>,
) -> Result<(), IntegrityError> {
    if let Some(expected) = length {
        let found = bytes.len() as u64;
        if found != expected {
            return Err(IntegrityError::Length { expected, found });
        }
    }
    if let Some(hashes) = hashes {
        verify_hashes(bytes, hashes)?;
    }
    Ok(())
}

/// Checks every sha256/sha512 entry of `hashes`; at least one must be present.
pub fn verify_hashes(bytes: &[u8], hashes: &Hashes) -> Result<(), IntegrityError> {
    use sha2::Digest as _;
    let mut checked = false;
    for (algorithm, expected) in hashes {
        let found = match algorithm.as_str() {
            "sha256" => Sha256Digest::of(bytes).to_hex(),
            "sha512" => hex::encode(sha2::Sha512::digest(bytes)),
            _ => continue,
        };
        if !found.eq_ignore_ascii_case(expected) {
            let algorithm = if algorithm == "sha256" {
                "sha256"
            } else {
                "sha512"
            };
            return Err(IntegrityError::Hash {
                algorithm,
                expected: expected.clone(),
                found,
            });
        }
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err(IntegrityError::NoKnownHash(
            hashes.keys().cloned().collect(),
        ))
    }
}

/// The signed sha256 of a target, when listed, as a parsed digest.
pub fn signed_sha256(hashes: &Hashes) -> Option<Sha256Digest> {
    hashes
        .get("sha256")
        .and_then(|h| h.to_ascii_lowercase().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;
    use crate::tuf::metadata::{Common, Expiry, Signature, Timestamp};

    fn ts() -> Signed<Timestamp> {
        let mut meta = BTreeMap::new();
        meta.insert(
            "snapshot.json".to_owned(),
            crate::tuf::metadata::MetaFile {
                version: 1,
                length: None,
                hashes: None,
                extra: BTreeMap::new(),
            },
        );
        let expires = Expiry::parse("2030-01-01T00:00:00Z").unwrap();
        Signed::unsigned(Timestamp {
            common: Common::new("timestamp", 1, expires),
            meta,
            extra: BTreeMap::new(),
        })
        .unwrap()
    }

    fn sign(doc: &mut Signed<Timestamp>, k: &SigningKey) {
        let sig = k.sign_hex(doc.canonical_signed());
        doc.signatures.push(Signature {
            keyid: k.key_id(),
            sig,
        });
    }

    #[test]
    fn threshold_counts_distinct_keys_once() {
        let (a, b) = (
            SigningKey::from_seed(&[1; 32]),
            SigningKey::from_seed(&[2; 32]),
        );
        let keys: BTreeMap<_, _> = [(a.key_id(), a.public()), (b.key_id(), b.public())].into();
        let ids = vec![a.key_id(), b.key_id()];
        let mut doc = ts();
        sign(&mut doc, &a);
        sign(&mut doc, &a);
        let err = verify_threshold(&doc, "timestamp", &keys, &ids, 2).unwrap_err();
        assert_eq!((err.valid, err.threshold), (1, 2));
        // The same keyid listed twice in the role does not count twice either.
        let twice = vec![a.key_id(), a.key_id()];
        assert!(verify_threshold(&doc, "timestamp", &keys, &twice, 2).is_err());
        sign(&mut doc, &b);
        verify_threshold(&doc, "timestamp", &keys, &ids, 2).unwrap();
    }

    #[test]
    fn signatures_from_untrusted_or_wrong_keys_do_not_count() {
        let (a, stranger) = (
            SigningKey::from_seed(&[1; 32]),
            SigningKey::from_seed(&[9; 32]),
        );
        let keys: BTreeMap<_, _> = [(a.key_id(), a.public())].into();
        let mut doc = ts();
        sign(&mut doc, &stranger);
        // A signature by another key filed under a's id.
        doc.signatures.push(Signature {
            keyid: a.key_id(),
            sig: stranger.sign_hex(doc.canonical_signed()),
        });
        let err = verify_threshold(&doc, "timestamp", &keys, &[a.key_id()], 1).unwrap_err();
        assert_eq!(err.valid, 0);
        assert_eq!(
            err.to_string(),
            "timestamp: 0 valid signature(s) from distinct trusted keys, 1 required"
        );
    }

    #[test]
    fn bytes_checks() {
        let mut h = Hashes::new();
        h.insert("sha256".into(), Sha256Digest::of(b"abc").to_hex());
        verify_bytes(b"abc", Some(3), Some(&h)).unwrap();
        assert!(matches!(
            verify_bytes(b"abd", Some(3), Some(&h)),
            Err(IntegrityError::Hash { .. })
        ));
        assert!(matches!(
            verify_bytes(b"abcd", Some(3), None),
            Err(IntegrityError::Length { .. })
        ));
        let only_md5: Hashes = [("md5".to_owned(), "00".to_owned())].into();
        assert!(matches!(
            verify_hashes(b"abc", &only_md5),
            Err(IntegrityError::NoKnownHash(_))
        ));
        assert_eq!(signed_sha256(&h), Some(Sha256Digest::of(b"abc")));
    }
}
