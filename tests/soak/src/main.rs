//! `mast-soak`: many simulated sites against real mirrors through a faulty link. See `tests/soak/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mast_soak::{Options, Scenario};

/// Runs the real agent code for many simulated sites against real nginx and docker-registry mirrors
/// through a fault-injecting proxy, and the real mast-agent binary under SIGKILL; writes a JSON report
/// and prints a summary. Exit 0 when every correctness check held, 1 when one failed, 2 on a harness error.
#[derive(Debug, Parser)]
#[command(name = "mast-soak", version)]
struct Args {
    /// Simulated sites.
    #[arg(long, default_value_t = 200)]
    sites: usize,
    /// Scenarios to run (repeat or comma-separate), in the order rollout, outage, lying-mirror,
    /// key-rotation, crash.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scenario: Vec<Scenario>,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// Poll interval in seconds (default: sites / 100, at least 2).
    #[arg(long, value_name = "SECONDS")]
    interval: Option<u64>,
    /// Outage length in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    outage: u64,
    /// Seconds a scenario may take (default: 60 + 10 intervals).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Share of connections faulted during the rollout.
    #[arg(long, default_value_t = 0.2)]
    fault_rate: f64,
    /// Share of sites reading the OCI registry (0: no registry).
    #[arg(long, default_value_t = 0.1)]
    oci_share: f64,
    /// Share of sites listing a lying mirror first.
    #[arg(long, default_value_t = 0.1)]
    liar_share: f64,
    /// Manifests in the fleet's bundle (about 2.5 KiB each).
    #[arg(long, default_value_t = 20)]
    files: usize,
    /// Manifests each release changes.
    #[arg(long, default_value_t = 2)]
    changed: usize,
    /// SIGKILL trials of the real mast-agent binary.
    #[arg(long, default_value_t = 5)]
    crash_trials: usize,
    /// The mast-agent binary (default: next to this one in target/).
    #[arg(long, value_name = "PATH")]
    agent_bin: Option<PathBuf>,
    /// Passes in flight at once, fleet-wide.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seed for fault plans and jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for the sites' databases and applied files (default: the system temp dir; /dev/shm
    /// keeps fsync out of the figures).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mast-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let mut options = Options::new(args.sites, &args.scenario);
    options.poll_interval = args.interval.map(Duration::from_secs);
    options.outage = Duration::from_secs(args.outage);
    options.scenario_timeout = args.timeout.map(Duration::from_secs);
    options.fault_rate = args.fault_rate;
    options.oci_share = args.oci_share;
    options.liar_share = args.liar_share;
    options.files = args.files;
    options.changed = args.changed;
    options.crash_trials = args.crash_trials;
    options.agent_bin = args.agent_bin;
    options.concurrency = args.concurrency.max(1);
    options.seed = args.seed;
    options.work_dir = args.work_dir;
    let report = mast_soak::run(options)?;
    print!("{}", report.summary());
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        println!("report written to {}", path.display());
    }
    Ok(report.ok)
}
