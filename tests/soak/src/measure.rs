//! Process figures (CPU time, RSS) and the origin's request rate.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use mast_test_support::FaultControl;

/// User plus system CPU seconds of this process, all threads: what `getrusage(RUSAGE_SELF)` reports,
/// read from `/proc/self/stat` (fields 14 and 15, in clock ticks of 1/100 s on Linux) so that no
/// `unsafe` FFI is needed.
pub(crate) fn cpu_seconds() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field n is at n - 3.
    let ticks = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    match (ticks(14), ticks(15)) {
        (Some(user), Some(system)) => (user + system) as f64 / 100.0,
        _ => 0.0,
    }
}

/// `VmRSS` and `VmHWM` of this process in bytes, from `/proc/self/status`.
pub(crate) fn rss_bytes() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Counts requests per second at the origin while it runs: new lines of nginx's access log (one line per
/// request, written as each finishes) and new connections accepted by the fault proxies in front of the
/// origins, sampled every 100 ms into one-second buckets.
pub(crate) struct RateSampler {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    buckets: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl RateSampler {
    /// Starts sampling `access_log` and `proxies`.
    pub(crate) fn start(access_log: PathBuf, proxies: Vec<FaultControl>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let buckets = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, buckets) = (Arc::clone(&stop), Arc::clone(&buckets));
            thread::spawn(move || sample(&access_log, &proxies, &stop, &buckets))
        };
        Self {
            stop,
            thread: Some(thread),
            buckets,
        }
    }

    /// The buckets so far.
    pub(crate) fn snapshot(&self) -> Vec<(u64, u64)> {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops and returns `(requests, connections)` per second, one entry a second.
    pub(crate) fn finish(mut self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.buckets.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for RateSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sample(
    log: &std::path::Path,
    proxies: &[FaultControl],
    stop: &AtomicBool,
    buckets: &Mutex<Vec<(u64, u64)>>,
) {
    let start = Instant::now();
    let mut offset = fs::metadata(log).map_or(0, |m| m.len());
    let accepted = || proxies.iter().map(|p| p.stats().accepted).sum::<u64>();
    let mut last_accepted = accepted();
    let mut buffer = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(100));
        buffer.clear();
        let lines = fs::File::open(log)
            .and_then(|mut file| {
                file.seek(SeekFrom::Start(offset))?;
                file.read_to_end(&mut buffer)
            })
            .map_or(0, |_| {
                // Count only complete lines; a half-written one is counted next time.
                let complete = buffer
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |at| at + 1);
                offset += complete as u64;
                buffer[..complete].iter().filter(|b| **b == b'\n').count() as u64
            });
        let now_accepted = accepted();
        let connections = now_accepted.saturating_sub(last_accepted);
        last_accepted = now_accepted;
        let second = start.elapsed().as_secs() as usize;
        let mut buckets = buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() <= second {
            buckets.resize(second + 1, (0, 0));
        }
        buckets[second].0 += lines;
        buckets[second].1 += connections;
    }
}
