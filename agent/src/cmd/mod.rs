//! The agent's commands, as library functions the thin `main` calls: `once`, `run`, `status`, `import`.
//!
//! Exit codes are part of the interface (scripts and systemd read them):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | the site runs the newest release it may run (applied now, already running, none published, or not in this release's rollout) |
//! | 1 | the pass failed: no mirror gave verifiable metadata or content, the release is refused, or the apply or health gate failed (the last healthy release is put back), or the API server stayed unavailable (the release is applied again later); the site keeps a known state |
//! | 3 | a newer release is verified and held locally, waiting for its rollout wave or a change window |
//! | 64 | bad configuration or arguments (`EX_USAGE`), naming the key |

mod daemon;
mod import;
mod status;

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use mast_mirror::{Mirror, MirrorOptions, MirrorRead, MirrorSpec};
use mast_protocol::release::AgentVersion;
use time::OffsetDateTime;

use crate::AGENT_VERSION;
use crate::apply::{Applier, DirApplier, KubeApplier};
use crate::config::{Applier as ApplierConfig, Config, ConfigError};
use crate::schedule::{MirrorPenalties, PollPolicy};
use crate::state::{State, StateError};
use crate::sync::{PassError, PassOutcome, PassReport, Site, run_pass};
use crate::telemetry::Metrics;

pub use daemon::{DRAIN_GRACE, run};
pub use import::import;
pub use status::{StatusFormat, document, status};

/// Why a command could not run at all (a pass that ran and failed is a [`PassError`]).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state database could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// A mirror could not be set up (a bad CA bundle).
    #[error("mirror {mirror}: {reason}")]
    Mirror {
        /// The mirror.
        mirror: String,
        /// What is wrong.
        reason: String,
    },
    /// The pass failed.
    #[error(transparent)]
    Pass(#[from] PassError),
    /// Something else, with its context.
    #[error("{0}")]
    Other(String),
}

impl CommandError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_) | Self::Mirror { .. } => ExitCode::from(64),
            Self::State(_) | Self::Pass(_) | Self::Other(_) => ExitCode::from(1),
        }
    }
}

/// Everything a pass needs, opened from a [`Config`].
pub struct Agent {
    /// The state database.
    pub state: State,
    /// The mirrors, in order.
    pub mirrors: Vec<Mirror>,
    /// The site's identity and rules.
    pub site: Site,
    /// Where releases go.
    pub applier: Box<dyn Applier + Send>,
    /// How many releases' chunks to keep after a new one is applied.
    pub keep_releases: u32,
    /// Each mirror's place in the configured order.
    rank: HashMap<String, usize>,
    /// Mirrors demoted after failing.
    penalties: MirrorPenalties,
    /// The backoff the penalties follow.
    poll: PollPolicy,
    /// Where passes count requests and refused bytes; the daemon's `/metrics` shares it.
    pub metrics: Arc<Metrics>,
}

impl Agent {
    /// Opens the mirrors, the applier and the state database (seeding the configured root when the
    /// database trusts none yet). Mirrors are opened first: they only parse, and a bad CA bundle is a
    /// configuration error that must not leave a state file behind.
    pub fn open(config: &Config, now: OffsetDateTime) -> Result<Self, CommandError> {
        let mirrors = open_mirrors(&config.mirrors, config.ca_bundle.as_deref())?;
        let applier: Box<dyn Applier + Send> = match &config.applier {
            ApplierConfig::Dir(path) => Box::new(DirApplier::new(path)),
            ApplierConfig::Kube => {
                Box::new(KubeApplier::infer(config.kube_timeout).map_err(|e| {
                    ConfigError::Invalid {
                        origin: "configuration".to_owned(),
                        key: "applier",
                        reason: format!("kube: {e}"),
                    }
                })?)
            }
        };
        if let Some(parent) = config.state.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                CommandError::Other(format!(
                    "{}: creating the state directory: {e}",
                    parent.display()
                ))
            })?;
        }
        let mut state = State::open(&config.state)?;
        state.trust_initial_root(&config.root.bytes, config.root.version, now)?;
        // `status` reads no configuration: it judges staleness by the threshold recorded here.
        state.set_fact(
            crate::freshness::STALE_AFTER_FACT,
            &config.stale_after.as_secs().to_string(),
        )?;
        let agent_version = AgentVersion::parse_release(AGENT_VERSION)
            .map_err(|e| CommandError::Other(format!("agent version {AGENT_VERSION}: {e}")))?;
        Ok(Self {
            state,
            site: Site {
                channel: config.channel.clone(),
                seed: config.cluster_id.seed(),
                windows: config.windows.clone(),
                agent_version,
            },
            rank: mirrors
                .iter()
                .enumerate()
                .map(|(i, m)| (m.describe(), i))
                .collect(),
            mirrors,
            applier,
            keep_releases: config.keep_releases.get(),
            penalties: MirrorPenalties::default(),
            poll: config.poll,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// One pass at `now`. Mirrors that failed recently are tried after the others.
    pub async fn pass(&mut self, now: OffsetDateTime) -> Result<PassReport, PassError> {
        let span = tracing::info_span!("sync_pass", channel = %self.site.channel);
        let _guard = span.enter();
        let (penalties, rank) = (&self.penalties, &self.rank);
        self.mirrors.sort_by_key(|m| {
            let name = m.describe();
            (penalties.is_demoted(&name, now), rank.get(&name).copied())
        });
        let result = run_pass(
            &mut self.state,
            &self.mirrors,
            &self.site,
            self.applier.as_mut(),
            now,
            &self.metrics,
        )
        .await;
        let failures = match &result {
            Ok(report) => &report.skipped[..],
            Err(e) => e.mirror_failures(),
        };
        for failure in failures {
            self.penalties.failed(&failure.mirror, now, &self.poll);
        }
        // The mirror that gave the metadata is cleared, unless it failed a chunk in the same pass (a
        // mirror serving bytes that do not verify stays demoted however good its metadata).
        if let Ok(report) = &result
            && !report.skipped.iter().any(|s| s.mirror == report.mirror)
        {
            self.penalties.served(&report.mirror);
        }
        if let Ok(PassReport {
            outcome: PassOutcome::Applied { .. },
            ..
        }) = &result
        {
            match self.state.gc_chunks(self.keep_releases) {
                Ok(0) => {}
                Ok(n) => tracing::info!(chunks = n, "collected chunks no kept release needs"),
                Err(e) => tracing::warn!(error = %e, "chunk collection failed"),
            }
        }
        let summary = match &result {
            Ok(report) => vec![
                ("last_outcome", describe(&report.outcome)),
                ("last_error", String::new()),
            ],
            Err(e) => vec![("last_error", e.to_string())],
        };
        let summary: Vec<(&str, &str)> = summary.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // The pass's own records are already durable; a failure to note its summary is only logged.
        if let Err(e) = self.state.set_facts(&summary) {
            tracing::warn!(error = %e, "could not record the pass outcome");
        }
        result
    }
}

/// `mast-agent once`: one pass; prints what happened and returns the exit code.
pub async fn once(config: &Config, now: OffsetDateTime) -> Result<ExitCode, CommandError> {
    let mut agent = Agent::open(config, now)?;
    let report = agent.pass(now).await?;
    Ok(print_report(&report))
}

/// Prints a pass report and returns the exit code it means.
fn print_report(report: &PassReport) -> ExitCode {
    for skipped in &report.skipped {
        eprintln!("skipped {}: {}", skipped.mirror, skipped.reason);
    }
    println!(
        "{} (metadata from {})",
        describe(&report.outcome),
        report.mirror
    );
    if report.chunks_fetched + report.chunks_held > 0 {
        let chunks = |n: usize| if n == 1 { "chunk" } else { "chunks" };
        println!(
            "fetched {} {} ({} bytes with the index), reused {} held {}",
            report.chunks_fetched,
            chunks(report.chunks_fetched),
            report.bytes_fetched,
            report.chunks_held,
            chunks(report.chunks_held)
        );
    }
    match report.outcome {
        PassOutcome::Waiting { .. } => ExitCode::from(3),
        // The site is back in a known state, but the release it was given failed.
        PassOutcome::RolledBack { .. } => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

/// One line for a pass outcome.
pub fn describe(outcome: &PassOutcome) -> String {
    match outcome {
        PassOutcome::NoRelease => "no release on the channel yet".to_owned(),
        PassOutcome::UpToDate { release } => format!("up to date at release {release}"),
        PassOutcome::Applied { release, report } => format!(
            "applied release {release}: {} written, {} unchanged, {} pruned",
            report.written, report.unchanged, report.pruned
        ),
        PassOutcome::Waiting { release, until } => format!(
            "release {release} is held until {}",
            crate::state::rfc3339(*until)
        ),
        PassOutcome::NotInRollout { release } => {
            format!("release {release} is not for this site's rollout wave")
        }
        PassOutcome::RolledBack { failed, to, reason } => {
            format!("release {failed} failed and release {to} was put back: {reason}")
        }
    }
}

fn open_mirrors(specs: &[MirrorSpec], ca_file: Option<&Path>) -> Result<Vec<Mirror>, CommandError> {
    let options = MirrorOptions {
        ca_file: ca_file.map(Path::to_path_buf),
        ..MirrorOptions::default()
    };
    specs
        .iter()
        .map(|spec| {
            Mirror::open(spec, &options).map_err(|e| CommandError::Mirror {
                mirror: format!("{spec:?}"),
                reason: e.to_string(),
            })
        })
        .collect()
}
