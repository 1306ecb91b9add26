//! mast's TUF implementation against python-tuf, the reference implementation, both ways.
//!
//! 1. python-tuf writes repositories (`interop/pytuf_repos.py`): good ones, a root rotation, a fast-forward
//!    recovery, a delegation, and one per attack. mast's client must accept the good ones and refuse each
//!    attack with the typed error the scenario names. The script has already checked that python-tuf's own
//!    client agrees with every verdict.
//! 2. mast's builders write a repository, nginx serves it on 127.0.0.1, and python-tuf's `ngclient`
//!    refreshes and downloads a release target from it over HTTP.
//!
//! python-tuf comes from the test venv (`scripts/test.sh`); without it a bare `cargo test` skips these with
//! a reason, and under `MAST_TEST_REQUIRE_TOOLS=1` a missing python-tuf fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use mast_protocol::crypto::SigningKey;
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::{Release, ReleaseKind, ReleaseNumber};
use mast_protocol::tuf::builder::{
    Expiries, Repository, RoleSigners, RoleSpec, RootSpec, consistent_target_path, new_root,
};
use mast_protocol::tuf::verify::{IntegrityError, verify_bytes};
use mast_protocol::tuf::{Expiry, Limits, Next, Session, TargetFile, TrustedMetadata, TufError};
use mast_test_support::{Nginx, PYTHON_TUF};
use serde_json::Value;
use time::OffsetDateTime;

fn interop_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// What a client made of one phase: "ok" with the target's sha256, or an error kind and message.
enum Verdict {
    Ok(Option<Sha256Digest>),
    Refused(&'static str, String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Ok(Some(d)) => write!(f, "ok {d}"),
            Verdict::Ok(None) => write!(f, "ok"),
            Verdict::Refused(kind, message) => write!(f, "{kind}: {message}"),
        }
    }
}

/// A client that keeps its trusted metadata across phases, as a site keeps it across polls.
struct Client {
    trusted: Option<TrustedMetadata>,
    now: OffsetDateTime,
}

impl Client {
    fn run_phase(&mut self, dir: &Path, target: Option<&str>) -> Verdict {
        match self.refresh_and_download(dir, target) {
            Ok(digest) => Verdict::Ok(digest),
            Err(Refusal::Tuf(e)) => Verdict::Refused(e.kind().as_str(), e.to_string()),
            Err(Refusal::Target(e)) => {
                let kind = match e {
                    IntegrityError::Hash { .. } | IntegrityError::NoKnownHash(_) => "hash",
                    IntegrityError::Length { .. } | IntegrityError::TooLong { .. } => "length",
                };
                Verdict::Refused(kind, e.to_string())
            }
        }
    }

    fn refresh_and_download(
        &mut self,
        dir: &Path,
        target: Option<&str>,
    ) -> Result<Option<Sha256Digest>, Refusal> {
        let trusted = self.trusted.take().expect("trusted state");
        let mut session = Session::new(trusted.clone(), self.now, Limits::default());
        let result = drive(&mut session, &dir.join("metadata"), target);
        // Like a site: whatever was stored before an error stays trusted; a failed phase does not reset it.
        self.trusted = Some(session.into_trusted());
        let Some(found) = result? else {
            return Ok(None);
        };
        let name = target.expect("a target was looked up");
        let path = dir.join(consistent_target_path(name, &found).unwrap());
        // Read one byte past the signed length, as a streaming download would stop there.
        let bytes = std::fs::read(&path).unwrap();
        let capped = &bytes[..bytes.len().min(found.length as usize + 1)];
        verify_bytes(capped, Some(found.length), Some(&found.hashes)).map_err(Refusal::Target)?;
        Ok(Some(Sha256Digest::of(capped)))
    }
}

enum Refusal {
    Tuf(TufError),
    Target(IntegrityError),
}

impl From<TufError> for Refusal {
    fn from(e: TufError) -> Self {
        Self::Tuf(e)
    }
}

/// Drives a session over a metadata directory, as a mirror would serve it.
fn drive(
    session: &mut Session,
    metadata: &Path,
    target: Option<&str>,
) -> Result<Option<TargetFile>, TufError> {
    let mut searching = false;
    loop {
        match session.step()? {
            Next::Fetch(req) => match std::fs::read(metadata.join(&req.file)) {
                Ok(bytes) => session.fetched(&bytes)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => session.not_found()?,
                Err(e) => panic!("{}: {e}", req.file),
            },
            Next::Store(_) => session.stored(),
            Next::Refreshed => match target {
                Some(name) if !searching => {
                    searching = true;
                    session.find_target(name)?;
                }
                _ => return Ok(None),
            },
            Next::Found(t) => return Ok(Some(t.clone())),
        }
    }
}

#[test]
fn mast_client_agrees_with_python_tuf_on_every_scenario() {
    let Some(python) = PYTHON_TUF.require() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(&python)
        .arg(interop_script("pytuf_repos.py"))
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "pytuf_repos.py failed");
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("scenarios.json")).unwrap()).unwrap();

    let mut failures = Vec::new();
    let mut phases = 0;
    let scenarios = index.as_array().unwrap();
    for scenario in scenarios {
        let name = scenario["name"].as_str().unwrap();
        let now = OffsetDateTime::parse(
            scenario["now"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let root =
            std::fs::read(out.path().join(scenario["initial_root"].as_str().unwrap())).unwrap();
        let mut client = Client {
            trusted: Some(TrustedMetadata::new(&root).unwrap()),
            now,
        };
        for phase in scenario["phases"].as_array().unwrap() {
            phases += 1;
            let phase_dir = phase["dir"].as_str().unwrap();
            let dir = out.path().join(phase_dir);
            let verdict = client.run_phase(&dir, phase["target"].as_str());
            let expect = phase["expect"].as_str().unwrap();
            let agrees = match (&verdict, expect) {
                (Verdict::Ok(digest), "ok") => {
                    let want = phase["expect_target_sha256"].as_str();
                    want.is_none_or(|w| digest.map(|d| d.to_hex()).as_deref() == Some(w))
                }
                (Verdict::Refused(kind, _), expect) => *kind == expect,
                _ => false,
            };
            eprintln!("{name}/{}: expect {expect}, mast: {verdict}", phase_dir);
            if !agrees {
                failures.push(format!(
                    "{name} phase {}: expected {expect}, mast says {verdict}",
                    phase_dir
                ));
            }
        }
    }
    // The generator must have produced every attack the issue lists; a silently shorter list proves less.
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for required in [
        "basic",
        "delegation",
        "root_rotation",
        "fast_forward_recovery",
        "rollback_timestamp",
        "rollback_snapshot",
        "rollback_targets",
        "freeze_timestamp",
        "freeze_root",
        "threshold_timestamp",
        "threshold_duplicate_sigs",
        "threshold_root_chain",
        "root_chain_version",
        "length_target",
        "length_snapshot",
        "hash_target",
        "hash_snapshot",
        "spec_version",
    ] {
        assert!(
            names.contains(&required),
            "scenario {required} missing from pytuf_repos.py output"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {phases} phases disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn python_tuf_downloads_over_http_from_a_repository_mast_wrote() {
    let Some(python) = PYTHON_TUF.require() else {
        return;
    };
    if !Nginx::available() {
        return;
    }
    let now = OffsetDateTime::now_utc();
    let (root_key, targets_key, snapshot_key, timestamp_key) = (
        SigningKey::from_seed(&[1; 32]),
        SigningKey::from_seed(&[2; 32]),
        SigningKey::from_seed(&[3; 32]),
        SigningKey::from_seed(&[4; 32]),
    );
    let spec = |k: &SigningKey| RoleSpec {
        keys: vec![k.public()],
        threshold: 1,
    };
    let root_spec = RootSpec {
        root: spec(&root_key),
        targets: spec(&targets_key),
        snapshot: spec(&snapshot_key),
        timestamp: spec(&timestamp_key),
    };
    let expiries = Expiries::default();
    let mut root = new_root(&root_spec, 1, Expiry::new(now + expiries.root)).unwrap();
    root.sign(&root_key);
    let mut repo = Repository::create(root.clone(), now, expiries).unwrap();

    // A release's whole bundle, as the packager will add it: bytes, length and sha256 signed in targets.
    let bundle =
        b"a deterministic tar.gz would go here; python-tuf only checks length and hash".repeat(100);
    let release = Release {
        channel: "prod".parse().unwrap(),
        number: ReleaseNumber::new(7).unwrap(),
        tar_sha256: Sha256Digest::of(b"tar"),
        tar_length: 3,
        min_agent_version: "0.1.0".parse().unwrap(),
        waves: Default::default(),
    };
    let named = release.target(
        ReleaseKind::Bundle,
        bundle.len() as u64,
        Sha256Digest::of(&bundle),
    );
    repo.add_target(&named.name, named.file.clone()).unwrap();
    let signers = RoleSigners {
        targets: vec![&targets_key],
        snapshot: vec![&snapshot_key],
        timestamp: vec![&timestamp_key],
        delegated: BTreeMap::new(),
    };
    repo.commit(&signers, now).unwrap();

    let site = tempfile::tempdir().unwrap();
    for (path, bytes) in repo.files().unwrap() {
        let dest = site.path().join(&path);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, bytes).unwrap();
    }
    let target_path = site
        .path()
        .join(consistent_target_path(&named.name, &named.file).unwrap());
    std::fs::create_dir_all(target_path.parent().unwrap()).unwrap();
    std::fs::write(&target_path, &bundle).unwrap();
    let root_file = site.path().join("root.json");
    std::fs::write(&root_file, root.to_bytes().unwrap()).unwrap();

    let nginx = Nginx::serve(site.path());
    let client = tempfile::tempdir().unwrap();
    let output = Command::new(&python)
        .arg(interop_script("ngclient_download.py"))
        .args([
            "--metadata-url",
            &nginx.url("metadata/"),
            "--targets-url",
            &nginx.url("targets/"),
        ])
        .arg("--root")
        .arg(&root_file)
        .arg("--metadata-dir")
        .arg(client.path().join("metadata"))
        .args(["--target", &named.name])
        .arg("--out")
        .arg(client.path().join("out"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ngclient failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(line["sha256"], Sha256Digest::of(&bundle).to_hex());
    assert_eq!(line["length"], bundle.len());
    // python-tuf fetched over HTTP from nginx: the access log shows the requests it made.
    let requested: Vec<String> = nginx
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.status, r.uri))
        .collect();
    assert!(
        requested
            .iter()
            .any(|r| r == "200 /metadata/timestamp.json"),
        "{requested:?}"
    );
    assert!(
        requested
            .iter()
            .any(|r| r.starts_with("200 /targets/channels/prod/7/")),
        "{requested:?}"
    );
}
