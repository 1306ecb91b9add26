//! Packing and releasing a large tree against `tar czf` + `sha256sum` of the same tree, in one run.
//!
//! Generates 10,000 manifests (about 50 MB of YAML) in a temporary directory, then times, best of three
//! each:
//!
//! - `tar czf` + `sha256sum` (GNU tar and gzip: what a CI job without mast would do);
//! - `mast pack` then `mast release` of the packed tar (the library calls the binary makes): YAML
//!   checked twice, since `release` re-checks what it signs;
//! - `mast release` straight from the directory (checked once).
//!
//! and prints the wall times and ratios, and the CPU time each used (from `/proc/self/stat`, so the
//! figures stay comparable on a machine other jobs are loading). The goal is pack + release within 1.5×
//! of `tar czf` + `sha256sum`; nothing is asserted, since times depend on the machine.
//!
//! Run with `cargo bench -p mast-packager --bench pack_release` (`MAST_BENCH_FILES=N` for another size).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mast_packager::{init, keys, pack, release};
use time::OffsetDateTime;

const RUNS: usize = 3;

fn main() {
    // `cargo bench` passes `--bench`; test runners that list or run every target (nextest's `--list`,
    // `cargo test --all-targets`) do not, and must not start a benchmark of minutes.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let files: usize = std::env::var("MAST_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("manifests");
    let bytes = generate(&tree, files);
    println!(
        "tree: {files} files, {:.1} MB of YAML, {} cores",
        bytes as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let repo = make_repo(work.path());

    // Warm the page cache so the first timed run does not pay for the disk.
    baseline(&tree, work.path());

    let mut base = Vec::new();
    let mut two_step = Vec::new();
    let mut one_step = Vec::new();
    let (mut base_cpu, mut two_cpu, mut one_cpu) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for run in 0..RUNS {
        let cpu = Cpu::now();
        base.push(baseline(&tree, work.path()));
        base_cpu += Cpu::now().children - cpu.children;

        let bundle = work.path().join("bundle.tar");
        let cpu = Cpu::now();
        let started = Instant::now();
        pack::pack(&tree, &bundle).unwrap();
        let packed = started.elapsed();
        // Each run is a new release number, with the same content (as re-running CI would).
        release_once(&repo, &bundle, (2 * run + 1) as u64);
        two_step.push((started.elapsed(), packed));
        two_cpu += Cpu::now().own - cpu.own;

        let cpu = Cpu::now();
        let started = Instant::now();
        release_once(&repo, &tree, (2 * run + 2) as u64);
        one_step.push(started.elapsed());
        one_cpu += Cpu::now().own - cpu.own;
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap();
    let base_best = best(&base);
    let two_best = best(&two_step.iter().map(|(t, _)| *t).collect::<Vec<_>>());
    let pack_best = best(&two_step.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    let one_best = best(&one_step);
    let mut out = String::new();
    let secs = |d: Duration| d.as_secs_f64();
    let per_run = |d: Duration| secs(d) / RUNS as f64;
    writeln!(
        out,
        "wall, best of {RUNS}; CPU, mean per run (all threads):"
    )
    .unwrap();
    writeln!(
        out,
        "  tar czf + sha256sum          {:>7.3} s wall  {:>7.3} s CPU",
        secs(base_best),
        per_run(base_cpu)
    )
    .unwrap();
    writeln!(
        out,
        "  mast pack + mast release     {:>7.3} s wall  {:>7.3} s CPU  (pack {:.3} s wall)  ratio {:.2}x wall, {:.2}x CPU",
        secs(two_best),
        per_run(two_cpu),
        secs(pack_best),
        secs(two_best) / secs(base_best),
        secs(two_cpu) / secs(base_cpu)
    )
    .unwrap();
    writeln!(
        out,
        "  mast release DIR             {:>7.3} s wall  {:>7.3} s CPU                      ratio {:.2}x wall, {:.2}x CPU",
        secs(one_best),
        per_run(one_cpu),
        secs(one_best) / secs(base_best),
        secs(one_cpu) / secs(base_cpu)
    )
    .unwrap();
    writeln!(
        out,
        "all runs, wall (s): baseline {:?}, pack+release {:?}, release DIR {:?}",
        base.iter().map(|d| round(*d)).collect::<Vec<_>>(),
        two_step.iter().map(|(d, _)| round(*d)).collect::<Vec<_>>(),
        one_step.iter().map(|d| round(*d)).collect::<Vec<_>>()
    )
    .unwrap();
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        writeln!(out, "load average at the end: {}", load.trim()).unwrap();
    }
    print!("{out}");
}

/// CPU time used so far by this process (all threads) and by its waited-for children.
struct Cpu {
    own: Duration,
    children: Duration,
}

impl Cpu {
    fn now() -> Self {
        // Fields 14-17 of /proc/self/stat (utime, stime, cutime, cstime), counted after the command name,
        // which is in parentheses and may hold spaces. Linux reports them in USER_HZ, 100 per second.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<u64> = after
            .split(' ')
            .skip(11)
            .take(4)
            .map(|f| f.parse().unwrap())
            .collect();
        let ticks = |t: u64| Duration::from_millis(t * 10);
        Self {
            own: ticks(fields[0] + fields[1]),
            children: ticks(fields[2] + fields[3]),
        }
    }
}

fn round(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `tar czf` of the tree and `sha256sum` of the result, as one shell pipeline step each.
fn baseline(tree: &Path, work: &Path) -> Duration {
    let out = work.join("baseline.tar.gz");
    let started = Instant::now();
    let status = Command::new("tar")
        .arg("czf")
        .arg(&out)
        .arg("-C")
        .arg(tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let sum = Command::new("sha256sum").arg(&out).output().unwrap();
    assert!(sum.status.success());
    started.elapsed()
}

fn make_repo(work: &Path) -> std::path::PathBuf {
    let keys_dir = work.join("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let key = |name: &str| {
        let path = keys_dir.join(format!("{name}.pem"));
        keys::generate(&path).unwrap();
        path
    };
    let repo = work.join("repo");
    let args = init::InitArgs {
        dir: repo.clone(),
        root_keys: vec![key("root")],
        root_threshold: 1,
        targets_keys: vec![key("targets")],
        snapshot_keys: vec![key("snapshot")],
        timestamp_keys: vec![key("timestamp")],
        lifetimes: Vec::new(),
        remember_keys: true,
    };
    init::init(&args, OffsetDateTime::now_utc()).unwrap();
    repo
}

fn release_once(repo: &Path, bundle: &Path, number: u64) {
    let args = release::ReleaseArgs {
        repo: repo.to_path_buf(),
        bundle: bundle.to_path_buf(),
        channel: "prod".parse().unwrap(),
        release: Some(number),
        waves: None,
        min_agent_version: mast_protocol::release::AgentVersion::new(0, 1, 0),
        keys: Default::default(),
    };
    release::release(&args, OffsetDateTime::now_utc()).unwrap();
}

/// Writes `n` manifests of about 5 KB each (Deployments, Services and ConfigMaps in 50 namespaces, with
/// varied, realistic text so compression ratios are like real YAML's). Returns the bytes written.
fn generate(dir: &Path, n: usize) -> u64 {
    const WORDS: &[&str] = &[
        "edge", "site", "cell", "tower", "radio", "core", "proxy", "cache", "metrics", "agent",
        "queue", "region", "north", "south", "gateway", "sync", "config", "policy", "route",
        "link", "backup",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut total = 0;
    for i in 0..n {
        let ns = format!("ns-{:02}", i % 50);
        let name = format!(
            "{}-{}-{i}",
            WORDS[i % WORDS.len()],
            WORDS[(i / 7) % WORDS.len()]
        );
        let mut text = String::with_capacity(6000);
        match i % 3 {
            0 => {
                write!(
                    text,
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {name}\n    tier: {}\nspec:\n  replicas: {}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n",
                    WORDS[(next() % 21) as usize],
                    next() % 5 + 1
                )
                .unwrap();
                while text.len() < 4800 {
                    let c = WORDS[(next() % 21) as usize];
                    write!(
                        text,
                        "      - name: {c}-{:x}\n        image: registry.example.com/{c}/{}:{}.{}.{}\n        args: [\"--{c}={:x}\", \"--level={}\"]\n        env:\n        - name: {}_URL\n          value: https://{}.{ns}.svc:{}\n        resources:\n          limits: {{cpu: {}m, memory: {}Mi}}\n",
                        next() % 4096,
                        WORDS[(next() % 21) as usize],
                        next() % 4,
                        next() % 20,
                        next() % 100,
                        next(),
                        next() % 9,
                        c.to_uppercase(),
                        WORDS[(next() % 21) as usize],
                        8000 + next() % 1000,
                        100 * (next() % 20 + 1),
                        64 * (next() % 32 + 1)
                    )
                    .unwrap();
                }
            }
            1 => {
                write!(
                    text,
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  selector:\n    app: {name}\n  ports:\n"
                )
                .unwrap();
                while text.len() < 4800 {
                    writeln!(
                        text,
                        "  - name: {}-{:x}\n    port: {}\n    targetPort: {}\n    protocol: TCP",
                        WORDS[(next() % 21) as usize],
                        next() % 65536,
                        next() % 65536,
                        next() % 65536
                    )
                    .unwrap();
                }
            }
            _ => {
                write!(
                    text,
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata:\n"
                )
                .unwrap();
                while text.len() < 4800 {
                    let words: Vec<&str> = (0..8).map(|_| WORDS[(next() % 21) as usize]).collect();
                    writeln!(
                        text,
                        "  {}.{:x}: \"{} {:016x}\"",
                        words[0],
                        next() % 1_000_000,
                        words.join(" "),
                        next()
                    )
                    .unwrap();
                }
            }
        }
        let path = dir.join(&ns).join(format!("{name}.yaml"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        total += text.len() as u64;
    }
    total
}
