//! Chunks: small objects read whole, verified, and stored in the state database.

use std::sync::atomic::{AtomicU64, Ordering};

use mast_mirror::client::{ClientError, fetch_verified};
use mast_mirror::{MirrorRead, ObjectPath};
use mast_protocol::digest::Sha256Digest;
use time::OffsetDateTime;

use super::download::Attempt;
use super::{DownloadError, Downloader};
use crate::state::State;

/// What [`Downloader::fetch_chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkFetch {
    /// The state database already held the chunk; nothing was read.
    Held,
    /// The chunk was read, matched its sha256 and is now stored.
    Stored {
        /// Bytes read from the mirror.
        fetched: u64,
    },
}

impl Downloader {
    /// Fetches the chunk `sha256` of `length` bytes from `mirror` unless `state` holds it, and stores it
    /// only once its sha256 matched. Chunks are small (256 KiB at most before compression), so they are
    /// read whole through [`fetch_verified`] and never resumed.
    pub async fn fetch_chunk<M: MirrorRead>(
        &self,
        state: &mut State,
        mirror: &M,
        sha256: &Sha256Digest,
        length: u64,
        now: OffsetDateTime,
    ) -> Result<ChunkFetch, DownloadError> {
        let object = ObjectPath::Chunk(*sha256);
        let partial = self.partial_path(sha256);
        let attempt = Attempt {
            object: object.as_path(),
            mirror: mirror.describe(),
            partial: &partial,
        };
        if state.has_chunk(sha256).map_err(attempt.state())? {
            return Ok(ChunkFetch::Held);
        }
        let capacity = usize::try_from(length).unwrap_or(0).min(1 << 20);
        let mut sink = CountingSink {
            bytes: Vec::with_capacity(capacity),
            counter: self.counter(),
        };
        match fetch_verified(mirror, &object, length, sha256, &mut sink).await {
            Ok(()) => {}
            Err(ClientError::Target { reason, .. }) => return Err(attempt.mismatch(reason)),
            Err(ClientError::Mirror(source)) => return Err(attempt.mirror(source)),
            Err(ClientError::Sink { source, .. }) => return Err(attempt.io(&partial)(source)),
            // fetch_verified neither runs the TUF workflow nor stores anything.
            Err(other @ (ClientError::Tuf(_) | ClientError::Store { .. })) => {
                return Err(attempt.mismatch(other.to_string()));
            }
        }
        state
            .put_chunk(sha256, &sink.bytes, now)
            .map_err(attempt.state())?;
        Ok(ChunkFetch::Stored {
            fetched: sink.bytes.len() as u64,
        })
    }
}

/// A `Vec` sink that counts into the downloader's total as bytes arrive, so a failed read is counted.
struct CountingSink<'a> {
    bytes: Vec<u8>,
    counter: &'a AtomicU64,
}

impl std::io::Write for CountingSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.counter.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
