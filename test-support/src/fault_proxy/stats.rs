//! What the proxy did: counters for the whole proxy, and a record per faulted connection.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::plan::Faults;

/// A fault that took effect on a connection. Planned faults that never triggered (a cut past the end of
/// a short response, a stall offset never reached) are not counted: the soak report compares these
/// counts with the faults the agent detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Accepted and closed cleanly before anything was forwarded.
    Refused,
    /// The client's side was reset (a refusal, a cut or a disconnect with [`Close::Reset`]).
    ///
    /// [`Close::Reset`]: super::Close::Reset
    Reset,
    /// The client's side was closed cleanly in the middle of the stream (a cut or a disconnect).
    Truncated,
    /// Downstream forwarding stopped for a stall.
    Stalled,
    /// Bytes were forwarded under a throttle.
    Throttled,
    /// A downstream byte was changed.
    Corrupted,
    /// Forwarding waited while the proxy was paused.
    Paused,
}

/// Counters since the proxy started. Fault counts count connections: a connection corrupted twice or
/// paused three times counts once for that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted (refused ones included).
    pub accepted: u64,
    /// Connections whose upstream could not be reached; the client was reset.
    pub upstream_failures: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections stalled now.
    pub stalled_now: u64,
    /// Bytes forwarded upstream → client.
    pub bytes_downstream: u64,
    /// Bytes forwarded client → upstream.
    pub bytes_upstream: u64,
    /// Connections refused ([`FaultKind::Refused`]).
    pub refused: u64,
    /// Connections reset ([`FaultKind::Reset`]).
    pub reset: u64,
    /// Connections truncated ([`FaultKind::Truncated`]).
    pub truncated: u64,
    /// Connections stalled ([`FaultKind::Stalled`]).
    pub stalled: u64,
    /// Connections throttled ([`FaultKind::Throttled`]).
    pub throttled: u64,
    /// Connections corrupted ([`FaultKind::Corrupted`]).
    pub corrupted: u64,
    /// Connections paused ([`FaultKind::Paused`]).
    pub paused: u64,
}

/// One faulted connection: its plan and what took effect so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// Its place in accept order, from 0 (what [`RandomFaults::plan_for`] takes).
    ///
    /// [`RandomFaults::plan_for`]: super::RandomFaults::plan_for
    pub index: u64,
    /// The plan it was given.
    pub planned: Faults,
    /// The faults that took effect, in order.
    pub injected: Vec<FaultKind>,
}

impl ProxyStats {
    /// The count of one fault kind.
    pub fn faults(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::Refused => self.refused,
            FaultKind::Reset => self.reset,
            FaultKind::Truncated => self.truncated,
            FaultKind::Stalled => self.stalled,
            FaultKind::Throttled => self.throttled,
            FaultKind::Corrupted => self.corrupted,
            FaultKind::Paused => self.paused,
        }
    }

    /// All fault counts added up.
    pub fn faults_total(&self) -> u64 {
        self.refused
            + self.reset
            + self.truncated
            + self.stalled
            + self.throttled
            + self.corrupted
            + self.paused
    }
}

/// The live counters: plain atomics, read as a consistent-enough snapshot by [`Counters::snapshot`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) upstream_failures: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) stalled_now: AtomicU64,
    pub(crate) bytes_downstream: AtomicU64,
    pub(crate) bytes_upstream: AtomicU64,
    faults: [AtomicU64; 7],
}

/// Per-connection state shared by its pumps: the plan, and the kinds already counted.
#[derive(Debug)]
pub(crate) struct ConnState {
    pub(crate) index: u64,
    pub(crate) planned: Faults,
    injected: Mutex<Vec<FaultKind>>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ProxyStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let fault = |kind: FaultKind| get(&self.faults[kind.slot()]);
        ProxyStats {
            accepted: get(&self.accepted),
            upstream_failures: get(&self.upstream_failures),
            open: get(&self.open),
            stalled_now: get(&self.stalled_now),
            bytes_downstream: get(&self.bytes_downstream),
            bytes_upstream: get(&self.bytes_upstream),
            refused: fault(FaultKind::Refused),
            reset: fault(FaultKind::Reset),
            truncated: fault(FaultKind::Truncated),
            stalled: fault(FaultKind::Stalled),
            throttled: fault(FaultKind::Throttled),
            corrupted: fault(FaultKind::Corrupted),
            paused: fault(FaultKind::Paused),
        }
    }
}

impl ConnState {
    pub(crate) fn new(index: u64, planned: Faults) -> Self {
        Self {
            index,
            planned,
            injected: Mutex::new(Vec::new()),
        }
    }

    /// Notes that `kind` took effect, counting it once per connection.
    pub(crate) fn inject(&self, kind: FaultKind, counters: &Counters) {
        // A poisoned lock only means a pump panicked mid-push; the list is still a list.
        let mut injected = self
            .injected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !injected.contains(&kind) {
            injected.push(kind);
            counters.faults[kind.slot()].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record(&self) -> ConnectionRecord {
        let injected = self
            .injected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        ConnectionRecord {
            index: self.index,
            planned: self.planned.clone(),
            injected,
        }
    }
}

impl FaultKind {
    fn slot(self) -> usize {
        match self {
            Self::Refused => 0,
            Self::Reset => 1,
            Self::Truncated => 2,
            Self::Stalled => 3,
            Self::Throttled => 4,
            Self::Corrupted => 5,
            Self::Paused => 6,
        }
    }
}
