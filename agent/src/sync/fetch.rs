//! The fetch phase of a pass: the signed chunk index, then the chunks the site lacks — from one
//! `bundle.tar.gz` on a first install when that costs about the same bytes, else up to
//! [`CHUNKS_IN_FLIGHT`] chunk requests at once — stored in batched transactions, then the release staged.

use mast_mirror::MirrorRead;
use mast_mirror::client::{ClientError, fetch_target};
use mast_protocol::bundle::{ChunkIndex, ChunkRef, IndexLimits};
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::SelectedRelease;
use time::OffsetDateTime;

use futures_util::FutureExt as _;
use futures_util::stream::{FuturesUnordered, StreamExt as _};

use super::{MirrorFailure, PassError, PassReport, failure};
use crate::fetch::{BundleFillError, ObjectError, fetch_chunk, fill_from_bundle};
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

/// How many more bytes than its chunks a first install may move to read the whole bundle in one request
/// instead: a tenth. gzip over the whole tar and zstd per chunk come out within a few percent of each
/// other on data that does not compress (the bundle wins on requests), while on YAML zstd per chunk can
/// be a third smaller (the chunks win on bytes, which is what a metered link pays for).
const BUNDLE_ALLOWANCE_PERCENT: u64 = 10;

/// Fetches the index and every chunk the site lacks, trying mirrors from `first` on; stages the release.
pub(super) async fn fetch_release<M: MirrorRead>(
    state: &mut State,
    mirrors: &[M],
    first: usize,
    selected: &SelectedRelease,
    now: OffsetDateTime,
    metrics: &Metrics,
    report: &mut PassReport,
) -> Result<ChunkIndex, PassError> {
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
    if report.chunks_held == 0 && bundle_pays(selected.bundle.file.length, &missing) {
        missing = first_install(
            state, order[0], selected, &index, missing, now, metrics, report,
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
    Ok(index)
}

/// A first install: the site holds none of the release's chunks, and the bundle costs about as many
/// bytes as they do ([`bundle_pays`]), so one request for the whole `bundle.tar.gz` replaces one per
/// chunk — on a registry every blob request costs a lookup, on a CDN a
/// round trip. The chunks are recreated from it and stored only when they are the signed blobs; what it
/// did not give (a failed read, a mirror that lied, a zstd that frames a chunk differently) is returned,
/// to be fetched as chunks from every mirror in turn.
#[allow(clippy::too_many_arguments)]
async fn first_install<'i, M: MirrorRead>(
    state: &mut State,
    mirror: &M,
    selected: &SelectedRelease,
    index: &ChunkIndex,
    missing: Vec<&'i ChunkRef>,
    now: OffsetDateTime,
    metrics: &Metrics,
    report: &mut PassReport,
) -> Result<Vec<&'i ChunkRef>, PassError> {
    match fill_from_bundle(mirror, &selected.bundle, index, state, now).await {
        Ok(fill) => {
            report.bytes_fetched += fill.fetched;
            report.chunks_fetched += fill.stored;
        }
        Err(BundleFillError::State(e)) => return Err(e.into()),
        Err(BundleFillError::Object(e)) => {
            tracing::warn!(error = %e, "first install from the bundle failed; fetching chunks");
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
    Ok(still)
}

/// Whether reading the whole bundle (`bundle_length` bytes, one request) beats fetching `missing`, a
/// request each: only when it moves at most [`BUNDLE_ALLOWANCE_PERCENT`] more bytes on the link.
fn bundle_pays(bundle_length: u64, missing: &[&ChunkRef]) -> bool {
    if missing.len() < 2 {
        return false;
    }
    let chunks: u64 = missing
        .iter()
        .map(|entry| entry.length() + REQUEST_WIRE_BYTES)
        .sum();
    bundle_length + REQUEST_WIRE_BYTES <= chunks + chunks * BUNDLE_ALLOWANCE_PERCENT / 100
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
    fn the_bundle_is_read_only_when_it_costs_at_most_a_tenth_more_than_its_chunks() {
        let tar: Vec<u8> = (0..400_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let (index, _) = ChunkIndex::build(&tar, &ChunkParams::default()).unwrap();
        let missing: Vec<&ChunkRef> = index.chunks().iter().collect();
        assert!(missing.len() >= 2);
        let chunks: u64 = missing
            .iter()
            .map(|e| e.length() + REQUEST_WIRE_BYTES)
            .sum();
        let limit = chunks + chunks / 10 - REQUEST_WIRE_BYTES;
        assert!(bundle_pays(limit, &missing));
        assert!(!bundle_pays(limit + 1, &missing));
        // One chunk or none: nothing to save.
        assert!(!bundle_pays(1, &missing[..1]));
        assert!(!bundle_pays(1, &[]));
    }
}
