//! `mast publish --to dir:` end to end: the directory, served by nginx, is read by python-tuf's client and
//! by `mast verify`; publishing is incremental; a repository that does not verify publishes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod publish_support;

use std::collections::BTreeSet;
use std::process::Command;

use mast_protocol::tuf::builder::Expiries;
use mast_test_support::{Nginx, NginxConfig, PYTHON_TUF, workspace_root};
use publish_support::{TestRepo, as_files, files_under, manifests, run, run_json};
use time::Duration;

fn publish(repo: &TestRepo, to: &str) -> serde_json::Value {
    run_json(&["publish", repo.path().to_str().unwrap(), "--to", to])
}

#[test]
fn publishes_a_directory_that_python_tuf_and_mast_verify_read_over_nginx() {
    let (Some(python), true) = (PYTHON_TUF.require(), Nginx::available()) else {
        return;
    };
    let mut repo = TestRepo::new();
    let files = manifests(8, 40_000, 1);
    let first = repo.release("prod", 1, &as_files(&files));
    let dest = tempfile::tempdir().unwrap();
    let to = format!("dir:{}", dest.path().display());

    let report = publish(&repo, &to);
    assert_eq!(report["skipped"], 0, "{report}");
    // The chunks and the release's chunk pack.
    assert_eq!(
        report["chunks_uploaded"],
        first.chunks.len() + 1,
        "{report}"
    );
    assert_eq!(report["targets_uploaded"], 2, "{report}");
    // 1.root, 1.targets, 1.snapshot, timestamp.
    assert_eq!(report["metadata_uploaded"], 4, "{report}");
    assert_eq!(report["timestamp_uploaded"], true);
    // The layout, all of it, and nothing private.
    let published = files_under(dest.path());
    let local: Vec<String> = files_under(repo.path())
        .into_iter()
        .filter(|f| !f.starts_with(".mast/"))
        .collect();
    assert_eq!(published, local);

    let nginx = NginxConfig::new(dest.path()).read_only().start();
    let client = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(workspace_root().join("protocol/tests/interop/ngclient_download.py"))
        .args(["--metadata-url", &nginx.url("metadata/")])
        .args(["--targets-url", &nginx.url("targets/")])
        .arg("--root")
        .arg(repo.root_file())
        .arg("--metadata-dir")
        .arg(client.path().join("metadata"))
        .args(["--target", &first.bundle_name])
        .arg("--out")
        .arg(client.path().join("out"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python-tuf refused: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["sha256"], first.bundle_sha256.to_hex());
    assert_eq!(line["length"], first.bundle_length);

    let root = repo.root_file();
    let verify = |mirror: &str| {
        run_json(&[
            "verify",
            mirror,
            "--root",
            root.to_str().unwrap(),
            "--channel",
            "prod",
        ])
    };
    let verdict = verify(&nginx.base_url());
    assert_eq!(verdict["release"], 1, "{verdict}");
    assert_eq!(verdict["bundle"]["sha256"], first.bundle_sha256.to_hex());
    assert_eq!(verdict["tar_sha256"], first.tar_sha256.to_hex());
    assert_eq!(verdict["files"], 8);
    assert_eq!(verdict["chunks"], first.chunks.len());

    // Unchanged: nothing moves, not even the timestamp.
    let again = publish(&repo, &to);
    assert_eq!(again["uploaded"], 0, "{again}");
    assert_eq!(again["bytes_uploaded"], 0, "{again}");
    assert_eq!(again["timestamp_uploaded"], false, "{again}");

    // One manifest changed: only the chunks that changed, the release's chunk pack, the two targets and
    // three metadata files.
    let mut changed = files.clone();
    changed[3].1[100] ^= 0xff;
    let second = repo.release("prod", 2, &as_files(&changed));
    let old: BTreeSet<_> = first.chunks.iter().collect();
    let new_chunks = second.chunks.iter().filter(|c| !old.contains(c)).count();
    assert!(new_chunks >= 1 && new_chunks < second.chunks.len() / 2);
    let delta = publish(&repo, &to);
    assert_eq!(delta["chunks_uploaded"], new_chunks + 1, "{delta}");
    assert_eq!(delta["targets_uploaded"], 2, "{delta}");
    assert_eq!(delta["metadata_uploaded"], 3, "{delta}");
    let verdict = verify(&nginx.base_url());
    assert_eq!(verdict["release"], 2, "{verdict}");
    assert_eq!(verdict["tar_sha256"], second.tar_sha256.to_hex());
    // The site that already trusts release 1 moves to 2 with python-tuf too.
    let out = Command::new(&python)
        .arg(workspace_root().join("protocol/tests/interop/ngclient_download.py"))
        .args(["--metadata-url", &nginx.url("metadata/")])
        .args(["--targets-url", &nginx.url("targets/")])
        .arg("--root")
        .arg(repo.root_file())
        .arg("--metadata-dir")
        .arg(client.path().join("metadata"))
        .args(["--target", &second.bundle_name])
        .arg("--out")
        .arg(client.path().join("out"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["sha256"], second.bundle_sha256.to_hex());
}

#[test]
fn a_repository_that_does_not_verify_publishes_nothing() {
    let mut repo = TestRepo::new();
    let made = repo.release("prod", 1, &as_files(&manifests(4, 40_000, 2)));
    let dest = tempfile::tempdir().unwrap();
    let to = format!("dir:{}", dest.path().display());
    let chunk = repo.path().join(format!("chunks/{}", made.chunks[1]));
    let honest = std::fs::read(&chunk).unwrap();
    let mut bad = honest.clone();
    bad[10] ^= 1;
    std::fs::write(&chunk, &bad).unwrap();

    let out = run(&["publish", repo.path().to_str().unwrap(), "--to", &to]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains(&made.chunks[1].to_hex()) && stderr.contains("nothing was published"),
        "{stderr}"
    );
    assert!(files_under(dest.path()).is_empty());

    std::fs::remove_file(&chunk).unwrap();
    let out = run(&["publish", repo.path().to_str().unwrap(), "--to", &to]);
    assert!(!out.status.success());
    assert!(files_under(dest.path()).is_empty());
    std::fs::write(&chunk, &honest).unwrap();

    // A target whose bytes are not the signed ones.
    let bundle = repo.path().join(format!(
        "targets/channels/prod/1/{}.bundle.tar.gz",
        made.bundle_sha256
    ));
    let gz = std::fs::read(&bundle).unwrap();
    std::fs::write(&bundle, &gz[..gz.len() - 1]).unwrap();
    let out = run(&["publish", repo.path().to_str().unwrap(), "--to", &to]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(".bundle.tar.gz"), "{stderr}");
    assert!(files_under(dest.path()).is_empty());
    std::fs::write(&bundle, &gz).unwrap();

    // A bad destination is a usage error naming the flag; an absent repository names its path.
    let out = run(&["publish", repo.path().to_str().unwrap(), "--to", "ftp://x"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to"));
    let out = run(&["publish", "/nonexistent/repo", "--to", &to]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/repo"));

    // Healed, it publishes.
    let report = publish(&repo, &to);
    assert_eq!(report["timestamp_uploaded"], true);
}

#[test]
fn an_expired_repository_is_refused() {
    let mut repo = TestRepo::with_expiries(Expiries {
        timestamp: Duration::seconds(-60),
        ..Expiries::default()
    });
    repo.release("prod", 1, &as_files(&manifests(2, 1000, 3)));
    let dest = tempfile::tempdir().unwrap();
    let out = run(&[
        "publish",
        repo.path().to_str().unwrap(),
        "--to",
        &format!("dir:{}", dest.path().display()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(files_under(dest.path()).is_empty());
}

#[test]
fn a_newer_timestamp_on_the_destination_is_not_rolled_back() {
    let mut repo = TestRepo::new();
    repo.release("prod", 1, &as_files(&manifests(2, 1000, 4)));
    let old = tempfile::tempdir().unwrap();
    copy_dir(repo.path(), old.path());
    repo.refresh_timestamp();
    let dest = tempfile::tempdir().unwrap();
    let to = format!("dir:{}", dest.path().display());
    let report = publish(&repo, &to);
    assert_eq!(report["timestamp_version"], 2);
    let served = std::fs::read(dest.path().join("metadata/timestamp.json")).unwrap();

    let out = run(&["publish", old.path().to_str().unwrap(), "--to", &to]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("timestamp version 2"), "{stderr}");
    assert_eq!(
        std::fs::read(dest.path().join("metadata/timestamp.json")).unwrap(),
        served
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for f in files_under(from) {
        publish_support::write(to, &f, &std::fs::read(from.join(&f)).unwrap());
    }
}
