//! Where a verified release goes: the [`Applier`] trait, and its `dir:` implementation.
//!
//! An applier receives only files that came out of a tar whose sha256 matched the signed release, walked
//! by the safe walker; it never sees unverified bytes. The `dir:` applier writes the manifests as files
//! into a directory — the k3s/RKE2 auto-deploy directory, which their deploy controllers apply — and is
//! the default when no cluster is configured. Server-side apply to a Kubernetes API server, prune guards
//! and health gates belong to the cluster applier (see the README's status table).

mod dir;

use mast_protocol::bundle::TarFile;
use mast_protocol::release::Channel;

pub use dir::DirApplier;

/// Why a release could not be applied. Names the file or object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Writing, renaming or removing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The applier's own record of what it wrote is unreadable.
    #[error("{path}: {reason}")]
    Inventory {
        /// The record.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A release as the applier sees it.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRequest<'a> {
    /// The channel.
    pub channel: &'a Channel,
    /// The release number.
    pub release: u64,
    /// The release's files, verified and walked.
    pub files: &'a [TarFile<'a>],
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Objects (files) written or changed.
    pub written: usize,
    /// Objects left as they were (same content).
    pub unchanged: usize,
    /// Objects removed because the release no longer has them.
    pub pruned: usize,
}

/// Applies releases. One implementation per kind of target; the sync pass does not care which.
pub trait Applier {
    /// Makes the target hold exactly `request`'s objects, removing what the previous release had and
    /// this one does not. Must be idempotent: re-applying the same release changes nothing, and applying
    /// after a crash mid-apply completes it.
    fn apply(&mut self, request: &ApplyRequest<'_>) -> Result<ApplyReport, ApplyError>;

    /// The applier, for logs and status (`dir:/var/lib/rancher/k3s/server/manifests/mast`).
    fn describe(&self) -> String;
}
