//! The soak harness's short mode, run by the test command: 200 simulated sites through every scenario
//! briefly, and a few SIGKILL trials of the real `mast-agent` binary. It asserts correctness only — every
//! site converges byte for byte, no bad apply, every database intact, faults detected where injected —
//! and never times; the figures are printed for the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mast_soak::{Options, Scenario};
use mast_test_support::{Nginx, Registry};

#[test]
fn two_hundred_sites_every_scenario_and_crash_trials_converge_with_nothing_unverified_applied() {
    if !Nginx::available() || !Registry::available() {
        return;
    }
    let mut options = Options::new(200, &[Scenario::All]);
    options.outage = Duration::from_secs(5);
    options.crash_trials = 4;
    options.agent_bin = Some(build_agent());
    // tmpfs when there is one: the figures are about the agent, not this machine's disk.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        options.work_dir = Some(shm.to_path_buf());
    }
    let report = mast_soak::run(options).expect("the harness itself failed");
    println!("{}", report.summary());

    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(report.ok);
    assert_eq!(report.converged, 200);
    assert_eq!(report.bad_applies, 0);
    assert_eq!(report.integrity_failures, 0);
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    for name in ["rollout", "outage", "lying-mirror", "key-rotation"] {
        assert!(names.contains(&name), "{name} did not run: {names:?}");
    }
    for scenario in &report.scenarios {
        assert_eq!(scenario.converged, 200, "{scenario:#?}");
        if scenario.faults_injected > 0 {
            assert!(scenario.faults_detected > 0, "{scenario:#?}");
        }
    }
    let rollout = &report.scenarios[0];
    assert!(rollout.faults_injected > 0, "{rollout:#?}");
    let crash = report.crash.as_ref().expect("crash trials ran");
    assert_eq!(crash.trials, 4);
    assert_eq!(crash.recovered, crash.trials, "{crash:#?}");
    assert_eq!(
        (crash.unverified_files, crash.bad_applies),
        (0, 0),
        "{crash:#?}"
    );
}

/// Builds the real `mast-agent` binary with the profile of this test and returns its path.
fn build_agent() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "-p",
        "mast-agent",
        "--bin",
        "mast-agent",
    ]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let status = command.status().expect("running cargo build");
    assert!(status.success(), "cargo build -p mast-agent failed");
    // target/<profile>/deps/short-<hash> → target/<profile>/mast-agent
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let agent = profile.join("mast-agent");
    assert!(agent.is_file(), "{} was not built", agent.display());
    agent
}
