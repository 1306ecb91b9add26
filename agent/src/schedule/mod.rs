//! When to poll next and when a release may be applied, as pure functions of policy, outcome, time and a
//! random number.
//!
//! Nothing here sleeps, reads a clock or draws randomness: the sync loop passes `now` and a value in
//! `[0, 1)` in, and gets a delay or an instant out, the way kube-runtime's `Action::requeue` leaves the
//! timer to the runtime. That keeps every rule testable without a clock, and property-testable.
//!
//! - [`PollPolicy::next_delay`]: interval with jitter after a success, exponential backoff with a cap and
//!   jitter after a failure, `Retry-After` and `Cache-Control: max-age` honoured within the cap.
//! - [`ChangeWindows`]: weekly maintenance windows (`"Mon-Fri 22:00-02:00 +02:00"`); download any time,
//!   apply only inside one.
//! - [`ApplyGate::decide`]: a release's rollout wave and the windows together.
//! - [`MirrorPenalties`]: mirrors that failed are tried last for a backoff period.

mod http;
mod penalties;
mod windows;

use std::time::Duration;

use mast_protocol::release::WaveDecision;
use time::OffsetDateTime;

pub use self::http::{parse_max_age, parse_retry_after};
pub use self::penalties::MirrorPenalties;
pub use self::windows::{ChangeWindow, ChangeWindows, DaySet};

/// No delay is ever shorter than this, so a degenerate policy or outcome cannot make a busy loop.
pub const MIN_DELAY: Duration = Duration::from_secs(1);

/// The longest interval, backoff or cap a policy accepts: a month. Longer values are surely typos, and the
/// bound keeps every sum of an instant and a delay far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a schedule setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A jitter fraction outside `0..=1` (or not a number).
    #[error("jitter {0} is not a fraction from 0 to 1")]
    Jitter(String),
    /// A duration outside what the policy accepts.
    #[error("{what} must be between 1s and 30 days, not {value:?}")]
    DurationRange {
        /// Which duration.
        what: &'static str,
        /// The value given.
        value: Duration,
    },
    /// The backoff would start above its own cap.
    #[error("backoff base {base:?} is above the backoff cap {cap:?}")]
    BaseAboveCap {
        /// The first retry delay.
        base: Duration,
        /// The cap.
        cap: Duration,
    },
    /// A change window that does not parse.
    #[error("change window {window:?}: {reason}")]
    Window {
        /// The window as written.
        window: String,
        /// What is wrong.
        reason: String,
    },
}

/// A jitter fraction in `0..=1`: how much of a delay may be taken off at random.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Jitter(f64);

/// How often to poll and how to back off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollPolicy {
    interval: Duration,
    jitter: Jitter,
    backoff_base: Duration,
    backoff_cap: Duration,
}

/// What the last poll came to, as far as scheduling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// The poll completed. `max_age` is the `Cache-Control: max-age` of `timestamp.json`, if any.
    Success {
        /// How long the mirror says its answer stays fresh.
        max_age: Option<Duration>,
    },
    /// The poll failed for a reason expected to pass (link down, 5xx, 429, a mirror that lied).
    Failure {
        /// Consecutive failures so far, this one included (1 for the first).
        attempt: u32,
        /// The mirror's `Retry-After`, already turned into a delay ([`parse_retry_after`]).
        retry_after: Option<Duration>,
    },
}

/// Whether a fetched release may be applied now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyGate {
    /// Its wave has started and a change window is open.
    ApplyNow,
    /// Wait until this instant: the start of the site's wave, or the next change window, whichever is later
    /// (and the first window opening at or after the wave's start).
    WaitUntil(OffsetDateTime),
    /// The release's waves do not include this site.
    NotInRollout,
}

impl Jitter {
    /// No jitter.
    pub const NONE: Self = Self(0.0);

    /// A fraction in `0..=1`.
    pub fn new(fraction: f64) -> Result<Self, ScheduleError> {
        if (0.0..=1.0).contains(&fraction) {
            Ok(Self(fraction))
        } else {
            Err(ScheduleError::Jitter(fraction.to_string()))
        }
    }

    /// The fraction.
    pub fn get(self) -> f64 {
        self.0
    }

    /// `delay` less a random share of up to the fraction of it: uniform in `((1 - j)·delay, delay]` for
    /// `unit` uniform in `[0, 1)`. With `j = 1` this is AWS's "full jitter". Taking off rather than adding
    /// keeps the configured delay an upper bound, which is what an operator reads an interval as.
    pub fn apply(self, delay: Duration, unit: f64) -> Duration {
        // NaN or out-of-range randomness is the caller's bug; clamping keeps the result within bounds.
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        delay.mul_f64(1.0 - self.0 * unit)
    }
}

impl Default for Jitter {
    /// 0.2: sites that started together drift apart within a few polls without stretching the interval much.
    fn default() -> Self {
        Self(0.2)
    }
}

impl PollPolicy {
    /// A policy. Every duration must be within `1s..=30 days`, and the backoff base at most its cap.
    pub fn new(
        interval: Duration,
        jitter: Jitter,
        backoff_base: Duration,
        backoff_cap: Duration,
    ) -> Result<Self, ScheduleError> {
        for (what, value) in [
            ("poll interval", interval),
            ("backoff base", backoff_base),
            ("backoff cap", backoff_cap),
        ] {
            if !(MIN_DELAY..=MAX_DELAY).contains(&value) {
                return Err(ScheduleError::DurationRange { what, value });
            }
        }
        if backoff_base > backoff_cap {
            return Err(ScheduleError::BaseAboveCap {
                base: backoff_base,
                cap: backoff_cap,
            });
        }
        Ok(Self {
            interval,
            jitter,
            backoff_base,
            backoff_cap,
        })
    }

    /// The poll interval after a success.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The jitter fraction.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The first retry delay.
    pub fn backoff_base(&self) -> Duration {
        self.backoff_base
    }

    /// The longest retry delay.
    pub fn backoff_cap(&self) -> Duration {
        self.backoff_cap
    }

    /// The retry delay after `attempt` consecutive failures, before jitter: `base · 2^(attempt-1)`, capped.
    /// Attempt 0 is read as 1.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let secs = self.backoff_base.as_secs_f64() * factor as f64;
        if secs >= self.backoff_cap.as_secs_f64() {
            self.backoff_cap
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// How long to wait before the next poll, given how the last one went and `unit`, a random value in
    /// `[0, 1)` drawn by the caller.
    ///
    /// - Success: the interval with jitter taken off; then no earlier than the mirror's `max-age` (polling
    ///   sooner would be answered from the same cached copy), but a `max-age` counts only up to the larger
    ///   of the interval and the backoff cap, because a mirror is not trusted to silence a site.
    /// - Failure: [`PollPolicy::backoff`] with jitter taken off; then no earlier than `Retry-After`, which
    ///   also counts only up to the cap, for the same reason. A failure's delay never exceeds the cap.
    /// - Never less than [`MIN_DELAY`].
    pub fn next_delay(&self, outcome: PollOutcome, unit: f64) -> Duration {
        let delay = match outcome {
            PollOutcome::Success { max_age } => {
                let ceiling = self.interval.max(self.backoff_cap);
                let jittered = self.jitter.apply(self.interval, unit);
                max_age.map_or(jittered, |m| jittered.max(m.min(ceiling)))
            }
            PollOutcome::Failure {
                attempt,
                retry_after,
            } => {
                let jittered = self.jitter.apply(self.backoff(attempt), unit);
                retry_after.map_or(jittered, |r| jittered.max(r.min(self.backoff_cap)))
            }
        };
        delay.max(MIN_DELAY)
    }
}

impl Default for PollPolicy {
    /// Every 5 minutes with 0.2 jitter; retries from 10 seconds, doubling, up to an hour.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            jitter: Jitter::default(),
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(3600),
        }
    }
}

impl ApplyGate {
    /// Combines the release's wave decision (from [`mast_protocol::release::Waves::decision`]) with the
    /// change windows at `now`.
    pub fn decide(wave: WaveDecision, windows: &ChangeWindows, now: OffsetDateTime) -> Self {
        let earliest = match wave {
            WaveDecision::NotInRollout => return Self::NotInRollout,
            WaveDecision::ApplyNow => now,
            WaveDecision::NotBefore(start) => start.max(now),
        };
        if earliest == now && windows.contains(now) {
            return Self::ApplyNow;
        }
        Self::WaitUntil(windows.next_open(earliest))
    }
}

#[cfg(test)]
mod tests;
