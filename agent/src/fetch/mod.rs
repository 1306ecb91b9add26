//! Fetching from mirrors into the site: objects whose length and sha256 a signature vouches for, read so
//! that a cut link, a crash or a week offline costs only the bytes not yet made durable.
//!
//! - [`Downloader::download`]: a large object (a `bundle.tar.gz`, a chunk index) into a file, resumed
//!   with `Range`/`If-Range` from the offset recorded in [`crate::state`], verified over the whole file
//!   before it is renamed into place.
//! - [`fetch_chunk`]: a small object (a zstd chunk) read whole and verified against its signed index
//!   entry; the sync pass fetches many at once and stores them in batched transactions.
//! - [`fill_from_pack`]: many chunks in one request, from the release's chunk pack (a first install, or
//!   one resumed), each frame verified against its index entry as it streams.
//!
//! Which mirror to try next, and when, is the caller's: every error here names the object and the
//! mirror, and says whether progress was kept ([`DownloadError::Mirror`], [`DownloadError::Truncated`])
//! or the bytes were discarded as not the signed ones ([`DownloadError::Mismatch`],
//! [`ObjectError::Refused`]). `docs/fetching.md` has the protocol and what real servers answer.

mod chunk;
mod download;
mod object;
mod pack;

use std::path::PathBuf;

use mast_mirror::{MirrorError, ObjectPath};
use mast_protocol::digest::Sha256Digest;

pub use chunk::fetch_chunk;
pub use download::{Downloaded, Downloader};
pub use object::ObjectError;
pub use pack::{PackFill, PackFillError, fill_from_pack};

use crate::state::StateError;

/// An object and what its signature says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedObject {
    /// Where it is on a mirror.
    pub object: ObjectPath,
    /// The signed sha256 of the whole object.
    pub sha256: Sha256Digest,
    /// The signed length of the whole object.
    pub length: u64,
}

/// Why a download did not produce a verified object. Every variant names the object; those that
/// involve the mirror name it too.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The mirror could not be read: unreachable, missing the object, an unexpected answer, or the link
    /// cut mid-body. The bytes received up to then are durable and recorded, for a resume.
    #[error("{object} from {mirror}: {source}")]
    Mirror {
        /// The object's path on the mirror.
        object: String,
        /// The mirror.
        mirror: String,
        /// What the mirror transport said.
        #[source]
        source: MirrorError,
    },
    /// The body ended cleanly before the signed length. The bytes received are recorded, for a resume.
    #[error(
        "{object} from {mirror}: the body ended at byte {received} of {length}; kept for a resume"
    )]
    Truncated {
        /// The object.
        object: String,
        /// The mirror.
        mirror: String,
        /// Bytes held, counting any resumed prefix.
        received: u64,
        /// The signed length.
        length: u64,
    },
    /// The bytes are not the signed ones: another digest, more bytes than signed, or a mirror that
    /// announces another length. The partial file and its record are gone; try another mirror.
    #[error("{object} from {mirror}: {reason}; the partial download was discarded")]
    Mismatch {
        /// The object.
        object: String,
        /// The mirror.
        mirror: String,
        /// What differed.
        reason: String,
    },
    /// Local file I/O failed (a full disk, a read-only directory).
    #[error("{object}: {path}: {source}")]
    Io {
        /// The object.
        object: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The state database could not record or forget the download.
    #[error("{object}: recording the download: {source}")]
    State {
        /// The object.
        object: String,
        /// What the database said.
        #[source]
        source: StateError,
    },
}

impl DownloadError {
    /// Whether the mirror served bytes that are not the signed ones (and they were discarded): a mirror
    /// to skip, not a link to retry.
    pub fn is_mismatch(&self) -> bool {
        matches!(self, Self::Mismatch { .. })
    }
}
