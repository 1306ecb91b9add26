//! Keys and signatures as TUF carries them: ed25519 only, verified strictly.
//!
//! A TUF key is a JSON object (`keytype`, `scheme`, `keyval.public`) and its key id is the SHA-256 of that
//! object's canonical form. mast checks that every key id matches its key: otherwise one key listed under
//! two ids would count twice toward a threshold. Signatures are checked with ed25519-dalek's
//! `verify_strict`, which refuses small-order keys and points and non-canonical scalars, so that no
//! signature is valid under two different messages or keys in the ways RFC 8032's loose check allows.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signer as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical;
use crate::digest::Sha256Digest;

/// Why a key or signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key's type or scheme is one mast does not verify. Signatures by such keys never count.
    #[error("unsupported key type {keytype:?} with scheme {scheme:?} (mast verifies ed25519 only)")]
    Unsupported {
        /// The key's `keytype`.
        keytype: String,
        /// The key's `scheme`.
        scheme: String,
    },
    /// `keyval.public` is not 32 bytes of hex, or not a valid curve point.
    #[error("malformed ed25519 public key {0:?}")]
    MalformedPublic(String),
    /// A signature is not 64 bytes of hex.
    #[error("malformed signature from key {0}")]
    MalformedSignature(KeyId),
    /// The signature does not verify.
    #[error("bad signature from key {0}")]
    BadSignature(KeyId),
    /// A private key file is not an ed25519 PKCS#8 document.
    #[error("not an ed25519 PKCS#8 private key: {0}")]
    Pkcs8(String),
}

/// A TUF key id: the hex SHA-256 of the key's canonical JSON.
///
/// Parsing keeps any string, because metadata from other tools may carry ids mast would refuse; whether an
/// id matches its key is checked when a key set is loaded ([`checked_key_ids`]).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The id as written in metadata.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Sha256Digest> for KeyId {
    fn from(d: Sha256Digest) -> Self {
        Self(d.to_hex())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Full ids are 64 characters; operators match keys by a prefix, as git does with commits.
        let short = self.0.get(..12).unwrap_or(&self.0);
        f.write_str(short)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// A public key object as it appears in root and targets metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// `ed25519` for every key mast writes.
    pub keytype: String,
    /// `ed25519` for every key mast writes.
    pub scheme: String,
    /// The key material.
    pub keyval: KeyVal,
    /// Fields mast does not know, kept so the key id and re-serialisation stay exact.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The `keyval` object of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVal {
    /// The public key, hex-encoded for ed25519.
    pub public: String,
    /// Fields mast does not know (private key material is never accepted here by mast's own tools).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Key {
    /// The key object for an ed25519 public key, as python-tuf and mast write it.
    pub fn ed25519(public: &[u8; 32]) -> Self {
        Self {
            keytype: "ed25519".to_owned(),
            scheme: "ed25519".to_owned(),
            keyval: KeyVal {
                public: hex::encode(public),
                extra: BTreeMap::new(),
            },
            extra: BTreeMap::new(),
        }
    }

    /// The key id TUF computes: SHA-256 over the canonical JSON of the whole key object.
    pub fn key_id(&self) -> KeyId {
        // A Key holds only strings and maps of JSON values that came from JSON (or were built as strings),
        // and canonical encoding fails only on floats; a float in an unknown field is the one way to reach
        // the fallback, and it yields an id no signature will ever match.
        match canonical::encode(self) {
            Ok(bytes) => Sha256Digest::of(&bytes).into(),
            Err(e) => KeyId(format!("unencodable key: {e}")),
        }
    }

    /// Verifies `sig` (raw signature bytes, hex in metadata) over `msg`, strictly.
    pub fn verify(&self, id: &KeyId, msg: &[u8], sig_hex: &str) -> Result<(), KeyError> {
        let vk = self.ed25519_public()?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(sig_hex, &mut sig)
            .map_err(|_| KeyError::MalformedSignature(id.clone()))?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        vk.verify_strict(msg, &sig)
            .map_err(|_| KeyError::BadSignature(id.clone()))
    }

    fn ed25519_public(&self) -> Result<VerifyingKey, KeyError> {
        if self.keytype != "ed25519" || self.scheme != "ed25519" {
            return Err(KeyError::Unsupported {
                keytype: self.keytype.clone(),
                scheme: self.scheme.clone(),
            });
        }
        let mut public = [0u8; 32];
        hex::decode_to_slice(&self.keyval.public, &mut public)
            .map_err(|_| KeyError::MalformedPublic(self.keyval.public.clone()))?;
        VerifyingKey::from_bytes(&public)
            .map_err(|_| KeyError::MalformedPublic(self.keyval.public.clone()))
    }
}

/// Checks that every id in a key map is the id of its key; returns the first that is not.
pub fn checked_key_ids(keys: &BTreeMap<KeyId, Key>) -> Result<(), (KeyId, KeyId)> {
    for (id, key) in keys {
        let computed = key.key_id();
        if &computed != id {
            return Err((id.clone(), computed));
        }
    }
    Ok(())
}

/// An ed25519 private key that signs metadata. Only the packager holds these.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A key from 32 bytes of secret seed; the caller supplies the randomness (this crate has no RNG).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// Reads a PKCS#8 PEM document, as `openssl genpkey -algorithm ed25519` and `mast keygen` write.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| KeyError::Pkcs8(e.to_string()))
    }

    /// Writes the key as a PKCS#8 PEM document (v2, with the public key, which openssl also reads).
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|e| KeyError::Pkcs8(e.to_string()))
    }

    /// The public half as a TUF key object.
    pub fn public(&self) -> Key {
        Key::ed25519(self.0.verifying_key().as_bytes())
    }

    /// The TUF key id of the public half.
    pub fn key_id(&self) -> KeyId {
        self.public().key_id()
    }

    /// Signs `msg`, returning the signature as lowercase hex (the form TUF metadata carries).
    pub fn sign_hex(&self, msg: &[u8]) -> String {
        hex::encode(self.0.sign(msg).to_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secret material, even in debug logs.
        f.debug_tuple("SigningKey").field(&self.key_id()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_matches_python_tuf() {
        // python-tuf: SSlibKey("", "ed25519", "ed25519", {"public": "00"*32}) -> keyid computed by
        // securesystemslib as sha256(encode_canonical({"keytype":"ed25519","keyval":{"public":...},
        // "scheme":"ed25519"})). The canonical text is fixed, so pin the hash of that text.
        let key = Key::ed25519(&[0u8; 32]);
        let canonical = canonical::encode(&key).unwrap();
        assert_eq!(
            String::from_utf8(canonical.clone()).unwrap(),
            format!(
                r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#,
                "00".repeat(32)
            )
        );
        assert_eq!(key.key_id().as_str(), Sha256Digest::of(&canonical).to_hex());
    }

    #[test]
    fn sign_verify_and_pem_round_trip() {
        let k = SigningKey::from_seed(&[7u8; 32]);
        let pem = k.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.key_id(), k.key_id());
        let sig = k.sign_hex(b"msg");
        let id = k.key_id();
        k.public().verify(&id, b"msg", &sig).unwrap();
        assert_eq!(
            k.public().verify(&id, b"msh", &sig),
            Err(KeyError::BadSignature(id.clone()))
        );
        assert_eq!(
            k.public().verify(&id, b"msg", "zz"),
            Err(KeyError::MalformedSignature(id))
        );
    }

    #[test]
    fn reads_openssl_genpkey_output() {
        // `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key), seed = 0x01..0x20.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\n-----END PRIVATE KEY-----\n";
        let k = SigningKey::from_pkcs8_pem(pem).unwrap();
        let seed: Vec<u8> = (1..=32).collect();
        assert_eq!(
            k.key_id(),
            SigningKey::from_seed(seed.as_slice().try_into().unwrap()).key_id()
        );
    }

    #[test]
    fn unsupported_and_mismatched_keys_are_named() {
        let mut rsa = Key::ed25519(&[1u8; 32]);
        rsa.keytype = "rsa".into();
        let id = rsa.key_id();
        assert!(matches!(
            rsa.verify(&id, b"m", &"00".repeat(64)),
            Err(KeyError::Unsupported { .. })
        ));

        let good = SigningKey::from_seed(&[2u8; 32]).public();
        let mut keys = BTreeMap::new();
        keys.insert(KeyId("not-the-id".into()), good.clone());
        let (claimed, computed) = checked_key_ids(&keys).unwrap_err();
        assert_eq!(claimed.as_str(), "not-the-id");
        assert_eq!(computed, good.key_id());
    }
}
