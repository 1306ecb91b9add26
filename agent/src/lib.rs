//! The mast edge agent.
//!
//! The agent pulls signed, content-addressed bundles from an ordered list of mirrors, verifies them with
//! [`mast_protocol`]'s TUF client workflow, and applies them to the local cluster.
//!
//! - [`config`]: the TOML file, `MAST_*` variables and flags, parsed into typed values.
//! - [`schedule`]: when to poll next (interval, jitter, backoff, `Retry-After`) and when a release may be
//!   applied (rollout waves, change windows), as pure functions of time.
//! - [`state`]: the SQLite database that holds everything a site must not lose.
//! - [`telemetry`]: logs, metrics, the admin endpoints and systemd notification.
//!
//! The fetch loop (mirrors, downloads) and the apply side (server-side apply, prune, health, rollback,
//! drift) are not written yet; see the README's status table.

pub mod config;
pub mod fetch;
pub mod schedule;
pub mod state;
pub mod telemetry;

/// The agent's own version, compared with a release's signed minimum agent version.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
