//! The python-tuf scripts of `protocol/tests/interop` work, and agree with each other over real HTTP.
//!
//! `pytuf_repos.py` writes the TUF scenarios and checks them with python-tuf through a directory fetcher;
//! here every phase of every scenario is fetched again by python-tuf's own HTTP client
//! (`ngclient_download.py`) from nginx, and a good one from python's http.server, and must get the same
//! verdict. The table below pins the scenario list and each phase's expected outcome: it is the contract
//! mast's own TUF client is tested against, so a change to it must be deliberate.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mast_test_support::{HttpServer, Nginx, NginxConfig, PYTHON_TUF, workspace_root};
use serde_json::Value;

/// Every scenario, with the expected outcome of each of its phases, in order.
const EXPECTED: &[(&str, &[&str])] = &[
    ("basic", &["ok"]),
    (
        "delegation",
        &["ok", "target_not_found", "target_not_found"],
    ),
    ("root_rotation", &["ok", "ok"]),
    ("fast_forward_recovery", &["ok", "ok"]),
    ("rollback_timestamp", &["ok", "rollback"]),
    ("rollback_snapshot", &["ok", "rollback"]),
    ("rollback_targets", &["ok", "rollback"]),
    ("freeze_timestamp", &["ok", "expired"]),
    ("freeze_snapshot", &["ok", "expired"]),
    ("freeze_targets", &["ok", "expired"]),
    ("freeze_root", &["ok", "expired"]),
    ("threshold_timestamp", &["ok", "threshold"]),
    ("threshold_duplicate_sigs", &["ok", "threshold"]),
    ("threshold_root_chain", &["ok", "threshold"]),
    ("root_chain_version", &["ok", "root_chain"]),
    ("length_target", &["length"]),
    ("hash_target", &["hash"]),
    ("length_snapshot", &["ok", "length"]),
    ("hash_snapshot", &["ok", "hash"]),
    ("spec_version", &["ok", "spec_version"]),
];

/// Where python-tuf's verdict is defined but differs from mast's expected kind (see PYTUF_DIFFERS in
/// pytuf_repos.py): it refuses a duplicate signature keyid while parsing.
const PYTUF_DIFFERS: &[(&str, usize, &str)] =
    &[("threshold_duplicate_sigs", 2, "error:DeserializationError")];

fn interop_script(name: &str) -> PathBuf {
    workspace_root().join("protocol/tests/interop").join(name)
}

fn show(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs pytuf_repos.py into a new temporary directory; returns it and the parsed scenarios.json.
fn write_scenarios(python: &Path) -> (tempfile::TempDir, Value) {
    let out = tempfile::tempdir().expect("temp dir for the scenarios");
    let output = Command::new(python)
        .arg(interop_script("pytuf_repos.py"))
        .arg(out.path())
        .output()
        .expect("run pytuf_repos.py");
    assert!(
        output.status.success(),
        "pytuf_repos.py failed: {}",
        show(&output)
    );
    let index = fs::read(out.path().join("scenarios.json")).expect("scenarios.json written");
    (
        out,
        serde_json::from_slice(&index).expect("scenarios.json is JSON"),
    )
}

/// One client's run of ngclient_download.py against a phase served at `base_url`.
fn download(python: &Path, base_url: &str, phase_dir: &str, root: &Path, state: &Path) -> Value {
    let target = state.join("downloads");
    let output = Command::new(python)
        .arg(interop_script("ngclient_download.py"))
        .args([
            "--metadata-url",
            &format!("{base_url}/{phase_dir}/metadata/"),
        ])
        .args(["--targets-url", &format!("{base_url}/{phase_dir}/targets/")])
        .arg("--root")
        .arg(root)
        .arg("--metadata-dir")
        .arg(state.join("metadata"))
        .args(["--target", "bundle.tar.gz"])
        .arg("--out")
        .arg(&target)
        .output()
        .expect("run ngclient_download.py");
    let line = String::from_utf8_lossy(&output.stdout);
    let result: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|error| panic!("not one JSON line ({error}): {}", show(&output)));
    assert_eq!(
        output.status.success(),
        result.get("sha256").is_some(),
        "exit status and output disagree: {}",
        show(&output)
    );
    result
}

#[test]
fn scenarios_match_the_contract_and_python_tuf_agrees_over_nginx() {
    let Some(python) = PYTHON_TUF.require() else {
        return;
    };
    if !Nginx::available() {
        return;
    }
    let (out, index) = write_scenarios(&python);
    let scenarios = index.as_array().expect("scenarios.json is an array");

    let listed: BTreeMap<&str, Vec<&str>> = scenarios
        .iter()
        .map(|scenario| {
            let phases = scenario["phases"].as_array().expect("phases");
            let expects = phases
                .iter()
                .map(|phase| phase["expect"].as_str().unwrap())
                .collect();
            (scenario["name"].as_str().unwrap(), expects)
        })
        .collect();
    let expected: BTreeMap<&str, Vec<&str>> = EXPECTED
        .iter()
        .map(|(name, expects)| (*name, expects.to_vec()))
        .collect();
    assert_eq!(listed, expected);

    let nginx = NginxConfig::new(out.path()).read_only().start();
    for scenario in scenarios {
        let name = scenario["name"].as_str().unwrap();
        let root = out.path().join(scenario["initial_root"].as_str().unwrap());
        assert!(root.is_file(), "{name}: no initial root {}", root.display());
        assert!(
            scenario["now"].as_str().unwrap().ends_with('Z'),
            "{name}: now is not UTC"
        );
        let client = tempfile::tempdir().unwrap();
        for (number, phase) in scenario["phases"].as_array().unwrap().iter().enumerate() {
            let number = number + 1;
            let expect = phase["expect"].as_str().unwrap();
            let pytuf = phase["pytuf"].as_str().unwrap();
            let differs = PYTUF_DIFFERS
                .iter()
                .find(|(n, p, _)| *n == name && *p == number);
            assert_eq!(
                pytuf,
                differs.map_or(expect, |(_, _, verdict)| *verdict),
                "{name} {number}"
            );

            let phase_dir = phase["dir"].as_str().unwrap();
            if phase["target"].as_str() != Some("bundle.tar.gz") {
                continue; // delegation's other lookups: checked by pytuf_repos.py itself
            }
            let result = download(&python, &nginx.base_url(), phase_dir, &root, client.path());
            if expect == "ok" {
                assert_eq!(
                    result["sha256"], phase["expect_target_sha256"],
                    "{name} {number}"
                );
            } else {
                assert_eq!(
                    result["error"].as_str(),
                    Some(pytuf),
                    "{name} {number}: {result}"
                );
            }
        }
    }

    // The HTTP client asked nginx for root N+1 and got a 404: that is how it learns N is the newest.
    let requests = nginx.requests();
    let asked = |uri: &str, status: u16| {
        requests
            .iter()
            .any(|request| request.uri == uri && request.status == status)
    };
    assert!(asked("/basic/1/metadata/2.root.json", 404));
    assert!(asked("/basic/1/metadata/timestamp.json", 200));
    assert!(asked("/root_rotation/2/metadata/3.root.json", 200));
    assert!(asked("/root_rotation/2/metadata/4.root.json", 404));
}

#[test]
fn python_http_server_serves_a_scenario_to_ngclient() {
    let Some(python) = PYTHON_TUF.require() else {
        return;
    };
    if !HttpServer::available() {
        return;
    }
    let (out, index) = write_scenarios(&python);
    let rotation = index
        .as_array()
        .unwrap()
        .iter()
        .find(|scenario| scenario["name"] == "root_rotation")
        .expect("a root_rotation scenario");
    let root = out.path().join(rotation["initial_root"].as_str().unwrap());
    let server = HttpServer::python(out.path());
    let client = tempfile::tempdir().unwrap();
    for phase in rotation["phases"].as_array().unwrap() {
        let dir = phase["dir"].as_str().unwrap();
        let result = download(&python, &server.base_url(), dir, &root, client.path());
        assert_eq!(
            result["sha256"], phase["expect_target_sha256"],
            "{dir}: {result}"
        );
        let path = PathBuf::from(result["path"].as_str().unwrap());
        assert_eq!(
            fs::metadata(path).unwrap().len(),
            result["length"].as_u64().unwrap()
        );
    }
    // The client kept its state: after phase 2 it trusts root v3.
    let trusted = fs::read(client.path().join("metadata/root.json")).unwrap();
    let trusted: Value = serde_json::from_slice(&trusted).unwrap();
    assert_eq!(trusted["signed"]["version"], 3);
}
