//! The mast edge agent.
//!
//! The agent pulls signed, content-addressed bundles from an ordered list of mirrors, verifies them with
//! [`mast_protocol`]'s TUF client workflow, and applies them to the local cluster.
//!
//! - [`config`]: the TOML file, `MAST_*` variables and flags, parsed into typed values.
//! - [`state`]: the SQLite database that holds everything a site must not lose.
//! - [`sync`]: one pass — refresh trust across mirrors, select the release, fetch the missing chunks,
//!   gate on wave and window, apply.
//! - [`fetch`]: resumable downloads of large objects.
//! - [`apply`]: the [`apply::Applier`] trait, the `dir:` applier and the `kube` applier (server-side
//!   apply, health gate, drift).
//! - [`freshness`]: whether the site's view of its channel is current (last refresh, metadata expiry,
//!   the `stale` verdict), from the database alone.
//! - [`schedule`]: when to poll next (interval, jitter, backoff, `Retry-After`) and when a release may be
//!   applied (rollout waves, change windows), as pure functions of time.
//! - [`cmd`]: the commands (`once`, `run`, `status`, `import`) the thin `main` calls.
//! - [`telemetry`]: logs, metrics, the admin endpoints and systemd notification.
//! - [`tuf_cli`]: `mast-agent tuf`, a plain TUF client with the conformance suite's command line.

pub mod apply;
pub mod cmd;
pub mod config;
pub mod fetch;
pub mod freshness;
pub mod schedule;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod tuf_cli;

/// The agent's own version, compared with a release's signed minimum agent version.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
