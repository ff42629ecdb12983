//! The echo server, written once for every runtime ([`serve`]), and the bookkeeping every
//! server shares, the raw io_uring loop's included: counters, the samples at the edges of
//! the measured window, and the report.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coring::{BackendKind, Metrics};

use super::pair::Handshake;
use super::runtime::{alongside, EchoConn, Owned, OwnedStream, ServerRuntime};
use crate::load::{Clock, Timeline};
use crate::sys::ThreadUsage;

/// Bytes each server connection reads at most at once (every server uses the same).
pub const SERVER_BUF: usize = 16 * 1024;
/// How long, after the measured window, a server waits for the client to close.
pub const DRAIN: Duration = Duration::from_secs(5);
/// How often a draining server looks whether every connection has closed.
const DRAIN_POLL: Duration = Duration::from_millis(2);

/// What a server says once it listens.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Where.
    pub addr: SocketAddr,
    /// The coring backend it runs on (`None` for other servers).
    pub backend: Option<BackendKind>,
    /// What it runs on, in words.
    pub description: String,
}

/// Counters shared by a server's connections.
#[derive(Debug, Default)]
pub struct ServerStats {
    bytes: AtomicU64,
    closed: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl ServerStats {
    /// Records an error (the run fails with it).
    pub fn error(&self, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    /// Counts `n` bytes echoed: called once per echoed request, by every server, and
    /// never inlined, so that `bench/scripts/callgrind-echo.sh` counts requests by its
    /// calls (a runtime's own send path, libc wrapper or raw syscall, is no measure).
    #[inline(never)]
    pub fn echoed(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a connection closed.
    pub fn close(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed so far.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::Relaxed)
    }

    /// One connection's echo loop: echoes on `conn` (if it could be set up) until the peer
    /// closes. Counts the bytes, records the error that ends the loop, and the close.
    pub async fn echo(self: Arc<Self>, conn: io::Result<impl EchoConn>) {
        let res: io::Result<()> = async {
            let mut conn = conn?;
            loop {
                match conn.echo_once().await? {
                    0 => return Ok(()),
                    n => self.echoed(n),
                }
            }
        }
        .await;
        if let Err(e) = res {
            self.error(format!("server connection: {e}"));
        }
        self.close();
    }

    /// [`ServerStats::echo`] on a stream with owned-buffer IO: `TCP_NODELAY`, then the
    /// [`Owned`] echo loop.
    pub fn echo_owned<S: OwnedStream>(self: Arc<Self>, stream: S) -> impl Future<Output = ()> {
        let conn = stream.set_nodelay().map(|()| Owned::new(stream));
        self.echo(conn)
    }

    /// The report of a run whose window's edges were `start` and `end`: the errors
    /// recorded, and one more if fewer than `conns` connections closed.
    pub fn report(&self, (start, end): (ServerSample, ServerSample), conns: usize) -> ServerReport {
        let mut errors =
            std::mem::take(&mut *self.errors.lock().unwrap_or_else(|p| p.into_inner()));
        let closed = self.closed();
        if closed < conns {
            errors.push(format!(
                "only {closed} of {conns} server connections closed within {DRAIN:?} of the end"
            ));
        }
        ServerReport { start, end, errors }
    }
}

/// What a server thread sees at one edge of the measured window.
#[derive(Debug, Clone)]
pub struct ServerSample {
    /// When.
    pub at: Instant,
    /// The server thread's CPU and run-queue wait so far.
    pub usage: ThreadUsage,
    /// Bytes echoed so far.
    pub bytes: u64,
    /// The runtime's counters (coring only).
    pub metrics: Option<Metrics>,
}

impl ServerSample {
    /// The calling (server) thread's sample now.
    pub fn now(stats: &ServerStats, metrics: Option<Metrics>) -> ServerSample {
        ServerSample {
            at: Instant::now(),
            usage: ThreadUsage::now(),
            bytes: stats.bytes.load(Ordering::Relaxed),
            metrics,
        }
    }
}

/// What a server thread reports: its samples at both edges of the window, and any errors.
#[derive(Debug, Clone)]
pub struct ServerReport {
    /// At the start of the measured window.
    pub start: ServerSample,
    /// At its end.
    pub end: ServerSample,
    /// What went wrong; empty for a good run.
    pub errors: Vec<String>,
}

impl ServerReport {
    /// Wall time between the two samples.
    pub fn window(&self) -> Duration {
        self.end.at.duration_since(self.start.at)
    }

    /// The server thread's CPU and run-queue wait over the window.
    pub fn usage(&self) -> ThreadUsage {
        self.end.usage.since(self.start.usage)
    }

    /// Requests echoed in the window, counted by the server: bytes over the message size.
    pub fn requests(&self, size: usize) -> f64 {
        (self.end.bytes - self.start.bytes) as f64 / size as f64
    }

    /// `counter` of the runtime over the window (coring only).
    pub fn counter(&self, counter: fn(&Metrics) -> u64) -> Option<u64> {
        let (m0, m1) = (self.start.metrics.as_ref()?, self.end.metrics.as_ref()?);
        Some(counter(m1).saturating_sub(counter(m0)))
    }
}

/// `sample` at the edges of the measured window: once the warm-up is over, and at the end.
pub async fn at_edges<T>(
    clock: &impl Clock,
    tl: &Timeline,
    mut sample: impl FnMut() -> T,
) -> (T, T) {
    let w = tl.window();
    clock.sleep_until_ns(w.warm_end_ns).await;
    let start = sample();
    clock.sleep_until_ns(w.end_ns).await;
    (start, sample())
}

/// The echo server thread's body on runtime `R`, written once for every runtime: builds the
/// runtime, binds, says where it listens, waits for the timeline, then accepts `conns`
/// connections (each echoed by its own task), samples at the window's edges, and waits (up
/// to [`DRAIN`]) for the client to close every connection.
///
/// # Errors
///
/// Setup failures, and a run abandoned before it started; what goes wrong later is in the
/// report's errors.
#[inline(never)] // a symbol for profiles: `callgrind-echo.sh` finds the server thread by it
pub fn serve<R: ServerRuntime>(
    runtime: &R,
    conns: usize,
    hs: Handshake,
) -> Result<ServerReport, String> {
    let setup = runtime.build().and_then(|rt| {
        let listener = R::bind(&rt, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let ready = Ready {
            addr: R::local_addr(&listener)?,
            backend: R::backend(&rt),
            description: R::describe(&rt),
        };
        Ok(((rt, listener), ready))
    });
    let ((rt, listener), tl) = hs.start(setup.map_err(|e| format!("server setup: {e}")))?;
    let stats = Arc::new(ServerStats::default());
    let clock = R::clock(tl.start);
    let edges = R::block_on(&rt, async {
        let sample = || ServerSample::now(&stats, R::metrics(&rt));
        let schedule = async {
            let edges = at_edges(&clock, &tl, sample).await;
            // Let the client finish its last round trips and close; bounded.
            let drain_end = Instant::now() + DRAIN;
            while stats.closed() < conns && Instant::now() < drain_end {
                let next = clock.now_ns() + DRAIN_POLL.as_nanos() as u64;
                clock.sleep_until_ns(next).await;
            }
            edges
        };
        let edges = alongside(schedule, accept_each::<R>(&listener, conns, &stats)).await;
        // Closed inside the runtime, as a server would close it.
        drop(listener);
        edges
    });
    // Dropping the runtime cancels whatever is left.
    drop(rt);
    Ok(stats.report(edges, conns))
}

/// Accepts `conns` connections, each echoed by its own task; stops at the first error.
async fn accept_each<R: ServerRuntime>(
    listener: &R::Listener,
    conns: usize,
    stats: &Arc<ServerStats>,
) {
    for _ in 0..conns {
        match R::accept(listener).await {
            Ok(stream) => R::spawn_echo(stream, stats.clone()),
            Err(e) => return stats.error(format!("accept: {e}")),
        }
    }
}
