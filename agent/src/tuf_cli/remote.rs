//! A TUF repository as the conformance CLI names it: metadata files directly under one URL, targets
//! under another. mast's own mirrors put both under one base (`metadata/`, `targets/`), so this is a
//! separate, small [`MirrorRead`] over the same HTTP client (rustls with ring, mast's user agent and
//! timeouts), plus a streaming target download that checks length and sha256 as the bytes arrive.

use bytes::Bytes;
use mast_mirror::{MirrorError, MirrorRead, ObjectPath, Response};
use mast_protocol::digest::{Sha256Digest, Sha256Hasher};
use mast_protocol::tuf::TargetFile;
use mast_protocol::tuf::verify::signed_sha256;
use reqwest::StatusCode;

/// Received pieces queued for the sha256 thread: none, a hand-over. The hasher takes each piece as it is
/// handed over, and the caller writes that piece and receives the next while it is hashed, so the two
/// sides stay in step. Holding more pieces (each up to the HTTP client's ~400 KB read buffer) gains no
/// overlap and makes the allocator fault in fresh pages for the buffers in flight: a queue of four
/// cost about 6,000 more page faults per 100 MB, a tenth more CPU.
const HASH_QUEUE: usize = 0;

/// Where a target lives under the targets URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetNaming {
    /// `DIR/<sha256>.BASENAME`: the root says `consistent_snapshot`, so every target is immutable under
    /// a name carrying its digest.
    Consistent,
    /// `DIR/BASENAME`, the target's own name.
    Plain,
}

/// A repository at `metadata_url` (metadata files directly under it) with targets under `targets_url`.
#[derive(Debug, Clone)]
pub struct Remote {
    metadata_url: String,
    targets_url: Option<String>,
    client: reqwest::Client,
}

/// Why a target download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request did not complete, or the server answered other than 200.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The bytes differ from the signed length or hashes.
    #[error("{url}: {reason}")]
    Mismatch {
        /// Where they came from.
        url: String,
        /// What differed.
        reason: String,
    },
    /// The local sink refused the bytes.
    #[error("writing {url}: {source}")]
    Sink {
        /// Where they came from.
        url: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Remote {
    /// A repository with metadata under `metadata_url` and, for downloads, targets under `targets_url`.
    pub fn new(
        metadata_url: &str,
        targets_url: Option<&str>,
        client: reqwest::Client,
    ) -> Result<Self, MirrorError> {
        let base = |url: &str| -> Result<String, MirrorError> {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| MirrorError::Config(format!("{url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(MirrorError::Config(format!(
                    "{url:?}: expected an http(s):// URL"
                )));
            }
            Ok(url.trim_end_matches('/').to_owned())
        };
        Ok(Self {
            metadata_url: base(metadata_url)?,
            targets_url: targets_url.map(base).transpose()?,
            client,
        })
    }

    /// The URL of target `name`, named as `naming` says; each path segment percent-encoded so that a
    /// name holding `?`, `#` or `%` still names exactly that file on a static server.
    pub fn target_url(
        &self,
        name: &str,
        target: &TargetFile,
        naming: TargetNaming,
    ) -> Result<(String, Sha256Digest), DownloadError> {
        let base = self
            .targets_url
            .as_deref()
            .ok_or_else(|| MirrorError::Config("downloading needs --target-base-url".to_owned()))?;
        let sha256 = signed_sha256(&target.hashes).ok_or_else(|| DownloadError::Mismatch {
            url: format!("{base}/{name}"),
            reason: "the target lists no sha256, which this client requires".to_owned(),
        })?;
        let (dir, basename) = match name.rsplit_once('/') {
            Some((dir, basename)) => (Some(dir), basename),
            None => (None, name),
        };
        let basename = match naming {
            TargetNaming::Consistent => format!("{sha256}.{basename}"),
            TargetNaming::Plain => basename.to_owned(),
        };
        let mut url = base.to_owned();
        for segment in dir.into_iter().flat_map(|d| d.split('/')) {
            url.push('/');
            url.push_str(&encode_segment(segment));
        }
        url.push('/');
        url.push_str(&encode_segment(&basename));
        Ok((url, sha256))
    }

    /// Streams `url` into `sink` piece by piece (each piece handed over as received, without a copy),
    /// stopping one piece past `length` bytes, and checks the length and `sha256` at the end. The sink
    /// has seen unverified bytes when this fails: make it a staging file.
    ///
    /// sha256 runs on a thread of its own, fed the same pieces: on a fast link hashing costs about as
    /// much as receiving and writing together (SHA-NI does about 1.3 GB/s on one core, and a hash is a
    /// chain that cannot be split), so with a second core it overlaps with them instead of adding to
    /// them.
    pub async fn download(
        &self,
        url: &str,
        length: u64,
        sha256: &Sha256Digest,
        sink: &mut impl FnMut(Bytes) -> std::io::Result<()>,
    ) -> Result<(), DownloadError> {
        let mismatch = |reason: String| DownloadError::Mismatch {
            url: url.to_owned(),
            reason,
        };
        let mut response = self.send(url).await?;
        if response.content_length().is_some_and(|n| n > length) {
            return Err(mismatch(format!("longer than the signed {length} bytes")));
        }
        let (pieces, queue) = std::sync::mpsc::sync_channel::<Bytes>(HASH_QUEUE);
        let hashing = std::thread::spawn(move || {
            let mut hasher = Sha256Hasher::new();
            for piece in queue {
                hasher.update(&piece);
            }
            hasher
        });
        let mut read = 0u64;
        let received = async {
            while let Some(piece) = response.chunk().await.map_err(|source| http(url, source))? {
                read += piece.len() as u64;
                if read > length {
                    return Err(mismatch(format!("longer than the signed {length} bytes")));
                }
                // The hasher only stops early by panicking, which `join` reports below.
                let _ = pieces.send(piece.clone());
                sink(piece).map_err(|source| DownloadError::Sink {
                    url: url.to_owned(),
                    source,
                })?;
            }
            Ok(())
        }
        .await;
        drop(pieces);
        let hasher = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        received?;
        let (read, actual) = (hasher.len(), hasher.finish());
        if read != length || actual != *sha256 {
            return Err(mismatch(format!(
                "got {read} bytes with sha256 {actual}, signed: {length} bytes with sha256 {sha256}"
            )));
        }
        Ok(())
    }

    /// GETs `url`: a 404 or 410 is [`MirrorError::NotFound`], anything but 200 an error.
    async fn send(&self, url: &str) -> Result<reqwest::Response, MirrorError> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|source| http(url, source))?;
        match response.status() {
            StatusCode::OK => Ok(response),
            StatusCode::NOT_FOUND | StatusCode::GONE => Err(MirrorError::NotFound {
                object: url.to_owned(),
                mirror: self.describe(),
            }),
            status => Err(MirrorError::Status {
                method: "GET",
                url: url.to_owned(),
                status: status.as_u16(),
                detail: String::new(),
                retry_after: None,
            }),
        }
    }
}

impl MirrorRead for Remote {
    /// Reads a metadata file (`U/NAME`) whole, within `max_length`. Targets are not read through here
    /// but streamed to disk with [`Remote::download`].
    async fn get(&self, object: &ObjectPath, max_length: u64) -> Result<Response, MirrorError> {
        let ObjectPath::Metadata(name) = object else {
            return Err(MirrorError::Config(format!(
                "{object}: only metadata is read as a whole; targets are streamed"
            )));
        };
        let url = format!("{}/{name}", self.metadata_url);
        let mut response = self.send(&url).await?;
        let too_large = || MirrorError::TooLarge {
            object: url.clone(),
            limit: max_length,
        };
        if response.content_length().is_some_and(|n| n > max_length) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(piece) = response
            .chunk()
            .await
            .map_err(|source| http(&url, source))?
        {
            if (bytes.len() + piece.len()) as u64 > max_length {
                return Err(too_large());
            }
            bytes.extend_from_slice(&piece);
        }
        Response::from_bytes(object, Bytes::from(bytes), max_length)
    }

    fn describe(&self) -> String {
        self.metadata_url.clone()
    }
}

fn http(url: &str, source: reqwest::Error) -> MirrorError {
    MirrorError::Http {
        method: "GET",
        url: url.to_owned(),
        source,
    }
}

/// Percent-encodes one URL path segment: everything but RFC 3986's unreserved characters.
fn encode_segment(segment: &str) -> String {
    mast_protocol::tuf::quote_role_name(segment)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn names_targets_consistently_or_plainly_and_encodes_segments() {
        let remote = Remote::new(
            "http://127.0.0.1:1/m/",
            Some("http://127.0.0.1:1/t/"),
            mast_mirror::tls::http_client(None).unwrap(),
        )
        .unwrap();
        let d = Sha256Digest::of(b"x");
        let target = TargetFile {
            length: 1,
            hashes: [("sha256".to_owned(), d.to_hex())].into(),
            custom: None,
            extra: BTreeMap::new(),
        };
        let url = |name, naming| remote.target_url(name, &target, naming).unwrap().0;
        assert_eq!(
            url("apps/web.yaml", TargetNaming::Consistent),
            format!("http://127.0.0.1:1/t/apps/{d}.web.yaml")
        );
        assert_eq!(
            url("a b/c?#%.txt", TargetNaming::Plain),
            "http://127.0.0.1:1/t/a%20b/c%3F%23%25.txt"
        );
        assert!(
            Remote::new(
                "ftp://x/m",
                None,
                mast_mirror::tls::http_client(None).unwrap()
            )
            .is_err()
        );
    }
}
