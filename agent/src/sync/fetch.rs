//! The fetch phase of a pass: the signed chunk index, then the chunks the site lacks — from the
//! release's chunk pack in one request when they make up about all of its tail (a first install), else
//! up to [`CHUNKS_IN_FLIGHT`] chunk requests at once — stored in batched transactions, then the release
//! staged.

use mast_mirror::MirrorRead;
use mast_mirror::client::{ClientError, fetch_target};
use mast_protocol::bundle::{ChunkIndex, ChunkRef, IndexLimits};
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::SelectedRelease;
use time::OffsetDateTime;

use futures_util::FutureExt as _;
use futures_util::stream::{FuturesUnordered, StreamExt as _};

use super::{MirrorFailure, PassError, PassReport, failure};
use crate::fetch::{ObjectError, PackFillError, fetch_chunk, fill_from_pack};
use crate::state::{JournalState, State, StateError};
use crate::telemetry::Metrics;

/// Chunks requested at once. Enough to keep a link to a CDN or registry busy despite per-request
/// latency, few enough that a slow link does not split its bandwidth into slivers that each take long
/// to finish (a killed pass loses at most the chunks in flight) and that a mirror is not flooded.
pub const CHUNKS_IN_FLIGHT: usize = 12;

/// Most verified chunk bytes held in memory before they are committed, whatever else is still arriving.
const BATCH_BYTES: usize = 8 << 20;

/// What one request costs on the wire besides its body, both ways (HTTP/1.1 request line and headers,
/// response status and headers), as the fault proxy measures an idle poll's two requests: about 390
/// bytes each.
const REQUEST_WIRE_BYTES: u64 = 400;

/// How many more bytes than the missing chunks a pass may move to read them from the chunk pack in one
/// request instead: a tenth, spent on frames the site already holds that lie between the ones it lacks.
const PACK_ALLOWANCE_PERCENT: u64 = 10;

/// A staged release: its verified index and, when the chunk pack gave all of it, its verified tar.
pub(super) struct FetchedRelease {
    /// The release's chunk index.
    pub(super) index: ChunkIndex,
    /// The tar, checked against the index, when it was put together while fetching; else the apply
    /// rebuilds it from the store.
    pub(super) tar: Option<Vec<u8>>,
}

/// Fetches the index and every chunk the site lacks, trying mirrors from `first` on; stages the release.
/// With `assemble`, a release read whole from the chunk pack comes with its tar.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch_release<M: MirrorRead>(
    state: &mut State,
    mirrors: &[M],
    first: usize,
    selected: &SelectedRelease,
    assemble: bool,
    now: OffsetDateTime,
    metrics: &Metrics,
    report: &mut PassReport,
) -> Result<FetchedRelease, PassError> {
    let release = &selected.release;
    let number = release.number.get();
    let order: Vec<&M> = mirrors
        .iter()
        .skip(first)
        .chain(&mirrors[..first])
        .collect();
    let mut failures = Vec::new();

    let mut index_bytes = None;
    for mirror in &order {
        let mut bytes = Vec::new();
        let target = &selected.index;
        match fetch_target(*mirror, &target.name, &target.file, &mut bytes).await {
            Ok(()) => {
                index_bytes = Some(bytes);
                break;
            }
            Err(e) => {
                if let ClientError::Target { .. } = e {
                    metrics.record_verification_failure(
                        if bytes.len() as u64 == target.file.length {
                            mast_protocol::tuf::ErrorKind::Hash
                        } else {
                            mast_protocol::tuf::ErrorKind::Length
                        },
                    );
                }
                failures.push(failure(*mirror, &e));
            }
        }
    }
    let Some(index_bytes) = index_bytes else {
        return Err(PassError::Content {
            release: number,
            failures,
        });
    };
    report.bytes_fetched += index_bytes.len() as u64;
    let bad = |reason: String| PassError::Bundle {
        release: number,
        reason,
    };
    let index = ChunkIndex::from_slice(&index_bytes, &IndexLimits::default())
        .map_err(|e| bad(format!("chunk index: {e}")))?;
    if index.tar_sha256() != release.tar_sha256 || index.tar_length() != release.tar_length {
        return Err(bad(format!(
            "the index describes a tar of {} bytes with sha256 {}, the signed release one of {} bytes \
             with sha256 {}",
            index.tar_length(),
            index.tar_sha256(),
            release.tar_length,
            release.tar_sha256
        )));
    }

    let mut listed = std::collections::HashSet::new();
    let mut missing = Vec::new();
    for entry in index.chunks() {
        if !listed.insert(entry.sha256()) {
            continue;
        }
        if state.has_chunk(&entry.sha256())? {
            report.chunks_held += 1;
        } else {
            missing.push(entry);
        }
    }
    let mut tar = None;
    if let Some(from) = pack_start(&index, &missing) {
        (missing, tar) = from_pack(
            state, order[0], &index, from, assemble, missing, now, metrics, report,
        )
        .await?;
    }
    let fetched = fetch_chunks(state, &order, &missing, now, metrics, report).await;
    // A mirror that failed a chunk that another then served was skipped, not fatal: the scheduler
    // demotes it like a mirror that failed the refresh.
    for skipped in fetched.skipped {
        if !report.skipped.iter().any(|s| s.mirror == skipped.mirror) {
            report.skipped.push(skipped);
        }
    }
    if let Some(chunk_failures) = fetched.failed {
        failures.extend(chunk_failures);
        return Err(PassError::Content {
            release: number,
            failures,
        });
    }
    fetched.stored?;
    let chunks: Vec<Sha256Digest> = listed.into_iter().collect();
    state.record_release(
        release.channel.as_str(),
        number,
        &release.tar_sha256,
        &index_bytes,
        &chunks,
        now,
    )?;
    state.journal_append(
        release.channel.as_str(),
        number,
        JournalState::Staged,
        "",
        now,
    )?;
    Ok(FetchedRelease { index, tar })
}

/// Reads the missing chunks from the chunk pack, from byte `from` on, in one request — on a registry
/// every blob request costs a lookup, on a CDN a round trip. What it did not give (a failed read, a
/// mirror that lied) is returned, to be fetched as chunks from every mirror in turn, with the release's
/// tar when `assemble` asked for it and the pack gave all of it.
#[allow(clippy::too_many_arguments)]
async fn from_pack<'i, M: MirrorRead>(
    state: &mut State,
    mirror: &M,
    index: &ChunkIndex,
    from: u64,
    assemble: bool,
    missing: Vec<&'i ChunkRef>,
    now: OffsetDateTime,
    metrics: &Metrics,
    report: &mut PassReport,
) -> Result<(Vec<&'i ChunkRef>, Option<Vec<u8>>), PassError> {
    let mut tar = None;
    match fill_from_pack(mirror, index, from, assemble, state, now).await {
        Ok(fill) => {
            report.bytes_fetched += fill.fetched;
            report.chunks_fetched += fill.stored;
            tar = fill.tar;
        }
        Err(PackFillError::State(e)) => return Err(e.into()),
        Err(PackFillError::Object(e)) => {
            tracing::warn!(error = %e, "reading the chunk pack failed; fetching chunks");
            if let Some(reason) = e.verification_failure() {
                metrics.record_verification_failure(reason);
            }
            report.skipped.push(MirrorFailure {
                mirror: mirror.describe(),
                reason: e.to_string(),
                retry_after: e.retry_after().map(str::to_owned),
            });
        }
    }
    let mut still = Vec::new();
    for entry in missing {
        if !state.has_chunk(&entry.sha256())? {
            still.push(entry);
        }
    }
    Ok((still, tar))
}

/// Where to read the chunk pack from instead of fetching `missing` a request each, if anywhere: from the
/// first missing frame on, when the frames there the site already holds cost at most
/// [`PACK_ALLOWANCE_PERCENT`] more bytes than the requests saved. A first install reads the whole pack;
/// one resumed after a kill reads the rest of it; a small change fetches its few chunks.
fn pack_start(index: &ChunkIndex, missing: &[&ChunkRef]) -> Option<u64> {
    if missing.len() < 2 {
        return None;
    }
    let wanted: std::collections::HashSet<Sha256Digest> =
        missing.iter().map(|entry| entry.sha256()).collect();
    let (start, _) = index
        .pack_frames()
        .into_iter()
        .find(|(_, entry)| wanted.contains(&entry.sha256()))?;
    let chunks: u64 = missing
        .iter()
        .map(|entry| entry.length() + REQUEST_WIRE_BYTES)
        .sum();
    let tail = index.pack().length() - start + REQUEST_WIRE_BYTES;
    let worth = tail <= chunks + chunks * PACK_ALLOWANCE_PERCENT / 100;
    tracing::debug!(
        missing = missing.len(),
        chunk_bytes = chunks,
        pack_from = start,
        pack_bytes = tail,
        worth,
        "chunk pack or chunks"
    );
    worth.then_some(start)
}

/// What fetching a release's missing chunks came to.
struct ChunksFetched {
    /// Failures of mirrors that another mirror then covered, one per mirror.
    skipped: Vec<MirrorFailure>,
    /// Every mirror's failure for a chunk none of them served; the pass fails on it.
    failed: Option<Vec<MirrorFailure>>,
    /// Whether storing went well.
    stored: Result<(), StateError>,
}

/// Fetches `missing` with up to [`CHUNKS_IN_FLIGHT`] requests at once, each chunk from the first mirror
/// in `order` that serves it verified, and stores what arrives in batched transactions: every verified
/// chunk that has arrived by the time the last commit returned goes into the next one (at most
/// [`BATCH_BYTES`]). On a fast link a commit's fsync lets many chunks arrive, so the batches grow; on a
/// slow one every chunk is committed as soon as it is verified. Stops fetching at the first chunk no
/// mirror serves, keeping (committing) what was verified before.
async fn fetch_chunks<M: MirrorRead>(
    state: &mut State,
    order: &[&M],
    missing: &[&ChunkRef],
    now: OffsetDateTime,
    metrics: &Metrics,
    report: &mut PassReport,
) -> ChunksFetched {
    let mut out = ChunksFetched {
        skipped: Vec::new(),
        failed: None,
        stored: Ok(()),
    };
    let mut queue = missing.iter().copied();
    let mut in_flight = FuturesUnordered::new();
    in_flight.extend(
        queue
            .by_ref()
            .take(CHUNKS_IN_FLIGHT)
            .map(|entry| fetch_any(order, entry)),
    );
    let mut batch: Vec<(Sha256Digest, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0;
    while let Some(mut next) = in_flight.next().await {
        loop {
            let (entry, result, errors) = next;
            for error in &errors {
                if let Some(reason) = error.verification_failure() {
                    metrics.record_verification_failure(reason);
                }
            }
            let errors = errors.iter().zip(order).map(|(e, m)| MirrorFailure {
                mirror: m.describe(),
                reason: e.to_string(),
                retry_after: e.retry_after().map(str::to_owned),
            });
            match result {
                Some(bytes) => {
                    out.skipped.extend(errors);
                    report.bytes_fetched += bytes.len() as u64;
                    report.chunks_fetched += 1;
                    batch_bytes += bytes.len();
                    batch.push((entry.sha256(), bytes));
                    if out.failed.is_none()
                        && let Some(entry) = queue.next()
                    {
                        in_flight.push(fetch_any(order, entry));
                    }
                }
                None => {
                    out.failed.get_or_insert_with(Vec::new).extend(errors);
                }
            }
            if batch_bytes >= BATCH_BYTES {
                break;
            }
            // Take whatever else has already arrived, without waiting, into the same commit.
            match in_flight.next().now_or_never() {
                Some(Some(ready)) => next = ready,
                _ => break,
            }
        }
        if !batch.is_empty() {
            if let Err(e) = state.put_chunks(&batch, now) {
                out.stored = Err(e);
                return out;
            }
            batch.clear();
            batch_bytes = 0;
        }
        if out.failed.is_some() && in_flight.is_empty() {
            break;
        }
    }
    out
}

/// Fetches one chunk from the first mirror in `order` that serves it verified. Returns the chunk, its
/// bytes if some mirror served them, and the failures of the mirrors tried before (in `order`).
async fn fetch_any<'e, M: MirrorRead>(
    order: &[&M],
    entry: &'e ChunkRef,
) -> (&'e ChunkRef, Option<Vec<u8>>, Vec<ObjectError>) {
    let mut errors = Vec::new();
    for mirror in order {
        match fetch_chunk(*mirror, entry).await {
            Ok(bytes) => return (entry, Some(bytes), errors),
            Err(e) => {
                tracing::debug!(error = %e, "chunk not fetched from this mirror");
                errors.push(e);
            }
        }
    }
    (entry, None, errors)
}

#[cfg(test)]
mod tests {
    use mast_protocol::bundle::{ChunkIndex, ChunkParams};

    use super::*;

    #[test]
    fn the_pack_is_read_from_the_first_missing_frame_when_little_of_its_tail_is_held() {
        let tar: Vec<u8> = (0..400_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let params = ChunkParams::new(1024, 4096, 16384).unwrap();
        let (index, _) = ChunkIndex::build(&tar, &params).unwrap();
        let frames = index.pack_frames();
        assert!(frames.len() >= 20, "{} frames", frames.len());
        let all: Vec<&ChunkRef> = frames.iter().map(|(_, e)| *e).collect();
        // A first install reads the whole pack.
        assert_eq!(pack_start(&index, &all), Some(0));
        // A resumed one reads from the first frame it lacks.
        assert_eq!(pack_start(&index, &all[5..]), Some(frames[5].0));
        // A change of two chunks fetches them as chunks.
        assert_eq!(pack_start(&index, &[all[3], all[9]]), None);
        // One chunk, or none: nothing to save.
        assert_eq!(pack_start(&index, &all[..1]), None);
        assert_eq!(pack_start(&index, &[]), None);
        // Holding every other frame of the tail is more than a tenth: chunks.
        let every_other: Vec<&ChunkRef> = all.iter().step_by(2).copied().collect();
        assert_eq!(pack_start(&index, &every_other), None);
    }
}
