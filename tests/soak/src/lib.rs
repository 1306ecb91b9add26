//! `mast-soak`: the fleet-scale fault harness.
//!
//! It runs many simulated sites — the real agent code in this process, each with its own SQLite state
//! file, `dir:` applier, mirrors and HTTP client, polling on the agent's own [`PollPolicy`] with a
//! compressed clock — against a real nginx origin (and Debian's docker-registry for a share of the sites)
//! through the fault-injecting proxy, and the real `mast-agent` binary killed with SIGKILL for the crash
//! trials. See `tests/soak/README.md` for the scenarios, the report and how to run the long mode.
//!
//! Nothing counts as converged unless the site's applied files are byte for byte the release's files.
//!
//! [`PollPolicy`]: mast_agent::schedule::PollPolicy

mod crash;
mod digest;
mod fleet;
mod measure;
mod origin;
pub mod report;
mod scenario;

use std::path::PathBuf;
use std::time::Duration;

pub use report::Report;

/// A scenario, selectable with `--scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A new release to every site with a share of connections faulted.
    Rollout,
    /// Every origin unreachable for a while, then recovery: peak load and time to converge.
    Outage,
    /// Some sites list a lying mirror (stale metadata, tampered chunks) first, an honest one second.
    LyingMirror,
    /// The root key rotated in the middle of a rollout.
    KeyRotation,
    /// The real `mast-agent` binary killed with SIGKILL during downloads and applies.
    Crash,
    /// All of the above, in this order.
    All,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated sites.
    pub sites: usize,
    /// Scenarios, in order ([`Scenario::All`] expanded).
    pub scenarios: Vec<Scenario>,
    /// Share of sites reading the OCI registry (0 runs no registry).
    pub oci_share: f64,
    /// Share of sites listing a lying mirror first.
    pub liar_share: f64,
    /// Share of connections faulted during the rollout (half of it during the key rotation).
    pub fault_rate: f64,
    /// The poll interval; `None` scales it with the fleet (see [`Options::interval`]).
    pub poll_interval: Option<Duration>,
    /// How long the outage lasts.
    pub outage: Duration,
    /// How long a scenario may take before the sites that did not converge are failures; `None` scales it
    /// with the interval.
    pub scenario_timeout: Option<Duration>,
    /// Manifests in the fleet's bundle.
    pub files: usize,
    /// Manifests changed by each release.
    pub changed: usize,
    /// Crash trials with the real binary.
    pub crash_trials: usize,
    /// The `mast-agent` binary for the crash trials.
    pub agent_bin: Option<PathBuf>,
    /// Passes in flight at once, fleet-wide.
    pub concurrency: usize,
    /// Seed of the fault plans and jitter.
    pub seed: u64,
    /// Where the sites' databases and applied directories go (a temporary directory under it).
    pub work_dir: Option<PathBuf>,
}

impl Options {
    /// Defaults for `sites` sites and `scenarios`.
    pub fn new(sites: usize, scenarios: &[Scenario]) -> Self {
        let mut expanded = Vec::new();
        for s in scenarios {
            if *s == Scenario::All {
                expanded.extend([
                    Scenario::Rollout,
                    Scenario::Outage,
                    Scenario::LyingMirror,
                    Scenario::KeyRotation,
                    Scenario::Crash,
                ]);
            } else if !expanded.contains(s) {
                expanded.push(*s);
            }
        }
        Self {
            sites,
            scenarios: expanded,
            oci_share: 0.1,
            liar_share: 0.1,
            fault_rate: 0.2,
            poll_interval: None,
            outage: Duration::from_secs(10),
            scenario_timeout: None,
            files: 20,
            changed: 2,
            crash_trials: 5,
            agent_bin: None,
            concurrency: 128,
            seed: 1,
            work_dir: None,
        }
    }

    /// The poll interval: as given, else one that keeps the fleet near 100 polls a second (2 s for 200
    /// sites, 100 s for 10,000), which two cores sustain with room for the bursts after an outage.
    pub fn interval(&self) -> Duration {
        self.poll_interval
            .unwrap_or_else(|| Duration::from_secs((self.sites as u64 / 100).max(2)))
    }

    /// How long a scenario may take: as given, else 60 s plus 10 intervals.
    pub fn timeout(&self) -> Duration {
        self.scenario_timeout
            .unwrap_or_else(|| Duration::from_secs(60) + self.interval() * 10)
    }
}

/// Runs the scenarios and returns the report (whose `ok` says whether every check held). An `Err` is a
/// harness failure: a server that did not start, a repository that could not be written.
pub fn run(options: Options) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let harness = scenario::Harness::new(options)?;
        harness.run().await
    })
}
