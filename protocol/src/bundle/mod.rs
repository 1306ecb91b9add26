//! Bundles: the canonical tar of a release's manifests, its chunk index, and the safe walker that reads it.
//!
//! A bundle travels in two forms, both signed as TUF targets: `bundle.tar.gz` (whole, for OCI registries and
//! air-gapped copies) and a [`ChunkIndex`] over the same tar (for sites that already hold most of it). This
//! module builds and checks both; it does no I/O, so the packager and the agent share one implementation.
//!
//! # Why these choices
//!
//! - **The tar is canonical** ([`build_tar`]): entries sorted by path bytes, regular files only, mode 0644,
//!   uid/gid 0, empty owner names, mtime 0, GNU headers with GNU long names past 100 bytes. The same files
//!   give the same bytes on any machine, so the tar's sha256 names the release's content and two CI runs
//!   over the same manifests publish nothing new.
//! - **No directory entries.** Directories carry only metadata (mode, owner, mtime) that would have to be
//!   pinned too and that nothing downstream needs: a file's path says where it lives. Fewer entry kinds is
//!   also less for the [walker](walk) to get wrong.
//! - **Chunks are named by the sha256 of their compressed bytes.** That name is the blob's key on a mirror
//!   (a CDN path or an OCI blob digest), so a client checks what it downloaded against the signed index
//!   *before* handing it to zstd: the decompressor never sees unauthenticated input. The raw digest is kept
//!   beside it so that reassembly can check what zstd produced.
//! - **FastCDC (2020) with min 16 KiB, avg 64 KiB, max 256 KiB** ([`ChunkParams`]). Content-defined cuts
//!   move with the content, so an edit to one manifest changes the one or two chunks around it and not
//!   every chunk after it. 64 KiB on average keeps a typical bundle (a few MB of YAML) at tens of chunks —
//!   small deltas, yet few enough requests that per-request latency on a slow link does not dominate; the
//!   256 KiB maximum bounds what a single fetch or decompression may cost.
//! - **zstd level 3, each chunk alone.** Independent frames let a client decompress and verify one chunk
//!   without the others; level 3 packs faster than `gzip -6` while compressing YAML about as well.
//! - **gzip in fixed 1 MiB blocks** ([`gzip`]), each primed with the 32 KiB before it and ended by a sync
//!   flush, as pigz does: the blocks deflate on all cores, yet the bytes depend on the tar alone, never on
//!   the number of threads.
//! - **Every decoder is bounded**: [`WalkLimits`] for tar entries, [`gunzip_bounded`] for gzip,
//!   [`IndexLimits`] for the index, and the signed `raw_length` for each chunk's decompression.

mod chunk;
mod error;
pub mod options;
mod path;
mod tar;
mod walker;

pub use self::chunk::{
    Chunk, ChunkIndex, ChunkParams, ChunkRef, IndexLimits, MAX_RAW_CHUNK_LENGTH, PackReader,
    PackRef, Reassembler, TarAssembler, verify_chunk, verify_frame,
};
pub use self::error::{BundleError, ForbiddenKind};
pub use self::path::{BundlePath, BundlePathError, MAX_PATH_LEN, MAX_SEGMENT_LEN, PathFault};
pub use self::tar::{GZIP_BLOCK, build_tar, gunzip_bounded, gzip, gzip_on};
pub use self::walker::{TarFile, WalkLimits, walk};
