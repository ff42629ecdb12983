//! A TCP echo server and a closed-loop load generator on loopback: coring's "see it work"
//! demo.
//!
//! ```text
//! cargo run --release --example echo
//! cargo run --release --example echo -- --conns 64 --size 4096 --secs 3
//! ```
//!
//! Two threads, each with its own [`coring::Runtime`]:
//!
//! - the **server** (pinned to the first CPU) accepts connections on an ephemeral port of
//!   127.0.0.1 and spawns one task per connection that reads into an owned buffer and writes
//!   it back until EOF;
//! - the **client** (pinned to the second CPU when there is one) opens `--conns`
//!   connections, and each does ping-pong with a `--size`-byte message: `write_all`, then
//!   read until the whole message is back, then compare the bytes. After a 0.5 s warm-up,
//!   it records every round trip's latency for `--secs` seconds.
//!
//! At the end it prints the backend, requests per second, latency percentiles, the server
//! thread's CPU time per request and the server runtime's counters (kernel entries per
//! request and so on), all measured over the same window. The whole run is bounded: if
//! anything takes longer than 30 s (or the requested duration plus 10 s, whichever is
//! longer), the program says what it was waiting for and exits with status 1.

use std::env;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use coring::buf::IoBuf;
use coring::net::{TcpListener, TcpStream};
use coring::time::{sleep_until, timeout};
use coring::{Metrics, Runtime};

/// Round trips during this long after the start are not counted (connection setup, page
/// faults, caches and TCP windows settling).
const WARMUP: Duration = Duration::from_millis(500);
/// Bytes each server connection reads at most at once.
const SERVER_BUF: usize = 16 * 1024;
/// The least time the whole program may take before it gives up.
const MIN_BUDGET: Duration = Duration::from_secs(30);
/// How long the server waits, once it stops accepting, for its connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// When a thread spent more than this fraction of the measured window runnable but waiting
/// for its CPU, the report warns that other processes competed for the CPUs.
const NOISY_RUN_WAIT: f64 = 0.05;

const USAGE: &str = "\
usage: echo [--conns N] [--size BYTES] [--secs S]

Runs a coring TCP echo server and a closed-loop load generator on 127.0.0.1 and prints
requests/s, round-trip latency percentiles, server CPU time per request and the server
runtime's counters.

options:
  --conns N       concurrent connections, each doing ping-pong (default 16)
  --size BYTES    message size in bytes (default 1024)
  --secs S        measured duration in seconds, after a 0.5 s warm-up (default 5)
  -h, --help      print this help";

/// What to run, from the command line.
#[derive(Debug, Clone, Copy)]
struct Config {
    conns: usize,
    size: usize,
    duration: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            conns: 16,
            size: 1024,
            duration: Duration::from_secs(5),
        }
    }
}

/// Outcome of parsing the command line.
enum Args {
    Run(Config),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut cfg = Config::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Args::Help);
        }
        if !matches!(flag.as_str(), "--conns" | "--size" | "--secs") {
            return Err(format!("unknown argument '{arg}'"));
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "--conns" => cfg.conns = parse_count(&flag, &value)?,
            "--size" => cfg.size = parse_count(&flag, &value)?,
            _ => cfg.duration = parse_secs(&value)?,
        }
    }
    Ok(Args::Run(cfg))
}

fn parse_count(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{flag} takes a whole number greater than 0, not '{value}'"
        )),
    }
}

fn parse_secs(value: &str) -> Result<Duration, String> {
    let bad = || format!("--secs takes a number of seconds greater than 0, not '{value}'");
    let secs: f64 = value.parse().map_err(|_| bad())?;
    // try_from_secs_f64 rejects negative, NaN and overflowing values.
    let d = Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
    if d.is_zero() {
        return Err(bad());
    }
    if d > Duration::from_secs(86_400) {
        return Err(format!(
            "--secs must be at most one day (86400), not '{value}'"
        ));
    }
    Ok(d)
}

/// The shared timeline: both threads count work between `warm_end` and `end`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    warm_end: Instant,
    end: Instant,
}

/// What the server thread reports once it is listening.
struct Ready {
    addr: SocketAddr,
    backend: String,
}

/// What the server thread reports at the end.
struct ServerReport {
    /// Server thread CPU time and preemptions over the measured window.
    usage: ThreadUsage,
    /// Runtime counters over the measured window.
    window: Metrics,
    /// Runtime counters over the whole run.
    total: Metrics,
    accepted: usize,
    bytes_echoed: u64,
    errors: Vec<String>,
}

/// What the client thread reports at the end.
struct ClientReport {
    /// Round-trip latencies in the measured window, in nanoseconds, sorted.
    latencies: Vec<u64>,
    /// Round trips done during the warm-up.
    warmup_requests: u64,
    /// Client thread CPU time and preemptions over the measured window.
    usage: ThreadUsage,
    errors: Vec<String>,
}

fn main() -> ExitCode {
    let cfg = match parse_args(env::args().skip(1)) {
        Ok(Args::Run(cfg)) => cfg,
        Ok(Args::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("echo: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let budget = MIN_BUDGET.max(WARMUP + cfg.duration + Duration::from_secs(10));
    let deadline = Instant::now() + budget;
    match run(cfg, deadline, budget) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("echo: FAILED: see the errors above");
            ExitCode::FAILURE
        }
        Err(msg) => {
            eprintln!("echo: error: {msg}");
            // Another thread may be stuck in the kernel; leave without waiting for it.
            std::process::exit(1);
        }
    }
}

/// Runs the server and the client, prints the results, and says whether there were no
/// errors. `Err` means the run could not complete (setup failure, a panic, or a timeout).
fn run(cfg: Config, deadline: Instant, budget: Duration) -> Result<bool, String> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let server_core = cores.first().copied();
    let client_core = cores.get(1).copied();
    let stop = Arc::new(AtomicBool::new(false));

    let (ready_tx, ready_rx) = mpsc::channel();
    let (sched_tx, sched_rx) = mpsc::channel();
    let (server_tx, server_rx) = mpsc::channel();
    let server_stop = stop.clone();
    let server = thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || {
            let report = server_thread(server_core, server_stop, ready_tx, sched_rx);
            let _ = server_tx.send(report);
        })
        .map_err(|e| format!("cannot start the server thread: {e}"))?;
    let wait = |what: &str| Waiter {
        deadline,
        budget,
        what: what.to_string(),
    };
    let ready = wait("the server to start").recv(&ready_rx)??;

    let start = Instant::now();
    let sched = Schedule {
        warm_end: start + WARMUP,
        end: start + WARMUP + cfg.duration,
    };
    sched_tx
        .send(sched)
        .map_err(|_| "the server thread exited before the run started".to_string())?;

    let (client_tx, client_rx) = mpsc::channel();
    let addr = ready.addr;
    let client = thread::Builder::new()
        .name("echo-client".into())
        .spawn(move || {
            let _ = client_tx.send(client_thread(client_core, addr, cfg, sched));
        })
        .map_err(|e| format!("cannot start the client thread: {e}"))?;
    let client_report = wait("the load generator to finish").recv(&client_rx)??;

    // The client has closed its connections. Stop the server: raise the flag, then connect
    // once so that the pending accept completes and the accept loop sees the flag.
    stop.store(true, Ordering::Release);
    let unblock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    let server_report = wait("the server to shut down").recv(&server_rx)??;
    drop(unblock);
    client
        .join()
        .map_err(|_| "the client thread panicked".to_string())?;
    server
        .join()
        .map_err(|_| "the server thread panicked".to_string())?;

    print_report(
        &cfg,
        &ready,
        server_core,
        client_core,
        &client_report,
        &server_report,
    );
    Ok(client_report.errors.is_empty() && server_report.errors.is_empty())
}

/// Waits for one thread's answer until the program's deadline.
struct Waiter {
    deadline: Instant,
    budget: Duration,
    what: String,
}

impl Waiter {
    fn recv<T>(self, rx: &Receiver<T>) -> Result<T, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left).map_err(|e| match e {
            RecvTimeoutError::Timeout => format!(
                "gave up after {:?} in total while waiting for {}",
                self.budget, self.what
            ),
            RecvTimeoutError::Disconnected => format!(
                "a thread exited (panicked?) while waiting for {}",
                self.what
            ),
        })
    }
}

// ----------------------------------------------------------------------------------------
// Server

fn server_thread(
    core: Option<core_affinity::CoreId>,
    stop: Arc<AtomicBool>,
    ready: Sender<Result<Ready, String>>,
    sched: Receiver<Schedule>,
) -> Result<ServerReport, String> {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    let setup = || -> io::Result<(Runtime, TcpListener)> {
        let rt = Runtime::new()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        Ok((rt, listener))
    };
    let (rt, listener) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("server setup failed: {e}");
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let addr = listener
        .local_addr()
        .map_err(|e| format!("server local_addr: {e}"))?;
    let _ = ready.send(Ok(Ready {
        addr,
        backend: rt.backend_description(),
    }));
    let sched = sched
        .recv()
        .map_err(|_| "the main thread went away before the run started".to_string())?;
    let mut report = rt.block_on(serve(&rt, listener, stop, sched));
    report.total = rt.metrics();
    // Dropping the runtime cancels anything left and waits for the kernel to let go of it.
    drop(rt);
    Ok(report)
}

/// The server's main future: runs the accept loop as a task and samples CPU time and the
/// runtime's counters at the edges of the measured window.
async fn serve(
    rt: &Runtime,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    sched: Schedule,
) -> ServerReport {
    let acceptor = coring::spawn(accept_loop(listener, stop));
    sleep_until(sched.warm_end).await;
    let (u0, m0) = (ThreadUsage::now(), rt.metrics());
    sleep_until(sched.end).await;
    let (u1, m1) = (ThreadUsage::now(), rt.metrics());
    let stats = match acceptor.await {
        Ok(stats) => stats,
        Err(e) => AcceptStats {
            errors: vec![format!("the accept task failed: {e:?}")],
            ..AcceptStats::default()
        },
    };
    ServerReport {
        usage: u1.since(u0),
        window: metrics_delta(m1, m0),
        total: m1,
        accepted: stats.accepted,
        bytes_echoed: stats.bytes_echoed,
        errors: stats.errors,
    }
}

#[derive(Default)]
struct AcceptStats {
    accepted: usize,
    bytes_echoed: u64,
    errors: Vec<String>,
}

/// Accepts until `stop` is raised, then waits (a bounded time) for the connections to end.
async fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>) -> AcceptStats {
    let mut stats = AcceptStats::default();
    let mut handlers = Vec::new();
    loop {
        let accepted = listener.accept().await;
        if stop.load(Ordering::Acquire) {
            break;
        }
        match accepted {
            Ok((stream, _peer)) => {
                stats.accepted += 1;
                handlers.push(coring::spawn(echo(stream)));
            }
            Err(e) => {
                // EMFILE and friends: report, back off a little instead of spinning.
                stats.errors.push(format!("accept: {e}"));
                coring::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut still_open = 0;
    for handler in handlers {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        match timeout(left, handler).await {
            Ok(Ok(Ok(n))) => stats.bytes_echoed += n,
            Ok(Ok(Err(e))) => stats.errors.push(format!("server connection: {e}")),
            Ok(Err(e)) => stats.errors.push(format!("server connection task: {e:?}")),
            Err(_) => still_open += 1,
        }
    }
    if still_open > 0 {
        stats.errors.push(format!(
            "{still_open} server connection(s) still open {DRAIN_TIMEOUT:?} after the \
             client closed them"
        ));
    }
    stats
}

/// Echoes everything it reads until the peer closes; returns the bytes echoed.
async fn echo(stream: TcpStream) -> io::Result<u64> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(SERVER_BUF);
    let mut echoed = 0u64;
    loop {
        // A read only ever grows a Vec's length, so start each one from empty.
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            return Ok(echoed);
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        res?;
        echoed += n as u64;
    }
}

// ----------------------------------------------------------------------------------------
// Client

fn client_thread(
    core: Option<core_affinity::CoreId>,
    addr: SocketAddr,
    cfg: Config,
    sched: Schedule,
) -> Result<ClientReport, String> {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    let rt = Runtime::new().map_err(|e| format!("client setup failed: {e}"))?;
    let report = rt.block_on(generate_load(addr, cfg, sched));
    drop(rt);
    Ok(report)
}

/// One connection's results.
#[derive(Default)]
struct ConnStats {
    latencies: Vec<u64>,
    warmup_requests: u64,
}

async fn generate_load(addr: SocketAddr, cfg: Config, sched: Schedule) -> ClientReport {
    let handles: Vec<_> = (0..cfg.conns)
        .map(|id| coring::spawn(ping_pong(id, addr, cfg.size, sched)))
        .collect();
    sleep_until(sched.warm_end).await;
    let u0 = ThreadUsage::now();
    sleep_until(sched.end).await;
    let u1 = ThreadUsage::now();

    let mut report = ClientReport {
        latencies: Vec::new(),
        warmup_requests: 0,
        usage: u1.since(u0),
        errors: Vec::new(),
    };
    for (id, handle) in handles.into_iter().enumerate() {
        match handle.await {
            Ok((stats, res)) => {
                report.latencies.extend_from_slice(&stats.latencies);
                report.warmup_requests += stats.warmup_requests;
                if let Err(e) = res {
                    report.errors.push(format!("client connection {id}: {e}"));
                }
            }
            Err(e) => report
                .errors
                .push(format!("client connection {id} task: {e:?}")),
        }
    }
    report.latencies.sort_unstable();
    report
}

/// Closed-loop ping-pong on one connection until `sched.end`; the connection is closed on
/// return. Gives back what it measured even when it stopped on an error.
async fn ping_pong(
    id: usize,
    addr: SocketAddr,
    size: usize,
    sched: Schedule,
) -> (ConnStats, io::Result<()>) {
    let mut stats = ConnStats::default();
    let res = ping_pong_inner(id, addr, size, sched, &mut stats).await;
    (stats, res)
}

async fn ping_pong_inner(
    id: usize,
    addr: SocketAddr,
    size: usize,
    sched: Schedule,
    stats: &mut ConnStats,
) -> io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    // A per-connection pattern, with a sequence number stamped in front on every request,
    // so a reply from the wrong connection or a stale reply would not compare equal.
    let mut msg: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_add(id as u8))
        .collect();
    let mut reply: Vec<u8> = Vec::with_capacity(size);
    let mut seq: u64 = 0;
    loop {
        let started = Instant::now();
        if started >= sched.end {
            return Ok(());
        }
        let stamp = seq.to_le_bytes();
        let k = stamp.len().min(size);
        msg[..k].copy_from_slice(&stamp[..k]);

        let (res, m) = stream.write_all(msg).await;
        msg = m;
        res?;
        reply.clear();
        let (res, r) = stream.read_exact(reply.slice(..size)).await;
        reply = r.into_inner();
        res?;
        let rtt = started.elapsed();

        if reply != msg {
            let at = reply.iter().zip(&msg).position(|(a, b)| a != b);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "echo mismatch on request {seq}: got {} bytes back for {size}, first \
                     difference at byte {at:?}",
                    reply.len()
                ),
            ));
        }
        if started >= sched.warm_end {
            stats.latencies.push(rtt.as_nanos() as u64);
        } else {
            stats.warmup_requests += 1;
        }
        seq += 1;
    }
}

// ----------------------------------------------------------------------------------------
// Measurement helpers

/// The calling thread's CPU time, and how long it sat runnable waiting for a CPU (a sign
/// that other processes compete for its core). Either is `None` if the kernel would not
/// say.
#[derive(Debug, Clone, Copy)]
struct ThreadUsage {
    cpu: Option<Duration>,
    run_wait: Option<Duration>,
}

impl ThreadUsage {
    fn now() -> ThreadUsage {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec that outlives the call; clock_gettime
        // only writes into it.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        let cpu = (r == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
        // "<ns on cpu> <ns runnable but waiting> <timeslices>" (Linux, CONFIG_SCHED_INFO).
        let run_wait = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .map(Duration::from_nanos);
        ThreadUsage { cpu, run_wait }
    }

    /// What was used between `earlier` and `self`.
    fn since(self, earlier: ThreadUsage) -> ThreadUsage {
        let diff =
            |b: Option<Duration>, a: Option<Duration>| b.zip(a).map(|(b, a)| b.saturating_sub(a));
        ThreadUsage {
            cpu: diff(self.cpu, earlier.cpu),
            run_wait: diff(self.run_wait, earlier.run_wait),
        }
    }
}

/// `end - start`, counter by counter.
fn metrics_delta(end: Metrics, start: Metrics) -> Metrics {
    let mut d = end;
    d.turns = end.turns.saturating_sub(start.turns);
    d.parks = end.parks.saturating_sub(start.parks);
    d.enters = end.enters.saturating_sub(start.enters);
    d.ops_submitted = end.ops_submitted.saturating_sub(start.ops_submitted);
    d.ops_completed = end.ops_completed.saturating_sub(start.ops_completed);
    d.ops_orphaned = end.ops_orphaned.saturating_sub(start.ops_orphaned);
    d.enter_retries = end.enter_retries.saturating_sub(start.enter_retries);
    d.ops_leaked = end.ops_leaked.saturating_sub(start.ops_leaked);
    d
}

/// The `p`-quantile (0 < p <= 1) of sorted values, by the nearest-rank method.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Nanoseconds shown as microseconds.
struct Micros(u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}", self.0 as f64 / 1000.0)
    }
}

fn core_name(core: Option<core_affinity::CoreId>) -> String {
    match core {
        Some(c) => format!("CPU {}", c.id),
        None => "unpinned".to_string(),
    }
}

fn print_report(
    cfg: &Config,
    ready: &Ready,
    server_core: Option<core_affinity::CoreId>,
    client_core: Option<core_affinity::CoreId>,
    client: &ClientReport,
    server: &ServerReport,
) {
    let secs = cfg.duration.as_secs_f64();
    let lat = &client.latencies;
    let requests = lat.len() as u64;
    let per_req = |x: u64| {
        if requests == 0 {
            0.0
        } else {
            x as f64 / requests as f64
        }
    };
    let mib_s = requests as f64 * cfg.size as f64 / secs / (1024.0 * 1024.0);

    println!("coring echo over TCP loopback");
    println!("backend:       {}", ready.backend);
    println!(
        "server:        {} ({}), client {}",
        ready.addr,
        core_name(server_core),
        core_name(client_core)
    );
    println!(
        "connections:   {}, message {} bytes, {:.1} s measured after a {:.1} s warm-up \
         ({} warm-up round trips not counted)",
        cfg.conns,
        cfg.size,
        secs,
        WARMUP.as_secs_f64(),
        client.warmup_requests
    );
    println!(
        "requests:      {requests} ({:.0} req/s, {mib_s:.1} MiB/s each way)",
        requests as f64 / secs
    );
    println!(
        "latency (µs):  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        Micros(percentile(lat, 0.50)),
        Micros(percentile(lat, 0.90)),
        Micros(percentile(lat, 0.99)),
        Micros(percentile(lat, 0.999)),
        Micros(lat.last().copied().unwrap_or(0)),
    );
    let cpu_line = |u: &ThreadUsage| {
        let mut line = match u.cpu {
            Some(cpu) => format!(
                "{:.2} µs/request ({:.0}% of one core",
                per_req(cpu.as_nanos() as u64) / 1000.0,
                100.0 * cpu.as_secs_f64() / secs
            ),
            None => "unavailable (CLOCK_THREAD_CPUTIME_ID failed) (".to_string(),
        };
        if let Some(w) = u.run_wait {
            line += &format!(", {:.0} ms waiting for a CPU", w.as_secs_f64() * 1000.0);
        }
        line + ")"
    };
    println!("server CPU:    {}", cpu_line(&server.usage));
    println!("client CPU:    {}", cpu_line(&client.usage));
    let w = &server.window;
    println!(
        "server/req:    {:.3} kernel enters, {:.3} parks, {:.3} loop turns, {:.3} ops \
         submitted",
        per_req(w.enters),
        per_req(w.parks),
        per_req(w.turns),
        per_req(w.ops_submitted)
    );
    println!(
        "server run:    {} connections accepted, {} bytes echoed, {:?}",
        server.accepted, server.bytes_echoed, server.total
    );
    let waited = [server.usage.run_wait, client.usage.run_wait]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
    if waited.as_secs_f64() > NOISY_RUN_WAIT * secs {
        println!(
            "note:          other processes competed for these CPUs; expect fewer req/s and \
             a longer latency tail than on an idle machine"
        );
    }
    for e in client.errors.iter().chain(&server.errors) {
        eprintln!("error: {e}");
    }
}
