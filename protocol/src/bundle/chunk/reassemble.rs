//! Checking downloaded chunks and putting the tar back together, without I/O.

use std::collections::HashMap;

use super::MAX_RAW_CHUNK_LENGTH;
use super::index::{ChunkIndex, ChunkRef};
use crate::bundle::error::BundleError;
use crate::digest::{Sha256Digest, Sha256Hasher};

/// Checks a downloaded chunk against its index entry and returns its raw (tar) bytes.
///
/// The compressed length and digest are checked first, so zstd only ever sees bytes the signed index vouches
/// for. Decompression then writes into one buffer of exactly `raw_length` bytes and fails rather than grow
/// it, so a frame that expands further (a zstd bomb) costs no more memory than an honest chunk. Last, the
/// output must hash to `raw_sha256`.
pub fn verify_chunk(entry: &ChunkRef, compressed: &[u8]) -> Result<Vec<u8>, BundleError> {
    verify_frame(entry, compressed)?;
    decompress_checked(entry, compressed)
}

/// Checks a downloaded chunk's compressed length and digest against its index entry: whether the bytes
/// are the signed blob, which is all a store of chunks needs. Nothing is decompressed; whoever builds
/// the tar from stored chunks checks what they decompress to ([`Reassembler::feed`]).
pub fn verify_frame(entry: &ChunkRef, compressed: &[u8]) -> Result<(), BundleError> {
    check_compressed(entry, compressed, Sha256Digest::of(compressed))
}

/// Rebuilds a tar from its chunks, fed in index order, and checks the result against the index.
///
/// The reassembler holds only a running digest: each call returns (or accepts) the chunk's raw bytes, and
/// the caller writes them wherever the tar is being rebuilt. Nothing rebuilt may be unpacked until
/// [`Reassembler::finish`] returns `Ok`.
#[derive(Debug)]
pub struct Reassembler<'a> {
    index: &'a ChunkIndex,
    next: usize,
    hasher: Sha256Hasher,
}

impl<'a> Reassembler<'a> {
    /// Starts rebuilding the tar `index` describes.
    pub fn new(index: &'a ChunkIndex) -> Self {
        Self {
            index,
            next: 0,
            hasher: Sha256Hasher::new(),
        }
    }

    /// The chunk expected next, or `None` once all have been fed.
    pub fn next_chunk(&self) -> Option<&'a ChunkRef> {
        self.index.chunks.get(self.next)
    }

    /// Verifies the next chunk in its compressed form (see [`verify_chunk`]) and returns its raw bytes.
    ///
    /// A chunk that belongs elsewhere in the index is reported as [`BundleError::ChunkOutOfOrder`]; any
    /// other wrong bytes as the length or digest mismatch they are.
    pub fn feed(&mut self, compressed: &[u8]) -> Result<Vec<u8>, BundleError> {
        let expected = self.expected()?;
        let digest = Sha256Digest::of(compressed);
        if digest != expected.sha256 && self.index.chunks.iter().any(|c| c.sha256 == digest) {
            return Err(self.out_of_order(digest));
        }
        check_compressed(expected, compressed, digest)?;
        let raw = decompress_checked(expected, compressed)?;
        self.accept(&raw);
        Ok(raw)
    }

    /// Accepts the next chunk's raw bytes, already held (say, from a previous release's tar), after checking
    /// their length and digest.
    pub fn push_raw(&mut self, raw: &[u8]) -> Result<(), BundleError> {
        let expected = self.expected()?;
        let actual = Sha256Digest::of(raw);
        if actual != expected.raw_sha256 {
            if let Some(other) = self.index.chunks.iter().find(|c| c.raw_sha256 == actual) {
                return Err(self.out_of_order(other.sha256));
            }
            if raw.len() as u64 != expected.raw_length {
                return Err(BundleError::RawLengthMismatch {
                    digest: expected.sha256,
                    expected: expected.raw_length,
                    actual: raw.len() as u64,
                });
            }
            return Err(BundleError::RawDigestMismatch {
                digest: expected.sha256,
                expected: expected.raw_sha256,
                actual,
            });
        }
        self.accept(raw);
        Ok(())
    }

    /// Checks that every chunk arrived and that together they are the tar the index names.
    pub fn finish(self) -> Result<(), BundleError> {
        // Each chunk matched its entry and the raw lengths add up to the tar's length, so only an index
        // whose tar digest disagrees with its own chunks can fail here; that is still the packager's word
        // against itself, and the signed tar digest wins.
        super::check_whole_tar(self.index, self.next, self.hasher)
    }

    fn expected(&self) -> Result<&'a ChunkRef, BundleError> {
        self.next_chunk().ok_or(BundleError::UnexpectedChunk {
            count: self.index.chunks.len(),
        })
    }

    fn out_of_order(&self, found: Sha256Digest) -> BundleError {
        BundleError::ChunkOutOfOrder {
            position: self.next,
            expected: self.index.chunks[self.next].sha256,
            found,
        }
    }

    fn accept(&mut self, raw: &[u8]) {
        self.hasher.update(raw);
        self.next += 1;
    }
}

/// Puts a tar together from verified chunks arriving in any order: each is written at every position
/// the index lists it, and [`TarAssembler::finish`] checks the whole against the index. The tar is held
/// in memory, as the apply needs it.
#[derive(Debug)]
pub struct TarAssembler<'a> {
    index: &'a ChunkIndex,
    /// Where each distinct chunk not yet placed goes in the tar.
    unplaced: HashMap<Sha256Digest, Vec<usize>>,
    distinct: usize,
    tar: Vec<u8>,
}

impl<'a> TarAssembler<'a> {
    /// Starts the tar `index` describes, with no chunk placed.
    pub fn new(index: &'a ChunkIndex) -> Result<Self, BundleError> {
        let too_large = || BundleError::TarTooLarge {
            length: index.tar_length,
            limit: usize::MAX as u64,
        };
        let mut unplaced: HashMap<Sha256Digest, Vec<usize>> = HashMap::new();
        let mut offset = 0usize;
        for chunk in &index.chunks {
            unplaced.entry(chunk.sha256).or_default().push(offset);
            offset += usize::try_from(chunk.raw_length).map_err(|_| too_large())?;
        }
        Ok(Self {
            index,
            distinct: unplaced.len(),
            unplaced,
            tar: vec![0; usize::try_from(index.tar_length).map_err(|_| too_large())?],
        })
    }

    /// Writes `raw`, the output of [`verify_chunk`] for `entry`, at each of the chunk's positions. A chunk
    /// placed before is ignored.
    pub fn place(&mut self, entry: &ChunkRef, raw: &[u8]) -> Result<(), BundleError> {
        if raw.len() as u64 != entry.raw_length {
            return Err(BundleError::RawLengthMismatch {
                digest: entry.sha256,
                expected: entry.raw_length,
                actual: raw.len() as u64,
            });
        }
        for at in self.unplaced.remove(&entry.sha256).unwrap_or_default() {
            self.tar[at..at + raw.len()].copy_from_slice(raw);
        }
        Ok(())
    }

    /// Whether every chunk has been placed.
    pub fn is_complete(&self) -> bool {
        self.unplaced.is_empty()
    }

    /// The tar, once every chunk is placed and the whole is the one the index names.
    pub fn finish(self) -> Result<Vec<u8>, BundleError> {
        if !self.is_complete() {
            return Err(BundleError::Incomplete {
                received: self.distinct - self.unplaced.len(),
                expected: self.distinct,
            });
        }
        let mut hasher = Sha256Hasher::new();
        hasher.update(&self.tar);
        super::check_whole_tar(self.index, self.index.chunks.len(), hasher)?;
        Ok(self.tar)
    }
}

fn check_compressed(
    entry: &ChunkRef,
    compressed: &[u8],
    digest: Sha256Digest,
) -> Result<(), BundleError> {
    if compressed.len() as u64 != entry.length {
        return Err(BundleError::ChunkLengthMismatch {
            digest: entry.sha256,
            expected: entry.length,
            actual: compressed.len() as u64,
        });
    }
    if digest != entry.sha256 {
        return Err(BundleError::ChunkDigestMismatch {
            expected: entry.sha256,
            actual: digest,
        });
    }
    Ok(())
}

/// Decompresses bytes already matched against `entry`, within `entry.raw_length`, and checks the output.
fn decompress_checked(entry: &ChunkRef, compressed: &[u8]) -> Result<Vec<u8>, BundleError> {
    // An index guarantees raw_length <= MAX_RAW_CHUNK_LENGTH; the min() keeps the allocation bounded even
    // if that guarantee were ever broken.
    let limit = entry.raw_length.min(MAX_RAW_CHUNK_LENGTH.into());
    if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(compressed)
        && declared > limit
    {
        return Err(BundleError::ChunkTooLarge {
            digest: entry.sha256,
            declared,
            limit,
        });
    }
    // `limit` is at most 4 MiB, so the cast is lossless.
    let raw = zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress(compressed, limit as usize))
        .map_err(|source| BundleError::Decompress {
            digest: entry.sha256,
            limit,
            source,
        })?;
    if raw.len() as u64 != entry.raw_length {
        return Err(BundleError::RawLengthMismatch {
            digest: entry.sha256,
            expected: entry.raw_length,
            actual: raw.len() as u64,
        });
    }
    let actual = Sha256Digest::of(&raw);
    if actual != entry.raw_sha256 {
        return Err(BundleError::RawDigestMismatch {
            digest: entry.sha256,
            expected: entry.raw_sha256,
            actual,
        });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{ChunkParams, IndexLimits};

    fn sample() -> (ChunkIndex, Vec<super::super::Chunk>, Vec<u8>) {
        let params = ChunkParams::new(1024, 4096, 16384).unwrap();
        let data = super::super::noise(60_000, 4);
        let (index, blobs) = ChunkIndex::build(&data, &params).unwrap();
        (index, blobs, data)
    }

    fn blob<'b>(blobs: &'b [super::super::Chunk], c: &ChunkRef) -> &'b [u8] {
        &blobs.iter().find(|b| b.digest == c.sha256()).unwrap().bytes
    }

    #[test]
    fn the_assembler_places_chunks_in_any_order_and_checks_the_whole() {
        let params = ChunkParams::new(1024, 4096, 16384).unwrap();
        let mut data = vec![b'y'; 16384 * 3];
        data.extend(super::super::noise(60_000, 6));
        let (index, blobs) = ChunkIndex::build(&data, &params).unwrap();
        let distinct: Vec<&ChunkRef> = index.missing(|_| false).collect();
        assert!(distinct.len() < index.chunks().len(), "a repeated chunk");
        let mut tar = TarAssembler::new(&index).unwrap();
        for entry in distinct.iter().rev() {
            assert!(!tar.is_complete());
            let raw = verify_chunk(entry, blob(&blobs, entry)).unwrap();
            tar.place(entry, &raw).unwrap();
            tar.place(entry, &raw).unwrap();
        }
        assert!(tar.is_complete());
        assert_eq!(tar.finish().unwrap(), data);

        let mut partial = TarAssembler::new(&index).unwrap();
        let first = distinct[0];
        partial
            .place(first, &verify_chunk(first, blob(&blobs, first)).unwrap())
            .unwrap();
        let err = partial.finish().unwrap_err();
        assert!(
            matches!(err, BundleError::Incomplete { received: 1, expected } if expected == distinct.len()),
            "{err}"
        );
        let err = TarAssembler::new(&index)
            .unwrap()
            .place(first, b"short")
            .unwrap_err();
        assert!(
            matches!(err, BundleError::RawLengthMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn feeding_every_chunk_rebuilds_the_tar() {
        let (index, blobs, data) = sample();
        let mut r = Reassembler::new(&index);
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk() {
            out.extend(r.feed(blob(&blobs, c)).unwrap());
        }
        r.finish().unwrap();
        assert_eq!(out, data);
        let err = Reassembler::new(&index).finish().unwrap_err();
        assert!(
            matches!(err, BundleError::Incomplete { received: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn wrong_chunks_are_named() {
        let (index, blobs, data) = sample();
        let chunks = index.chunks();
        let mut r = Reassembler::new(&index);
        let err = r.feed(blob(&blobs, &chunks[1])).unwrap_err();
        assert!(
            matches!(err, BundleError::ChunkOutOfOrder { position: 0, expected, found } if expected == chunks[0].sha256() && found == chunks[1].sha256()),
            "{err}"
        );
        let first = blob(&blobs, &chunks[0]);
        let err = r.feed(&first[1..]).unwrap_err();
        assert!(
            matches!(err, BundleError::ChunkLengthMismatch { .. }),
            "{err}"
        );
        let mut flipped = first.to_vec();
        flipped[5] ^= 1;
        let err = r.feed(&flipped).unwrap_err();
        assert!(
            matches!(err, BundleError::ChunkDigestMismatch { .. }),
            "{err}"
        );
        // Raw form: the second chunk's bytes at position 0.
        let second_raw =
            &data[chunks[0].raw_length() as usize..][..chunks[1].raw_length() as usize];
        let err = r.push_raw(second_raw).unwrap_err();
        assert!(
            matches!(err, BundleError::ChunkOutOfOrder { position: 0, .. }),
            "{err}"
        );
        let err = r.push_raw(&data[..10]).unwrap_err();
        assert!(
            matches!(err, BundleError::RawLengthMismatch { .. }),
            "{err}"
        );
        // Nothing wrong was counted: the right chunks still complete it.
        let mut offset = 0;
        while let Some(c) = r.next_chunk() {
            let n = c.raw_length() as usize;
            r.push_raw(&data[offset..offset + n]).unwrap();
            offset += n;
        }
        let err = r.push_raw(b"more").unwrap_err();
        assert!(matches!(err, BundleError::UnexpectedChunk { .. }), "{err}");
        r.finish().unwrap();
    }

    #[test]
    fn a_chunk_that_decompresses_wrong_is_refused() {
        // An index entry that vouches for a valid zstd frame whose content is not the raw digest it lists.
        let frame = zstd::bulk::compress(b"hello world", 3).unwrap();
        let digest = Sha256Digest::of(&frame);
        let doc = format!(
            r#"{{"chunker":{{"algorithm":"fastcdc-2020","avg":4096,"max":16384,"min":1024}},"chunks":[{{"length":{},"raw_length":11,"raw_sha256":"{}","sha256":"{digest}"}}],"compression":"zstd","media_type":"application/vnd.mast.chunk-index.v2+json","pack":{{"length":{},"sha256":"{digest}"}},"tar":{{"length":11,"sha256":"{}"}}}}"#,
            frame.len(),
            Sha256Digest::of(b"hello there"),
            frame.len(),
            Sha256Digest::of(b"hello world"),
        );
        let index = ChunkIndex::from_slice(doc.as_bytes(), &IndexLimits::default()).unwrap();
        let err = verify_chunk(&index.chunks()[0], &frame).unwrap_err();
        assert!(
            matches!(err, BundleError::RawDigestMismatch { .. }),
            "{err}"
        );
        let err = verify_chunk(&index.chunks()[0], b"not zstd").unwrap_err();
        assert!(
            matches!(err, BundleError::ChunkLengthMismatch { .. }),
            "{err}"
        );
    }
}
