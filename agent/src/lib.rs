//! The mast edge agent.
//!
//! The agent pulls signed, content-addressed bundles from an ordered list of mirrors, verifies them with
//! [`mast_protocol`]'s TUF client workflow, and applies them to the local cluster. The fetch side (mirrors,
//! SQLite state, scheduler) and the apply side (server-side apply, prune, health, rollback, drift) land in
//! their own modules; this crate currently carries the command-line surface only.

pub mod telemetry;

/// The agent's own version, compared with a release's signed minimum agent version.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
