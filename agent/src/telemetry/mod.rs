//! What the agent tells the people and the supervisors watching it: logs, metrics, health endpoints and
//! systemd notifications.
//!
//! Everything here is set up once by the binary and then shared by handle:
//!
//! - [`init`] installs the process-wide `tracing` subscriber (plain or JSON, filter from `RUST_LOG`);
//!   [`sync_pass_span`] and [`apply_span`] give every pass and apply the same structured fields.
//! - [`Metrics`] holds every Prometheus family the fetch and apply code update; updates are atomic
//!   operations, so any task may hold an `Arc<Metrics>` and record without coordination.
//! - [`TelemetryServer`] serves `/metrics`, `/healthz`, `/readyz` and `/status` from a [`Readiness`]
//!   handle and a [`StatusSource`] that the agent implements.
//! - [`Notifier`] speaks systemd's `sd_notify` protocol, and [`Watchdog`] pings systemd only while the
//!   agent's main loop keeps its [`Liveness`] lease, so a wedged loop gets the process restarted.
//!
//! `docs/observability.md` lists every metric and endpoint and shows how to wire the systemd watchdog.

use std::io;
use std::net::SocketAddr;

mod labels;
mod logging;
mod metrics;
mod readiness;
mod server;
mod systemd;

pub use labels::{
    ApplyOutcome, DriftKind, FileKind, MirrorKind, PollOutcome, StatusClass, TufRole,
    VerificationFailure,
};
pub use logging::{
    DEFAULT_FILTER, FILTER_ENV, LogFormat, apply_span, init, init_with_filter, parse_filter,
    record_release, subscriber, sync_pass_span,
};
pub use metrics::{ExpositionFormat, Metrics};
pub use readiness::{NotReady, Readiness};
pub use server::{DEFAULT_ADDR, Endpoints, ServerLimits, StatusSource, TelemetryServer};
pub use systemd::{
    Liveness, NOTIFY_SOCKET_ENV, Notifier, NotifyState, WATCHDOG_PID_ENV, WATCHDOG_USEC_ENV,
    Watchdog,
};

/// Why telemetry could not be set up, or a notification could not be sent.
///
/// Set-up errors (a bad filter, a bad `NOTIFY_SOCKET`, a port in use) are configuration errors: the binary
/// reports them and exits with `EX_USAGE` before the agent starts. Send errors are for logging only; the
/// agent never stops because systemd or a scraper is away.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A log filter that `tracing_subscriber::EnvFilter` cannot parse.
    #[error("{origin} is not a valid log filter ({directives:?}): {source}")]
    LogFilter {
        /// Where the directives came from: `RUST_LOG` or the caller.
        origin: &'static str,
        /// The directives as given.
        directives: String,
        /// What the parser said.
        source: tracing_subscriber::filter::ParseError,
    },
    /// An environment variable that is set but is not UTF-8.
    #[error("{var} is set but is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: &'static str,
    },
    /// A log format other than `plain` or `json`.
    #[error("unknown log format {0:?}: expected \"plain\" or \"json\"")]
    LogFormat(String),
    /// [`init`] was called when a global subscriber was already installed.
    #[error("logging is already initialised in this process")]
    LoggingAlreadyInitialized,
    /// The telemetry server could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// `NOTIFY_SOCKET` holds something that is neither an absolute path nor an abstract name.
    #[error(
        "{NOTIFY_SOCKET_ENV}={value:?} is neither an absolute path nor an abstract socket (@name)"
    )]
    NotifySocket {
        /// The value.
        value: String,
    },
    /// `WATCHDOG_USEC` or `WATCHDOG_PID` holds something that is not a positive integer.
    #[error("{var}={value:?} is not a positive integer")]
    WatchdogEnv {
        /// The variable.
        var: &'static str,
        /// The value.
        value: String,
    },
    /// A notification could not be sent to systemd.
    #[error("cannot notify systemd at {socket}: {source}")]
    Notify {
        /// The socket, as `NOTIFY_SOCKET` named it.
        socket: String,
        /// The socket error.
        source: io::Error,
    },
}
