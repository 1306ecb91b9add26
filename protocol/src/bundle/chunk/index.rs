//! The chunk index document: its schema, its canonical bytes, and the checks an untrusted copy must pass.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{ChunkParams, MAX_RAW_CHUNK_LENGTH};
use crate::bundle::error::BundleError;
use crate::canonical;
use crate::digest::Sha256Digest;

/// The index's media type, also used as its OCI artifact type.
const MEDIA_TYPE: &str = "application/vnd.mast.chunk-index.v2+json";
const ALGORITHM: &str = "fastcdc-2020";
const COMPRESSION: &str = "zstd";

/// The chunks of a bundle's canonical tar, in order, with the tar's own length and digest.
///
/// Only [`ChunkIndex::build`] and [`ChunkIndex::from_slice`] make one, so every `ChunkIndex` satisfies the
/// checks `from_slice` makes: chunk sizes within bounds, raw lengths adding up to the tar's length, and one
/// compressed digest never standing for two different raw chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    pub(super) tar_length: u64,
    pub(super) tar_sha256: Sha256Digest,
    pub(super) params: ChunkParams,
    pub(super) chunks: Vec<ChunkRef>,
    pub(super) pack: PackRef,
}

/// The release's chunk pack: its distinct chunks' zstd frames, concatenated in order of first appearance
/// in the index, as one blob. A site that holds none (or only the first few) of a release's chunks reads
/// them from the pack in one request instead of one request per chunk; each frame is still checked
/// against its own index entry. Its offsets follow from the index alone ([`ChunkIndex::pack_frames`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackRef {
    pub(super) sha256: Sha256Digest,
    pub(super) length: u64,
}

/// One chunk's entry in a [`ChunkIndex`]. Its offset in the tar is the sum of the raw lengths before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub(super) sha256: Sha256Digest,
    pub(super) length: u64,
    pub(super) raw_sha256: Sha256Digest,
    pub(super) raw_length: u64,
}

/// Caps on an untrusted chunk index, checked in [`ChunkIndex::from_slice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLimits {
    /// Longest index document, in bytes (checked before parsing).
    pub max_index_length: u64,
    /// Most chunks listed.
    pub max_chunks: usize,
    /// Longest tar described, in bytes.
    pub max_tar_length: u64,
}

impl Default for IndexLimits {
    /// A 2 GiB tar (twice the walker's default file total, to leave room for headers), at most 131 072
    /// chunks (2 GiB in 16 KiB chunks), and 32 MiB of JSON (about 200 bytes per chunk entry).
    fn default() -> Self {
        Self {
            max_index_length: 32 << 20,
            max_chunks: 131_072,
            max_tar_length: 2 << 30,
        }
    }
}

impl ChunkIndex {
    /// The media type of the index document.
    pub const MEDIA_TYPE: &'static str = MEDIA_TYPE;

    /// Parses and checks an index document from an untrusted source.
    ///
    /// The document must be strict JSON (no duplicate keys) with exactly the expected fields; its media
    /// type, chunker and compression must be the ones this version understands; and its numbers must be
    /// within `limits` and consistent with each other. Canonical form is not required: the document's
    /// authenticity comes from its signed digest, not from its spelling.
    pub fn from_slice(bytes: &[u8], limits: &IndexLimits) -> Result<ChunkIndex, BundleError> {
        if bytes.len() as u64 > limits.max_index_length {
            return Err(BundleError::IndexTooLarge {
                length: bytes.len() as u64,
                limit: limits.max_index_length,
            });
        }
        let value = canonical::parse_strict(bytes).map_err(BundleError::IndexJson)?;
        let wire: WireIndex = serde_json::from_value(value).map_err(BundleError::IndexSchema)?;
        Self::from_wire(wire, limits)
    }

    /// The index in canonical JSON, as published.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = WireIndex {
            media_type: MEDIA_TYPE.to_owned(),
            tar: WireTar {
                length: self.tar_length,
                sha256: self.tar_sha256,
            },
            chunker: WireChunker {
                algorithm: ALGORITHM.to_owned(),
                min: self.params.min().into(),
                avg: self.params.avg().into(),
                max: self.params.max().into(),
            },
            compression: COMPRESSION.to_owned(),
            chunks: self.chunks.iter().map(WireChunk::from).collect(),
            pack: WirePack {
                length: self.pack.length,
                sha256: self.pack.sha256,
            },
        };
        // Strings and integers only: canonical JSON refuses nothing but floats.
        canonical::encode(&wire).expect("a chunk index has no floats")
    }

    /// Length of the tar, in bytes.
    pub fn tar_length(&self) -> u64 {
        self.tar_length
    }

    /// sha256 of the tar.
    pub fn tar_sha256(&self) -> Sha256Digest {
        self.tar_sha256
    }

    /// The chunker bounds the tar was cut with.
    pub fn params(&self) -> ChunkParams {
        self.params
    }

    /// Every chunk, in tar order; a repeated chunk appears at each of its positions.
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// The chunk pack: its blob name and length.
    pub fn pack(&self) -> PackRef {
        self.pack
    }

    /// The distinct chunks in order of first appearance, each with the offset of its frame in the pack.
    pub fn pack_frames(&self) -> Vec<(u64, &ChunkRef)> {
        let mut offset = 0;
        self.missing(|_| false)
            .map(|c| {
                let at = offset;
                offset += c.length;
                (at, c)
            })
            .collect()
    }

    /// The distinct chunks for which `have` says no, in order of first appearance: what a client must
    /// fetch to rebuild the tar.
    pub fn missing<'a>(
        &'a self,
        have: impl Fn(&Sha256Digest) -> bool + 'a,
    ) -> impl Iterator<Item = &'a ChunkRef> + 'a {
        let mut listed = HashSet::new();
        self.chunks
            .iter()
            .filter(move |c| listed.insert(c.sha256) && !have(&c.sha256))
    }

    fn from_wire(wire: WireIndex, limits: &IndexLimits) -> Result<ChunkIndex, BundleError> {
        let invalid = |msg: String| Err(BundleError::InvalidIndex(msg));
        if wire.media_type != MEDIA_TYPE {
            return invalid(format!(
                "media type {:?} is not {MEDIA_TYPE:?}",
                wire.media_type
            ));
        }
        if wire.chunker.algorithm != ALGORITHM {
            return invalid(format!(
                "chunker {:?} is not {ALGORITHM:?}",
                wire.chunker.algorithm
            ));
        }
        if wire.compression != COMPRESSION {
            return invalid(format!(
                "compression {:?} is not {COMPRESSION:?}",
                wire.compression
            ));
        }
        let params = wire_params(&wire.chunker)?;
        if wire.chunks.len() > limits.max_chunks {
            return Err(BundleError::TooManyChunks {
                count: wire.chunks.len(),
                limit: limits.max_chunks,
            });
        }
        if wire.tar.length > limits.max_tar_length {
            return Err(BundleError::TarTooLarge {
                length: wire.tar.length,
                limit: limits.max_tar_length,
            });
        }
        let sum = check_chunks(&wire.chunks, &params)?;
        if sum != wire.tar.length {
            return invalid(format!(
                "raw lengths add up to {sum} but tar.length is {}",
                wire.tar.length
            ));
        }
        let index = ChunkIndex {
            tar_length: wire.tar.length,
            tar_sha256: wire.tar.sha256,
            params,
            chunks: wire.chunks.into_iter().map(ChunkRef::from).collect(),
            pack: PackRef {
                sha256: wire.pack.sha256,
                length: wire.pack.length,
            },
        };
        let frames: u64 = index.missing(|_| false).map(ChunkRef::length).sum();
        if frames != index.pack.length {
            return invalid(format!(
                "the distinct chunks add up to {frames} bytes but pack.length is {}",
                index.pack.length
            ));
        }
        Ok(index)
    }
}

impl PackRef {
    /// sha256 of the pack: its blob name on a mirror, next to the chunks.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// Length of the pack, in bytes: the sum of the distinct chunks' compressed lengths.
    pub fn length(&self) -> u64 {
        self.length
    }
}

impl ChunkRef {
    /// sha256 of the compressed chunk: its blob name on a mirror.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// Length of the compressed chunk, in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// sha256 of the chunk's tar bytes.
    pub fn raw_sha256(&self) -> Sha256Digest {
        self.raw_sha256
    }

    /// Length of the chunk's tar bytes; at most [`MAX_RAW_CHUNK_LENGTH`].
    pub fn raw_length(&self) -> u64 {
        self.raw_length
    }
}

// The wire form. Kept apart from the public types so that serde cannot build an unchecked `ChunkIndex`
// or `ChunkRef`: the only way in is `from_slice`.

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIndex {
    media_type: String,
    tar: WireTar,
    chunker: WireChunker,
    compression: String,
    chunks: Vec<WireChunk>,
    pack: WirePack,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePack {
    length: u64,
    sha256: Sha256Digest,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTar {
    length: u64,
    sha256: Sha256Digest,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireChunker {
    algorithm: String,
    min: u64,
    avg: u64,
    max: u64,
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct WireChunk {
    sha256: Sha256Digest,
    length: u64,
    raw_sha256: Sha256Digest,
    raw_length: u64,
}

impl From<&ChunkRef> for WireChunk {
    fn from(c: &ChunkRef) -> Self {
        Self {
            sha256: c.sha256,
            length: c.length,
            raw_sha256: c.raw_sha256,
            raw_length: c.raw_length,
        }
    }
}

impl From<WireChunk> for ChunkRef {
    fn from(c: WireChunk) -> Self {
        Self {
            sha256: c.sha256,
            length: c.length,
            raw_sha256: c.raw_sha256,
            raw_length: c.raw_length,
        }
    }
}

/// Checks each chunk entry's sizes and that one digest never stands for two chunks; returns the raw total.
fn check_chunks(chunks: &[WireChunk], params: &ChunkParams) -> Result<u64, BundleError> {
    let invalid = |msg: String| Err(BundleError::InvalidIndex(msg));
    let mut sum = 0u64;
    let mut by_digest: HashMap<Sha256Digest, &WireChunk> = HashMap::new();
    for (i, c) in chunks.iter().enumerate() {
        if !(1..=u64::from(params.max())).contains(&c.raw_length) {
            return invalid(format!(
                "chunk {i} ({}) has raw_length {}, outside 1..={}",
                c.sha256,
                c.raw_length,
                params.max()
            ));
        }
        // raw_length <= 4 MiB, so the cast is lossless and the bound cannot overflow.
        let bound = zstd::compress_bound(c.raw_length as usize) as u64;
        if !(1..=bound).contains(&c.length) {
            return invalid(format!(
                "chunk {i} ({}) has length {}, outside 1..={bound} for {} raw bytes",
                c.sha256, c.length, c.raw_length
            ));
        }
        if let Some(earlier) = by_digest.insert(c.sha256, c)
            && earlier != c
        {
            return invalid(format!(
                "chunk {} is listed twice with different sizes or content",
                c.sha256
            ));
        }
        // Bounded by max_chunks * 4 MiB in practice; saturating so that odd limits cannot wrap.
        sum = sum.saturating_add(c.raw_length);
    }
    Ok(sum)
}

fn wire_params(c: &WireChunker) -> Result<ChunkParams, BundleError> {
    let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    ChunkParams::new(narrow(c.min), narrow(c.avg), narrow(c.max)).map_err(|_| {
        BundleError::InvalidIndex(format!(
            "chunker bounds min={} avg={} max={} are not accepted (max at most {MAX_RAW_CHUNK_LENGTH})",
            c.min, c.avg, c.max
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn sample() -> (ChunkIndex, Vec<u8>) {
        let params = ChunkParams::new(1024, 4096, 16384).unwrap();
        let data = super::super::noise(100_000, 2);
        (ChunkIndex::build(&data, &params).unwrap().0, data)
    }

    fn parse(v: &Value) -> Result<ChunkIndex, BundleError> {
        ChunkIndex::from_slice(&serde_json::to_vec(v).unwrap(), &IndexLimits::default())
    }

    fn as_value(index: &ChunkIndex) -> Value {
        serde_json::from_slice(&index.to_bytes()).unwrap()
    }

    #[test]
    fn canonical_bytes_have_the_documented_shape() {
        let (index, _) = sample();
        let bytes = index.to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"chunker":{"algorithm":"fastcdc-2020","avg":4096,"max":16384,"min":1024},"chunks":[{"length":"#), "{text}");
        assert!(text.contains(r#""compression":"zstd","media_type":"application/vnd.mast.chunk-index.v2+json","pack":{"length":"#));
        assert!(text.contains(r#""tar":{"length":100000,"sha256":""#));
        assert_eq!(
            ChunkIndex::from_slice(&bytes, &IndexLimits::default()).unwrap(),
            index
        );
    }

    #[test]
    fn refuses_unknown_fields_wrong_constants_and_duplicate_keys() {
        let (index, _) = sample();
        let good = as_value(&index);
        let mut cases: Vec<(Value, &str)> = Vec::new();
        let mut v = good.clone();
        v["extra"] = json!(1);
        cases.push((v, "unknown field"));
        let mut v = good.clone();
        v["chunks"][0]["offset"] = json!(0);
        cases.push((v, "unknown field"));
        let mut v = good.clone();
        v["media_type"] = json!("application/json");
        cases.push((v, "media type"));
        let mut v = good.clone();
        v["chunker"]["algorithm"] = json!("fastcdc-2016");
        cases.push((v, "chunker"));
        let mut v = good.clone();
        v["compression"] = json!("gzip");
        cases.push((v, "compression"));
        let mut v = good.clone();
        v["chunker"]["max"] = json!(8 << 20);
        cases.push((v, "chunker bounds"));
        let mut v = good.clone();
        v["tar"]["length"] = json!(index.tar_length() + 1);
        cases.push((v, "add up"));
        let mut v = good.clone();
        v["chunks"][0]["raw_length"] = json!(0);
        cases.push((v, "raw_length 0"));
        let mut v = good.clone();
        v["chunks"][0]["raw_length"] = json!(16385);
        cases.push((v, "raw_length 16385"));
        let mut v = good.clone();
        v["chunks"][0]["length"] = json!(1 << 20);
        cases.push((v, "outside 1..="));
        let mut v = good.clone();
        v["chunks"][0]["length"] = json!(-1);
        cases.push((v, "invalid value"));
        let mut v = good.clone();
        v["chunks"][1]["sha256"] = v["chunks"][0]["sha256"].clone();
        cases.push((v, "listed twice"));
        let mut v = good.clone();
        v["pack"]["length"] = json!(index.pack().length() + 1);
        cases.push((v, "pack.length"));
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove("pack");
        cases.push((v, "missing field `pack`"));
        for (v, needle) in cases {
            let err = parse(&v).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let dup = br#"{"media_type":"a","media_type":"b"}"#;
        let err = ChunkIndex::from_slice(dup, &IndexLimits::default()).unwrap_err();
        assert!(matches!(err, BundleError::IndexJson(_)), "{err}");
    }

    #[test]
    fn limits_are_enforced() {
        let (index, _) = sample();
        let bytes = index.to_bytes();
        let n = index.chunks().len();
        let tight = IndexLimits {
            max_index_length: bytes.len() as u64,
            max_chunks: n,
            max_tar_length: index.tar_length(),
        };
        assert!(ChunkIndex::from_slice(&bytes, &tight).is_ok());
        let err = ChunkIndex::from_slice(
            &bytes,
            &IndexLimits {
                max_index_length: bytes.len() as u64 - 1,
                ..tight
            },
        );
        assert!(matches!(err, Err(BundleError::IndexTooLarge { .. })));
        let err = ChunkIndex::from_slice(
            &bytes,
            &IndexLimits {
                max_chunks: n - 1,
                ..tight
            },
        );
        assert!(
            matches!(err, Err(BundleError::TooManyChunks { count, limit }) if count == n && limit == n - 1)
        );
        let err = ChunkIndex::from_slice(
            &bytes,
            &IndexLimits {
                max_tar_length: index.tar_length() - 1,
                ..tight
            },
        );
        assert!(matches!(err, Err(BundleError::TarTooLarge { .. })));
    }

    #[test]
    fn missing_lists_each_absent_chunk_once() {
        let params = ChunkParams::new(1024, 4096, 8192).unwrap();
        let mut data = vec![b'x'; 8192 * 4];
        data.extend(super::super::noise(50_000, 3));
        let (index, blobs) = ChunkIndex::build(&data, &params).unwrap();
        let all: Vec<_> = index.missing(|_| false).map(ChunkRef::sha256).collect();
        assert_eq!(all, blobs.iter().map(|b| b.digest).collect::<Vec<_>>());
        assert!(index.chunks().len() > all.len());
        let first = blobs[0].digest;
        let rest: Vec<_> = index
            .missing(|d| *d == first)
            .map(ChunkRef::sha256)
            .collect();
        assert_eq!(rest, all[1..]);
        assert_eq!(index.missing(|_| true).count(), 0);
    }
}
