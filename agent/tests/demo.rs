//! `scripts/demo.sh`, the README's first command, run end to end with the binaries this build made: over
//! nginx and over python's http.server, checking the lines a reader is told to look at, that the server
//! is gone and the temporary directory removed afterwards, and that a failure exits non-zero.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mast_test_support::{NGINX, PYTHON};

#[test]
fn the_demo_over_nginx_fetches_one_chunk_for_a_one_file_change() {
    if NGINX.require().is_none() {
        return;
    }
    check_demo("nginx");
}

#[test]
fn the_demo_over_python_http_server_fetches_one_chunk_for_a_one_file_change() {
    if PYTHON.require().is_none() {
        return;
    }
    check_demo("python");
}

#[test]
fn the_demo_fails_with_a_non_zero_exit_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = demo(empty.path(), tmp.path(), "python");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not an executable"), "{stderr}");
    assert!(stderr.contains("FAILED (exit 1)"), "{stderr}");
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0, "left behind");
}

/// The workspace, from this crate's own directory (agent/ sits directly under it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn check_demo(server: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(&bin_dir(), tmp.path(), server);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    let after = |heading: &str| -> Vec<&str> {
        lines
            .iter()
            .skip_while(|l| !l.contains(heading))
            .take_while(|l| !l.is_empty())
            .copied()
            .collect()
    };

    for heading in [
        "== 1. Binaries: prebuilt, from MAST_BIN_DIR",
        "== 2. Throw-away keys and a new TUF repository",
        "== 3. Pack examples/edge-gateway and release it on channel 'stable'",
        "== 4. Serve the repository on 127.0.0.1",
        "== 5. A site: its config, its trusted root, its first pass",
        "== 6. Nothing new",
        "== 7. Change one manifest",
        "== 8. The site's second pass fetches only what changed",
        "== 9. What the site runs",
    ] {
        assert!(has(heading), "no {heading:?} in:\n{stdout}");
    }
    assert!(has(&format!("({server}, pid ")), "{stdout}");
    // Every object of the example is written once (the applier may or may not write mast.toml itself).
    assert!(
        lines.iter().any(|l| l.starts_with("applied release 1: ")
            && l.contains(" written, 0 unchanged, 0 pruned")),
        "{stdout}"
    );
    let idle = after("== 6. Nothing new");
    assert!(
        idle.iter()
            .any(|l| l.starts_with("up to date at release 1")),
        "{idle:?}"
    );
    assert!(
        idle.iter().any(|l| l.contains(", 0 for chunks")),
        "{idle:?}"
    );

    // The second pass: the agent's own figures, then the server's log.
    let second = after("== 8. The site's second pass");
    assert!(
        second
            .iter()
            .any(|l| l.starts_with("applied release 2: 1 written, ") && l.contains(", 0 pruned")),
        "{second:?}"
    );
    let figures = second
        .iter()
        .find(|l| l.starts_with("fetched "))
        .unwrap_or_else(|| panic!("no figures in {second:?}"));
    let words: Vec<&str> = figures.split_whitespace().collect();
    assert_eq!(words[1], "1", "{figures}");
    let reused: usize = words[words.len() - 3].parse().unwrap();
    assert!(reused >= 1, "{figures}");
    assert!(
        second
            .iter()
            .any(|l| l.starts_with("mirror: 1 chunk requests for release 2")),
        "{second:?}"
    );
    let chunk_lines = second.iter().filter(|l| l.contains("GET /chunks/")).count();
    assert_eq!(chunk_lines, 1, "{second:?}");
    assert!(
        has("site:   30-deployment.yaml now runs image gateway:1.4.3"),
        "{stdout}"
    );

    let status = after("== 9. What the site runs");
    assert!(
        status
            .iter()
            .any(|l| l.starts_with("channel stable: running release 2")),
        "{status:?}"
    );
    assert!(
        has("demo: done. The site runs release 2; the second release cost 1 chunk request(s)."),
        "{stdout}"
    );

    // Nothing is left: the server was stopped and the work directory removed.
    let mirror = lines
        .iter()
        .find_map(|l| l.strip_prefix("mirror: http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no mirror line in:\n{stdout}"));
    let port: u16 = mirror.split('/').next().unwrap().parse().unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the {server} server on port {port} still answers"
    );
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0, "left behind");
}

/// Runs the demo with prebuilt binaries from `bin_dir`, its temporary directory under `tmp`.
fn demo(bin_dir: &Path, tmp: &Path, server: &str) -> Output {
    let mut cmd = Command::new(workspace().join("scripts/demo.sh"));
    cmd.env("MAST_BIN_DIR", bin_dir)
        .env("MAST_DEMO_SERVER", server)
        .env("TMPDIR", tmp)
        .env_remove("MAST_DEMO_KEEP")
        .env_remove("KUBECONFIG");
    cmd.output().unwrap()
}

/// The directory holding this build's `mast-agent` and, built here if missing or stale, `mast`: an
/// agent test gets only its own crate's binaries from cargo, and the demo needs the packager's too.
fn bin_dir() -> PathBuf {
    let agent = Path::new(env!("CARGO_BIN_EXE_mast-agent"));
    let dir = agent.parent().unwrap().to_path_buf();
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => panic!("unexpected binary directory {}", dir.display()),
    };
    // Cheap when `mast` is up to date (cargo only checks fingerprints); cargo holds no build lock while
    // tests run.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--quiet", "-p", "mast-packager", "--bin", "mast"])
        .args(["--profile", &profile])
        .output()
        .unwrap();
    assert!(out.status.success(), "building mast: {}", text(&out));
    assert!(
        dir.join("mast").is_file(),
        "cargo built mast somewhere other than {} (a --target build?)",
        dir.display()
    );
    dir
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
