//! systemd's `sd_notify` protocol, and a watchdog that pings only while the agent's main loop is alive.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (a path,
//! or an abstract name written with a leading `@`). It is a few lines over std's `UnixDatagram`, so no crate
//! and no `unsafe` are needed. Without `$NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every
//! notification is a no-op.

use std::env::{self, VarError};
use std::future::Future;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram as StdUnixDatagram};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::time::{Instant, MissedTickBehavior};

use super::TelemetryError;

/// The variable systemd sets to the notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The variable systemd sets to `WatchdogSec=` in microseconds.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The variable naming the process the watchdog is meant for (absent: the main process).
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// Sends notifications to systemd, or nothing when not run under it.
#[derive(Debug, Clone)]
pub struct Notifier {
    target: Option<Target>,
}

/// One assignment of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyState {
    /// `READY=1`: start-up finished; `systemctl start` returns.
    Ready,
    /// `STOPPING=1`: shutdown began.
    Stopping,
    /// `STATUS=…`: a one-line status shown by `systemctl status`. Newlines are sent as spaces.
    Status(String),
    /// `WATCHDOG=1`: the keep-alive ping.
    Watchdog,
}

/// The main loop's promise to show signs of life again before a deadline.
///
/// The loop calls [`renew`](Self::renew) with the longest it may take until it renews next: the bounded
/// duration of the step it starts, or the poll interval it is about to sleep. The watchdog pings systemd
/// only while the deadline lies ahead, so a loop stuck in a step past its bound stops the pings and
/// systemd restarts the agent after `WatchdogSec`. A new lease has expired: nothing is pinged before the
/// loop first runs.
#[derive(Debug, Clone)]
pub struct Liveness {
    inner: Arc<LivenessInner>,
}

/// Pings `WATCHDOG=1` at half of systemd's watchdog timeout while a [`Liveness`] lease holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

#[derive(Debug)]
struct LivenessInner {
    /// tokio's clock, so that tests with paused time drive leases and ticks alike.
    origin: Instant,
    /// Microseconds after `origin` at which the lease ends; 0 before the first renewal.
    deadline_micros: AtomicU64,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for; a no-op one when it is unset or empty.
    pub fn from_env() -> Result<Self, TelemetryError> {
        match env::var(NOTIFY_SOCKET_ENV) {
            Ok(value) => Self::new(&value),
            Err(VarError::NotPresent) => Ok(Self::disabled()),
            Err(VarError::NotUnicode(_)) => Err(TelemetryError::NotUnicode {
                var: NOTIFY_SOCKET_ENV,
            }),
        }
    }

    /// A notifier for `socket`, spelled as `$NOTIFY_SOCKET` spells it: an absolute path, or `@name` for
    /// an abstract socket. Empty means no-op. Tests use this rather than the process environment, which
    /// every test thread shares.
    pub fn new(socket: &str) -> Result<Self, TelemetryError> {
        let target = if socket.is_empty() {
            None
        } else if let Some(name) = socket.strip_prefix('@') {
            Some(Target::Abstract(name.as_bytes().to_vec()))
        } else if socket.starts_with('/') {
            Some(Target::Path(PathBuf::from(socket)))
        } else {
            return Err(TelemetryError::NotifySocket {
                value: socket.to_owned(),
            });
        };
        Ok(Self { target })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self { target: None }
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `states` as one datagram. A full socket queue is waited for without blocking the runtime.
    pub async fn notify(&self, states: &[NotifyState]) -> Result<(), TelemetryError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let message = states
            .iter()
            .map(NotifyState::to_line)
            .collect::<Vec<_>>()
            .join("\n");
        let error = |source| TelemetryError::Notify {
            socket: target.to_string(),
            source,
        };
        let socket = connect(target).map_err(error)?;
        socket.send(message.as_bytes()).await.map_err(error)?;
        Ok(())
    }

    /// `READY=1`.
    pub async fn ready(&self) -> Result<(), TelemetryError> {
        self.notify(&[NotifyState::Ready]).await
    }

    /// `STATUS=text`.
    pub async fn status(&self, text: &str) -> Result<(), TelemetryError> {
        self.notify(&[NotifyState::Status(text.to_owned())]).await
    }

    /// `WATCHDOG=1`.
    pub async fn watchdog(&self) -> Result<(), TelemetryError> {
        self.notify(&[NotifyState::Watchdog]).await
    }

    /// `STOPPING=1`.
    pub async fn stopping(&self) -> Result<(), TelemetryError> {
        self.notify(&[NotifyState::Stopping]).await
    }
}

impl NotifyState {
    fn to_line(&self) -> String {
        match self {
            Self::Ready => "READY=1".to_owned(),
            Self::Stopping => "STOPPING=1".to_owned(),
            Self::Watchdog => "WATCHDOG=1".to_owned(),
            Self::Status(text) => format!("STATUS={}", text.replace(['\n', '\r'], " ")),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(path) => write!(f, "{}", path.display()),
            Self::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    /// An expired lease.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(LivenessInner {
                origin: Instant::now(),
                deadline_micros: AtomicU64::new(0),
            }),
        }
    }

    /// Promises another renewal within `within` from now.
    pub fn renew(&self, within: Duration) {
        let deadline = self.micros_since_origin().saturating_add(micros(within));
        // Relaxed: the deadline is the only datum shared, and a ping decided on a value a moment old
        // differs from one decided a moment later by at most one tick.
        self.inner
            .deadline_micros
            .store(deadline, Ordering::Relaxed);
    }

    /// Whether the lease holds now.
    pub fn is_alive(&self) -> bool {
        self.micros_since_origin() < self.inner.deadline_micros.load(Ordering::Relaxed)
    }

    fn micros_since_origin(&self) -> u64 {
        micros(Instant::now().saturating_duration_since(self.inner.origin))
    }
}

impl Watchdog {
    /// A watchdog for systemd's `WatchdogSec=` of `timeout`; `None` for a zero timeout (disabled).
    pub fn new(timeout: Duration) -> Option<Self> {
        (!timeout.is_zero()).then_some(Self { timeout })
    }

    /// The watchdog systemd asks for through `$WATCHDOG_USEC` and `$WATCHDOG_PID`, if any is meant for
    /// this process.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        let read = |var: &'static str| match env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(VarError::NotPresent) => Ok(None),
            Err(VarError::NotUnicode(_)) => Err(TelemetryError::NotUnicode { var }),
        };
        let usec = read(WATCHDOG_USEC_ENV)?;
        let pid = read(WATCHDOG_PID_ENV)?;
        Self::from_vars(usec.as_deref(), pid.as_deref(), std::process::id())
    }

    /// The half-timeout interval at which pings are sent, as `sd_watchdog_enabled(3)` recommends.
    pub fn ping_interval(&self) -> Duration {
        self.timeout / 2
    }

    /// Pings while `liveness` holds, until `shutdown` completes. Errors sending are logged, not returned:
    /// a missed ping is what the watchdog exists to notice.
    pub async fn run<F>(self, notifier: Notifier, liveness: Liveness, shutdown: F)
    where
        F: Future<Output = ()>,
    {
        let mut ticks = tokio::time::interval(self.ping_interval());
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut withheld = false;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            if !liveness.is_alive() {
                if !withheld {
                    tracing::warn!(
                        "main loop missed its liveness deadline; withholding WATCHDOG=1 so that systemd restarts the agent"
                    );
                    withheld = true;
                }
                continue;
            }
            withheld = false;
            if let Err(error) = notifier.watchdog().await {
                tracing::warn!(%error, "cannot ping the systemd watchdog");
            }
        }
    }

    fn from_vars(
        usec: Option<&str>,
        pid: Option<&str>,
        own_pid: u32,
    ) -> Result<Option<Self>, TelemetryError> {
        let Some(usec) = usec.filter(|value| !value.is_empty()) else {
            return Ok(None);
        };
        let timeout = positive(WATCHDOG_USEC_ENV, usec)?;
        if let Some(pid) = pid.filter(|value| !value.is_empty())
            && positive(WATCHDOG_PID_ENV, pid)? != u64::from(own_pid)
        {
            return Ok(None);
        }
        Ok(Self::new(Duration::from_micros(timeout)))
    }
}

fn positive(var: &'static str, value: &str) -> Result<u64, TelemetryError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(TelemetryError::WatchdogEnv {
            var,
            value: value.to_owned(),
        }),
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A fresh socket per message, as libsystemd does: nothing to keep, and a restarted systemd is found.
fn connect(target: &Target) -> std::io::Result<UnixDatagram> {
    let socket = StdUnixDatagram::unbound()?;
    match target {
        Target::Path(path) => socket.connect(path)?,
        Target::Abstract(name) => socket.connect_addr(&abstract_addr(name)?)?,
    }
    socket.set_nonblocking(true)?;
    UnixDatagram::from_std(socket)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> std::io::Result<UnixAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    UnixAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<UnixAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract unix sockets exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_values_parse_like_systemd_spells_them() {
        assert!(!Notifier::new("").unwrap().is_enabled());
        assert_eq!(
            Notifier::new("/run/systemd/notify").unwrap().target,
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            Notifier::new("@sd-notify").unwrap().target,
            Some(Target::Abstract(b"sd-notify".to_vec()))
        );
        assert!(matches!(
            Notifier::new("relative/sock"),
            Err(TelemetryError::NotifySocket { .. })
        ));
    }

    #[test]
    fn watchdog_env_is_for_this_process_only() {
        let ours = Watchdog::from_vars(Some("30000000"), Some("42"), 42).unwrap();
        assert_eq!(ours.unwrap().ping_interval(), Duration::from_secs(15));
        assert_eq!(
            Watchdog::from_vars(Some("30000000"), None, 42).unwrap(),
            Watchdog::new(Duration::from_secs(30))
        );
        assert_eq!(
            Watchdog::from_vars(Some("30000000"), Some("7"), 42).unwrap(),
            None
        );
        assert_eq!(Watchdog::from_vars(None, Some("42"), 42).unwrap(), None);
        assert!(Watchdog::from_vars(Some("0"), None, 42).is_err());
        assert!(Watchdog::from_vars(Some("soon"), None, 42).is_err());
    }

    #[test]
    fn status_lines_stay_one_line() {
        assert_eq!(NotifyState::Status("a\nb".into()).to_line(), "STATUS=a b");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_holds_until_its_deadline() {
        let liveness = Liveness::new();
        assert!(!liveness.is_alive());
        liveness.renew(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(liveness.is_alive());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!liveness.is_alive());
    }
}
