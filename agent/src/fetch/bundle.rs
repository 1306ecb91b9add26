//! A first install in one request: the release's `bundle.tar.gz` streamed through gunzip and
//! [`ChunkRefill`], which recreates each chunk and keeps it only when it is byte for byte the signed blob.

use std::io::Write;
use std::time::{Duration, Instant};

use mast_mirror::client::target_object;
use mast_mirror::{MirrorError, MirrorRead};
use mast_protocol::bundle::{BundleError, ChunkIndex, ChunkRef, ChunkRefill, Refilled};
use mast_protocol::digest::{Sha256Digest, Sha256Hasher};
use mast_protocol::release::NamedTarget;
use time::OffsetDateTime;

use super::ObjectError;
use crate::state::{State, StateError};
use crate::telemetry::VerificationFailure;

/// Most verified chunk bytes held before they are committed.
const BATCH_BYTES: usize = 8 << 20;

/// Longest a verified chunk waits for its commit while the bundle streams in, so that a slow link
/// makes progress durable as it goes.
const BATCH_AGE: Duration = Duration::from_millis(250);

/// What filling the store from a bundle did.
#[derive(Debug, Default)]
pub struct BundleFill {
    /// Bytes of `bundle.tar.gz` read.
    pub fetched: u64,
    /// Chunks stored.
    pub stored: usize,
    /// Chunks whose raw bytes arrived but that this agent's zstd compresses to other bytes than the
    /// packager's: they are fetched as chunks.
    pub recompressed: Vec<ChunkRef>,
}

/// Why the bundle did not fill the store. Chunks stored before the failure are verified and kept.
#[derive(Debug, thiserror::Error)]
pub enum BundleFillError {
    /// The mirror could not be read, or the bytes are not the signed bundle, or it does not hold the
    /// signed tar.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Streams `bundle` from `mirror`, cuts the tar at `index`'s boundaries as it is inflated, and stores
/// every recreated chunk that is the signed blob, in batched transactions (at least every
/// [`BATCH_AGE`], so a kill keeps what arrived). The gzip stream is checked against the signed length
/// and sha256 and the tar against the index at the end; chunks stored before a mismatch stay, since each
/// one matched its own signed name.
pub async fn fill_from_bundle<M: MirrorRead>(
    mirror: &M,
    bundle: &NamedTarget,
    index: &ChunkIndex,
    state: &mut State,
    now: OffsetDateTime,
) -> Result<BundleFill, BundleFillError> {
    let length = bundle.file.length;
    let object = target_object(&bundle.name, &bundle.file).map_err(|e| ObjectError::Refused {
        object: bundle.name.clone(),
        mirror: mirror.describe(),
        failure: VerificationFailure::BundleHash,
        reason: e.to_string(),
    })?;
    let refused = |failure, reason: String| ObjectError::Refused {
        object: object.as_path(),
        mirror: mirror.describe(),
        failure,
        reason,
    };
    let failed = |source: MirrorError| {
        let (object, mirror) = (object.as_path(), mirror.describe());
        ObjectError::read(
            object,
            mirror,
            source,
            length,
            VerificationFailure::BundleLength,
        )
    };
    let sha256 = object
        .sha256()
        .ok_or_else(|| refused(VerificationFailure::BundleHash, "no sha256".to_owned()))?;
    let refill = ChunkRefill::new(index)
        .map_err(|e| refused(VerificationFailure::BundleContent, e.to_string()))?;
    let mut inflate = flate2::write::MultiGzDecoder::new(RefillSink {
        refill,
        out: Vec::new(),
        error: None,
    });
    let mut fill = BundleFill::default();
    let mut hasher = Sha256Hasher::new();
    let mut batch = Batch::default();
    let bad_tar = |sink: &mut RefillSink<'_>, e: std::io::Error| match sink.error.take() {
        Some(e) => refused(VerificationFailure::BundleHash, e.to_string()),
        None => refused(VerificationFailure::BundleContent, format!("gzip: {e}")),
    };

    let mut response = mirror.get(&object, length).await.map_err(failed)?;
    while let Some(piece) = response.chunk().await.map_err(failed)? {
        hasher.update(&piece);
        fill.fetched += piece.len() as u64;
        if let Err(e) = inflate.write_all(&piece) {
            batch.commit(state, now, &mut fill)?;
            return Err(bad_tar(inflate.get_mut(), e).into());
        }
        batch.take(&mut inflate.get_mut().out, &mut fill);
        if batch.due() {
            batch.commit(state, now, &mut fill)?;
        }
    }
    let finished = inflate.try_finish();
    batch.take(&mut inflate.get_mut().out, &mut fill);
    batch.commit(state, now, &mut fill)?;
    if let Err(e) = finished {
        return Err(bad_tar(inflate.get_mut(), e).into());
    }
    let (read, actual) = (hasher.len(), hasher.finish());
    if read != length || actual != sha256 {
        let failure = if read == length {
            VerificationFailure::BundleHash
        } else {
            VerificationFailure::BundleLength
        };
        let reason = format!(
            "got {read} bytes with sha256 {actual}, signed: {length} bytes with sha256 {sha256}"
        );
        return Err(refused(failure, reason).into());
    }
    let sink = inflate
        .finish()
        .map_err(|e| refused(VerificationFailure::BundleContent, format!("gzip: {e}")))?;
    sink.refill
        .finish()
        .map_err(|e| refused(VerificationFailure::BundleHash, e.to_string()))?;
    Ok(fill)
}

/// Where gunzip writes: straight into the refill, so the inflated tar is never held whole.
struct RefillSink<'a> {
    refill: ChunkRefill<'a>,
    out: Vec<Refilled>,
    /// The refill's own error, kept because `Write` can only return an `io::Error`.
    error: Option<BundleError>,
}

impl Write for RefillSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.refill.push(buf, &mut self.out) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let io = std::io::Error::other(e.to_string());
                self.error = Some(e);
                Err(io)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Verified chunks waiting for their commit.
#[derive(Default)]
struct Batch {
    chunks: Vec<(Sha256Digest, Vec<u8>)>,
    bytes: usize,
    since: Option<Instant>,
}

impl Batch {
    fn take(&mut self, out: &mut Vec<Refilled>, fill: &mut BundleFill) {
        for refilled in out.drain(..) {
            match refilled {
                Refilled::Verified(chunk) => {
                    self.bytes += chunk.bytes.len();
                    self.chunks.push((chunk.digest, chunk.bytes));
                    self.since.get_or_insert_with(Instant::now);
                }
                Refilled::Recompressed(entry) => fill.recompressed.push(entry),
            }
        }
    }

    fn due(&self) -> bool {
        self.bytes >= BATCH_BYTES || self.since.is_some_and(|at| at.elapsed() >= BATCH_AGE)
    }

    fn commit(
        &mut self,
        state: &mut State,
        now: OffsetDateTime,
        fill: &mut BundleFill,
    ) -> Result<(), StateError> {
        if self.chunks.is_empty() {
            return Ok(());
        }
        state.put_chunks(&self.chunks, now)?;
        fill.stored += self.chunks.len();
        *self = Self::default();
        Ok(())
    }
}
