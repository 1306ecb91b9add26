//! Root ceremonies through the real binary: root 1 held offline, and a rotation signed in turn by
//! holders of the old and the new root keys, published only when both thresholds are met.

// Helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use std::collections::BTreeMap;
use std::path::Path;

use cli_support::{Keys, fails, json, manifests, ok, s, snapshot_tree};
use mast_protocol::tuf::Repository;

fn load(repo: &Path) -> Repository {
    let files: BTreeMap<String, Vec<u8>> = snapshot_tree(repo)
        .into_iter()
        .filter(|(name, _)| name.starts_with("metadata/"))
        .collect();
    Repository::load(files).unwrap()
}

fn metadata(repo: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot_tree(repo)
        .into_iter()
        .filter(|(name, _)| name.starts_with("metadata/"))
        .collect()
}

/// `(have, need)` of the pending root's own threshold and of the previous root's.
fn counts(report: &serde_json::Value) -> ((u64, u64), Option<(u64, u64)>) {
    let pair = |t: &serde_json::Value| (t["have"].as_u64().unwrap(), t["need"].as_u64().unwrap());
    let pending = &report["pending"];
    let previous = (!pending["previous"].is_null()).then(|| pair(&pending["previous"]));
    (pair(&pending["own"]), previous)
}

#[test]
fn rotation_is_signed_in_turn_by_old_and_new_holders() {
    let keys = Keys::new(&[
        "alice",
        "bob",
        "carol",
        "dave",
        "mallory",
        "targets",
        "snapshot",
        "timestamp",
        "timestamp2",
    ]);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");

    // Root 1: alice's private key is here, bob is offline (public key only); threshold 2.
    let report = json(&[
        "repo",
        "init",
        s(&repo),
        "--root-key",
        s(&keys.private("alice")),
        "--root-key",
        s(&keys.public("bob")),
        "--root-threshold",
        "2",
        "--targets-key",
        s(&keys.private("targets")),
        "--snapshot-key",
        s(&keys.private("snapshot")),
        "--timestamp-key",
        s(&keys.private("timestamp")),
    ]);
    assert_eq!(report["published"], false);
    assert_eq!(report["root"]["own"]["have"], 1);
    assert!(
        !repo.join("metadata").exists(),
        "nothing is published before root 1 is complete"
    );
    let dir = work.path().join("m");
    manifests(&dir);
    let err = fails(&["release", s(&repo), s(&dir), "--channel", "prod"], 65);
    assert!(
        err.contains("root version 1 is still collecting signatures"),
        "{err}"
    );

    // Bob signs: root 1 complete, repository published with the remembered online keys.
    let report = json(&["root", "sign", s(&repo), "--key", s(&keys.private("bob"))]);
    assert_eq!(report["published_now"], true);
    assert_eq!(load(&repo).root().version(), 1);
    ok(&["release", s(&repo), s(&dir), "--channel", "prod"]);

    // Rotate to carol and dave (threshold 2) and a new timestamp key.
    let report = json(&[
        "root",
        "rotate",
        s(&repo),
        "--root-key",
        s(&keys.public("carol")),
        "--root-key",
        s(&keys.public("dave")),
        "--root-threshold",
        "2",
        "--timestamp-key",
        s(&keys.private("timestamp2")),
    ]);
    assert_eq!(counts(&report), ((0, 2), Some((0, 2))));
    assert_eq!(report["pending"]["missing"].as_array().unwrap().len(), 4);
    let published = metadata(&repo);
    let err = fails(&["root", "rotate", s(&repo)], 65);
    assert!(err.contains("already pending"), "{err}");

    let sign = |holder: &str| json(&["root", "sign", s(&repo), "--key", s(&keys.private(holder))]);
    let report = sign("carol");
    assert_eq!(counts(&report), ((1, 2), Some((0, 2))));
    let report = sign("alice");
    assert_eq!(counts(&report), ((1, 2), Some((1, 2))));
    // Signing twice changes nothing; a key of neither root is refused by name.
    let report = sign("alice");
    assert_eq!(counts(&report), ((1, 2), Some((1, 2))));
    let err = fails(
        &[
            "root",
            "sign",
            s(&repo),
            "--key",
            s(&keys.private("mallory")),
        ],
        65,
    );
    assert!(
        err.contains("mallory.pem") && err.contains("not a root key of root version 2 or 1"),
        "{err}"
    );
    let report = sign("bob");
    assert_eq!(counts(&report), ((1, 2), Some((2, 2))));
    assert_eq!(
        report["published_now"], false,
        "the new root's own threshold is not met yet"
    );
    let status = json(&["root", "status", s(&repo)]);
    assert_eq!(status["pending"]["complete"], false);
    assert_eq!(status["pending"]["signed_by"].as_array().unwrap().len(), 3);
    assert_eq!(
        metadata(&repo),
        published,
        "nothing is published while a threshold is unmet"
    );

    // Dave completes it: root 2 is published, and the timestamp re-signed with the new timestamp key.
    let report = sign("dave");
    assert_eq!(counts(&report), ((2, 2), Some((2, 2))));
    assert_eq!(report["published_now"], true);
    let written = report["written"]["files"].to_string();
    assert!(
        written.contains("metadata/2.root.json")
            && written.ends_with("\"metadata/timestamp.json\"]"),
        "{written}"
    );
    let loaded = load(&repo);
    assert_eq!(loaded.root().version(), 2);
    assert!(!repo.join(".mast/root.pending.json").exists());
    let err = fails(
        &["root", "sign", s(&repo), "--key", s(&keys.private("dave"))],
        65,
    );
    assert!(err.contains("no pending root"), "{err}");

    // The old timestamp key no longer counts; the remembered new one does.
    let err = fails(
        &[
            "release",
            s(&repo),
            s(&dir),
            "--channel",
            "prod",
            "--timestamp-key",
            s(&keys.private("timestamp")),
        ],
        65,
    );
    assert!(
        err.contains("not a timestamp key of root version 2"),
        "{err}"
    );
    let report = json(&["release", s(&repo), s(&dir), "--channel", "prod"]);
    assert_eq!(report["release"], 2);
    assert_eq!(load(&repo).root().version(), 2);
}

#[test]
fn a_completing_signature_is_kept_when_online_keys_are_missing() {
    let keys = Keys::new(&["alice", "targets", "snapshot", "timestamp", "timestamp2"]);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    ok(&[
        "repo",
        "init",
        s(&repo),
        "--root-key",
        s(&keys.private("alice")),
        "--targets-key",
        s(&keys.private("targets")),
        "--snapshot-key",
        s(&keys.private("snapshot")),
        "--timestamp-key",
        s(&keys.private("timestamp")),
        "--no-remember-keys",
    ]);
    // A new timestamp key given as a public key: publishing root 2 needs its private half.
    ok(&[
        "root",
        "rotate",
        s(&repo),
        "--timestamp-key",
        s(&keys.public("timestamp2")),
    ]);
    let published = metadata(&repo);
    let err = fails(
        &["root", "sign", s(&repo), "--key", s(&keys.private("alice"))],
        64,
    );
    assert!(err.contains("--timestamp-key"), "{err}");
    assert_eq!(metadata(&repo), published);
    let status = json(&["root", "status", s(&repo)]);
    assert_eq!(
        status["pending"]["complete"], true,
        "alice's signature was kept"
    );
    // With the key, the same (idempotent) signature publishes.
    let report = json(&[
        "root",
        "sign",
        s(&repo),
        "--key",
        s(&keys.private("alice")),
        "--timestamp-key",
        s(&keys.private("timestamp2")),
    ]);
    assert_eq!(report["published_now"], true);
    assert_eq!(load(&repo).root().version(), 2);
}
