//! Shared by the `mast` command tests: running the real binary, keys made by it, manifest trees and
//! repositories made through its own commands.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `mast` binary with the online-key variables cleared, so the host's environment cannot leak in.
pub(crate) fn mast() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mast"));
    for var in [
        "MAST_TARGETS_KEY",
        "MAST_SNAPSHOT_KEY",
        "MAST_TIMESTAMP_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `mast ARGS` and returns its output.
pub(crate) fn run<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> Output {
    mast()
        .args(args.iter().map(AsRef::as_ref))
        .output()
        .unwrap()
}

/// Runs `mast ARGS`, asserting success; returns stdout.
pub(crate) fn ok<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "mast {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `mast ARGS`, asserting it exits with `code`; returns stderr.
pub(crate) fn fails<S: AsRef<str> + std::fmt::Debug>(args: &[S], code: i32) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "mast {args:?}\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// `mast ARGS --output json`, parsed.
pub(crate) fn json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    serde_json::from_str(&ok(&all)).unwrap()
}

/// A path as an argument.
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes `text` to `dir/rel`, creating directories.
pub(crate) fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A Kubernetes object as YAML.
pub(crate) fn object(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> String {
    let ns = namespace.map_or(String::new(), |n| format!("  namespace: {n}\n"));
    format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n{ns}data:\n  k: v\n"
    )
}

/// A small valid manifest tree: a namespace, a deployment and a config map, and an options file.
pub(crate) fn manifests(dir: &Path) {
    write(dir, "ns.yaml", &object("v1", "Namespace", None, "prod"));
    write(
        dir,
        "apps/web.yaml",
        &format!(
            "{}---\n{}",
            object("apps/v1", "Deployment", Some("prod"), "web"),
            object("v1", "Service", Some("prod"), "web")
        ),
    );
    write(
        dir,
        "config/settings.yml",
        &object("v1", "ConfigMap", Some("prod"), "settings"),
    );
    write(dir, "mast.toml", "prune = \"orphan\"\n");
}

/// Key files made by `mast keygen` in one directory.
pub(crate) struct Keys {
    pub(crate) dir: tempfile::TempDir,
}

impl Keys {
    pub(crate) fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            ok(&[
                "keygen",
                "--out",
                s(&dir.path().join(format!("{name}.pem"))),
            ]);
        }
        Self { dir }
    }

    /// The private key file.
    pub(crate) fn private(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pem"))
    }

    /// The public key file.
    pub(crate) fn public(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pem.pub"))
    }
}

/// A published repository made with `mast repo init` (one root key, remembered online keys), with
/// `extra` flags appended.
pub(crate) fn init_repo(keys: &Keys, repo: &Path, extra: &[&str]) {
    let (root, targets, snapshot, timestamp) = (
        keys.private("root"),
        keys.private("targets"),
        keys.private("snapshot"),
        keys.private("timestamp"),
    );
    let mut args = vec![
        "repo",
        "init",
        s(repo),
        "--root-key",
        s(&root),
        "--root-threshold",
        "1",
        "--targets-key",
        s(&targets),
        "--snapshot-key",
        s(&snapshot),
        "--timestamp-key",
        s(&timestamp),
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

/// Every file under `dir` (relative paths, sorted) with its bytes.
pub(crate) fn snapshot_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                // The lock file is created (empty) by every locking command; it is not content.
                if rel != ".mast/lock" {
                    out.push((rel, std::fs::read(&path).unwrap()));
                }
            }
        }
    }
    out.sort();
    out
}
