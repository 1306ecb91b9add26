use proptest::prelude::*;
use time::macros::datetime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-11-23 12:00:00 UTC);
const S: fn(u64) -> Duration = Duration::from_secs;

fn policy(jitter: f64) -> PollPolicy {
    PollPolicy::new(S(300), Jitter::new(jitter).unwrap(), S(10), S(3600)).unwrap()
}

fn failure(attempt: u32) -> PollOutcome {
    PollOutcome::Failure {
        attempt,
        retry_after: None,
    }
}

#[test]
fn policy_bounds_are_checked() {
    let j = Jitter::default();
    assert!(matches!(
        PollPolicy::new(Duration::ZERO, j, S(10), S(60)),
        Err(ScheduleError::DurationRange {
            what: "poll interval",
            ..
        })
    ));
    assert!(matches!(
        PollPolicy::new(S(60), j, S(120), S(60)),
        Err(ScheduleError::BaseAboveCap { .. })
    ));
    assert!(matches!(
        PollPolicy::new(S(60), j, S(1), MAX_DELAY + S(1)),
        Err(ScheduleError::DurationRange {
            what: "backoff cap",
            ..
        })
    ));
    for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
        assert!(Jitter::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn success_takes_jitter_off_the_interval() {
    let p = policy(0.2);
    let ok = PollOutcome::Success { max_age: None };
    assert_eq!(p.next_delay(ok, 0.0), S(300));
    assert_eq!(p.next_delay(ok, 0.5), S(270));
    assert_eq!(policy(0.0).next_delay(ok, 0.99), S(300));
}

#[test]
fn max_age_delays_success_up_to_the_ceiling() {
    let p = policy(0.2);
    let ok = |secs| PollOutcome::Success {
        max_age: Some(S(secs)),
    };
    assert_eq!(
        p.next_delay(ok(60), 0.0),
        S(300),
        "a short max-age changes nothing"
    );
    assert_eq!(p.next_delay(ok(900), 0.5), S(900));
    assert_eq!(
        p.next_delay(ok(86_400), 0.0),
        S(3600),
        "a mirror cannot push a site past the cap"
    );
}

#[test]
fn failures_double_up_to_the_cap() {
    let p = policy(0.0);
    let delays: Vec<u64> = (1..=11)
        .map(|a| p.next_delay(failure(a), 0.5).as_secs())
        .collect();
    assert_eq!(
        delays,
        [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    );
    assert_eq!(p.backoff(0), S(10));
    assert_eq!(p.backoff(u32::MAX), S(3600));
}

#[test]
fn retry_after_is_a_floor_within_the_cap() {
    let p = policy(1.0);
    let with = |secs| PollOutcome::Failure {
        attempt: 1,
        retry_after: Some(S(secs)),
    };
    assert_eq!(p.next_delay(with(120), 0.9), S(120));
    assert_eq!(p.next_delay(with(2), 0.0), S(10), "backoff above it wins");
    assert_eq!(p.next_delay(with(7 * 86_400), 0.0), S(3600));
}

#[test]
fn never_below_the_minimum() {
    let p = policy(1.0);
    assert_eq!(p.next_delay(failure(1), 0.999_999), MIN_DELAY);
    assert_eq!(p.next_delay(failure(1), f64::NAN), S(10));
}

#[test]
fn gate_combines_waves_and_windows() {
    let windows = ChangeWindows::new(vec!["daily 02:00-04:00".parse().unwrap()]);
    let always = ChangeWindows::default();
    let today_2am = datetime!(2026-11-24 02:00:00 UTC);
    let in_window = datetime!(2026-11-24 03:00:00 UTC);
    assert_eq!(
        ApplyGate::decide(WaveDecision::ApplyNow, &always, NOW),
        ApplyGate::ApplyNow
    );
    assert_eq!(
        ApplyGate::decide(WaveDecision::ApplyNow, &windows, NOW),
        ApplyGate::WaitUntil(today_2am)
    );
    assert_eq!(
        ApplyGate::decide(WaveDecision::ApplyNow, &windows, in_window),
        ApplyGate::ApplyNow
    );
    // The wave starts inside a window: wait for the wave.
    let wave = datetime!(2026-11-24 02:30:00 UTC);
    assert_eq!(
        ApplyGate::decide(WaveDecision::NotBefore(wave), &windows, NOW),
        ApplyGate::WaitUntil(wave)
    );
    // The wave starts after the window closed: wait for the next one.
    let late = datetime!(2026-11-24 05:00:00 UTC);
    assert_eq!(
        ApplyGate::decide(WaveDecision::NotBefore(late), &windows, NOW),
        ApplyGate::WaitUntil(datetime!(2026-11-25 02:00:00 UTC))
    );
    // A wave that started already is no wait.
    assert_eq!(
        ApplyGate::decide(WaveDecision::NotBefore(NOW), &always, NOW),
        ApplyGate::ApplyNow
    );
    assert_eq!(
        ApplyGate::decide(WaveDecision::NotInRollout, &always, NOW),
        ApplyGate::NotInRollout
    );
}

fn any_policy() -> impl Strategy<Value = PollPolicy> {
    (1u64..86_400, 0.0f64..=1.0, 1u64..3600, 1u64..86_400).prop_filter_map(
        "base above cap",
        |(interval, jitter, base, cap)| {
            PollPolicy::new(S(interval), Jitter::new(jitter).ok()?, S(base), S(cap)).ok()
        },
    )
}

proptest! {
    #[test]
    fn failure_delay_never_exceeds_the_cap(
        p in any_policy(),
        attempt in 0u32..200,
        retry_after in proptest::option::of(0u64..10_000_000),
        unit in 0.0f64..1.0,
    ) {
        let d = p.next_delay(PollOutcome::Failure { attempt, retry_after: retry_after.map(S) }, unit);
        prop_assert!(d <= p.backoff_cap().max(MIN_DELAY));
        if let Some(r) = retry_after.map(S).filter(|r| *r <= p.backoff_cap()) {
            prop_assert!(d >= r, "Retry-After {r:?} within the cap is honoured, got {d:?}");
        }
    }

    #[test]
    fn backoff_is_monotone_before_jitter(p in any_policy(), attempt in 0u32..200) {
        prop_assert!(p.backoff(attempt) <= p.backoff(attempt + 1));
        prop_assert!(p.backoff(attempt) >= p.backoff_base().min(p.backoff_cap()));
        prop_assert!(p.backoff(attempt) <= p.backoff_cap());
    }

    #[test]
    fn jitter_stays_within_bounds(p in any_policy(), attempt in 1u32..40, unit in 0.0f64..1.0) {
        let full = p.backoff(attempt);
        let d = p.next_delay(failure(attempt), unit);
        let low = full.mul_f64(1.0 - p.jitter().get()).max(MIN_DELAY);
        prop_assert!(d <= full && d >= low.min(full), "{d:?} not in [{low:?}, {full:?}]");
        let ok = p.next_delay(PollOutcome::Success { max_age: None }, unit);
        let low = p.interval().mul_f64(1.0 - p.jitter().get()).max(MIN_DELAY);
        prop_assert!(ok <= p.interval() && ok >= low.min(p.interval()));
    }
}
