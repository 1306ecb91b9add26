//! Whether the agent can do its job, as `/readyz` reports it.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A shared handle on the agent's readiness; clones see the same state.
///
/// The agent is ready when it holds a trusted root, its state database is open, and its last pass did not
/// fail hard. A link that is down is not a hard failure (sites are offline for days by design); a
/// database that cannot be written, or a rollback that failed, is. A new handle is not ready: the agent
/// has neither a root nor a database until it says so.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    state: Arc<Mutex<State>>,
}

/// Why the agent is not ready: one line per unmet condition, in the `/readyz` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// The unmet conditions, in a fixed order.
    pub reasons: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    trusted_root: Option<u64>,
    state_db_open: bool,
    hard_failure: Option<String>,
}

impl Readiness {
    /// A handle on a not-yet-ready agent.
    pub fn new() -> Self {
        Self::default()
    }

    /// The agent trusts root metadata of this version.
    pub fn set_trusted_root(&self, version: u64) {
        self.lock().trusted_root = Some(version);
    }

    /// The agent has no trusted root (the initial root was missing or could not be loaded).
    pub fn clear_trusted_root(&self) {
        self.lock().trusted_root = None;
    }

    /// The state database is open and migrated.
    pub fn state_db_opened(&self) {
        self.lock().state_db_open = true;
    }

    /// The state database was closed or found unusable.
    pub fn state_db_closed(&self) {
        self.lock().state_db_open = false;
    }

    /// A pass ended without a hard failure (an unreachable mirror included); clears an earlier one.
    pub fn pass_completed(&self) {
        self.lock().hard_failure = None;
    }

    /// A pass failed in a way that needs attention; `reason` is shown by `/readyz` until a pass completes.
    pub fn pass_failed_hard(&self, reason: impl Into<String>) {
        self.lock().hard_failure = Some(reason.into());
    }

    /// `Ok` when ready, else every reason why not.
    pub fn check(&self) -> Result<(), NotReady> {
        let state = self.lock();
        let mut reasons = Vec::new();
        if state.trusted_root.is_none() {
            reasons.push("no trusted root".to_owned());
        }
        if !state.state_db_open {
            reasons.push("state database is not open".to_owned());
        }
        if let Some(reason) = &state.hard_failure {
            reasons.push(format!("last pass failed: {reason}"));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(NotReady { reasons })
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a plain field store or read, so a panic elsewhere cannot leave the
        // state half-written: a poisoned lock is still good to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for reason in &self.reasons {
            writeln!(f, "{reason}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_root_and_a_database_and_no_hard_failure() {
        let readiness = Readiness::new();
        let shared = readiness.clone();
        assert_eq!(
            readiness.check().unwrap_err().reasons,
            ["no trusted root", "state database is not open"]
        );
        shared.set_trusted_root(3);
        shared.state_db_opened();
        assert_eq!(readiness.check(), Ok(()));
        shared.pass_failed_hard("cannot write the journal: disk full");
        assert_eq!(
            readiness.check().unwrap_err().to_string(),
            "last pass failed: cannot write the journal: disk full\n"
        );
        shared.pass_completed();
        assert_eq!(readiness.check(), Ok(()));
        shared.state_db_closed();
        shared.clear_trusted_root();
        assert_eq!(readiness.check().unwrap_err().reasons.len(), 2);
    }
}
