//! The one error type of the bundle module.

use std::fmt;
use std::io;

use super::path::{BundlePath, BundlePathError};
use crate::canonical::CanonicalError;
use crate::digest::Sha256Digest;

/// Why a bundle, tar, chunk or chunk index was refused or could not be built.
///
/// Each variant names the entry, chunk or limit involved, so that an operator reading a log line can tell a
/// corrupt mirror (digest mismatches) from a hostile or broken bundle (forbidden entries, limits).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    // --- Paths and tar entries -------------------------------------------------------------------------
    /// A path is not a valid [`BundlePath`].
    #[error(transparent)]
    InvalidPath(#[from] BundlePathError),
    /// Two files have the same path.
    #[error("duplicate path {0} in bundle")]
    DuplicatePath(BundlePath),
    /// A file's path is also used as a directory by another file.
    #[error("{file} is a file, but {nested} needs it to be a directory")]
    PathConflict {
        /// The file.
        file: BundlePath,
        /// A file beneath it.
        nested: BundlePath,
    },
    /// A tar entry of a kind bundles may not hold.
    #[error("tar entry {path:?} is a {kind}; bundles hold only regular files")]
    ForbiddenEntry {
        /// The entry's path as written in the archive.
        path: String,
        /// What it is.
        kind: ForbiddenKind,
    },
    /// A PAX extended header that is malformed or could be read two ways.
    #[error("tar entry {path:?} has a bad PAX header: {reason}")]
    BadPaxHeader {
        /// The entry's path as the archive names it.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The archive is not a well-formed tar.
    #[error("malformed tar{}: {source}", after_entry(.after))]
    MalformedTar {
        /// The last entry read before the fault, if any.
        after: Option<String>,
        /// What the tar reader reported.
        source: io::Error,
    },
    /// An entry's data runs past the end of the archive.
    #[error("tar entry {path} claims {size} bytes but the archive ends first")]
    TruncatedEntry {
        /// The entry.
        path: BundlePath,
        /// Its claimed size.
        size: u64,
    },
    /// The archive does not end with two zero blocks, or has non-zero bytes after them.
    #[error("tar does not end cleanly: {0}")]
    BadArchiveEnd(&'static str),
    /// More entries than [`WalkLimits::max_entries`](super::WalkLimits).
    #[error("tar has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// One file larger than [`WalkLimits::max_entry_size`](super::WalkLimits).
    #[error("tar entry {path:?} is {size} bytes, more than the {limit} allowed per file")]
    EntryTooLarge {
        /// The entry.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The files together exceed [`WalkLimits::max_total_size`](super::WalkLimits).
    #[error("tar files exceed {limit} bytes in total (at entry {path:?})")]
    TotalTooLarge {
        /// The entry that crossed the limit.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// Writing a tar header failed.
    #[error("cannot write tar entry {path}: {source}")]
    TarBuild {
        /// The entry.
        path: BundlePath,
        /// What the tar writer reported.
        source: io::Error,
    },

    // --- gzip --------------------------------------------------------------------------------------------
    /// The gzip stream is corrupt.
    #[error("corrupt gzip stream: {0}")]
    Gzip(#[source] io::Error),
    /// The gzip stream expands past the caller's bound.
    #[error("gzip stream expands past {limit} bytes")]
    GzipTooLarge {
        /// The bound.
        limit: u64,
    },

    // --- Chunking and the chunk index --------------------------------------------------------------------
    /// Chunker parameters outside what FastCDC or mast accept.
    #[error("invalid chunk parameters min={min} avg={avg} max={max}: {reason}")]
    InvalidChunkParams {
        /// Minimum chunk size.
        min: u64,
        /// Average chunk size.
        avg: u64,
        /// Maximum chunk size.
        max: u64,
        /// Which rule they break.
        reason: &'static str,
    },
    /// zstd could not compress a chunk.
    #[error("cannot compress chunk: {0}")]
    Compress(#[source] io::Error),
    /// The index document is longer than [`IndexLimits::max_index_length`](super::IndexLimits).
    #[error("chunk index is {length} bytes, more than the {limit} allowed")]
    IndexTooLarge {
        /// Its length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// The index is not strict JSON.
    #[error("chunk index is not valid JSON: {0}")]
    IndexJson(#[source] CanonicalError),
    /// The index JSON does not have the expected fields and types (unknown fields included).
    #[error("chunk index does not match the schema: {0}")]
    IndexSchema(#[source] serde_json::Error),
    /// The index JSON could not be encoded.
    #[error("cannot encode chunk index: {0}")]
    IndexEncode(#[source] CanonicalError),
    /// The index's field values are out of range or inconsistent.
    #[error("chunk index is invalid: {0}")]
    InvalidIndex(String),
    /// The index lists more chunks than [`IndexLimits::max_chunks`](super::IndexLimits).
    #[error("chunk index lists {count} chunks, more than the {limit} allowed")]
    TooManyChunks {
        /// How many it lists.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The index describes a tar longer than [`IndexLimits::max_tar_length`](super::IndexLimits).
    #[error("chunk index describes a {length}-byte tar, more than the {limit} allowed")]
    TarTooLarge {
        /// The tar's length.
        length: u64,
        /// The limit.
        limit: u64,
    },

    // --- Verifying chunks and reassembling ---------------------------------------------------------------
    /// A downloaded chunk has the wrong length.
    #[error("chunk {digest} is {actual} bytes, the index says {expected}")]
    ChunkLengthMismatch {
        /// The chunk's name.
        digest: Sha256Digest,
        /// The signed length.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// A downloaded chunk has the wrong digest.
    #[error("chunk should be {expected} but its bytes hash to {actual}")]
    ChunkDigestMismatch {
        /// The signed digest.
        expected: Sha256Digest,
        /// What arrived.
        actual: Sha256Digest,
    },
    /// A chunk's zstd frame would expand past its signed raw length.
    #[error(
        "chunk {digest} expands to {declared} bytes, more than the {limit} its index entry allows"
    )]
    ChunkTooLarge {
        /// The chunk.
        digest: Sha256Digest,
        /// The size the frame declares.
        declared: u64,
        /// The signed raw length.
        limit: u64,
    },
    /// zstd refused a chunk: corrupt, or expanding past its signed raw length without declaring it.
    #[error("cannot decompress chunk {digest} within {limit} bytes: {source}")]
    Decompress {
        /// The chunk.
        digest: Sha256Digest,
        /// The output bound.
        limit: u64,
        /// What zstd reported.
        source: io::Error,
    },
    /// A chunk decompressed to the wrong number of bytes.
    #[error("chunk {digest} decompressed to {actual} bytes, the index says {expected}")]
    RawLengthMismatch {
        /// The chunk.
        digest: Sha256Digest,
        /// The signed raw length.
        expected: u64,
        /// What came out.
        actual: u64,
    },
    /// A chunk decompressed to the wrong bytes.
    #[error("chunk {digest} decompressed to bytes hashing to {actual}, the index says {expected}")]
    RawDigestMismatch {
        /// The chunk.
        digest: Sha256Digest,
        /// The signed raw digest.
        expected: Sha256Digest,
        /// What came out.
        actual: Sha256Digest,
    },
    /// A chunk of the bundle arrived at the wrong position.
    #[error("chunk {found} arrived at position {position}, where the index lists {expected}")]
    ChunkOutOfOrder {
        /// The index position being filled.
        position: usize,
        /// The chunk listed there.
        expected: Sha256Digest,
        /// The chunk that arrived (listed elsewhere in the index).
        found: Sha256Digest,
    },
    /// A chunk arrived after every chunk of the index was already in.
    #[error("chunk arrived after all {count} chunks of the index")]
    UnexpectedChunk {
        /// How many chunks the index lists.
        count: usize,
    },
    /// Reassembly finished before every chunk arrived.
    #[error("reassembly stopped after {received} of {expected} chunks")]
    Incomplete {
        /// Chunks received.
        received: usize,
        /// Chunks listed.
        expected: usize,
    },
    /// The reassembled tar is not the one the index names.
    #[error(
        "reassembled tar is {actual_length} bytes with sha256 {actual}, the index says {expected_length} bytes with {expected}"
    )]
    TarMismatch {
        /// The signed digest.
        expected: Sha256Digest,
        /// The signed length.
        expected_length: u64,
        /// What was reassembled.
        actual: Sha256Digest,
        /// Its length.
        actual_length: u64,
    },
    /// A chunk pack read was asked to start where no frame starts.
    #[error("byte {offset} of the {length}-byte chunk pack is not where a frame starts")]
    PackOffset {
        /// The offset asked for.
        offset: u64,
        /// The pack's signed length.
        length: u64,
    },
    /// More pack bytes arrived than the index says the pack has.
    #[error("the chunk pack is longer than the {length} bytes the index says")]
    PackTooLong {
        /// The signed length.
        length: u64,
    },
    /// The chunk pack ended early.
    #[error("the chunk pack ended at byte {received} of its {length} bytes")]
    PackShort {
        /// Where it ended.
        received: u64,
        /// The signed length.
        length: u64,
    },
    /// More tar bytes arrived than the index says the tar has.
    #[error("the tar is longer than the {expected_length} bytes the index says")]
    TarTooLong {
        /// The signed length.
        expected_length: u64,
    },
}

/// Kinds of tar entries a bundle may not contain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForbiddenKind {
    /// A symbolic link, and where it points.
    Symlink {
        /// The link target (lossily decoded).
        target: String,
    },
    /// A hard link, and what it links to.
    HardLink {
        /// The link target (lossily decoded).
        target: String,
    },
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A GNU sparse file, whose data is a map that other tools expand differently.
    Sparse,
    /// A PAX global header, which other tools apply to later entries in ways this reader does not.
    PaxGlobalHeader,
    /// Any other type flag.
    Unknown(u8),
}

impl fmt::Display for ForbiddenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Symlink { target } => write!(f, "symbolic link to {target:?}"),
            Self::HardLink { target } => write!(f, "hard link to {target:?}"),
            Self::CharDevice => f.write_str("character device"),
            Self::BlockDevice => f.write_str("block device"),
            Self::Fifo => f.write_str("named pipe"),
            Self::Sparse => f.write_str("sparse file"),
            Self::PaxGlobalHeader => f.write_str("PAX global header"),
            Self::Unknown(b) => write!(f, "entry of unknown type {:?}", char::from(*b)),
        }
    }
}

fn after_entry(after: &Option<String>) -> String {
    match after {
        Some(path) => format!(" after entry {path:?}"),
        None => String::new(),
    }
}
