//! The echo benchmark: a coring TCP echo server on one pinned CPU and a coring load
//! generator on another, over loopback, closed or open loop.
//!
//! The server thread measures its own CPU time and runtime counters over the measured
//! window (it wakes at the window's edges with `sleep_until`), so that the server's CPU
//! time per request compares backends even when the load generator is the bottleneck.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use coring::buf::IoBuf;
use coring::net::{TcpListener, TcpStream};
use coring::time::{sleep_until, timeout};
use coring::{BackendKind, Metrics, Runtime};
use serde_json::json;

use crate::cli::backend_name;
use crate::load::{drive, Clock, ConnSchedule, Pacing, Recorder, RoundTrip, Window};
use crate::progress::{wait_with_progress, Progress};
use crate::report::{Mode, RunResult};
use crate::stats;
use crate::sys::{self, ThreadUsage};

/// Bytes each server connection reads at most at once.
const SERVER_BUF: usize = 16 * 1024;
/// A round trip that takes longer than this ends its connection with an error.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server waits, once it stops accepting, for its connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for thread and connection setup, and for teardown.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Above this fraction of the window spent waiting for a CPU, a note says the machine was
/// busy with something else.
pub const NOISY_WAIT: f64 = 0.05;

/// What one echo run does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoParams {
    /// Connections.
    pub conns: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Open-loop total rate, or `None` for closed loop.
    pub rate: Option<f64>,
    /// Measured duration.
    pub secs: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// The load generator's backend.
    pub client_backend: BackendKind,
}

/// The run's timeline, shared by every thread.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    start: Instant,
    warm_end: Instant,
    end: Instant,
}

impl Timeline {
    fn window(&self) -> Window {
        let ns = |t: Instant| t.duration_since(self.start).as_nanos() as u64;
        Window {
            warm_end_ns: ns(self.warm_end),
            end_ns: ns(self.end),
        }
    }
}

/// What the server says once it listens.
struct ServerReady {
    addr: SocketAddr,
    backend: BackendKind,
    description: String,
}

/// What the server measured.
struct ServerReport {
    usage: ThreadUsage,
    window: Metrics,
    errors: Vec<String>,
}

/// What the load generator measured.
struct ClientReport {
    rec: RecorderReport,
    usage: ThreadUsage,
    backend: String,
    errors: Vec<String>,
}

/// The parts of a [`Recorder`] that leave the client thread.
struct RecorderReport {
    hist: crate::hist::LatencyHist,
    requests: u64,
    warmup: u64,
    unsent: u64,
}

/// Runs one echo benchmark with the server on `backend`; failures end up in
/// [`RunResult::error`].
pub fn run(p: &EchoParams, backend: BackendKind, progress: &mut Progress) -> RunResult {
    let label = crate::cli::Bench::Echo {
        conns: p.conns,
        size: p.size,
        rate: p.rate,
        secs: p.secs,
        warmup: p.warmup,
    }
    .label();
    let mut res = RunResult::new(Mode::Echo, label, backend_name(backend), "req");
    res.cpu_scope = "server thread";
    res.open_loop = p.rate.is_some();
    res.target_rate = p.rate;
    res.params = json!({
        "conns": p.conns,
        "size": p.size,
        "rate": p.rate,
        "loop": if p.rate.is_some() { "open" } else { "closed" },
        "secs": p.secs.as_secs_f64(),
        "warmup_secs": p.warmup.as_secs_f64(),
    });
    if let Err(e) = run_inner(p, backend, progress, &mut res) {
        res.error = Some(e);
    }
    res
}

fn run_inner(
    p: &EchoParams,
    backend: BackendKind,
    progress: &mut Progress,
    res: &mut RunResult,
) -> Result<(), String> {
    let cores = sys::cpus();
    let server_core = cores.first().copied();
    let client_core = cores.get(1).copied();
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));

    // Server.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tl_tx, tl_rx) = mpsc::channel();
    let (srv_tx, srv_rx) = mpsc::channel();
    let server_stop = stop.clone();
    let server = thread::Builder::new()
        .name("bench-echo-server".into())
        .spawn(move || {
            let report = server_thread(server_core, backend, server_stop, ready_tx, tl_rx);
            let _ = srv_tx.send(report);
        })
        .map_err(|e| format!("cannot start the server thread: {e}"))?;
    let ready = recv_within(&ready_rx, SETUP_TIMEOUT, "the server to start")??;
    res.backend = backend_name(ready.backend).to_string();
    res.backend_description = ready.description.clone();
    let addr = ready.addr;

    // Load generator: connects, then waits for the timeline.
    let (cready_tx, cready_rx) = mpsc::channel();
    let (ctl_tx, ctl_rx) = mpsc::channel();
    let (cli_tx, cli_rx) = mpsc::channel();
    let params = *p;
    let client_counter = counter.clone();
    let client = thread::Builder::new()
        .name("bench-echo-client".into())
        .spawn(move || {
            let report =
                client_thread(client_core, addr, params, client_counter, cready_tx, ctl_rx);
            let _ = cli_tx.send(report);
        })
        .map_err(|e| format!("cannot start the load generator thread: {e}"))?;
    let client_ready =
        recv_within(&cready_rx, SETUP_TIMEOUT, "the connections to open").and_then(|r| r);
    if let Err(e) = client_ready {
        // Without a timeline the server only waits for the stop flag.
        drop(tl_tx);
        let _ = shut_down_server(&stop, addr, &srv_rx);
        return Err(e);
    }

    let start = Instant::now();
    let tl = Timeline {
        start,
        warm_end: start + p.warmup,
        end: start + p.warmup + p.secs,
    };
    let _ = tl_tx.send(tl);
    let _ = ctl_tx.send(tl);
    let deadline = tl.end + ROUND_TRIP_TIMEOUT + SETUP_TIMEOUT;
    let client_report = wait_with_progress(
        &cli_rx,
        progress,
        Some(tl.end),
        &counter,
        deadline,
        "the load generator to finish",
    )
    .and_then(|r| r);
    let server_report = shut_down_server(&stop, addr, &srv_rx);
    let (client_report, server_report) = (client_report?, server_report?);
    // Both threads have reported, so they are about to exit.
    let _ = client.join();
    let _ = server.join();
    fill(res, p, &client_report, &server_report);
    Ok(())
}

/// Raises the stop flag, wakes the accept loop with one connection and waits for the
/// server's report.
fn shut_down_server(
    stop: &AtomicBool,
    addr: SocketAddr,
    rx: &Receiver<Result<ServerReport, String>>,
) -> Result<ServerReport, String> {
    stop.store(true, Ordering::Release);
    let unblock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    let report = recv_within(rx, SETUP_TIMEOUT, "the server to shut down");
    drop(unblock);
    report?
}

fn recv_within<T>(rx: &Receiver<T>, d: Duration, what: &str) -> Result<T, String> {
    rx.recv_timeout(d)
        .map_err(|_| format!("gave up after {d:?} waiting for {what}"))
}

/// Moves the measurements into the result.
fn fill(res: &mut RunResult, p: &EchoParams, c: &ClientReport, s: &ServerReport) {
    res.ops = c.rec.requests;
    res.elapsed = p.secs;
    res.latency = Some(c.rec.hist.clone());
    res.unsent = c.rec.unsent;
    res.cpu = s.usage.cpu;
    res.run_wait = stats::wait_fraction(s.usage.run_wait, p.secs);
    res.counters = Some((s.window.enters, s.window.parks, s.window.turns));
    if let serde_json::Value::Object(m) = &mut res.params {
        m.insert("client_backend".into(), json!(c.backend));
        m.insert("warmup_requests".into(), json!(c.rec.warmup));
        m.insert(
            "client_cpu_us_per_request".into(),
            json!(stats::cpu_us_per_op(c.usage.cpu, c.rec.requests)),
        );
        m.insert(
            "client_run_wait_fraction".into(),
            json!(stats::wait_fraction(c.usage.run_wait, p.secs)),
        );
    }
    for (who, u) in [("server", &s.usage), ("load generator", &c.usage)] {
        if let Some(f) = stats::wait_fraction(u.run_wait, p.secs).filter(|&f| f > NOISY_WAIT) {
            res.notes.push(format!(
                "the {who} thread waited for a CPU {:.0}% of the window: other processes \
                 competed, figures are noisy",
                f * 100.0
            ));
        }
    }
    // A load generator near 100% of its CPU is the bottleneck: compare cpu/op then.
    if let Some(f) = c
        .usage
        .cpu
        .and_then(|cpu| stats::ratio(cpu.as_secs_f64(), p.secs.as_secs_f64()))
        .filter(|&f| f > 0.9)
    {
        res.notes.push(format!(
            "load generator at {:.0}% of its CPU: client-bound, compare server cpu/op rather \
             than req/s",
            f * 100.0
        ));
    }
    if let Some(rate) = p.rate {
        let achieved = res.rate();
        if c.rec.unsent > 0 || stats::ratio(achieved, rate).is_some_and(|r| r < 0.98) {
            res.notes.push(format!(
                "target {} req/s not reached ({} req/s, {} requests never sent): the tail \
                 latencies are a lower bound",
                stats::human(rate),
                stats::human(achieved),
                c.rec.unsent
            ));
        }
    }
    res.notes.extend(c.errors.iter().cloned());
    res.notes.extend(s.errors.iter().cloned());
    if !c.errors.is_empty() && res.error.is_none() {
        res.error = Some(format!("{} load generator error(s)", c.errors.len()));
    }
}

// ---------------------------------------------------------------------------------------
// Server

// Never inlined: bench/scripts/callgrind-echo.sh finds the server thread by this symbol.
#[inline(never)]
fn server_thread(
    core: Option<core_affinity::CoreId>,
    backend: BackendKind,
    stop: Arc<AtomicBool>,
    ready: Sender<Result<ServerReady, String>>,
    timeline: Receiver<Timeline>,
) -> Result<ServerReport, String> {
    sys::pin(core);
    let setup = || -> io::Result<(Runtime, TcpListener)> {
        let rt = coring::Builder::new().backend(backend).build()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        Ok((rt, listener))
    };
    let (rt, listener) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("server setup on {}: {e}", backend_name(backend));
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let addr = listener
        .local_addr()
        .map_err(|e| format!("server local_addr: {e}"))?;
    let _ = ready.send(Ok(ServerReady {
        addr,
        backend: rt.backend(),
        description: rt.backend_description(),
    }));
    // No timeline means the run was abandoned before it started: just stop.
    let tl = timeline.recv().ok();
    let report = rt.block_on(serve(&rt, listener, stop, tl));
    drop(rt);
    Ok(report)
}

async fn serve(
    rt: &Runtime,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    tl: Option<Timeline>,
) -> ServerReport {
    let acceptor = coring::spawn(accept_loop(listener, stop));
    let (mut usage, mut window) = (ThreadUsage::default(), Metrics::default());
    if let Some(tl) = tl {
        sleep_until(tl.warm_end).await;
        let (u0, m0) = (ThreadUsage::now(), rt.metrics());
        sleep_until(tl.end).await;
        let (u1, m1) = (ThreadUsage::now(), rt.metrics());
        usage = u1.since(u0);
        window = Metrics {
            turns: m1.turns - m0.turns,
            parks: m1.parks - m0.parks,
            enters: m1.enters - m0.enters,
            ..Metrics::default()
        };
    }
    let errors = match acceptor.await {
        Ok(errors) => errors,
        Err(e) => vec![format!("the accept task failed: {e:?}")],
    };
    ServerReport {
        usage,
        window,
        errors,
    }
}

/// Accepts until `stop` is raised, then waits (a bounded time) for the connections to end.
async fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut errors = Vec::new();
    let mut handlers = Vec::new();
    loop {
        let accepted = listener.accept().await;
        if stop.load(Ordering::Acquire) {
            break;
        }
        match accepted {
            Ok((stream, _)) => handlers.push(coring::spawn(echo(stream))),
            Err(e) => {
                errors.push(format!("accept: {e}"));
                coring::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for handler in handlers {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, handler).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => errors.push(format!("server connection: {e}")),
            Ok(Err(e)) => errors.push(format!("server connection task: {e:?}")),
            Err(_) => errors.push("a server connection outlived the client".to_string()),
        }
    }
    errors
}

/// Echoes everything it reads until the peer closes.
async fn echo(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(SERVER_BUF);
    loop {
        // A read fills from the start and only grows the length: start each from empty.
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        if res? == 0 {
            return Ok(());
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        res?;
    }
}

// ---------------------------------------------------------------------------------------
// Load generator

fn client_thread(
    core: Option<core_affinity::CoreId>,
    addr: SocketAddr,
    p: EchoParams,
    counter: Arc<AtomicU64>,
    ready: Sender<Result<(), String>>,
    timeline: Receiver<Timeline>,
) -> Result<ClientReport, String> {
    sys::pin(core);
    let rt = match coring::Builder::new().backend(p.client_backend).build() {
        Ok(rt) => rt,
        Err(e) => {
            let msg = format!("load generator setup: {e}");
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let backend = rt.backend_description();
    let rec = Rc::new(Recorder::new(counter));
    let (usage, errors) = rt.block_on(generate(addr, p, rec.clone(), ready, timeline))?;
    drop(rt);
    Ok(ClientReport {
        rec: RecorderReport {
            hist: rec.histogram(),
            requests: rec.requests(),
            warmup: rec.warmup(),
            unsent: rec.unsent(),
        },
        usage,
        backend,
        errors,
    })
}

/// The load generator's clock: coring's timers, in ns since the run's start.
struct CoringClock {
    start: Instant,
}

impl Clock for CoringClock {
    fn now_ns(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos() as u64
    }

    fn sleep_until_ns(&self, t_ns: u64) -> impl Future<Output = ()> {
        sleep_until(self.start + Duration::from_nanos(t_ns))
    }
}

/// One client connection: writes a message, reads it back whole, checks it.
struct EchoConn {
    stream: TcpStream,
    msg: Vec<u8>,
    reply: Vec<u8>,
    seq: u64,
}

impl EchoConn {
    fn new(stream: TcpStream, id: usize, size: usize) -> EchoConn {
        EchoConn {
            stream,
            // A per-connection pattern with a sequence number stamped in front, so a reply
            // from another connection or a stale one would not compare equal.
            msg: (0..size)
                .map(|i| (i as u8).wrapping_add(id as u8))
                .collect(),
            reply: Vec::with_capacity(size),
            seq: 0,
        }
    }

    async fn exchange(&mut self) -> io::Result<()> {
        let size = self.msg.len();
        let stamp = self.seq.to_le_bytes();
        let k = stamp.len().min(size);
        self.msg[..k].copy_from_slice(&stamp[..k]);
        let (res, m) = self.stream.write_all(std::mem::take(&mut self.msg)).await;
        self.msg = m;
        res?;
        let mut reply = std::mem::take(&mut self.reply);
        reply.clear();
        let (res, r) = self.stream.read_exact(reply.slice(..size)).await;
        self.reply = r.into_inner();
        res?;
        if self.reply != self.msg {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("echo mismatch on request {}", self.seq),
            ));
        }
        self.seq += 1;
        Ok(())
    }
}

impl RoundTrip for EchoConn {
    async fn round_trip(&mut self) -> io::Result<()> {
        match timeout(ROUND_TRIP_TIMEOUT, self.exchange()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no echo within {ROUND_TRIP_TIMEOUT:?}"),
            )),
        }
    }
}

async fn generate(
    addr: SocketAddr,
    p: EchoParams,
    rec: Rc<Recorder>,
    ready: Sender<Result<(), String>>,
    timeline: Receiver<Timeline>,
) -> Result<(ThreadUsage, Vec<String>), String> {
    let mut conns = Vec::with_capacity(p.conns);
    for id in 0..p.conns {
        let connected = async {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok::<_, io::Error>(s)
        };
        match timeout(SETUP_TIMEOUT, connected).await {
            Ok(Ok(s)) => conns.push(EchoConn::new(s, id, p.size)),
            Ok(Err(e)) => {
                let msg = format!("connection {id} of {}: {e}", p.conns);
                let _ = ready.send(Err(msg.clone()));
                return Err(msg);
            }
            Err(_) => {
                let msg = format!("connection {id} of {}: connect timed out", p.conns);
                let _ = ready.send(Err(msg.clone()));
                return Err(msg);
            }
        }
    }
    let _ = ready.send(Ok(()));
    // Nothing else runs on this runtime yet, so blocking here delays nobody.
    let tl = timeline
        .recv()
        .map_err(|_| "the run was abandoned before it started".to_string())?;
    let clock = Rc::new(CoringClock { start: tl.start });
    let window = tl.window();
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let pacing = match p.rate {
                None => Pacing::Closed,
                Some(r) => Pacing::Open(ConnSchedule::new(r, p.conns, i)),
            };
            let (clock, rec) = (clock.clone(), rec.clone());
            coring::spawn(async move { drive(&*clock, &mut conn, pacing, window, &rec).await })
        })
        .collect();
    sleep_until(tl.warm_end).await;
    let u0 = ThreadUsage::now();
    sleep_until(tl.end).await;
    let usage = ThreadUsage::now().since(u0);
    let mut errors = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("client connection {i}: {e}")),
            Err(e) => errors.push(format!("client connection {i} task: {e:?}")),
        }
    }
    Ok((usage, errors))
}
