//! mast mirrors: the repository layout, and the transports that read and write it.
//!
//! A mirror holds TUF metadata by name and targets and chunks by sha256 ([`ObjectPath`]). Nothing on a
//! mirror is trusted: readers verify everything against signed metadata, so a mirror's only duties are to
//! serve what it was given and, when written, to never be seen half-written. Three kinds exist:
//!
//! - [`DirMirror`]: a local directory (air gap, USB stick, a CDN origin's document root, the packager's
//!   repository directory itself).
//! - [`HttpMirror`]: an HTTP(S) origin or CDN; reads with `GET`, writes with `PUT` (WebDAV-style, or to
//!   presigned URLs a [`PresignCommand`] prints).
//! - [`OciMirror`]: a repository of an OCI registry, over the distribution API.
//!
//! Each implements [`MirrorRead`] (capped, streaming reads that keep the validators an agent needs for
//! conditional and resumed requests) and [`MirrorWrite`] (existence checks and atomic puts in an order the
//! caller controls). [`Mirror`] dispatches over the three, parsed from a [`MirrorSpec`].
//!
//! [`client`] runs the TUF client workflow over any [`MirrorRead`] and reads verified targets.

pub mod client;
mod dir;
mod error;
mod http;
mod layout;
mod oci;
pub mod tls;
mod transport;

use std::path::PathBuf;
use std::str::FromStr;

use bytes::Bytes;

pub use dir::{DirMirror, write_atomic};
pub use error::{ErrorKind, MirrorError};
pub use http::{HttpMirror, PresignCommand};
pub use layout::ObjectPath;
pub use oci::OciMirror;
pub use transport::{Conditions, Fetched, MirrorRead, MirrorWrite, ReleaseObjects, Response};

/// Where a mirror is, as written on a command line or in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorSpec {
    /// `dir:PATH` or `file:///ABSOLUTE/PATH`.
    Dir(PathBuf),
    /// `http://…` or `https://…`: the URL under which the layout is served.
    Http(String),
    /// `oci://REGISTRY/REPOSITORY` (HTTPS) or `oci+http://REGISTRY/REPOSITORY` (plain HTTP).
    Oci {
        /// `host[:port]`.
        registry: String,
        /// The repository path.
        repository: String,
        /// Plain HTTP instead of HTTPS.
        plain_http: bool,
    },
}

impl FromStr for MirrorSpec {
    type Err = MirrorError;

    fn from_str(s: &str) -> Result<Self, MirrorError> {
        let bad = |why: &str| {
            MirrorError::Config(format!(
                "{s:?}: {why} (expected dir:PATH, file:///PATH, http(s)://URL or oci://REGISTRY/REPOSITORY)"
            ))
        };
        if let Some(path) = s.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(bad("empty path"));
            }
            return Ok(Self::Dir(PathBuf::from(path)));
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("file:// needs an absolute path"));
            }
            return Ok(Self::Dir(PathBuf::from(path)));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            let host = s
                .split_once("://")
                .map(|(_, rest)| rest)
                .unwrap_or_default();
            if host.is_empty() || host.starts_with('/') || s.contains(['?', '#']) {
                return Err(bad("needs a host and no query or fragment"));
            }
            // Credentials in a URL end up in logs, status output and the state database.
            if host
                .split('/')
                .next()
                .is_some_and(|authority| authority.contains('@'))
            {
                return Err(bad("credentials do not belong in a mirror URL"));
            }
            return Ok(Self::Http(s.trim_end_matches('/').to_owned()));
        }
        let (rest, plain_http) = if let Some(rest) = s.strip_prefix("oci+http://") {
            (rest, true)
        } else if let Some(rest) = s.strip_prefix("oci://") {
            (rest, false)
        } else {
            return Err(bad("unknown scheme"));
        };
        let (registry, repository) = rest
            .split_once('/')
            .filter(|(r, p)| !r.is_empty() && !p.is_empty())
            .ok_or_else(|| bad("needs REGISTRY/REPOSITORY"))?;
        if registry.contains('@') {
            return Err(bad("credentials do not belong in a mirror URL"));
        }
        // The distribution spec's repository grammar: lowercase path components separated by `/`.
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad("repository must be lowercase path components"));
        }
        Ok(Self::Oci {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            plain_http,
        })
    }
}

/// Settings for opening a [`Mirror`].
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    /// Extra trusted CA certificates (PEM), besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// For HTTP destinations: sign writes with this command.
    pub presign: Option<PresignCommand>,
    /// For OCI: username and password or token.
    pub credentials: Option<(String, String)>,
}

/// Any mirror, chosen at run time.
#[derive(Debug)]
pub enum Mirror {
    /// A directory.
    Dir(DirMirror),
    /// An HTTP(S) origin.
    Http(HttpMirror),
    /// An OCI repository.
    Oci(OciMirror),
}

impl Mirror {
    /// Opens the mirror `spec` names. Builds the HTTP client (and reads the CA file) for HTTP and OCI.
    pub fn open(spec: &MirrorSpec, options: &MirrorOptions) -> Result<Self, MirrorError> {
        Ok(match spec {
            MirrorSpec::Dir(path) => Self::Dir(DirMirror::new(path)),
            MirrorSpec::Http(base) => {
                let client = tls::http_client(options.ca_file.as_deref())?;
                let mut mirror = HttpMirror::new(base, client);
                if let Some(command) = &options.presign {
                    mirror = mirror.with_presign(command.clone());
                }
                Self::Http(mirror)
            }
            MirrorSpec::Oci {
                registry,
                repository,
                plain_http,
            } => {
                if options.presign.is_some() {
                    return Err(MirrorError::Config(
                        "--presign-cmd applies to http(s) destinations only".to_owned(),
                    ));
                }
                let client = tls::http_client(options.ca_file.as_deref())?;
                let mut mirror = OciMirror::new(client, registry, repository, *plain_http);
                if let Some((user, password)) = &options.credentials {
                    mirror = mirror.with_credentials(user.clone(), password.clone());
                }
                Self::Oci(mirror)
            }
        })
    }
}

impl MirrorRead for Mirror {
    async fn get(&self, object: &ObjectPath, max_length: u64) -> Result<Response, MirrorError> {
        match self {
            Self::Dir(m) => m.get(object, max_length).await,
            Self::Http(m) => m.get(object, max_length).await,
            Self::Oci(m) => m.get(object, max_length).await,
        }
    }

    async fn get_with(
        &self,
        object: &ObjectPath,
        max_length: u64,
        conditions: &Conditions,
    ) -> Result<Fetched, MirrorError> {
        match self {
            Self::Dir(m) => m.get_with(object, max_length, conditions).await,
            Self::Http(m) => m.get_with(object, max_length, conditions).await,
            Self::Oci(m) => m.get_with(object, max_length, conditions).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Dir(m) => m.describe(),
            Self::Http(m) => m.describe(),
            Self::Oci(m) => m.describe(),
        }
    }
}

impl MirrorWrite for Mirror {
    async fn exists(&self, object: &ObjectPath) -> Result<bool, MirrorError> {
        match self {
            Self::Dir(m) => m.exists(object).await,
            Self::Http(m) => m.exists(object).await,
            Self::Oci(m) => m.exists(object).await,
        }
    }

    async fn put(&self, object: &ObjectPath, bytes: Bytes) -> Result<(), MirrorError> {
        match self {
            Self::Dir(m) => m.put(object, bytes).await,
            Self::Http(m) => m.put(object, bytes).await,
            Self::Oci(m) => m.put(object, bytes).await,
        }
    }

    async fn link_release(&self, release: &ReleaseObjects) -> Result<(), MirrorError> {
        match self {
            Self::Dir(m) => m.link_release(release).await,
            Self::Http(m) => m.link_release(release).await,
            Self::Oci(m) => m.link_release(release).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            "dir:/srv/r".parse::<MirrorSpec>().unwrap(),
            MirrorSpec::Dir("/srv/r".into())
        );
        assert_eq!(
            "file:///srv/r".parse::<MirrorSpec>().unwrap(),
            MirrorSpec::Dir("/srv/r".into())
        );
        assert_eq!(
            "https://cdn.example/mast/".parse::<MirrorSpec>().unwrap(),
            MirrorSpec::Http("https://cdn.example/mast".into())
        );
        assert_eq!(
            "oci+http://127.0.0.1:5000/mast/prod"
                .parse::<MirrorSpec>()
                .unwrap(),
            MirrorSpec::Oci {
                registry: "127.0.0.1:5000".into(),
                repository: "mast/prod".into(),
                plain_http: true
            }
        );
        for bad in [
            "",
            "dir:",
            "file://rel",
            "ftp://x",
            "oci://host",
            "oci://host/Upper",
            "https://",
            "http://h/x?y",
        ] {
            assert!(bad.parse::<MirrorSpec>().is_err(), "{bad}");
        }
    }
}
