//! Whether a site's view of its channel is current: when it last completed a refresh, when its trusted
//! metadata expires, and the one `stale` verdict a fleet operator filters on.
//!
//! A site offline for days keeps running its last healthy release (nothing is removed because a mirror
//! is gone), so "running release 7" alone does not tell an operator whether release 8 exists and the site
//! cannot see it. Staleness answers that from the state database alone, so `mast-agent status` gives the
//! same answer with every mirror down, after a reboot, and in `/status` and `/metrics`.
//!
//! A site is **stale** when any of these holds:
//!
//! - it never completed a refresh;
//! - its last completed refresh is older than `stale_after` (the agent's `stale_after` key, by default
//!   three poll intervals: a site that polls every 5 minutes is stale after 15 minutes without a
//!   verified refresh from any mirror);
//! - a trusted top-level role (root, timestamp, snapshot, targets) has expired: the site cannot verify
//!   anything new until a mirror gives it newer metadata, and a new apply is refused;
//! - a trusted role no longer verifies under the trusted root (it is then not trusted at all).
//!
//! A role that expires within [`EXPIRY_WARNING`] is reported as expiring soon, which is a warning, not
//! staleness: an online site refreshes its timestamp long before that. Staleness never changes what the
//! site runs and never makes `/readyz` fail: being offline is normal for an edge site; it is reported, not
//! acted on.
//!
//! Everything here but [`Inputs::read`] is a pure function of its inputs and the instant given.

use std::time::Duration;

use mast_protocol::tuf::TrustedMetadata;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::state::{State, StateError, rfc3339};

/// A role expiring within this long is reported as expiring soon.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(24 * 3600);

/// `stale_after` when the database does not record the agent's setting (an agent that predates it):
/// three default poll intervals.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3 * 300);

/// The fact holding the agent's `stale_after`, in seconds: written when the agent opens the database, so
/// that `status`, which reads no configuration, applies the same threshold as the daemon.
pub const STALE_AFTER_FACT: &str = "stale_after";

/// The fact holding the instant of the last completed refresh (RFC 3339), written by each pass whose
/// refresh verified.
pub const LAST_REFRESH_FACT: &str = "last_contact";

/// What staleness is judged from, read from the state database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inputs {
    /// When the last refresh completed, if one ever did.
    pub last_refresh: Option<OffsetDateTime>,
    /// Each trusted top-level role's version and expiry, root first.
    pub roles: Vec<RoleExpiry>,
    /// Roles stored but not trusted, with why (they no longer verify under the trusted root).
    pub unverified: Vec<String>,
    /// How long without a completed refresh makes the site stale.
    pub stale_after: Duration,
}

/// A trusted role's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleExpiry {
    /// `root`, `timestamp`, `snapshot` or `targets`.
    pub role: &'static str,
    /// Its version.
    pub version: u64,
    /// When it expires (TUF: expired at this instant).
    pub expires: OffsetDateTime,
}

/// How close a role is to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryState {
    /// More than [`EXPIRY_WARNING`] left.
    Valid,
    /// Expires within [`EXPIRY_WARNING`].
    ExpiresSoon,
    /// Expired: nothing new verifies until a mirror gives newer metadata.
    Expired,
}

/// The verdict at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// The instant judged at.
    pub as_of: OffsetDateTime,
    /// Whether the site is stale.
    pub stale: bool,
    /// Why it is stale, one line each; empty when it is not.
    pub reasons: Vec<String>,
    /// When the last refresh completed.
    pub last_refresh: Option<OffsetDateTime>,
    /// How long ago that was (zero when the clock is behind it).
    pub since_refresh: Option<Duration>,
    /// The threshold used.
    pub stale_after: Duration,
    /// Each trusted role, its expiry and how close it is.
    pub roles: Vec<(RoleExpiry, ExpiryState)>,
}

impl Inputs {
    /// Reads the last refresh, the agent's `stale_after` and the trusted metadata, verifying the trusted
    /// roles under the trusted root as a pass would (a role that does not verify is not trusted).
    pub fn read(state: &State) -> Result<Self, StateError> {
        let last_refresh = state
            .fact(LAST_REFRESH_FACT)?
            .and_then(|at| OffsetDateTime::parse(&at, &Rfc3339).ok());
        let stale_after = state
            .fact(STALE_AFTER_FACT)?
            .and_then(|secs| secs.parse().ok())
            .map_or(DEFAULT_STALE_AFTER, Duration::from_secs);
        let mut inputs = Self {
            last_refresh,
            stale_after,
            ..Self::default()
        };
        let files = state.trusted()?;
        let Some(persisted) = files.persisted() else {
            inputs.unverified.push("no trusted root".to_owned());
            return Ok(inputs);
        };
        let trusted = match TrustedMetadata::from_persisted(persisted) {
            Ok((trusted, discarded)) => {
                inputs.unverified.extend(
                    discarded
                        .into_iter()
                        .map(|d| format!("{}: {}", d.role.file_name(), d.reason)),
                );
                trusted
            }
            Err(e) => {
                inputs.unverified.push(format!("root.json: {e}"));
                return Ok(inputs);
            }
        };
        let root = trusted.root();
        inputs.roles.push(RoleExpiry {
            role: "root",
            version: root.version(),
            expires: root.expires().at(),
        });
        let others = [
            (
                "timestamp",
                trusted.timestamp().map(|d| (d.version(), d.expires())),
            ),
            (
                "snapshot",
                trusted.snapshot().map(|d| (d.version(), d.expires())),
            ),
            (
                "targets",
                trusted.targets().map(|d| (d.version(), d.expires())),
            ),
        ];
        for (role, found) in others {
            if let Some((version, expires)) = found {
                inputs.roles.push(RoleExpiry {
                    role,
                    version,
                    expires: expires.at(),
                });
            }
        }
        Ok(inputs)
    }

    /// The verdict at `now`.
    pub fn assess(&self, now: OffsetDateTime) -> Freshness {
        let mut reasons = Vec::new();
        let since_refresh = self
            .last_refresh
            .map(|at| (now - at).try_into().unwrap_or(Duration::ZERO));
        match since_refresh {
            None => reasons.push("no refresh has completed yet".to_owned()),
            Some(since) if since > self.stale_after => reasons.push(format!(
                "no refresh completed for {} (stale after {})",
                human(since),
                human(self.stale_after)
            )),
            Some(_) => {}
        }
        let roles: Vec<(RoleExpiry, ExpiryState)> = self
            .roles
            .iter()
            .map(|r| (r.clone(), expiry(r.expires, now)))
            .collect();
        for (r, state) in &roles {
            if *state == ExpiryState::Expired {
                reasons.push(format!(
                    "trusted {} v{} expired at {}",
                    r.role,
                    r.version,
                    rfc3339(r.expires)
                ));
            }
        }
        reasons.extend(
            self.unverified
                .iter()
                .map(|why| format!("trusted metadata does not verify: {why}")),
        );
        Freshness {
            as_of: now,
            stale: !reasons.is_empty(),
            reasons,
            last_refresh: self.last_refresh,
            since_refresh,
            stale_after: self.stale_after,
            roles,
        }
    }
}

impl ExpiryState {
    /// The name `status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::ExpiresSoon => "expires_soon",
            Self::Expired => "expired",
        }
    }
}

impl Freshness {
    /// The `freshness` object of the status document.
    pub fn to_json(&self) -> Value {
        let roles: Map<String, Value> = self
            .roles
            .iter()
            .map(|(r, state)| {
                (
                    r.role.to_owned(),
                    json!({
                        "version": r.version,
                        "expires": rfc3339(r.expires),
                        "expires_in_seconds": (r.expires - self.as_of).whole_seconds(),
                        "state": state.as_str(),
                    }),
                )
            })
            .collect();
        json!({
            "stale": self.stale,
            "reasons": self.reasons,
            "as_of": rfc3339(self.as_of),
            "last_refresh": self.last_refresh.map(rfc3339),
            "seconds_since_refresh": self.since_refresh.map(|d| d.as_secs()),
            "stale_after_seconds": self.stale_after.as_secs(),
            "expiry_warning_seconds": EXPIRY_WARNING.as_secs(),
            "metadata": roles,
        })
    }
}

fn expiry(expires: OffsetDateTime, now: OffsetDateTime) -> ExpiryState {
    if now >= expires {
        ExpiryState::Expired
    } else if expires - now <= EXPIRY_WARNING {
        ExpiryState::ExpiresSoon
    } else {
        ExpiryState::Valid
    }
}

/// `2d 3h`, `2h 5m`, `4m 10s`, `45s`: the two largest units, for people reading `status`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn inputs(last_refresh: Option<OffsetDateTime>) -> Inputs {
        Inputs {
            last_refresh,
            roles: vec![
                RoleExpiry {
                    role: "root",
                    version: 1,
                    expires: datetime!(2027-06-01 00:00 UTC),
                },
                RoleExpiry {
                    role: "timestamp",
                    version: 40,
                    expires: datetime!(2026-12-07 12:00 UTC),
                },
            ],
            unverified: Vec::new(),
            stale_after: Duration::from_secs(900),
        }
    }

    #[test]
    fn a_recent_refresh_with_valid_metadata_is_current() {
        let now = datetime!(2026-12-01 12:00 UTC);
        let f = inputs(Some(now - time::Duration::minutes(14))).assess(now);
        assert!(!f.stale, "{:?}", f.reasons);
        assert_eq!(f.since_refresh, Some(Duration::from_secs(14 * 60)));
        assert_eq!(
            f.roles.iter().map(|(_, e)| *e).collect::<Vec<_>>(),
            [ExpiryState::Valid, ExpiryState::Valid]
        );
    }

    #[test]
    fn no_refresh_for_longer_than_stale_after_is_stale() {
        let now = datetime!(2026-12-01 12:00 UTC);
        let f = inputs(Some(now - time::Duration::hours(2))).assess(now);
        assert!(f.stale);
        assert_eq!(
            f.reasons,
            ["no refresh completed for 2h 0m (stale after 15m 0s)"]
        );
        let never = inputs(None).assess(now);
        assert_eq!(never.reasons, ["no refresh has completed yet"]);
        assert_eq!(never.to_json()["seconds_since_refresh"], Value::Null);
    }

    #[test]
    fn an_expired_role_is_stale_and_one_close_to_expiry_is_a_warning() {
        let soon = datetime!(2026-12-07 00:00 UTC);
        let f = inputs(Some(soon)).assess(soon);
        assert!(!f.stale);
        assert_eq!(f.roles[1].1, ExpiryState::ExpiresSoon);
        let json = f.to_json();
        assert_eq!(json["metadata"]["timestamp"]["state"], "expires_soon");
        assert_eq!(
            json["metadata"]["timestamp"]["expires_in_seconds"],
            12 * 3600
        );

        // Expired at the instant itself, as TUF has it, even right after a refresh.
        let at = datetime!(2026-12-07 12:00 UTC);
        let f = inputs(Some(at)).assess(at);
        assert!(f.stale);
        assert_eq!(
            f.reasons,
            ["trusted timestamp v40 expired at 2026-12-07T12:00:00Z"]
        );
        assert_eq!(f.to_json()["metadata"]["timestamp"]["state"], "expired");
    }

    #[test]
    fn metadata_that_does_not_verify_is_stale_and_a_clock_behind_the_refresh_is_not() {
        let now = datetime!(2026-12-01 12:00 UTC);
        let mut i = inputs(Some(now + time::Duration::hours(1)));
        let f = i.assess(now);
        assert_eq!((f.stale, f.since_refresh), (false, Some(Duration::ZERO)));
        i.unverified
            .push("snapshot.json: signature threshold not met".to_owned());
        let f = i.assess(now);
        assert_eq!(
            f.reasons,
            ["trusted metadata does not verify: snapshot.json: signature threshold not met"]
        );
    }

    #[test]
    fn durations_read_as_their_two_largest_units() {
        let s = Duration::from_secs;
        assert_eq!(human(s(45)), "45s");
        assert_eq!(human(s(250)), "4m 10s");
        assert_eq!(human(s(7500)), "2h 5m");
        assert_eq!(human(s(3 * 86_400 + 7200)), "3d 2h");
    }
}
