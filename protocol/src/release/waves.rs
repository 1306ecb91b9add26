//! Rollout waves: which sites may apply a release when, as a pure function of (seed, time).
//!
//! Modelled on Bottlerocket's `update_metadata` waves. Every site has a fixed seed in `0..10000` derived
//! from its cluster id; a release lists waves `(seed_below, start)`, and a site applies from the start of
//! the first wave whose `seed_below` is above its seed. The seed is per site, not per release, on purpose:
//! the same sites go first every time, so operators learn which ones are their canaries.

use std::fmt;

use time::format_description::BorrowedFormatItem;
use time::{Duration, OffsetDateTime, UtcOffset};

use super::ReleaseError;
use crate::digest::Sha256Digest;

/// Seeds are in `0..SEED_SPACE`, so a wave's `seed_below` of `SEED_SPACE / 100 * p` is `p` percent.
pub const SEED_SPACE: u16 = 10_000;

/// Prefix hashed before the cluster id, so the seed cannot collide with any other use of a hash of it.
const SEED_DOMAIN: &[u8] = b"mast rollout seed v1\0";

const TIME_FORMAT: &[BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// The rollout seed of a cluster: the first 8 bytes of SHA-256(domain ‖ cluster id), big-endian, modulo
/// 10,000.
///
/// SHA-256 output is uniform, and reducing a 64-bit value modulo 10,000 biases each seed by at most
/// 10,000 / 2^64 (about 5·10⁻¹⁶), so seeds are uniform over `0..10000` for any set of distinct ids.
pub fn seed_for(cluster_id: &str) -> u16 {
    let mut input = Vec::with_capacity(SEED_DOMAIN.len() + cluster_id.len());
    input.extend_from_slice(SEED_DOMAIN);
    input.extend_from_slice(cluster_id.as_bytes());
    let digest = Sha256Digest::of(&input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    // The remainder is below 10,000, which fits a u16.
    (u64::from_be_bytes(first) % u64::from(SEED_SPACE)) as u16
}

/// One wave: sites with a seed below `seed_below` (and not in an earlier wave) may apply from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wave {
    /// Exclusive upper bound of the wave's seeds, in `1..=10000`.
    pub seed_below: u16,
    /// When the wave may start applying, whole seconds, UTC.
    pub start: OffsetDateTime,
}

/// A validated rollout plan: `seed_below` strictly increasing within `1..=10000`, starts non-decreasing.
/// Empty means everyone applies at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waves(Vec<Wave>);

/// What a site may do with a release now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveDecision {
    /// Its wave has started.
    ApplyNow,
    /// Its wave starts at this instant.
    NotBefore(OffsetDateTime),
    /// Its seed is above every wave: this release is not for this site (a canary-only release).
    NotInRollout,
}

impl Waves {
    /// Validates a plan. Starts are truncated to whole seconds in UTC, as they are written.
    pub fn new(waves: Vec<Wave>) -> Result<Self, ReleaseError> {
        let mut out: Vec<Wave> = Vec::with_capacity(waves.len());
        for (i, wave) in waves.into_iter().enumerate() {
            let wave = Wave {
                seed_below: wave.seed_below,
                start: whole_seconds_utc(wave.start),
            };
            let previous = out.last();
            let reason = if wave.seed_below == 0 || wave.seed_below > SEED_SPACE {
                Some(format!(
                    "seed_below {} is not in 1..=10000",
                    wave.seed_below
                ))
            } else if previous.is_some_and(|p| p.seed_below >= wave.seed_below) {
                Some("seed_below must increase from wave to wave".to_owned())
            } else if previous.is_some_and(|p| p.start > wave.start) {
                Some("a wave may not start before the one before it".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ReleaseError::Waves { wave: i, reason });
            }
            out.push(wave);
        }
        Ok(Self(out))
    }

    /// The waves, in order.
    pub fn as_slice(&self) -> &[Wave] {
        &self.0
    }

    /// Whether there are no waves (everyone applies at once).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What a site with `seed` may do at `now`.
    pub fn decision(&self, seed: u16, now: OffsetDateTime) -> WaveDecision {
        if self.0.is_empty() {
            return WaveDecision::ApplyNow;
        }
        match self.0.iter().find(|w| seed < w.seed_below) {
            None => WaveDecision::NotInRollout,
            Some(w) if now >= w.start => WaveDecision::ApplyNow,
            Some(w) => WaveDecision::NotBefore(w.start),
        }
    }
}

/// Parses the packager's `--waves` flag: comma-separated `PERCENT%@WHEN`, where `PERCENT` has at most two
/// decimals (`12.5%` is seeds below 1250) and `WHEN` is `YYYY-MM-DDTHH:MM:SSZ` or `+N` followed by `m`,
/// `h` or `d`, relative to `release_time`. Example: `10%@+0h,50%@+2h,100%@+1d`.
pub fn parse_waves_spec(spec: &str, release_time: OffsetDateTime) -> Result<Waves, ReleaseError> {
    let mut waves = Vec::new();
    for part in spec.split(',') {
        let bad = |reason: &str| ReleaseError::WavesSpec {
            part: part.to_owned(),
            reason: reason.to_owned(),
        };
        let (percent, when) = part
            .trim()
            .split_once('@')
            .ok_or_else(|| bad("expected PERCENT%@WHEN"))?;
        let percent = percent
            .strip_suffix('%')
            .ok_or_else(|| bad("the share must end in %"))?;
        let seed_below = basis_points(percent)
            .filter(|b| (1..=SEED_SPACE).contains(b))
            .ok_or_else(|| {
                bad("the share must be above 0% and at most 100%, with at most two decimals")
            })?;
        let start = match when.strip_prefix('+') {
            Some(offset) => relative(offset)
                .and_then(|d| release_time.checked_add(d))
                .ok_or_else(|| bad("an offset is +N followed by m, h or d"))?,
            None => parse_time(when).map_err(|_| bad("a time is YYYY-MM-DDTHH:MM:SSZ"))?,
        };
        // Validate as we go so that the error names the part that broke the order.
        let wave = Wave { seed_below, start };
        let mut candidate = waves.clone();
        candidate.push(wave);
        Waves::new(candidate).map_err(|e| match e {
            ReleaseError::Waves { reason, .. } => bad(&reason),
            other => other,
        })?;
        waves.push(wave);
    }
    Waves::new(waves)
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form TUF uses for expiry, read as strictly.
pub(crate) fn parse_time(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    time::PrimitiveDateTime::parse(s, TIME_FORMAT).map(|t| t.assume_utc())
}

/// Writes `t` as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) struct DisplayTime(pub(crate) OffsetDateTime);

impl fmt::Display for DisplayTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match whole_seconds_utc(self.0).format(TIME_FORMAT) {
            Ok(s) => f.write_str(&s),
            // Only years outside 0..=9999 fail to format; parse_time cannot produce them.
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

fn whole_seconds_utc(t: OffsetDateTime) -> OffsetDateTime {
    let utc = t.to_offset(UtcOffset::UTC);
    utc.replace_nanosecond(0).unwrap_or(utc)
}

/// `"12.5"` → 1250: a percentage with at most two decimals, in hundredths.
fn basis_points(percent: &str) -> Option<u16> {
    let (whole, frac) = percent.split_once('.').unwrap_or((percent, ""));
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole)
        || (!frac.is_empty() && (frac.len() > 2 || !digits(frac)))
        || percent.ends_with('.')
    {
        return None;
    }
    let whole: u16 = whole.parse().ok()?;
    let frac: u16 = format!("{frac:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(frac)
}

fn relative(offset: &str) -> Option<Duration> {
    let unit = offset.chars().last()?;
    let n: i64 = offset.get(..offset.len() - 1)?.parse().ok()?;
    // The cap (about 270 years in days) keeps Duration's constructors, which panic on overflow, in range.
    if !(0..=100_000).contains(&n) || offset.starts_with('+') || offset.starts_with('-') {
        return None;
    }
    match unit {
        'm' => Some(Duration::minutes(n)),
        'h' => Some(Duration::hours(n)),
        'd' => Some(Duration::days(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use time::macros::datetime;

    use super::*;

    const RELEASE: OffsetDateTime = datetime!(2026-12-01 00:00:00 UTC);

    #[test]
    fn parses_the_flag() {
        let waves =
            parse_waves_spec("10%@2026-12-01T00:00:00Z, 50%@+2h,100%@+1d", RELEASE).unwrap();
        let w = waves.as_slice();
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].seed_below, w[0].start), (1000, RELEASE));
        assert_eq!(
            (w[1].seed_below, w[1].start),
            (5000, RELEASE + Duration::hours(2))
        );
        assert_eq!(
            (w[2].seed_below, w[2].start),
            (10000, RELEASE + Duration::days(1))
        );
        let w = parse_waves_spec("0.5%@+30m,12.25%@+1h", RELEASE).unwrap();
        assert_eq!(w.as_slice()[0].seed_below, 50);
        assert_eq!(w.as_slice()[1].seed_below, 1225);
    }

    #[test]
    fn flag_errors_name_the_part() {
        for (spec, part) in [
            ("10%@+1h,5%@+2h", "5%@+2h"),
            ("10%@+2h,50%@+1h", "50%@+1h"),
            ("10@+1h", "10@+1h"),
            ("0%@+1h", "0%@+1h"),
            ("101%@+1h", "101%@+1h"),
            ("1.234%@+1h", "1.234%@+1h"),
            ("10%@+1w", "10%@+1w"),
            ("10%@+-1h", "10%@+-1h"),
            ("10%@+99999999999999d", "10%@+99999999999999d"),
            ("10%@+ 1h", "10%@+ 1h"),
            ("10%@2026-12-01 00:00:00", "10%@2026-12-01 00:00:00"),
            ("", ""),
        ] {
            match parse_waves_spec(spec, RELEASE) {
                Err(ReleaseError::WavesSpec { part: p, .. }) => assert_eq!(p, part, "{spec}"),
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[test]
    fn decisions() {
        let waves = parse_waves_spec("10%@+0h,50%@+2h", RELEASE).unwrap();
        assert_eq!(waves.decision(999, RELEASE), WaveDecision::ApplyNow);
        assert_eq!(
            waves.decision(1000, RELEASE),
            WaveDecision::NotBefore(RELEASE + Duration::hours(2))
        );
        assert_eq!(
            waves.decision(4999, RELEASE + Duration::hours(2)),
            WaveDecision::ApplyNow
        );
        assert_eq!(
            waves.decision(5000, RELEASE + Duration::days(365)),
            WaveDecision::NotInRollout
        );
        assert_eq!(
            Waves::default().decision(9999, RELEASE),
            WaveDecision::ApplyNow
        );
    }

    #[test]
    fn seeds_are_uniform_over_deciles() {
        let mut deciles = [0u32; 10];
        for i in 0..10_000 {
            let seed = seed_for(&format!("site-{i:05}.edge.example"));
            assert!(seed < SEED_SPACE);
            deciles[usize::from(seed / 1000)] += 1;
        }
        for (i, n) in deciles.iter().enumerate() {
            assert!(
                (800..=1200).contains(n),
                "decile {i} holds {n}: {deciles:?}"
            );
        }
        assert_eq!(seed_for("a"), seed_for("a"));
    }

    /// Strictly increasing seed bounds and non-decreasing starts, up to 6 waves.
    fn arb_waves() -> impl Strategy<Value = Waves> {
        (
            prop::collection::btree_set(1..=SEED_SPACE, 0..6),
            prop::collection::vec(0i64..100, 6),
        )
            .prop_map(|(seeds, gaps)| {
                let mut start = RELEASE;
                let waves = seeds
                    .into_iter()
                    .zip(gaps)
                    .map(|(seed_below, gap)| {
                        start += Duration::hours(gap);
                        Wave { seed_below, start }
                    })
                    .collect();
                Waves::new(waves).unwrap()
            })
    }

    proptest! {
        /// At any instant the seeds that may apply are exactly [0, seed_below of the last started wave).
        #[test]
        fn allowed_seeds_are_a_prefix(waves in arb_waves(), minutes in -60i64..(700 * 60)) {
            let now = RELEASE + Duration::minutes(minutes);
            let bound = if waves.is_empty() {
                SEED_SPACE
            } else {
                waves.as_slice().iter().filter(|w| w.start <= now).map(|w| w.seed_below).max().unwrap_or(0)
            };
            for seed in 0..SEED_SPACE {
                let allowed = waves.decision(seed, now) == WaveDecision::ApplyNow;
                prop_assert_eq!(allowed, seed < bound, "seed {}", seed);
            }
        }

        /// Once a seed may apply it stays allowed; a NotBefore names the instant it becomes allowed.
        #[test]
        fn decisions_are_monotonic_in_time(waves in arb_waves(), seed in 0..SEED_SPACE, a in 0i64..1000, b in 0i64..1000) {
            let (early, late) = (RELEASE + Duration::hours(a.min(b)), RELEASE + Duration::hours(a.max(b)));
            if waves.decision(seed, early) == WaveDecision::ApplyNow {
                prop_assert_eq!(waves.decision(seed, late), WaveDecision::ApplyNow);
            }
            if let WaveDecision::NotBefore(at) = waves.decision(seed, early) {
                prop_assert!(at > early);
                prop_assert_eq!(waves.decision(seed, at), WaveDecision::ApplyNow);
                prop_assert_eq!(waves.decision(seed, at - Duration::seconds(1)), WaveDecision::NotBefore(at));
            }
        }
    }
}
