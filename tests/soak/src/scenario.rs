//! The scenarios: each publishes a release, does something bad to the fleet's links or mirrors, and runs
//! the fleet until every site holds the release byte for byte (or the scenario's time runs out).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mast_agent::schedule::{Jitter, PollPolicy};
use mast_agent::state::State;
use mast_test_support::fault_proxy::{Close, FaultTemplate, RandomFaults};
use mast_test_support::{FaultControl, LoggedRequest};
use tokio::sync::Semaphore;

use crate::digest::{file_set_of_dir, set_digest};
use crate::fleet::{Goal, Loop, MirrorUrls, Running, SimSite, SiteKind};
use crate::measure::RateSampler;
use crate::origin::{Lie, Origin};
use crate::report::{Percentiles, Report, ScenarioReport};
use crate::{Options, Scenario};

/// The fleet between scenarios, with its origin and what was measured so far.
pub(crate) struct Harness {
    options: Options,
    origin: Origin,
    sites: Vec<SimSite>,
    settings: Loop,
    generation: u64,
    /// The goal of the last scenario, which every site must hold at the end.
    last: Option<Arc<Goal>>,
    /// Every site's time to converge, over all scenarios.
    times: Vec<Duration>,
    report: Report,
    _work: tempfile::TempDir,
}

impl Harness {
    /// Starts the servers and makes the sites.
    pub(crate) fn new(options: Options) -> Result<Self> {
        let origin = Origin::new("prod", options.files, options.oci_share > 0.0)?;
        let work = match &options.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                tempfile::Builder::new()
                    .prefix("mast-soak")
                    .tempdir_in(dir)?
            }
            None => tempfile::Builder::new().prefix("mast-soak").tempdir()?,
        };
        let root = Arc::new(std::fs::read(origin.initial_root())?);
        let urls = MirrorUrls::of(&origin)?;
        let share = |fraction: f64| (options.sites as f64 * fraction).round() as usize;
        let (oci, liars) = (share(options.oci_share), share(options.liar_share));
        let mut sites = Vec::with_capacity(options.sites);
        for index in 0..options.sites {
            // Spread each kind evenly over the index range, so it is in every part of the start-up spread.
            let kind = if spread(index, oci, options.sites) {
                SiteKind::Oci
            } else if spread((index + 5) % options.sites, liars, options.sites) {
                // Every other liar-first site gets the other lie.
                if ((index + 5) % options.sites * liars / options.sites).is_multiple_of(2) {
                    SiteKind::LiarFirst(Lie::Stale)
                } else {
                    SiteKind::LiarFirst(Lie::Tampered)
                }
            } else {
                SiteKind::Http
            };
            sites.push(SimSite::new(
                index,
                kind,
                work.path(),
                Arc::clone(&root),
                &urls,
                origin.channel(),
            )?);
        }
        let interval = options.interval();
        let policy = PollPolicy::new(
            interval,
            Jitter::new(0.5)?,
            Duration::from_secs(1),
            interval.saturating_mul(4).max(Duration::from_secs(8)),
        )?;
        let settings = Loop {
            policy,
            catalog: Arc::new(Mutex::new(Default::default())),
            limiter: Arc::new(Semaphore::new(options.concurrency)),
            passes: Arc::new(AtomicU64::new(0)),
        };
        let report = Report {
            sites: options.sites,
            oci_sites: sites.iter().filter(|s| s.kind == SiteKind::Oci).count(),
            liar_sites: sites
                .iter()
                .filter(|s| matches!(s.kind, SiteKind::LiarFirst(_)))
                .count(),
            ..Report::default()
        };
        Ok(Self {
            options,
            origin,
            sites,
            settings,
            generation: 0,
            last: None,
            times: Vec::new(),
            report,
            _work: work,
        })
    }

    /// Runs the scenarios asked for, then the final checks; returns the report.
    pub(crate) async fn run(mut self) -> Result<Report> {
        let started = Instant::now();
        let cpu_start = crate::measure::cpu_seconds();
        let scenarios = self.options.scenarios.clone();
        let fleet: Vec<Scenario> = scenarios
            .iter()
            .copied()
            .filter(|s| *s != Scenario::Crash)
            .collect();
        for scenario in &fleet {
            let report = match scenario {
                Scenario::Rollout => self.rollout().await?,
                Scenario::Outage => self.outage().await?,
                Scenario::LyingMirror => self.lying_mirror().await?,
                Scenario::KeyRotation => self.key_rotation().await?,
                Scenario::Crash | Scenario::All => continue,
            };
            eprintln!(
                "mast-soak: {} done: {}/{} converged in {:.1} s",
                report.name, report.converged, report.sites, report.seconds
            );
            self.report.scenarios.push(report);
        }
        if !fleet.is_empty() {
            self.final_checks()?;
        }
        let polls = self.settings.passes.load(Ordering::Relaxed);
        let cpu = crate::measure::cpu_seconds() - cpu_start;
        let (rss, peak) = crate::measure::rss_bytes();
        let sites = self.options.sites.max(1) as u64;
        let stats: Vec<_> = self.proxies().iter().map(FaultControl::stats).collect();
        let r = &mut self.report;
        r.polls = polls;
        r.cpu_seconds = cpu;
        r.cpu_seconds_per_poll = if polls > 0 { cpu / polls as f64 } else { 0.0 };
        r.rss_bytes_per_site = rss / sites;
        r.peak_rss_bytes_per_site = peak / sites;
        r.time_to_converge_s = Percentiles::of(&self.times);
        r.faults_injected = crate::report::Faults {
            reset: stats.iter().map(|s| s.reset).sum(),
            truncated: stats.iter().map(|s| s.truncated).sum(),
            stalled: stats.iter().map(|s| s.stalled).sum(),
            throttled: stats.iter().map(|s| s.throttled).sum(),
            corrupted: stats.iter().map(|s| s.corrupted).sum(),
            refused: stats.iter().map(|s| s.refused).sum(),
            total: stats.iter().map(|s| s.faults_total()).sum(),
        };
        r.wire_bytes_per_site =
            stats.iter().map(|s| s.bytes_downstream).sum::<u64>() as f64 / sites as f64;
        r.content_bytes_per_site =
            self.sites.iter().map(|s| s.stats.bytes).sum::<u64>() as f64 / sites as f64;
        r.faults_detected = self.sites.iter().map(|s| s.stats.detected).sum();
        r.origin_requests_per_s_peak = r
            .scenarios
            .iter()
            .map(|s| s.origin_requests_per_s_peak)
            .max()
            .unwrap_or(0);
        r.origin_connections_per_s_peak = r
            .scenarios
            .iter()
            .map(|s| s.origin_connections_per_s_peak)
            .max()
            .unwrap_or(0);
        if scenarios.contains(&Scenario::Crash) {
            let crash = crate::crash::trials(&mut self.origin, &self.options).await?;
            if crash.recovered < crash.trials {
                r.failures.push(format!(
                    "crash trials: {} of {} recovered",
                    crash.recovered, crash.trials
                ));
            }
            if crash.unverified_files > 0 || crash.bad_applies > 0 {
                r.failures.push(format!(
                    "crash trials: {} unverified files, {} bad applies",
                    crash.unverified_files, crash.bad_applies
                ));
            }
            r.crash = Some(crash);
        }
        r.wall_seconds = started.elapsed().as_secs_f64();
        r.ok = r.failures.is_empty();
        Ok(self.report)
    }

    /// Scenario 1: a rollout with a share of connections faulted.
    async fn rollout(&mut self) -> Result<ScenarioReport> {
        let rate = self.options.fault_rate;
        self.set_faults(Some(rate));
        let phase = Phase::begin(self, "rollout");
        let goal = self.publish().await?;
        let running = Running::start(std::mem::take(&mut self.sites), goal, &self.settings);
        let done = running
            .wait_converged(self.options.sites, self.options.timeout())
            .await;
        self.sites = running.stop().await?;
        self.set_faults(None);
        let mut report = phase.end(self, done);
        report.notes.push(format!(
            "{:.0}% of connections faulted (reset, truncate, stall, throttle, corrupt, refuse)",
            rate * 100.0
        ));
        self.expect_detected(&report);
        Ok(report)
    }

    /// Scenario 2: every origin unreachable for a while, a release published meanwhile, then recovery.
    async fn outage(&mut self) -> Result<ScenarioReport> {
        let proxies = self.proxies();
        let phase = Phase::begin(self, "outage");
        let passes_before = self.settings.passes.load(Ordering::Relaxed);
        for proxy in &proxies {
            proxy.stop_listening();
        }
        let goal = self.publish().await?;
        let running = Running::start(std::mem::take(&mut self.sites), goal, &self.settings);
        tokio::time::sleep(self.options.outage).await;
        let down_passes = self.settings.passes.load(Ordering::Relaxed) - passes_before;
        for proxy in &proxies {
            proxy.resume_listening();
        }
        // Time to converge counts from the link coming back.
        progress(&phase, "origins listening again");
        let back = Arc::new(self.goal_for(&running.goal(), Instant::now()));
        running.set_goal(Arc::clone(&back));
        self.last = Some(back);
        let recovered_at = phase.started.elapsed().as_secs() as usize;
        let done = running
            .wait_converged(self.options.sites, self.options.timeout())
            .await;
        self.sites = running.stop().await?;
        let buckets = phase.sampler_snapshot();
        let mut report = phase.end(self, done);
        let during: u64 = buckets.iter().take(recovered_at).map(|(_, c)| *c).sum();
        let after_peak = buckets
            .iter()
            .skip(recovered_at)
            .map(|(r, _)| *r)
            .max()
            .unwrap_or(0);
        let steady = self.options.sites as f64 / self.settings.policy.interval().as_secs_f64();
        report.notes.push(format!(
            "origin down {:.0} s ({} passes failed meanwhile, {during} connections reached the proxies); \
             peak after recovery {after_peak} req/s against a steady idle rate of about {:.0} polls/s",
            self.options.outage.as_secs_f64(),
            down_passes,
            steady
        ));
        Ok(report)
    }

    /// Scenario 3: some sites list a lying mirror first — stale metadata for half of them, tampered
    /// chunks for the other half — and an honest one second.
    async fn lying_mirror(&mut self) -> Result<ScenarioReport> {
        self.ensure_baseline().await?;
        let phase = Phase::begin(self, "lying-mirror");
        let liar_log_start = self.origin.liar_nginx().requests().len();
        let lies_before: u64 = self.sites.iter().map(|s| s.stats.lies_refused).sum();
        let goal = self.publish().await?;
        self.origin.start_lying()?;
        let running = Running::start(std::mem::take(&mut self.sites), goal, &self.settings);
        let done = running
            .wait_converged(self.options.sites, self.options.timeout())
            .await;
        self.sites = running.stop().await?;
        self.origin.stop_lying()?;
        let served: Vec<LoggedRequest> = self
            .origin
            .liar_nginx()
            .requests()
            .into_iter()
            .skip(liar_log_start)
            .collect();
        let tampered = served
            .iter()
            .filter(|r| r.uri.starts_with("/tampered/chunks/") && r.status == 200)
            .count();
        let stale = served
            .iter()
            .filter(|r| r.uri.starts_with("/stale/") && r.uri.ends_with("timestamp.json"))
            .count();
        let refused = self.sites.iter().map(|s| s.stats.lies_refused).sum::<u64>() - lies_before;
        let mut report = phase.end(self, done);
        report.faults_injected += (tampered + stale) as u64;
        report.notes.push(format!(
            "lying mirror served {stale} stale timestamps and {tampered} tampered chunks; {refused} passes \
             refused its metadata and went on to the honest mirror; every tampered chunk was refused by its \
             signed sha256 (no site stored or applied one)"
        ));
        if self.report.liar_sites > 0 && refused == 0 {
            self.report
                .failures
                .push("lying-mirror: no site refused the stale mirror".to_owned());
        }
        Ok(report)
    }

    /// Scenario 4: the root key rotated in the middle of a rollout; the next release is signed under the
    /// new root.
    async fn key_rotation(&mut self) -> Result<ScenarioReport> {
        let rate = self.options.fault_rate / 2.0;
        self.set_faults(Some(rate));
        let phase = Phase::begin(self, "key-rotation");
        let goal = self.publish().await?;
        let running = Running::start(std::mem::take(&mut self.sites), goal, &self.settings);
        let part = (self.options.sites * 2 / 5).max(1);
        running
            .wait_converged(part, self.options.timeout() / 2)
            .await;
        let midway = running.goal().converged.load(Ordering::Relaxed);
        progress(
            &phase,
            &format!("{midway} sites have the release; rotating the root key"),
        );
        let root = self.origin.rotate_root().await?;
        progress(&phase, &format!("root version {root} published"));
        let next = self.publish().await?;
        progress(
            &phase,
            &format!("release {} published under root {root}", next.release),
        );
        running.set_goal(Arc::clone(&next));
        let done = running
            .wait_converged(self.options.sites, self.options.timeout())
            .await;
        self.sites = running.stop().await?;
        self.set_faults(None);
        let mut behind = 0;
        for site in &self.sites {
            let state = State::open(&site.state_path())?;
            if state.highest_version("root")? != Some(root) {
                behind += 1;
            }
        }
        let mut report = phase.end(self, done);
        report.notes.push(format!(
            "root rotated to version {root} (old and new root key signed it) when {midway} sites had the \
             previous release; {} sites trust root {root} at the end",
            self.options.sites - behind
        ));
        if behind > 0 {
            self.report.failures.push(format!(
                "key-rotation: {behind} sites do not trust root version {root}"
            ));
        }
        self.expect_detected(&report);
        Ok(report)
    }

    /// A clean rollout first, when the fleet holds nothing yet: the stale mirror must be older than what
    /// the sites trust to be a lie they can tell.
    async fn ensure_baseline(&mut self) -> Result<()> {
        if self.last.is_some() {
            return Ok(());
        }
        let phase = Phase::begin(self, "baseline");
        let goal = self.publish().await?;
        let running = Running::start(std::mem::take(&mut self.sites), goal, &self.settings);
        let done = running
            .wait_converged(self.options.sites, self.options.timeout())
            .await;
        self.sites = running.stop().await?;
        let report = phase.end(self, done);
        self.report.scenarios.push(report);
        Ok(())
    }

    /// Publishes the fleet channel's next release and makes it the goal.
    async fn publish(&mut self) -> Result<Arc<Goal>> {
        let next = self.origin.releases.keys().last().map_or(1, |n| n + 1);
        let files = self.origin.next_files(self.options.changed)?;
        self.settings
            .catalog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(next, files);
        let published = self.origin.release().await?;
        anyhow::ensure!(
            published.number == next,
            "released {} where {next} was expected",
            published.number
        );
        self.generation += 1;
        let goal = Arc::new(Goal {
            generation: self.generation,
            release: published.number,
            files: published.files,
            start: published.at,
            converged: AtomicUsize::new(0),
        });
        self.last = Some(Arc::clone(&goal));
        Ok(goal)
    }

    /// The same release as `goal`, with its clock restarted at `start`.
    fn goal_for(&mut self, goal: &Goal, start: Instant) -> Goal {
        self.generation += 1;
        Goal {
            generation: self.generation,
            release: goal.release,
            files: goal.files.clone(),
            start,
            converged: AtomicUsize::new(0),
        }
    }

    fn set_faults(&self, rate: Option<f64>) {
        for (i, proxy) in [
            Some(&self.origin.http_proxy),
            self.origin.oci_proxy.as_ref(),
        ]
        .into_iter()
        .flatten()
        .enumerate()
        {
            match rate {
                Some(rate) => proxy.control().set_random(fault_mix(
                    self.options
                        .seed
                        .wrapping_add(i as u64 * 7919 + self.generation),
                    rate,
                )),
                None => proxy.control().pass_through(),
            }
        }
    }

    fn proxies(&self) -> Vec<FaultControl> {
        [
            Some(&self.origin.http_proxy),
            self.origin.oci_proxy.as_ref(),
            Some(&self.origin.liar_proxy),
        ]
        .into_iter()
        .flatten()
        .map(|p| p.control().clone())
        .collect()
    }

    fn expect_detected(&mut self, report: &ScenarioReport) {
        if report.faults_injected > 0 && report.faults_detected == 0 {
            self.report.failures.push(format!(
                "{}: {} faults injected, none detected",
                report.name, report.faults_injected
            ));
        }
    }

    /// Every site's database passes `PRAGMA integrity_check`, and its applied files are exactly the last
    /// release's.
    fn final_checks(&mut self) -> Result<()> {
        let Some(goal) = self.last.clone() else {
            return Ok(());
        };
        let want = set_digest(&goal.files);
        let mut converged = 0;
        for site in &self.sites {
            let state = State::open(&site.state_path()).context("opening a site's state")?;
            if let Err(e) = state.integrity_check() {
                self.report.integrity_failures += 1;
                self.report
                    .failures
                    .push(format!("site {}: integrity check: {e}", site.index));
            }
            let held = file_set_of_dir(&site.applied_dir())?;
            if set_digest(&held) == want {
                converged += 1;
            } else if self.report.failures.len() < 20 {
                self.report.failures.push(format!(
                    "site {} ({:?}) does not hold release {}: {} files; {} passes; last outcome: {}; \
                     last error: {}",
                    site.index,
                    site.kind,
                    goal.release,
                    held.len(),
                    site.stats.passes,
                    site.stats.last_outcome.as_deref().unwrap_or("none"),
                    site.stats.last_error.as_deref().unwrap_or("none")
                ));
            }
            if site.stats.bad_applies > 0 {
                self.report.bad_applies += site.stats.bad_applies;
                self.report.failures.push(format!(
                    "site {}: {} bad applies: {}",
                    site.index,
                    site.stats.bad_applies,
                    site.stats.bad_detail.as_deref().unwrap_or("")
                ));
            }
        }
        self.report.converged = converged;
        if converged < self.options.sites {
            self.report.failures.push(format!(
                "{converged} of {} sites converged",
                self.options.sites
            ));
        }
        Ok(())
    }
}

/// What a scenario measures from its start to its end.
struct Phase {
    name: &'static str,
    started: Instant,
    sampler: RateSampler,
    faults: u64,
    detected: u64,
}

impl Phase {
    fn begin(harness: &Harness, name: &'static str) -> Self {
        let proxies = harness.proxies();
        let faults = proxies.iter().map(|p| p.stats().faults_total()).sum();
        Self {
            name,
            started: Instant::now(),
            sampler: RateSampler::start(harness.origin.nginx().access_log(), proxies),
            faults,
            detected: harness.sites.iter().map(|s| s.stats.detected).sum(),
        }
    }

    fn sampler_snapshot(&self) -> Vec<(u64, u64)> {
        self.sampler.snapshot()
    }

    fn end(self, harness: &mut Harness, done: bool) -> ScenarioReport {
        let seconds = self.started.elapsed().as_secs_f64();
        let buckets = self.sampler.finish();
        let goal = harness.last.clone();
        let mut times = Vec::new();
        let mut converged = 0;
        if let Some(goal) = &goal {
            for site in &harness.sites {
                if let Some(at) = site.reached(goal.generation) {
                    times.push(at);
                    converged += 1;
                }
            }
        }
        harness.times.extend(&times);
        let faults: u64 = harness
            .proxies()
            .iter()
            .map(|p| p.stats().faults_total())
            .sum();
        let detected: u64 = harness.sites.iter().map(|s| s.stats.detected).sum();
        if !done {
            harness.report.failures.push(format!(
                "{}: {converged} of {} sites converged within {:.0} s",
                self.name,
                harness.options.sites,
                harness.options.timeout().as_secs_f64()
            ));
        }
        ScenarioReport {
            name: self.name.to_owned(),
            release: goal.map_or(0, |g| g.release),
            converged,
            sites: harness.options.sites,
            time_to_converge_s: Percentiles::of(&times),
            seconds,
            origin_requests_per_s_peak: buckets.iter().map(|b| b.0).max().unwrap_or(0),
            origin_connections_per_s_peak: buckets.iter().map(|b| b.1).max().unwrap_or(0),
            faults_injected: faults - self.faults,
            faults_detected: detected - self.detected,
            notes: Vec::new(),
        }
    }
}

/// Whether `index` is one of `count` indexes spread evenly over `0..total`.
fn spread(index: usize, count: usize, total: usize) -> bool {
    let total = total.max(1);
    (index * count) / total != ((index + 1) * count) / total
}

/// A line on stderr with the scenario's clock, for a long run's log.
fn progress(phase: &Phase, message: &str) {
    eprintln!(
        "mast-soak: [{} {:>6.1} s] {message}",
        phase.name,
        phase.started.elapsed().as_secs_f64()
    );
}

/// The fault mix of the rollout: resets, truncations, stalls and throttling mostly, a few corrupted
/// bytes and refused connections.
fn fault_mix(seed: u64, rate: f64) -> RandomFaults {
    RandomFaults::new(seed, rate)
        .with(3, FaultTemplate::Reset { after: 0..=6000 })
        .with(3, FaultTemplate::Truncate { after: 100..=6000 })
        .with(
            2,
            FaultTemplate::Stall {
                after: 0..=2000,
                duration: Duration::from_secs(2),
            },
        )
        .with(
            2,
            FaultTemplate::Throttle {
                bytes_per_second: 32 * 1024,
            },
        )
        .with(1, FaultTemplate::Corrupt { offset: 200..=4000 })
        .with(1, FaultTemplate::Refuse(Close::Reset))
}
