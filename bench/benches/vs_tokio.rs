//! coring (io_uring and fallback backends) against tokio's `current_thread` runtime, in one
//! process, interleaved, each measurement repeated (default 3 times) and the median reported.
//!
//! 1. **Echo server CPU per request.** The server runs on one thread pinned to the first
//!    CPU; the load generator on another thread pinned to the second. The load generator is
//!    the same for every server: a tokio `current_thread` runtime with one task per
//!    connection doing closed-loop ping-pong (`write_all` a message, `read_exact` the reply,
//!    compare). Only the server differs:
//!    - coring on io_uring, and coring on the fallback backend (epoll): a task per
//!      connection that reads into an owned 16 KiB buffer and `write_all`s what it read;
//!    - tokio `current_thread`: `TcpListener` / `TcpStream`, a `tokio::spawn`ed task per
//!      connection that reads into a 16 KiB buffer with `AsyncReadExt::read` and
//!      `write_all`s it back;
//!    - raw io_uring (Linux only), the practical limit: a plain single-threaded loop on the
//!      `io-uring` crate, one ring set up as coring sets up its own, an accept SQE re-armed
//!      after each connection, and per connection a recv into its own 16 KiB buffer, a send
//!      of exactly the bytes received (again for the rest after a short send), then the recv
//!      re-armed. Each loop turn is one `submit_and_wait(1)`: it submits the SQEs queued
//!      while reaping the previous turn's CQEs, all of them.
//!
//!    After a warm-up, the server thread reads its own `CLOCK_THREAD_CPUTIME_ID` and its
//!    echoed-byte counter at the start and the end of the measured window; CPU per request
//!    is that CPU time divided by the requests echoed in the window. The client reports
//!    requests/s and the p50/p99 round-trip latency over the same window, and its own
//!    thread CPU time, so a second table shows server + client CPU per request: on
//!    loopback part of each side's TCP receive work runs on whichever thread sends, so the
//!    server's share swings from run to run while the sum (same client for every server)
//!    is steadier.
//!
//! 2. **File reads.** Random aligned 4 KiB reads from a page-cache-resident temp file
//!    (default 64 MiB), 32 reads in flight (32 tasks), on an unpinned thread:
//!    - coring on io_uring and on the fallback backend (which runs reads on its blocking
//!      pool): each task loops `file.read_at(buf, off).await` on a shared `Rc<File>`;
//!    - `tokio::fs`: each task owns a `tokio::fs::File` on the same path and does
//!      `seek(SeekFrom::Start(off))` + `read_exact` (two blocking-pool trips per read);
//!    - tokio `spawn_blocking(pread)`: each task moves its buffer into
//!      `tokio::task::spawn_blocking` running `FileExt::read_exact_at` on a shared
//!      `Arc<std::fs::File>` (one trip per read): the fastest idiomatic tokio way.
//!
//!    Reported: reads/s (IOPS), process CPU (all threads, pool included) per read, and the
//!    ratio to both tokio variants. Every read is checked: each block starts with its index.
//!
//! No timing is asserted; the machine this runs on may be shared and noisy, which is why
//! runs are interleaved and medians are shown, with each run's value beside them.
//!
//! ```text
//! cargo bench --bench vs_tokio
//! cargo bench --bench vs_tokio -- --secs 3 --conns 16 --size 1024 --backends io_uring,raw
//! cargo bench --bench vs_tokio -- --only echo --backends fallback --no-tokio --reps 1 --secs 10
//! ```

#[path = "common/args.rs"]
mod args;
#[cfg(target_os = "linux")]
#[path = "common/raw_ring.rs"]
mod raw_ring;
#[path = "common/runs.rs"]
mod runs;
use args::Flags;
use runs::{
    backend_usable, core_name, coring_runtime, cpu_clock, fmt_opt, fmt_ratio, fmt_x, pin,
    reject_backend_override, tokio_runtime, usable_cores, Runs, ThreadUsage,
};

use std::env;
use std::fmt;
use std::fs::File as StdFile;
use std::future::Future;
use std::io::{self, Read, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coring::{BackendKind, Metrics};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Bytes each server connection reads at most at once (every server uses the same).
const SERVER_BUF: usize = 16 * 1024;
/// Size of one file read, and the alignment of every offset.
const BLOCK: usize = 4096;
/// Seed of the offset generators; task `i` of every file contender uses the same stream.
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
/// How long, after the measured window, a server waits for the client to close.
const DRAIN: Duration = Duration::from_secs(5);
/// Extra time, beyond warm-up and measurement, before a run is declared hung.
const HANG_SLACK: Duration = Duration::from_secs(30);

const USAGE: &str = "\
usage: cargo bench --bench vs_tokio -- [options]
  --secs S          measured seconds per run, after the warm-up (default 3)
  --warmup S        warm-up seconds per run, not counted (default 0.5)
  --reps N          runs per contender, interleaved; the median is reported (default 3)
  --backends LIST   servers to run: the coring backends io_uring and fallback, and raw
                    (the plain io_uring echo loop; echo only, Linux only)
                    (default io_uring,fallback,raw; raw only on Linux)
  --no-tokio        leave out the tokio baselines (for profiling coring alone)
  --only WHAT       run only the echo or the fread benchmark
  --conns N         echo: connections, each doing ping-pong (default 16)
  --size BYTES      echo: message size (default 1024)
  --qd N            fread: reads in flight, one task each (default 32)
  --file-mb N       fread: size of the temp file in MiB (default 64)
  --dir PATH        fread: where to create the temp file (default the temp dir)
  -h, --help        this help

The CORING_BACKEND environment variable must not be set: it would override the backend
each coring contender asks for.";

// ----------------------------------------------------------------------------------------
// Command line

#[derive(Debug, Clone)]
struct Config {
    secs: Duration,
    warmup: Duration,
    reps: usize,
    backends: Vec<BackendKind>,
    /// Whether the echo benchmark runs the raw io_uring loop.
    raw: bool,
    tokio: bool,
    echo: bool,
    fread: bool,
    conns: usize,
    size: usize,
    qd: usize,
    file_mb: u64,
    dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            secs: Duration::from_secs(3),
            warmup: Duration::from_millis(500),
            reps: 3,
            backends: vec![BackendKind::IoUring, BackendKind::Fallback],
            raw: cfg!(target_os = "linux"),
            tokio: true,
            echo: true,
            fread: true,
            conns: 16,
            size: 1024,
            qd: 32,
            file_mb: 64,
            dir: env::temp_dir(),
        }
    }
}

impl Config {
    /// The longest a single run may take before the program gives up on it.
    fn run_budget(&self) -> Duration {
        self.warmup + self.secs + DRAIN + HANG_SLACK
    }
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("vs_tokio: {msg}\n{USAGE}");
    process::exit(2);
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Config {
    let mut cfg = Config::default();
    let mut flags = Flags::new(args, USAGE, usage_exit);
    while let Some((flag, inline)) = flags.next_flag() {
        match flag.as_str() {
            "--no-tokio" => cfg.tokio = false,
            "--secs" => cfg.secs = flags.secs(&flag, inline),
            "--warmup" => cfg.warmup = flags.secs(&flag, inline),
            "--reps" => cfg.reps = flags.count(&flag, inline),
            "--conns" => cfg.conns = flags.count(&flag, inline),
            "--size" => cfg.size = flags.count(&flag, inline),
            "--qd" => cfg.qd = flags.count(&flag, inline),
            "--file-mb" => cfg.file_mb = flags.count(&flag, inline) as u64,
            "--dir" => cfg.dir = PathBuf::from(flags.value(&flag, inline)),
            "--backends" => {
                let list = flags.value(&flag, inline);
                let names = list.split(',').filter(|s| !s.trim().is_empty());
                cfg.raw = false;
                cfg.backends = names
                    .filter(|s| {
                        let raw = s.trim().eq_ignore_ascii_case("raw");
                        cfg.raw |= raw;
                        !raw
                    })
                    .map(|s| match BackendKind::parse(s) {
                        Ok(BackendKind::Auto) | Err(_) => usage_exit(&format!(
                            "--backends takes io_uring, fallback and/or raw, not '{s}'"
                        )),
                        Ok(k) => k,
                    })
                    .collect();
            }
            "--only" => match flags.value(&flag, inline).as_str() {
                "echo" => (cfg.echo, cfg.fread) = (true, false),
                "fread" => (cfg.echo, cfg.fread) = (false, true),
                other => usage_exit(&format!("--only takes echo or fread, not '{other}'")),
            },
            _ => usage_exit(&format!("unknown argument '{flag}'")),
        }
    }
    cfg
}

// ----------------------------------------------------------------------------------------
// Main

fn main() {
    let mut cfg = parse_args(env::args().skip(1));
    reject_backend_override(usage_exit, "--backends");
    cfg.backends
        .retain(|&kind| backend_usable("vs_tokio", kind));
    let cores = usable_cores(
        "vs_tokio",
        "the echo server and client",
        "CPU per request and req/s",
    );
    println!(
        "coring vs tokio current_thread: {} run(s) per contender, interleaved, medians shown; \
         {:.1} s measured after {:.1} s warm-up per run",
        cfg.reps,
        cfg.secs.as_secs_f64(),
        cfg.warmup.as_secs_f64()
    );
    let mut failed = false;
    if cfg.echo {
        failed |= bench_echo(&cfg, &cores);
    }
    if cfg.fread {
        failed |= bench_fread(&cfg);
    }
    if failed {
        eprintln!("vs_tokio: FAILED: see the errors above");
        process::exit(1);
    }
}

/// Waits for a worker's answer until `budget` runs out; a worker that does not answer in
/// time is stuck (perhaps in the kernel), so the program says so and exits.
fn recv_or_exit<T>(rx: &Receiver<T>, budget: Duration, what: &str) -> T {
    match rx.recv_timeout(budget) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => {
            eprintln!("vs_tokio: gave up after {budget:?} waiting for {what}");
            process::exit(1);
        }
        Err(RecvTimeoutError::Disconnected) => {
            eprintln!("vs_tokio: a thread exited (panicked?) while waiting for {what}");
            process::exit(1);
        }
    }
}

// ----------------------------------------------------------------------------------------
// Echo

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Coring(BackendKind),
    /// The plain io_uring loop (Linux only): the practical limit.
    RawUring,
    Tokio,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Coring(kind) => f.pad(&format!("coring {kind}")),
            Server::RawUring => f.pad("raw io_uring"),
            Server::Tokio => f.pad("tokio current_thread"),
        }
    }
}

/// The shared timeline of one run: work between `warm_end` and `end` is measured.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    warm_end: Instant,
    end: Instant,
}

/// Counters shared by a server's tasks.
#[derive(Default)]
struct ServerStats {
    bytes: AtomicU64,
    closed: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl ServerStats {
    fn error(&self, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
}

/// What a server thread sees at one edge of the measured window.
#[derive(Clone, Copy)]
struct ServerSample {
    at: Instant,
    usage: ThreadUsage,
    bytes: u64,
    metrics: Option<Metrics>,
}

impl ServerSample {
    fn now(stats: &ServerStats, metrics: Option<Metrics>) -> ServerSample {
        ServerSample {
            at: Instant::now(),
            usage: ThreadUsage::now(),
            bytes: stats.bytes.load(Ordering::Relaxed),
            metrics,
        }
    }
}

/// What a server thread reports: its samples at both edges, and any errors.
struct ServerReport {
    start: ServerSample,
    end: ServerSample,
    errors: Vec<String>,
}

/// What the client thread reports.
struct ClientReport {
    /// Round-trip latencies, in nanoseconds, of requests started in the window; sorted.
    latencies: Vec<u64>,
    /// The client thread's CPU time over the measured window (same schedule as the
    /// server's samples).
    cpu: Option<Duration>,
    errors: Vec<String>,
}

/// One echo run's numbers.
struct EchoResult {
    req_per_sec: f64,
    cpu_us_per_req: f64,
    /// Server plus client thread CPU per request: on loopback, part of each side's TCP
    /// receive path runs on whichever thread sends, depending on timing, so the sum is the
    /// steadier figure (the client is the same for every server).
    total_cpu_us_per_req: Option<f64>,
    /// The server thread's share of one CPU over the window.
    cpu_share: f64,
    p50_us: f64,
    p99_us: f64,
    /// Time the server thread was runnable but waited for a CPU (noise), in ms.
    server_run_wait_ms: Option<f64>,
    /// coring only: kernel entries and parks per request.
    enters_per_req: Option<f64>,
    parks_per_req: Option<f64>,
    /// coring only: operations submitted per request (1 with an armed multishot receive:
    /// the send; more when receives fall back to single shots).
    ops_per_req: Option<f64>,
}

impl fmt::Display for EchoResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>8.0} req/s  server {:>6.2} µs/req ({:>3.0}% CPU)  p50 {:>6.1} µs  p99 {:>6.1} µs",
            self.req_per_sec,
            self.cpu_us_per_req,
            self.cpu_share * 100.0,
            self.p50_us,
            self.p99_us
        )?;
        if let (Some(e), Some(p)) = (self.enters_per_req, self.parks_per_req) {
            write!(f, "  {e:.2} enters/req {p:.2} parks/req")?;
        }
        if let Some(o) = self.ops_per_req {
            write!(f, " {o:.2} ops/req")?;
        }
        if let Some(w) = self.server_run_wait_ms {
            write!(f, "  waited {w:.0} ms for CPU")?;
        }
        Ok(())
    }
}

/// Runs the echo comparison and prints its table; returns whether anything failed.
fn bench_echo(cfg: &Config, cores: &[core_affinity::CoreId]) -> bool {
    let mut servers: Vec<Server> = cfg.backends.iter().map(|&k| Server::Coring(k)).collect();
    let raw_setup = if cfg.raw {
        match raw_uring::probe() {
            Ok(setup) => {
                servers.push(Server::RawUring);
                Some(setup)
            }
            Err(e) => {
                eprintln!("vs_tokio: skipping the raw io_uring loop: {e}");
                None
            }
        }
    } else {
        None
    };
    if cfg.tokio {
        servers.push(Server::Tokio);
    }
    if servers.is_empty() {
        return false;
    }
    let server_core = cores.first().copied();
    let client_core = cores.get(1).copied();
    println!(
        "\n== echo: {} connections, {} B messages, closed loop; server on {}, client \
         (tokio current_thread, the same for every server) on {}",
        cfg.conns,
        cfg.size,
        core_name(server_core),
        core_name(client_core)
    );
    if let Some(setup) = raw_setup {
        println!(
            "   raw io_uring: one ring ({setup}), accept / recv / send SQEs, a {} KiB buffer per \
             connection, one submit_and_wait(1) per loop turn",
            SERVER_BUF / 1024
        );
    }
    let runs = Runs::interleave(cfg.reps, &servers, |s| {
        run_echo(s, cfg, server_core, client_core)
    });

    let cpu = |r: &EchoResult| r.cpu_us_per_req;
    let tokio_cpu = runs.median(Server::Tokio, cpu);
    let tokio_min = runs.min(Server::Tokio, cpu);
    println!(
        "\n{:<22} {:>8} {:>11} {:>9} {:>9} {:>6} {:>7} {:>7} {:>8} {:>8}   CPU µs/req of each run",
        "server",
        "req/s",
        "CPU µs/req",
        "vs tokio",
        "(paired)",
        "min",
        "(vs)",
        "wait ms",
        "p50 µs",
        "p99 µs"
    );
    for &s in &servers {
        let med = runs.median(s, cpu);
        let min = runs.min(s, cpu);
        println!(
            "{:<22} {:>8} {:>11} {:>9} {:>9} {:>6} {:>7} {:>7} {:>8} {:>8}   {}",
            s.to_string(),
            fmt_opt(runs.median(s, |r| r.req_per_sec), 0),
            fmt_opt(med, 2),
            fmt_ratio(med, tokio_cpu),
            fmt_x(runs.paired_ratio(s, Server::Tokio, cpu)),
            fmt_opt(min, 2),
            fmt_ratio(min, tokio_min),
            fmt_opt(
                runs.median(s, |r| r.server_run_wait_ms.unwrap_or(f64::NAN)),
                0
            ),
            fmt_opt(runs.median(s, |r| r.p50_us), 1),
            fmt_opt(runs.median(s, |r| r.p99_us), 1),
            runs.each(s, 2, cpu),
        );
    }
    println!(
        "(vs tokio: ratio of medians; paired: median of same-round ratios; min: the cheapest \
         run, the one least disturbed by other load (load only adds time; on a shared VM runs \
         often fall into a fast and a slow mode), and its ratio to tokio's cheapest; wait ms: \
         time the server thread was runnable but waited for a CPU, i.e. other load)"
    );
    let total = |r: &EchoResult| r.total_cpu_us_per_req.unwrap_or(f64::NAN);
    let tokio_total = runs.median(Server::Tokio, total);
    println!(
        "\n{:<22} {:>15} {:>9} {:>9}   server + client CPU µs/req of each run",
        "server", "srv+cli µs/req", "vs tokio", "(paired)"
    );
    for &s in &servers {
        let med = runs.median(s, total);
        println!(
            "{:<22} {:>15} {:>9} {:>9}   {}",
            s.to_string(),
            fmt_opt(med, 2),
            fmt_ratio(med, tokio_total),
            fmt_x(runs.paired_ratio(s, Server::Tokio, total)),
            runs.each(s, 2, total),
        );
    }
    println!(
        "(on loopback part of each side's TCP receive work runs on whichever thread sends, \
         so the server's share swings from run to run; the sum over both threads, with the \
         same client for every server, is the steadier comparison)"
    );
    let fallback = Server::Coring(BackendKind::Fallback);
    if let (Some(fb), Some(tk)) = (runs.median(fallback, cpu), tokio_cpu) {
        let paired = runs.paired_ratio(fallback, Server::Tokio, cpu);
        println!(
            "target: coring fallback server CPU/request <= 1.00x tokio current_thread: {:.2}x \
             (paired {}, min {}), {}",
            fb / tk,
            fmt_x(paired),
            fmt_ratio(runs.min(fallback, cpu), tokio_min),
            if fb <= tk { "met" } else { "MISSED" }
        );
    }
    let uring = Server::Coring(BackendKind::IoUring);
    if let Some(cu) = runs.median(uring, cpu) {
        if let Some(raw) = runs.median(Server::RawUring, cpu) {
            println!(
                "target: coring io_uring server CPU/request <= 1.00x raw io_uring loop: {:.2}x \
                 (paired {}, min {}), {}",
                cu / raw,
                fmt_x(runs.paired_ratio(uring, Server::RawUring, cpu)),
                fmt_ratio(runs.min(uring, cpu), runs.min(Server::RawUring, cpu)),
                if cu <= raw { "met" } else { "MISSED" }
            );
        }
        if let Some(tk) = tokio_cpu {
            println!(
                "target: coring io_uring server CPU/request <= 0.90x tokio current_thread: \
                 {:.2}x (paired {}, min {}), {}",
                cu / tk,
                fmt_x(runs.paired_ratio(uring, Server::Tokio, cpu)),
                fmt_ratio(runs.min(uring, cpu), tokio_min),
                if cu <= 0.9 * tk { "met" } else { "MISSED" }
            );
        }
    }
    runs.failed
}

/// One echo run: a server of kind `server` on `server_core`, the tokio load generator on
/// `client_core`.
fn run_echo(
    server: Server,
    cfg: &Config,
    server_core: Option<core_affinity::CoreId>,
    client_core: Option<core_affinity::CoreId>,
) -> Result<EchoResult, String> {
    let budget = cfg.run_budget();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (sched_tx, sched_rx) = mpsc::channel();
    let (report_tx, report_rx) = mpsc::channel();
    let conns = cfg.conns;
    let server_thread = thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || {
            pin(server_core);
            let report = match server {
                Server::Coring(kind) => coring_server(kind, conns, ready_tx, sched_rx),
                Server::RawUring => raw_uring::server(conns, ready_tx, sched_rx),
                Server::Tokio => tokio_server(conns, ready_tx, sched_rx),
            };
            let _ = report_tx.send(report);
        })
        .map_err(|e| format!("cannot start the server thread: {e}"))?;
    let addr = recv_or_exit(&ready_rx, budget, "the server to listen")?;

    let start = Instant::now();
    let sched = Schedule {
        warm_end: start + cfg.warmup,
        end: start + cfg.warmup + cfg.secs,
    };
    sched_tx
        .send(sched)
        .map_err(|_| "the server thread exited before the run".to_string())?;
    let (client_tx, client_rx) = mpsc::channel();
    let (size, conns) = (cfg.size, cfg.conns);
    let client_thread = thread::Builder::new()
        .name("echo-client".into())
        .spawn(move || {
            pin(client_core);
            let _ = client_tx.send(client(addr, conns, size, sched));
        })
        .map_err(|e| format!("cannot start the client thread: {e}"))?;
    let client = recv_or_exit(&client_rx, budget, "the load generator");
    let server_report = recv_or_exit(&report_rx, budget, "the server to finish")?;
    client_thread
        .join()
        .map_err(|_| "the client thread panicked".to_string())?;
    server_thread
        .join()
        .map_err(|_| "the server thread panicked".to_string())?;

    let errors: Vec<String> = client
        .errors
        .iter()
        .chain(&server_report.errors)
        .cloned()
        .collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let (s0, s1) = (server_report.start, server_report.end);
    let window = s1.at.duration_since(s0.at).as_secs_f64();
    let served = (s1.bytes - s0.bytes) as f64 / cfg.size as f64;
    if served < 1.0 {
        return Err("the server echoed nothing in the measured window".to_string());
    }
    let usage = s1.usage.since(s0.usage);
    let cpu = usage
        .cpu
        .ok_or("CLOCK_THREAD_CPUTIME_ID is unavailable")?
        .as_secs_f64();
    let lat = &client.latencies;
    let per_req = |f: fn(&Metrics) -> u64| {
        s1.metrics
            .zip(s0.metrics)
            .map(|(m1, m0)| f(&m1).saturating_sub(f(&m0)) as f64 / served)
    };
    Ok(EchoResult {
        req_per_sec: lat.len() as f64 / cfg.secs.as_secs_f64(),
        cpu_us_per_req: cpu * 1e6 / served,
        total_cpu_us_per_req: client.cpu.map(|c| (cpu + c.as_secs_f64()) * 1e6 / served),
        cpu_share: cpu / window,
        p50_us: percentile(lat, 0.50) as f64 / 1000.0,
        p99_us: percentile(lat, 0.99) as f64 / 1000.0,
        server_run_wait_ms: usage.run_wait.map(|w| w.as_secs_f64() * 1000.0),
        enters_per_req: per_req(|m| m.enters),
        parks_per_req: per_req(|m| m.parks),
        ops_per_req: per_req(|m| m.ops_submitted),
    })
}

/// The coring echo server thread's body.
fn coring_server(
    kind: BackendKind,
    conns: usize,
    ready: Sender<Result<SocketAddr, String>>,
    sched: Receiver<Schedule>,
) -> Result<ServerReport, String> {
    let setup = || -> io::Result<_> {
        let rt = coring_runtime(kind)?;
        let listener = coring::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        Ok((rt, listener, addr))
    };
    let (rt, listener, addr) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("server setup: {e}");
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let _ = ready.send(Ok(addr));
    let sched = sched
        .recv()
        .map_err(|_| "no schedule from the main thread".to_string())?;
    let stats = Arc::new(ServerStats::default());
    let report = rt.block_on(async {
        let acceptor = coring::spawn(coring_accept(listener, conns, stats.clone()));
        coring::time::sleep_until(sched.warm_end).await;
        let start = ServerSample::now(&stats, Some(rt.metrics()));
        coring::time::sleep_until(sched.end).await;
        let end = ServerSample::now(&stats, Some(rt.metrics()));
        // Let the client finish its last round trips and close; bounded.
        let drain_end = Instant::now() + DRAIN;
        while stats.closed.load(Ordering::Relaxed) < conns && Instant::now() < drain_end {
            coring::time::sleep(Duration::from_millis(2)).await;
        }
        acceptor.abort();
        (start, end)
    });
    // Dropping the runtime cancels whatever is left.
    drop(rt);
    Ok(finish_report(report, &stats, conns))
}

async fn coring_accept(listener: coring::net::TcpListener, conns: usize, stats: Arc<ServerStats>) {
    for _ in 0..conns {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Detached: the handler reports through `stats`.
                drop(coring::spawn(coring_echo(stream, stats.clone())));
            }
            Err(e) => {
                stats.error(format!("accept: {e}"));
                return;
            }
        }
    }
}

/// Echoes until the peer closes: read into an owned buffer, write back what was read.
async fn coring_echo(stream: coring::net::TcpStream, stats: Arc<ServerStats>) {
    let res: io::Result<()> = async {
        stream.set_nodelay(true)?;
        let mut buf = Vec::with_capacity(SERVER_BUF);
        loop {
            // A read fills the Vec from its start and sets its length to what it read.
            buf.clear();
            let (res, b) = stream.read(buf).await;
            buf = b;
            let n = res?;
            if n == 0 {
                return Ok(());
            }
            let (res, b) = stream.write_all(buf).await;
            buf = b;
            res?;
            stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    .await;
    if let Err(e) = res {
        stats.error(format!("server connection: {e}"));
    }
    stats.closed.fetch_add(1, Ordering::Relaxed);
}

/// The tokio echo server thread's body.
fn tokio_server(
    conns: usize,
    ready: Sender<Result<SocketAddr, String>>,
    sched: Receiver<Schedule>,
) -> Result<ServerReport, String> {
    let setup = || -> io::Result<_> {
        let rt = tokio_runtime()?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        Ok((rt, listener, addr))
    };
    let (rt, listener, addr) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("server setup: {e}");
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let _ = ready.send(Ok(addr));
    let sched = sched
        .recv()
        .map_err(|_| "no schedule from the main thread".to_string())?;
    let stats = Arc::new(ServerStats::default());
    let report = rt.block_on(async {
        let acceptor = tokio::spawn(tokio_accept(listener, conns, stats.clone()));
        tokio::time::sleep_until(sched.warm_end.into()).await;
        let start = ServerSample::now(&stats, None);
        tokio::time::sleep_until(sched.end.into()).await;
        let end = ServerSample::now(&stats, None);
        let drain_end = Instant::now() + DRAIN;
        while stats.closed.load(Ordering::Relaxed) < conns && Instant::now() < drain_end {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        acceptor.abort();
        (start, end)
    });
    drop(rt);
    Ok(finish_report(report, &stats, conns))
}

async fn tokio_accept(listener: tokio::net::TcpListener, conns: usize, stats: Arc<ServerStats>) {
    for _ in 0..conns {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Detached: the handler reports through `stats`.
                drop(tokio::spawn(tokio_echo(stream, stats.clone())));
            }
            Err(e) => {
                stats.error(format!("accept: {e}"));
                return;
            }
        }
    }
}

/// Echoes until the peer closes: read into a buffer, `write_all` what was read.
async fn tokio_echo(mut stream: tokio::net::TcpStream, stats: Arc<ServerStats>) {
    let res: io::Result<()> = async {
        stream.set_nodelay(true)?;
        let mut buf = vec![0u8; SERVER_BUF];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n]).await?;
            stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    .await;
    if let Err(e) = res {
        stats.error(format!("server connection: {e}"));
    }
    stats.closed.fetch_add(1, Ordering::Relaxed);
}

fn finish_report(
    (start, end): (ServerSample, ServerSample),
    stats: &ServerStats,
    conns: usize,
) -> ServerReport {
    let mut errors = std::mem::take(&mut *stats.errors.lock().unwrap_or_else(|p| p.into_inner()));
    let closed = stats.closed.load(Ordering::Relaxed);
    if closed < conns {
        errors.push(format!(
            "only {closed} of {conns} server connections closed within {DRAIN:?} of the end"
        ));
    }
    ServerReport { start, end, errors }
}

/// The raw io_uring echo server: the loop a careful programmer would write by hand on the
/// `io-uring` crate, which exists (like io_uring) only on Linux.
#[cfg(target_os = "linux")]
mod raw_uring {
    use std::io;
    use std::mem::ManuallyDrop;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    use std::ptr;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc::{Receiver, Sender};
    use std::time::Instant;

    use io_uring::{opcode, squeue, types, CompletionQueue, SubmissionQueue, Submitter};

    use super::{
        finish_report, Schedule, ServerReport, ServerSample, ServerStats, DRAIN, SERVER_BUF,
    };

    /// Ring size: coring's default (`Builder::entries`), or more when more connections
    /// could have an operation queued at once.
    const MIN_ENTRIES: usize = 256;

    // `user_data` is `connection index << KIND_BITS | kind`.
    const KIND_BITS: u32 = 8;
    const KIND_MASK: u64 = (1 << KIND_BITS) - 1;
    const ACCEPT: u64 = 1;
    const RECV: u64 = 2;
    const SEND: u64 = 3;
    const TIMER: u64 = 4;
    /// Cancellations at shutdown.
    const CANCEL: u64 = 5;

    fn token(conn: usize, kind: u64) -> u64 {
        (conn as u64) << KIND_BITS | kind
    }

    use crate::raw_ring::ring;

    fn entries(conns: usize) -> u32 {
        // One op per connection, plus the accept, the timer and a cancellation or two.
        (conns + 4).next_power_of_two().max(MIN_ENTRIES) as u32
    }

    /// Whether a ring can be set up and entered here (seccomp may allow the one and not
    /// the other); returns the setup it got.
    pub(super) fn probe() -> Result<&'static str, String> {
        let (mut ring, setup) = ring(entries(1)).map_err(|e| format!("io_uring setup: {e}"))?;
        let nop = opcode::Nop::new().build();
        // SAFETY: a NOP carries no pointers.
        unsafe { ring.submission().push(&nop) }.map_err(|_| "the SQ is full".to_string())?;
        ring.submit_and_wait(1)
            .map_err(|e| format!("io_uring_enter: {e}"))?;
        let completed = ring.completion().next().is_some();
        if completed {
            Ok(setup)
        } else {
            Err("a NOP did not complete".to_string())
        }
    }

    /// The raw echo server thread's body.
    pub(super) fn server(
        conns: usize,
        ready: Sender<Result<SocketAddr, String>>,
        sched: Receiver<Schedule>,
    ) -> Result<ServerReport, String> {
        let setup = || -> io::Result<_> {
            let (ring, _) = ring(entries(conns))?;
            let listener = TcpListener::bind("127.0.0.1:0")?;
            // As coring's listener, which is created non-blocking.
            listener.set_nonblocking(true)?;
            let addr = listener.local_addr()?;
            Ok((ring, listener, addr))
        };
        let (mut ring, listener, addr) = match setup() {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("server setup: {e}");
                let _ = ready.send(Err(msg.clone()));
                return Err(msg);
            }
        };
        let _ = ready.send(Ok(addr));
        let sched = sched
            .recv()
            .map_err(|_| "no schedule from the main thread".to_string())?;
        let stats = ServerStats::default();
        let (submitter, sq, mut cq) = ring.split();
        let mut echo = Echo {
            submitter,
            sq,
            listener: listener.as_raw_fd(),
            conns: ManuallyDrop::new(Vec::with_capacity(conns)),
            timespec: Box::new(types::Timespec::new()),
            in_flight: 0,
            accepting: false,
            timer: false,
            stats: &stats,
        };
        let res = echo.serve(&mut cq, conns, sched);
        let idle = echo.shutdown(&mut cq);
        if idle {
            // Nothing is in flight: the kernel holds no pointer into the buffers any more.
            drop(ManuallyDrop::into_inner(echo.conns));
        }
        // Otherwise the connections (buffers and sockets) are leaked rather than freed
        // while the kernel may still write into them.
        let report = res.map_err(|e| format!("raw io_uring loop: {e}"))?;
        Ok(finish_report(report, &stats, conns))
    }

    /// One accepted connection.
    struct Conn {
        /// `None` once closed.
        stream: Option<TcpStream>,
        fd: RawFd,
        /// A heap block of its own: it does not move when the `Vec` of connections grows.
        buf: Box<[u8]>,
        /// Bytes the last recv returned, and how many of them have been sent back.
        len: usize,
        sent: usize,
        /// The kind (RECV or SEND) of the operation in flight on this connection, or 0.
        op: u64,
    }

    /// Where the loop is in the run's schedule.
    #[derive(Clone, Copy)]
    enum Phase {
        Warmup,
        Measure {
            start: ServerSample,
        },
        Drain {
            start: ServerSample,
            end: ServerSample,
            until: Instant,
        },
    }

    struct Echo<'a> {
        submitter: Submitter<'a>,
        sq: SubmissionQueue<'a>,
        listener: RawFd,
        /// Freed only once nothing is in flight (see `server`).
        conns: ManuallyDrop<Vec<Conn>>,
        /// The timeout's duration, read by the kernel when the SQE is submitted.
        timespec: Box<types::Timespec>,
        /// SQEs queued or submitted whose CQE has not been reaped yet.
        in_flight: usize,
        accepting: bool,
        timer: bool,
        stats: &'a ServerStats,
    }

    impl Echo<'_> {
        /// Queues `entry`; it is submitted with the next loop turn's `submit_and_wait`.
        ///
        /// # Safety
        ///
        /// Whatever `entry` points to must stay valid (and, for a buffer, untouched by
        /// Rust) until its CQE is reaped.
        unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
            // The ring is sized so this never loops (see `entries`); if it were full,
            // submitting makes room.
            // SAFETY: the caller's contract.
            while unsafe { self.sq.push(&entry) }.is_err() {
                self.sq.sync();
                self.submitter.submit()?;
                self.sq.sync();
            }
            self.in_flight += 1;
            Ok(())
        }

        fn accept(&mut self) -> io::Result<()> {
            let entry =
                opcode::Accept::new(types::Fd(self.listener), ptr::null_mut(), ptr::null_mut())
                    // As coring accepts.
                    .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                    .build()
                    .user_data(token(0, ACCEPT));
            // SAFETY: no peer address is asked for, so the SQE carries no pointer; the
            // listener outlives the ring's use of it (it is dropped after `server` returns).
            unsafe { self.push(entry) }?;
            self.accepting = true;
            Ok(())
        }

        fn recv(&mut self, i: usize) -> io::Result<()> {
            let c = &mut self.conns[i];
            let entry = opcode::Recv::new(types::Fd(c.fd), c.buf.as_mut_ptr(), c.buf.len() as u32)
                .build()
                .user_data(token(i, RECV));
            c.op = RECV;
            // SAFETY: `c.buf` is a heap block of its own, which nothing reads, writes, moves
            // or frees until this recv's CQE is reaped: a connection has one operation in
            // flight at a time, and the connections are freed only once nothing is in flight
            // (leaked otherwise). The socket stays open until then as well.
            unsafe { self.push(entry) }
        }

        fn send(&mut self, i: usize) -> io::Result<()> {
            let c = &mut self.conns[i];
            let rest = &c.buf[c.sent..c.len];
            let entry = opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
                // As coring sends.
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(token(i, SEND));
            c.op = SEND;
            // SAFETY: as for `recv`: `c.buf` is neither written, moved nor freed until this
            // send's CQE is reaped.
            unsafe { self.push(entry) }
        }

        fn arm_timer(&mut self, deadline: Instant) -> io::Result<()> {
            // At most one timeout is queued at a time, so no queued SQE points to the old
            // value.
            *self.timespec = deadline.saturating_duration_since(Instant::now()).into();
            let entry = opcode::Timeout::new(&*self.timespec)
                .build()
                .user_data(token(0, TIMER));
            // SAFETY: the kernel copies the timespec when it takes the SQE; the box lives,
            // unmoved, as long as the ring's use of it, and is rewritten only once this
            // timeout has completed.
            unsafe { self.push(entry) }?;
            self.timer = true;
            Ok(())
        }

        fn close(&mut self, i: usize) {
            let c = &mut self.conns[i];
            c.op = 0;
            // Dropping the stream closes the socket.
            c.stream = None;
            self.stats.closed.fetch_add(1, Ordering::Relaxed);
        }

        fn fail(&mut self, i: usize, res: i32) {
            self.stats.error(format!(
                "server connection: {}",
                io::Error::from_raw_os_error(-res)
            ));
            self.close(i);
        }

        /// Echoes until the schedule's end, then until every connection has closed or
        /// `DRAIN` has passed; returns the samples at the edges of the measured window.
        fn serve(
            &mut self,
            cq: &mut CompletionQueue<'_>,
            conns: usize,
            sched: Schedule,
        ) -> io::Result<(ServerSample, ServerSample)> {
            self.accept()?;
            self.arm_timer(sched.warm_end)?;
            let mut accepted = 0;
            let mut phase = Phase::Warmup;
            loop {
                // Submits the SQEs the previous turn queued and waits for one CQE.
                self.sq.sync();
                match self.submitter.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                    Err(e) => return Err(e),
                }
                cq.sync();
                for cqe in &mut *cq {
                    self.in_flight -= 1;
                    let (i, kind) = (
                        (cqe.user_data() >> KIND_BITS) as usize,
                        cqe.user_data() & KIND_MASK,
                    );
                    let res = cqe.result();
                    match kind {
                        ACCEPT => {
                            self.accepting = false;
                            if res >= 0 {
                                accepted += 1;
                                self.accepted(res)?;
                                if accepted < conns {
                                    self.accept()?;
                                }
                            } else if matches!(-res, libc::EAGAIN | libc::EINTR) {
                                self.accept()?;
                            } else {
                                self.stats.error(format!(
                                    "accept: {}",
                                    io::Error::from_raw_os_error(-res)
                                ));
                            }
                        }
                        RECV => {
                            self.conns[i].op = 0;
                            match res {
                                0 => self.close(i),
                                n if n > 0 => {
                                    let c = &mut self.conns[i];
                                    (c.len, c.sent) = (n as usize, 0);
                                    self.send(i)?;
                                }
                                e if matches!(-e, libc::EAGAIN | libc::EINTR) => self.recv(i)?,
                                e => self.fail(i, e),
                            }
                        }
                        SEND => {
                            self.conns[i].op = 0;
                            match res {
                                n if n > 0 => {
                                    let c = &mut self.conns[i];
                                    c.sent += n as usize;
                                    if c.sent < c.len {
                                        self.send(i)?;
                                    } else {
                                        self.stats.bytes.fetch_add(c.len as u64, Ordering::Relaxed);
                                        self.recv(i)?;
                                    }
                                }
                                e if matches!(-e, libc::EAGAIN | libc::EINTR) => self.send(i)?,
                                // A send of 0 bytes out of more: as `write_all`, an error.
                                0 => self.fail(i, -libc::EPIPE),
                                e => self.fail(i, e),
                            }
                        }
                        TIMER => {
                            self.timer = false;
                            phase = self.tick(phase, sched)?;
                        }
                        _ => {}
                    }
                }
                cq.sync();
                if let Phase::Drain { start, end, until } = phase {
                    let closed = self.stats.closed.load(Ordering::Relaxed);
                    if closed >= conns || Instant::now() >= until {
                        return Ok((start, end));
                    }
                }
            }
        }

        /// A newly accepted socket: set up as coring's echo does it, then its first recv.
        fn accepted(&mut self, fd: RawFd) -> io::Result<()> {
            // SAFETY: `fd` was just returned by accept, is open, and is owned by nothing else.
            let stream = unsafe { TcpStream::from_raw_fd(fd) };
            self.conns.push(Conn {
                stream: Some(stream),
                fd,
                buf: vec![0u8; SERVER_BUF].into_boxed_slice(),
                len: 0,
                sent: 0,
                op: 0,
            });
            let i = self.conns.len() - 1;
            let nodelay = self.conns[i].stream.as_ref().map(|s| s.set_nodelay(true));
            if let Some(Err(e)) = nodelay {
                self.stats.error(format!("server connection: {e}"));
                self.close(i);
                return Ok(());
            }
            self.recv(i)
        }

        /// The timer fired: samples at the edges of the measured window, then drains.
        fn tick(&mut self, phase: Phase, sched: Schedule) -> io::Result<Phase> {
            let now = Instant::now();
            let next = match phase {
                Phase::Warmup if now >= sched.warm_end => Phase::Measure {
                    start: ServerSample::now(self.stats, None),
                },
                Phase::Measure { start } if now >= sched.end => Phase::Drain {
                    start,
                    end: ServerSample::now(self.stats, None),
                    until: now + DRAIN,
                },
                other => other,
            };
            match next {
                Phase::Warmup => self.arm_timer(sched.warm_end)?,
                Phase::Measure { .. } => self.arm_timer(sched.end)?,
                Phase::Drain { until, .. } if now < until => self.arm_timer(until)?,
                Phase::Drain { .. } => {}
            }
            Ok(next)
        }

        /// Cancels whatever is still in flight and reaps every outstanding CQE; returns
        /// whether nothing is left in flight (so the buffers may be freed).
        fn shutdown(&mut self, cq: &mut CompletionQueue<'_>) -> bool {
            let mut targets: Vec<u64> = (self.conns.iter().enumerate())
                .filter(|(_, c)| c.op != 0)
                .map(|(i, c)| token(i, c.op))
                .collect();
            if self.accepting {
                targets.push(token(0, ACCEPT));
            }
            for target in targets {
                let entry = opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(token(0, CANCEL));
                // SAFETY: a cancellation carries no pointer.
                if unsafe { self.push(entry) }.is_err() {
                    return false;
                }
            }
            if self.timer {
                let entry = opcode::TimeoutRemove::new(token(0, TIMER))
                    .build()
                    .user_data(token(0, CANCEL));
                // SAFETY: a timeout removal carries no pointer.
                if unsafe { self.push(entry) }.is_err() {
                    return false;
                }
            }
            while self.in_flight > 0 {
                self.sq.sync();
                match self.submitter.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                    Err(_) => return false,
                }
                cq.sync();
                // Everything is being torn down: results do not matter, only that they came.
                self.in_flight -= cq.by_ref().count();
                cq.sync();
            }
            true
        }
    }
}

/// io_uring, and the io-uring crate, exist only on Linux.
#[cfg(not(target_os = "linux"))]
mod raw_uring {
    use std::net::SocketAddr;
    use std::sync::mpsc::{Receiver, Sender};

    use super::{Schedule, ServerReport};

    const UNSUPPORTED: &str = "the raw io_uring loop runs on Linux only";

    pub(super) fn probe() -> Result<&'static str, String> {
        Err(UNSUPPORTED.to_string())
    }

    pub(super) fn server(
        _conns: usize,
        ready: Sender<Result<SocketAddr, String>>,
        _sched: Receiver<Schedule>,
    ) -> Result<ServerReport, String> {
        let _ = ready.send(Err(UNSUPPORTED.to_string()));
        Err(UNSUPPORTED.to_string())
    }
}

/// The load generator, the same for every server: a tokio `current_thread` runtime with one
/// closed-loop ping-pong task per connection.
fn client(addr: SocketAddr, conns: usize, size: usize, sched: Schedule) -> ClientReport {
    let mut report = ClientReport {
        latencies: Vec::new(),
        cpu: None,
        errors: Vec::new(),
    };
    let rt = match tokio_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            report.errors.push(format!("client runtime: {e}"));
            return report;
        }
    };
    rt.block_on(async {
        // Samples this thread's CPU time at the edges of the measured window.
        let usage = tokio::spawn(async move {
            tokio::time::sleep_until(sched.warm_end.into()).await;
            let start = ThreadUsage::now();
            tokio::time::sleep_until(sched.end.into()).await;
            ThreadUsage::now().since(start).cpu
        });
        let tasks: Vec<_> = (0..conns)
            .map(|id| tokio::spawn(ping_pong(id, addr, size, sched)))
            .collect();
        for (id, task) in tasks.into_iter().enumerate() {
            match task.await {
                Ok((lat, res)) => {
                    report.latencies.extend_from_slice(&lat);
                    if let Err(e) = res {
                        report.errors.push(format!("client connection {id}: {e}"));
                    }
                }
                Err(e) => report.errors.push(format!("client task {id}: {e}")),
            }
        }
        report.cpu = usage.await.ok().flatten();
    });
    report.latencies.sort_unstable();
    report
}

/// Closed-loop ping-pong until `sched.end`; returns the latencies (ns) of round trips that
/// started in the measured window, and how it ended.
async fn ping_pong(
    id: usize,
    addr: SocketAddr,
    size: usize,
    sched: Schedule,
) -> (Vec<u64>, io::Result<()>) {
    let mut lat = Vec::with_capacity(1 << 16);
    let res = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        // A per-connection pattern with a sequence number in front, so a reply from another
        // connection or an older request does not compare equal.
        let mut msg: Vec<u8> = (0..size)
            .map(|i| (i as u8).wrapping_add(id as u8))
            .collect();
        let mut reply = vec![0u8; size];
        for seq in 0u64.. {
            let started = Instant::now();
            if started >= sched.end {
                break;
            }
            let stamp = seq.to_le_bytes();
            let k = stamp.len().min(size);
            msg[..k].copy_from_slice(&stamp[..k]);
            stream.write_all(&msg).await?;
            stream.read_exact(&mut reply).await?;
            let rtt = started.elapsed();
            if reply != msg {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("echo mismatch on request {seq}"),
                ));
            }
            if started >= sched.warm_end {
                lat.push(rtt.as_nanos() as u64);
            }
        }
        Ok(())
    }
    .await;
    (lat, res)
}

// ----------------------------------------------------------------------------------------
// File reads

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    Coring(BackendKind),
    TokioFs,
    TokioPread,
}

impl fmt::Display for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reader::Coring(kind) => f.pad(&format!("coring {kind}")),
            Reader::TokioFs => f.pad("tokio::fs seek+read_exact"),
            Reader::TokioPread => f.pad("tokio spawn_blocking pread"),
        }
    }
}

/// One file-read run's numbers.
struct FreadResult {
    iops: f64,
    /// CPU time of the whole process (runtime thread and pool threads) per read.
    proc_cpu_us_per_read: f64,
    /// CPU time of the runtime thread alone per read.
    rt_cpu_us_per_read: f64,
}

impl fmt::Display for FreadResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>9.0} reads/s  process CPU {:>5.2} µs/read  runtime thread {:>5.2} µs/read",
            self.iops, self.proc_cpu_us_per_read, self.rt_cpu_us_per_read
        )
    }
}

/// Counters shared by the reading tasks of one run.
#[derive(Default)]
struct ReadStats {
    reads: AtomicU64,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
}

impl ReadStats {
    fn error(&self, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
}

/// The page-cache-resident test file; removed on drop.
struct TestFile {
    path: PathBuf,
    blocks: u64,
}

impl TestFile {
    /// Writes `mb` MiB, each 4 KiB block starting with its index, syncs it (so writeback
    /// does not run during the measurement) and reads it back once (so it is cached).
    fn create(dir: &Path, mb: u64) -> io::Result<TestFile> {
        let path = dir.join(format!("coring-vs-tokio-{}.dat", process::id()));
        let blocks = mb * 1024 * 1024 / BLOCK as u64;
        let file = TestFile { path, blocks };
        let mut f = StdFile::create(&file.path)?;
        let mut chunk = vec![0u8; 256 * BLOCK];
        let mut block = 0u64;
        while block < blocks {
            let n = (blocks - block).min(256) as usize;
            for (i, b) in chunk.chunks_mut(BLOCK).take(n).enumerate() {
                b.fill((block + i as u64) as u8);
                b[..8].copy_from_slice(&(block + i as u64).to_le_bytes());
            }
            f.write_all(&chunk[..n * BLOCK])?;
            block += n as u64;
        }
        f.sync_all()?;
        drop(f);
        let mut sink = Vec::new();
        StdFile::open(&file.path)?.read_to_end(&mut sink)?;
        Ok(file)
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            eprintln!("vs_tokio: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// A deterministic stream of block-aligned offsets, the same for task `i` of every contender.
struct Offsets {
    state: u64,
    blocks: u64,
}

impl Offsets {
    fn new(task: usize, blocks: u64) -> Offsets {
        Offsets {
            state: SEED ^ (task as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D),
            blocks,
        }
    }

    /// The next offset, and the block index expected at its start.
    fn next_block(&mut self) -> (u64, u64) {
        // xorshift64
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        let block = x % self.blocks;
        (block * BLOCK as u64, block)
    }
}

/// Checks that a read returned block `block`.
fn check_block(buf: &[u8], block: u64) -> io::Result<()> {
    if buf.len() != BLOCK || buf[..8] != block.to_le_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "read of block {block} returned {} bytes starting with {:?}",
                buf.len(),
                &buf[..buf.len().min(8)]
            ),
        ));
    }
    Ok(())
}

/// Runs the file-read comparison and prints its table; returns whether anything failed.
fn bench_fread(cfg: &Config) -> bool {
    let mut readers: Vec<Reader> = cfg.backends.iter().map(|&k| Reader::Coring(k)).collect();
    if cfg.tokio {
        readers.extend([Reader::TokioFs, Reader::TokioPread]);
    }
    if readers.is_empty() {
        return false;
    }
    let file = match TestFile::create(&cfg.dir, cfg.file_mb) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "vs_tokio: cannot create the test file in {}: {e}",
                cfg.dir.display()
            );
            return true;
        }
    };
    println!(
        "\n== fread: random {BLOCK} B reads from a {} MiB cached file, {} in flight (one task \
         each), runtime thread unpinned",
        cfg.file_mb, cfg.qd
    );
    let runs = Runs::interleave(cfg.reps, &readers, |r| run_fread(r, cfg, &file));

    let iops = |r: &FreadResult| r.iops;
    let tokio_fs = runs.median(Reader::TokioFs, iops);
    let tokio_pread = runs.median(Reader::TokioPread, iops);
    println!(
        "\n{:<28} {:>9} {:>13} {:>13} {:>15} {:>13}   reads/s of each run",
        "reader", "reads/s", "vs tokio::fs", "vs spawn_blk", "proc CPU µs/rd", "rt CPU µs/rd"
    );
    for &r in &readers {
        let med = runs.median(r, iops);
        println!(
            "{:<28} {:>9} {:>13} {:>13} {:>15} {:>13}   {}",
            r.to_string(),
            fmt_opt(med, 0),
            fmt_ratio(med, tokio_fs),
            fmt_ratio(med, tokio_pread),
            fmt_opt(runs.median(r, |x| x.proc_cpu_us_per_read), 2),
            fmt_opt(runs.median(r, |x| x.rt_cpu_us_per_read), 2),
            runs.each(r, 2, iops),
        );
    }
    println!(
        "(proc CPU: all threads of the process, blocking pools included; rt CPU: the runtime \
         thread alone)"
    );
    let fallback = Reader::Coring(BackendKind::Fallback);
    if let Some(fb) = runs.median(fallback, iops) {
        for (name, base, base_kind) in [
            ("tokio::fs", tokio_fs, Reader::TokioFs),
            (
                "tokio spawn_blocking(pread)",
                tokio_pread,
                Reader::TokioPread,
            ),
        ] {
            if let Some(base) = base {
                println!(
                    "target: coring fallback file reads >= 1.00x {name}: {:.2}x (paired {}), {}",
                    fb / base,
                    fmt_x(runs.paired_ratio(fallback, base_kind, iops)),
                    if fb >= base { "met" } else { "MISSED" }
                );
            }
        }
    }
    runs.failed
}

/// One file-read run on a fresh, unpinned thread.
fn run_fread(reader: Reader, cfg: &Config, file: &TestFile) -> Result<FreadResult, String> {
    let (tx, rx) = mpsc::channel();
    let path = file.path.clone();
    let (blocks, qd) = (file.blocks, cfg.qd);
    let start = Instant::now();
    let sched = Schedule {
        warm_end: start + cfg.warmup,
        end: start + cfg.warmup + cfg.secs,
    };
    let worker = thread::Builder::new()
        .name("fread".into())
        .spawn(move || {
            let stats = Arc::new(ReadStats::default());
            let res = match reader {
                Reader::Coring(kind) => fread_coring(kind, &path, blocks, qd, sched, &stats),
                Reader::TokioFs | Reader::TokioPread => {
                    fread_tokio(reader, &path, blocks, qd, sched, &stats)
                }
            };
            let errors =
                std::mem::take(&mut *stats.errors.lock().unwrap_or_else(|p| p.into_inner()));
            let res = match res {
                Ok(_) if !errors.is_empty() => Err(errors.join("; ")),
                other => other,
            };
            let _ = tx.send(res);
        })
        .map_err(|e| format!("cannot start the reader thread: {e}"))?;
    let res = recv_or_exit(&rx, cfg.run_budget(), "a file-read run");
    worker
        .join()
        .map_err(|_| "the reader thread panicked".to_string())?;
    let (s0, s1) = res?;
    let reads = (s1.reads - s0.reads) as f64;
    if reads < 1.0 {
        return Err("no read completed in the measured window".to_string());
    }
    let secs = s1.at.duration_since(s0.at).as_secs_f64();
    let cpu = |a: Option<Duration>, b: Option<Duration>| {
        b.zip(a)
            .map(|(b, a)| b.saturating_sub(a).as_secs_f64() * 1e6 / reads)
            .unwrap_or(f64::NAN)
    };
    Ok(FreadResult {
        iops: reads / secs,
        proc_cpu_us_per_read: cpu(s0.process_cpu, s1.process_cpu),
        rt_cpu_us_per_read: cpu(s0.thread_cpu, s1.thread_cpu),
    })
}

/// What the runtime thread sees at one edge of the measured window.
#[derive(Clone, Copy)]
struct ReadSample {
    at: Instant,
    reads: u64,
    thread_cpu: Option<Duration>,
    process_cpu: Option<Duration>,
}

impl ReadSample {
    fn now(stats: &ReadStats) -> ReadSample {
        ReadSample {
            at: Instant::now(),
            reads: stats.reads.load(Ordering::Relaxed),
            thread_cpu: cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID),
            process_cpu: cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID),
        }
    }
}

type Window = (ReadSample, ReadSample);

/// Samples at the window's edges, then raises `stop` and waits for the readers (`join`).
async fn measure<S, J>(sched: Schedule, stats: &ReadStats, sleep_until: S, join: J) -> Window
where
    S: Fn(Instant) -> std::pin::Pin<Box<dyn Future<Output = ()>>>,
    J: Future<Output = ()>,
{
    sleep_until(sched.warm_end).await;
    let s0 = ReadSample::now(stats);
    sleep_until(sched.end).await;
    let s1 = ReadSample::now(stats);
    stats.stop.store(true, Ordering::Relaxed);
    join.await;
    (s0, s1)
}

fn fread_coring(
    kind: BackendKind,
    path: &Path,
    blocks: u64,
    qd: usize,
    sched: Schedule,
    stats: &Arc<ReadStats>,
) -> Result<Window, String> {
    let rt = coring_runtime(kind).map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let file = coring::fs::File::open(path)
            .await
            .map_err(|e| format!("open: {e}"))?;
        let file = Rc::new(file);
        let tasks: Vec<_> = (0..qd)
            .map(|i| coring::spawn(coring_reader(file.clone(), i, blocks, stats.clone())))
            .collect();
        let join = async {
            for t in tasks {
                if let Err(e) = t.await {
                    stats.error(format!("reader task: {e:?}"));
                }
            }
        };
        let sleep = |t: Instant| -> std::pin::Pin<Box<dyn Future<Output = ()>>> {
            Box::pin(coring::time::sleep_until(t))
        };
        Ok(measure(sched, stats, sleep, join).await)
    })
}

async fn coring_reader(
    file: Rc<coring::fs::File>,
    task: usize,
    blocks: u64,
    stats: Arc<ReadStats>,
) {
    let mut offsets = Offsets::new(task, blocks);
    let mut buf = Vec::with_capacity(BLOCK);
    while !stats.stop.load(Ordering::Relaxed) {
        let (off, block) = offsets.next_block();
        buf.clear();
        let (res, b) = file.read_at(buf, off).await;
        buf = b;
        if let Err(e) = res.and_then(|_| check_block(&buf, block)) {
            stats.error(format!("coring read_at({off}): {e}"));
            return;
        }
        stats.reads.fetch_add(1, Ordering::Relaxed);
    }
}

fn fread_tokio(
    reader: Reader,
    path: &Path,
    blocks: u64,
    qd: usize,
    sched: Schedule,
    stats: &Arc<ReadStats>,
) -> Result<Window, String> {
    let rt = tokio_runtime().map_err(|e| format!("runtime: {e}"))?;
    let shared = Arc::new(StdFile::open(path).map_err(|e| format!("open: {e}"))?);
    rt.block_on(async {
        let tasks: Vec<_> = (0..qd)
            .map(|i| {
                let stats = stats.clone();
                if reader == Reader::TokioFs {
                    tokio::spawn(tokio_fs_reader(path.to_path_buf(), i, blocks, stats))
                } else {
                    tokio::spawn(tokio_pread_reader(shared.clone(), i, blocks, stats))
                }
            })
            .collect();
        let join = async {
            for t in tasks {
                if let Err(e) = t.await {
                    stats.error(format!("reader task: {e}"));
                }
            }
        };
        let sleep = |t: Instant| -> std::pin::Pin<Box<dyn Future<Output = ()>>> {
            Box::pin(tokio::time::sleep_until(t.into()))
        };
        Ok(measure(sched, stats, sleep, join).await)
    })
}

/// `tokio::fs::File`, one handle per task: seek, then `read_exact`.
async fn tokio_fs_reader(path: PathBuf, task: usize, blocks: u64, stats: Arc<ReadStats>) {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return stats.error(format!("tokio::fs open: {e}")),
    };
    let mut offsets = Offsets::new(task, blocks);
    let mut buf = vec![0u8; BLOCK];
    while !stats.stop.load(Ordering::Relaxed) {
        let (off, block) = offsets.next_block();
        let res = async {
            file.seek(SeekFrom::Start(off)).await?;
            file.read_exact(&mut buf).await?;
            check_block(&buf, block)
        }
        .await;
        if let Err(e) = res {
            return stats.error(format!("tokio::fs read at {off}: {e}"));
        }
        stats.reads.fetch_add(1, Ordering::Relaxed);
    }
}

/// One shared `std::fs::File`; each read is a `pread` in `spawn_blocking`, the buffer moved
/// in and back out so it is reused.
async fn tokio_pread_reader(file: Arc<StdFile>, task: usize, blocks: u64, stats: Arc<ReadStats>) {
    let mut offsets = Offsets::new(task, blocks);
    let mut buf = vec![0u8; BLOCK];
    while !stats.stop.load(Ordering::Relaxed) {
        let (off, block) = offsets.next_block();
        let f = file.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let res = f.read_exact_at(&mut buf, off);
            (res, buf)
        })
        .await;
        let res = match joined {
            Ok((res, b)) => {
                buf = b;
                res.and_then(|()| check_block(&buf, block))
            }
            Err(e) => return stats.error(format!("spawn_blocking: {e}")),
        };
        if let Err(e) = res {
            return stats.error(format!("pread at {off}: {e}"));
        }
        stats.reads.fetch_add(1, Ordering::Relaxed);
    }
}

// ----------------------------------------------------------------------------------------
// Measurement helpers

/// The `p`-quantile (0 < p <= 1) of sorted values, by the nearest-rank method.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
