//! Fetching from mirrors into the site: objects whose length and sha256 a signature vouches for, read so
//! that a cut link, a crash or a week offline costs only the bytes not yet made durable.
//!
//! - [`Downloader::download`]: a large object (a `bundle.tar.gz`, a chunk index) into a file, resumed
//!   with `Range`/`If-Range` from the offset recorded in [`crate::state`], verified over the whole file
//!   before it is renamed into place.
//! - [`Downloader::fetch_chunk`]: a small object (a zstd chunk) read whole, verified, and stored in the
//!   state database.
//!
//! Which mirror to try next, and when, is the caller's: every error here names the object and the
//! mirror, and says whether progress was kept ([`DownloadError::Mirror`], [`DownloadError::Truncated`])
//! or the bytes were discarded as not the signed ones ([`DownloadError::Mismatch`]).

mod download;

pub use download::{ChunkFetch, DownloadError, Downloaded, Downloader, SignedObject};
