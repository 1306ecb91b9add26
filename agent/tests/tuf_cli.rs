//! `mast-agent tuf`, the real binary, against repositories python-tuf wrote, served by nginx and python's
//! http.server: init, refresh and download with and without consistent snapshots, through a delegated
//! role and across a root rotation; the metadata directory afterwards; no second download of a target
//! already held; and every attack (bad signature, rolled-back or expired timestamp, a target's hash)
//! exits 1 without losing the trusted state.
//!
//! Repositories come from `tests/interop/pytuf_cli_repo.py` and `protocol/tests/interop/pytuf_repos.py`
//! (whose scenarios python-tuf's own client has already judged). Without python-tuf or nginx a bare
//! `cargo test` skips with a reason; under `MAST_TEST_REQUIRE_TOOLS=1` (scripts/test.sh) it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mast_protocol::digest::Sha256Digest;
use mast_test_support::{HttpServer, Nginx, PYTHON_TUF};
use serde_json::Value;
use tempfile::TempDir;

/// One client: its metadata directory and target directory.
struct Client {
    dir: TempDir,
}

impl Client {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn metadata_dir(&self) -> PathBuf {
        self.dir.path().join("metadata")
    }

    fn target_dir(&self) -> PathBuf {
        self.dir.path().join("targets")
    }

    /// Runs `mast-agent tuf --metadata-dir D ARGS…` with a config path that does not exist: the `tuf`
    /// command must not read the agent's configuration at all.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mast-agent"))
            .arg("tuf")
            .arg("--metadata-dir")
            .arg(self.metadata_dir())
            .args(args)
            .env("MAST_CONFIG", self.dir.path().join("no-such-agent.toml"))
            .env_remove("MAST_CLUSTER_ID")
            .output()
            .unwrap()
    }

    fn init(&self, root: &Path) -> Output {
        self.run(&["init", root.to_str().unwrap()])
    }

    fn refresh(&self, metadata_url: &str) -> Output {
        self.run(&["--metadata-url", metadata_url, "refresh"])
    }

    fn download(&self, metadata_url: &str, targets_url: &str, names: &[&str]) -> Output {
        let mut args = vec!["--metadata-url", metadata_url];
        for name in names {
            args.extend(["--target-name", name]);
        }
        let target_dir = self.target_dir();
        args.extend([
            "--target-base-url",
            targets_url,
            "--target-dir",
            target_dir.to_str().unwrap(),
            "download",
        ]);
        self.run(&args)
    }

    /// The files in the metadata directory, sorted.
    fn trusted_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.metadata_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// `signed.version` of a trusted file.
    fn version(&self, file: &str) -> u64 {
        let doc: Value =
            serde_json::from_slice(&fs::read(self.metadata_dir().join(file)).unwrap()).unwrap();
        doc["signed"]["version"].as_u64().unwrap()
    }

    /// sha256 of a downloaded target file (by its name in the target directory).
    fn target_sha256(&self, file: &str) -> String {
        Sha256Digest::of(&fs::read(self.target_dir().join(file)).unwrap()).to_hex()
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exit 1 (not a crash, not a usage error), with a message on stderr containing `why`.
fn refused(out: &Output, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.to_lowercase().contains(&why.to_lowercase()),
        "expected {why:?} in stderr: {stderr}"
    );
}

fn interop(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(script)
}

/// python-tuf and nginx, or `None` when the test is skipped (the reason was printed).
fn tools() -> Option<PathBuf> {
    let python = PYTHON_TUF.require()?;
    Nginx::available().then_some(python)
}

/// Writes a repository with `pytuf_cli_repo.py OUT ARGS…`; returns what it printed.
fn pytuf_repo(python: &Path, out: &Path, args: &[&str]) -> Value {
    let output = Command::new(python)
        .arg(interop("tests/interop/pytuf_cli_repo.py"))
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    ok(&output);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Writes python-tuf's scenarios (`pytuf_repos.py`) under `out`; returns scenarios.json by name.
fn pytuf_scenarios(python: &Path, out: &Path) -> Value {
    let output = Command::new(python)
        .arg(interop("../protocol/tests/interop/pytuf_repos.py"))
        .arg(out)
        .output()
        .unwrap();
    ok(&output);
    let list: Vec<Value> =
        serde_json::from_slice(&fs::read(out.join("scenarios.json")).unwrap()).unwrap();
    Value::Object(
        list.into_iter()
            .map(|s| (s["name"].as_str().unwrap().to_owned(), s))
            .collect(),
    )
}

/// Target GETs nginx logged, in order.
fn target_requests(nginx: &Nginx) -> Vec<String> {
    nginx
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("/targets/"))
        .map(|r| r.uri)
        .collect()
}

#[test]
fn downloads_from_a_consistent_snapshot_repository_once() {
    let Some(python) = tools() else { return };
    let repo = tempfile::tempdir().unwrap();
    let listed = pytuf_repo(
        &python,
        repo.path(),
        &["--target", "a.txt=1000", "--target", "dir/b.bin=300000"],
    );
    let nginx = Nginx::serve(repo.path());
    let (metadata, targets) = (nginx.url("metadata"), nginx.url("targets/"));
    let client = Client::new();

    ok(&client.init(Path::new(listed["root"].as_str().unwrap())));
    assert_eq!(client.trusted_files(), ["root.json"]);
    assert!(
        nginx.requests().is_empty(),
        "init must not touch the network"
    );
    ok(&client.refresh(&metadata));
    assert_eq!(
        client.trusted_files(),
        [
            "root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );

    ok(&client.download(&metadata, &targets, &["a.txt", "dir/b.bin"]));
    for (name, file) in [("a.txt", "a.txt"), ("dir/b.bin", "dir%2Fb.bin")] {
        assert_eq!(
            client.target_sha256(file),
            listed["targets"][name]["sha256"].as_str().unwrap(),
            "{name}"
        );
    }
    let b = listed["targets"]["dir/b.bin"]["sha256"].as_str().unwrap();
    let fetched = target_requests(&nginx);
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    assert!(
        fetched.contains(&format!("/targets/dir/{b}.b.bin")),
        "{fetched:?}"
    );
    // Only the two targets: no staging file left behind.
    let mut held: Vec<_> = fs::read_dir(client.target_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    held.sort();
    assert_eq!(held, ["a.txt", "dir%2Fb.bin"]);

    // Again: metadata is refreshed, the targets already held are not fetched again.
    let again = client.download(&metadata, &targets, &["a.txt", "dir/b.bin"]);
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));
    nginx.wait_for_requests(1);
    assert_eq!(
        target_requests(&nginx),
        fetched,
        "a held target was fetched again"
    );

    // A damaged copy is replaced.
    fs::write(client.target_dir().join("a.txt"), b"damaged").unwrap();
    ok(&client.download(&metadata, &targets, &["a.txt"]));
    assert_eq!(
        client.target_sha256("a.txt"),
        listed["targets"]["a.txt"]["sha256"].as_str().unwrap()
    );
}

#[test]
fn a_target_served_longer_or_changed_exits_1_and_leaves_nothing() {
    let Some(python) = tools() else { return };
    let repo = tempfile::tempdir().unwrap();
    // Large enough to arrive in many pieces, each hashed on its own thread.
    let listed = pytuf_repo(&python, repo.path(), &["--target", "b.bin=3000000"]);
    let sha256 = listed["targets"]["b.bin"]["sha256"].as_str().unwrap();
    let served = repo.path().join(format!("targets/{sha256}.b.bin"));
    let good = fs::read(&served).unwrap();
    let nginx = Nginx::serve(repo.path());
    let (metadata, targets) = (nginx.url("metadata"), nginx.url("targets/"));
    let client = Client::new();
    ok(&client.init(Path::new(listed["root"].as_str().unwrap())));

    let mut longer = good.clone();
    longer.extend_from_slice(b"tail");
    let mut changed = good.clone();
    changed[good.len() / 2] ^= 1;
    for (bytes, why) in [
        (longer, "longer than the signed 3000000 bytes"),
        (changed, "got 3000000 bytes with sha256 "),
    ] {
        fs::write(&served, bytes).unwrap();
        refused(&client.download(&metadata, &targets, &["b.bin"]), why);
        assert!(
            fs::read_dir(client.target_dir()).unwrap().next().is_none(),
            "{why}: bytes left in the target directory"
        );
    }
    fs::write(&served, &good).unwrap();
    ok(&client.download(&metadata, &targets, &["b.bin"]));
    assert_eq!(client.target_sha256("b.bin"), sha256);
}

#[test]
fn downloads_plain_names_without_consistent_snapshots_from_http_server() {
    let Some(python) = PYTHON_TUF.require() else {
        return;
    };
    let repo = tempfile::tempdir().unwrap();
    let listed = pytuf_repo(
        &python,
        repo.path(),
        &["--plain", "--target", "dir/a.txt=5000"],
    );
    assert_eq!(listed["consistent_snapshot"], false);
    let server = HttpServer::python(repo.path());
    let client = Client::new();
    ok(&client.init(Path::new(listed["root"].as_str().unwrap())));
    ok(&client.download(
        &server.url("metadata/"),
        &server.url("targets"),
        &["dir/a.txt"],
    ));
    assert_eq!(
        client.target_sha256("dir%2Fa.txt"),
        listed["targets"]["dir/a.txt"]["sha256"].as_str().unwrap()
    );
    assert_eq!(
        client.trusted_files(),
        [
            "root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );
    let log = fs::read_to_string(server.log()).unwrap();
    for path in [
        "/metadata/snapshot.json",
        "/metadata/targets.json",
        "/targets/dir/a.txt",
    ] {
        assert!(log.contains(&format!("GET {path} ")), "{path} not in {log}");
    }
}

#[test]
fn finds_a_target_through_a_delegated_role_and_keeps_the_role() {
    let Some(python) = tools() else { return };
    let repo = tempfile::tempdir().unwrap();
    let listed = pytuf_repo(
        &python,
        repo.path(),
        &[
            "--delegate",
            "apps=apps/*",
            "--target",
            "apps/web.yaml=700@apps",
            "--target",
            "top.txt=10",
        ],
    );
    let nginx = Nginx::serve(repo.path());
    let (metadata, targets) = (nginx.url("metadata"), nginx.url("targets"));
    let client = Client::new();
    ok(&client.init(Path::new(listed["root"].as_str().unwrap())));
    ok(&client.download(&metadata, &targets, &["apps/web.yaml"]));
    assert_eq!(
        client.target_sha256("apps%2Fweb.yaml"),
        listed["targets"]["apps/web.yaml"]["sha256"]
            .as_str()
            .unwrap()
    );
    assert_eq!(
        client.trusted_files(),
        [
            "apps.json",
            "root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );
    // The delegated role is trusted from the directory next time: not fetched again.
    ok(&client.download(&metadata, &targets, &["apps/web.yaml"]));
    let apps = nginx
        .wait_for_requests(1)
        .iter()
        .filter(|r| r.uri.ends_with(".apps.json"))
        .count();
    assert_eq!(apps, 1);
    // A name under apps/ that the role does not list, and one no role may list.
    refused(
        &client.download(&metadata, &targets, &["apps/none.yaml"]),
        "apps/none.yaml",
    );
    refused(
        &client.download(&metadata, &targets, &["other/x"]),
        "other/x",
    );
}

#[test]
fn follows_a_root_rotation_and_downloads_the_new_release() {
    let Some(python) = tools() else { return };
    let out = tempfile::tempdir().unwrap();
    let scenarios = pytuf_scenarios(&python, out.path());
    let nginx = Nginx::serve(out.path());
    let scenario = &scenarios["root_rotation"];
    let client = Client::new();
    ok(&client.init(&out.path().join(scenario["initial_root"].as_str().unwrap())));
    for (i, phase) in scenario["phases"].as_array().unwrap().iter().enumerate() {
        let dir = phase["dir"].as_str().unwrap();
        ok(&client.download(
            &nginx.url(&format!("{dir}/metadata")),
            &nginx.url(&format!("{dir}/targets")),
            &["bundle.tar.gz"],
        ));
        assert_eq!(
            client.target_sha256("bundle.tar.gz"),
            phase["expect_target_sha256"].as_str().unwrap(),
            "phase {i}"
        );
    }
    assert_eq!(client.version("root.json"), 3);
    assert_eq!(
        client.trusted_files(),
        [
            "root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );
}

#[test]
fn recovers_from_a_fast_forward_and_drops_a_tampered_trusted_file() {
    let Some(python) = tools() else { return };
    let out = tempfile::tempdir().unwrap();
    let scenarios = pytuf_scenarios(&python, out.path());
    let nginx = Nginx::serve(out.path());
    // Phase 1 trusts timestamp v100; phase 2's root rotates the timestamp key, so the trusted timestamp
    // is discarded (TUF 5.3.11) and v1 is accepted.
    let scenario = &scenarios["fast_forward_recovery"];
    let client = Client::new();
    ok(&client.init(&out.path().join(scenario["initial_root"].as_str().unwrap())));
    let mut metadata = String::new();
    for phase in scenario["phases"].as_array().unwrap() {
        let dir = phase["dir"].as_str().unwrap();
        metadata = nginx.url(&format!("{dir}/metadata"));
        ok(&client.download(
            &metadata,
            &nginx.url(&format!("{dir}/targets")),
            &["bundle.tar.gz"],
        ));
        assert_eq!(
            client.target_sha256("bundle.tar.gz"),
            phase["expect_target_sha256"].as_str().unwrap()
        );
    }
    assert_eq!(client.version("root.json"), 2);
    assert_eq!(client.version("timestamp.json"), 1);

    // A trusted file changed on disk no longer verifies: it is dropped and fetched again.
    let path = client.metadata_dir().join("snapshot.json");
    let good = fs::read(&path).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    fs::write(&path, text.replacen("\"version\": ", "\"version\": 9", 1)).unwrap();
    ok(&client.refresh(&metadata));
    assert_eq!(fs::read(&path).unwrap(), good);
}

#[test]
fn attacks_exit_1_and_keep_the_trusted_state() {
    let Some(python) = tools() else { return };
    let out = tempfile::tempdir().unwrap();
    let scenarios = pytuf_scenarios(&python, out.path());
    let nginx = Nginx::serve(out.path());
    let urls = |phase: &Value| {
        let dir = phase["dir"].as_str().unwrap();
        (
            nginx.url(&format!("{dir}/metadata")),
            nginx.url(&format!("{dir}/targets")),
        )
    };
    for (name, why) in [
        ("threshold_timestamp", "signature"),
        ("rollback_timestamp", "rollback"),
        ("freeze_timestamp", "expired"),
        ("hash_target", "sha256"),
    ] {
        let scenario = &scenarios[name];
        let phases = scenario["phases"].as_array().unwrap();
        let client = Client::new();
        ok(&client.init(&out.path().join(scenario["initial_root"].as_str().unwrap())));
        let (attack, good) = phases.split_last().unwrap();
        for phase in good {
            let (metadata, targets) = urls(phase);
            ok(&client.download(&metadata, &targets, &["bundle.tar.gz"]));
        }
        let files = client.trusted_files();
        let timestamp = fs::read(client.metadata_dir().join("timestamp.json")).ok();
        let (metadata, targets) = urls(attack);
        refused(
            &client.download(&metadata, &targets, &["bundle.tar.gz"]),
            why,
        );
        if good.is_empty() {
            // The hash attack: the metadata is good and trusted; the bad bytes never land.
            assert_eq!(
                client.trusted_files(),
                [
                    "root.json",
                    "snapshot.json",
                    "targets.json",
                    "timestamp.json"
                ]
            );
            assert!(
                fs::read_dir(client.target_dir()).unwrap().next().is_none(),
                "{name}: bytes left in the target directory"
            );
        } else {
            assert_eq!(client.trusted_files(), files, "{name}");
            assert_eq!(
                fs::read(client.metadata_dir().join("timestamp.json")).ok(),
                timestamp,
                "{name}: the trusted timestamp changed"
            );
        }
        // A refresh alone refuses it too.
        if !good.is_empty() {
            refused(&client.refresh(&metadata), why);
        }
    }
}

#[test]
fn init_refuses_a_root_its_own_keys_did_not_sign_and_refresh_needs_init() {
    let Some(python) = PYTHON_TUF.require() else {
        return;
    };
    let repo = tempfile::tempdir().unwrap();
    let listed = pytuf_repo(&python, repo.path(), &["--target", "a=1"]);
    let root = fs::read_to_string(listed["root"].as_str().unwrap()).unwrap();
    let forged = repo.path().join("forged-root.json");
    fs::write(
        &forged,
        root.replacen("\"version\": 1", "\"version\": 7", 1),
    )
    .unwrap();
    let client = Client::new();
    refused(&client.init(&forged), "valid signature");
    refused(
        &client.init(&repo.path().join("missing.json")),
        "missing.json",
    );
    refused(
        &client.refresh("http://127.0.0.1:9/metadata"),
        "no trusted root.json",
    );
    assert!(!client.metadata_dir().join("root.json").exists());
}
