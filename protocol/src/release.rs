//! mast's releases as TUF targets: the custom fields the packager writes, and the agent's choice of release.
//!
//! A release `N` of channel `C` is two targets, both signed with length and hashes:
//! `channels/C/N/bundle.tar.gz` (the whole gzip'd canonical tar) and `channels/C/N/index.json` (its chunk
//! index). Chunks are mirror blobs at `chunks/<sha256 of the compressed bytes>`, verified through the index;
//! they are not TUF targets, which would make `targets.json` grow with every chunk ever published.
//!
//! Each of the two targets carries the same `custom.mast` object:
//!
//! ```json
//! {"kind":"bundle","channel":"prod","release":7,"tar_sha256":"…","tar_length":123,
//!  "min_agent_version":"1.4.0","waves":[{"seed_below":1000,"start":"2026-12-01T00:00:00Z"}]}
//! ```
//!
//! The release number is signed by the targets role and only ever grows per channel, so an agent that
//! remembers the highest release it applied refuses an older one even when a compromised online key
//! re-signs old metadata that is otherwise valid.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::{Value, json};

use crate::digest::Sha256Digest;
use crate::tuf::metadata::TargetFile;

mod fields;
mod version;
mod waves;

pub use version::AgentVersion;
pub use waves::{SEED_SPACE, Wave, WaveDecision, Waves, parse_waves_spec, seed_for};

/// Why a release target or plan was refused. Names the target and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// Not a channel name.
    #[error("channel {0:?} is not 1-63 of [a-z0-9-], starting and ending with a letter or digit")]
    Channel(String),
    /// Release numbers start at 1.
    #[error("release numbers start at 1")]
    ReleaseZero,
    /// Not a semver version (or, for a minimum, not plain `X.Y.Z`).
    #[error("{0:?} is not a version X.Y.Z")]
    AgentVersion(String),
    /// `custom.mast` is present but a field is missing or wrong.
    #[error("target {target:?}: custom.mast.{field}: {reason}")]
    Field {
        /// The target.
        target: String,
        /// The field, e.g. `release` or `waves[1].start`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// `custom.mast` is present but not an object.
    #[error("target {0:?}: custom.mast is not an object")]
    NotAnObject(String),
    /// The target's path is not where its `custom.mast` says it belongs.
    #[error("target {target:?}: {reason}")]
    Path {
        /// The target.
        target: String,
        /// What disagrees.
        reason: String,
    },
    /// The bundle and index targets of one release disagree.
    #[error("targets {bundle:?} and {index:?} disagree on {field}")]
    Inconsistent {
        /// The bundle target.
        bundle: String,
        /// The index target.
        index: String,
        /// The field they disagree on.
        field: &'static str,
    },
    /// The newest release offered is older than the one trusted: a rollback, refused.
    #[error(
        "channel {channel}: newest release offered is {found}, below the trusted release {trusted}"
    )]
    Rollback {
        /// The channel.
        channel: Channel,
        /// The release the agent already trusts.
        trusted: ReleaseNumber,
        /// The newest release offered.
        found: ReleaseNumber,
    },
    /// The release needs a newer agent.
    #[error("release needs agent {required} or later, this is {running}")]
    AgentTooOld {
        /// `min_agent_version` of the release.
        required: AgentVersion,
        /// The running agent's version.
        running: AgentVersion,
    },
    /// A rollout plan out of order.
    #[error("waves[{wave}]: {reason}")]
    Waves {
        /// Index of the offending wave.
        wave: usize,
        /// What is wrong.
        reason: String,
    },
    /// A part of the `--waves` flag that does not parse.
    #[error("waves {part:?}: {reason}")]
    WavesSpec {
        /// The comma-separated part.
        part: String,
        /// What is wrong.
        reason: String,
    },
}

/// A channel name: a DNS label (`[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`), so it is safe in paths, URLs,
/// OCI tags and Kubernetes labels alike.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel(String);

impl Channel {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Channel {
    type Err = ReleaseError;

    fn from_str(s: &str) -> Result<Self, ReleaseError> {
        let b = s.as_bytes();
        let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = (1..=63).contains(&b.len())
            && b.first().is_some_and(inner)
            && b.last().is_some_and(inner)
            && b.iter().all(|c| inner(c) || *c == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ReleaseError::Channel(s.to_owned()))
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A release number, 1 or more, increasing per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseNumber(u64);

impl ReleaseNumber {
    /// `n`, which must be at least 1.
    pub fn new(n: u64) -> Result<Self, ReleaseError> {
        if n == 0 {
            return Err(ReleaseError::ReleaseZero);
        }
        Ok(Self(n))
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ReleaseNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which of a release's two targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReleaseKind {
    /// `bundle.tar.gz`, the whole bundle.
    Bundle,
    /// `index.json`, the chunk index.
    Index,
}

impl ReleaseKind {
    /// The value of `custom.mast.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bundle => "bundle",
            Self::Index => "index",
        }
    }

    /// The target's file name inside its release directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Bundle => "bundle.tar.gz",
            Self::Index => "index.json",
        }
    }
}

/// What both targets of a release say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The channel.
    pub channel: Channel,
    /// The release number.
    pub number: ReleaseNumber,
    /// SHA-256 of the uncompressed canonical tar, the bundle's identity whichever form it is fetched in.
    pub tar_sha256: Sha256Digest,
    /// Length of the uncompressed tar, a cap for decompression and reassembly.
    pub tar_length: u64,
    /// The oldest agent that can apply the release.
    pub min_agent_version: AgentVersion,
    /// The rollout plan; empty for everyone at once.
    pub waves: Waves,
}

/// A mast release target read from targets metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInfo {
    /// Bundle or index.
    pub kind: ReleaseKind,
    /// The release it belongs to.
    pub release: Release,
}

/// A target and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTarget {
    /// The target path.
    pub name: String,
    /// Its length, hashes and custom data.
    pub file: TargetFile,
}

/// The release an agent should move to, with both targets it can fetch it through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedRelease {
    /// Channel, number, tar digest and length, minimum agent version, waves.
    pub release: Release,
    /// `channels/C/N/bundle.tar.gz`.
    pub bundle: NamedTarget,
    /// `channels/C/N/index.json`.
    pub index: NamedTarget,
}

impl Release {
    /// `channels/C/N/FILE` for the target of `kind`.
    pub fn target_name(&self, kind: ReleaseKind) -> String {
        format!(
            "channels/{}/{}/{}",
            self.channel,
            self.number,
            kind.file_name()
        )
    }

    /// The `custom` object of the target of `kind`: `{"mast": {...}}`.
    pub fn custom(&self, kind: ReleaseKind) -> Value {
        let waves: Vec<Value> = self
            .waves
            .as_slice()
            .iter()
            .map(|w| json!({"seed_below": w.seed_below, "start": waves::DisplayTime(w.start).to_string()}))
            .collect();
        json!({"mast": {
            "kind": kind.as_str(),
            "channel": self.channel.as_str(),
            "release": self.number.get(),
            "tar_sha256": self.tar_sha256.to_hex(),
            "tar_length": self.tar_length,
            "min_agent_version": self.min_agent_version.to_string(),
            "waves": waves,
        }})
    }

    /// The target of `kind`, for the packager: its name and a [`TargetFile`] with the file's length and
    /// sha256 and the custom fields.
    pub fn target(
        &self,
        kind: ReleaseKind,
        file_length: u64,
        file_sha256: Sha256Digest,
    ) -> NamedTarget {
        NamedTarget {
            name: self.target_name(kind),
            file: TargetFile {
                length: file_length,
                hashes: [("sha256".to_owned(), file_sha256.to_hex())].into(),
                custom: Some(self.custom(kind)),
                extra: BTreeMap::new(),
            },
        }
    }
}

impl ReleaseInfo {
    /// Reads `custom.mast` of a target. `None` when there is none (not a mast release target); an error
    /// naming the target and field when it is there but malformed, or when the target's path is not
    /// `channels/CHANNEL/RELEASE/FILE` for the channel, release and kind it claims.
    pub fn from_target(name: &str, target: &TargetFile) -> Result<Option<Self>, ReleaseError> {
        let Some(mast) = target.custom.as_ref().and_then(|c| c.get("mast")) else {
            return Ok(None);
        };
        let obj = mast
            .as_object()
            .ok_or_else(|| ReleaseError::NotAnObject(name.to_owned()))?;
        let f = fields::Fields { target: name, obj };
        let kind = match f.str("kind")? {
            "bundle" => ReleaseKind::Bundle,
            "index" => ReleaseKind::Index,
            other => return Err(f.err("kind", format!("unknown kind {other:?}"))),
        };
        let channel: Channel = f
            .str("channel")?
            .parse()
            .map_err(|e: ReleaseError| f.err("channel", e.to_string()))?;
        let number =
            ReleaseNumber::new(f.u64("release")?).map_err(|e| f.err("release", e.to_string()))?;
        let tar_sha256 = f
            .str("tar_sha256")?
            .parse()
            .map_err(|e: crate::digest::DigestParseError| f.err("tar_sha256", e.to_string()))?;
        let tar_length = f.u64("tar_length")?;
        let min_agent_version = AgentVersion::parse_release(f.str("min_agent_version")?)
            .map_err(|e| f.err("min_agent_version", e.to_string()))?;
        let waves = f.waves()?;
        let release = Release {
            channel,
            number,
            tar_sha256,
            tar_length,
            min_agent_version,
            waves,
        };
        let expected = release.target_name(kind);
        if name != expected {
            return Err(ReleaseError::Path {
                target: name.to_owned(),
                reason: format!("custom.mast describes {expected}"),
            });
        }
        Ok(Some(Self { kind, release }))
    }
}

/// Chooses the release of `channel` to run: the highest whose bundle and index targets are both present.
///
/// - `Ok(None)`: the channel has no complete release.
/// - `Ok(Some(r))` with `r.release.number == trusted`: nothing new (the caller compares).
/// - [`ReleaseError::Rollback`]: the highest release offered is below `trusted`.
/// - [`ReleaseError::AgentTooOld`]: the highest release needs a newer agent. There is no falling back to
///   an older release the agent could run: that would be a rollback by another name.
/// - [`ReleaseError::Inconsistent`], [`ReleaseError::Field`], [`ReleaseError::Path`]: any target under
///   `channels/CHANNEL/` is malformed, or a pair disagrees. Targets of other channels are not read at all,
///   so a bad target on one channel cannot stop the others.
pub fn select_release<'a>(
    targets: impl IntoIterator<Item = (&'a str, &'a TargetFile)>,
    channel: &Channel,
    trusted: Option<ReleaseNumber>,
    agent_version: &AgentVersion,
) -> Result<Option<SelectedRelease>, ReleaseError> {
    let prefix = format!("channels/{channel}/");
    // Per release: (bundle, index), each with what its custom.mast says.
    type Slot = Option<(NamedTarget, Release)>;
    let mut pairs: BTreeMap<ReleaseNumber, (Slot, Slot)> = BTreeMap::new();
    for (name, file) in targets {
        if !name.starts_with(&prefix) {
            continue;
        }
        let Some(info) = ReleaseInfo::from_target(name, file)? else {
            continue;
        };
        let named = NamedTarget {
            name: name.to_owned(),
            file: file.clone(),
        };
        let entry = pairs.entry(info.release.number).or_default();
        // A name fixes channel, release and kind, so each slot is filled at most once.
        let slot = match info.kind {
            ReleaseKind::Bundle => &mut entry.0,
            ReleaseKind::Index => &mut entry.1,
        };
        *slot = Some((named, info.release));
    }
    let mut newest = None;
    for (bundle, index) in pairs.into_values() {
        let (Some((bundle, release)), Some((index, index_release))) = (bundle, index) else {
            continue;
        };
        check_consistent(&bundle.name, &index.name, &release, &index_release)?;
        // Ascending order: the last complete pair is the highest release.
        newest = Some((bundle, index, release));
    }
    let Some((bundle, index, release)) = newest else {
        return Ok(None);
    };
    if let Some(trusted) = trusted
        && release.number < trusted
    {
        return Err(ReleaseError::Rollback {
            channel: channel.clone(),
            trusted,
            found: release.number,
        });
    }
    if !agent_version.satisfies(&release.min_agent_version) {
        return Err(ReleaseError::AgentTooOld {
            required: release.min_agent_version,
            running: agent_version.clone(),
        });
    }
    Ok(Some(SelectedRelease {
        release,
        bundle,
        index,
    }))
}

/// Both targets of a release must describe the same release in every field, so that it does not matter
/// which one the agent fetches or reads the plan from.
fn check_consistent(
    bundle: &str,
    index: &str,
    b: &Release,
    i: &Release,
) -> Result<(), ReleaseError> {
    let field = if b.tar_sha256 != i.tar_sha256 {
        "tar_sha256"
    } else if b.tar_length != i.tar_length {
        "tar_length"
    } else if b.min_agent_version != i.min_agent_version {
        "min_agent_version"
    } else if b.waves != i.waves {
        "waves"
    } else {
        // Channel and release are fixed by the names, which share a directory.
        return Ok(());
    };
    Err(ReleaseError::Inconsistent {
        bundle: bundle.to_owned(),
        index: index.to_owned(),
        field,
    })
}

#[cfg(test)]
mod tests;
