//! One sync pass: refresh trust, pick the channel's release, fetch what is missing, apply when allowed.
//!
//! A pass moves through fixed phases, each ending in a durable record before the next begins:
//!
//! 1. **Refresh** — the TUF workflow against each mirror in order until one gives a complete, verified
//!    refresh; every newly trusted file is committed to SQLite before it is used. A mirror that fails (down,
//!    lying, stale, rolled back) is recorded and the next one is tried.
//! 2. **Select** — the channel's newest release in the trusted targets, refusing one below the highest
//!    release this site ever recorded, or one that needs a newer agent.
//! 3. **Fetch** — the signed chunk index, then only the chunks the site does not hold, up to
//!    [`CHUNKS_IN_FLIGHT`] at once, each checked against the index before zstd sees it; a chunk that
//!    fails on one mirror is fetched from the next. Verified chunks are stored in batched transactions as
//!    they arrive, so a crash keeps what was fetched. The release is then `staged` in the journal.
//! 4. **Gate** — the release's rollout wave for this site's seed and the change windows say whether to
//!    apply now.
//! 5. **Apply** — the tar is rebuilt from the local store and checked against the signed digest, walked
//!    with the safe walker, and handed to the [`Applier`]; the journal records `applied` and `healthy`.
//!
//! A pass that fails at any point leaves the site as it was: what runs keeps running, and nothing is ever
//! removed because a mirror or the network is gone.

mod fetch;
mod observe;

use std::time::Duration;

use mast_mirror::client::{Client, ClientError, TimestampRead, Validators};
use mast_mirror::{Mirror, MirrorRead};
use mast_protocol::bundle::options::{BundleOptions, Drift, OPTIONS_FILES};
use mast_protocol::bundle::{ChunkIndex, IndexLimits, Reassembler, TarFile, WalkLimits, walk};
use mast_protocol::release::{
    AgentVersion, Channel, ReleaseError, ReleaseNumber, SelectedRelease, select_release,
};
use mast_protocol::tuf::{Limits, TrustedMetadata};
use time::OffsetDateTime;

use crate::apply::{Applier, ApplyError, ApplyReport, ApplyRequest, DriftFinding, Health};
use crate::schedule::{ApplyGate, ChangeWindows, parse_max_age};
use crate::state::{JournalState, State, StateError, rfc3339};
use crate::telemetry::Metrics;

pub use fetch::CHUNKS_IN_FLIGHT;
pub use observe::{Observed, mirror_kind};

/// What a site is, for a pass: its channel, rollout seed, change windows and agent version.
#[derive(Debug, Clone)]
pub struct Site {
    /// The channel followed.
    pub channel: Channel,
    /// The rollout seed, from the cluster id.
    pub seed: u16,
    /// When releases may be applied.
    pub windows: ChangeWindows,
    /// This agent's version, checked against a release's minimum.
    pub agent_version: AgentVersion,
}

/// How a pass ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// The channel has no release yet.
    NoRelease,
    /// The site already runs the channel's newest release (or holds back from one that failed here).
    UpToDate {
        /// The release the site runs.
        release: u64,
    },
    /// The newest release was fetched, verified and applied.
    Applied {
        /// The release.
        release: u64,
        /// What the applier did.
        report: ApplyReport,
    },
    /// The newest release is held locally and waits for its wave or a change window.
    Waiting {
        /// The release.
        release: u64,
        /// When it may be applied.
        until: OffsetDateTime,
    },
    /// The newest release's rollout does not include this site.
    NotInRollout {
        /// The release.
        release: u64,
    },
    /// The newest release failed to apply or failed its health gate, and the last healthy release was
    /// put back from the local store. The failed release is not retried until a newer one appears.
    RolledBack {
        /// The release that failed.
        failed: u64,
        /// The release put back.
        to: u64,
        /// Why the new release failed.
        reason: String,
    },
}

/// One mirror's failure during a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorFailure {
    /// The mirror.
    pub mirror: String,
    /// Why it was skipped.
    pub reason: String,
    /// The `Retry-After` it sent with a refusal (a 429 or 503), as sent, for the scheduler.
    pub retry_after: Option<String>,
}

/// What a pass did, successful or not, for logs, metrics and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// How it ended.
    pub outcome: PassOutcome,
    /// The mirror whose metadata was trusted.
    pub mirror: String,
    /// Mirrors skipped on the way, with why.
    pub skipped: Vec<MirrorFailure>,
    /// Content bytes fetched (index and chunks; metadata not counted).
    pub bytes_fetched: u64,
    /// Chunks fetched.
    pub chunks_fetched: usize,
    /// Chunks the release needed that the site already held.
    pub chunks_held: usize,
    /// The `max-age` of the `Cache-Control` the trusted mirror sent with `timestamp.json`, for the
    /// scheduler (which never polls sooner than its interval because of it).
    pub timestamp_max_age: Option<Duration>,
}

/// Why a pass failed. Every variant leaves the site running what it ran.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// No root is trusted yet (the caller seeds the configured root first).
    #[error("no trusted root in the state database")]
    NoRoot,
    /// The trusted state in the database no longer verifies.
    #[error("trusted metadata in the state database: {0}")]
    Trust(String),
    /// Every mirror failed to give a verified refresh.
    #[error("no mirror gave verifiable metadata: {}", list(.0))]
    NoMirror(Vec<MirrorFailure>),
    /// The trusted targets name a release this agent refuses.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// Every mirror failed to serve the release's content as signed.
    #[error(
        "release {release}: no mirror served its content as signed: {}",
        list(failures)
    )]
    Content {
        /// The release.
        release: u64,
        /// Each mirror's failure.
        failures: Vec<MirrorFailure>,
    },
    /// The release's signed fields disagree with its index, or the rebuilt tar does not walk.
    #[error("release {release}: {reason}")]
    Bundle {
        /// The release.
        release: u64,
        /// What is wrong.
        reason: String,
    },
    /// The applier failed.
    #[error("release {release}: applying: {source}")]
    Apply {
        /// The release.
        release: u64,
        /// The applier's error.
        #[source]
        source: ApplyError,
    },
    /// The release's objects did not become healthy in time.
    #[error("release {release}: health gate: {reason}")]
    Unhealthy {
        /// The release.
        release: u64,
        /// Which object, and why.
        reason: String,
    },
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
}

impl PassError {
    /// Whether the failure is expected to pass by itself (a link or mirror problem) rather than needing
    /// an operator (a bad release, a broken database): the scheduler backs off on the first kind and
    /// raises an alarm on the second.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::NoMirror(_)
                | Self::Content { .. }
                | Self::Apply {
                    source: ApplyError::Unavailable { .. },
                    ..
                }
        )
    }

    /// The mirrors' failures, when the pass failed because of them.
    pub fn mirror_failures(&self) -> &[MirrorFailure] {
        match self {
            Self::NoMirror(failures) | Self::Content { failures, .. } => failures,
            _ => &[],
        }
    }
}

/// Runs one pass. `mirrors` are tried in order; `now` is the pass's one instant (TUF §5.1). Requests,
/// "not modified" answers and refused bytes are counted in `metrics`.
pub async fn run_pass(
    state: &mut State,
    mirrors: &[Mirror],
    site: &Site,
    applier: &mut dyn Applier,
    now: OffsetDateTime,
    metrics: &Metrics,
) -> Result<PassReport, PassError> {
    let mirrors: Vec<Observed<'_>> = mirrors.iter().map(|m| Observed::new(m, metrics)).collect();
    let mirrors = &mirrors[..];
    let refreshed = refresh(state, mirrors, now, metrics).await?;
    let (first, trusted) = (refreshed.position, refreshed.trusted);
    let mut report = PassReport {
        outcome: PassOutcome::NoRelease,
        mirror: mirrors[first].describe(),
        skipped: refreshed.failures,
        bytes_fetched: 0,
        chunks_fetched: 0,
        chunks_held: 0,
        timestamp_max_age: refreshed.max_age,
    };
    state.set_facts(&[
        (crate::freshness::LAST_REFRESH_FACT, &rfc3339(now)),
        ("last_mirror", &report.mirror),
    ])?;

    let Some(selected) = select(state, &trusted, site)? else {
        return Ok(report);
    };
    let number = selected.release.number.get();
    let current = state.current_release(site.channel.as_str())?;
    if current == Some(number) {
        report.outcome = PassOutcome::UpToDate { release: number };
        return Ok(report);
    }
    if state.has_failed(site.channel.as_str(), number)? {
        // A release that failed here is not retried until a newer one appears. The rollback from it
        // is finished first if the API server interrupted it: the cluster may hold part of it still.
        if let Some(previous) = current
            && let Some(reason) = interrupted_rollback(state, &site.channel, number, previous)?
        {
            tracing::warn!(
                release = number,
                to = previous,
                "finishing an interrupted rollback"
            );
            rollback(state, &site.channel, previous, &reason, applier, now).await?;
            report.outcome = PassOutcome::RolledBack {
                failed: number,
                to: previous,
                reason,
            };
            return Ok(report);
        }
        report.outcome = PassOutcome::UpToDate {
            release: current.unwrap_or(0),
        };
        return Ok(report);
    }

    let gate = ApplyGate::decide(
        selected.release.waves.decision(site.seed, now),
        &site.windows,
        now,
    );
    // A release held for its wave or window is fetched and stored now, its tar built only when applied.
    let apply_now = gate == ApplyGate::ApplyNow;
    let fetched = fetch::fetch_release(
        state,
        mirrors,
        first,
        &selected,
        apply_now,
        now,
        metrics,
        &mut report,
    )
    .await?;
    match gate {
        ApplyGate::ApplyNow => {}
        ApplyGate::WaitUntil(until) => {
            report.outcome = PassOutcome::Waiting {
                release: number,
                until,
            };
            return Ok(report);
        }
        ApplyGate::NotInRollout => {
            report.outcome = PassOutcome::NotInRollout { release: number };
            return Ok(report);
        }
    }
    let tar = match fetched.tar {
        Some(tar) => tar,
        None => rebuild(state, number, &fetched.index)?,
    };
    match apply_release(state, &site.channel, number, &tar, applier, now).await {
        Ok(applied) => {
            report.outcome = PassOutcome::Applied {
                release: number,
                report: applied,
            };
            Ok(report)
        }
        Err(failure) if failure.is_transient() => Err(failure),
        Err(failure @ (PassError::Apply { .. } | PassError::Unhealthy { .. })) => {
            let Some(previous) = current else {
                return Err(failure);
            };
            let reason = failure.to_string();
            tracing::warn!(release = number, to = previous, %reason, "rolling back");
            rollback(state, &site.channel, previous, &reason, applier, now).await?;
            report.outcome = PassOutcome::RolledBack {
                failed: number,
                to: previous,
                reason,
            };
            Ok(report)
        }
        Err(other) => Err(other),
    }
}

/// Puts release `to` back from the local store alone (no network) after `reason` failed the newer one,
/// and records it as `rolled_back`.
pub async fn rollback(
    state: &mut State,
    channel: &Channel,
    to: u64,
    reason: &str,
    applier: &mut dyn Applier,
    now: OffsetDateTime,
) -> Result<ApplyReport, PassError> {
    let index = stored_index(state, channel, to)?;
    let tar = rebuild(state, to, &index)?;
    let report = apply_release(state, channel, to, &tar, applier, now).await?;
    state.journal_append(channel.as_str(), to, JournalState::RolledBack, reason, now)?;
    Ok(report)
}

/// Applies a release's tar, verified against its signed index (put together while fetching, or rebuilt
/// from the local store), waits for its health gate and records each step in the journal (`applied`,
/// then `healthy` or `failed`). The network is never needed: this is also the rollback path and the
/// offline boot.
pub async fn apply_release(
    state: &mut State,
    channel: &Channel,
    release: u64,
    tar: &[u8],
    applier: &mut dyn Applier,
    now: OffsetDateTime,
) -> Result<ApplyReport, PassError> {
    let (files, options) = unpack(tar, release)?;
    let name = channel.as_str();
    let previous = state.inventory(name)?;
    let request = ApplyRequest {
        channel,
        release,
        files: &files,
        options: &options,
        previous: &previous,
    };
    let failed = |state: &mut State, e: PassError| -> Result<ApplyReport, PassError> {
        // An unavailable cluster is not the release's failure: no journal entry, no rollback; the next
        // pass applies the release again.
        if let PassError::Apply {
            source: ApplyError::Unavailable { .. },
            ..
        } = e
        {
            return Err(e);
        }
        state.journal_append(name, release, JournalState::Failed, &e.to_string(), now)?;
        Err(e)
    };
    let applied = match applier.apply(&request).await {
        Ok(applied) => applied,
        Err(source) => return failed(state, PassError::Apply { release, source }),
    };
    state.set_inventory(name, release, &applied.inventory, now)?;
    state.journal_append(name, release, JournalState::Applied, "", now)?;
    match applier.wait_healthy(&request, options.health_timeout).await {
        Ok(Health::Healthy) => {}
        Ok(Health::Unhealthy { reason }) => {
            return failed(state, PassError::Unhealthy { release, reason });
        }
        Err(source) => return failed(state, PassError::Apply { release, source }),
    }
    state.journal_append(name, release, JournalState::Healthy, "", now)?;
    Ok(applied)
}

/// What a drift check found, and whether it corrected it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftReport {
    /// The release compared with.
    pub release: u64,
    /// The differences found.
    pub findings: Vec<DriftFinding>,
    /// Whether the release was re-applied to correct them (the bundle's `drift = "correct"`).
    pub corrected: bool,
}

/// Compares the live target with the release the site runs, records the findings, and re-applies the
/// release when the bundle asks for correction. Needs no network. `None` when nothing runs yet.
pub async fn check_drift(
    state: &mut State,
    channel: &Channel,
    applier: &mut dyn Applier,
    now: OffsetDateTime,
) -> Result<Option<DriftReport>, PassError> {
    let Some(release) = state.current_release(channel.as_str())? else {
        return Ok(None);
    };
    let index = stored_index(state, channel, release)?;
    let tar = rebuild(state, release, &index)?;
    let (files, options) = unpack(&tar, release)?;
    let previous = state.inventory(channel.as_str())?;
    let request = ApplyRequest {
        channel,
        release,
        files: &files,
        options: &options,
        previous: &previous,
    };
    let findings = applier
        .drift(&request)
        .await
        .map_err(|source| PassError::Apply { release, source })?;
    let corrected = !findings.is_empty() && options.drift == Drift::Correct;
    if corrected {
        applier
            .apply(&request)
            .await
            .map_err(|source| PassError::Apply { release, source })?;
    }
    let rows: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f.object.as_str(), f.detail.as_str()))
        .collect();
    state.record_drift(channel.as_str(), release, &rows, corrected, now)?;
    Ok(Some(DriftReport {
        release,
        findings,
        corrected,
    }))
}

/// Why `failed` failed, when its rollback to `previous` did not finish: the journal ends with `failed`
/// for it (the rollback's apply never completed) or with `applied` for `previous` (its health gate never
/// completed). Both happen when the API server became unavailable during the rollback.
fn interrupted_rollback(
    state: &State,
    channel: &Channel,
    failed: u64,
    previous: u64,
) -> Result<Option<String>, PassError> {
    let Some(last) = state.last_journal_entry(channel.as_str())? else {
        return Ok(None);
    };
    Ok(match last.state {
        JournalState::Failed if last.release == failed => Some(last.detail),
        JournalState::Applied if last.release == previous => Some(format!(
            "release {failed} failed; the rollback was interrupted"
        )),
        _ => None,
    })
}

/// The verified chunk index of a release fetched earlier.
fn stored_index(state: &State, channel: &Channel, release: u64) -> Result<ChunkIndex, PassError> {
    let bad = |reason: String| PassError::Bundle { release, reason };
    let bytes = state
        .chunk_index(channel.as_str(), release)?
        .ok_or_else(|| bad("its chunk index is not in the local store".to_owned()))?;
    ChunkIndex::from_slice(&bytes, &IndexLimits::default())
        .map_err(|e| bad(format!("stored chunk index: {e}")))
}

/// Rebuilds the release's tar from the local store, checking every chunk and the whole.
fn rebuild(state: &State, release: u64, index: &ChunkIndex) -> Result<Vec<u8>, PassError> {
    let bad = |reason: String| PassError::Bundle { release, reason };
    let mut reassembler = Reassembler::new(index);
    let mut tar = Vec::with_capacity(usize::try_from(index.tar_length()).unwrap_or(0));
    while let Some(entry) = reassembler.next_chunk() {
        let compressed = state.chunk(&entry.sha256())?.ok_or_else(|| {
            bad(format!(
                "chunk {} is not in the local store",
                entry.sha256()
            ))
        })?;
        let raw = reassembler
            .feed(&compressed)
            .map_err(|e| bad(format!("local chunk {}: {e}", entry.sha256())))?;
        tar.extend_from_slice(&raw);
    }
    reassembler.finish().map_err(|e| bad(e.to_string()))?;
    Ok(tar)
}

/// The release's manifests (the options file taken out) and its options.
fn unpack(tar: &[u8], release: u64) -> Result<(Vec<TarFile<'_>>, BundleOptions), PassError> {
    let bad = |reason: String| PassError::Bundle { release, reason };
    let mut files = walk(tar, &WalkLimits::default()).map_err(|e| bad(e.to_string()))?;
    let mut options = BundleOptions::default();
    if let Some(at) = files
        .iter()
        .position(|f| OPTIONS_FILES.contains(&f.path.as_str()))
    {
        let file = files.remove(at);
        options =
            BundleOptions::parse(file.path.as_str(), file.data).map_err(|e| bad(e.to_string()))?;
    }
    Ok((files, options))
}

/// What a refresh gave: the mirror that served it, what is now trusted, who failed before it.
struct Refreshed {
    position: usize,
    trusted: TrustedMetadata,
    failures: Vec<MirrorFailure>,
    max_age: Option<Duration>,
}

/// Walks the mirrors until one refreshes; returns its position, the trusted metadata and the failures.
async fn refresh<M: MirrorRead>(
    state: &mut State,
    mirrors: &[M],
    now: OffsetDateTime,
    metrics: &Metrics,
) -> Result<Refreshed, PassError> {
    let mut failures = Vec::new();
    for (position, mirror) in mirrors.iter().enumerate() {
        // Each attempt starts from what is durably trusted, including what a failed attempt stored.
        let files = state.trusted()?;
        let persisted = files.persisted().ok_or(PassError::NoRoot)?;
        let (trusted, _discarded) = TrustedMetadata::from_persisted(persisted)
            .map_err(|e| PassError::Trust(e.to_string()))?;
        let key = validators_key(mirror);
        let validators = state
            .fact(&key)?
            .and_then(|fact| parse_validators(&fact, now));
        let mut client = Client::new(
            mirror,
            state.trust_store(now),
            trusted,
            now,
            Limits::default(),
        );
        if let Some(validators) = validators {
            client = client.revalidate_timestamp(validators);
        }
        match client.refresh().await {
            Ok(()) => {
                let trusted = client.trusted().clone();
                let read = client.timestamp_read().clone();
                let max_age = client.timestamp_cache_control().and_then(parse_max_age);
                drop(client);
                // The validators go with the timestamp this mirror gave and the refresh kept: the next
                // idle poll of this mirror is then one conditional request answered "not modified".
                // Fetched without usable validators (too fresh to be strong) replaces older ones too.
                if let TimestampRead::Fetched(validators) = read {
                    state.set_fact(&key, &format_validators(&validators, now))?;
                }
                return Ok(Refreshed {
                    position,
                    trusted,
                    failures,
                    max_age,
                });
            }
            Err(e) => {
                tracing::warn!(mirror = %mirror.describe(), error = %e, "mirror skipped");
                if let ClientError::Tuf(tuf) = &e {
                    metrics.record_verification_failure(tuf.kind());
                }
                failures.push(failure(mirror, &e));
            }
        }
    }
    Err(PassError::NoMirror(failures))
}

fn select(
    state: &State,
    trusted: &TrustedMetadata,
    site: &Site,
) -> Result<Option<SelectedRelease>, PassError> {
    let Some(targets) = trusted.targets() else {
        return Ok(None);
    };
    let highest = state
        .highest_release(site.channel.as_str())?
        .and_then(|n| ReleaseNumber::new(n).ok());
    let selected = select_release(
        targets
            .signed
            .targets
            .iter()
            .map(|(name, file)| (name.as_str(), file)),
        &site.channel,
        highest,
        &site.agent_version,
    )?;
    Ok(selected)
}

/// The fact under which a mirror's `timestamp.json` validators are kept.
fn validators_key(mirror: &impl MirrorRead) -> String {
    format!("timestamp_validators {}", mirror.describe())
}

/// How long a mirror's `timestamp.json` validators are used before one unconditional read. A mirror
/// that answers "not modified" to everything would otherwise hold a site on its trusted timestamp until
/// that expires (days); a full read of the small file once an hour bounds the freeze to the hour.
const REVALIDATE_FOR: time::Duration = time::Duration::hours(1);

/// Validators as a fact: the ETag, the Last-Modified and when they were obtained (Unix seconds), one a
/// line (none of them can hold a newline).
fn format_validators(v: &Validators, now: OffsetDateTime) -> String {
    format!(
        "{}\n{}\n{}",
        v.etag.as_deref().unwrap_or(""),
        v.last_modified.as_deref().unwrap_or(""),
        now.unix_timestamp()
    )
}

/// The validators to revalidate with at `now`, unless there are none or they are too old.
fn parse_validators(fact: &str, now: OffsetDateTime) -> Option<Validators> {
    let mut lines = fact.split('\n');
    let (etag, last_modified) = (lines.next()?, lines.next()?);
    let obtained = OffsetDateTime::from_unix_timestamp(lines.next()?.parse().ok()?).ok()?;
    if now - obtained >= REVALIDATE_FOR || obtained > now {
        return None;
    }
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let validators = Validators {
        etag: some(etag),
        last_modified: some(last_modified),
    };
    (validators.etag.is_some() || validators.last_modified.is_some()).then_some(validators)
}

fn failure(mirror: &impl MirrorRead, error: &ClientError) -> MirrorFailure {
    let retry_after = match error {
        ClientError::Mirror(e) => e.retry_after().map(str::to_owned),
        _ => None,
    };
    MirrorFailure {
        mirror: mirror.describe(),
        reason: error.to_string(),
        retry_after,
    }
}

fn list(failures: &[MirrorFailure]) -> String {
    if failures.is_empty() {
        return "no mirror configured".to_owned();
    }
    failures
        .iter()
        .map(|f| format!("{}: {}", f.mirror, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn validators_round_trip_and_expire_after_an_hour() {
        let at = datetime!(2026-11-29 12:00 UTC);
        let v = Validators {
            etag: Some("\"6e1a-1f4\"".to_owned()),
            last_modified: Some("Sun, 29 Nov 2026 11:00:00 GMT".to_owned()),
        };
        let fact = format_validators(&v, at);
        assert_eq!(
            parse_validators(&fact, at + time::Duration::minutes(59)),
            Some(v)
        );
        assert_eq!(parse_validators(&fact, at + time::Duration::hours(1)), None);
        // A clock that went backwards does not extend them either.
        assert_eq!(
            parse_validators(&fact, at - time::Duration::minutes(1)),
            None
        );
        let empty = format_validators(&Validators::default(), at);
        assert_eq!(parse_validators(&empty, at), None);
        assert_eq!(parse_validators("garbage", at), None);
    }
}
