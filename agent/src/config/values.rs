//! The typed values of the config that no other module owns: the cluster id, the applier, durations.
//! Mirrors are [`mast_mirror::MirrorSpec`]s, parsed by the mirror crate so that the packager and the agent
//! read the same spellings.
//!
//! Each parser returns a plain reason on failure; the caller adds the key and where the value came from.

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mast_protocol::release::seed_for;

/// Longest cluster id: a DNS name's length, which is what most sites use.
const MAX_CLUSTER_ID_LEN: usize = 253;
/// Most releases the GC may be asked to keep; more is surely a typo, and each costs disk.
const MAX_KEEP_RELEASES: u32 = 1000;

/// The site's identity: names it in status reports and fixes its rollout seed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterId(String);

/// Where releases are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applier {
    /// `dir:PATH`: manifests written as files into a directory (k3s/RKE2 auto-deploy).
    Dir(PathBuf),
    /// `kube`: server-side apply to the cluster the agent runs in (or `KUBECONFIG`).
    Kube,
}

/// How many releases' chunks the store keeps (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeepReleases(NonZeroU32);

impl ClusterId {
    /// Checks `id`: not empty, at most 253 bytes, no control characters, and no whitespace at either end
    /// (a trailing newline from an env file would otherwise silently move the site to another wave).
    pub fn new(id: &str) -> Result<Self, String> {
        if id.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if id.len() > MAX_CLUSTER_ID_LEN {
            return Err(format!("must be at most {MAX_CLUSTER_ID_LEN} bytes"));
        }
        if id.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        if id.trim() != id {
            return Err("must not start or end with whitespace".to_owned());
        }
        Ok(Self(id.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The site's rollout seed in `0..10000` ([`mast_protocol::release::seed_for`]).
    pub fn seed(&self) -> u16 {
        seed_for(&self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Applier {
    /// Parses `dir:PATH` or `kube`. A relative `PATH` is resolved against `base`.
    pub fn parse(s: &str, base: Option<&Path>) -> Result<Self, String> {
        if s == "kube" {
            return Ok(Self::Kube);
        }
        match s.strip_prefix("dir:") {
            Some("") => Err(
                "dir: needs a directory, as in dir:/var/lib/rancher/k3s/server/manifests/mast"
                    .to_owned(),
            ),
            Some(path) => Ok(Self::Dir(resolve(Path::new(path), base))),
            None => Err("an applier is dir:PATH or kube".to_owned()),
        }
    }
}

impl KeepReleases {
    /// Keep `n` releases, 1 to 1000.
    pub fn new(n: u32) -> Result<Self, String> {
        NonZeroU32::new(n)
            .filter(|n| n.get() <= MAX_KEEP_RELEASES)
            .map(Self)
            .ok_or_else(|| format!("must be from 1 to {MAX_KEEP_RELEASES}"))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl Default for KeepReleases {
    /// Three: the running release, the one before it to roll back to, and one more in case that one was bad.
    fn default() -> Self {
        Self(NonZeroU32::MIN.saturating_add(2))
    }
}

/// Parses a human duration: one or more `<number><unit>` with units `s`, `m`, `h`, `d` (`90s`, `5m`,
/// `1h30m`, `2d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const FORM: &str = "a duration is numbers with units s, m, h or d, as in 90s, 5m, 1h30m";
    if s.is_empty() {
        return Err(FORM.to_owned());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, tail) = rest.split_at(digits);
        let mut chars = tail.chars();
        let unit = match chars.next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86_400,
            _ => return Err(FORM.to_owned()),
        };
        let n: u64 = number.parse().map_err(|_| FORM.to_owned())?;
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or("too long")?;
        rest = chars.as_str();
    }
    Ok(Duration::from_secs(total))
}

/// A relative path from the config file is relative to the file's directory; from the environment or a
/// flag, to the working directory, as a shell user expects.
pub(super) fn resolve(path: &Path, base: Option<&Path>) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, secs) in [
            ("90s", 90),
            ("5m", 300),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("0s", 0),
        ] {
            assert_eq!(parse_duration(s), Ok(Duration::from_secs(secs)), "{s}");
        }
        for bad in [
            "",
            "5",
            "m",
            "5 m",
            "1.5h",
            "-1s",
            "5M",
            "1w",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn appliers_and_ids() {
        assert_eq!(Applier::parse("kube", None), Ok(Applier::Kube));
        assert_eq!(
            Applier::parse("dir:manifests", Some(Path::new("/etc/mast"))),
            Ok(Applier::Dir(PathBuf::from("/etc/mast/manifests")))
        );
        assert!(Applier::parse("dir:", None).is_err());
        assert!(Applier::parse("kubernetes", None).is_err());
        assert!(ClusterId::new("site-0042").is_ok());
        for bad in ["", " site", "site\n", "a\u{7}b"] {
            assert!(ClusterId::new(bad).is_err(), "{bad:?}");
        }
        assert!(ClusterId::new(&"x".repeat(254)).is_err());
        assert_eq!(KeepReleases::default().get(), 3);
        assert!(KeepReleases::new(0).is_err() && KeepReleases::new(1001).is_err());
    }
}
