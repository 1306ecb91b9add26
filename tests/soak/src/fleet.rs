//! The simulated fleet: each site is the real agent code in this process — its own SQLite [`State`] file,
//! its own [`DirApplier`], its own mirrors and HTTP client, and [`run_pass`] on every poll — scheduled by
//! the agent's own [`PollPolicy`] on a compressed clock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mast_agent::apply::DirApplier;
use mast_agent::schedule::{ChangeWindows, PollOutcome, PollPolicy};
use mast_agent::state::State;
use mast_agent::sync::{PassOutcome, Site, run_pass};
use mast_mirror::{HttpMirror, Mirror, OciMirror};
use mast_protocol::release::{AgentVersion, seed_for};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::digest::{FileSet, file_set_of_dir};
use crate::origin::{Lie, Origin};

/// Every release published, by number: what a site that says it applied release N must hold.
pub(crate) type Catalog = Arc<Mutex<BTreeMap<u64, FileSet>>>;

/// How a site reaches its mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SiteKind {
    /// The nginx origin over HTTP.
    Http,
    /// The registry over the OCI distribution API.
    Oci,
    /// A lying HTTP mirror first, then the honest origin.
    LiarFirst(Lie),
}

/// What one site did, over the whole run.
#[derive(Debug, Clone, Default)]
pub(crate) struct SiteStats {
    /// Passes run.
    pub(crate) passes: u64,
    /// Passes that failed.
    pub(crate) failed: u64,
    /// Passes that noticed a fault: they failed, or skipped a mirror on the way.
    pub(crate) detected: u64,
    /// Passes whose mirror skip was a refused (stale, rolled back or tampered) mirror.
    pub(crate) lies_refused: u64,
    /// Content bytes fetched (the agent's own count).
    pub(crate) bytes: u64,
    /// Passes that applied a release.
    pub(crate) applies: u64,
    /// Applies after which the directory did not hold exactly the release's files.
    pub(crate) bad_applies: u64,
    /// Why the last bad apply was bad.
    pub(crate) bad_detail: Option<String>,
    /// The last pass error.
    pub(crate) last_error: Option<String>,
    /// How the last successful pass ended, and from which mirror.
    pub(crate) last_outcome: Option<String>,
}

/// One simulated site.
pub(crate) struct SimSite {
    pub(crate) index: usize,
    pub(crate) kind: SiteKind,
    dir: PathBuf,
    root: Arc<Vec<u8>>,
    mirrors: Vec<Mirror>,
    site: Site,
    applier: DirApplier,
    attempt: u32,
    rng: u64,
    /// The generation of the goal last reached, and how long after the goal was set.
    reached: Option<(u64, Duration)>,
    pub(crate) stats: SiteStats,
}

/// What the fleet must converge to: a release and its exact files.
#[derive(Debug)]
pub(crate) struct Goal {
    /// Counts goals, so a site knows whether it reached this one.
    pub(crate) generation: u64,
    /// The release.
    pub(crate) release: u64,
    /// Its files.
    pub(crate) files: FileSet,
    /// When the clock for time-to-converge started.
    pub(crate) start: Instant,
    /// Sites that reached it.
    pub(crate) converged: AtomicUsize,
}

/// The fleet's sites while they run, and the knobs the scenarios turn.
pub(crate) struct Running {
    tasks: Vec<JoinHandle<SimSite>>,
    stop: watch::Sender<bool>,
    goal: watch::Sender<Arc<Goal>>,
}

/// Settings shared by every site's loop.
#[derive(Clone)]
pub(crate) struct Loop {
    pub(crate) policy: PollPolicy,
    pub(crate) catalog: Catalog,
    /// At most this many passes run at once (file descriptors and nginx's connection limit).
    pub(crate) limiter: Arc<Semaphore>,
    /// Passes run fleet-wide, for CPU per poll.
    pub(crate) passes: Arc<AtomicU64>,
}

/// Where each site kind's mirrors are.
pub(crate) struct MirrorUrls {
    http: String,
    oci: Option<(String, String)>,
    stale: String,
    tampered: String,
    tls: rustls::ClientConfig,
}

impl MirrorUrls {
    /// The origin's mirrors.
    pub(crate) fn of(origin: &Origin) -> Result<Self> {
        Ok(Self {
            http: origin.http_url(),
            oci: origin.oci_spec(),
            stale: origin.liar_url(Lie::Stale),
            tampered: origin.liar_url(Lie::Tampered),
            tls: mast_mirror::tls::client_config(None)?,
        })
    }
}

impl SimSite {
    /// A new site `index` of `kind` under `base`, trusting `root` (version 1).
    pub(crate) fn new(
        index: usize,
        kind: SiteKind,
        base: &Path,
        root: Arc<Vec<u8>>,
        urls: &MirrorUrls,
        channel: &str,
    ) -> Result<Self> {
        let dir = base.join(format!("site-{index:05}"));
        std::fs::create_dir_all(&dir)?;
        let cluster_id = format!("soak-site-{index:05}");
        // One HTTP client per site, as each real agent has its own: its own connection pool.
        let client = site_client(urls.tls.clone())?;
        let http = |url: &str| Mirror::Http(HttpMirror::new(url, client.clone()));
        let mirrors = match kind {
            SiteKind::Http => vec![http(&urls.http)],
            SiteKind::Oci => {
                let (registry, repository) = urls.oci.as_ref().context("no registry runs")?;
                vec![Mirror::Oci(OciMirror::new(
                    client.clone(),
                    registry,
                    repository,
                    true,
                ))]
            }
            SiteKind::LiarFirst(Lie::Stale) => vec![http(&urls.stale), http(&urls.http)],
            SiteKind::LiarFirst(Lie::Tampered) => vec![http(&urls.tampered), http(&urls.http)],
        };
        let agent_version = AgentVersion::parse_release(mast_agent::AGENT_VERSION)
            .map_err(|e| anyhow::anyhow!("agent version: {e}"))?;
        Ok(Self {
            index,
            kind,
            dir,
            root,
            mirrors,
            site: Site {
                channel: channel.parse().context("channel")?,
                seed: seed_for(&cluster_id),
                windows: ChangeWindows::new(Vec::new()),
                agent_version,
            },
            applier: DirApplier::new(base.join(format!("site-{index:05}/applied"))),
            attempt: 0,
            rng: 0x5eed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            reached: None,
            stats: SiteStats::default(),
        })
    }

    /// The site's state database.
    pub(crate) fn state_path(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    /// The applied manifests.
    pub(crate) fn applied_dir(&self) -> PathBuf {
        self.dir.join("applied")
    }

    /// How long after the goal `generation` was set this site reached it.
    pub(crate) fn reached(&self, generation: u64) -> Option<Duration> {
        self.reached
            .filter(|(g, _)| *g == generation)
            .map(|(_, at)| at)
    }

    /// Runs one pass now, as the daemon would: open the state, seed the configured root, pass, close.
    /// Returns the delay before the next poll.
    async fn poll(&mut self, settings: &Loop, goal: &Goal) -> Duration {
        self.stats.passes += 1;
        settings.passes.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.pass(settings, goal).await {
            Ok(()) => {
                self.attempt = 0;
                PollOutcome::Success { max_age: None }
            }
            Err(e) => {
                self.stats.failed += 1;
                self.stats.detected += 1;
                self.stats.last_error = Some(format!("{e:#}"));
                self.attempt = self.attempt.saturating_add(1);
                PollOutcome::Failure {
                    attempt: self.attempt,
                    retry_after: None,
                }
            }
        };
        settings.policy.next_delay(outcome, self.unit())
    }

    async fn pass(&mut self, settings: &Loop, goal: &Goal) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let mut state = State::open(&self.state_path())?;
        state.trust_initial_root(&self.root, 1, now)?;
        // The simulated sites export no metrics; the pass still counts into a registry of its own.
        let metrics = mast_agent::telemetry::Metrics::new();
        let report = run_pass(
            &mut state,
            &self.mirrors,
            &self.site,
            &mut self.applier,
            now,
            &metrics,
        )
        .await?;
        drop(state);
        self.stats.bytes += report.bytes_fetched;
        self.stats.last_outcome = Some(format!(
            "{} (metadata from {})",
            mast_agent::cmd::describe(&report.outcome),
            report.mirror
        ));
        if !report.skipped.is_empty() {
            self.stats.detected += 1;
            if matches!(self.kind, SiteKind::LiarFirst(_)) {
                self.stats.lies_refused += 1;
            }
        }
        let release = match report.outcome {
            PassOutcome::Applied { release, .. } => {
                self.stats.applies += 1;
                self.check_applied(settings, release)?;
                Some(release)
            }
            PassOutcome::UpToDate { release } => Some(release),
            _ => None,
        };
        if release == Some(goal.release) && self.reached(goal.generation).is_none() {
            let held = file_set_of_dir(&self.applied_dir())?;
            if held == goal.files {
                self.reached = Some((goal.generation, goal.start.elapsed()));
                goal.converged.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The directory after an apply of `release` must hold exactly that release's files.
    fn check_applied(&mut self, settings: &Loop, release: u64) -> Result<()> {
        let held = file_set_of_dir(&self.applied_dir())?;
        let catalog = settings
            .catalog
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let bad = match catalog.get(&release) {
            Some(files) if *files == held => None,
            Some(files) => Some(format!(
                "release {release}: {} files applied, {} released, {} differ",
                held.len(),
                files.len(),
                held.iter()
                    .filter(|(p, s)| files.get(*p) != Some(s))
                    .count()
            )),
            None => Some(format!("release {release} was never published")),
        };
        if let Some(detail) = bad {
            self.stats.bad_applies += 1;
            self.stats.bad_detail = Some(detail);
        }
        Ok(())
    }

    /// A uniform draw in `[0, 1)` for the policy's jitter (SplitMix64, seeded per site).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Running {
    /// Starts every site's poll loop towards `goal`. Sites start spread over one interval, as a fleet
    /// that has been running does.
    pub(crate) fn start(sites: Vec<SimSite>, goal: Arc<Goal>, settings: &Loop) -> Self {
        let (stop, _) = watch::channel(false);
        let (goal_tx, _) = watch::channel(goal);
        let count = sites.len().max(1);
        let tasks = sites
            .into_iter()
            .enumerate()
            .map(|(i, mut site)| {
                let settings = settings.clone();
                let mut stop = stop.subscribe();
                let mut goal = goal_tx.subscribe();
                let first = settings.policy.interval().mul_f64(i as f64 / count as f64);
                tokio::spawn(async move {
                    let mut delay = first;
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            _ = stop.wait_for(|s| *s) => return site,
                        }
                        let Ok(_permit) = settings.limiter.acquire().await else {
                            return site;
                        };
                        let current = Arc::clone(&goal.borrow_and_update());
                        delay = site.poll(&settings, &current).await;
                    }
                })
            })
            .collect();
        Self {
            tasks,
            stop,
            goal: goal_tx,
        }
    }

    /// Moves the goal (a newer release published mid-phase).
    pub(crate) fn set_goal(&self, goal: Arc<Goal>) {
        self.goal.send_replace(goal);
    }

    /// The goal now.
    pub(crate) fn goal(&self) -> Arc<Goal> {
        Arc::clone(&self.goal.borrow())
    }

    /// Waits until `count` sites reached the current goal or `timeout` passes; returns whether they did.
    pub(crate) async fn wait_converged(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.goal().converged.load(Ordering::Relaxed) >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every loop (passes in flight finish) and gives the sites back.
    pub(crate) async fn stop(self) -> Result<Vec<SimSite>> {
        self.stop.send_replace(true);
        let mut sites = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            sites.push(task.await.context("a site's task panicked")?);
        }
        sites.sort_by_key(|s| s.index);
        Ok(sites)
    }
}

/// A site's HTTP client: the mirrors' own TLS configuration, a short idle timeout so that a compressed
/// poll interval does not keep every site's connection open between polls (a real site's interval is
/// minutes, far past any keep-alive), and a small pool.
fn site_client(tls: rustls::ClientConfig) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent("mast-soak")
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_millis(500))
        .pool_max_idle_per_host(2)
        .build()
        .context("building the sites' HTTP client")
}
