//! The release engineer's whole path with the real CLI: keygen → repo init → pack → release → publish to a
//! directory nginx serves → python-tuf's `ngclient` downloads the bundle and `mast verify` agrees; then a
//! one-manifest change publishes only its new chunks, and a timestamp refresh only the timestamp.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod publish_support;

use std::path::Path;
use std::process::Command;

use mast_protocol::digest::Sha256Digest;
use mast_test_support::{Nginx, NginxConfig, PYTHON_TUF, workspace_root};
use publish_support::run_json;

fn configmap(name: &str, size: usize, salt: u64) -> String {
    let mut x = salt | 1;
    let value: String = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  blob: {value}\n"
    )
}

fn ngclient(python: &Path, nginx: &Nginx, root: &Path, state: &Path, target: &str) -> String {
    let out = Command::new(python)
        .arg(workspace_root().join("protocol/tests/interop/ngclient_download.py"))
        .args(["--metadata-url", &nginx.url("metadata/")])
        .args(["--targets-url", &nginx.url("targets/")])
        .arg("--root")
        .arg(root)
        .arg("--metadata-dir")
        .arg(state.join("metadata"))
        .args(["--target", target])
        .arg("--out")
        .arg(state.join("out"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python-tuf refused: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    line["sha256"].as_str().unwrap().to_owned()
}

#[test]
fn keygen_init_pack_release_publish_then_python_tuf_and_verify_read_it() {
    let (Some(python), true) = (PYTHON_TUF.require(), Nginx::available()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo, dest, state) = (
        tmp.path().join("keys"),
        tmp.path().join("repo"),
        tmp.path().join("mirror"),
        tmp.path().join("site"),
    );
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    let key = |role: &str| keys.join(format!("{role}.pem")).display().to_string();
    for role in ["root", "targets", "snapshot", "timestamp"] {
        run_json(&["keygen", "--out", &key(role)]);
    }
    let repo_s = repo.to_str().unwrap();
    run_json(&[
        "repo",
        "init",
        repo_s,
        "--root-key",
        &key("root"),
        "--targets-key",
        &key("targets"),
        "--snapshot-key",
        &key("snapshot"),
        "--timestamp-key",
        &key("timestamp"),
    ]);

    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    for i in 0..6 {
        std::fs::write(
            manifests.join(format!("cm-{i}.yaml")),
            configmap(&format!("cm-{i}"), 60_000, i + 1),
        )
        .unwrap();
    }
    let bundle = tmp.path().join("b1.tar");
    let b = bundle.to_str().unwrap();
    run_json(&["pack", manifests.to_str().unwrap(), "--out", b]);
    let first = run_json(&["release", repo_s, b, "--channel", "prod"]);
    assert_eq!(first["release"], 1);

    let to = format!("dir:{}", dest.display());
    let published = run_json(&["publish", repo_s, "--to", &to]);
    assert_eq!(published["releases"], serde_json::json!(["prod/1"]));
    assert!(!dest.join(".mast").exists());

    let nginx = NginxConfig::new(&dest).read_only().start();
    let root = repo.join("metadata/1.root.json");
    let bundle_file = repo.join(first["bundle_target"].as_str().unwrap());
    let sha = ngclient(
        &python,
        &nginx,
        &root,
        &state,
        "channels/prod/1/bundle.tar.gz",
    );
    assert_eq!(
        sha,
        Sha256Digest::of(&std::fs::read(&bundle_file).unwrap()).to_hex()
    );
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
    let verdict = verify();
    assert_eq!(verdict["release"], 1, "{verdict}");
    assert_eq!(verdict["tar_sha256"], first["tar_sha256"]);
    assert_eq!(verdict["bundle"]["sha256"], sha);

    // One manifest edited: the release adds a few chunks, and the publish sends exactly those.
    std::fs::write(manifests.join("cm-2.yaml"), configmap("cm-2", 60_000, 99)).unwrap();
    let bundle2 = tmp.path().join("b2.tar");
    let b2 = bundle2.to_str().unwrap();
    run_json(&["pack", manifests.to_str().unwrap(), "--out", b2]);
    let second = run_json(&["release", repo_s, b2, "--channel", "prod"]);
    assert_eq!(second["release"], 2);
    let delta = run_json(&["publish", repo_s, "--to", &to]);
    // The new chunks, and release 2's chunk pack.
    assert_eq!(
        delta["chunks_uploaded"].as_u64(),
        second["new_chunks"].as_u64().map(|n| n + 1),
        "{delta}"
    );
    assert_eq!(delta["targets_uploaded"], 2, "{delta}");
    let verdict = verify();
    assert_eq!(verdict["release"], 2, "{verdict}");
    assert_eq!(verdict["tar_sha256"], second["tar_sha256"]);
    let sha2 = ngclient(
        &python,
        &nginx,
        &root,
        &state,
        "channels/prod/2/bundle.tar.gz",
    );
    assert_eq!(verdict["bundle"]["sha256"], sha2);

    // Unchanged: nothing. A refreshed timestamp: the timestamp alone.
    let again = run_json(&["publish", repo_s, "--to", &to]);
    assert_eq!(again["uploaded"], 0, "{again}");
    run_json(&["timestamp", "refresh", repo_s, "--force"]);
    let refreshed = run_json(&["publish", repo_s, "--to", &to]);
    assert_eq!(refreshed["chunks_uploaded"], 0, "{refreshed}");
    assert_eq!(refreshed["targets_uploaded"], 0, "{refreshed}");
    assert_eq!(refreshed["timestamp_uploaded"], true, "{refreshed}");
    assert_eq!(verify()["release"], 2);
}
