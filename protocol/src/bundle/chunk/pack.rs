//! Reading a release's chunk pack as it streams in, without I/O: one request gives a site every chunk of
//! a release it does not hold yet, instead of one request per chunk.

use super::index::{ChunkIndex, ChunkRef};
use crate::bundle::error::BundleError;

/// Cuts a chunk pack (see [`super::PackRef`]), fed in pieces, into its zstd frames.
///
/// The reader only cuts, at the offsets the signed index implies; it vouches for nothing. Every frame it
/// hands out must pass [`super::verify_chunk`] against the entry it comes with before anyone stores or
/// decompresses it — so a mirror serving other bytes costs at most the pack's signed length and is caught
/// at the first frame it changed.
#[derive(Debug)]
pub struct PackReader<'a> {
    frames: Vec<(u64, &'a ChunkRef)>,
    next: usize,
    pending: Vec<u8>,
    length: u64,
}

impl<'a> PackReader<'a> {
    /// Reads the pack of `index` from byte `offset` on, which must be where one of its frames starts
    /// (0 for the whole pack; a later frame's offset for a range read that skips frames already held).
    pub fn starting_at(index: &'a ChunkIndex, offset: u64) -> Result<Self, BundleError> {
        let frames = index.pack_frames();
        let next = frames
            .iter()
            .position(|(at, _)| *at == offset)
            .or_else(|| (offset == index.pack().length()).then_some(frames.len()))
            .ok_or(BundleError::PackOffset {
                offset,
                length: index.pack().length(),
            })?;
        Ok(Self {
            frames,
            next,
            pending: Vec::new(),
            length: index.pack().length(),
        })
    }

    /// Where the next byte fed belongs in the pack.
    pub fn offset(&self) -> u64 {
        self.frames
            .get(self.next)
            .map_or(self.length, |(at, _)| at + self.pending.len() as u64)
    }

    /// Feeds the next bytes of the pack and appends each frame they complete, with its index entry, to
    /// `out`. Bytes past the pack's signed length are refused.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        out: &mut Vec<(&'a ChunkRef, Vec<u8>)>,
    ) -> Result<(), BundleError> {
        while !bytes.is_empty() {
            let Some((_, entry)) = self.frames.get(self.next) else {
                return Err(BundleError::PackTooLong {
                    length: self.length,
                });
            };
            // A chunk's length is at most zstd's bound for 4 MiB, so the cast is lossless.
            let need = entry.length as usize - self.pending.len();
            let (take, rest) = bytes.split_at(need.min(bytes.len()));
            bytes = rest;
            if take.len() < need {
                self.pending.extend_from_slice(take);
                continue;
            }
            let frame = if self.pending.is_empty() {
                take.to_vec()
            } else {
                let mut frame = std::mem::take(&mut self.pending);
                frame.extend_from_slice(take);
                frame
            };
            out.push((entry, frame));
            self.next += 1;
        }
        Ok(())
    }

    /// Checks that the pack ended where the index says it does.
    pub fn finish(&self) -> Result<(), BundleError> {
        let received = self.offset();
        if received < self.length {
            return Err(BundleError::PackShort {
                received,
                length: self.length,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::chunk::{ChunkParams, noise, verify_chunk};

    fn sample() -> (ChunkIndex, Vec<u8>, Vec<u8>) {
        let params = ChunkParams::new(1024, 4096, 16384).unwrap();
        // A repeated run makes one chunk appear twice in the index and once in the pack.
        let mut tar = vec![b'x'; 16384 * 3];
        tar.extend(noise(100_000, 5));
        let (index, blobs) = ChunkIndex::build(&tar, &params).unwrap();
        let pack: Vec<u8> = blobs.iter().flat_map(|b| b.bytes.clone()).collect();
        (index, pack, tar)
    }

    #[test]
    fn the_built_index_names_the_pack_of_its_distinct_frames() {
        let (index, pack, _) = sample();
        assert!(index.chunks().len() > index.pack_frames().len());
        assert_eq!(index.pack().length(), pack.len() as u64);
        assert_eq!(
            index.pack().sha256(),
            crate::digest::Sha256Digest::of(&pack)
        );
    }

    #[test]
    fn cuts_every_frame_whatever_the_pieces() {
        let (index, pack, _) = sample();
        for piece in [1, 7, 4096, pack.len()] {
            let mut reader = PackReader::starting_at(&index, 0).unwrap();
            let mut out = Vec::new();
            for bytes in pack.chunks(piece) {
                reader.push(bytes, &mut out).unwrap();
            }
            reader.finish().unwrap();
            let frames = index.pack_frames();
            assert_eq!(out.len(), frames.len(), "pieces of {piece}");
            for ((entry, frame), (_, expected)) in out.iter().zip(&frames) {
                assert_eq!(entry, expected);
                verify_chunk(entry, frame).unwrap();
            }
        }
    }

    #[test]
    fn starts_at_a_frame_and_nowhere_else() {
        let (index, pack, _) = sample();
        let frames = index.pack_frames();
        let (at, second) = frames[1];
        let mut reader = PackReader::starting_at(&index, at).unwrap();
        let mut out = Vec::new();
        reader.push(&pack[at as usize..], &mut out).unwrap();
        reader.finish().unwrap();
        assert_eq!(out.len(), frames.len() - 1);
        assert_eq!(out[0].0, second);
        let err = PackReader::starting_at(&index, at + 1).unwrap_err();
        assert!(matches!(err, BundleError::PackOffset { .. }), "{err}");
        let end = PackReader::starting_at(&index, pack.len() as u64).unwrap();
        end.finish().unwrap();
    }

    #[test]
    fn refuses_bytes_past_the_end_and_a_short_pack() {
        let (index, mut pack, _) = sample();
        let mut reader = PackReader::starting_at(&index, 0).unwrap();
        let mut out = Vec::new();
        reader.push(&pack[..pack.len() - 1], &mut out).unwrap();
        let err = reader.finish().unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("{} of its {} bytes", pack.len() - 1, pack.len())),
            "{err}"
        );
        pack.push(0);
        let mut reader = PackReader::starting_at(&index, 0).unwrap();
        let err = reader.push(&pack, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, BundleError::PackTooLong { .. }), "{err}");
    }

    #[test]
    fn a_changed_byte_fails_the_frame_it_is_in() {
        let (index, mut pack, _) = sample();
        let frames = index.pack_frames();
        let (at, target) = frames[2];
        pack[at as usize + 3] ^= 1;
        let mut reader = PackReader::starting_at(&index, 0).unwrap();
        let mut out = Vec::new();
        reader.push(&pack, &mut out).unwrap();
        let failed: Vec<_> = out
            .iter()
            .filter(|(entry, frame)| verify_chunk(entry, frame).is_err())
            .map(|(entry, _)| *entry)
            .collect();
        assert_eq!(failed, vec![target]);
    }
}
