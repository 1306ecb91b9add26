//! Many chunks in one request: the release's chunk pack streamed through [`PackReader`], each frame
//! verified against its own index entry before it is stored.

use std::time::{Duration, Instant};

use mast_mirror::{Conditions, Fetched, MirrorRead, ObjectPath};
use mast_protocol::bundle::{
    BundleError, ChunkIndex, ChunkRef, PackReader, TarAssembler, verify_chunk, verify_frame,
};
use mast_protocol::digest::Sha256Digest;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use super::ObjectError;
use crate::state::{State, StateError};
use crate::telemetry::VerificationFailure;

/// Most verified chunk bytes held before they are committed.
const BATCH_BYTES: usize = 8 << 20;

/// Longest a verified chunk waits for its commit while the pack streams in, so that a slow link makes
/// progress durable as it goes.
const BATCH_AGE: Duration = Duration::from_millis(250);

/// Most frame bytes handed to a busy verifier at a time: large enough that a thread hop is cheap next to
/// the hashing and decompression it carries, small enough that verifying overlaps receiving.
const VERIFY_BYTES: usize = 1 << 20;

/// What reading the pack did.
#[derive(Debug, Default)]
pub struct PackFill {
    /// Pack bytes read.
    pub fetched: u64,
    /// Chunks stored that the site did not hold before (a mirror that ignores a range request sends
    /// the frames before it too).
    pub stored: usize,
    /// The release's tar, when it was asked for and the pack was read from its first byte and gave every
    /// chunk: checked against the index, ready to apply without reading the chunks back from the store.
    pub tar: Option<Vec<u8>>,
}

/// Why the pack did not give every chunk it was read for. Chunks stored before the failure are
/// verified and kept.
#[derive(Debug, thiserror::Error)]
pub enum PackFillError {
    /// The mirror could not be read, or served bytes that are not the signed frames.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Reads `index`'s chunk pack from `mirror`, from byte `from` (where a frame starts: 0, or past frames
/// the site holds) to its end, and stores every frame in batched transactions (at least every
/// [`BATCH_AGE`], so a kill keeps what arrived). Frames are verified on a blocking thread while the next
/// ones arrive. A mirror that cannot do ranges sends the whole pack; its frames are verified and stored
/// alike. With `assemble`, the frames are also put together into the release's tar.
pub async fn fill_from_pack<M: MirrorRead>(
    mirror: &M,
    index: &ChunkIndex,
    from: u64,
    assemble: bool,
    state: &mut State,
    now: OffsetDateTime,
) -> Result<PackFill, PackFillError> {
    let pack = index.pack();
    let object = ObjectPath::Chunk(pack.sha256());
    let failed = ObjectError::reading(
        &object,
        mirror,
        pack.length(),
        VerificationFailure::PackLength,
    );
    let refused = |failure, reason: &dyn std::fmt::Display| {
        ObjectError::refused(&object, mirror, failure, reason)
    };
    let (start, mut response) = if from == 0 {
        (0, mirror.get(&object, pack.length()).await.map_err(failed)?)
    } else {
        let conditions = Conditions::resume(from, None);
        match mirror
            .get_with(&object, pack.length(), &conditions)
            .await
            .map_err(failed)?
        {
            Fetched::Partial {
                from: at, response, ..
            } => (at, response),
            Fetched::Full(response) => (0, response),
            Fetched::NotModified { .. } => {
                let reason = "answered \"not modified\" to an unconditional read";
                return Err(refused(VerificationFailure::PackLength, &reason).into());
            }
        }
    };
    let mut reader = PackReader::starting_at(index, start)
        .map_err(|e| refused(VerificationFailure::PackLength, &e))?;
    let mut fill = Fill {
        out: PackFill::default(),
        tar: if assemble && start == 0 {
            TarAssembler::new(index).ok()
        } else {
            None
        },
        batch: Vec::new(),
        batch_bytes: 0,
        since: None,
    };
    let mut cut: Vec<(&ChunkRef, Vec<u8>)> = Vec::new();
    let mut cut_bytes = 0;
    let mut verifying: Option<JoinHandle<Vec<Checked>>> = None;

    let end = loop {
        let piece = match response.chunk().await {
            Ok(Some(piece)) => piece,
            Ok(None) => {
                break reader
                    .finish()
                    .map_err(|e| refused(VerificationFailure::PackLength, &e));
            }
            Err(e) => break Err(failed(e)),
        };
        fill.out.fetched += piece.len() as u64;
        let before = cut.len();
        if let Err(e) = reader.push(&piece, &mut cut) {
            break Err(refused(VerificationFailure::PackLength, &e));
        }
        cut_bytes += cut[before..].iter().map(|(_, f)| f.len()).sum::<usize>();
        // An idle verifier takes what is cut at once (a slow link stores each frame soon after it
        // arrived); a busy one lets the next batch grow up to VERIFY_BYTES.
        let idle = verifying.as_ref().is_none_or(JoinHandle::is_finished);
        if !cut.is_empty() && (idle || cut_bytes >= VERIFY_BYTES) {
            // The next batch goes to the verifier before the last one is stored, so that storing
            // (the database's writes and fsync) overlaps verifying.
            let previous = verifying.replace(verify(std::mem::take(&mut cut), assemble));
            cut_bytes = 0;
            if let Some(previous) = previous
                && let Err(e) = fill.absorb(join(previous).await, state, now, &refused)?
            {
                break Err(e);
            }
        }
    };
    // Every frame that arrived whole is verified and kept, even when the read then failed: each one
    // stands on its own index entry.
    let mut result = end;
    if let Some(previous) = verifying.take() {
        result = result.and(fill.absorb(join(previous).await, state, now, &refused)?);
    }
    if !cut.is_empty() {
        result =
            result.and(fill.absorb(join(verify(cut, assemble)).await, state, now, &refused)?);
    }
    fill.commit(state, now)?;
    result?;
    // A tar not whole, or an index whose chunks do not make its own tar digest, leaves `tar` empty; the
    // rebuild from the store then fetches nothing more, or refuses the release with that error.
    fill.out.tar = fill.tar.and_then(|tar| tar.finish().ok());
    Ok(fill.out)
}

/// A frame and what checking it against its index entry gave: its raw bytes when they were asked for
/// (empty otherwise), or why not.
type Checked = (ChunkRef, Vec<u8>, Result<Vec<u8>, BundleError>);

/// Verifies frames on a blocking thread: each against its signed length and sha256, and, with
/// `decompress`, what it decompresses to against its signed raw length and sha256.
fn verify(frames: Vec<(&ChunkRef, Vec<u8>)>, decompress: bool) -> JoinHandle<Vec<Checked>> {
    let frames: Vec<(ChunkRef, Vec<u8>)> = frames
        .into_iter()
        .map(|(entry, frame)| (entry.clone(), frame))
        .collect();
    tokio::task::spawn_blocking(move || {
        frames
            .into_iter()
            .map(|(entry, frame)| {
                let raw = if decompress {
                    verify_chunk(&entry, &frame)
                } else {
                    verify_frame(&entry, &frame).map(|()| Vec::new())
                };
                (entry, frame, raw)
            })
            .collect()
    })
}

async fn join(verifying: JoinHandle<Vec<Checked>>) -> Vec<Checked> {
    match verifying.await {
        Ok(checked) => checked,
        // Verification only panics on a bug; a blocking task is never cancelled once it runs.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The pack's progress: verified frames waiting for their commit and the tar being put together.
struct Fill<'a> {
    out: PackFill,
    tar: Option<TarAssembler<'a>>,
    batch: Vec<(Sha256Digest, Vec<u8>)>,
    batch_bytes: usize,
    since: Option<Instant>,
}

impl Fill<'_> {
    /// Takes verified frames up to the first that failed, whose error is returned (the outer `Result`
    /// is the database's); commits when the batch is due.
    fn absorb(
        &mut self,
        checked: Vec<Checked>,
        state: &mut State,
        now: OffsetDateTime,
        refused: &dyn Fn(VerificationFailure, &dyn std::fmt::Display) -> ObjectError,
    ) -> Result<Result<(), ObjectError>, StateError> {
        let mut outcome = Ok(());
        for (entry, frame, raw) in checked {
            let raw = match raw {
                Ok(raw) => raw,
                Err(e) => {
                    let failure = match e {
                        BundleError::ChunkLengthMismatch { .. } => VerificationFailure::ChunkLength,
                        _ => VerificationFailure::ChunkHash,
                    };
                    outcome = Err(refused(failure, &e));
                    break;
                }
            };
            if let Some(tar) = &mut self.tar
                && tar.place(&entry, &raw).is_err()
            {
                self.tar = None;
            }
            self.batch_bytes += frame.len();
            self.batch.push((entry.sha256(), frame));
            self.since.get_or_insert_with(Instant::now);
        }
        if self.batch_bytes >= BATCH_BYTES || self.since.is_some_and(|at| at.elapsed() >= BATCH_AGE)
        {
            self.commit(state, now)?;
        }
        Ok(outcome)
    }

    fn commit(&mut self, state: &mut State, now: OffsetDateTime) -> Result<(), StateError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.out.stored += state.put_chunks(&self.batch, now)?;
        self.batch.clear();
        self.batch_bytes = 0;
        self.since = None;
        Ok(())
    }
}
