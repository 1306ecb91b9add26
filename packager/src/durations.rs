//! Durations on the command line (`90d`, `12h`) and `--expires ROLE=DURATION` lifetimes.

use std::fmt;
use std::str::FromStr;

use mast_protocol::tuf::Expiries;
use time::Duration;

/// Why a duration or a lifetime flag does not parse. Names the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not `N` followed by `s`, `m`, `h`, `d` or `w`, with N > 0.
    #[error(
        "{0:?} is not a duration (a positive whole number followed by s, m, h, d or w, e.g. 90d)"
    )]
    Duration(String),
    /// Not `ROLE=DURATION`.
    #[error("{0:?} is not ROLE=DURATION (e.g. timestamp=7d)")]
    Assignment(String),
    /// A role other than the four top-level roles.
    #[error("{0:?} is not a role (root, targets, snapshot or timestamp)")]
    Role(String),
}

/// A role's lifetime as given by `--expires ROLE=DURATION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// `root`, `targets`, `snapshot` or `timestamp`.
    pub role: &'static str,
    /// How long its metadata stays valid once signed.
    pub duration: Duration,
}

/// Parses `N` + unit: `s`, `m`, `h`, `d` or `w`. Zero and negative lifetimes are refused: metadata that is
/// expired when signed would only ever be refused by every client.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError::Duration(s.to_owned());
    let unit_at = s.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = s.split_at(unit_at);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    // A century bounds every lifetime well inside what OffsetDateTime can add to now.
    let seconds = n
        .checked_mul(seconds_per)
        .filter(|s| (1..=100 * 366 * 86_400).contains(s));
    seconds.map(Duration::seconds).ok_or_else(bad)
}

/// A duration as the flags write it, in the largest unit that divides it exactly.
pub fn display_duration(d: Duration) -> String {
    let s = d.whole_seconds();
    for (unit, per) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s != 0 && s % per == 0 {
            return format!("{}{unit}", s / per);
        }
    }
    format!("{s}s")
}

impl FromStr for Lifetime {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, DurationError> {
        let (role, duration) = s
            .split_once('=')
            .ok_or_else(|| DurationError::Assignment(s.to_owned()))?;
        let role = match role {
            "root" => "root",
            "targets" => "targets",
            "snapshot" => "snapshot",
            "timestamp" => "timestamp",
            other => return Err(DurationError::Role(other.to_owned())),
        };
        Ok(Self {
            role,
            duration: parse_duration(duration)?,
        })
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.role, display_duration(self.duration))
    }
}

/// `base` with each lifetime given applied in order (a later flag for one role wins).
pub fn apply(base: Expiries, lifetimes: &[Lifetime]) -> Expiries {
    let mut out = base;
    for l in lifetimes {
        match l.role {
            "root" => out.root = l.duration,
            "targets" => out.targets = l.duration,
            "snapshot" => out.snapshot = l.duration,
            _ => out.timestamp = l.duration,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("90d").unwrap(), Duration::days(90));
        assert_eq!(parse_duration("36h").unwrap(), Duration::hours(36));
        assert_eq!(parse_duration("1w").unwrap(), Duration::days(7));
        assert_eq!(parse_duration("45s").unwrap(), Duration::seconds(45));
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "+1d",
            "1.5d",
            "10",
            "10y",
            "1 d",
            "99999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(display_duration(Duration::days(14)), "2w");
        assert_eq!(display_duration(Duration::days(90)), "90d");
        assert_eq!(display_duration(Duration::seconds(61)), "61s");
    }

    #[test]
    fn lifetimes_apply_in_order() {
        let given: Vec<Lifetime> = ["timestamp=1d", "root=2w", "timestamp=3d"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let e = apply(Expiries::default(), &given);
        assert_eq!(e.timestamp, Duration::days(3));
        assert_eq!(e.root, Duration::days(14));
        assert_eq!(e.targets, Duration::days(90));
        assert_eq!(
            "mirror=1d".parse::<Lifetime>(),
            Err(DurationError::Role("mirror".into()))
        );
        assert!("root".parse::<Lifetime>().is_err());
    }
}
