//! Chunks: small objects read whole and verified against their signed index entry before anyone may
//! store them.

use mast_mirror::{ErrorKind, MirrorError, MirrorRead, ObjectPath};
use mast_protocol::bundle::{BundleError, ChunkRef, verify_chunk};

use crate::telemetry::VerificationFailure;

/// Why a chunk was not fetched. Both variants name the chunk and the mirror; neither leaves a byte behind.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The mirror could not be read (down, missing the chunk, an unexpected answer, a cut body).
    #[error("{object} from {mirror}: {source}")]
    Mirror {
        /// The chunk's path on the mirror.
        object: String,
        /// The mirror.
        mirror: String,
        /// What the mirror transport said.
        #[source]
        source: MirrorError,
    },
    /// The bytes are not the ones the signed index names; they were dropped.
    #[error("{object} from {mirror}: {reason}")]
    Refused {
        /// The chunk's path on the mirror.
        object: String,
        /// The mirror.
        mirror: String,
        /// Which check failed, for metrics.
        failure: VerificationFailure,
        /// What differed.
        reason: String,
    },
}

impl ChunkError {
    /// The verification failure, when the mirror served bytes that are not the signed ones: a mirror to
    /// skip, not a link to retry.
    pub fn verification_failure(&self) -> Option<VerificationFailure> {
        match self {
            Self::Refused { failure, .. } => Some(*failure),
            Self::Mirror { .. } => None,
        }
    }
}

/// Reads the chunk `entry` names from `mirror` and returns its compressed bytes once they are verified:
/// the read stops one piece past the signed length, then [`verify_chunk`] checks length and sha256
/// before zstd sees a byte, and the decompressed bytes against the raw length and digest. Chunks are
/// small (256 KiB before compression by default, 4 MiB at most), so they are read whole and never
/// resumed; a failed read costs at most one chunk.
pub async fn fetch_chunk<M: MirrorRead>(
    mirror: &M,
    entry: &ChunkRef,
) -> Result<Vec<u8>, ChunkError> {
    let object = ObjectPath::Chunk(entry.sha256());
    let length = entry.length();
    let refused = |failure, reason: String| ChunkError::Refused {
        object: object.as_path(),
        mirror: mirror.describe(),
        failure,
        reason,
    };
    let failed = |source: MirrorError| {
        if source.kind() == ErrorKind::TooLarge {
            let reason = format!("longer than the signed {length} bytes");
            return refused(VerificationFailure::ChunkLength, reason);
        }
        ChunkError::Mirror {
            object: object.as_path(),
            mirror: mirror.describe(),
            source,
        }
    };
    let mut response = mirror.get(&object, length).await.map_err(failed)?;
    let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
    while let Some(piece) = response.chunk().await.map_err(failed)? {
        bytes.extend_from_slice(&piece);
    }
    match verify_chunk(entry, &bytes) {
        Ok(_raw) => Ok(bytes),
        Err(e @ BundleError::ChunkLengthMismatch { .. }) => {
            Err(refused(VerificationFailure::ChunkLength, e.to_string()))
        }
        Err(e) => Err(refused(VerificationFailure::ChunkHash, e.to_string())),
    }
}
