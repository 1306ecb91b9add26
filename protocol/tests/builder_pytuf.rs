//! What the repository builder writes, read by python-tuf's client (`tuf.ngclient.Updater`), the reference
//! implementation: DESIGN.md requires other TUF clients to verify what mast publishes.
//!
//! python-tuf is found as the rest of the suite finds it (`MAST_TEST_PYTHON`, else the `.venv` that
//! `scripts/test.sh` installs). Without it a bare `cargo test` prints why and skips; with
//! `MAST_TEST_REQUIRE_TOOLS=1` (as under `scripts/test.sh`) a missing python-tuf fails the test.

// As clippy.toml says for #[test] functions: a panic in a test helper is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use mast_protocol::crypto::SigningKey;
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::{AgentVersion, Release, ReleaseKind, ReleaseNumber, parse_waves_spec};
use mast_protocol::tuf::Expiry;
use mast_protocol::tuf::builder::{
    DelegationSpec, Expiries, Repository, RoleSigners, RoleSpec, RootSpec, consistent_target_path,
    new_root, rotate_root,
};
use time::{Duration, OffsetDateTime};

/// Refreshes like a client, downloads each target named, prints one JSON line per target. The fetcher
/// serves files from a directory and, like nginx or python's http.server, decodes the URL path first.
const CLIENT: &str = r#"
import json, os, sys
from urllib.parse import unquote
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface
from tuf.api.exceptions import DownloadHTTPError

repo, client, root, *names = sys.argv[1:]
BASE = "http://mirror.invalid/"

class DirFetcher(FetcherInterface):
    def _fetch(self, url):
        path = os.path.join(repo, unquote(url[len(BASE):]))
        if not os.path.isfile(path):
            raise DownloadHTTPError(f"{url}: not found", 404)
        with open(path, "rb") as f:
            yield f.read()

os.makedirs(client, exist_ok=True)
trusted = os.path.join(client, "root.json")
bootstrap = None if os.path.exists(trusted) else open(root, "rb").read()
u = Updater(metadata_dir=client, metadata_base_url=BASE + "metadata/", target_base_url=BASE + "targets/",
            target_dir=client, fetcher=DirFetcher(), bootstrap=bootstrap)
u.refresh()
for name in names:
    info = u.get_targetinfo(name)
    path = u.download_target(info, os.path.join(client, name.replace("/", "_")))
    print(json.dumps({"target": name, "length": os.path.getsize(path), "custom": info.custom,
                      "root": u._trusted_set.root.version}))
"#;

fn python_tuf() -> Option<PathBuf> {
    let given = std::env::var_os("MAST_TEST_PYTHON").map(PathBuf::from);
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let python = given.clone().or_else(|| venv.is_file().then_some(venv));
    let usable = python.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", "import tuf.ngclient"])
            .status()
            .is_ok_and(|s| s.success())
    });
    if usable {
        return python;
    }
    let reason = "python-tuf not found (MAST_TEST_PYTHON, or .venv from scripts/test.sh)";
    assert!(
        given.is_none(),
        "MAST_TEST_PYTHON={given:?} cannot import tuf.ngclient"
    );
    assert!(
        std::env::var("MAST_TEST_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{reason} (MAST_TEST_REQUIRE_TOOLS=1 forbids skipping)"
    );
    eprintln!("SKIPPED builder_pytuf: {reason}");
    None
}

/// Writes files into the mirror directory, never deleting older ones, as the packager must.
fn publish(dir: &Path, files: impl IntoIterator<Item = (String, Vec<u8>)>) {
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

fn run_client(python: &Path, repo: &Path, client: &Path, names: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(python)
        .arg("-c")
        .arg(CLIENT)
        .arg(repo)
        .arg(client)
        .arg(repo.join("bootstrap-root.json"))
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python-tuf refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn python_tuf_reads_a_rotated_repository_with_releases_and_a_delegation() {
    let Some(python) = python_tuf() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, client_dir) = (tmp.path().join("mirror"), tmp.path().join("client"));
    let now = OffsetDateTime::now_utc();
    let k: Vec<SigningKey> = (1..=8u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
    let one = |k: &SigningKey| RoleSpec {
        keys: vec![k.public()],
        threshold: 1,
    };
    let spec = RootSpec {
        root: one(&k[0]),
        targets: one(&k[1]),
        snapshot: one(&k[2]),
        timestamp: one(&k[3]),
    };
    let mut root = new_root(&spec, 1, Expiry::new(now + Duration::days(365))).unwrap();
    root.sign(&k[0]);
    publish(
        &repo_dir,
        [("bootstrap-root.json".to_owned(), root.to_bytes().unwrap())],
    );

    let mut repo = Repository::create(root, now, Expiries::default()).unwrap();
    let team = DelegationSpec {
        name: "prod-eu.team".to_owned(),
        keys: one(&k[7]),
        paths: vec!["channels/prod-eu/*/*".to_owned()],
        terminating: true,
    };
    repo.delegate("targets", team).unwrap();
    let mut signers = RoleSigners {
        targets: vec![&k[1]],
        snapshot: vec![&k[2]],
        timestamp: vec![&k[3]],
        delegated: BTreeMap::from([("prod-eu.team".to_owned(), vec![&k[7]])]),
    };
    let mut blobs = Vec::new();
    for (channel, role) in [("prod", "targets"), ("prod-eu", "prod-eu.team")] {
        let release = Release {
            channel: channel.parse().unwrap(),
            number: ReleaseNumber::new(3).unwrap(),
            tar_sha256: Sha256Digest::of(b"tar"),
            tar_length: 3,
            min_agent_version: AgentVersion::new(0, 1, 0),
            waves: parse_waves_spec("10%@+0h,100%@+1d", now).unwrap(),
        };
        for kind in [ReleaseKind::Bundle, ReleaseKind::Index] {
            let bytes = format!("{channel} {kind:?}").into_bytes();
            let t = release.target(kind, bytes.len() as u64, Sha256Digest::of(&bytes));
            blobs.push((consistent_target_path(&t.name, &t.file).unwrap(), bytes));
            repo.add_target_to(role, &t.name, t.file).unwrap();
        }
    }
    repo.commit(&signers, now).unwrap();
    publish(&repo_dir, repo.files().unwrap().into_iter().chain(blobs));

    let first = run_client(
        &python,
        &repo_dir,
        &client_dir,
        &["channels/prod/3/bundle.tar.gz"],
    );
    assert_eq!(first[0]["root"], 1);
    assert_eq!(first[0]["length"], "prod Bundle".len());
    assert_eq!(first[0]["custom"]["mast"]["release"], 3);

    // Root 2: new root keys with threshold 2 and a new timestamp key; signed by root 1's key and two of 2's.
    let mut next = RootSpec::from_root(&repo.root().signed).unwrap();
    next.root = RoleSpec {
        keys: vec![k[4].public(), k[5].public(), k[0].public()],
        threshold: 2,
    };
    next.timestamp = one(&k[6]);
    let mut v2 = rotate_root(
        &repo.root().signed,
        &next,
        Expiry::new(now + Duration::days(365)),
    )
    .unwrap();
    for key in [&k[0], &k[4], &k[5]] {
        v2.sign(key);
    }
    repo.push_root(v2).unwrap();
    signers.timestamp = vec![&k[6]];
    assert_eq!(repo.commit(&signers, now).unwrap(), ["timestamp"]);
    let later = now + Duration::days(13);
    assert_eq!(
        repo.refresh_timestamp(&signers, later, Duration::days(1))
            .unwrap(),
        ["snapshot", "timestamp"]
    );
    publish(&repo_dir, repo.files().unwrap());

    // The same client, from its persisted state: root 1 → 2, then the new timestamp and snapshot.
    let names = [
        "channels/prod/3/index.json",
        "channels/prod-eu/3/bundle.tar.gz",
        "channels/prod-eu/3/index.json",
    ];
    let second = run_client(&python, &repo_dir, &client_dir, &names);
    assert_eq!(second.len(), 3);
    for (line, name) in second.iter().zip(names) {
        assert_eq!(line["target"], name);
        assert_eq!(line["root"], 2);
        assert_eq!(
            line["custom"]["mast"]["tar_sha256"],
            Sha256Digest::of(b"tar").to_hex()
        );
    }
}
