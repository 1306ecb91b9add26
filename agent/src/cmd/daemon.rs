//! `mast-agent run`: passes on a schedule until told to stop.
//!
//! The loop is: pass, note the outcome (journal and facts are already durable), choose the next delay from
//! the poll policy (interval with jitter after a success, capped exponential backoff after a transient
//! failure, never later than a held release's wave or window), sleep. A stop signal during a sleep ends
//! the loop at once; during a pass, the pass gets [`DRAIN_GRACE`] to finish and is then dropped, which is
//! safe because every step of a pass commits before the next begins.

use std::future::Future;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use super::status::document;
use super::{Agent, CommandError, describe};
use crate::config::Config;
use crate::freshness::Inputs as FreshnessInputs;
use crate::schedule::{PollOutcome, parse_retry_after};
use crate::sync::{PassError, PassOutcome, PassReport, check_drift};
use crate::telemetry::{
    ApplyOutcome, DriftKind, Endpoints, Liveness, Metrics, Notifier, Readiness, TelemetryServer,
    TufRole, Watchdog,
};
use mast_protocol::release::ReleaseNumber;

/// How long a pass in flight may run on after a stop signal.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The longest a single pass is expected to take; the watchdog lease covers it.
const PASS_BOUND: Duration = Duration::from_secs(15 * 60);

/// Runs passes until `shutdown` completes. Returns the exit code for a clean stop.
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<ExitCode, CommandError> {
    let mut agent = Agent::open(config, OffsetDateTime::now_utc())?;
    let metrics = Arc::clone(&agent.metrics);
    let readiness = Readiness::new();
    readiness.state_db_opened();
    readiness.set_trusted_root(config.root.version);
    // An agent that boots with every mirror down reports the refresh it last completed and whether
    // that makes it stale from its first scrape on, before its first pass fails.
    let freshness = FreshnessInputs::read(&agent.state).map_err(CommandError::State)?;
    metrics.set_freshness(freshness.clone());
    let snapshot = Arc::new(Mutex::new((
        document(&agent.state, 10, OffsetDateTime::now_utc()).map_err(CommandError::State)?,
        freshness,
    )));
    let notifier = Notifier::from_env().map_err(|e| CommandError::Other(e.to_string()))?;
    let watchdog = Watchdog::from_env().map_err(|e| CommandError::Other(e.to_string()))?;
    let liveness = Liveness::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // A dropped sender also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = config.listen {
        let source = Arc::clone(&snapshot);
        // Staleness is judged when asked: it grows while the loop sleeps.
        let status = move || {
            let (mut doc, freshness) = source
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            doc["freshness"] = freshness.assess(OffsetDateTime::now_utc()).to_json();
            doc
        };
        let endpoints = Endpoints::new(Arc::clone(&metrics), readiness.clone(), Arc::new(status));
        let server = TelemetryServer::bind(addr, endpoints)
            .await
            .map_err(|e| CommandError::Other(format!("listen {addr}: {e}")))?;
        tasks.spawn(server.serve(stopped(stop_rx.clone())));
    }
    if let Some(watchdog) = watchdog {
        tasks.spawn(watchdog.run(notifier.clone(), liveness.clone(), stopped(stop_rx.clone())));
    }
    if let Err(e) = notifier.ready().await {
        tracing::warn!(error = %e, "sd_notify READY failed");
    }

    tokio::pin!(shutdown);
    let mut failures = 0u32;
    let mut last_drift: Option<tokio::time::Instant> = None;
    loop {
        liveness.renew(PASS_BOUND);
        let now = OffsetDateTime::now_utc();
        let result = tokio::select! {
            result = agent.pass(now) => Some(result),
            () = &mut shutdown => None,
        };
        let result = match result {
            Some(result) => result,
            None => {
                tracing::info!("stop requested during a pass; draining");
                match tokio::time::timeout(DRAIN_GRACE, agent.pass(now)).await {
                    Ok(_) | Err(_) => break,
                }
            }
        };
        record(&metrics, &readiness, &result);
        gauges(&metrics, &agent);
        if last_drift.is_none_or(|at| at.elapsed() >= config.drift_interval) {
            drift(&mut agent, &metrics, now).await;
            last_drift = Some(tokio::time::Instant::now());
        }
        let read = FreshnessInputs::read(&agent.state)
            .and_then(|freshness| Ok((document(&agent.state, 10, now)?, freshness)));
        match read {
            Ok((doc, freshness)) => {
                metrics.set_freshness(freshness.clone());
                *snapshot.lock().unwrap_or_else(PoisonError::into_inner) = (doc, freshness);
            }
            Err(e) => tracing::warn!(error = %e, "status snapshot failed"),
        }
        let outcome = match &result {
            Ok(report) => {
                failures = 0;
                tracing::info!(outcome = %describe(&report.outcome), mirror = %report.mirror, "pass done");
                // The policy waits at least the interval whatever the mirror says: max-age can only
                // space polls further apart, up to the larger of the interval and the backoff cap.
                PollOutcome::Success {
                    max_age: report.timestamp_max_age,
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, attempt = failures, "pass failed");
                // The longest Retry-After any mirror asked for; the policy caps it.
                let retry_after = e
                    .mirror_failures()
                    .iter()
                    .filter_map(|f| f.retry_after.as_deref())
                    .filter_map(|v| parse_retry_after(v, now))
                    .max();
                PollOutcome::Failure {
                    attempt: failures,
                    retry_after,
                }
            }
        };
        let mut delay = config
            .poll
            .next_delay(outcome, random_unit())
            .min(config.drift_interval);
        if let Ok(PassReport {
            outcome: PassOutcome::Waiting { until, .. },
            ..
        }) = &result
        {
            let until = (*until - now).unsigned_abs();
            delay = delay.min(until.max(crate::schedule::MIN_DELAY));
        }
        let _ = notifier.status(&status_line(&result)).await;
        liveness.renew(delay + PASS_BOUND);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => break,
        }
    }
    let _ = notifier.stopping().await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(ExitCode::SUCCESS)
}

/// Compares the target with the running release; the findings go to the database and the metrics.
async fn drift(agent: &mut Agent, metrics: &Metrics, now: OffsetDateTime) {
    match check_drift(
        &mut agent.state,
        &agent.site.channel,
        agent.applier.as_mut(),
        now,
    )
    .await
    {
        Ok(Some(report)) => {
            let missing = report
                .findings
                .iter()
                .filter(|f| f.detail == "missing")
                .count();
            let modified = report.findings.len() - missing;
            metrics.set_drift_findings(DriftKind::Missing, missing as u64);
            metrics.set_drift_findings(DriftKind::Modified, modified as u64);
            if !report.findings.is_empty() {
                tracing::warn!(
                    release = report.release,
                    objects = report.findings.len(),
                    corrected = report.corrected,
                    "drift found"
                );
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "drift check failed"),
    }
}

/// The gauges read from the database after a pass: trusted versions, current and desired release.
fn gauges(metrics: &Metrics, agent: &Agent) {
    let channel = &agent.site.channel;
    let versions = agent.state.trusted_versions().unwrap_or_default();
    for (role, version) in versions {
        let role = match role.as_str() {
            "root" => TufRole::Root,
            "timestamp" => TufRole::Timestamp,
            "snapshot" => TufRole::Snapshot,
            "targets" => TufRole::Targets,
            _ => continue,
        };
        metrics.set_trusted_version(role, version);
    }
    let release = |n: Option<u64>| n.and_then(|n| ReleaseNumber::new(n).ok());
    if let Some(current) = release(agent.state.current_release(channel.as_str()).ok().flatten()) {
        metrics.set_current_release(channel, current);
    }
    if let Some(desired) = release(agent.state.highest_release(channel.as_str()).ok().flatten()) {
        metrics.set_desired_release(channel, desired);
    }
}

fn record(metrics: &Metrics, readiness: &Readiness, result: &Result<PassReport, PassError>) {
    use crate::telemetry::PollOutcome as Polled;
    let polled = match result {
        Ok(report) => {
            readiness.pass_completed();
            for skipped in &report.skipped {
                metrics.record_mirror_skip(&skipped.mirror);
            }
            if let PassOutcome::Applied { .. } = report.outcome {
                metrics.record_apply(ApplyOutcome::Healthy);
            }
            if let PassOutcome::RolledBack { .. } = report.outcome {
                metrics.record_apply(ApplyOutcome::RolledBack);
            }
            match report.outcome {
                PassOutcome::Applied { .. } | PassOutcome::Waiting { .. } => Polled::Updated,
                _ => Polled::Unchanged,
            }
        }
        Err(PassError::NoMirror(failures)) => {
            for failure in failures {
                metrics.record_mirror_skip(&failure.mirror);
            }
            Polled::Unreachable
        }
        Err(PassError::Content { .. } | PassError::Release(_) | PassError::Bundle { .. }) => {
            Polled::Rejected
        }
        Err(e) => {
            if !e.is_transient() {
                readiness.pass_failed_hard(e.to_string());
            }
            Polled::Failed
        }
    };
    metrics.record_poll(polled);
}

fn status_line(result: &Result<PassReport, PassError>) -> String {
    match result {
        Ok(report) => describe(&report.outcome),
        Err(e) => format!("last pass failed: {e}"),
    }
}

/// A uniform value in `[0, 1)` for jitter. The system's random source; if it fails, no jitter is better
/// than no agent.
fn random_unit() -> f64 {
    getrandom::u64().map_or(0.0, |n| (n >> 11) as f64 / (1u64 << 53) as f64)
}
