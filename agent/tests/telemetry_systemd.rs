//! sd_notify to real unix datagram sockets, as systemd receives it, and the watchdog's liveness gate under
//! paused time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use mast_agent::telemetry::{Liveness, Notifier, NotifyState, TelemetryError, Watchdog};
use tokio::sync::oneshot;

/// A socket bound where systemd's would be, and the `NOTIFY_SOCKET` value naming it.
fn systemd_socket(dir: &tempfile::TempDir) -> (UnixDatagram, String) {
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_nonblocking(true).unwrap();
    (socket, path.to_str().unwrap().to_owned())
}

/// Every datagram waiting on `socket`, without waiting for more.
fn drain(socket: &UnixDatagram) -> Vec<String> {
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Err(error) if error.kind() == ErrorKind::WouldBlock => return messages,
            Err(error) => panic!("recv: {error}"),
        }
    }
}

#[tokio::test]
async fn notifications_arrive_as_systemd_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let (systemd, socket) = systemd_socket(&dir);
    let notifier = Notifier::new(&socket).unwrap();
    assert!(notifier.is_enabled());

    notifier.ready().await.unwrap();
    notifier.status("release 7 applied\nhealthy").await.unwrap();
    notifier.watchdog().await.unwrap();
    notifier
        .notify(&[
            NotifyState::Stopping,
            NotifyState::Status("draining".into()),
        ])
        .await
        .unwrap();
    assert_eq!(
        drain(&systemd),
        [
            "READY=1",
            "STATUS=release 7 applied healthy",
            "WATCHDOG=1",
            "STOPPING=1\nSTATUS=draining",
        ]
    );
}

#[tokio::test]
async fn abstract_namespace_sockets_are_reached_by_at_names() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("mast-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let systemd = UnixDatagram::bind_addr(&addr).unwrap();
    systemd.set_nonblocking(true).unwrap();

    Notifier::new(&format!("@{name}"))
        .unwrap()
        .ready()
        .await
        .unwrap();
    assert_eq!(drain(&systemd), ["READY=1"]);
}

#[tokio::test]
async fn without_a_socket_notifications_are_no_ops_and_a_missing_one_is_an_error() {
    let disabled = Notifier::new("").unwrap();
    assert!(!disabled.is_enabled());
    disabled.ready().await.unwrap();
    Notifier::disabled().stopping().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("no-such-socket");
    let error = Notifier::new(gone.to_str().unwrap())
        .unwrap()
        .ready()
        .await
        .unwrap_err();
    assert!(matches!(error, TelemetryError::Notify { .. }), "{error}");
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_pings_only_while_the_main_loop_holds_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (systemd, socket) = systemd_socket(&dir);
    let watchdog = Watchdog::new(Duration::from_secs(2)).unwrap();
    assert_eq!(watchdog.ping_interval(), Duration::from_secs(1));
    let liveness = Liveness::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let task =
        tokio::spawn(
            watchdog.run(Notifier::new(&socket).unwrap(), liveness.clone(), async {
                let _ = stopped.await;
            }),
        );

    // Before the loop first renews, nothing is pinged: a loop that never started must not look alive.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(drain(&systemd).is_empty());

    // The loop promises to be back within 10 s: pings at every interval tick inside the lease.
    liveness.renew(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(9_500)).await;
    let pings = drain(&systemd);
    assert!(pings.len() >= 9, "{pings:?}");
    assert!(pings.iter().all(|ping| ping == "WATCHDOG=1"));

    // The loop wedges: past the lease, not one more ping, however long systemd waits.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    drain(&systemd);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(drain(&systemd).is_empty());

    // A loop that comes back renews, and pings resume.
    liveness.renew(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(drain(&systemd).len() >= 2);

    // Shutdown stops the ticker even while the lease holds.
    stop.send(()).unwrap();
    task.await.unwrap();
    drain(&systemd);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(drain(&systemd).is_empty());
}
