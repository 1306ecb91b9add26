//! Chunks: small objects read whole and verified against their signed index entry before anyone may
//! store them.

use mast_mirror::{MirrorRead, ObjectPath};

use super::ObjectError;
use mast_protocol::bundle::{BundleError, ChunkRef, verify_frame};

use crate::telemetry::VerificationFailure;

/// Reads the chunk `entry` names from `mirror` and returns its compressed bytes once they are verified:
/// the read stops one piece past the signed length, then [`verify_frame`] checks length and sha256 —
/// the bytes are then the signed blob, ready to store. zstd first sees them when the tar is built,
/// which checks what they decompress to. Chunks are small (256 KiB before compression by default,
/// 4 MiB at most), so they are read whole and never resumed; a failed read costs at most one chunk.
pub async fn fetch_chunk<M: MirrorRead>(
    mirror: &M,
    entry: &ChunkRef,
) -> Result<Vec<u8>, ObjectError> {
    let object = ObjectPath::Chunk(entry.sha256());
    let length = entry.length();
    let failed = ObjectError::reading(&object, mirror, length, VerificationFailure::ChunkLength);
    let mut response = mirror.get(&object, length).await.map_err(failed)?;
    let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
    while let Some(piece) = response.chunk().await.map_err(failed)? {
        bytes.extend_from_slice(&piece);
    }
    match verify_frame(entry, &bytes) {
        Ok(()) => Ok(bytes),
        Err(e @ BundleError::ChunkLengthMismatch { .. }) => Err(ObjectError::refused(
            &object,
            mirror,
            VerificationFailure::ChunkLength,
            &e,
        )),
        Err(e) => Err(ObjectError::refused(
            &object,
            mirror,
            VerificationFailure::ChunkHash,
            &e,
        )),
    }
}
