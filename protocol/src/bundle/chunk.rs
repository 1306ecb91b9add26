//! Cutting the canonical tar into content-defined, separately compressed chunks.
//!
//! [`ChunkIndex::build`] is the packager's side; [`ChunkIndex::from_slice`], [`ChunkIndex::missing`],
//! [`verify_chunk`] and [`Reassembler`] are the agent's. The index lists every chunk in tar order with both
//! digests, so the agent knows what to fetch (compressed digest = blob name), how much to accept (compressed
//! length), how much zstd may produce (raw length) and what it must produce (raw digest).

mod index;
mod pack;
mod reassemble;

use std::collections::HashMap;

use fastcdc::v2020::{
    AVERAGE_MAX, AVERAGE_MIN, FastCDC, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN, Normalization,
};

use super::error::BundleError;
use crate::digest::{Sha256Digest, Sha256Hasher};

pub use self::index::{ChunkIndex, ChunkRef, IndexLimits, PackRef};
pub use self::pack::PackReader;
pub use self::reassemble::{Reassembler, TarAssembler, verify_chunk, verify_frame};

/// The largest raw chunk any index may describe, whatever its chunker parameters say: 4 MiB.
///
/// It bounds the one allocation a chunk's decompression makes, so it is a constant of the format rather
/// than a setting.
pub const MAX_RAW_CHUNK_LENGTH: u32 = 4 << 20;

/// zstd level 3: zstd's default, several times faster than `gzip -6` and about as good on YAML, which keeps
/// packing a large bundle within the time of `tar czf`.
const ZSTD_LEVEL: i32 = 3;

/// FastCDC (2020) chunk size bounds, in bytes. The default is 16 KiB / 64 KiB / 256 KiB.
///
/// The chunker also uses normalisation level 1 and the standard gear table (seed 0); those are fixed parts
/// of the `fastcdc-2020` algorithm name in the index, not parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    min: u32,
    avg: u32,
    max: u32,
}

/// One compressed chunk, ready to be stored under its digest.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The sha256 of `bytes`: the chunk's blob name.
    pub digest: Sha256Digest,
    /// The zstd frame.
    pub bytes: Vec<u8>,
}

impl ChunkParams {
    /// Checks the bounds against what FastCDC accepts and against [`MAX_RAW_CHUNK_LENGTH`].
    pub fn new(min: u32, avg: u32, max: u32) -> Result<Self, BundleError> {
        let fail = |reason| {
            Err(BundleError::InvalidChunkParams {
                min: min.into(),
                avg: avg.into(),
                max: max.into(),
                reason,
            })
        };
        // FastCDC only debug-asserts these; in a release build, values outside them give nonsense cuts.
        let in_range = |v: u32, lo: usize, hi: usize| (lo..=hi).contains(&(v as usize));
        if !in_range(min, MINIMUM_MIN, MINIMUM_MAX) {
            return fail("min must be between 64 bytes and 1 MiB");
        }
        if !in_range(avg, AVERAGE_MIN, AVERAGE_MAX) {
            return fail("avg must be between 256 bytes and 4 MiB");
        }
        if !in_range(max, MAXIMUM_MIN, MAX_RAW_CHUNK_LENGTH as usize) {
            return fail("max must be between 1 KiB and 4 MiB");
        }
        if ![min, avg, max].iter().all(|v| v.is_multiple_of(2)) {
            return fail("sizes must be even");
        }
        if !(min <= avg && avg <= max) {
            return fail("sizes must satisfy min <= avg <= max");
        }
        Ok(Self { min, avg, max })
    }

    /// Smallest chunk (except the last of a tar).
    pub fn min(&self) -> u32 {
        self.min
    }

    /// Target average chunk size.
    pub fn avg(&self) -> u32 {
        self.avg
    }

    /// Largest chunk.
    pub fn max(&self) -> u32 {
        self.max
    }
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        }
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("digest", &self.digest)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// zstd with the settings every chunk is compressed with. The same raw bytes give the same frame, and so
/// the same chunk name, as long as zstd's level-3 output does not change between versions. Agents never
/// compress: they store the packager's frames, read as chunks or from the chunk pack.
struct ChunkCompressor(zstd::bulk::Compressor<'static>);

impl ChunkCompressor {
    /// A compressor at level 3 with the frame header pinned.
    fn new() -> Result<Self, BundleError> {
        let mut compressor =
            zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(BundleError::Compress)?;
        // Pin what the frame header carries, so a change of zstd's defaults cannot rename every chunk: the
        // content size lets a client refuse an oversized frame before decompressing; a checksum would only
        // repeat the sha256.
        for parameter in [
            zstd::zstd_safe::CParameter::ContentSizeFlag(true),
            zstd::zstd_safe::CParameter::ChecksumFlag(false),
            zstd::zstd_safe::CParameter::DictIdFlag(false),
        ] {
            compressor
                .set_parameter(parameter)
                .map_err(BundleError::Compress)?;
        }
        Ok(Self(compressor))
    }

    /// One chunk's zstd frame.
    fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>, BundleError> {
        self.0.compress(raw).map_err(BundleError::Compress)
    }
}

impl std::fmt::Debug for ChunkCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCompressor")
            .field("level", &ZSTD_LEVEL)
            .finish()
    }
}

impl ChunkIndex {
    /// Cuts `tar` into chunks, compresses each, and returns the index with the distinct compressed chunks.
    ///
    /// A chunk that occurs several times in the tar is listed at each position in the index but returned
    /// once, so the caller stores each blob once.
    pub fn build(
        tar: &[u8],
        params: &ChunkParams,
    ) -> Result<(ChunkIndex, Vec<Chunk>), BundleError> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        Self::build_on(tar, params, threads)
    }

    /// [`build`](Self::build) on `threads` threads. Cutting is sequential (each cut depends on the last);
    /// hashing and compressing the chunks run on all threads. Each chunk's bytes depend on its raw bytes
    /// alone, so the index and the blobs are the same for any thread count.
    pub fn build_on(
        tar: &[u8],
        params: &ChunkParams,
        threads: usize,
    ) -> Result<(ChunkIndex, Vec<Chunk>), BundleError> {
        let cuts: Vec<&[u8]> = FastCDC::with_level(
            tar,
            params.min as usize,
            params.avg as usize,
            params.max as usize,
            Normalization::Level1,
        )
        .map(|cut| &tar[cut.offset..cut.offset + cut.length])
        .collect();
        let raw_digests = par_map(
            &cuts,
            threads,
            |_| Ok(()),
            |(), raw| Ok(Sha256Digest::of(raw)),
        )?;
        // A chunk that repeats is compressed once and listed at each of its positions.
        let mut first_of: HashMap<Sha256Digest, usize> = HashMap::new();
        let mut distinct = Vec::new();
        let positions: Vec<usize> = raw_digests
            .iter()
            .enumerate()
            .map(|(i, digest)| {
                *first_of.entry(*digest).or_insert_with(|| {
                    distinct.push(i);
                    distinct.len() - 1
                })
            })
            .collect();
        let blobs = par_map(
            &distinct,
            threads,
            |_| ChunkCompressor::new(),
            |compressor, &i| {
                let bytes = compressor.compress(cuts[i])?;
                Ok(Chunk {
                    digest: Sha256Digest::of(&bytes),
                    bytes,
                })
            },
        )?;
        let refs = cuts
            .iter()
            .zip(&raw_digests)
            .zip(&positions)
            .map(|((raw, raw_sha256), &blob)| ChunkRef {
                sha256: blobs[blob].digest,
                length: blobs[blob].bytes.len() as u64,
                raw_sha256: *raw_sha256,
                raw_length: raw.len() as u64,
            })
            .collect();
        let mut pack = Sha256Hasher::new();
        for blob in &blobs {
            pack.update(&blob.bytes);
        }
        let index = ChunkIndex {
            tar_length: tar.len() as u64,
            tar_sha256: Sha256Digest::of(tar),
            params: *params,
            chunks: refs,
            pack: PackRef {
                length: pack.len(),
                sha256: pack.finish(),
            },
        };
        Ok((index, blobs))
    }
}

/// `work` over `items` on up to `threads` threads, each with its own state from `init`; results in item
/// order. Items are dealt round-robin, which balances chunks of similar size.
fn par_map<T: Sync, S, R: Send>(
    items: &[T],
    threads: usize,
    init: impl Fn(usize) -> Result<S, BundleError> + Sync,
    work: impl Fn(&mut S, &T) -> Result<R, BundleError> + Sync,
) -> Result<Vec<R>, BundleError> {
    let threads = threads.clamp(1, items.len().max(1));
    let run = |worker: usize| -> Result<Vec<(usize, R)>, BundleError> {
        let mut state = init(worker)?;
        (worker..items.len())
            .step_by(threads)
            .map(|i| work(&mut state, &items[i]).map(|r| (i, r)))
            .collect()
    };
    let mut done: Vec<(usize, R)> = if threads == 1 {
        run(0)?
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads).map(|w| scope.spawn(move || run(w))).collect();
            let mut all = Vec::with_capacity(items.len());
            for worker in workers {
                match worker.join() {
                    Ok(results) => all.extend(results?),
                    // A worker only panics on a bug; carry the panic to the caller.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok::<_, BundleError>(all)
        })?
    };
    done.sort_unstable_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, r)| r).collect())
}

/// The end of a tar put together from chunks (reassembled or assembled): all `received` of the
/// index's chunks arrived and the bytes hashed in `hasher` are the tar the index names.
fn check_whole_tar(
    index: &ChunkIndex,
    received: usize,
    hasher: crate::digest::Sha256Hasher,
) -> Result<(), BundleError> {
    let expected = index.chunks.len();
    if received < expected {
        return Err(BundleError::Incomplete { received, expected });
    }
    let actual_length = hasher.len();
    let actual = hasher.finish();
    if actual != index.tar_sha256 || actual_length != index.tar_length {
        return Err(BundleError::TarMismatch {
            expected: index.tar_sha256,
            expected_length: index.tar_length,
            actual,
            actual_length,
        });
    }
    Ok(())
}

/// Deterministic incompressible bytes for tests (xorshift64).
#[cfg(test)]
pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked() {
        assert!(ChunkParams::new(16 << 10, 64 << 10, 256 << 10).is_ok());
        assert_eq!(
            ChunkParams::new(16 << 10, 64 << 10, 256 << 10).unwrap(),
            ChunkParams::default()
        );
        for (min, avg, max) in [
            (32, 256, 1024),
            (64, 128, 1024),
            (64, 256, 512),
            (64, 256, MAX_RAW_CHUNK_LENGTH + 2),
            (65, 256, 1024),
            (4096, 1024, 8192),
            (64, 8192, 4096),
        ] {
            let err = ChunkParams::new(min, avg, max).unwrap_err();
            assert!(
                matches!(err, BundleError::InvalidChunkParams { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn cuts_cover_the_tar_and_respect_bounds() {
        let params = ChunkParams::new(1024, 4096, 16384).unwrap();
        let data = noise(200_000, 1);
        let (index, blobs) = ChunkIndex::build(&data, &params).unwrap();
        let chunks = index.chunks();
        assert!(chunks.len() > 10, "{}", chunks.len());
        assert_eq!(
            chunks.iter().map(ChunkRef::raw_length).sum::<u64>(),
            data.len() as u64
        );
        let (last, rest) = chunks.split_last().unwrap();
        assert!(
            rest.iter()
                .all(|c| (1024..=16384).contains(&c.raw_length()))
        );
        assert!(last.raw_length() <= 16384);
        assert_eq!(blobs.len(), chunks.len(), "random data has no repeats");
        for (blob, chunk) in blobs.iter().zip(chunks) {
            assert_eq!(blob.digest, Sha256Digest::of(&blob.bytes));
            assert_eq!(blob.digest, chunk.sha256());
        }
    }

    #[test]
    fn repeated_content_is_one_blob_listed_many_times() {
        // Max-size cuts of a constant run are all the same bytes.
        let params = ChunkParams::new(1024, 4096, 8192).unwrap();
        let data = vec![b'x'; 8192 * 10];
        let (index, blobs) = ChunkIndex::build(&data, &params).unwrap();
        assert_eq!(index.chunks().len(), 10);
        assert_eq!(blobs.len(), 1);
        assert!(index.chunks().iter().all(|c| c.sha256() == blobs[0].digest));
    }

    #[test]
    fn any_thread_count_builds_the_same_index_and_blobs() {
        let params = ChunkParams::new(1024, 4096, 16384).unwrap();
        let mut data = noise(150_000, 7);
        data.extend_from_within(..40_000);
        let one = ChunkIndex::build_on(&data, &params, 1).unwrap();
        for threads in [2, 5] {
            let many = ChunkIndex::build_on(&data, &params, threads).unwrap();
            assert_eq!(many.0.to_bytes(), one.0.to_bytes(), "{threads} threads");
            assert_eq!(many.1, one.1, "{threads} threads");
        }
        assert!(
            one.1.len() < one.0.chunks().len(),
            "the repeat is stored once"
        );
    }

    #[test]
    fn empty_tar_has_no_chunks() {
        let (index, blobs) = ChunkIndex::build(&[], &ChunkParams::default()).unwrap();
        assert!(index.chunks().is_empty() && blobs.is_empty());
        assert_eq!(index.tar_length(), 0);
    }
}
