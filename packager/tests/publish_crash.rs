//! A publish killed with SIGKILL at any point leaves a mirror that verifies — with the old release until
//! the new timestamp has landed, the new one after — and the next publish finishes the job, sending only
//! what is still missing.
//!
//! The real `mast` binary publishes over WebDAV into nginx through the fault proxy, throttled so that the
//! upload takes seconds; it is killed once nginx has logged a given number of `PUT`s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod publish_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use mast_test_support::fault_proxy::{Close, FaultProxy, FaultTemplate, Faults, RandomFaults};
use mast_test_support::{Nginx, NginxConfig};
use publish_support::{TestRepo, as_files, manifests, mast, run_json};

fn puts(nginx: &Nginx) -> Vec<(String, u16)> {
    nginx
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| (r.uri, r.status))
        .collect()
}

#[test]
fn a_publish_killed_midway_never_leaves_a_torn_mirror() {
    if !Nginx::available() {
        return;
    }
    let served = tempfile::tempdir().unwrap();
    let nginx = NginxConfig::new(served.path()).start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], nginx.port()).into()).unwrap();
    let mut repo = TestRepo::new();
    let root = repo.root_file();
    let verify = || {
        run_json(&[
            "verify",
            &nginx.base_url(),
            "--root",
            root.to_str().unwrap(),
            "--channel",
            "prod",
        ])
    };

    let first = repo.release("prod", 1, &as_files(&manifests(4, 30_000, 9)));
    run_json(&[
        "publish",
        repo.path().to_str().unwrap(),
        "--to",
        &nginx.base_url(),
    ]);
    assert_eq!(verify()["release"], 1);

    // About 2.4 MB of new chunks and as much again of bundle: seconds at 1 MB/s.
    let second = repo.release("prod", 2, &as_files(&manifests(40, 60_000, 10)));
    let total = second.chunks.len() + 2 + 3;
    proxy
        .control()
        .set_faults(Faults::none().throttle(1_000_000));
    let before = puts(&nginx).len();
    for kill_after in [3, 15, second.chunks.len() + 1] {
        let mut child = mast()
            .args(["publish", repo.path().to_str().unwrap(), "--to"])
            .arg(proxy.url(""))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                child.try_wait().unwrap().is_none(),
                "publish finished before {kill_after} PUTs; throttle it harder"
            );
            if puts(&nginx).len() >= before + kill_after {
                break;
            }
            assert!(Instant::now() < deadline, "no progress: {:?}", puts(&nginx));
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        proxy.control().disconnect_all(Close::Reset);

        // What the origin serves, not what its log says yet: nginx logs a request just after answering it.
        // A PUT already in flight may still land after the kill, so look before and after verifying.
        let landed = || {
            std::fs::read(served.path().join("metadata/timestamp.json")).unwrap()
                == std::fs::read(repo.path().join("metadata/timestamp.json")).unwrap()
        };
        let landed_before = landed();
        let verdict = verify();
        let landed_after = landed();
        let release = verdict["release"].as_u64().unwrap();
        let allowed: &[u64] = match (landed_before, landed_after) {
            (true, _) => &[2],
            (false, false) => &[1],
            (false, true) => &[1, 2],
        };
        assert!(
            allowed.contains(&release),
            "killed after {kill_after}: {verdict}"
        );
        let tar = if release == 1 {
            &first.tar_sha256
        } else {
            &second.tar_sha256
        };
        assert_eq!(
            verdict["tar_sha256"],
            tar.to_hex(),
            "never a mix: {verdict}"
        );
    }
    let sent_while_killed = puts(&nginx).len() - before;
    assert!(sent_while_killed < total, "{sent_while_killed} of {total}");

    proxy.control().pass_through();
    let report = run_json(&[
        "publish",
        repo.path().to_str().unwrap(),
        "--to",
        &proxy.url(""),
    ]);
    let resumed = report["uploaded"].as_u64().unwrap() as usize;
    assert!(resumed >= 1 && resumed < total, "{report}");
    assert_eq!(report["timestamp_uploaded"], true);
    let verdict = verify();
    assert_eq!(verdict["release"], 2, "{verdict}");
    assert_eq!(verdict["tar_sha256"], second.tar_sha256.to_hex());
}

#[test]
fn a_link_that_resets_connections_is_retried_and_a_dead_one_gets_no_timestamp() {
    if !Nginx::available() {
        return;
    }
    let mut repo = TestRepo::new();
    let made = repo.release("prod", 1, &as_files(&manifests(4, 30_000, 12)));
    let served = tempfile::tempdir().unwrap();
    let nginx = NginxConfig::new(served.path()).start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], nginx.port()).into()).unwrap();
    let repo_dir = repo.path().to_str().unwrap().to_owned();
    let publish = |to: &str, attempts: &str| {
        mast()
            .args(["publish", &repo_dir, "--to", to, "--attempts", attempts])
            .args(["--output", "json"])
            .output()
            .unwrap()
    };

    // A link that refuses everything: tried twice, then the destination error, exit 74, no timestamp.
    proxy
        .control()
        .set_faults(Faults::none().refuse(Close::Reset));
    let out = publish(&proxy.url("dead"), "2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{stderr}");
    assert!(stderr.contains(&proxy.url("dead")), "{stderr}");
    assert!(!served.path().join("dead/metadata/timestamp.json").exists());

    // A third of the connections reset before any answer: every request is retried until it lands.
    proxy
        .control()
        .set_random(RandomFaults::new(7, 0.33).with(1, FaultTemplate::Reset { after: 0..=0 }));
    let out = publish(&proxy.url("flaky"), "8");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        proxy.control().stats().reset >= 1,
        "{:?}",
        proxy.control().stats()
    );
    let verdict = run_json(&[
        "verify",
        &nginx.url("flaky"),
        "--root",
        repo.root_file().to_str().unwrap(),
        "--channel",
        "prod",
    ]);
    assert_eq!(verdict["bundle"]["sha256"], made.bundle_sha256.to_hex());
}
