//! `mast repo init`, `release`, `timestamp refresh` and `inspect` through the real binary, checked against
//! the protocol crate's own loader (a repository the builders cannot load back is broken) and the mirror
//! layout of docs/bundles.md.

// Helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use std::collections::BTreeMap;
use std::path::Path;

use cli_support::{Keys, fails, init_repo, json, manifests, mast, ok, s, snapshot_tree, write};
use mast_protocol::bundle::{ChunkIndex, IndexLimits, Reassembler, gunzip_bounded};
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::{AgentVersion, Channel, select_release};
use mast_protocol::tuf::Repository;

fn keys() -> Keys {
    Keys::new(&["root", "targets", "snapshot", "timestamp", "stranger"])
}

/// Loads the repository's published metadata (everything outside `.mast/`) with the protocol's
/// verifying loader.
fn load(repo: &Path) -> Repository {
    let files: BTreeMap<String, Vec<u8>> = snapshot_tree(repo)
        .into_iter()
        .filter(|(name, _)| name.starts_with("metadata/"))
        .collect();
    Repository::load(files).unwrap()
}

#[test]
fn a_release_is_published_in_both_forms_under_the_mirror_layout() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&keys, &repo, &[]);
    let dir = work.path().join("m");
    manifests(&dir);
    let bundle = work.path().join("b.tar");
    let packed = json(&["pack", s(&dir), "--out", s(&bundle)]);

    let report = json(&[
        "release",
        s(&repo),
        s(&bundle),
        "--channel",
        "prod",
        "--waves",
        "10%@+0h,100%@+1d",
        "--min-agent-version",
        "1.2.0",
    ]);
    assert_eq!(report["release"], 1);
    assert_eq!(report["tar_sha256"], packed["sha256"]);
    // The written files' order is the crash-safety contract: timestamp.json last.
    let written: Vec<&str> = report["written"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(written.last(), Some(&"metadata/timestamp.json"));
    let first_metadata = written
        .iter()
        .position(|f| f.starts_with("metadata/"))
        .unwrap();
    assert!(
        written[..first_metadata]
            .iter()
            .all(|f| f.starts_with("chunks/") || f.starts_with("targets/"))
    );

    // What a site does: select the release from verified targets, fetch the index and chunks by the
    // layout, reassemble, and compare with the bundle and the tar.gz.
    let loaded = load(&repo);
    let targets = &loaded.targets().signed.targets;
    let chosen = select_release(
        targets.iter().map(|(n, t)| (n.as_str(), t)),
        &"prod".parse::<Channel>().unwrap(),
        None,
        &AgentVersion::new(1, 2, 0),
    )
    .unwrap()
    .unwrap();
    assert_eq!(chosen.release.waves.as_slice().len(), 2);
    let sha = |t: &mast_protocol::tuf::TargetFile| t.hashes["sha256"].clone();
    let index_path = repo.join(format!(
        "targets/channels/prod/1/{}.index.json",
        sha(&chosen.index.file)
    ));
    let index_bytes = std::fs::read(&index_path).unwrap();
    assert_eq!(
        Sha256Digest::of(&index_bytes).to_hex(),
        sha(&chosen.index.file)
    );
    let index = ChunkIndex::from_slice(&index_bytes, &IndexLimits::default()).unwrap();
    let mut reassembler = Reassembler::new(&index);
    let mut tar = Vec::new();
    for chunk in index.chunks() {
        let blob = std::fs::read(repo.join(format!("chunks/{}", chunk.sha256().to_hex()))).unwrap();
        tar.extend(reassembler.feed(&blob).unwrap());
    }
    reassembler.finish().unwrap();
    assert_eq!(tar, std::fs::read(&bundle).unwrap());
    let gz = std::fs::read(repo.join(format!(
        "targets/channels/prod/1/{}.bundle.tar.gz",
        sha(&chosen.bundle.file)
    )))
    .unwrap();
    assert_eq!(gunzip_bounded(&gz, 1 << 30).unwrap(), tar);

    // A directory given as BUNDLE is packed on the fly to the same content; the next number is 2.
    let report = json(&["release", s(&repo), s(&dir), "--channel", "prod"]);
    assert_eq!(report["release"], 2);
    assert_eq!(report["tar_sha256"], packed["sha256"]);
    assert_eq!(
        report["new_chunks"], 0,
        "the same content needs no new chunk"
    );
    let inspect = json(&["inspect", s(&repo)]);
    assert_eq!(inspect["type"], "repository");
    let releases = inspect["channels"][0]["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 2);
    assert_eq!(releases[0]["min_agent_version"], "1.2.0");
    assert!(inspect["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn a_release_not_above_the_channel_is_refused_and_writes_nothing() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&keys, &repo, &[]);
    let dir = work.path().join("m");
    manifests(&dir);
    ok(&[
        "release",
        s(&repo),
        s(&dir),
        "--channel",
        "prod",
        "--release",
        "5",
    ]);
    let before = snapshot_tree(&repo);
    for lower in ["5", "4", "1"] {
        let err = fails(
            &[
                "release",
                s(&repo),
                s(&dir),
                "--channel",
                "prod",
                "--release",
                lower,
            ],
            65,
        );
        assert!(err.contains(&format!("--release {lower}")), "{err}");
        assert!(err.contains("channel prod already has release 5"), "{err}");
    }
    let err = fails(
        &[
            "release",
            s(&repo),
            s(&dir),
            "--channel",
            "prod",
            "--release",
            "0",
        ],
        64,
    );
    assert!(err.contains("--release"), "{err}");
    assert_eq!(
        snapshot_tree(&repo),
        before,
        "refused releases changed the repository"
    );
    // Channels are independent, and 6 is above 5.
    ok(&[
        "release",
        s(&repo),
        s(&dir),
        "--channel",
        "canary",
        "--release",
        "1",
    ]);
    ok(&[
        "release",
        s(&repo),
        s(&dir),
        "--channel",
        "prod",
        "--release",
        "6",
    ]);
}

#[test]
fn bad_flags_and_bad_bundles_are_refused_naming_them_and_write_nothing() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&keys, &repo, &[]);
    let dir = work.path().join("m");
    manifests(&dir);
    let before = snapshot_tree(&repo);
    let release = |extra: &[&str], code: i32| {
        let mut args = vec!["release", s(&repo), s(&dir)];
        args.extend_from_slice(extra);
        fails(&args, code)
    };
    assert!(release(&["--channel", "Prod!"], 64).contains("--channel"));
    assert!(release(&["--channel", "prod", "--waves", "50%@soon"], 64).contains("--waves"));
    assert!(
        release(&["--channel", "prod", "--min-agent-version", "1.0"], 64)
            .contains("--min-agent-version")
    );
    write(&dir, "bad.yaml", "kind: Nothing\n");
    let err = release(&["--channel", "prod"], 65);
    assert!(
        err.contains("bad.yaml") && err.contains("apiVersion"),
        "{err}"
    );
    std::fs::remove_file(dir.join("bad.yaml")).unwrap();
    let not_tar = work.path().join("junk.tar");
    std::fs::write(&not_tar, vec![7u8; 1024]).unwrap();
    let err = fails(&["release", s(&repo), s(&not_tar), "--channel", "prod"], 65);
    assert!(err.contains("junk.tar"), "{err}");
    let err = fails(
        &[
            "release",
            s(&repo),
            s(&work.path().join("nope.tar")),
            "--channel",
            "prod",
        ],
        66,
    );
    assert!(err.contains("nope.tar"), "{err}");
    assert_eq!(snapshot_tree(&repo), before);
}

#[test]
fn missing_or_wrong_online_keys_are_refused_naming_the_flag() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&keys, &repo, &["--no-remember-keys"]);
    let dir = work.path().join("m");
    manifests(&dir);
    let before = snapshot_tree(&repo);
    let (t, sn, ts) = (
        keys.private("targets"),
        keys.private("snapshot"),
        keys.private("timestamp"),
    );
    let base = ["release", s(&repo), s(&dir), "--channel", "prod"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|a| (*a).to_owned()).collect()
    };
    let err = fails(
        &with(&["--targets-key", s(&t), "--snapshot-key", s(&sn)]),
        64,
    );
    assert!(
        err.contains("--timestamp-key") && err.contains("MAST_TIMESTAMP_KEY"),
        "{err}"
    );
    let err = fails(
        &with(&["--snapshot-key", s(&sn), "--timestamp-key", s(&ts)]),
        64,
    );
    assert!(err.contains("--targets-key"), "{err}");
    // A key of the wrong role, a key file that does not exist, a file that is not a key.
    let stranger = keys.private("stranger");
    let err = fails(
        &with(&[
            "--targets-key",
            s(&stranger),
            "--snapshot-key",
            s(&sn),
            "--timestamp-key",
            s(&ts),
        ]),
        65,
    );
    assert!(
        err.contains("--targets-key")
            && err.contains("stranger.pem")
            && err.contains("not a targets key"),
        "{err}"
    );
    let gone = work.path().join("gone.pem");
    let err = fails(
        &with(&[
            "--targets-key",
            s(&gone),
            "--snapshot-key",
            s(&sn),
            "--timestamp-key",
            s(&ts),
        ]),
        66,
    );
    assert!(err.contains("gone.pem"), "{err}");
    let err = fails(
        &with(&[
            "--targets-key",
            s(&keys.public("targets")),
            "--snapshot-key",
            s(&sn),
            "--timestamp-key",
            s(&ts),
        ]),
        65,
    );
    assert!(err.contains("targets.pem.pub"), "{err}");
    assert_eq!(snapshot_tree(&repo), before);

    // The environment supplies keys as well as flags do.
    let out = mast()
        .args(base)
        .env("MAST_TARGETS_KEY", &t)
        .env("MAST_SNAPSHOT_KEY", &sn)
        .env("MAST_TIMESTAMP_KEY", &ts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A repository in the packager's layout whose root expires at `now + root_expires_in` and whose other
/// roles were signed `signed_ago`, built with the protocol crate's builders from key files `mast keygen`
/// wrote: how a test gets an old or expired repository without waiting (the packager itself refuses to
/// make one).
fn aged_repo(
    keys: &Keys,
    repo: &Path,
    root_expires_in: time::Duration,
    signed_ago: time::Duration,
) {
    use mast_protocol::crypto::SigningKey;
    use mast_protocol::tuf::Expiry;
    use mast_protocol::tuf::builder::{Expiries, RoleSigners, RoleSpec, RootSpec, new_root};
    let key = |name: &str| {
        SigningKey::from_pkcs8_pem(&std::fs::read_to_string(keys.private(name)).unwrap()).unwrap()
    };
    let (root, targets, snapshot, timestamp) = (
        key("root"),
        key("targets"),
        key("snapshot"),
        key("timestamp"),
    );
    let one = |k: &SigningKey| RoleSpec {
        keys: vec![k.public()],
        threshold: 1,
    };
    let spec = RootSpec {
        root: one(&root),
        targets: one(&targets),
        snapshot: one(&snapshot),
        timestamp: one(&timestamp),
    };
    let now = time::OffsetDateTime::now_utc();
    let mut signed_root = new_root(&spec, 1, Expiry::new(now + root_expires_in)).unwrap();
    signed_root.sign(&root);
    let then = now - signed_ago;
    let mut built = Repository::create(signed_root, then, Expiries::default()).unwrap();
    let signers = RoleSigners {
        targets: vec![&targets],
        snapshot: vec![&snapshot],
        timestamp: vec![&timestamp],
        ..Default::default()
    };
    built.commit(&signers, then).unwrap();
    for (name, bytes) in built.files().unwrap() {
        write(repo, &name, std::str::from_utf8(&bytes).unwrap());
    }
}

#[test]
fn a_repository_whose_root_expired_refuses_releases_and_refreshes() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    aged_repo(&keys, &repo, -time::Duration::days(1), time::Duration::ZERO);
    let dir = work.path().join("m");
    manifests(&dir);
    let (t, sn, ts) = (
        keys.private("targets"),
        keys.private("snapshot"),
        keys.private("timestamp"),
    );
    let online = [
        "--targets-key",
        s(&t),
        "--snapshot-key",
        s(&sn),
        "--timestamp-key",
        s(&ts),
    ];
    let before = snapshot_tree(&repo);
    let mut args = vec!["release", s(&repo), s(&dir), "--channel", "prod"];
    args.extend_from_slice(&online);
    let err = fails(&args, 65);
    assert!(
        err.contains("metadata/1.root.json") && err.contains("expired"),
        "{err}"
    );
    let err = fails(
        &[
            "timestamp",
            "refresh",
            s(&repo),
            "--force",
            "--timestamp-key",
            s(&ts),
        ],
        65,
    );
    assert!(
        err.contains("1.root.json") && err.contains("expired"),
        "{err}"
    );
    assert_eq!(snapshot_tree(&repo), before, "refused commands wrote");
    let report = json(&["inspect", s(&repo)]);
    assert_eq!(report["roles"][0]["state"], "expired");
    assert!(ok(&["inspect", s(&repo)]).contains("WARN"));

    // The way out: a new root, signed by the old root key (N) and the new one (N+1), then a release.
    let root = keys.private("root");
    ok(&["root", "rotate", s(&repo), "--expires", "root=30d"]);
    let report = json(&["root", "sign", s(&repo), "--key", s(&root)]);
    assert_eq!(report["published_now"], true);
    ok(&args);
}

#[test]
fn expiries_in_the_past_or_malformed_are_usage_errors() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    for bad in ["root=-1d", "root=0d", "root=yesterday", "mirror=1d", "root"] {
        let repo = work.path().join("repo");
        let root = keys.private("root");
        let t = keys.private("targets");
        let err = fails(
            &[
                "repo",
                "init",
                s(&repo),
                "--root-key",
                s(&root),
                "--targets-key",
                s(&t),
                "--snapshot-key",
                s(&t),
                "--timestamp-key",
                s(&t),
                "--expires",
                bad,
            ],
            64,
        );
        assert!(err.contains("--expires"), "{bad}: {err}");
        assert!(
            !repo.exists(),
            "{bad}: a refused init created the directory"
        );
    }
}

#[test]
fn timestamp_refresh_is_idempotent_and_forced_on_demand() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&keys, &repo, &[]);
    let before = snapshot_tree(&repo);
    for _ in 0..2 {
        let report = json(&["timestamp", "refresh", s(&repo)]);
        assert_eq!(report["signed"].as_array().unwrap().len(), 0);
        assert_eq!(report["timestamp"]["version"], 1);
    }
    assert_eq!(
        snapshot_tree(&repo),
        before,
        "a refresh with nothing due wrote"
    );

    let report = json(&["timestamp", "refresh", s(&repo), "--force"]);
    assert_eq!(report["signed"], serde_json::json!(["timestamp"]));
    assert_eq!(report["timestamp"]["version"], 2);
    assert_eq!(load(&repo).timestamp().version(), 2);

    // A window as long as the lifetime would re-sign on every run: refused.
    let err = fails(&["timestamp", "refresh", s(&repo), "--window", "7d"], 64);
    assert!(err.contains("window"), "{err}");
}

#[test]
fn timestamp_refresh_re_signs_what_nears_expiry_once() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let ts = keys.private("timestamp");
    let sn = keys.private("snapshot");
    // Signed 5 days ago: the timestamp (7d) expires in 2 days, inside the default window of 3.5 days;
    // the snapshot (14d) in 9, outside it.
    aged_repo(
        &keys,
        &repo,
        time::Duration::days(300),
        time::Duration::days(5),
    );
    let refresh = ["timestamp", "refresh", s(&repo), "--timestamp-key", s(&ts)];
    let report = json(&refresh);
    assert_eq!(report["signed"], serde_json::json!(["timestamp"]));
    assert_eq!(load(&repo).timestamp().version(), 2);
    let after = snapshot_tree(&repo);
    let report = json(&refresh);
    assert!(report["signed"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(snapshot_tree(&repo), after, "a second refresh wrote");

    // Signed 12 days ago: timestamp expired, snapshot due in 2 days: both are re-signed, snapshot first.
    let repo2 = work.path().join("repo2");
    aged_repo(
        &keys,
        &repo2,
        time::Duration::days(300),
        time::Duration::days(12),
    );
    let report = json(&[
        "timestamp",
        "refresh",
        s(&repo2),
        "--timestamp-key",
        s(&ts),
        "--snapshot-key",
        s(&sn),
    ]);
    assert_eq!(
        report["signed"],
        serde_json::json!(["snapshot", "timestamp"])
    );
    assert_eq!(
        report["written"]["files"],
        serde_json::json!(["metadata/2.snapshot.json", "metadata/timestamp.json"])
    );
    let loaded = load(&repo2);
    assert_eq!(
        (loaded.snapshot().version(), loaded.timestamp().version()),
        (2, 2)
    );
    // A targets role near expiry is warned about, not re-signed (its key is not an online key here).
    let repo3 = work.path().join("repo3");
    aged_repo(
        &keys,
        &repo3,
        time::Duration::days(300),
        time::Duration::days(88),
    );
    let report = json(&[
        "timestamp",
        "refresh",
        s(&repo3),
        "--timestamp-key",
        s(&ts),
        "--snapshot-key",
        s(&sn),
    ]);
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("targets"), "{warnings}");
}

#[test]
fn a_snapshot_due_without_a_snapshot_key_names_the_flag() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    aged_repo(
        &keys,
        &repo,
        time::Duration::days(300),
        time::Duration::days(12),
    );
    let before = snapshot_tree(&repo);
    let ts = keys.private("timestamp");
    let err = fails(
        &["timestamp", "refresh", s(&repo), "--timestamp-key", s(&ts)],
        64,
    );
    assert!(err.contains("--snapshot-key"), "{err}");
    assert_eq!(snapshot_tree(&repo), before);
}

#[test]
fn a_held_lock_makes_writers_fail_fast() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&keys, &repo, &[]);
    let dir = work.path().join("m");
    manifests(&dir);
    let lock = std::fs::File::options()
        .write(true)
        .open(repo.join(".mast/lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let before = snapshot_tree(&repo);
    let err = fails(&["release", s(&repo), s(&dir), "--channel", "prod"], 75);
    assert!(
        err.contains(".mast/lock") && err.contains("locked"),
        "{err}"
    );
    fails(&["timestamp", "refresh", s(&repo), "--force"], 75);
    assert_eq!(snapshot_tree(&repo), before);
    drop(lock);
    ok(&["release", s(&repo), s(&dir), "--channel", "prod"]);
}

#[test]
fn init_refuses_a_non_empty_directory_and_bad_thresholds() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    write(&repo, "something", "x");
    let (root, t) = (keys.private("root"), keys.private("targets"));
    let base = |dir: &Path, threshold: &str| {
        fails(
            &[
                "repo",
                "init",
                s(dir),
                "--root-key",
                s(&root),
                "--root-threshold",
                threshold,
                "--targets-key",
                s(&t),
                "--snapshot-key",
                s(&t),
                "--timestamp-key",
                s(&t),
            ],
            if dir == repo { 73 } else { 64 },
        )
    };
    assert!(base(&repo, "1").contains("not empty"));
    let fresh = work.path().join("fresh");
    let err = base(&fresh, "2");
    assert!(err.contains("threshold 2") && err.contains("root"), "{err}");
    assert!(!fresh.exists());
}

#[test]
fn keys_from_openssl_work_everywhere_a_key_is_read() {
    let work = tempfile::tempdir().unwrap();
    let genpkey = |name: &str| {
        let path = work.path().join(name);
        let status = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out", s(&path)])
            .status()
            .expect("openssl must be installed");
        assert!(status.success());
        path
    };
    let (root, targets, snapshot, timestamp) = (
        genpkey("root.pem"),
        genpkey("t.pem"),
        genpkey("s.pem"),
        genpkey("ts.pem"),
    );
    // A public key made by openssl, for an offline holder.
    let root2 = genpkey("root2.pem");
    let root2_pub = work.path().join("root2.pub.pem");
    let status = std::process::Command::new("openssl")
        .args(["pkey", "-in", s(&root2), "-pubout", "-out", s(&root2_pub)])
        .status()
        .unwrap();
    assert!(status.success());
    let repo = work.path().join("repo");
    let report = json(&[
        "repo",
        "init",
        s(&repo),
        "--root-key",
        s(&root),
        "--root-key",
        s(&root2_pub),
        "--root-threshold",
        "2",
        "--targets-key",
        s(&targets),
        "--snapshot-key",
        s(&snapshot),
        "--timestamp-key",
        s(&timestamp),
    ]);
    assert_eq!(report["published"], false);
    let report = json(&["root", "sign", s(&repo), "--key", s(&root2)]);
    assert_eq!(report["published_now"], true);
    let dir = work.path().join("m");
    manifests(&dir);
    ok(&["release", s(&repo), s(&dir), "--channel", "prod"]);

    // And openssl reads the keys `mast keygen` writes, deriving the same public key.
    let ours = work.path().join("ours.pem");
    ok(&["keygen", "--out", s(&ours)]);
    let derived = std::process::Command::new("openssl")
        .args(["pkey", "-in", s(&ours), "-pubout"])
        .output()
        .unwrap();
    assert!(
        derived.status.success(),
        "{}",
        String::from_utf8_lossy(&derived.stderr)
    );
    assert_eq!(
        derived.stdout,
        std::fs::read(work.path().join("ours.pem.pub")).unwrap()
    );
    // keygen never overwrites.
    let err = fails(&["keygen", "--out", s(&ours)], 73);
    assert!(err.contains("ours.pem"), "{err}");
}

#[test]
fn leftovers_of_an_interrupted_release_are_replaced_and_reported() {
    let keys = keys();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&keys, &repo, &[]);
    let dir = work.path().join("m");
    manifests(&dir);
    // A run killed after writing version 2 of targets and snapshot, before timestamp.json: the
    // repository still loads (the timestamp in force names version 1), and the next release, which
    // assigns version 2 again, replaces those files rather than trusting or refusing them.
    write(&repo, "metadata/2.targets.json", "{\"torn\":");
    write(&repo, "metadata/2.snapshot.json", "{}");
    assert_eq!(load(&repo).targets().version(), 1);
    let report = json(&["release", s(&repo), s(&dir), "--channel", "prod"]);
    let mut replaced: Vec<&str> = report["written"]["replaced_leftovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    replaced.sort();
    assert_eq!(
        replaced,
        ["metadata/2.snapshot.json", "metadata/2.targets.json"]
    );
    let loaded = load(&repo);
    assert_eq!(
        (loaded.targets().version(), loaded.snapshot().version()),
        (2, 2)
    );
    assert!(ok(&["release", s(&repo), s(&dir), "--channel", "prod"]).contains("prod #2"));
}
