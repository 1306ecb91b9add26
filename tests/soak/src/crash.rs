//! Crash trials: the real `mast-agent` binary, killed with SIGKILL at a random instant of a download or an
//! apply, then restarted. After every kill the database passes `PRAGMA integrity_check` and every applied
//! file is a released version of that file; after every restart the site holds exactly the newest release.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mast_agent::state::State;
use mast_test_support::FaultProxy;
use mast_test_support::fault_proxy::Faults;

use crate::Options;
use crate::digest::{FileSet, file_set_of_dir};
use crate::origin::Origin;
use crate::report::CrashReport;

/// The crash site's channel, apart from the fleet's.
const CHANNEL: &str = "crash";

/// Manifests per crash release: every one changes each release, so each is a full download and apply.
const FILES: usize = 150;

/// The link to the crash site, slow enough that a kill lands inside a download or an apply.
const LINK_BYTES_PER_SECOND: u64 = 96 * 1024;

/// Runs `options.crash_trials` trials against `origin`.
pub(crate) async fn trials(origin: &mut Origin, options: &Options) -> Result<CrashReport> {
    let agent = agent_binary(options.agent_bin.as_deref())?;
    let proxy = FaultProxy::start(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        origin.nginx().port(),
    )))?;
    proxy
        .control()
        .set_faults(Faults::none().throttle(LINK_BYTES_PER_SECOND));
    let site = tempfile::Builder::new()
        .prefix("mast-soak-crash")
        .tempdir()?;
    fs::write(site.path().join("agent.toml"), "")?;
    let run = Run {
        agent,
        site: site.path().to_path_buf(),
        mirror: proxy.url(""),
        root: origin.initial_root(),
    };
    let mut report = CrashReport::default();
    let mut released: Vec<FileSet> = Vec::new();
    let mut rng = options.seed ^ 0xc2a5_4c4a_11ed;
    // How long an uninterrupted run took last; kills are drawn within it.
    let mut typical = Duration::from_millis(1500);
    for trial in 0..options.crash_trials {
        let revision = u32::try_from(trial)?;
        let published = origin.release_crash(CHANNEL, FILES, revision)?;
        report.releases = published.number;
        released.push(published.files.clone());
        let allowed = allowed_versions(&released);

        let delay = typical.mul_f64(unit(&mut rng) * 1.1);
        let mut child = run.command().spawn().context("starting mast-agent")?;
        tokio::time::sleep(delay).await;
        let finished = child.try_wait()?.is_some();
        if !finished {
            child.kill().context("SIGKILL")?;
            report.killed_mid_run += 1;
        }
        child.wait()?;
        report.trials += 1;

        // What a restart finds: an intact database and no file that was not released.
        let intact = State::open(&run.state())
            .and_then(|state| state.integrity_check())
            .map_err(|e| eprintln!("crash trial {trial}: {e}"))
            .is_ok();
        let held = file_set_of_dir(&run.applied())?;
        let foreign = held
            .iter()
            .filter(|(path, sha)| !allowed.get(*path).is_some_and(|set| set.contains(*sha)))
            .count();
        if foreign > 0 {
            eprintln!("crash trial {trial}: {foreign} applied files are no released version");
            report.unverified_files += foreign;
        }

        // The restart: it must finish the release the kill interrupted.
        let started = Instant::now();
        let out = run.command().output().context("restarting mast-agent")?;
        typical = started.elapsed().max(Duration::from_millis(200));
        let held = file_set_of_dir(&run.applied())?;
        let exact = held == published.files;
        if !exact && out.status.success() {
            report.bad_applies += 1;
        }
        if intact && foreign == 0 && exact && out.status.success() {
            report.recovered += 1;
        } else {
            eprintln!(
                "crash trial {trial}: not recovered (integrity {intact}, exact {exact}): exit {:?}\n{}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(report)
}

/// One crash site's `mast-agent once`.
struct Run {
    agent: PathBuf,
    site: PathBuf,
    mirror: String,
    root: PathBuf,
}

impl Run {
    fn state(&self) -> PathBuf {
        self.site.join("state/state.db")
    }

    fn applied(&self) -> PathBuf {
        self.site.join("applied")
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.agent);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("MAST_") {
                command.env_remove(name);
            }
        }
        command
            .arg("once")
            .env("MAST_CONFIG", self.site.join("agent.toml"))
            .env("MAST_CLUSTER_ID", "soak-crash-site")
            .env("MAST_CHANNEL", CHANNEL)
            .env("MAST_ROOT", &self.root)
            .env("MAST_STATE", self.state())
            .env("MAST_APPLIER", format!("dir:{}", self.applied().display()))
            .env("MAST_MIRRORS", &self.mirror)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

/// Every released version of every path.
fn allowed_versions(released: &[FileSet]) -> BTreeMap<String, BTreeSet<[u8; 32]>> {
    let mut allowed: BTreeMap<String, BTreeSet<[u8; 32]>> = BTreeMap::new();
    for set in released {
        for (path, sha) in set {
            allowed.entry(path.clone()).or_default().insert(*sha);
        }
    }
    allowed
}

/// The `mast-agent` binary: `--agent-bin`, else the one cargo built next to this program (or next to
/// the test binary's `deps/` directory).
pub(crate) fn agent_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--agent-bin {}: no such file", path.display());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join("mast-agent");
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    bail!(
        "the crash trials run the real mast-agent binary, and none was found next to {}; build it first \
         with `cargo build -p mast-agent` (add --release for a release-built soak) or pass --agent-bin PATH",
        exe.display()
    )
}

/// A uniform draw in `[0, 1)` (SplitMix64).
fn unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
