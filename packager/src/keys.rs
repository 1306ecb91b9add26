//! Keys on disk: ed25519 in PKCS#8 PEM (what `openssl genpkey -algorithm ed25519` writes) for private
//! keys, SPKI PEM (what `openssl pkey -pubout` writes) for public ones.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use mast_protocol::crypto::{Key, KeyId, SigningKey};

/// Why a key file could not be made or read. Always names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a key of the kind needed.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What it is not.
        reason: String,
    },
    /// `keygen` would overwrite a file.
    #[error("{0}: already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// The system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

impl crate::ExitStatus for KeyError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Io { source, .. } => crate::io_exit_code(source),
            Self::Format { .. } => crate::exit::DATA,
            Self::Exists(_) => crate::exit::CANT_CREATE,
            Self::Random(_) => crate::exit::SOFTWARE,
        }
    }
}

/// A key given for a role: its public half always, its private half when the file held one.
pub struct RoleKey {
    /// The file it came from.
    pub path: PathBuf,
    /// The public key as TUF lists it.
    pub public: Key,
    /// The private key, when the file was a private key.
    pub private: Option<SigningKey>,
}

/// What `keygen` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeneratedKey {
    /// The private key file.
    pub private: PathBuf,
    /// The public key file (`<private>.pub`).
    pub public: PathBuf,
    /// The TUF key id.
    pub keyid: String,
}

impl std::fmt::Display for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "private  {}", self.private.display())?;
        writeln!(f, "public   {}", self.public.display())?;
        write!(f, "keyid    {}", self.keyid)
    }
}

/// Generates a key from the operating system's random source and writes it to `out` (mode 0600, never
/// overwriting) and its public half to `out.pub`.
pub fn generate(out: &Path) -> Result<GeneratedKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_seed(&seed);
    // PKCS#8 v1 (no public key inside), byte for byte what `openssl genpkey -algorithm ed25519` writes:
    // OpenSSL 3.0 refuses the v2 form that carries the public key, and key holders use openssl too.
    let pem = KeypairBytes {
        secret_key: seed,
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| KeyError::Format {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    seed.fill(0);
    let public_path = pub_path(out);
    for path in [out, public_path.as_path()] {
        if path.exists() {
            return Err(KeyError::Exists(path.to_path_buf()));
        }
    }
    write_new(out, pem.as_bytes(), 0o600)?;
    write_new(
        &public_path,
        public_pem(&key.public(), out)?.as_bytes(),
        0o644,
    )?;
    Ok(GeneratedKey {
        private: out.to_path_buf(),
        public: public_path,
        keyid: key.key_id().as_str().to_owned(),
    })
}

/// Reads a private key (PKCS#8 PEM).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read(path)?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Format {
        path: path.to_path_buf(),
        reason: format!("not an ed25519 PKCS#8 private key ({e})"),
    })
}

/// Reads a key given for a role: a private key (PKCS#8) or a public key (SPKI `PUBLIC KEY` PEM).
pub fn load_role_key(path: &Path) -> Result<RoleKey, KeyError> {
    let text = read(path)?;
    if let Ok(private) = SigningKey::from_pkcs8_pem(&text) {
        return Ok(RoleKey {
            path: path.to_path_buf(),
            public: private.public(),
            private: Some(private),
        });
    }
    let vk =
        ed25519_dalek::VerifyingKey::from_public_key_pem(&text).map_err(|_| KeyError::Format {
            path: path.to_path_buf(),
            reason: "neither an ed25519 PKCS#8 private key nor an ed25519 SPKI public key"
                .to_owned(),
        })?;
    Ok(RoleKey {
        path: path.to_path_buf(),
        public: Key::ed25519(vk.as_bytes()),
        private: None,
    })
}

/// The key id of a public key, for messages.
pub fn key_id(key: &Key) -> KeyId {
    key.key_id()
}

fn pub_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn public_pem(key: &Key, path: &Path) -> Result<String, KeyError> {
    let format = |reason: String| KeyError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(&key.keyval.public, &mut bytes).map_err(|e| format(e.to_string()))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| format(e.to_string()))?;
    vk.to_public_key_pem(LineEnding::LF)
        .map_err(|e| format(e.to_string()))
}

fn read(path: &Path) -> Result<String, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() > 64 << 10 {
        return Err(KeyError::Format {
            path: path.to_path_buf(),
            reason: "larger than any key file".to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|_| KeyError::Format {
        path: path.to_path_buf(),
        reason: "not a PEM text file".to_owned(),
    })
}

/// Creates `path` exclusively with `mode`, so a key is never written over another or readable by others
/// for an instant.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_as_private_and_public() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("k.pem");
        let generated = generate(&out).unwrap();
        let private = load_role_key(&out).unwrap();
        let public = load_role_key(&generated.public).unwrap();
        assert!(private.private.is_some() && public.private.is_none());
        assert_eq!(private.public, public.public);
        assert_eq!(private.public.key_id().as_str(), generated.keyid);
        assert!(matches!(generate(&out), Err(KeyError::Exists(_))));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("bad.pem"), "hello").unwrap();
        let err = load_signing_key(&dir.path().join("bad.pem")).unwrap_err();
        assert!(err.to_string().contains("bad.pem"), "{err}");
    }
}
