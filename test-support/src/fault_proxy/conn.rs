//! One proxied connection: two pumps (one per direction) that apply the plan, and the close that follows.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Shared;
use super::plan::{Close, Stall, StallEnd};
use super::stats::{ConnState, FaultKind};

/// The most a clean close waits for the client to finish sending, so that closing does not turn into an
/// RST (which unread received bytes would cause) and a silent client cannot hold the task forever.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Bytes read per step: small enough that cuts, stalls and corruption land on exact offsets cheaply.
const BUFFER: usize = 16 * 1024;

/// One of the two sockets of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Upstream → client.
    Down,
    /// Client → upstream.
    Up,
}

/// How a pump, or the connection, ended.
#[derive(Debug)]
enum Ended {
    /// End of stream, passed on as a shutdown of the other side.
    Eof,
    /// The plan cut the connection here.
    Cut,
    /// A socket failed (the peer reset, or went away).
    Failed(Side),
    /// [`FaultControl::disconnect_all`](super::FaultControl::disconnect_all).
    Disconnected(Close),
}

/// Serves one accepted connection to its end.
pub(super) async fn serve(mut client: TcpStream, conn: Arc<ConnState>, shared: Arc<Shared>) {
    let counters = &shared.counters;
    if let Some(close) = conn.planned.refuse {
        let kind = match close {
            Close::Clean => FaultKind::Refused,
            Close::Reset => FaultKind::Reset,
        };
        conn.inject(kind, counters);
        close_client(client, close).await;
        return;
    }
    let mut upstream = match TcpStream::connect(shared.upstream).await {
        Ok(upstream) => upstream,
        Err(_) => {
            counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            close_client(client, Close::Reset).await;
            return;
        }
    };
    // Small writes must not wait for Nagle: offsets and timings are what the tests look at.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let ended = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let down = pump(upstream_read, client_write, Direction::Down, &conn, &shared);
        let up = pump(client_read, upstream_write, Direction::Up, &conn, &shared);
        let mut disconnect = shared.disconnect.subscribe();
        tokio::pin!(down, up);
        let (mut down_done, mut up_done) = (false, false);
        loop {
            tokio::select! {
                ended = &mut down, if !down_done => match ended {
                    Ended::Eof => down_done = true,
                    other => break other,
                },
                ended = &mut up, if !up_done => match ended {
                    Ended::Eof => up_done = true,
                    other => break other,
                },
                changed = disconnect.changed() => {
                    if changed.is_ok() {
                        let (_, close) = *disconnect.borrow_and_update();
                        break Ended::Disconnected(close);
                    }
                }
            }
            if down_done && up_done {
                break Ended::Eof;
            }
        }
    };
    drop(upstream);
    match ended {
        Ended::Eof => {}
        Ended::Cut => {
            let close = conn.planned.cut_with;
            conn.inject(cut_kind(close), counters);
            close_client(client, close).await;
        }
        Ended::Disconnected(close) => {
            conn.inject(cut_kind(close), counters);
            close_client(client, close).await;
        }
        // Pass an upstream failure on as a reset, so the client cannot mistake it for a complete response.
        Ended::Failed(Side::Upstream) => close_client(client, Close::Reset).await,
        Ended::Failed(Side::Client) => {}
    }
}

/// Copies `reader` to `writer`, applying the plan's faults for `direction`.
async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    direction: Direction,
    conn: &ConnState,
    shared: &Shared,
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let plan = &conn.planned;
    let (cut_at, mut stall, corrupt, bytes) = match direction {
        Direction::Down => (
            plan.cut_downstream_after,
            plan.stall,
            plan.corrupt,
            &shared.counters.bytes_downstream,
        ),
        Direction::Up => (
            plan.cut_upstream_after,
            None,
            None,
            &shared.counters.bytes_upstream,
        ),
    };
    let mut throttle = plan.throttle.map(Throttle::new);
    let mut paused = shared.paused.subscribe();
    let mut buf = vec![0u8; BUFFER];
    let mut offset = 0u64;
    loop {
        if cut_at == Some(offset) {
            return Ended::Cut;
        }
        if let Some(due) = stall.filter(|stall| stall.after <= offset) {
            stall = None;
            stall_now(due, conn, shared).await;
        }
        let mut limit = BUFFER as u64;
        if let Some(cut) = cut_at {
            limit = limit.min(cut - offset);
        }
        if let Some(pending) = stall {
            limit = limit.min(pending.after - offset);
        }
        if let Some(throttle) = &throttle {
            limit = limit.min(throttle.step());
        }
        let limit = usize::try_from(limit).unwrap_or(BUFFER);
        let read = match reader.read(&mut buf[..limit]).await {
            Ok(0) => {
                let _ = writer.shutdown().await;
                return Ended::Eof;
            }
            Ok(read) => read,
            Err(_) => return Ended::Failed(direction.source()),
        };
        let chunk = &mut buf[..read];
        if let Some((at, mask)) = corrupt
            && (offset..offset + read as u64).contains(&at)
        {
            let index = usize::try_from(at - offset).unwrap_or(0);
            chunk[index] ^= mask;
            conn.inject(FaultKind::Corrupted, &shared.counters);
        }
        if *paused.borrow_and_update() {
            conn.inject(FaultKind::Paused, &shared.counters);
            // The sender lives in `Shared`, which outlives every connection: this cannot fail early.
            let _ = paused.wait_for(|paused| !*paused).await;
        }
        if let Some(throttle) = &mut throttle {
            conn.inject(FaultKind::Throttled, &shared.counters);
            throttle.wait(read as u64).await;
        }
        if writer.write_all(chunk).await.is_err() {
            return Ended::Failed(direction.source().other());
        }
        offset += read as u64;
        bytes.fetch_add(read as u64, Ordering::Relaxed);
    }
}

async fn stall_now(stall: Stall, conn: &ConnState, shared: &Shared) {
    conn.inject(FaultKind::Stalled, &shared.counters);
    shared.counters.stalled_now.fetch_add(1, Ordering::Relaxed);
    let _stalled = StalledNow(shared);
    match stall.until {
        StallEnd::For(duration) => tokio::time::sleep(duration).await,
        StallEnd::Released => {
            let mut release = shared.release.subscribe();
            // Only a release after this stall began ends it; see `FaultControl::release_stalls`.
            let _ = release.changed().await;
        }
    }
}

/// Paces a direction so that `n` bytes never leave before `n / rate` seconds after the first: a lower
/// bound the tests can rely on.
struct Throttle {
    rate: u64,
    start: Option<Instant>,
    sent: u64,
}

impl Throttle {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            start: None,
            sent: 0,
        }
    }

    /// About a twentieth of a second's worth, so pacing is smooth rather than one burst per second.
    fn step(&self) -> u64 {
        (self.rate / 20).max(1)
    }

    async fn wait(&mut self, bytes: u64) {
        let start = *self.start.get_or_insert_with(Instant::now);
        self.sent += bytes;
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
        tokio::time::sleep_until(start + due).await;
    }
}

impl Direction {
    /// The side this direction reads from.
    fn source(self) -> Side {
        match self {
            Self::Down => Side::Upstream,
            Self::Up => Side::Client,
        }
    }
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::Client => Self::Upstream,
            Self::Upstream => Self::Client,
        }
    }
}

/// Keeps `stalled_now` right when a stalled pump is dropped mid-stall (by a disconnect or a shutdown).
struct StalledNow<'a>(&'a Shared);

impl Drop for StalledNow<'_> {
    fn drop(&mut self) {
        self.0.counters.stalled_now.fetch_sub(1, Ordering::Relaxed);
    }
}

fn cut_kind(close: Close) -> FaultKind {
    match close {
        Close::Clean => FaultKind::Truncated,
        Close::Reset => FaultKind::Reset,
    }
}

/// Closes the client's socket with a FIN or an RST.
async fn close_client(mut client: TcpStream, close: Close) {
    match close {
        Close::Reset => {
            // SO_LINGER 0 makes close() send RST and drop anything unsent; socket2 sets it without unsafe.
            if let Err(error) = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)) {
                eprintln!("fault proxy: cannot set SO_LINGER 0, closing without RST: {error}");
            }
        }
        Close::Clean => {
            let _ = client.shutdown().await;
            let _ = tokio::time::timeout(DRAIN_LIMIT, drain(&mut client)).await;
        }
    }
}

async fn drain(client: &mut TcpStream) -> io::Result<()> {
    let mut sink = [0u8; 4096];
    while client.read(&mut sink).await? > 0 {}
    Ok(())
}
