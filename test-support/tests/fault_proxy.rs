//! The fault proxy between a real client socket and a real upstream socket: each fault does to the bytes
//! what it says, and the counters report it.
//!
//! The upstream is a plain TCP server that writes a fixed payload to every connection and closes, so what
//! the client reads is exactly what the proxy let through.

// Helpers outside #[test] fns panic as the failure report, as the tests themselves do.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use mast_test_support::FaultProxy;
use mast_test_support::fault_proxy::{Close, FaultKind, Faults, StallEnd};

const PAYLOAD_LEN: usize = 64 * 1024;

fn payload() -> Vec<u8> {
    (0..PAYLOAD_LEN).map(|i| (i % 251) as u8).collect()
}

/// Serves `payload()` to every connection, after reading the client's one-line request.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut line = [0u8; 5];
                if stream.read_exact(&mut line).is_ok() {
                    let _ = stream.write_all(&payload());
                }
            });
        }
    });
    addr
}

/// Connects through the proxy, sends a request line, and reads until EOF or an error.
fn fetch(proxy: &FaultProxy) -> (Vec<u8>, Option<ErrorKind>) {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // A refused connection may already be closed: the write can fail, the read tells what happened.
    let _ = stream.write_all(b"GET\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

#[test]
fn passes_bytes_through_unchanged_without_faults() {
    let proxy = FaultProxy::start(upstream()).unwrap();
    let (got, error) = fetch(&proxy);
    assert_eq!(error, None);
    assert_eq!(got, payload());
    let stats = proxy.control().stats();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.faults_total(), 0);
    assert_eq!(stats.bytes_downstream, PAYLOAD_LEN as u64);
}

#[test]
fn cut_with_reset_delivers_exactly_the_prefix_then_a_reset() {
    let proxy = FaultProxy::start(upstream()).unwrap();
    proxy.control().set_faults(
        Faults::none()
            .cut_downstream_after(1000)
            .cut_with(Close::Reset),
    );
    let (got, error) = fetch(&proxy);
    assert_eq!(got, payload()[..1000]);
    assert_eq!(error, Some(ErrorKind::ConnectionReset));
    assert_eq!(proxy.control().stats().reset, 1);
}

#[test]
fn clean_cut_truncates_with_an_orderly_close() {
    let proxy = FaultProxy::start(upstream()).unwrap();
    proxy.control().set_faults(
        Faults::none()
            .cut_downstream_after(4096)
            .cut_with(Close::Clean),
    );
    let (got, error) = fetch(&proxy);
    assert_eq!(error, None);
    assert_eq!(got, payload()[..4096]);
    assert_eq!(proxy.control().stats().faults(FaultKind::Truncated), 1);
}

#[test]
fn corrupt_flips_exactly_the_chosen_byte() {
    let proxy = FaultProxy::start(upstream()).unwrap();
    proxy
        .control()
        .set_faults(Faults::none().corrupt(12_345, 0x5a));
    let (got, error) = fetch(&proxy);
    assert_eq!(error, None);
    let mut want = payload();
    want[12_345] ^= 0x5a;
    assert_eq!(got, want);
    assert_eq!(proxy.control().stats().corrupted, 1);
}

#[test]
fn refused_connections_get_no_bytes_and_later_ones_pass_after_pass_through() {
    let proxy = FaultProxy::start(upstream()).unwrap();
    // An orderly close before any byte counts as a refusal; a reset before any byte counts as a reset.
    proxy
        .control()
        .set_faults(Faults::none().refuse(Close::Clean));
    let (got, error) = fetch(&proxy);
    assert!(got.is_empty());
    assert_eq!(error, None);
    proxy
        .control()
        .set_faults(Faults::none().refuse(Close::Reset));
    let (got, _) = fetch(&proxy);
    assert!(got.is_empty());
    let stats = proxy.control().stats();
    assert_eq!(
        (stats.refused, stats.reset, stats.bytes_downstream),
        (1, 1, 0)
    );

    proxy.control().pass_through();
    let (got, error) = fetch(&proxy);
    assert_eq!(error, None);
    assert_eq!(got, payload());
}

#[test]
fn a_stall_holds_the_stream_until_released_and_loses_nothing() {
    let proxy = FaultProxy::start(upstream()).unwrap();
    proxy
        .control()
        .set_faults(Faults::none().stall(2000, StallEnd::Released));
    let control = proxy.control().clone();
    let reader = thread::spawn(move || fetch(&proxy));
    assert!(
        control.wait_until(Duration::from_secs(10), |s| s.stalled_now == 1),
        "the connection never stalled: {:?}",
        control.stats()
    );
    assert_eq!(control.stats().bytes_downstream, 2000);
    control.release_stalls();
    let (got, error) = reader.join().unwrap();
    assert_eq!(error, None);
    assert_eq!(got, payload());
    assert_eq!(control.stats().stalled, 1);
}

#[test]
fn throttled_connections_still_deliver_every_byte() {
    let proxy = FaultProxy::start(upstream()).unwrap();
    proxy
        .control()
        .set_faults(Faults::none().throttle(1024 * 1024));
    let (got, error) = fetch(&proxy);
    assert_eq!(error, None);
    assert_eq!(got, payload());
    assert_eq!(proxy.control().stats().throttled, 1);
}

#[test]
fn disconnect_all_cuts_a_connection_in_flight() {
    let proxy = FaultProxy::start(upstream()).unwrap();
    proxy
        .control()
        .set_faults(Faults::none().stall(100, StallEnd::Released));
    let control = proxy.control().clone();
    let reader = thread::spawn(move || fetch(&proxy));
    assert!(control.wait_until(Duration::from_secs(10), |s| s.stalled_now == 1));
    control.disconnect_all(Close::Reset);
    let (got, error) = reader.join().unwrap();
    assert_eq!(got, payload()[..100]);
    assert_eq!(error, Some(ErrorKind::ConnectionReset));
}
