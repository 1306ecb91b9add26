//! The typed errors of the TUF client workflow.

use time::OffsetDateTime;

use crate::tuf::metadata::{Expiry, MetadataError};
use crate::tuf::verify::{IntegrityError, ThresholdError};

/// Why a refresh or a target lookup failed. Every variant names the file involved, so an operator reading a
/// log line knows which mirror file to look at.
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    /// The file is not well-formed metadata of the expected role.
    #[error("{file}: {source}")]
    Metadata {
        /// The file as requested from the mirror.
        file: String,
        /// What was wrong with it.
        #[source]
        source: MetadataError,
    },
    /// Not enough distinct trusted keys signed the file.
    #[error("{file}: {source}")]
    Threshold {
        /// The file as requested from the mirror.
        file: String,
        /// Who signed and how many were needed.
        #[source]
        source: ThresholdError,
    },
    /// The next root does not follow the trusted one.
    #[error("{file}: root chain broken: {reason}")]
    RootChain {
        /// The file as requested from the mirror.
        file: String,
        /// What broke the chain.
        reason: RootChainError,
    },
    /// A version lower than one already trusted: a rollback attack, or a mirror serving stale files.
    #[error(
        "{file}: {role} version {found} is lower than the trusted version {trusted} (rollback refused)"
    )]
    Rollback {
        /// The file as requested from the mirror.
        file: String,
        /// The role whose version went backwards.
        role: String,
        /// The highest version trusted so far.
        trusted: u64,
        /// The version offered.
        found: u64,
    },
    /// A version other than the one the referring metadata pins.
    #[error("{file}: version {found} differs from version {expected} listed by {listed_by}")]
    VersionMismatch {
        /// The file as requested from the mirror.
        file: String,
        /// The role that listed the version.
        listed_by: &'static str,
        /// The listed version.
        expected: u64,
        /// The version found in the file.
        found: u64,
    },
    /// The newest trusted metadata of a role has expired: a freeze attack, or a repository whose online
    /// keys stopped re-signing. What already runs keeps running; nothing new is applied.
    #[error(
        "{file}: {role} metadata expired at {expires} (now {}); freeze attack or stale repository",
        Expiry::new(*now)
    )]
    Expired {
        /// The file as requested from the mirror (or the trusted copy).
        file: String,
        /// The expired role.
        role: String,
        /// When it expired.
        expires: Expiry,
        /// The time the update cycle started.
        now: OffsetDateTime,
    },
    /// The bytes differ from the signed length or hashes, or exceed a size cap.
    #[error("{file}: {source}")]
    Integrity {
        /// The file as requested from the mirror.
        file: String,
        /// The mismatch.
        #[source]
        source: IntegrityError,
    },
    /// The mirror lacks a file the trusted metadata requires.
    #[error("{file} is missing from the mirror")]
    Missing {
        /// The file as requested from the mirror.
        file: String,
    },
    /// A targets role referred to by a delegation is not in snapshot.
    #[error("snapshot does not list {role}.json, which a delegation refers to")]
    NotInSnapshot {
        /// The delegated role.
        role: String,
    },
    /// No trusted targets role lists the target.
    #[error("target {0:?} is not listed by any trusted targets role")]
    TargetNotFound(String),
    /// The caller drove the state machine out of order (a bug in the caller, not the mirror).
    #[error("TUF client used out of order: {0}")]
    Usage(&'static str),
}

/// What broke a root chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootChainError {
    /// `N+1.root.json` does not hold version N+1.
    #[error("expected version {expected}, found {found}")]
    Version {
        /// N+1.
        expected: u64,
        /// The version in the file.
        found: u64,
    },
    /// The new root lacks a threshold of the trusted root's root keys.
    #[error("not signed by a threshold of the trusted root's keys: {0}")]
    NotSignedByTrusted(ThresholdError),
    /// The new root lacks a threshold of its own root keys.
    #[error("not signed by a threshold of its own keys: {0}")]
    NotSelfSigned(ThresholdError),
}

/// The class of a [`TufError`], for metrics, exit codes and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Not valid metadata.
    Malformed,
    /// A `spec_version` other than 1.x.
    SpecVersion,
    /// A signature threshold not met (including on a new root).
    Threshold,
    /// A root version that does not follow the trusted one.
    RootChain,
    /// A version lower than trusted.
    Rollback,
    /// A version other than the pinned one.
    VersionMismatch,
    /// Expired metadata.
    Expired,
    /// Longer or shorter than signed, or over a cap.
    Length,
    /// A hash mismatch.
    Hash,
    /// A required file is not on the mirror.
    Missing,
    /// The target is not listed.
    TargetNotFound,
    /// A caller bug.
    Usage,
}

impl ErrorKind {
    /// A stable snake_case name, used as a metrics label and in test fixtures.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::SpecVersion => "spec_version",
            Self::Threshold => "threshold",
            Self::RootChain => "root_chain",
            Self::Rollback => "rollback",
            Self::VersionMismatch => "version_mismatch",
            Self::Expired => "expired",
            Self::Length => "length",
            Self::Hash => "hash",
            Self::Missing => "missing",
            Self::TargetNotFound => "target_not_found",
            Self::Usage => "usage",
        }
    }
}

impl TufError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Metadata {
                source: MetadataError::SpecVersion { .. },
                ..
            } => ErrorKind::SpecVersion,
            Self::Metadata { .. } => ErrorKind::Malformed,
            Self::Threshold { .. } => ErrorKind::Threshold,
            Self::RootChain {
                reason: RootChainError::Version { .. },
                ..
            } => ErrorKind::RootChain,
            Self::RootChain { .. } => ErrorKind::Threshold,
            Self::Rollback { .. } => ErrorKind::Rollback,
            Self::VersionMismatch { .. } => ErrorKind::VersionMismatch,
            Self::Expired { .. } => ErrorKind::Expired,
            Self::Integrity {
                source: IntegrityError::Hash { .. } | IntegrityError::NoKnownHash(_),
                ..
            } => ErrorKind::Hash,
            Self::Integrity { .. } => ErrorKind::Length,
            Self::Missing { .. } | Self::NotInSnapshot { .. } => ErrorKind::Missing,
            Self::TargetNotFound(_) => ErrorKind::TargetNotFound,
            Self::Usage(_) => ErrorKind::Usage,
        }
    }
}
