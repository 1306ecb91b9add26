//! The label values of the agent's metrics: closed enums, so that a typo cannot open a new series and the
//! cardinality of every family is known from its type.

use std::fmt::{self, Write as _};

use mast_protocol::tuf::{ErrorKind, RoleName};
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Declares a label enum with its `/metrics` spelling, an `ALL` list (families are pre-filled with every
/// value, so `rate()` sees a series from zero rather than from its first event) and the label encoding.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $( $(#[$vmeta])* $variant, )+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The label value as it appears in `/metrics`.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// How a poll (one sync pass's refresh of the trusted metadata) ended.
    pub enum PollOutcome {
        /// New trusted metadata was verified and stored.
        Updated => "updated",
        /// A mirror answered and nothing had changed (typically one `304` for `timestamp.json`).
        Unchanged => "unchanged",
        /// No mirror could be reached: the link is down. Expected at the edge; not an alarm by itself.
        Unreachable => "unreachable",
        /// Mirrors answered, but everything they served failed verification.
        Rejected => "rejected",
        /// A local failure: the state database, the disk.
        Failed => "failed",
    }
}

label_enum! {
    /// The transport a mirror is reached through.
    pub enum MirrorKind {
        /// `http://` or `https://`: a CDN or a static origin.
        Http => "http",
        /// `oci://`: an OCI distribution registry.
        Oci => "oci",
        /// `file://` or an imported directory: the air-gap path.
        File => "file",
    }
}

label_enum! {
    /// What a request fetched.
    pub enum FileKind {
        /// TUF metadata (`timestamp.json`, `N.root.json`, …).
        Metadata => "metadata",
        /// A whole target (`bundle.tar.gz`, `index.json`).
        Target => "target",
        /// One chunk of a chunk index.
        Chunk => "chunk",
    }
}

label_enum! {
    /// The class of a response status, or a transport error that produced none.
    ///
    /// Non-HTTP mirrors map their results onto the same classes (a file read is `2xx`, a missing file `4xx`)
    /// so one query covers every mirror kind.
    pub enum StatusClass {
        /// 1xx.
        Informational => "1xx",
        /// 2xx.
        Success => "2xx",
        /// 3xx, including `304 Not Modified`.
        Redirection => "3xx",
        /// 4xx.
        ClientError => "4xx",
        /// 5xx.
        ServerError => "5xx",
        /// No response: connect, TLS or read failure, timeout.
        TransportError => "error",
    }
}

label_enum! {
    /// A top-level TUF role. Delegated roles are not given series: their names come from signed metadata,
    /// and a metric's cardinality should not be set by a repository.
    pub enum TufRole {
        /// `root`.
        Root => "root",
        /// `timestamp`.
        Timestamp => "timestamp",
        /// `snapshot`.
        Snapshot => "snapshot",
        /// `targets`.
        Targets => "targets",
    }
}

label_enum! {
    /// How an apply ended (the apply journal's terminal states).
    pub enum ApplyOutcome {
        /// Applied and passed the health gate.
        Healthy => "healthy",
        /// Applied, then failed the health gate or timed out in it.
        Unhealthy => "unhealthy",
        /// The API server refused the apply.
        Failed => "failed",
        /// The last healthy release was re-applied after a failure.
        RolledBack => "rolled_back",
        /// Re-applying the last healthy release failed too: the site needs a person.
        RollbackFailed => "rollback_failed",
    }
}

label_enum! {
    /// What a drift check found about an applied object.
    pub enum DriftKind {
        /// The live object's managed fields differ from what was applied.
        Modified => "modified",
        /// The object was deleted out of band.
        Missing => "missing",
    }
}

/// Why fetched bytes were refused.
///
/// TUF failures carry the protocol's own [`ErrorKind`], so the label values (`rollback`, `expired`, …) are
/// the same strings as in its errors and test fixtures; chunk and pack failures are the agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerificationFailure {
    /// The TUF client workflow refused metadata or a target.
    Tuf(ErrorKind),
    /// A chunk longer than its index entry says.
    ChunkLength,
    /// A chunk whose sha256 is not the one its index names.
    ChunkHash,
    /// A chunk pack longer than its index says.
    PackLength,
}

impl VerificationFailure {
    /// Every value, for pre-filling the family.
    pub const ALL: &'static [Self] = &[
        Self::Tuf(ErrorKind::Malformed),
        Self::Tuf(ErrorKind::SpecVersion),
        Self::Tuf(ErrorKind::Threshold),
        Self::Tuf(ErrorKind::RootChain),
        Self::Tuf(ErrorKind::Rollback),
        Self::Tuf(ErrorKind::VersionMismatch),
        Self::Tuf(ErrorKind::Expired),
        Self::Tuf(ErrorKind::Length),
        Self::Tuf(ErrorKind::Hash),
        Self::Tuf(ErrorKind::Missing),
        Self::Tuf(ErrorKind::TargetNotFound),
        Self::ChunkLength,
        Self::ChunkHash,
        Self::PackLength,
    ];

    /// The label value as it appears in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tuf(kind) => kind.as_str(),
            Self::ChunkLength => "chunk_length",
            Self::ChunkHash => "chunk_hash",
            Self::PackLength => "pack_length",
        }
    }
}

impl From<ErrorKind> for VerificationFailure {
    fn from(kind: ErrorKind) -> Self {
        Self::Tuf(kind)
    }
}

impl fmt::Display for VerificationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for VerificationFailure {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl StatusClass {
    /// The class of an HTTP status code; codes outside 100–599 are protocol violations and count as
    /// transport errors.
    pub fn from_code(code: u16) -> Self {
        match code {
            100..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirection,
            400..=499 => Self::ClientError,
            500..=599 => Self::ServerError,
            _ => Self::TransportError,
        }
    }
}

impl TufRole {
    /// The top-level role `name` is, or `None` for a delegated role.
    pub fn from_role_name(name: &RoleName) -> Option<Self> {
        match name {
            RoleName::Root => Some(Self::Root),
            RoleName::Timestamp => Some(Self::Timestamp),
            RoleName::Snapshot => Some(Self::Snapshot),
            RoleName::Targets => Some(Self::Targets),
            RoleName::Delegated(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_fall_into_their_class() {
        assert_eq!(StatusClass::from_code(200), StatusClass::Success);
        assert_eq!(StatusClass::from_code(206), StatusClass::Success);
        assert_eq!(StatusClass::from_code(304), StatusClass::Redirection);
        assert_eq!(StatusClass::from_code(416), StatusClass::ClientError);
        assert_eq!(StatusClass::from_code(503), StatusClass::ServerError);
        assert_eq!(StatusClass::from_code(99), StatusClass::TransportError);
        assert_eq!(StatusClass::from_code(600), StatusClass::TransportError);
    }

    #[test]
    fn verification_reasons_use_the_protocols_names_and_are_distinct() {
        assert_eq!(
            VerificationFailure::from(ErrorKind::Rollback).as_str(),
            "rollback"
        );
        assert_eq!(
            VerificationFailure::from(ErrorKind::TargetNotFound).as_str(),
            "target_not_found"
        );
        let mut names: Vec<_> = VerificationFailure::ALL
            .iter()
            .map(|v| v.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VerificationFailure::ALL.len());
    }

    #[test]
    fn delegated_roles_have_no_series() {
        assert_eq!(
            TufRole::from_role_name(&RoleName::Snapshot),
            Some(TufRole::Snapshot)
        );
        assert_eq!(
            TufRole::from_role_name(&RoleName::Delegated("team".into())),
            None
        );
    }
}
