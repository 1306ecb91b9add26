//! Fetch-side benchmarks of the issue "Agent, fetch side", each figure and ratio measured in this one run:
//!
//! - **P1** fetch + verify of a 100 MB target (a `bundle.tar.gz` of random data) from nginx (`mast-agent tuf … download`) against
//!   `curl -o /dev/null` of the same file (goal ≤ 1.3× curl's time), beside its floor — sha256 of the
//!   same bytes in memory, which any client that checks the signed hash must spend — and the same
//!   download over a throttled link (the fault proxy), where the link is the limit;
//! - **P3** a release fetched from Debian's docker-registry (`mast-agent once` on `oci+http://`, its
//!   apply held by a closed change window) against `skopeo copy` of the same release's Flux artifact
//!   (goal ≤ 1.0×); the same with the apply to a directory is printed alongside;
//! - **P5** bytes on the link for a one-file change in a 20 MB bundle (goal ≤ 2% of the bundle);
//! - **P6** bytes on the link for an idle poll (goal ≤ 1 KB);
//! - idle RSS of `mast-agent run` after it converged (goal ≤ 15 MiB).
//!
//! Bytes on the link are the TCP payload both ways, counted by the fault proxy in pass-through. Times
//! are the median of `MAST_BENCH_RUNS` (default 5) interleaved runs. Nothing here asserts a time.
//!
//! `cargo bench -p mast-agent --bench fetch` (release build; needs nginx, docker-registry, skopeo and
//! curl: run `scripts/test.sh` once first, which installs them). `MAST_BENCH_ONLY=p1,p3,p5,rss` picks
//! a subset.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mast_test_support::fault_proxy::Faults;
use mast_test_support::{FaultProxy, NginxConfig, Registry, free_port};
use support::{Repo, Site};

fn main() {
    // `cargo bench` passes `--bench`; test runners that list or run every target (nextest's `--list`,
    // `cargo test --all-targets`) do not, and must not start a benchmark of minutes.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let runs: usize = std::env::var("MAST_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // `MAST_BENCH_ONLY=p1,rss` runs a subset (names: p1, p3, p5, rss; p5 includes P6).
    let only = std::env::var("MAST_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|n| n.trim() == name);
    println!("mast fetch benchmarks ({runs} runs each where timed)\n");
    if wanted("p1") {
        p1_target_vs_curl(runs);
    }
    if wanted("p3") {
        p3_oci_vs_skopeo(runs);
    }
    if wanted("p5") {
        p5_p6_delta_and_idle();
    }
    if wanted("rss") {
        idle_rss();
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A repository whose one release is `mib` ConfigMaps of about 1 MiB each (`blob-NNNN`), the value of
/// `key` filled from an xorshift stream (cheap, deterministic) by `push`, and written as `value` makes it.
fn noise_repo(
    mib: usize,
    mut state: u64,
    key: &str,
    push: impl Fn(&mut String, u64),
    value: impl Fn(&str) -> String,
) -> Repo {
    let repo = Repo::new(0);
    for i in 0..mib {
        let mut data = String::with_capacity(1 << 20);
        while data.len() < (1 << 20) - 200 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            push(&mut data, state);
        }
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: blob-{i:04}\n  namespace: edge\n{key}:\n  blob: {}\n",
            value(&data)
        );
        fs::write(repo.manifests.join(format!("blob-{i:04}.yaml")), yaml).unwrap();
    }
    repo
}

/// A repository whose one release is about `mib` MiB of hex digits: incompressible enough for gzip and
/// zstd to halve it, no more.
fn big_repo(mib: usize) -> Repo {
    noise_repo(
        mib,
        0x9e37_79b9_7f4a_7c15,
        "data",
        |data, state| data.push_str(&format!("{state:016x}")),
        |data| format!("\"{data}\""),
    )
}

/// A repository whose one release is `mib` ConfigMaps of 1 MiB of base64 random bytes (`binaryData`):
/// gzip cannot shrink random bytes, so its `bundle.tar.gz` holds about 0.75 MB per MiB of manifests.
fn random_repo(mib: usize) -> Repo {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    noise_repo(
        mib,
        0x2545_f491_4f6c_dd1d,
        "binaryData",
        // Ten base64 digits from 60 random bits: exactly what base64 of random bytes looks like.
        |data, state| {
            for shift in 0..10 {
                data.push(ALPHABET[((state >> (6 * shift)) & 63) as usize] as char);
            }
        },
        str::to_owned,
    )
}

/// What a throttled link carries per second in the P1 figure over the fault proxy: 400 Mbit/s, above
/// what most edge sites have, yet a thirtieth of what this client hashes per second, so the link is the
/// limit and anything the client adds beyond the transfer shows in the ratio.
const P1_LINK_BYTES_PER_SECOND: u64 = 50_000_000;

fn p1_target_vs_curl(runs: usize) {
    // 127 MiB of base64 manifests: a bundle.tar.gz of about 100 MB.
    let repo = random_repo(127);
    let report = repo.release();
    let server = NginxConfig::new(&repo.repo).read_only().start();
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", server.port()).parse().unwrap()).unwrap();
    proxy
        .control()
        .set_faults(Faults::none().throttle(P1_LINK_BYTES_PER_SECOND));
    let target = "channels/prod/1/bundle.tar.gz";
    let file = repo.repo.join(&report.bundle_target);
    let size = fs::metadata(&file).unwrap().len();
    let loopback = |path: &str| server.url(path);
    let throttled = |path: &str| proxy.url(path);

    let (mut ours, mut curl, mut curl_file, mut floor) = (vec![], vec![], vec![], vec![]);
    let bytes = fs::read(&file).unwrap();
    for _ in 0..runs {
        ours.push(p1_agent_download(&repo, &loopback, target, size));
        curl.push(p1_curl(&loopback(&report.bundle_target), None));
        // The same into a file, without fsync: what writing the bytes at all costs on this machine.
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("curl-copy");
        curl_file.push(p1_curl(&loopback(&report.bundle_target), Some(&copy)));
        // The floor of any client that checks the signed sha256: hashing the bytes already in memory,
        // with the agent's own sha2 code, on one core (sha256 is a chain; it cannot be split).
        let started = Instant::now();
        std::hint::black_box(mast_protocol::digest::Sha256Digest::of(&bytes));
        floor.push(started.elapsed());
    }
    drop(bytes);
    let (ours, curl, curl_file, floor) =
        (median(ours), median(curl), median(curl_file), median(floor));
    let x = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "P1  {:.1} MB target from nginx: mast-agent tuf (refresh + fetch + verify + file) {}, curl -o /dev/null {}: {:.2}x curl (goal <= 1.3x); curl -o FILE {}: {:.2}x that",
        size as f64 / 1e6,
        ms(ours),
        ms(curl),
        x(ours, curl),
        ms(curl_file),
        x(ours, curl_file)
    );
    println!(
        "P1  floor: sha256 of the {:.1} MB in memory (the agent's sha2, one core) {}: {:.2}x curl -o /dev/null; mast-agent tuf is {:.2}x that floor",
        size as f64 / 1e6,
        ms(floor),
        x(floor, curl),
        x(ours, floor)
    );

    // Over a link that is the limit (the fault proxy throttling each connection): fewer runs, each
    // takes seconds.
    let link_runs = runs.min(3);
    let (mut ours, mut curl) = (vec![], vec![]);
    for _ in 0..link_runs {
        ours.push(p1_agent_download(&repo, &throttled, target, size));
        curl.push(p1_curl(&throttled(&report.bundle_target), None));
    }
    let (ours, curl) = (median(ours), median(curl));
    println!(
        "P1  the same over a {:.0} MB/s link (fault proxy, {link_runs} runs): mast-agent tuf {}, curl -o /dev/null {}: {:.2}x curl",
        P1_LINK_BYTES_PER_SECOND as f64 / 1e6,
        ms(ours),
        ms(curl),
        x(ours, curl)
    );
}

/// Times `mast-agent tuf … download` of `target` into a fresh directory (trusting the repository's root
/// first, untimed) with metadata and targets under `url(…)`; checks the file has `size` bytes.
fn p1_agent_download(
    repo: &Repo,
    url: &dyn Fn(&str) -> String,
    target: &str,
    size: u64,
) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let (meta, out) = (dir.path().join("meta"), dir.path().join("out"));
    fs::create_dir_all(&meta).unwrap();
    fs::create_dir_all(&out).unwrap();
    let agent = env!("CARGO_BIN_EXE_mast-agent");
    run_ok(
        Command::new(agent)
            .args(["tuf", "--metadata-dir"])
            .arg(&meta)
            .arg("init")
            .arg(repo.root()),
    );
    let started = Instant::now();
    run_ok(
        Command::new(agent)
            .args(["tuf", "--metadata-dir"])
            .arg(&meta)
            .args(["--metadata-url", &url("metadata")])
            .args(["--target-name", target])
            .args(["--target-base-url", &url("targets")])
            .arg("--target-dir")
            .arg(&out)
            .arg("download"),
    );
    let took = started.elapsed();
    let fetched: u64 = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(
        fetched, size,
        "mast-agent tuf downloaded {fetched} of {size} bytes"
    );
    took
}

/// Times `curl -o FILE URL`, to /dev/null without a file.
fn p1_curl(url: &str, file: Option<&Path>) -> Duration {
    let started = Instant::now();
    run_ok(
        Command::new("curl")
            .args(["-sf", "-o"])
            .arg(file.unwrap_or(Path::new("/dev/null")))
            .arg(url),
    );
    started.elapsed()
}

fn p3_oci_vs_skopeo(runs: usize) {
    let repo = big_repo(20);
    repo.release();
    let registry = Registry::start();
    let to = format!("oci+http://127.0.0.1:{}/edge/mast", registry.port());
    repo.publish(&to);
    let skopeo = std::env::var("MAST_TEST_SKOPEO").unwrap_or_else(|_| "skopeo".to_owned());
    // A change window twelve hours away: the pass refreshes, fetches, verifies and durably stores the
    // release, then holds it (exit 3) — the fetch alone, which is what skopeo's copy is compared with.
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(12);
    let window = format!("daily {:02}:00-{:02}:30", later.hour(), later.hour());
    let (mut fetch, mut once, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let site = Site::new();
        let started = Instant::now();
        let out = site
            .agent(&repo, &[&to])
            .env("MAST_CHANGE_WINDOWS", &window)
            .arg("once")
            .output()
            .unwrap();
        fetch.push(started.elapsed());
        assert_eq!(out.status.code(), Some(3), "{}", support::text(&out));
        let site = Site::new();
        let started = Instant::now();
        let out = site.run(&repo, &[&to], &["once"]);
        once.push(started.elapsed());
        assert!(out.status.success(), "{}", support::text(&out));
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        run_ok(
            Command::new(&skopeo)
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!(
                    "docker://127.0.0.1:{}/edge/mast:prod-1",
                    registry.port()
                ))
                .arg(format!("dir:{}", dir.path().join("copy").display())),
        );
        theirs.push(started.elapsed());
    }
    let (fetch, once, theirs) = (median(fetch), median(once), median(theirs));
    println!(
        "P3  20 MB release from docker-registry: mast-agent once, fetch only (refresh + fetch + verify + durable store, apply held by a change window) {}, skopeo copy of its artifact {}: {:.2}x skopeo (goal <= 1.0x); with the apply to a directory (files fsync'd) {}: {:.2}x skopeo",
        ms(fetch),
        ms(theirs),
        fetch.as_secs_f64() / theirs.as_secs_f64(),
        ms(once),
        once.as_secs_f64() / theirs.as_secs_f64()
    );
}

fn p5_p6_delta_and_idle() {
    // About 20 MB of YAML, as 2,500 ConfigMaps of 8 KiB.
    let repo = Repo::new(2500);
    let first = repo.release();
    let server = NginxConfig::new(&repo.repo).read_only().start();
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", server.port()).parse().unwrap()).unwrap();
    let site = Site::new();
    let mirror = proxy.url("");
    let once = || {
        let out = site.run(&repo, &[&mirror], &["once"]);
        assert!(out.status.success(), "{}", support::text(&out));
    };
    let wire = || {
        let s = proxy.control().stats();
        s.bytes_downstream + s.bytes_upstream
    };
    once();
    let initial = wire();
    repo.edit(1234, 1);
    repo.release();
    // Published a while before the site polls, as in life: nginx's validators are then strong.
    repo.age_timestamp();
    let before = wire();
    once();
    let delta = wire() - before;
    println!(
        "P5  one-file change in a {:.1} MB bundle: {} bytes on the link, {:.2}% of the bundle (first install moved {} bytes; goal <= 2%)",
        first.tar_bytes as f64 / 1e6,
        delta,
        100.0 * delta as f64 / first.tar_bytes as f64,
        initial
    );
    let before = wire();
    once();
    let idle = wire() - before;
    println!("P6  idle poll: {idle} bytes on the link, both directions (goal <= 1024)");
}

fn idle_rss() {
    let repo = Repo::new(300);
    repo.release();
    let server = NginxConfig::new(&repo.repo).read_only().start();
    let site = Site::new();
    let port = free_port();
    let mut child = site
        .agent(&repo, &[&server.url("")])
        .env("MAST_LISTEN", format!("127.0.0.1:{port}"))
        .env("MAST_POLL_INTERVAL", "2s")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = mast_test_support::http::get(&format!("http://127.0.0.1:{port}/status"))
            .ok()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .is_some_and(|s| s["channels"]["prod"]["current_release"] == 1);
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon did not converge");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few idle polls after converging.
    std::thread::sleep(Duration::from_secs(7));
    let status = Path::new(&format!("/proc/{}/status", child.id())).to_path_buf();
    let [rss, anon, file] = ["VmRSS:", "RssAnon:", "RssFile:"].map(|field| kib(&status, field));
    let _ = child.kill();
    let _ = child.wait();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "RSS idle mast-agent run (release build, 300-object release applied, polling every 2 s): {:.1} MiB (goal <= 15 MiB); heap and stacks {:.1} MiB, mapped binary and libraries {:.1} MiB",
        mib(rss),
        mib(anon),
        mib(file)
    );
}

/// A `kB` field of `/proc/PID/status`.
fn kib(status: &Path, field: &str) -> u64 {
    fs::read_to_string(status)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
