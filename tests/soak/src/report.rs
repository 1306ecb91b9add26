//! The run's report: JSON for machines, a short summary for people.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// Everything one run measured. Correctness fields first; figures after.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Whether every correctness check held.
    pub ok: bool,
    /// The checks that failed, one line each.
    pub failures: Vec<String>,
    /// Simulated sites.
    pub sites: usize,
    /// Of which read the OCI registry.
    pub oci_sites: usize,
    /// Of which list a lying mirror first.
    pub liar_sites: usize,
    /// Sites whose applied files equal the last release's, byte for byte, at the end.
    pub converged: usize,
    /// Applies after which a site's directory was not exactly the release it said it applied.
    pub bad_applies: u64,
    /// Site databases whose `PRAGMA integrity_check` was not `ok` at the end.
    pub integrity_failures: usize,
    /// Each scenario run, in order.
    pub scenarios: Vec<ScenarioReport>,
    /// Time to converge over every scenario's sites, in seconds.
    pub time_to_converge_s: Percentiles,
    /// Content bytes (chunk index and chunks) the agents fetched, per site.
    pub content_bytes_per_site: f64,
    /// Bytes the proxies forwarded to the sites (metadata, content and HTTP headers), per site.
    pub wire_bytes_per_site: f64,
    /// The highest requests per second nginx logged at the origin.
    pub origin_requests_per_s_peak: u64,
    /// The highest new connections per second at the origins' proxies (HTTP and OCI).
    pub origin_connections_per_s_peak: u64,
    /// Polls (agent passes) run by the simulated fleet.
    pub polls: u64,
    /// CPU seconds (user + system) of this process: agents, proxies and harness.
    pub cpu_seconds: f64,
    /// `cpu_seconds / polls`.
    pub cpu_seconds_per_poll: f64,
    /// This process's RSS at the end, divided by the sites.
    pub rss_bytes_per_site: u64,
    /// This process's peak RSS (`VmHWM`), divided by the sites.
    pub peak_rss_bytes_per_site: u64,
    /// Faults the proxies injected, by kind (connections that had them).
    pub faults_injected: Faults,
    /// Passes that noticed a fault (failed, or skipped a mirror).
    pub faults_detected: u64,
    /// The crash trials with the real `mast-agent` binary.
    pub crash: Option<CrashReport>,
    /// Wall time of the run, in seconds.
    pub wall_seconds: f64,
}

/// One scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioReport {
    /// Its name.
    pub name: String,
    /// The release the fleet had to reach.
    pub release: u64,
    /// Sites that reached it, byte for byte.
    pub converged: usize,
    /// Sites.
    pub sites: usize,
    /// Seconds from the release being published (or the link coming back) to each site converging.
    pub time_to_converge_s: Percentiles,
    /// Wall seconds the scenario took.
    pub seconds: f64,
    /// The highest requests per second nginx logged during it.
    pub origin_requests_per_s_peak: u64,
    /// The highest new connections per second at the proxies during it.
    pub origin_connections_per_s_peak: u64,
    /// Faults injected during it.
    pub faults_injected: u64,
    /// Passes that noticed a fault during it.
    pub faults_detected: u64,
    /// What else it measured.
    pub notes: Vec<String>,
}

/// Fault counts by kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Faults {
    /// Connections reset.
    pub reset: u64,
    /// Connections closed in the middle of a response.
    pub truncated: u64,
    /// Connections stalled.
    pub stalled: u64,
    /// Connections throttled.
    pub throttled: u64,
    /// Connections with a byte changed.
    pub corrupted: u64,
    /// Connections accepted and closed at once.
    pub refused: u64,
    /// All of them.
    pub total: u64,
}

/// The crash trials.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CrashReport {
    /// Runs of `mast-agent once` killed with SIGKILL.
    pub trials: usize,
    /// Kills that landed while the agent was still running (the others found it done).
    pub killed_mid_run: usize,
    /// Trials after which the database passed `PRAGMA integrity_check` and the next run converged.
    pub recovered: usize,
    /// Trials after which a file in the applied directory was not a released version of that file.
    pub unverified_files: usize,
    /// Completed runs after which the applied directory was not exactly the release's files.
    pub bad_applies: usize,
    /// Releases the crash site went through.
    pub releases: u64,
}

/// Percentiles of a set of durations, in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values`.
    pub fn of(values: &[Duration]) -> Self {
        let mut secs: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
        secs.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            if secs.is_empty() {
                return 0.0;
            }
            let at = ((p * secs.len() as f64).ceil() as usize).clamp(1, secs.len());
            secs[at - 1]
        };
        Self {
            count: secs.len(),
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: rank(1.0),
        }
    }
}

impl Report {
    /// A few lines for a terminal or a test log.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mast-soak: {} ({} sites: {} OCI, {} lying-mirror-first; {:.0} s)",
            if self.ok { "OK" } else { "FAILED" },
            self.sites,
            self.oci_sites,
            self.liar_sites,
            self.wall_seconds
        );
        for s in &self.scenarios {
            let _ = writeln!(
                out,
                "  {:<13} release {:>2}: {}/{} converged in {:.1} s; time to converge p50 {:.1} s p95 {:.1} s \
                 p99 {:.1} s; origin peak {} req/s, {} conn/s; faults injected {} detected {}",
                s.name,
                s.release,
                s.converged,
                s.sites,
                s.seconds,
                s.time_to_converge_s.p50,
                s.time_to_converge_s.p95,
                s.time_to_converge_s.p99,
                s.origin_requests_per_s_peak,
                s.origin_connections_per_s_peak,
                s.faults_injected,
                s.faults_detected
            );
            for note in &s.notes {
                let _ = writeln!(out, "                {note}");
            }
        }
        let t = &self.time_to_converge_s;
        let _ = writeln!(
            out,
            "  converged {}/{} (digest of applied files = release's); bad applies {}; integrity failures {}",
            self.converged, self.sites, self.bad_applies, self.integrity_failures
        );
        let _ = writeln!(
            out,
            "  time to converge p50 {:.1} s, p95 {:.1} s, p99 {:.1} s, max {:.1} s",
            t.p50, t.p95, t.p99, t.max
        );
        let _ = writeln!(
            out,
            "  bytes per site: {:.0} content, {:.0} on the wire; origin peak {} req/s ({} conn/s)",
            self.content_bytes_per_site,
            self.wire_bytes_per_site,
            self.origin_requests_per_s_peak,
            self.origin_connections_per_s_peak
        );
        let _ = writeln!(
            out,
            "  {} polls, {:.2} CPU s, {:.2} ms CPU per poll; RSS {} KiB per site (peak {} KiB)",
            self.polls,
            self.cpu_seconds,
            self.cpu_seconds_per_poll * 1000.0,
            self.rss_bytes_per_site / 1024,
            self.peak_rss_bytes_per_site / 1024
        );
        let f = &self.faults_injected;
        let _ = writeln!(
            out,
            "  faults injected {} (reset {}, truncated {}, stalled {}, throttled {}, corrupted {}, refused {}); \
             passes that detected one {}",
            f.total,
            f.reset,
            f.truncated,
            f.stalled,
            f.throttled,
            f.corrupted,
            f.refused,
            self.faults_detected
        );
        if let Some(c) = &self.crash {
            let _ = writeln!(
                out,
                "  crash trials: {} SIGKILLs ({} mid-run), {} recovered, {} unverified files, {} bad applies, {} releases",
                c.trials,
                c.killed_mid_run,
                c.recovered,
                c.unverified_files,
                c.bad_applies,
                c.releases
            );
        }
        for failure in &self.failures {
            let _ = writeln!(out, "  FAILED: {failure}");
        }
        out
    }
}
