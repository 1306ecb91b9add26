//! `mast-agent run`, the daemon, as a real process: it converges on each new release, serves its admin
//! endpoints, survives its origin going away, and stops promptly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mast_test_support::http::get;
use mast_test_support::{NginxConfig, free_port};
use support::{Repo, Site};

/// Polls `/status` until `check` holds, or fails after a minute.
fn wait_for(
    port: u16,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(response) = get(&format!("http://127.0.0.1:{port}/status"))
            && response.status == 200
            && let Ok(status) = serde_json::from_slice::<serde_json::Value>(&response.body)
        {
            if check(&status) {
                return status;
            }
            last = status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the last status: {last:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_daemon_converges_serves_its_endpoints_rides_out_an_outage_and_stops_on_sigterm() {
    let repo = Repo::new(30);
    repo.release();
    let server = NginxConfig::new(&repo.repo).read_only().start();
    let site = Site::new();
    let port = free_port();
    let mut child = site
        .agent(&repo, &[&server.url("")])
        .env("MAST_LISTEN", format!("127.0.0.1:{port}"))
        .env("MAST_POLL_INTERVAL", "1s")
        .env("MAST_BACKOFF_BASE", "1s")
        .env("MAST_BACKOFF_CAP", "2s")
        .env("MAST_DRIFT_INTERVAL", "10s")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_for(port, "release 1", |s| {
        s["channels"]["prod"]["current_release"] == 1
    });
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/healthz"))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/readyz"))
            .unwrap()
            .status,
        200
    );

    repo.edit(4, 1);
    repo.release();
    wait_for(port, "release 2", |s| {
        s["channels"]["prod"]["current_release"] == 2
    });
    let metrics = String::from_utf8(
        get(&format!("http://127.0.0.1:{port}/metrics"))
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(
        metrics.contains("mast_agent_release_current{channel=\"prod\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("mast_agent_polls_total"), "{metrics}");

    // The origin goes away: passes fail, the site keeps release 2 and says why.
    drop(server);
    let status = wait_for(port, "a failed pass", |s| !s["last_error"].is_null());
    assert_eq!(status["channels"]["prod"]["current_release"], 2);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon died with its origin"
    );

    sigterm(&child);
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_failing_first_mirror_is_demoted_so_later_passes_go_straight_to_the_next() {
    use mast_test_support::FaultProxy;
    use mast_test_support::fault_proxy::{Close, Faults};

    let repo = Repo::new(5);
    repo.release();
    let server = NginxConfig::new(&repo.repo).read_only().start();
    // The first mirror accepts connections and resets them: a broken CDN edge.
    let broken =
        FaultProxy::start(format!("127.0.0.1:{}", server.port()).parse().unwrap()).unwrap();
    broken
        .control()
        .set_faults(Faults::none().refuse(Close::Reset));
    let site = Site::new();
    let port = free_port();
    let mut child = site
        .agent(&repo, &[&broken.url(""), &server.url("")])
        .env("MAST_LISTEN", format!("127.0.0.1:{port}"))
        .env("MAST_POLL_INTERVAL", "1s")
        .env("MAST_JITTER", "0")
        .env("MAST_BACKOFF_BASE", "1m")
        .env("MAST_BACKOFF_CAP", "10m")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(port, "release 1", |s| {
        s["channels"]["prod"]["current_release"] == 1
    });
    let after_first = broken.control().stats().accepted;
    eprintln!("broken mirror connections after the first pass: {after_first}");
    // Several more passes, each a second apart, all served by the second mirror.
    let polled_before = server
        .requests()
        .iter()
        .filter(|r| r.uri.ends_with("/timestamp.json"))
        .count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server
        .requests()
        .iter()
        .filter(|r| r.uri.ends_with("/timestamp.json"))
        .count()
        < polled_before + 3
    {
        assert!(Instant::now() < deadline, "the daemon stopped polling");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = wait_for(port, "status", |_| true);
    assert!(status["last_error"].is_null(), "{status}");
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    // The broken mirror was tried once, on the first pass, and not again within its backoff.
    assert_eq!(
        broken.control().stats().accepted,
        1,
        "{:?}",
        broken.control().stats()
    );
}
