//! Shared by the publish and verify tests: repositories in the packager's directory layout, built with
//! the protocol crate's builders, and the `mast` binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mast_protocol::bundle::{BundlePath, ChunkIndex, ChunkParams, build_tar, gzip};
use mast_protocol::crypto::SigningKey;
use mast_protocol::digest::Sha256Digest;
use mast_protocol::release::{AgentVersion, Release, ReleaseKind, ReleaseNumber, Waves};
use mast_protocol::tuf::Expiry;
use mast_protocol::tuf::builder::{
    Expiries, Repository, RoleSigners, RoleSpec, RootSpec, consistent_target_path, new_root,
    rotate_root,
};
use time::{Duration, OffsetDateTime};

/// A repository directory (mirror layout plus `.mast/`), with its keys in memory.
pub(crate) struct TestRepo {
    pub(crate) dir: tempfile::TempDir,
    keys: Vec<SigningKey>,
    /// Which of `keys` signs timestamps (changes with a root rotation).
    timestamp_key: usize,
    repo: Repository,
    now: OffsetDateTime,
}

/// What one release wrote.
#[derive(Debug, Clone)]
pub(crate) struct Made {
    pub(crate) channel: String,
    pub(crate) number: u64,
    pub(crate) bundle_name: String,
    pub(crate) bundle_sha256: Sha256Digest,
    pub(crate) bundle_length: u64,
    pub(crate) index_sha256: Sha256Digest,
    pub(crate) tar_sha256: Sha256Digest,
    pub(crate) chunks: Vec<Sha256Digest>,
}

impl TestRepo {
    pub(crate) fn new() -> Self {
        Self::with_expiries(Expiries::default())
    }

    pub(crate) fn with_expiries(expiries: Expiries) -> Self {
        let now = OffsetDateTime::now_utc();
        let keys: Vec<SigningKey> = (11..=15u8)
            .map(|i| SigningKey::from_seed(&[i; 32]))
            .collect();
        let one = |k: &SigningKey| RoleSpec {
            keys: vec![k.public()],
            threshold: 1,
        };
        let spec = RootSpec {
            root: one(&keys[0]),
            targets: one(&keys[1]),
            snapshot: one(&keys[2]),
            timestamp: one(&keys[3]),
        };
        let mut root = new_root(&spec, 1, Expiry::new(now + Duration::days(365))).unwrap();
        root.sign(&keys[0]);
        let repo = Repository::create(root, now, expiries).unwrap();
        let this = Self {
            dir: tempfile::tempdir().unwrap(),
            keys,
            timestamp_key: 3,
            repo,
            now,
        };
        // Packager-private state that must never be published.
        write(
            &this.path().join(".mast"),
            "keys.json",
            b"{\"secret\":true}",
        );
        this
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `metadata/1.root.json`, what sites trust.
    pub(crate) fn root_file(&self) -> PathBuf {
        self.path().join("metadata/1.root.json")
    }

    /// Adds release `number` of `channel` holding `files` (path, content), signs and writes everything.
    pub(crate) fn release(
        &mut self,
        channel: &str,
        number: u64,
        files: &[(&str, Vec<u8>)],
    ) -> Made {
        self.release_with_waves(channel, number, files, Waves::new(Vec::new()).unwrap())
    }

    /// As [`TestRepo::release`], with a rollout plan.
    pub(crate) fn release_with_waves(
        &mut self,
        channel: &str,
        number: u64,
        files: &[(&str, Vec<u8>)],
        waves: Waves,
    ) -> Made {
        let tar = build_tar(
            files
                .iter()
                .map(|(p, d)| (p.parse::<BundlePath>().unwrap(), d.as_slice())),
        )
        .unwrap();
        let gz = gzip(&tar);
        let (index, chunks) = ChunkIndex::build(&tar, &ChunkParams::default()).unwrap();
        let index_bytes = index.to_bytes();
        let release = Release {
            channel: channel.parse().unwrap(),
            number: ReleaseNumber::new(number).unwrap(),
            tar_sha256: Sha256Digest::of(&tar),
            tar_length: tar.len() as u64,
            min_agent_version: AgentVersion::new(0, 1, 0),
            waves,
        };
        for chunk in &chunks {
            write(
                self.path(),
                &format!("chunks/{}", chunk.digest),
                &chunk.bytes,
            );
        }
        let pack = chunks
            .iter()
            .map(|c| c.bytes.as_slice())
            .collect::<Vec<_>>()
            .concat();
        write(
            self.path(),
            &format!("chunks/{}", Sha256Digest::of(&pack)),
            &pack,
        );
        let mut bundle_name = String::new();
        for (kind, bytes) in [
            (ReleaseKind::Bundle, &gz),
            (ReleaseKind::Index, &index_bytes),
        ] {
            let t = release.target(kind, bytes.len() as u64, Sha256Digest::of(bytes));
            write(
                self.path(),
                &consistent_target_path(&t.name, &t.file).unwrap(),
                bytes,
            );
            if kind == ReleaseKind::Bundle {
                bundle_name = t.name.clone();
            }
            self.repo.add_target(&t.name, t.file).unwrap();
        }
        self.commit();
        Made {
            channel: channel.to_owned(),
            number,
            bundle_name,
            bundle_sha256: Sha256Digest::of(&gz),
            bundle_length: gz.len() as u64,
            index_sha256: Sha256Digest::of(&index_bytes),
            tar_sha256: Sha256Digest::of(&tar),
            chunks: chunks.iter().map(|c| c.digest).collect(),
        }
    }

    /// Re-signs the timestamp (a new version with the same snapshot).
    pub(crate) fn refresh_timestamp(&mut self) {
        // Two seconds on, a window one second short of the lifetime makes the timestamp due.
        self.now += Duration::seconds(2);
        let signers = signers(&self.keys, self.timestamp_key);
        self.repo
            .refresh_timestamp(&signers, self.now, Duration::days(7) - Duration::seconds(1))
            .unwrap();
        self.write_metadata();
    }

    /// Root version N+1 with a new timestamp key, signed by the (unchanged) root key; the timestamp is
    /// re-signed with the new key.
    pub(crate) fn rotate_timestamp_key(&mut self) {
        let current = &self.repo.root().signed;
        let mut spec = RootSpec::from_root(current).unwrap();
        spec.timestamp = RoleSpec {
            keys: vec![self.keys[4].public()],
            threshold: 1,
        };
        let mut next =
            rotate_root(current, &spec, Expiry::new(self.now + Duration::days(365))).unwrap();
        next.sign(&self.keys[0]);
        self.repo.push_root(next).unwrap();
        self.timestamp_key = 4;
        self.commit();
    }

    fn commit(&mut self) {
        self.now += Duration::seconds(1);
        let signers = signers(&self.keys, self.timestamp_key);
        self.repo.commit(&signers, self.now).unwrap();
        self.write_metadata();
    }

    fn write_metadata(&self) {
        for (name, bytes) in self.repo.files().unwrap() {
            write(self.path(), &name, &bytes);
        }
    }
}

fn signers(keys: &[SigningKey], timestamp: usize) -> RoleSigners<'_> {
    RoleSigners {
        targets: vec![&keys[1]],
        snapshot: vec![&keys[2]],
        timestamp: vec![&keys[timestamp]],
        delegated: BTreeMap::new(),
    }
}

pub(crate) fn write(root: &Path, name: &str, bytes: &[u8]) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Deterministic incompressible bytes (xorshift64), so chunks stay chunk-sized after zstd.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A bundle of `n` manifests of `size` noisy bytes each, seeded.
pub(crate) fn manifests(n: usize, size: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("apps/app-{i:03}.yaml"),
                noise(size, seed * 1000 + i as u64),
            )
        })
        .collect()
}

pub(crate) fn as_files(m: &[(String, Vec<u8>)]) -> Vec<(&str, Vec<u8>)> {
    m.iter().map(|(p, d)| (p.as_str(), d.clone())).collect()
}

/// The `mast` binary under test.
pub(crate) fn mast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mast"))
}

/// Runs `mast ARGS` and returns its output, whatever the exit status.
pub(crate) fn run(args: &[&str]) -> Output {
    mast().args(args).output().unwrap()
}

/// Runs `mast ARGS --output json`, asserts success and parses stdout.
pub(crate) fn run_json(args: &[&str]) -> serde_json::Value {
    let out = mast()
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mast {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mast {args:?}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// nginx's logged `PUT`s, once there are at least `count`: nginx logs a request just after answering
/// it, so the last lines may lag the client by a moment.
pub(crate) fn logged_puts(nginx: &mast_test_support::Nginx, count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let puts: Vec<String> = nginx
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT")
            .map(|r| {
                assert!(matches!(r.status, 201 | 204), "{r:?}");
                r.uri
            })
            .collect();
        if puts.len() >= count || std::time::Instant::now() > deadline {
            return puts;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Every file under `dir`, relative, sorted.
pub(crate) fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}
