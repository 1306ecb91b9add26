//! The real `mast-agent` binary fetching over hostile links: killed with SIGKILL mid-download and
//! restarted, and reading a release from an OCI registry alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mast_test_support::fault_proxy::Faults;
use mast_test_support::{FaultProxy, NginxConfig, Registry};
use support::{Repo, Site, applied_files, text};

/// Chunks the site's database holds, read while the agent may be writing (WAL lets a reader in).
fn chunks_held(site: &Site) -> i64 {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        site.state(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    conn.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))
        .unwrap_or(0)
}

#[test]
fn a_download_killed_with_sigkill_resumes_and_costs_less_than_twice_the_release() {
    let repo = Repo::new(600);
    let release = repo.release();
    let server = NginxConfig::new(&repo.repo).read_only().start();
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", server.port()).parse().unwrap()).unwrap();
    // A slow link: the release takes many seconds to arrive, so the kill lands mid-download.
    proxy
        .control()
        .set_faults(Faults::none().throttle(48 * 1024));
    let site = Site::new();
    let mirror = proxy.url("");

    let mut child = site
        .agent(&repo, &[&mirror])
        .arg("once")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while chunks_held(&site) < 3 {
        assert!(Instant::now() < deadline, "no chunk arrived in 60 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the agent finished before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let kept = chunks_held(&site);
    assert!(
        kept < release.chunks as i64,
        "{kept} of {} chunks",
        release.chunks
    );
    assert!(
        !site.applied().exists(),
        "nothing may be applied before the release is whole"
    );

    // Restart on a good link: only what was missing is fetched.
    proxy.control().pass_through();
    let out = site.run(&repo, &[&mirror], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("applied release 1"), "{stdout}");
    assert!(
        stdout.contains(&format!("reused {kept} held chunks")),
        "{stdout}"
    );

    let state = mast_agent::state::State::open(&site.state()).unwrap();
    state.integrity_check().unwrap();
    site.assert_applied(&repo);
    // The first run read the chunk pack until it was killed; the restart read the rest of it from the
    // first frame it lacked, a range request.
    let (pack, content) = repo.pack(&release);
    let reads: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.uri == format!("/{pack}"))
        .collect();
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert_eq!(reads[1].status, 206, "{reads:?}");
    // Every byte both runs read through the link, metadata included, against the release's chunk pack
    // (all its chunks, once) as the packager wrote it.
    let moved = proxy.control().stats().bytes_downstream;
    eprintln!(
        "killed holding {kept} of {} chunks; {moved} bytes crossed the link for {content} bytes of chunks",
        release.chunks
    );
    assert!(
        moved < 2 * content,
        "{moved} bytes on the link for {content} bytes of chunks"
    );
}

#[test]
fn a_release_published_to_an_oci_registry_is_fetched_from_it_alone() {
    let repo = Repo::new(50);
    repo.release();
    let registry = Registry::start();
    let to = format!("oci+http://127.0.0.1:{}/edge/mast", registry.port());
    repo.publish(&to);

    let site = Site::new();
    let out = site.run(&repo, &[&to], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied release 1"));
    assert_eq!(applied_files(&site.applied()).len(), 50);

    // A one-file change published to the registry: the second pass reuses what it holds.
    repo.edit(10, 1);
    repo.release();
    repo.publish(&to);
    let out = site.run(&repo, &[&to], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("applied release 2: 1 written"), "{stdout}");
    assert_eq!(
        fs::read(site.applied().join("config-0010.yaml")).unwrap(),
        fs::read(repo.manifests.join("config-0010.yaml")).unwrap()
    );
}
