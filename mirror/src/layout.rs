//! The mirror layout: which objects a mirror holds and where.
//!
//! ```text
//! metadata/N.root.json  metadata/N.targets.json  metadata/N.snapshot.json  metadata/timestamp.json
//! targets/channels/<channel>/<release>/<sha256>.bundle.tar.gz   targets/…/<sha256>.index.json
//! chunks/<sha256>     (a zstd chunk, or a release's chunk pack)
//! ```
//!
//! Everything is immutable except `metadata/timestamp.json`: versioned metadata and targets carry their
//! version or digest in their name, and a chunk's name is the sha256 of its bytes. A directory, an HTTP
//! origin and an OCI repository (mapped, see `docs/mirrors.md`) all hold this same set of objects.

use std::fmt;

use mast_protocol::digest::Sha256Digest;

use crate::MirrorError;

/// One object of the layout, parsed so that no path outside it can be formed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectPath {
    /// A TUF metadata file, by its name under `metadata/` (`timestamp.json`, `7.root.json`).
    Metadata(String),
    /// A TUF target by its consistent-snapshot path under `targets/`, whose last segment is
    /// `<sha256>.<name>`; the digest names the blob on content-addressed mirrors.
    Target {
        /// The path under `targets/`.
        path: String,
        /// The sha256 in its name.
        sha256: Sha256Digest,
    },
    /// A zstd chunk, or a release's chunk pack (its chunks as one blob), by the sha256 of its bytes.
    Chunk(Sha256Digest),
}

impl ObjectPath {
    /// A metadata file name: one path segment of ASCII letters, digits and `._-~%`, ending in `.json`.
    pub fn metadata(name: &str) -> Result<Self, MirrorError> {
        let ok = name.len() <= 255
            && name.ends_with(".json")
            && !name.starts_with('.')
            && name.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~' | b'%')
            });
        if ok {
            Ok(Self::Metadata(name.to_owned()))
        } else {
            Err(MirrorError::Config(format!(
                "{name:?} is not a metadata file name"
            )))
        }
    }

    /// A target by its path under `targets/` (as [`mast_protocol::tuf::builder::consistent_target_path`]
    /// returns it, without the `targets/` prefix).
    pub fn target(path: &str) -> Result<Self, MirrorError> {
        let bad = |reason: &str| MirrorError::Config(format!("target path {path:?}: {reason}"));
        if path.is_empty() || path.len() > 4096 || path.starts_with('/') || path.contains('\\') {
            return Err(bad("must be a relative path"));
        }
        if path.split('/').any(|s| {
            s.is_empty() || s == "." || s == ".." || s.bytes().any(|b| b.is_ascii_control())
        }) {
            return Err(bad("has an empty, `.`, `..` or control-character segment"));
        }
        let file = path.rsplit('/').next().unwrap_or(path);
        let sha256 = file
            .get(..64)
            .filter(|_| file.as_bytes().get(64) == Some(&b'.'))
            .and_then(|hex| hex.parse().ok())
            .ok_or_else(|| bad("the file name must be <sha256>.<name>"))?;
        Ok(Self::Target {
            path: path.to_owned(),
            sha256,
        })
    }

    /// Parses a path relative to the mirror root (`metadata/…`, `targets/…`, `chunks/…`).
    pub fn parse(relative: &str) -> Result<Self, MirrorError> {
        if let Some(name) = relative.strip_prefix("metadata/") {
            Self::metadata(name)
        } else if let Some(path) = relative.strip_prefix("targets/") {
            Self::target(path)
        } else if let Some(hex) = relative.strip_prefix("chunks/") {
            hex.parse()
                .map(Self::Chunk)
                .map_err(|_| MirrorError::Config(format!("{relative:?}: not chunks/<sha256>")))
        } else {
            Err(MirrorError::Config(format!(
                "{relative:?} is not under metadata/, targets/ or chunks/"
            )))
        }
    }

    /// The path relative to the mirror root.
    pub fn as_path(&self) -> String {
        match self {
            Self::Metadata(name) => format!("metadata/{name}"),
            Self::Target { path, .. } => format!("targets/{path}"),
            Self::Chunk(d) => format!("chunks/{d}"),
        }
    }

    /// Whether the object may change under its name: only `metadata/timestamp.json`.
    pub fn is_mutable(&self) -> bool {
        matches!(self, Self::Metadata(name) if name == "timestamp.json")
    }

    /// The sha256 the name carries, for content-addressed objects.
    pub fn sha256(&self) -> Option<Sha256Digest> {
        match self {
            Self::Metadata(_) => None,
            Self::Target { sha256, .. } => Some(*sha256),
            Self::Chunk(d) => Some(*d),
        }
    }

    /// The Content-Type an HTTP origin should serve it with.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Metadata(_) => "application/json",
            Self::Target { path, .. } if path.ends_with(".json") => "application/json",
            Self::Target { path, .. } if path.ends_with(".gz") => "application/gzip",
            Self::Target { .. } => "application/octet-stream",
            Self::Chunk(_) => "application/zstd",
        }
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds_and_refuses_the_rest() {
        let d = Sha256Digest::of(b"x");
        for path in [
            "metadata/timestamp.json".to_owned(),
            "metadata/7.root.json".to_owned(),
            format!("targets/channels/prod/7/{d}.bundle.tar.gz"),
            format!("chunks/{d}"),
        ] {
            assert_eq!(ObjectPath::parse(&path).unwrap().as_path(), path);
        }
        assert!(
            ObjectPath::parse("metadata/timestamp.json")
                .unwrap()
                .is_mutable()
        );
        assert!(
            !ObjectPath::parse("metadata/1.root.json")
                .unwrap()
                .is_mutable()
        );
        for bad in [
            "metadata/../x.json".to_owned(),
            "metadata/a/b.json".to_owned(),
            "metadata/x".to_owned(),
            "targets/a/../b".to_owned(),
            "targets/channels/prod/7/bundle.tar.gz".to_owned(),
            format!("targets//{d}.x"),
            "chunks/abc".to_owned(),
            "other/x".to_owned(),
        ] {
            assert!(ObjectPath::parse(&bad).is_err(), "{bad}");
        }
    }
}
