//! The two narrow traits every mirror implements: reading objects with a byte cap, and writing them.

use std::future::Future;

use bytes::Bytes;
use mast_protocol::digest::Sha256Digest;
use tokio::io::AsyncReadExt;

use crate::{MirrorError, ObjectPath};

/// An object being read: what the mirror said about it, and its bytes as a capped stream.
///
/// The metadata is kept (not just the bytes) because the agent's conditional requests and resumed
/// downloads need the validators: an HTTP `ETag`, or an OCI manifest digest.
#[derive(Debug)]
pub struct Response {
    object: String,
    /// The validator the mirror gave: an HTTP `ETag`, or the manifest digest of an OCI metadata tag.
    pub etag: Option<String>,
    /// `Last-Modified`, when an HTTP origin sends it.
    pub last_modified: Option<String>,
    /// `Cache-Control`, as an HTTP origin sent it (the agent reads `max-age` of `timestamp.json` from
    /// it to space its polls).
    pub cache_control: Option<String>,
    /// The length the mirror announced, if it did.
    pub length: Option<u64>,
    max_length: u64,
    read: u64,
    body: Body,
    tap: Option<ReadTap>,
}

/// What [`Response::tap`] reports each piece's length to.
struct ReadTap(Box<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for ReadTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadTap")
    }
}

/// Where a [`Response`]'s bytes come from.
#[derive(Debug)]
pub(crate) enum Body {
    Memory(Option<Bytes>),
    File(tokio::fs::File),
    Http(reqwest::Response),
}

impl Response {
    pub(crate) fn new(
        object: &ObjectPath,
        length: Option<u64>,
        max_length: u64,
        body: Body,
    ) -> Result<Self, MirrorError> {
        if length.is_some_and(|n| n > max_length) {
            return Err(MirrorError::TooLarge {
                object: object.as_path(),
                limit: max_length,
            });
        }
        Ok(Self {
            object: object.as_path(),
            etag: None,
            last_modified: None,
            cache_control: None,
            length,
            max_length,
            read: 0,
            body,
            tap: None,
        })
    }

    /// A response over bytes already in memory, for test mirrors and caches; the cap applies as to any.
    pub fn from_bytes(
        object: &ObjectPath,
        bytes: Bytes,
        max_length: u64,
    ) -> Result<Self, MirrorError> {
        Self::new(
            object,
            Some(bytes.len() as u64),
            max_length,
            Body::Memory(Some(bytes)),
        )
    }

    /// Reports the length of every piece of the body read from now on to `tap`, as it is read (before
    /// the cap is checked: a piece that passes it was received all the same). This is how a reader
    /// counts what it received — by mirror, by kind of file — without the transports knowing about it.
    pub fn tap(mut self, tap: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.tap = Some(ReadTap(Box::new(tap)));
        self
    }

    /// The next piece of the body, or `None` at its end. Fails as soon as the body passes the cap, so a
    /// hostile mirror can make a reader hold at most the cap plus one piece.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, MirrorError> {
        let piece = match &mut self.body {
            Body::Memory(bytes) => bytes.take(),
            Body::File(file) => {
                let mut buf = vec![0u8; 256 << 10];
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| MirrorError::io(std::path::Path::new(&self.object), e))?;
                buf.truncate(n);
                (n > 0).then(|| Bytes::from(buf))
            }
            Body::Http(response) => {
                let url = crate::error::redact(response.url().as_str());
                response.chunk().await.map_err(|source| MirrorError::Http {
                    method: "GET",
                    url,
                    source,
                })?
            }
        };
        if let Some(piece) = &piece {
            if let Some(ReadTap(tap)) = &self.tap {
                tap(piece.len() as u64);
            }
            self.read += piece.len() as u64;
            if self.read > self.max_length {
                return Err(MirrorError::TooLarge {
                    object: self.object.clone(),
                    limit: self.max_length,
                });
            }
        }
        Ok(piece)
    }

    /// The validator to resume this object with (`If-Range`): the `ETag` if it is strong (a weak one
    /// may not be used for ranges, RFC 9110 §13.1.5), else `Last-Modified`.
    pub fn range_validator(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|etag| !etag.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }

    /// The whole body, within the cap.
    pub async fn bytes(mut self) -> Result<Vec<u8>, MirrorError> {
        let mut out = Vec::with_capacity(self.length.unwrap_or(0).min(self.max_length) as usize);
        while let Some(piece) = self.chunk().await? {
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    /// The whole body, checked against the length and sha256 a signature vouches for; the bytes are
    /// returned only when both match.
    pub async fn verified(
        self,
        length: u64,
        sha256: &Sha256Digest,
    ) -> Result<Vec<u8>, MirrorError> {
        let object = self.object.clone();
        let bytes = self.bytes().await?;
        if bytes.len() as u64 != length || Sha256Digest::of(&bytes) != *sha256 {
            return Err(MirrorError::Protocol {
                object,
                reason: format!(
                    "got {} bytes with sha256 {}, expected {length} bytes with sha256 {sha256}",
                    bytes.len(),
                    Sha256Digest::of(&bytes)
                ),
            });
        }
        Ok(bytes)
    }
}

/// What a conditional or resumed read asks of a mirror, built from what an earlier [`Response`] said.
///
/// The two halves are independent: `if_none_match`/`if_modified_since` make an idle poll of
/// `timestamp.json` cost one small request ([`Fetched::NotModified`]), and `resume_from`/`if_range`
/// continue a download cut part-way ([`Fetched::Partial`]). A mirror may ignore any of them and answer
/// [`Fetched::Full`]; callers must accept that, which is why the default of
/// [`MirrorRead::get_with`] is just a full read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Answer "not modified" while the object still has this validator (`If-None-Match`): an ETag, or
    /// the manifest digest of an OCI metadata tag, as [`Response::etag`] gave it.
    pub if_none_match: Option<String>,
    /// Answer "not modified" unless the object changed after this HTTP date (`If-Modified-Since`), as
    /// [`Response::last_modified`] gave it. Servers ignore it when `if_none_match` is sent too.
    pub if_modified_since: Option<String>,
    /// Send only the bytes from this offset on (`Range: bytes=N-`); 0 asks for the whole object.
    pub resume_from: u64,
    /// Resume only while the object still has this validator (`If-Range`: a strong ETag or a
    /// `Last-Modified` date); otherwise the mirror sends the whole object. Without it a changed object's
    /// tail would be appended to the old one's head: harmless for content-addressed objects, whose
    /// digest the reader checks, but a wasted download.
    pub if_range: Option<String>,
}

impl Conditions {
    /// Revalidates an object read before: "not modified" while its `etag` (else `last_modified`) holds.
    pub fn revalidate(etag: Option<&str>, last_modified: Option<&str>) -> Self {
        Self {
            if_none_match: etag.map(str::to_owned),
            if_modified_since: last_modified.map(str::to_owned),
            ..Self::default()
        }
    }

    /// Resumes a read at byte `from`, provided the object still has `validator` (see
    /// [`Response::range_validator`]).
    pub fn resume(from: u64, validator: Option<&str>) -> Self {
        Self {
            resume_from: from,
            if_range: validator.map(str::to_owned),
            ..Self::default()
        }
    }
}

/// The answer to a [`MirrorRead::get_with`].
#[derive(Debug)]
pub enum Fetched {
    /// The object still has the validator in [`Conditions::if_none_match`] or has not changed since
    /// [`Conditions::if_modified_since`] (HTTP 304): nothing to read.
    NotModified {
        /// The answer's `Cache-Control`, as sent: how long the mirror says its copy stays fresh.
        cache_control: Option<String>,
    },
    /// The whole object, from byte 0. After a resume request this means start over: the mirror cannot
    /// do ranges, the object changed (`If-Range` failed), or the range was unsatisfiable (HTTP 416).
    Full(Response),
    /// The object from byte `from` on (HTTP 206): append it to the first `from` bytes already held.
    /// The body's cap is what remains of the caller's `max_length`.
    Partial {
        /// Where the body starts in the object; always the [`Conditions::resume_from`] asked for.
        from: u64,
        /// The whole object's length, when the mirror said (`Content-Range: bytes a-b/TOTAL`).
        total: Option<u64>,
        /// The rest of the object.
        response: Response,
    },
}

impl Fetched {
    /// The whole object, from the answer to a read made without conditions: such a read can be
    /// answered neither "not modified" nor with a range, and a mirror that does is not followed.
    pub(crate) fn into_full(self, object: &ObjectPath) -> Result<Response, MirrorError> {
        match self {
            Self::Full(response) => Ok(response),
            Self::NotModified { .. } | Self::Partial { .. } => Err(MirrorError::Protocol {
                object: object.as_path(),
                reason: "a conditional answer to an unconditional read".to_owned(),
            }),
        }
    }
}

/// Reading objects from a mirror.
pub trait MirrorRead {
    /// Opens `object`, allowing at most `max_length` bytes. An absent object is an error of kind
    /// [`crate::ErrorKind::NotFound`], distinct from every other failure.
    fn get(
        &self,
        object: &ObjectPath,
        max_length: u64,
    ) -> impl Future<Output = Result<Response, MirrorError>> + Send;

    /// Opens `object` under `conditions`: a conditional read that may answer [`Fetched::NotModified`],
    /// or a resumed one that may answer [`Fetched::Partial`]. `max_length` caps the whole object, so a
    /// partial body may be at most `max_length - resume_from` bytes.
    ///
    /// The default, for mirrors that can do neither, ignores the conditions and reads the whole object.
    fn get_with(
        &self,
        object: &ObjectPath,
        max_length: u64,
        conditions: &Conditions,
    ) -> impl Future<Output = Result<Fetched, MirrorError>> + Send {
        let _ = conditions;
        let read = self.get(object, max_length);
        async move { read.await.map(Fetched::Full) }
    }

    /// The mirror, for messages (`dir:/srv/repo`, `https://cdn.example/mast`, `oci://host/repo`).
    fn describe(&self) -> String;
}

/// A release as a whole, for mirrors that must link its objects together (an OCI registry tags the
/// bundle and keeps its chunks referenced); directory and HTTP mirrors need nothing beyond the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseObjects {
    /// The channel.
    pub channel: String,
    /// The release number.
    pub number: u64,
    /// Whether it is the channel's highest release (moving tags follow it).
    pub latest: bool,
    /// The `bundle.tar.gz` target: sha256 and length.
    pub bundle: (Sha256Digest, u64),
    /// The `index.json` target: sha256 and length.
    pub index: (Sha256Digest, u64),
    /// The distinct chunks, in order of first appearance: sha256 and length.
    pub chunks: Vec<(Sha256Digest, u64)>,
    /// The chunk pack (those chunks' frames as one blob): sha256 and length.
    pub pack: (Sha256Digest, u64),
    /// sha256 of the uncompressed tar (the release's revision).
    pub tar_sha256: Sha256Digest,
    /// When the release was made, RFC 3339.
    pub created: String,
    /// Where it came from (a CI URL, a git remote), for the OCI source annotation.
    pub source: String,
}

/// Writing objects to a mirror. The caller decides the order; every `put` is complete (never torn) when
/// it returns, and an immutable object once written is never written again.
pub trait MirrorWrite: MirrorRead {
    /// Whether `object` is already there.
    fn exists(&self, object: &ObjectPath)
    -> impl Future<Output = Result<bool, MirrorError>> + Send;

    /// Writes `object`, replacing it atomically where it exists (only `timestamp.json` ever does).
    fn put(
        &self,
        object: &ObjectPath,
        bytes: Bytes,
    ) -> impl Future<Output = Result<(), MirrorError>> + Send;

    /// Links a release whose objects are all written; called before any metadata that names it.
    fn link_release(
        &self,
        release: &ReleaseObjects,
    ) -> impl Future<Output = Result<(), MirrorError>> + Send {
        let _ = release;
        async { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_tap_sees_every_piece_read_including_one_past_the_cap() {
        let object = ObjectPath::Metadata("timestamp.json".to_owned());
        let counted = Arc::new(AtomicU64::new(0));
        let tap = |counted: &Arc<AtomicU64>| {
            let counted = Arc::clone(counted);
            move |n| {
                counted.fetch_add(n, Ordering::Relaxed);
            }
        };
        let response = Response::from_bytes(&object, Bytes::from_static(b"0123456789"), 10)
            .unwrap()
            .tap(tap(&counted));
        assert_eq!(response.bytes().await.unwrap(), b"0123456789");
        assert_eq!(counted.load(Ordering::Relaxed), 10);

        // A body longer than announced: the piece that passes the cap was received, and is counted.
        let mut response = Response::new(
            &object,
            None,
            4,
            Body::Memory(Some(Bytes::from_static(b"0123456789"))),
        )
        .unwrap()
        .tap(tap(&counted));
        assert!(matches!(
            response.chunk().await,
            Err(MirrorError::TooLarge { limit: 4, .. })
        ));
        assert_eq!(counted.load(Ordering::Relaxed), 20);
    }
}
