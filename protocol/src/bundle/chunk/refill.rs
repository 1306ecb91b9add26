//! Recreating a release's chunks from its tar as the tar streams in, without I/O: a site with none of a
//! release's chunks can fill its store from one `bundle.tar.gz` instead of one request per chunk.

use std::collections::HashSet;

use super::index::{ChunkIndex, ChunkRef};
use super::{Chunk, ChunkCompressor};
use crate::bundle::error::BundleError;
use crate::digest::{Sha256Digest, Sha256Hasher};

/// Cuts a tar, fed in pieces, at the signed index's chunk boundaries and compresses each chunk again.
///
/// A chunk is handed out as [`Refilled::Verified`] only when its new zstd frame hashes to the name the
/// signed index gives it — then it is byte for byte the blob a mirror would serve, whatever the tar came
/// from. A frame that differs although the raw bytes match the signed raw digest (another zstd version
/// compressing differently) is [`Refilled::Recompressed`]: fetch that chunk itself. Raw bytes that match
/// neither are an error: the tar is not the signed one. Nothing is trusted until it passed one of those
/// checks, and [`ChunkRefill::finish`] checks the whole tar against the index too.
#[derive(Debug)]
pub struct ChunkRefill<'a> {
    index: &'a ChunkIndex,
    next: usize,
    pending: Vec<u8>,
    compressor: ChunkCompressor,
    hasher: Sha256Hasher,
    seen: HashSet<Sha256Digest>,
}

/// A chunk recreated from the tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refilled {
    /// Compressed again to exactly the signed blob: ready to store under its name.
    Verified(Chunk),
    /// Its raw bytes are the signed ones, but this zstd writes another frame for them: fetch the blob.
    Recompressed(ChunkRef),
}

impl<'a> ChunkRefill<'a> {
    /// Starts cutting the tar `index` describes.
    pub fn new(index: &'a ChunkIndex) -> Result<Self, BundleError> {
        Ok(Self {
            index,
            next: 0,
            pending: Vec::new(),
            compressor: ChunkCompressor::new()?,
            hasher: Sha256Hasher::new(),
            seen: HashSet::new(),
        })
    }

    /// Feeds the next bytes of the tar and appends each chunk completed by them to `out` (a chunk listed
    /// several times is handed out once). Fails on bytes past the signed tar length and on a chunk whose
    /// raw bytes are not the signed ones.
    pub fn push(&mut self, tar: &[u8], out: &mut Vec<Refilled>) -> Result<(), BundleError> {
        let fed = self.hasher.len() + tar.len() as u64;
        if fed > self.index.tar_length {
            return Err(BundleError::TarTooLong {
                expected_length: self.index.tar_length,
            });
        }
        self.hasher.update(tar);
        self.pending.extend_from_slice(tar);
        let mut used = 0;
        while let Some(entry) = self.index.chunks.get(self.next) {
            // Raw lengths are at most MAX_RAW_CHUNK_LENGTH (4 MiB): they fit any usize.
            let length = usize::try_from(entry.raw_length).unwrap_or(usize::MAX);
            if self.pending.len() - used < length {
                break;
            }
            let raw = &self.pending[used..used + length];
            used += length;
            self.next += 1;
            if !self.seen.insert(entry.sha256) {
                continue;
            }
            let bytes = self.compressor.compress(raw)?;
            let digest = Sha256Digest::of(&bytes);
            if digest == entry.sha256 {
                out.push(Refilled::Verified(Chunk { digest, bytes }));
                continue;
            }
            let actual = Sha256Digest::of(raw);
            if actual != entry.raw_sha256 {
                return Err(BundleError::RawDigestMismatch {
                    digest: entry.sha256,
                    expected: entry.raw_sha256,
                    actual,
                });
            }
            out.push(Refilled::Recompressed(entry.clone()));
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Checks that the whole tar arrived and is the one the index names.
    pub fn finish(self) -> Result<(), BundleError> {
        super::check_whole_tar(self.index, self.next, self.hasher)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ChunkParams, noise};
    use super::*;

    fn refill(index: &ChunkIndex, tar: &[u8], piece: usize) -> Result<Vec<Refilled>, BundleError> {
        let mut refill = ChunkRefill::new(index)?;
        let mut out = Vec::new();
        for part in tar.chunks(piece) {
            refill.push(part, &mut out)?;
        }
        refill.finish()?;
        Ok(out)
    }

    #[test]
    fn recreates_every_distinct_chunk_byte_for_byte_in_any_piece_size() {
        let mut tar = noise(300_000, 9);
        // A repeated stretch, so that one chunk is listed twice.
        let again = tar[..100_000].to_vec();
        tar.extend_from_slice(&again);
        let (index, blobs) = ChunkIndex::build(&tar, &ChunkParams::default()).unwrap();
        for piece in [1_000, 65_536, tar.len()] {
            let out = refill(&index, &tar, piece).unwrap();
            let chunks: Vec<Chunk> = out
                .into_iter()
                .map(|r| match r {
                    Refilled::Verified(chunk) => chunk,
                    Refilled::Recompressed(entry) => panic!("{entry:?}"),
                })
                .collect();
            assert_eq!(chunks, blobs, "pieces of {piece}");
        }
    }

    #[test]
    fn refuses_a_tar_that_is_not_the_signed_one() {
        let tar = noise(200_000, 5);
        let (index, _) = ChunkIndex::build(&tar, &ChunkParams::default()).unwrap();
        let mut changed = tar.clone();
        changed[150_000] ^= 1;
        assert!(matches!(
            refill(&index, &changed, 4096),
            Err(BundleError::RawDigestMismatch { .. })
        ));
        let mut longer = tar.clone();
        longer.push(0);
        assert!(matches!(
            refill(&index, &longer, 4096),
            Err(BundleError::TarTooLong { .. })
        ));
        assert!(matches!(
            refill(&index, &tar[..tar.len() - 1], 4096),
            Err(BundleError::Incomplete { .. })
        ));
    }
}
