//! Which mirrors to try first: a mirror that failed (down, lying, stale) goes to the back of the list
//! for a backoff period, so that the next passes do not spend their time and bytes on it first; it is
//! still tried when every better one fails, and takes its configured place again once the period ends.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::PollPolicy;

/// Failures per mirror, keyed by how the mirror describes itself.
#[derive(Debug, Clone, Default)]
pub struct MirrorPenalties {
    by_mirror: HashMap<String, Penalty>,
}

#[derive(Debug, Clone, Copy)]
struct Penalty {
    failures: u32,
    until: OffsetDateTime,
}

impl MirrorPenalties {
    /// Records a failure of `mirror` at `now`: it is demoted for the policy's backoff after this many
    /// consecutive failures.
    pub fn failed(&mut self, mirror: &str, now: OffsetDateTime, policy: &PollPolicy) {
        let entry = self.by_mirror.entry(mirror.to_owned()).or_insert(Penalty {
            failures: 0,
            until: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.until = now + policy.backoff(entry.failures);
    }

    /// Records that `mirror` served a pass: its failures are forgotten.
    pub fn served(&mut self, mirror: &str) {
        self.by_mirror.remove(mirror);
    }

    /// Whether `mirror` is demoted at `now`.
    pub fn is_demoted(&self, mirror: &str, now: OffsetDateTime) -> bool {
        self.by_mirror.get(mirror).is_some_and(|p| now < p.until)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::macros::datetime;

    use super::super::Jitter;
    use super::*;

    #[test]
    fn a_failed_mirror_is_demoted_for_a_growing_backoff_until_it_serves() {
        let policy = PollPolicy::new(
            Duration::from_secs(300),
            Jitter::NONE,
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
        .unwrap();
        let t0 = datetime!(2026-11-29 12:00 UTC);
        let mut penalties = MirrorPenalties::default();
        assert!(!penalties.is_demoted("https://cdn", t0));
        penalties.failed("https://cdn", t0, &policy);
        assert!(penalties.is_demoted("https://cdn", t0 + time::Duration::seconds(9)));
        assert!(!penalties.is_demoted("https://cdn", t0 + time::Duration::seconds(10)));
        // A second failure doubles the period; the cap holds.
        penalties.failed("https://cdn", t0, &policy);
        assert!(penalties.is_demoted("https://cdn", t0 + time::Duration::seconds(19)));
        for _ in 0..10 {
            penalties.failed("https://cdn", t0, &policy);
        }
        assert!(!penalties.is_demoted("https://cdn", t0 + time::Duration::seconds(60)));
        assert!(!penalties.is_demoted("oci://registry/repo", t0));
        penalties.served("https://cdn");
        assert!(!penalties.is_demoted("https://cdn", t0));
    }
}
