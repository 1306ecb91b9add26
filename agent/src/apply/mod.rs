//! Where a verified release goes: the [`Applier`] trait, and its `dir:` implementation.
//!
//! An applier receives only files that came out of a tar whose sha256 matched the signed release, walked
//! by the safe walker; it never sees unverified bytes. It does three things to a release, each bounded:
//! make the target hold exactly the release's objects ([`Applier::apply`], pruning what left the release
//! within the bundle's delete guard), wait for them to become healthy ([`Applier::wait_healthy`]), and
//! compare the live target with the release ([`Applier::drift`]). The sync pass decides what follows —
//! journal entries, rollback to the last healthy release, drift reports — so every applier gets the same
//! guarantees.
//!
//! The `dir:` applier writes the manifests as files into a directory — the k3s/RKE2 auto-deploy
//! directory, whose deploy controller applies them — and is the default when no cluster is configured.
//! The `kube` applier server-side applies them to the cluster, waits for their rollout and compares
//! the live objects with the release.

mod dir;
mod kube;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mast_protocol::bundle::TarFile;
use mast_protocol::bundle::options::BundleOptions;
use mast_protocol::release::Channel;

pub use dir::DirApplier;
pub use kube::{FIELD_MANAGER, KubeApplier, PRUNE_ANNOTATION};

/// A boxed future, so that appliers stay usable as `dyn Applier`.
pub type ApplyFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApplyError>> + Send + 'a>>;

/// Why a release could not be applied, checked or compared. Names the file or object.
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
    /// The prune would delete more than the bundle's `max_delete` allows; nothing was deleted.
    #[error(
        "prune refused: {would_delete} of {previous} objects would be deleted, more than max_delete allows \
         ({fraction} of the inventory, {count} objects); nothing was deleted"
    )]
    PruneGuard {
        /// Objects the prune would delete.
        would_delete: usize,
        /// Objects in the previous inventory.
        previous: usize,
        /// The allowed fraction.
        fraction: f64,
        /// The allowed count.
        count: u64,
    },
    /// A manifest in the release is not an object the applier can handle.
    #[error("{file}: {reason}")]
    Object {
        /// The bundle file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The cluster could not be reached, or kept answering 429/5xx, through the applier's retries. Not
    /// the release's fault: the pass fails and the release is applied again later; it is neither
    /// journalled as failed nor rolled back (a rollback would need the same unreachable API server).
    #[error("{object}: the API server is unavailable: {reason}")]
    Unavailable {
        /// The object (`apps/v1 Deployment edge/web`) or request.
        object: String,
        /// The last answer, or the connection error.
        reason: String,
    },
    /// The cluster refused or failed a request.
    #[error("{object}: {reason}")]
    Cluster {
        /// The object (`apps/v1 Deployment edge/web`) or request.
        object: String,
        /// The API server's answer.
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
    /// The bundle's options (`mast.toml`), defaults when it has none.
    pub options: &'a BundleOptions,
    /// The objects the previous apply on this channel left in place (its [`ApplyReport::inventory`],
    /// kept in the state database): what a prune compares against.
    pub previous: &'a [String],
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Objects written or changed.
    pub written: usize,
    /// Objects left as they were (same content).
    pub unchanged: usize,
    /// Objects removed because the release no longer has them.
    pub pruned: usize,
    /// Every object the target now holds for this channel, by a key the applier chooses and reads back
    /// from [`ApplyRequest::previous`] next time (a bundle path, `group/kind/namespace/name`).
    pub inventory: Vec<String>,
}

/// Whether a release's objects became healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Every object is healthy.
    Healthy,
    /// An object failed, or the timeout passed first.
    Unhealthy {
        /// Which object and why (`apps/v1 Deployment edge/web: 1/3 replicas available after 300s`).
        reason: String,
    },
}

/// One object whose live state differs from what the release applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftFinding {
    /// The object (a bundle file for `dir:`, `apps/v1 Deployment edge/web` for a cluster).
    pub object: String,
    /// How it differs (`missing`, `changed: /spec/replicas`).
    pub detail: String,
}

/// Applies releases. One implementation per kind of target; the sync pass does not care which.
pub trait Applier: Send {
    /// Makes the target hold exactly `request`'s objects, removing what the previous release had and
    /// this one does not (unless the bundle says orphan, and never past its delete guard). Idempotent:
    /// re-applying the same release changes nothing, and applying after a crash mid-apply completes it.
    fn apply<'a>(&'a mut self, request: &'a ApplyRequest<'a>) -> ApplyFuture<'a, ApplyReport>;

    /// Waits until `request`'s objects are healthy, one fails, or `timeout` passes.
    fn wait_healthy<'a>(
        &'a mut self,
        request: &'a ApplyRequest<'a>,
        timeout: Duration,
    ) -> ApplyFuture<'a, Health>;

    /// Compares the live target with `request` (the release that was applied) and returns the
    /// differences, without changing anything.
    fn drift<'a>(&'a mut self, request: &'a ApplyRequest<'a>)
    -> ApplyFuture<'a, Vec<DriftFinding>>;

    /// The applier, for logs and status (`dir:/var/lib/rancher/k3s/server/manifests/mast`).
    fn describe(&self) -> String;
}
