//! Shared by the agent's end-to-end tests: repositories made with the packager's own code, and the real
//! `mast-agent` binary run against them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mast_packager::init::{InitArgs, init};
use mast_packager::keys::generate;
use mast_packager::publish::{OutputFormat, PublishArgs, publish};
use mast_packager::release::{ReleaseArgs, ReleaseReport, release};
use mast_packager::signers::OnlineKeyPaths;
use mast_protocol::release::AgentVersion;
use time::OffsetDateTime;

/// A signed repository with a channel `prod`, its keys and a manifest tree, all in one temporary dir.
pub(crate) struct Repo {
    pub(crate) dir: tempfile::TempDir,
    /// The repository (a mirror layout; nginx serves it directly).
    pub(crate) repo: PathBuf,
    /// The manifests of the next release.
    pub(crate) manifests: PathBuf,
}

impl Repo {
    /// A new repository with one key per role, and `files` manifests of about 8 KiB each.
    pub(crate) fn new(files: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        fs::create_dir(&keys).unwrap();
        let key = |name: &str| {
            let path = keys.join(format!("{name}.pem"));
            generate(&path).unwrap();
            path
        };
        let (root, targets, snapshot, timestamp) = (
            key("root"),
            key("targets"),
            key("snapshot"),
            key("timestamp"),
        );
        let repo = dir.path().join("repo");
        init(
            &InitArgs {
                dir: repo.clone(),
                root_keys: vec![root],
                root_threshold: 1,
                targets_keys: vec![targets],
                snapshot_keys: vec![snapshot],
                timestamp_keys: vec![timestamp],
                lifetimes: Vec::new(),
                remember_keys: true,
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let manifests = dir.path().join("manifests");
        fs::create_dir(&manifests).unwrap();
        for i in 0..files {
            write_manifest(&manifests, i, 0);
        }
        Self {
            dir,
            repo,
            manifests,
        }
    }

    /// The root a site is configured with.
    pub(crate) fn root(&self) -> PathBuf {
        self.repo.join("metadata/1.root.json")
    }

    /// Releases the manifest tree as the channel's next release.
    pub(crate) fn release(&self) -> ReleaseReport {
        self.release_with(None)
    }

    /// Moves `timestamp.json`'s mtime a minute back, as for a release published a while before the site
    /// polls: nginx's validators are then strong, and idle polls revalidate instead of re-reading.
    pub(crate) fn age_timestamp(&self) {
        fs::File::options()
            .write(true)
            .open(self.repo.join("metadata/timestamp.json"))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
    }

    /// Releases with a `--waves` plan.
    pub(crate) fn release_with(&self, waves: Option<&str>) -> ReleaseReport {
        release(
            &ReleaseArgs {
                repo: self.repo.clone(),
                bundle: self.manifests.clone(),
                channel: "prod".parse().unwrap(),
                release: None,
                waves: waves.map(str::to_owned),
                min_agent_version: AgentVersion::new(0, 1, 0),
                keys: OnlineKeyPaths::default(),
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap()
    }

    /// Publishes the repository to `to` (`oci+http://…`, `dir:…`) with the packager's own code.
    pub(crate) fn publish(&self, to: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(publish(
                &PublishArgs {
                    repo: self.repo.clone(),
                    to: to.parse().unwrap(),
                    presign_cmd: None,
                    ca_file: None,
                    registry_user: None,
                    registry_password: None,
                    jobs: 4,
                    attempts: 3,
                    source: String::new(),
                    output: OutputFormat::Text,
                },
                OffsetDateTime::now_utc(),
            ))
            .unwrap();
    }

    /// The chunk index `report`'s release was published with, as JSON.
    pub(crate) fn index(&self, report: &ReleaseReport) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.repo.join(&report.index_target)).unwrap()).unwrap()
    }

    /// The release's chunk pack: its mirror path (`chunks/<sha256>`) and length.
    pub(crate) fn pack(&self, report: &ReleaseReport) -> (String, u64) {
        let index = self.index(report);
        let pack = &index["pack"];
        (
            format!("chunks/{}", pack["sha256"].as_str().unwrap()),
            pack["length"].as_u64().unwrap(),
        )
    }

    /// Changes manifest `i` (a new revision of its content).
    pub(crate) fn edit(&self, i: usize, revision: u32) {
        write_manifest(&self.manifests, i, revision);
    }
}

/// A ConfigMap of about 8 KiB whose data differs per file and revision, so chunks are distinct.
fn write_manifest(dir: &Path, i: usize, revision: u32) {
    let mut data = String::new();
    for line in 0..100 {
        data.push_str(&format!(
            "    key-{line:03}: \"file {i} revision {revision} line {line} {}\"\n",
            (i * 7919 + line * 104_729 + revision as usize * 31) % 1_000_003
        ));
    }
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-{i:04}\n  namespace: edge\ndata:\n{data}"
    );
    fs::write(dir.join(format!("config-{i:04}.yaml")), yaml).unwrap();
}

/// A site: its state database and applied-manifests directory.
pub(crate) struct Site {
    pub(crate) dir: tempfile::TempDir,
}

impl Site {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // An empty config file, so that no /etc/mast/agent.toml of the host is read.
        fs::write(dir.path().join("agent.toml"), "").unwrap();
        Self { dir }
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    pub(crate) fn state(&self) -> PathBuf {
        self.dir.path().join("state/state.db")
    }

    pub(crate) fn applied(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// `mast-agent` with this site's settings and no config file or MAST_* variables from the host.
    pub(crate) fn agent(&self, repo: &Repo, mirrors: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mast-agent"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("MAST_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("MAST_CONFIG", self.config())
            .env("MAST_CLUSTER_ID", "site-0042")
            .env("MAST_CHANNEL", "prod")
            .env("MAST_ROOT", repo.root())
            .env("MAST_STATE", self.state())
            .env("MAST_APPLIER", format!("dir:{}", self.applied().display()))
            .env("MAST_MIRRORS", mirrors.join(","));
        cmd
    }

    /// Runs `mast-agent ARGS` for this site.
    pub(crate) fn run(&self, repo: &Repo, mirrors: &[&str], args: &[&str]) -> Output {
        self.agent(repo, mirrors).args(args).output().unwrap()
    }

    /// Asserts that every file applied to this site is the manifest of that name in `repo`.
    pub(crate) fn assert_applied(&self, repo: &Repo) {
        for (name, bytes) in applied_files(&self.applied()) {
            assert_eq!(
                bytes,
                fs::read(repo.manifests.join(&name)).unwrap(),
                "{name}"
            );
        }
    }

    /// `mast-agent status --output json`.
    pub(crate) fn status(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_mast-agent"))
            .env("MAST_CONFIG", self.config())
            .args(["status", "--output", "json", "--state"])
            .arg(self.state())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// stdout and stderr, for assertion messages.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The number printed right after `word` in a pass's summary (`fetched 12 chunks`, `reused 3 held
/// chunks`), if any.
pub(crate) fn count_after(stdout: &str, word: &str) -> Option<usize> {
    stdout.split(word).nth(1)?.split(' ').next()?.parse().ok()
}

/// The applied files, by name, with their contents.
pub(crate) fn applied_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}
