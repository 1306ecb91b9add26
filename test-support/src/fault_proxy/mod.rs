//! A fault-injecting TCP proxy on 127.0.0.1, standing in for kernel netem (not available on these
//! machines) between a client under test and a real upstream (nginx, the registry).
//!
//! Each accepted connection gets a plan when it is accepted: the fixed [`Faults`] set last, or one drawn
//! by [`RandomFaults`] for the soak harness. Changing the plan affects **connections accepted afterwards**;
//! connections in flight keep theirs. To act on connections in flight — the link going down in the middle
//! of a download — use [`FaultControl::disconnect_all`], [`FaultControl::pause`] /
//! [`FaultControl::resume`] and [`FaultControl::release_stalls`]; to refuse new connections outright,
//! [`FaultControl::stop_listening`].
//!
//! From a synchronous test, [`FaultProxy::start`] runs the proxy on its own current-thread runtime in a
//! background thread; from async code, [`FaultProxy::spawn`] runs it on the caller's runtime. Dropping the
//! proxy closes its listener and every connection.
//!
//! ```no_run
//! use mast_test_support::fault_proxy::{Close, FaultProxy, Faults};
//!
//! # let upstream: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let proxy = FaultProxy::start(upstream).unwrap();
//! proxy.control().set_faults(Faults::none().cut_downstream_after(1000).cut_with(Close::Reset));
//! // ... a download through proxy.url("bundle.tar.gz") is reset after 1000 bytes ...
//! proxy.control().pass_through();
//! assert_eq!(proxy.control().stats().reset, 1);
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

mod conn;
mod plan;
mod stats;

pub use plan::{Close, FaultTemplate, Faults, RandomFaults, Stall, StallEnd};
pub use stats::{ConnectionRecord, FaultKind, ProxyStats};

use stats::{ConnState, Counters};

/// A running proxy. Dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    control: FaultControl,
    driver: Driver,
}

/// A handle to change a proxy's faults and read its counters; clones control the same proxy.
#[derive(Debug, Clone)]
pub struct FaultControl {
    shared: Arc<Shared>,
}

#[derive(Debug)]
enum Driver {
    /// Our own runtime on a thread: stopped by the signal, then joined.
    Thread {
        stop: watch::Sender<bool>,
        thread: Option<thread::JoinHandle<()>>,
    },
    /// A task on the caller's runtime: aborted, which drops every connection task with it.
    Task(tokio::task::JoinHandle<()>),
}

#[derive(Debug)]
enum Policy {
    Fixed(Faults),
    Random(RandomFaults),
}

/// State shared by the accept loop, the connections and the control handles.
#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    upstream: SocketAddr,
    policy: Mutex<Policy>,
    counters: Counters,
    records: Mutex<Vec<Arc<ConnState>>>,
    /// Whether the proxy should listen (set by the control).
    listening: watch::Sender<bool>,
    /// Whether it does (set by the accept loop once it acted on `listening`).
    listener_open: watch::Sender<bool>,
    paused: watch::Sender<bool>,
    disconnect: watch::Sender<(u64, Close)>,
    release: watch::Sender<u64>,
}

impl FaultProxy {
    /// Starts a pass-through proxy to `upstream` on a free port of 127.0.0.1, on its own runtime.
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = bind(None)?;
        let shared = Shared::new(listener.local_addr()?, upstream);
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let loop_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(format!("fault-proxy-{}", shared.addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut stopped = stopped;
                    tokio::select! {
                        () = accept_loop(listener, loop_shared) => {}
                        _ = stopped.wait_for(|stop| *stop) => {}
                    }
                });
            })?;
        Ok(Self {
            addr: shared.addr,
            control: FaultControl { shared },
            driver: Driver::Thread {
                stop,
                thread: Some(thread),
            },
        })
    }

    /// Starts a pass-through proxy to `upstream` on a free port of 127.0.0.1, as a task of the current
    /// tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn spawn(upstream: SocketAddr) -> io::Result<Self> {
        let listener = bind(None)?;
        let shared = Shared::new(listener.local_addr()?, upstream);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            addr: shared.addr,
            control: FaultControl { shared },
            driver: Driver::Task(task),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// The control handle.
    pub fn control(&self) -> &FaultControl {
        &self.control
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        match &mut self.driver {
            Driver::Thread { stop, thread } => {
                stop.send_replace(true);
                if let Some(thread) = thread.take()
                    && thread.join().is_err()
                {
                    eprintln!("fault proxy on {}: its thread panicked", self.addr);
                }
            }
            Driver::Task(task) => task.abort(),
        }
    }
}

impl FaultControl {
    /// Gives every connection accepted from now on the plan `faults`.
    pub fn set_faults(&self, faults: Faults) {
        *self.policy() = Policy::Fixed(faults);
    }

    /// Draws the plan of every connection accepted from now on from `random` (by accept index).
    pub fn set_random(&self, random: RandomFaults) {
        *self.policy() = Policy::Random(random);
    }

    /// Connections accepted from now on pass through untouched.
    pub fn pass_through(&self) {
        self.set_faults(Faults::none());
    }

    /// Closes the listening socket: new connections are refused by the kernel (`ECONNREFUSED`) until
    /// [`resume_listening`](Self::resume_listening). Connections in flight go on.
    ///
    /// Blocks until the listener is closed, so a connect right after it returns is refused. Async code on
    /// the runtime that runs the proxy must use [`stop_listening_async`](Self::stop_listening_async),
    /// which waits without blocking that runtime.
    pub fn stop_listening(&self) {
        self.shared.listening.send_replace(false);
        self.wait_for_listener(false);
    }

    /// Listens again on the same address; blocks until it does (see [`stop_listening`](Self::stop_listening)).
    pub fn resume_listening(&self) {
        self.shared.listening.send_replace(true);
        self.wait_for_listener(true);
    }

    /// [`stop_listening`](Self::stop_listening) for async code.
    pub async fn stop_listening_async(&self) {
        self.shared.listening.send_replace(false);
        let mut state = self.shared.listener_open.subscribe();
        // The sender lives in `Shared`, which this handle keeps alive.
        let _ = state.wait_for(|open| !*open).await;
    }

    /// [`resume_listening`](Self::resume_listening) for async code.
    pub async fn resume_listening_async(&self) {
        self.shared.listening.send_replace(true);
        let mut state = self.shared.listener_open.subscribe();
        let _ = state.wait_for(|open| *open).await;
    }

    /// Stops forwarding on every connection, in flight and new, with sockets kept open (a black-holed
    /// link), until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Ends a [`pause`](Self::pause).
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Ends every connection in flight now, closing the client's side with `close`.
    pub fn disconnect_all(&self, close: Close) {
        self.shared.disconnect.send_modify(|(generation, how)| {
            *generation += 1;
            *how = close;
        });
    }

    /// Ends every [`StallEnd::Released`] stall in progress. Stalls that begin afterwards wait for the next
    /// release: wait for [`ProxyStats::stalled_now`] before releasing a stall you expect.
    pub fn release_stalls(&self) {
        self.shared
            .release
            .send_modify(|generation| *generation += 1);
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        self.shared.counters.snapshot()
    }

    /// The records of faulted connections (those with a plan other than [`Faults::none`]) accepted since
    /// the last call, in accept order, with the faults that took effect so far. Pass-through connections
    /// are only counted, so that a long soak does not keep one record per connection.
    pub fn take_records(&self) -> Vec<ConnectionRecord> {
        let taken = std::mem::take(&mut *lock(&self.shared.records));
        taken.iter().map(|conn| conn.record()).collect()
    }

    /// Polls the counters until `condition` holds or `timeout` passes; returns whether it held. For tests
    /// that must wait for the proxy to reach a state (a stall begun, a connection accepted) before acting.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&ProxyStats) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(&self.stats()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn wait_for_listener(&self, open: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while *self.shared.listener_open.borrow() != open {
            if Instant::now() >= deadline {
                eprintln!(
                    "fault proxy on {}: listener not {} after 10 s",
                    self.shared.addr,
                    if open { "open" } else { "closed" }
                );
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn policy(&self) -> MutexGuard<'_, Policy> {
        lock(&self.shared.policy)
    }
}

impl Shared {
    fn new(addr: SocketAddr, upstream: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr,
            upstream,
            policy: Mutex::new(Policy::Fixed(Faults::none())),
            counters: Counters::default(),
            records: Mutex::new(Vec::new()),
            listening: watch::channel(true).0,
            listener_open: watch::channel(true).0,
            paused: watch::channel(false).0,
            disconnect: watch::channel((0, Close::Clean)).0,
            release: watch::channel(0).0,
        })
    }

    fn plan(&self, index: u64) -> Faults {
        match &*lock(&self.policy) {
            Policy::Fixed(faults) => faults.clone(),
            Policy::Random(random) => random.plan_for(index),
        }
    }
}

/// Accepts until dropped. Connection tasks live in a `JoinSet` owned here, so dropping this future (the
/// proxy stopping) aborts every connection with it.
async fn accept_loop(listener: StdTcpListener, shared: Arc<Shared>) {
    let mut listening = shared.listening.subscribe();
    let mut listener = match TcpListener::from_std(listener) {
        Ok(listener) => Some(listener),
        Err(error) => {
            eprintln!("fault proxy on {}: cannot listen: {error}", shared.addr);
            return;
        }
    };
    let mut connections = JoinSet::new();
    loop {
        let want = *listening.borrow_and_update();
        if !want {
            listener = None;
        } else if listener.is_none() {
            listener = bind(Some(shared.addr))
                .and_then(TcpListener::from_std)
                .map_err(|error| {
                    eprintln!(
                        "fault proxy on {}: cannot listen again: {error}",
                        shared.addr
                    )
                })
                .ok();
        }
        shared.listener_open.send_replace(listener.is_some());
        tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, _)) => {
                    let conn = admit(&shared);
                    let guard = OpenConnection::new(Arc::clone(&shared));
                    connections.spawn(async move {
                        let shared = Arc::clone(&guard.0);
                        conn::serve(stream, conn, shared).await;
                    });
                }
                // Out of descriptors or a connection reset before accept: not the proxy's business.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            changed = listening.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Numbers a new connection, gives it its plan, and records it when faulted.
fn admit(shared: &Shared) -> Arc<ConnState> {
    let index = shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(ConnState::new(index, shared.plan(index)));
    if !conn.planned.is_none() {
        lock(&shared.records).push(Arc::clone(&conn));
    }
    conn
}

/// Counts a connection open for as long as its task lives, aborted or not.
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn new(shared: Arc<Shared>) -> Self {
        shared.counters.open.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// A non-blocking listener on 127.0.0.1 (`addr`, or a free port), with `SO_REUSEADDR` so that listening
/// again after [`FaultControl::stop_listening`] gets the same port despite connections in TIME_WAIT.
fn bind(addr: Option<SocketAddr>) -> io::Result<StdTcpListener> {
    let addr = addr.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections here are single assignments or pushes; a panic elsewhere cannot break them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
