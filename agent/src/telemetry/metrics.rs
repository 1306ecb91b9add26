//! The agent's Prometheus metrics, as typed families behind one struct.
//!
//! Every update is an atomic add or store on a series found by a read-locked hash lookup, so the struct is
//! shared as `Arc<Metrics>` by every task. Hot paths that count bytes per read take the series once with
//! [`Metrics::received_bytes_counter`] and keep it.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use mast_protocol::release::{Channel, ReleaseNumber};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::freshness::Inputs as FreshnessInputs;

use super::labels::{
    ApplyOutcome, DriftKind, FileKind, MirrorKind, PollOutcome, StatusClass, TufRole,
    VerificationFailure,
};

/// The text format a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// OpenMetrics 1.0 text, what Prometheus asks for first in its `Accept` header.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4, for scrapers that do not ask for OpenMetrics.
    PrometheusText,
}

/// Every metric the agent exports. See `docs/observability.md` for the list with meanings.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    polls: Family<PollLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    received_bytes: Family<TransferLabels, Counter>,
    not_modified: Family<MirrorKindLabel, Counter>,
    verification_failures: Family<ReasonLabel, Counter>,
    mirror_skips: Family<MirrorLabel, Counter>,
    last_successful_refresh: Gauge,
    trusted_versions: Family<RoleLabel, Gauge>,
    current_release: Family<ChannelLabel, Gauge>,
    desired_release: Family<ChannelLabel, Gauge>,
    applies: Family<ApplyLabel, Counter>,
    drift_findings: Family<DriftLabel, Gauge>,
    download_resumes: Family<MirrorKindLabel, Counter>,
    chunk_reuse_bytes: Counter,
    metadata_expiry: Family<RoleLabel, Gauge>,
    stale: Gauge,
    /// What `stale` is judged from at each scrape: staleness grows while the agent sleeps in backoff,
    /// so it cannot be a value the sync loop set at its last pass.
    freshness: Mutex<Option<FreshnessInputs>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PollLabel {
    outcome: PollOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApplyLabel {
    outcome: ApplyOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    mirror_kind: MirrorKind,
    file_kind: FileKind,
    status: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransferLabels {
    mirror_kind: MirrorKind,
    file_kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MirrorKindLabel {
    mirror_kind: MirrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: VerificationFailure,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MirrorLabel {
    mirror: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RoleLabel {
    role: TufRole,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DriftLabel {
    kind: DriftKind,
}

impl ExpositionFormat {
    /// The format a scraper's `Accept` header asks for: OpenMetrics when it names it, else 0.0.4 text.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::PrometheusText,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `mast_agent_` prefix, with every series of a closed label set
    /// already at zero.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("mast_agent"),
            polls: Family::default(),
            requests: Family::default(),
            received_bytes: Family::default(),
            not_modified: Family::default(),
            verification_failures: Family::default(),
            mirror_skips: Family::default(),
            last_successful_refresh: Gauge::default(),
            trusted_versions: Family::default(),
            current_release: Family::default(),
            desired_release: Family::default(),
            applies: Family::default(),
            drift_findings: Family::default(),
            download_resumes: Family::default(),
            chunk_reuse_bytes: Counter::default(),
            metadata_expiry: Family::default(),
            stale: Gauge::default(),
            freshness: Mutex::new(None),
        };
        metrics.prefill();
        metrics.register();
        metrics
    }

    /// Counts a finished poll.
    pub fn record_poll(&self, outcome: PollOutcome) {
        self.polls.get_or_create(&PollLabel { outcome }).inc();
    }

    /// Counts a request to a mirror that ended with `status` (see [`StatusClass::from_code`]).
    pub fn record_request(
        &self,
        mirror_kind: MirrorKind,
        file_kind: FileKind,
        status: StatusClass,
    ) {
        let labels = RequestLabels {
            mirror_kind,
            file_kind,
            status,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Adds `bytes` of response body received.
    pub fn record_received_bytes(&self, mirror_kind: MirrorKind, file_kind: FileKind, bytes: u64) {
        self.received_bytes_counter(mirror_kind, file_kind)
            .inc_by(bytes);
    }

    /// The counter of response body bytes received from one mirror kind for one file kind, for a
    /// reader that adds to it on every piece it reads without a lookup each time. It shares its value
    /// with the registered series.
    pub fn received_bytes_counter(&self, mirror_kind: MirrorKind, file_kind: FileKind) -> Counter {
        let labels = TransferLabels {
            mirror_kind,
            file_kind,
        };
        self.received_bytes.get_or_create_owned(&labels)
    }

    /// Counts a `304 Not Modified` (also counted in [`record_request`](Self::record_request) as `3xx`).
    pub fn record_not_modified(&self, mirror_kind: MirrorKind) {
        self.not_modified
            .get_or_create(&MirrorKindLabel { mirror_kind })
            .inc();
    }

    /// Counts bytes refused by verification.
    pub fn record_verification_failure(&self, reason: impl Into<VerificationFailure>) {
        let reason = reason.into();
        self.verification_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a mirror put in backoff. `mirror` is the mirror as configured, with any credentials removed:
    /// it becomes a label value.
    pub fn record_mirror_skip(&self, mirror: &str) {
        let labels = MirrorLabel {
            mirror: mirror.to_owned(),
        };
        self.mirror_skips.get_or_create(&labels).inc();
    }

    /// Records the time of a refresh that ended with verified, current metadata. Times before 1970 (a
    /// site whose clock was never set) are recorded as 0 rather than as a negative age.
    pub fn set_last_successful_refresh(&self, at: SystemTime) {
        let seconds = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| saturating_i64(since.as_secs()));
        self.last_successful_refresh.set(seconds);
    }

    /// Records what staleness is judged from (read from the state database after each pass and at
    /// start): the last refresh becomes `last_successful_refresh_timestamp_seconds` — so a restarted,
    /// offline agent reports the refresh it last completed, not none — each trusted role's expiry
    /// becomes `metadata_expiry_timestamp_seconds`, and every scrape judges `stale` from them.
    pub fn set_freshness(&self, inputs: FreshnessInputs) {
        if let Some(at) = inputs.last_refresh {
            self.last_successful_refresh.set(at.unix_timestamp().max(0));
        }
        for role in &inputs.roles {
            let role_label = match role.role {
                "root" => TufRole::Root,
                "timestamp" => TufRole::Timestamp,
                "snapshot" => TufRole::Snapshot,
                "targets" => TufRole::Targets,
                _ => continue,
            };
            self.metadata_expiry
                .get_or_create(&RoleLabel { role: role_label })
                .set(role.expires.unix_timestamp());
        }
        *self
            .freshness
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(inputs);
    }

    /// Records the version of a role's trusted metadata.
    pub fn set_trusted_version(&self, role: TufRole, version: u64) {
        self.trusted_versions
            .get_or_create(&RoleLabel { role })
            .set(saturating_i64(version));
    }

    /// Records the release running on `channel`.
    pub fn set_current_release(&self, channel: &Channel, release: ReleaseNumber) {
        let labels = ChannelLabel {
            channel: channel.as_str().to_owned(),
        };
        self.current_release
            .get_or_create(&labels)
            .set(saturating_i64(release.get()));
    }

    /// Records the newest verified release `channel` should run.
    pub fn set_desired_release(&self, channel: &Channel, release: ReleaseNumber) {
        let labels = ChannelLabel {
            channel: channel.as_str().to_owned(),
        };
        self.desired_release
            .get_or_create(&labels)
            .set(saturating_i64(release.get()));
    }

    /// Counts a finished apply.
    pub fn record_apply(&self, outcome: ApplyOutcome) {
        self.applies.get_or_create(&ApplyLabel { outcome }).inc();
    }

    /// Records the number of findings of `kind` in the last drift check (a gauge: findings disappear when
    /// corrected).
    pub fn set_drift_findings(&self, kind: DriftKind, count: u64) {
        self.drift_findings
            .get_or_create(&DriftLabel { kind })
            .set(saturating_i64(count));
    }

    /// Counts a download continued from a stored offset.
    pub fn record_download_resume(&self, mirror_kind: MirrorKind) {
        self.download_resumes
            .get_or_create(&MirrorKindLabel { mirror_kind })
            .inc();
    }

    /// Adds `bytes` that did not cross the link because their chunks were already held.
    pub fn record_chunk_reuse(&self, bytes: u64) {
        self.chunk_reuse_bytes.inc_by(bytes);
    }

    /// Renders every family in `format`, judging `stale` at this instant.
    pub fn encode(&self, format: ExpositionFormat) -> Result<String, fmt::Error> {
        // A poisoned lock still holds a whole value: it is only ever replaced, never edited in place.
        let inputs = self
            .freshness
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(inputs) = inputs.as_ref() {
            let stale = inputs.assess(time::OffsetDateTime::now_utc()).stale;
            self.stale.set(i64::from(stale));
        }
        drop(inputs);
        let mut out = String::with_capacity(8 * 1024);
        match format {
            ExpositionFormat::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
            }
            ExpositionFormat::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
            }
        }
        Ok(out)
    }

    /// Registers every family. Registration clones the families: each clone shares its series with the
    /// field kept here, which is what the `record_*` methods update.
    fn register(&mut self) {
        self.registry.register(
            "build",
            "The running agent's version",
            Info::new(vec![(
                "version".to_owned(),
                crate::AGENT_VERSION.to_owned(),
            )]),
        );
        self.registry
            .register("polls", "Sync passes by outcome", self.polls.clone());
        self.registry.register(
            "requests",
            "Requests to mirrors by mirror kind, file kind and status class",
            self.requests.clone(),
        );
        self.registry.register_with_unit(
            "received",
            "Body bytes received from mirrors by mirror kind and file kind",
            Unit::Bytes,
            self.received_bytes.clone(),
        );
        self.registry.register(
            "not_modified",
            "Conditional requests answered 304 Not Modified",
            self.not_modified.clone(),
        );
        self.registry.register(
            "verification_failures",
            "Fetched bytes refused by verification, by reason",
            self.verification_failures.clone(),
        );
        self.registry.register(
            "mirror_skips",
            "Times a mirror was put in backoff and skipped, by mirror",
            self.mirror_skips.clone(),
        );
        self.registry.register_with_unit(
            "last_successful_refresh_timestamp",
            "Unix time of the last refresh that ended with verified, current metadata",
            Unit::Seconds,
            self.last_successful_refresh.clone(),
        );
        self.registry.register(
            "trusted_metadata_version",
            "Version of the trusted metadata of each top-level TUF role",
            self.trusted_versions.clone(),
        );
        self.registry.register(
            "release_current",
            "Release number running on this site, by channel",
            self.current_release.clone(),
        );
        self.registry.register(
            "release_desired",
            "Newest verified release this site should run, by channel",
            self.desired_release.clone(),
        );
        self.registry
            .register("applies", "Applies by outcome", self.applies.clone());
        self.registry.register(
            "drift_findings",
            "Applied objects found drifted in the last drift check, by kind",
            self.drift_findings.clone(),
        );
        self.registry.register(
            "download_resumes",
            "Downloads continued from a stored offset instead of from zero",
            self.download_resumes.clone(),
        );
        self.registry.register_with_unit(
            "metadata_expiry_timestamp",
            "Unix time at which the trusted metadata of each top-level TUF role expires",
            Unit::Seconds,
            self.metadata_expiry.clone(),
        );
        self.registry.register(
            "stale",
            "1 when the site is stale: no refresh completed within stale_after, or trusted metadata \
             expired or no longer verifying (docs/agent.md)",
            self.stale.clone(),
        );
        self.registry.register_with_unit(
            "chunk_reuse_saved",
            "Bytes not downloaded because the chunks were already held",
            Unit::Bytes,
            self.chunk_reuse_bytes.clone(),
        );
    }

    /// Creates every series of the closed label sets at zero. Only a lookup: the guard each returns is
    /// dropped at once.
    fn prefill(&self) {
        for &outcome in PollOutcome::ALL {
            drop(self.polls.get_or_create(&PollLabel { outcome }));
        }
        for &outcome in ApplyOutcome::ALL {
            drop(self.applies.get_or_create(&ApplyLabel { outcome }));
        }
        for &reason in VerificationFailure::ALL {
            drop(
                self.verification_failures
                    .get_or_create(&ReasonLabel { reason }),
            );
        }
        for &kind in DriftKind::ALL {
            drop(self.drift_findings.get_or_create(&DriftLabel { kind }));
        }
        for &mirror_kind in MirrorKind::ALL {
            let label = MirrorKindLabel { mirror_kind };
            drop(self.not_modified.get_or_create(&label));
            drop(self.download_resumes.get_or_create(&label));
            for &file_kind in FileKind::ALL {
                let transfer = TransferLabels {
                    mirror_kind,
                    file_kind,
                };
                drop(self.received_bytes.get_or_create(&transfer));
                for &status in StatusClass::ALL {
                    let request = RequestLabels {
                        mirror_kind,
                        file_kind,
                        status,
                    };
                    drop(self.requests.get_or_create(&request));
                }
            }
        }
    }
}

/// Gauges are i64; versions, releases and counts never reach 2^63, but saturate rather than wrap if a
/// hostile input ever claims they do.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_label_sets_start_at_zero() {
        let metrics = Metrics::new();
        let text = metrics.encode(ExpositionFormat::OpenMetrics).unwrap();
        assert!(text.contains("mast_agent_polls_total{outcome=\"unreachable\"} 0\n"));
        assert!(text.contains("mast_agent_verification_failures_total{reason=\"root_chain\"} 0\n"));
        assert!(text.contains(
            "mast_agent_requests_total{mirror_kind=\"oci\",file_kind=\"chunk\",status=\"5xx\"} 0\n"
        ));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_held_byte_counter_updates_the_registered_series() {
        let metrics = Metrics::new();
        let counter = metrics.received_bytes_counter(MirrorKind::Http, FileKind::Chunk);
        counter.inc_by(10);
        metrics.record_received_bytes(MirrorKind::Http, FileKind::Chunk, 5);
        let text = metrics.encode(ExpositionFormat::PrometheusText).unwrap();
        assert!(text.contains(
            "mast_agent_received_bytes_total{mirror_kind=\"http\",file_kind=\"chunk\"} 15\n"
        ));
    }

    #[test]
    fn clocks_before_1970_and_huge_values_do_not_wrap() {
        let metrics = Metrics::new();
        metrics.set_last_successful_refresh(UNIX_EPOCH - std::time::Duration::from_secs(5));
        metrics.set_trusted_version(TufRole::Root, u64::MAX);
        let text = metrics.encode(ExpositionFormat::OpenMetrics).unwrap();
        assert!(text.contains("mast_agent_last_successful_refresh_timestamp_seconds 0\n"));
        assert!(text.contains(&format!(
            "mast_agent_trusted_metadata_version{{role=\"root\"}} {}\n",
            i64::MAX
        )));
    }

    #[test]
    fn staleness_is_judged_at_each_scrape_from_the_recorded_inputs() {
        use crate::freshness::{Inputs, RoleExpiry};
        let metrics = Metrics::new();
        let now = time::OffsetDateTime::now_utc();
        let expires = now + time::Duration::days(7);
        let mut inputs = Inputs {
            last_refresh: Some(now - time::Duration::minutes(1)),
            roles: vec![RoleExpiry {
                role: "timestamp",
                version: 9,
                expires,
            }],
            unverified: Vec::new(),
            stale_after: std::time::Duration::from_secs(3600),
        };
        metrics.set_freshness(inputs.clone());
        let text = metrics.encode(ExpositionFormat::PrometheusText).unwrap();
        assert!(text.contains("mast_agent_stale 0\n"), "{text}");
        assert!(text.contains(&format!(
            "mast_agent_metadata_expiry_timestamp_seconds{{role=\"timestamp\"}} {}\n",
            expires.unix_timestamp()
        )));
        assert!(text.contains(&format!(
            "mast_agent_last_successful_refresh_timestamp_seconds {}\n",
            (now - time::Duration::minutes(1)).unix_timestamp()
        )));
        inputs.last_refresh = Some(now - time::Duration::hours(2));
        metrics.set_freshness(inputs);
        let text = metrics.encode(ExpositionFormat::OpenMetrics).unwrap();
        assert!(text.contains("mast_agent_stale 1\n"), "{text}");
    }

    #[test]
    fn negotiation_prefers_openmetrics_only_when_asked() {
        let prometheus =
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4";
        assert_eq!(
            ExpositionFormat::negotiate(Some(prometheus)),
            ExpositionFormat::OpenMetrics
        );
        assert_eq!(
            ExpositionFormat::negotiate(Some("text/plain")),
            ExpositionFormat::PrometheusText
        );
        assert_eq!(
            ExpositionFormat::negotiate(None),
            ExpositionFormat::PrometheusText
        );
    }
}
