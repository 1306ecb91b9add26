//! Agent versions, compared as semver orders them.
//!
//! Written by hand rather than with the `semver` crate: mast compares one running version against one
//! required `X.Y.Z`, which needs semver's precedence for cores and for "a pre-release sorts before its
//! release", and nothing else.

use std::fmt;
use std::str::FromStr;

use super::ReleaseError;

/// A semver version: `MAJOR.MINOR.PATCH`, optionally `-PRERELEASE` and `+BUILD` (the agent's own version
/// may carry those; a release's `min_agent_version` may not, see [`AgentVersion::parse_release`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentVersion {
    /// Incompatible changes.
    pub major: u64,
    /// Compatible features.
    pub minor: u64,
    /// Fixes.
    pub patch: u64,
    /// The pre-release part after `-`, if any. Build metadata after `+` is dropped: semver ignores it.
    pub pre: Option<String>,
}

impl AgentVersion {
    /// A release version `major.minor.patch`.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
            pre: None,
        }
    }

    /// Parses a plain `X.Y.Z`, the only form a release may require: a pre-release minimum would make
    /// every released agent of that version "too old" by semver's rules, which is never what is meant.
    pub fn parse_release(s: &str) -> Result<Self, ReleaseError> {
        let v: Self = s.parse()?;
        if v.pre.is_some() || s.contains('+') {
            return Err(ReleaseError::AgentVersion(s.to_owned()));
        }
        Ok(v)
    }

    /// Whether this version is `min` or later. A pre-release of `min` itself (`1.2.0-rc.1` against
    /// `1.2.0`) is earlier, as semver orders them.
    pub fn satisfies(&self, min: &AgentVersion) -> bool {
        let core = (self.major, self.minor, self.patch);
        let min_core = (min.major, min.minor, min.patch);
        core > min_core || (core == min_core && (self.pre.is_none() || min.pre.is_some()))
    }
}

impl FromStr for AgentVersion {
    type Err = ReleaseError;

    fn from_str(s: &str) -> Result<Self, ReleaseError> {
        let bad = || ReleaseError::AgentVersion(s.to_owned());
        let without_build = match s.split_once('+') {
            Some((v, build)) if valid_identifiers(build) => v,
            Some(_) => return Err(bad()),
            None => s,
        };
        let (core, pre) = match without_build.split_once('-') {
            Some((core, pre)) if valid_identifiers(pre) => (core, Some(pre.to_owned())),
            Some(_) => return Err(bad()),
            None => (without_build, None),
        };
        let mut parts = core.split('.').map(number);
        let (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Self {
            major,
            minor,
            patch,
            pre,
        })
    }
}

impl fmt::Display for AgentVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

/// A semver numeric identifier: digits, no leading zero.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// Dot-separated non-empty identifiers of `[0-9A-Za-z-]`.
fn valid_identifiers(s: &str) -> bool {
    s.split('.')
        .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> AgentVersion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_orders_like_semver() {
        assert_eq!(v("1.2.3"), AgentVersion::new(1, 2, 3));
        assert_eq!(v("1.2.3-rc.1+build.5").to_string(), "1.2.3-rc.1");
        for bad in [
            "1.2", "1.2.3.4", "01.2.3", "1.2.x", "", "1.2.3-", "1.2.3+", "-1.2.3", "1..3",
        ] {
            assert!(bad.parse::<AgentVersion>().is_err(), "{bad:?}");
        }
        let min = AgentVersion::parse_release("1.10.0").unwrap();
        assert!(v("1.10.0").satisfies(&min));
        assert!(v("1.10.1").satisfies(&min));
        assert!(v("2.0.0").satisfies(&min));
        assert!(!v("1.9.99").satisfies(&min), "numeric, not string, order");
        assert!(
            !v("1.10.0-rc.1").satisfies(&min),
            "a pre-release is before its release"
        );
        assert!(AgentVersion::parse_release("1.10.0-rc.1").is_err());
        assert!(AgentVersion::parse_release("1.10.0+b").is_err());
    }
}
