//! Ports on 127.0.0.1.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago, chosen by the kernel from the ephemeral range.
///
/// The port is released before this returns, so another process may take it before the server does;
/// the servers of this crate retry with a new port when their bind fails.
///
/// # Panics
/// When no socket can be bound on 127.0.0.1 at all.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|error| panic!("cannot bind 127.0.0.1:0 to find a free port: {error}"));
    match listener.local_addr() {
        Ok(addr) => addr.port(),
        Err(error) => panic!("bound 127.0.0.1:0 but cannot read its port: {error}"),
    }
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`, for at most `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> io::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound_and_waited_for() {
        let port = free_port();
        assert_ne!(port, 0);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        wait_for_port(port, Duration::from_secs(1)).unwrap();
        drop(listener);
    }

    #[test]
    fn waiting_for_a_closed_port_times_out() {
        let port = free_port();
        let started = Instant::now();
        assert!(wait_for_port(port, Duration::from_millis(100)).is_err());
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
