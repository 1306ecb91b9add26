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

/// One series' value from a `/metrics` text body (0 when absent).
fn series(metrics: &str, name_and_labels: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Requests in nginx's access log whose URI passes `uri` and whose status is `status`.
fn logged(server: &mast_test_support::Nginx, uri: impl Fn(&str) -> bool, status: u16) -> u64 {
    server
        .requests()
        .iter()
        .filter(|r| uri(&r.uri) && r.status == status)
        .count() as u64
}

/// Body bytes nginx logged as sent with a body the agent reads (200, 206) for URIs that pass `uri`.
fn sent(server: &mast_test_support::Nginx, uri: impl Fn(&str) -> bool) -> u64 {
    server
        .requests()
        .iter()
        .filter(|r| uri(&r.uri) && matches!(r.status, 200 | 206))
        .map(|r| r.body_bytes)
        .sum()
}

#[test]
fn the_metrics_count_what_the_mirrors_logged_and_a_refused_chunk_skips_its_mirror() {
    let repo = Repo::new(40);
    let release = repo.release();
    // Published a while before the site polls: nginx's validators are strong, so idle polls are 304s.
    repo.age_timestamp();
    // A copy of the repository with one chunk's bytes changed, as a chunk and in the chunk pack: its
    // metadata verifies, that chunk does not.
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&repo.repo)
        .arg(copy.path().join("repo"))
        .status()
        .unwrap();
    assert!(status.success());
    let index = repo.index(&release);
    let (pack, pack_length) = repo.pack(&release);
    let bad_chunk = copy
        .path()
        .join("repo/chunks")
        .join(index["chunks"][1]["sha256"].as_str().unwrap());
    let mut bytes = std::fs::read(&bad_chunk).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&bad_chunk, bytes).unwrap();
    let first_frame = index["chunks"][0]["length"].as_u64().unwrap() as usize;
    let mut bytes = std::fs::read(copy.path().join("repo").join(&pack)).unwrap();
    bytes[first_frame] ^= 0xff;
    std::fs::write(copy.path().join("repo").join(&pack), bytes).unwrap();
    let lying = NginxConfig::new(&copy.path().join("repo"))
        .read_only()
        .start();
    let honest = NginxConfig::new(&repo.repo).read_only().start();

    let site = Site::new();
    let port = free_port();
    let mut child = site
        .agent(&repo, &[&lying.url(""), &honest.url("")])
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
    // A few idle polls, which the lying mirror (demoted for its chunk) no longer gets.
    let timestamp = |u: &str| u.ends_with("/timestamp.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while logged(&honest, timestamp, 304) < 2 {
        assert!(
            Instant::now() < deadline,
            "no idle polls; lying: {:?}; honest: {:?}",
            lying.requests(),
            honest.requests()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The scrape and the logs must describe the same passes. nginx logs a response as it sends it and
    // the agent counts it when it reads it, so a poll in flight can be in the log and not yet in the
    // scrape: sample again (bounded) until no poll lands between the two log reads and the scrape has
    // caught up with the log; the assertions below check the last sample either way.
    let both = |uri: &dyn Fn(&str) -> bool, status| {
        logged(&lying, uri, status) + logged(&honest, uri, status)
    };
    let metadata = |u: &str| u.starts_with("/metadata/");
    let chunk = |u: &str| u.starts_with("/chunks/");
    let target = |u: &str| u.starts_with("/targets/");
    let scraped = |metrics: &str, status: &str| {
        series(
            metrics,
            &format!(
                "mast_agent_requests_total{{mirror_kind=\"http\",file_kind=\"metadata\",status=\"{status}\"}}"
            ),
        )
    };
    let received = |metrics: &str, file: &str| {
        series(
            metrics,
            &format!(
                "mast_agent_received_bytes_total{{mirror_kind=\"http\",file_kind=\"{file}\"}}"
            ),
        )
    };
    let sent_by_both = |uri: &dyn Fn(&str) -> bool| sent(&lying, uri) + sent(&honest, uri);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (metrics, polls) = loop {
        let before = (
            both(&metadata, 200),
            both(&metadata, 304),
            both(&metadata, 404),
        );
        let metadata_sent = sent_by_both(&metadata);
        let metrics = String::from_utf8(
            get(&format!("http://127.0.0.1:{port}/metrics"))
                .unwrap()
                .body,
        )
        .unwrap();
        let stable = before
            == (
                both(&metadata, 200),
                both(&metadata, 304),
                both(&metadata, 404),
            );
        let caught_up = (
            scraped(&metrics, "2xx"),
            scraped(&metrics, "3xx"),
            scraped(&metrics, "4xx"),
        ) == before
            && received(&metrics, "metadata") == metadata_sent;
        if stable && (caught_up || Instant::now() > deadline) {
            break (metrics, before);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    sigterm(&child);
    assert!(child.wait().unwrap().success());

    let requests = |file: &str, status: &str| {
        series(
            &metrics,
            &format!(
                "mast_agent_requests_total{{mirror_kind=\"http\",file_kind=\"{file}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests("metadata", "2xx"), polls.0, "{metrics}");
    assert_eq!(requests("metadata", "3xx"), polls.1, "{metrics}");
    assert!(polls.1 >= 2, "{polls:?}");
    assert_eq!(
        series(
            &metrics,
            "mast_agent_not_modified_total{mirror_kind=\"http\"}"
        ),
        polls.1,
        "{metrics}"
    );
    // The lying mirror's chunk pack, which gave the first chunk and stopped at the second; every other
    // chunk once, from it; and the second twice: refused from it, then from the honest mirror.
    assert_eq!(both(&chunk, 200), release.chunks as u64 + 1);
    assert_eq!(requests("chunk", "2xx"), both(&chunk, 200), "{metrics}");
    assert_eq!(requests("target", "2xx"), both(&target, 200), "{metrics}");
    // The index: agents never read the bundle.
    assert_eq!(requests("target", "2xx"), 1, "{metrics}");
    // The root chain ends with a 404 for the next root version, on every full refresh.
    assert_eq!(requests("metadata", "4xx"), polls.2, "{metrics}");
    // Body bytes by file kind are what nginx sent: the refused chunk's included (it was received), a
    // 404's error page not (the agent does not read it).
    for (file, uri) in [
        ("metadata", &metadata as &dyn Fn(&str) -> bool),
        ("target", &target),
        ("chunk", &chunk),
    ] {
        assert!(sent_by_both(uri) > 0, "{file}");
        assert_eq!(
            received(&metrics, file),
            sent_by_both(uri),
            "{file}: {metrics}"
        );
    }
    // And what the repository holds: the index once; of the chunks, what the lying mirror's pack
    // read took (the agent stops reading at the refused frame, so the log says how much), then every
    // distinct chunk but the first (the pack's length is their sum) and the refused one again.
    let size = |path: &std::path::Path| std::fs::metadata(path).unwrap().len();
    assert_eq!(
        received(&metrics, "target"),
        size(&repo.repo.join(&release.index_target)),
        "{metrics}"
    );
    let pack_read = sent(&lying, |u: &str| u == format!("/{pack}"));
    let first = index["chunks"][0]["length"].as_u64().unwrap();
    assert!(pack_read > first, "{pack_read}");
    assert_eq!(
        received(&metrics, "chunk"),
        pack_read + (pack_length - first) + size(&bad_chunk),
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            "mast_agent_verification_failures_total{reason=\"chunk_hash\"}"
        ),
        2,
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            &format!(
                "mast_agent_mirror_skips_total{{mirror=\"{}\"}}",
                lying.url("").trim_end_matches('/')
            )
        ),
        1,
        "{metrics}"
    );
}

#[test]
fn a_timestamp_max_age_spaces_polls_beyond_the_interval() {
    let repo = Repo::new(5);
    repo.release();
    repo.age_timestamp();
    let server = NginxConfig::new(&repo.repo)
        .read_only()
        .mutable_cache_control("max-age=3600")
        .start();
    let site = Site::new();
    let port = free_port();
    let mut child = site
        .agent(&repo, &[&server.url("")])
        .env("MAST_LISTEN", format!("127.0.0.1:{port}"))
        .env("MAST_POLL_INTERVAL", "1s")
        .env("MAST_JITTER", "0")
        .env("MAST_BACKOFF_CAP", "2h")
        .env("MAST_DRIFT_INTERVAL", "2h")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(port, "release 1", |s| {
        s["channels"]["prod"]["current_release"] == 1
    });
    // At a 1 s interval the daemon would poll about four more times in this window; the origin said
    // its timestamp stays fresh for an hour, so it polls no more.
    std::thread::sleep(Duration::from_secs(4));
    let polls = server
        .requests()
        .iter()
        .filter(|r| r.uri.ends_with("/timestamp.json"))
        .count();
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    assert_eq!(polls, 1, "{:?}", server.requests());
}
