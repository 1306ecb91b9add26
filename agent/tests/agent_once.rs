//! The real `mast-agent` binary against repositories the packager's own code wrote, served by real
//! nginx: first apply, an idle pass, a one-file change, lying mirrors, a site offline, bad config.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;

use mast_test_support::{Nginx, NginxConfig};
use support::{Repo, Site, applied_files, count_after, text};

fn nginx(root: &std::path::Path) -> Nginx {
    NginxConfig::new(root).read_only().start()
}

#[test]
fn applies_a_release_then_idles_then_fetches_only_the_changed_chunks() {
    let repo = Repo::new(300);
    let first = repo.release();
    repo.age_timestamp();
    let server = nginx(&repo.repo);
    let site = Site::new();
    let mirror = server.url("");

    let out = site.run(&repo, &[&mirror], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("applied release 1"), "{stdout}");
    let applied = applied_files(&site.applied());
    assert_eq!(applied.len(), 300);
    assert_eq!(
        applied[7].1,
        fs::read(repo.manifests.join(&applied[7].0)).unwrap()
    );
    let status = site.status();
    assert_eq!(status["channels"]["prod"]["current_release"], 1);
    assert_eq!(status["trusted"]["root"], 1);
    assert!(status["last_error"].is_null(), "{status}");

    // An idle pass: up to date, no content fetched.
    let before = server.requests().len();
    let out = site.run(&repo, &[&mirror], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date at release 1"));
    let idle: Vec<_> = server.requests().into_iter().skip(before).collect();
    assert!(
        idle.iter().all(|r| r.uri.contains("/metadata/")),
        "an idle pass fetched content: {idle:?}"
    );
    // The timestamp is revalidated with the ETag nginx gave last time: one 304, no body.
    let timestamp: Vec<_> = idle
        .iter()
        .filter(|r| r.uri.ends_with("/timestamp.json"))
        .collect();
    assert_eq!(timestamp.len(), 1, "{idle:?}");
    assert_eq!(
        (timestamp[0].status, timestamp[0].body_bytes),
        (304, 0),
        "{idle:?}"
    );
    assert!(timestamp[0].if_none_match.is_some());
    // Besides it, only the probe for the next root version (404) is sent.
    assert_eq!(idle.len(), 2, "{idle:?}");

    // One manifest changes: the second release costs a chunk or two, not the bundle.
    repo.edit(150, 1);
    let second = repo.release();
    assert_eq!(second.release, 2);
    let before = server.requests().len();
    let out = site.run(&repo, &[&mirror], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("applied release 2: 1 written, 299 unchanged")
    );
    let chunk_requests: Vec<_> = server
        .requests()
        .into_iter()
        .skip(before)
        .filter(|r| r.uri.contains("/chunks/"))
        .collect();
    assert!(
        (1..=3).contains(&chunk_requests.len()),
        "{} chunk requests of {} chunks: {chunk_requests:?}",
        chunk_requests.len(),
        second.chunks
    );
    let chunk_bytes: u64 = chunk_requests.iter().map(|r| r.body_bytes).sum();
    assert!(
        chunk_bytes * 50 < first.tar_bytes,
        "{chunk_bytes} chunk bytes for a one-file change in a {}-byte bundle",
        first.tar_bytes
    );
    assert_eq!(
        fs::read(site.applied().join("config-0150.yaml")).unwrap(),
        fs::read(repo.manifests.join("config-0150.yaml")).unwrap()
    );
    assert_eq!(site.status()["channels"]["prod"]["current_release"], 2);
}

#[test]
fn a_tampered_mirror_is_skipped_and_only_lying_mirrors_apply_nothing() {
    let repo = Repo::new(40);
    let release = repo.release();
    // A copy of the repository with one chunk's bytes changed, in the chunk and in the chunk pack: its
    // metadata verifies, its content not.
    let liar = tempfile::tempdir().unwrap();
    copy_dir(&repo.repo, liar.path());
    let index = repo.index(&release);
    let (pack, _) = repo.pack(&release);
    let tampered = index["chunks"][1]["sha256"].as_str().unwrap().to_owned();
    let chunk = liar.path().join("chunks").join(&tampered);
    let mut bytes = fs::read(&chunk).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&chunk, bytes).unwrap();
    let first_length = index["chunks"][0]["length"].as_u64().unwrap() as usize;
    let mut bytes = fs::read(liar.path().join(&pack)).unwrap();
    bytes[first_length + 10] ^= 0xff;
    fs::write(liar.path().join(&pack), bytes).unwrap();
    let liar_server = nginx(liar.path());
    let honest = nginx(&repo.repo);

    let site = Site::new();
    let out = site.run(&repo, &[&liar_server.url("")], &["once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no mirror served its content as signed"),
        "{stderr}"
    );
    assert!(stderr.contains(&tampered), "{stderr}");
    assert!(!site.applied().exists() || applied_files(&site.applied()).is_empty());
    let status = site.status();
    assert!(
        status["channels"]["prod"]["current_release"].is_null(),
        "{status}"
    );
    assert!(
        status["last_error"].as_str().unwrap().contains("as signed"),
        "{status}"
    );

    // With an honest mirror after the liar, the site converges; the good chunks it already stored are
    // kept, the bad one is fetched from the honest mirror.
    let out = site.run(&repo, &[&liar_server.url(""), &honest.url("")], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("applied release 1"), "{stdout}");
    // At least the frame before the tampered one, which the liar's pack gave verified, was kept.
    assert!(
        count_after(&stdout, "reused ").unwrap_or(0) >= 1,
        "{stdout}"
    );
    assert_eq!(applied_files(&site.applied()).len(), 40);
}

#[test]
fn a_stale_or_rolled_back_mirror_is_skipped_for_the_next_one() {
    let repo = Repo::new(20);
    repo.release();
    // A mirror frozen at release 1 while the repository moves on to release 2.
    let stale = tempfile::tempdir().unwrap();
    copy_dir(&repo.repo, stale.path());
    repo.edit(3, 1);
    repo.release();
    let stale_server = nginx(stale.path());
    let honest = nginx(&repo.repo);

    let site = Site::new();
    // First the site learns release 2 from the honest mirror...
    let out = site.run(&repo, &[&honest.url("")], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    // ...then the stale mirror's older timestamp is a rollback: refused, and the next mirror is used.
    let out = site.run(&repo, &[&stale_server.url(""), &honest.url("")], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("skipped"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date at release 2"));
    // With only the stale mirror the pass fails and nothing changes.
    let out = site.run(&repo, &[&stale_server.url("")], &["once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mirror gave verifiable metadata"));
    assert_eq!(site.status()["channels"]["prod"]["current_release"], 2);
}

#[test]
fn offline_the_site_keeps_what_it_runs_and_says_why() {
    let repo = Repo::new(10);
    repo.release();
    let site = Site::new();
    {
        let server = nginx(&repo.repo);
        let out = site.run(&repo, &[&server.url("")], &["once"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    // The server is gone: connections are refused.
    let down = format!("http://127.0.0.1:{}/", mast_test_support::free_port());
    let before = applied_files(&site.applied());
    let out = site.run(&repo, &[&down], &["once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(applied_files(&site.applied()), before);
    let status = site.status();
    assert_eq!(status["channels"]["prod"]["current_release"], 1);
    assert!(!status["last_error"].is_null(), "{status}");
    assert!(status["last_contact"].is_string(), "{status}");
}

#[test]
fn a_release_outside_the_sites_wave_is_held_with_exit_3() {
    let repo = Repo::new(5);
    // Every seed below 10000 is in a wave that starts in a day.
    repo.release_with(Some("100%@+1d"));
    let server = nginx(&repo.repo);
    let site = Site::new();
    let out = site.run(&repo, &[&server.url("")], &["once"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("release 1 is held until"));
    // Fetched and verified, not applied.
    assert!(!site.applied().exists());
    let status = site.status();
    assert_eq!(status["channels"]["prod"]["highest_fetched"], 1);
    assert!(status["channels"]["prod"]["current_release"].is_null());
}

#[test]
fn bad_configuration_exits_64_naming_the_key() {
    let repo = Repo::new(1);
    let site = Site::new();
    let out = site
        .agent(&repo, &["http://127.0.0.1:9/"])
        .env("MAST_POLL_INTERVAL", "soon")
        .arg("once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MAST_POLL_INTERVAL") && stderr.contains("poll_interval"),
        "{stderr}"
    );
    assert!(
        !site.state().exists(),
        "a config error must not create the state database"
    );

    let out = site
        .agent(&repo, &["ftp://example.com/"])
        .arg("once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mirrors"));

    let out = site.run(&repo, &["http://127.0.0.1:9/"], &["once", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
}

#[test]
fn status_without_a_database_fails_without_creating_one() {
    let site = Site::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mast-agent"))
        .env("MAST_CONFIG", site.config())
        .args(["status", "--state"])
        .arg(site.state())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no state database here"));
    assert!(!site.state().exists());
}

/// A copy of `repo`'s repository whose chunk pack (`pack`, its mirror path) stops half-way; and where.
fn half_pack_copy(repo: &Repo, pack: &str) -> (tempfile::TempDir, usize) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&repo.repo, copy.path());
    let bytes = fs::read(copy.path().join(pack)).unwrap();
    let cut = bytes.len() / 2;
    fs::write(copy.path().join(pack), &bytes[..cut]).unwrap();
    (copy, cut)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn import_takes_a_repository_directory_or_a_tar_archive_of_one() {
    let repo = Repo::new(12);
    repo.release();
    // No mirror is reachable: the import alone brings the release.
    let unreachable = format!("http://127.0.0.1:{}/", mast_test_support::free_port());

    let site = Site::new();
    let out = site.run(
        &repo,
        &[&unreachable],
        &["import", repo.repo.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(applied_files(&site.applied()).len(), 12);

    // GNU tar's archive of the repository directory, as an operator would carry it.
    repo.edit(2, 1);
    repo.release();
    let archive = repo.dir.path().join("repo.tar.gz");
    let tar = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(repo.dir.path())
        .arg("repo")
        .status()
        .unwrap();
    assert!(tar.success());
    let out = site.run(
        &repo,
        &[&unreachable],
        &["import", archive.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied release 2"));
    // The unpacked copy is gone.
    let leftovers: Vec<_> = fs::read_dir(site.state().parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("import-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // An archive with a symlink is refused before anything is used.
    let hostile = repo.dir.path().join("hostile");
    fs::create_dir_all(hostile.join("repo")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", hostile.join("repo/metadata")).unwrap();
    let archive = repo.dir.path().join("hostile.tar");
    let tar = std::process::Command::new("tar")
        .arg("cf")
        .arg(&archive)
        .arg("-C")
        .arg(&hostile)
        .arg("repo")
        .status()
        .unwrap();
    assert!(tar.success());
    let out = site.run(
        &repo,
        &[&unreachable],
        &["import", archive.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only files and directories"));
    assert_eq!(site.status()["channels"]["prod"]["current_release"], 2);
}

/// A ConfigMap of `len` random bytes as base64: data that neither gzip nor zstd can shrink below 3/4.
fn random_manifest(dir: &std::path::Path, name: &str, len: usize) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = vec![0u8; len - len % 3];
    getrandom::fill(&mut bytes).unwrap();
    let mut data = String::with_capacity(bytes.len() / 3 * 4);
    for three in bytes.chunks(3) {
        let n = u32::from(three[0]) << 16 | u32::from(three[1]) << 8 | u32::from(three[2]);
        for shift in [18, 12, 6, 0] {
            data.push(ALPHABET[(n >> shift & 63) as usize] as char);
        }
    }
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: edge\nbinaryData:\n  blob: {data}\n"
    );
    fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
}

#[test]
fn a_first_install_reads_the_chunk_pack_once_and_a_delta_only_chunks() {
    let repo = Repo::new(0);
    for i in 0..8 {
        random_manifest(&repo.manifests, &format!("blob-{i}"), 200_000);
    }
    let first = repo.release();
    let (pack, _) = repo.pack(&first);
    let server = nginx(&repo.repo);
    let site = Site::new();
    let mirror = server.url("");
    let out = site.run(&repo, &[&mirror], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("fetched {} chunks", first.chunks)),
        "{stdout}"
    );
    // One request for every chunk; the bundle is for other tools.
    let requests = server.requests();
    let chunk_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.uri.starts_with("/chunks/"))
        .collect();
    assert_eq!(chunk_requests.len(), 1, "{requests:?}");
    assert_eq!(chunk_requests[0].uri, format!("/{pack}"));
    assert_eq!(chunk_requests[0].status, 200);
    assert!(
        requests.iter().all(|r| !r.uri.ends_with(".bundle.tar.gz")),
        "{requests:?}"
    );
    site.assert_applied(&repo);
    // The frames stored from the pack are the published chunks: a one-file change costs its chunks (the
    // six files after it are held, so reading the pack from the change on would not pay).
    random_manifest(&repo.manifests, "blob-1", 200_000);
    let second = repo.release();
    let (second_pack, _) = repo.pack(&second);
    let before = server.requests().len();
    let out = site.run(&repo, &[&mirror], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let delta: Vec<_> = server.requests().into_iter().skip(before).collect();
    assert!(
        delta.iter().all(|r| r.uri != format!("/{second_pack}")),
        "{delta:?}"
    );
    let chunks = delta
        .iter()
        .filter(|r| r.uri.starts_with("/chunks/"))
        .count();
    assert!(
        (1..first.chunks).contains(&chunks),
        "{chunks} chunk requests: {delta:?}"
    );
    assert_eq!(
        fs::read(site.applied().join("blob-1.yaml")).unwrap(),
        fs::read(repo.manifests.join("blob-1.yaml")).unwrap()
    );
}

#[test]
fn a_chunk_pack_that_ends_early_keeps_its_frames_and_the_rest_comes_as_chunks() {
    let repo = Repo::new(300);
    let release = repo.release();
    let (pack, length) = repo.pack(&release);
    // A mirror whose chunk pack stops half-way: the frames before the cut are whole and verify.
    let (short, cut) = half_pack_copy(&repo, &pack);
    let server = nginx(short.path());

    let site = Site::new();
    let out = site.run(&repo, &[&server.url("")], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("ended at byte {cut} of its {length} bytes")),
        "{stderr}"
    );
    site.assert_applied(&repo);
    // One read of the pack; then only the chunks it did not give, each once.
    let requests = server.requests();
    let chunk_reads: Vec<_> = requests
        .iter()
        .filter(|r| r.uri.starts_with("/chunks/") && r.uri != format!("/{pack}"))
        .collect();
    let pack_reads = requests
        .iter()
        .filter(|r| r.uri == format!("/{pack}"))
        .count();
    assert_eq!(pack_reads, 1, "{requests:?}");
    assert!(
        !chunk_reads.is_empty() && chunk_reads.len() < release.chunks,
        "{} of {} chunks read after the pack: {requests:?}",
        chunk_reads.len(),
        release.chunks
    );
}

#[test]
fn a_mirror_that_ignores_range_sends_the_whole_pack_and_only_what_was_missing_is_stored() {
    let repo = Repo::new(300);
    let release = repo.release();
    let (pack, _) = repo.pack(&release);
    // First a mirror that has only the first half of the pack and none of the chunks: the site keeps
    // the frames it gave, and the pass fails for the rest.
    let (broken, _) = half_pack_copy(&repo, &pack);
    for entry in fs::read_dir(broken.path().join("chunks")).unwrap() {
        let path = entry.unwrap().path();
        if !path.ends_with(&pack) {
            fs::remove_file(path).unwrap();
        }
    }
    let server = nginx(broken.path());
    let site = Site::new();
    let out = site.run(&repo, &[&server.url("")], &["once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // Then python's http.server, which answers a range request with the whole file.
    let python = mast_test_support::HttpServer::python(&repo.repo);
    let out = site.run(&repo, &[&python.url("")], &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let count =
        |word| count_after(&stdout, word).unwrap_or_else(|| panic!("no {word:?} in {stdout}"));
    let (fetched, reused) = (count("fetched "), count("reused "));
    assert!(reused >= 1, "{stdout}");
    assert_eq!(fetched + reused, release.chunks, "{stdout}");
    let log = fs::read_to_string(python.log()).unwrap();
    let reads: Vec<&str> = log.lines().filter(|l| l.contains("GET /chunks/")).collect();
    assert_eq!(reads.len(), 1, "{log}");
    assert!(
        reads[0].contains(&format!("GET /{pack} ")) && reads[0].contains(" 200 "),
        "{log}"
    );
    site.assert_applied(&repo);
}
