//! coring (io_uring and fallback backends) against tokio's `current_thread` runtime,
//! monoio and a raw io_uring loop, in one process, interleaved, each measurement repeated
//! (default 3 times) and the median reported. Built on the `coring_bench` harness.
//!
//! 1. **Echo server CPU per request.** The server runs on one thread pinned to the first
//!    CPU; the load generator on another thread pinned to the second. The load generator is
//!    the same for every server: a tokio `current_thread` runtime with one task per
//!    connection doing closed-loop ping-pong (`write_all` a message, `read_exact` the reply,
//!    compare), on the harness's load loop. Only the server differs, and every one but the
//!    raw loop is the harness's echo server ([`coring_bench::echo::server::serve`]) on that
//!    runtime: it accepts the connections and echoes each in a task of its own that reads
//!    into a 16 KiB buffer and writes back what it read:
//!    - coring on io_uring, and coring on the fallback backend (epoll): an owned buffer
//!      (`stream.read(vec)`, `stream.write_all(vec)`);
//!    - tokio `current_thread`: `tokio::spawn`ed tasks, `AsyncReadExt::read` into a buffer
//!      and `write_all` of what was read;
//!    - monoio 0.2 (Linux only) on its io_uring driver with the timer enabled, its defaults
//!      otherwise: `monoio::spawn`ed tasks, owned buffers as coring;
//!    - raw io_uring (Linux only), the practical limit: a plain single-threaded loop on the
//!      `io-uring` crate ([`coring_bench::raw::echo`]), one ring set up as coring sets up
//!      its own, an accept SQE re-armed after each connection, and per connection a recv
//!      into its own 16 KiB buffer, a send of exactly the bytes received, then the recv
//!      re-armed; one `submit_and_wait(1)` per loop turn.
//!
//!    After a warm-up (during which the connections open), the server thread reads its own
//!    `CLOCK_THREAD_CPUTIME_ID` and its echoed-byte counter at the start and the end of the
//!    measured window; CPU per request is that CPU time divided by the requests echoed in
//!    the window. The client reports requests/s and the p50/p99 round-trip latency (HDR
//!    histogram) over the same window, and its own thread CPU time, so a second table
//!    shows server + client CPU per request: on loopback part of each side's TCP receive
//!    work runs on whichever thread sends, so the server's share swings from run to run
//!    while the sum (same client for every server) is steadier. `--conns 16,64,256` runs
//!    the comparison at each connection count in turn and ends with a summary table.
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
//! cargo bench -p coring-bench --bench vs_tokio
//! cargo bench -p coring-bench --bench vs_tokio -- --only echo --conns 16,64,256 --reps 3
//! cargo bench -p coring-bench --bench vs_tokio -- --secs 3 --size 1024 --backends io_uring,raw
//! cargo bench -p coring-bench --bench vs_tokio -- --only echo --backends fallback --no-tokio
//! ```

use std::env;
use std::fmt;
use std::fs::File as StdFile;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coring::BackendKind;
use coring_bench::args::{self, or_exit, ArgError};
use coring_bench::contender::{backend_usable, on_coring, refuse_backend_override};
use coring_bench::echo::client::{self, ConnResult, Connection, Load, Message};
use coring_bench::echo::coring::Coring;
use coring_bench::echo::pair::{run_pair, Handshake, Pair};
use coring_bench::echo::runtime::{BenchRuntime, ClientRuntime, EchoConn, ServerRuntime};
use coring_bench::echo::server::{self, at_edges, ServerReport, ServerStats, SERVER_BUF};
use coring_bench::fread::{check_block, TestFile, XorShift, BLOCK};
use coring_bench::load::{Clock, RoundTrip, Timeline, WallClock};
use coring_bench::progress::Progress;
use coring_bench::runs::{fmt_opt, fmt_ratio, fmt_x, Runs};
use coring_bench::sys::{self, core_name, usable_cores};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Extra time, beyond warm-up and measurement, before a file-read run is declared hung.
const HANG_SLACK: Duration = Duration::from_secs(30);

const USAGE: &str = "\
usage: cargo bench -p coring-bench --bench vs_tokio -- [options]
  --secs S          measured seconds per run, after the warm-up (default 3)
  --warmup S        warm-up seconds per run, not counted (default 0.5)
  --reps N          runs per contender, interleaved; the median is reported (default 3)
  --backends LIST   servers to run: the coring backends io_uring and fallback, raw (the
                    plain io_uring echo loop) and monoio (echo only, Linux only)
                    (default io_uring,fallback,raw,monoio; raw and monoio only on Linux)
  --no-tokio        leave out the tokio baselines (for profiling coring alone)
  --only WHAT       run only the echo or the fread benchmark
  --conns N[,N..]   echo: connections, each doing ping-pong; a list runs the comparison
                    once per count, then prints a summary (default 16)
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
    /// Whether the echo benchmark runs monoio's server.
    monoio: bool,
    tokio: bool,
    echo: bool,
    fread: bool,
    conns: Vec<usize>,
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
            monoio: cfg!(target_os = "linux"),
            tokio: true,
            echo: true,
            fread: true,
            conns: vec![16],
            size: 1024,
            qd: 32,
            file_mb: 64,
            dir: env::temp_dir(),
        }
    }
}

impl Config {
    /// The longest a file-read run may take before the program gives up on it.
    fn run_budget(&self) -> Duration {
        self.warmup + self.secs + HANG_SLACK
    }
}

/// The command line, checked; `CORING_BACKEND` must not be set (it would override the
/// backend each coring contender asks for).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Config, ArgError> {
    let cfg = args::parse(args, Config::default(), |cfg, flag, flags| {
        match flag.name.as_str() {
            "--no-tokio" => cfg.tokio = false,
            "--secs" => cfg.secs = flags.secs(flag, false)?,
            "--warmup" => cfg.warmup = flags.secs(flag, true)?,
            "--reps" => cfg.reps = flags.count(flag)?,
            "--conns" => cfg.conns = flags.counts(flag)?,
            "--size" => cfg.size = flags.count(flag)?,
            "--qd" => cfg.qd = flags.count(flag)?,
            "--file-mb" => cfg.file_mb = flags.count(flag)? as u64,
            "--dir" => cfg.dir = PathBuf::from(flags.value(flag)?),
            "--backends" => parse_servers(&flags.value(flag)?, cfg)?,
            "--only" => match flags.value(flag)?.as_str() {
                "echo" => (cfg.echo, cfg.fread) = (true, false),
                "fread" => (cfg.echo, cfg.fread) = (false, true),
                other => return Err(format!("--only takes echo or fread, not '{other}'")),
            },
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    refuse_backend_override("--backends")?;
    Ok(cfg)
}

/// `--backends`: coring backends, and the raw loop and monoio by name.
fn parse_servers(list: &str, cfg: &mut Config) -> Result<(), String> {
    (cfg.raw, cfg.monoio, cfg.backends) = (false, false, Vec::new());
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name.to_ascii_lowercase().as_str() {
            "raw" => cfg.raw = true,
            "monoio" => cfg.monoio = true,
            _ => match BackendKind::parse(name) {
                Ok(k @ (BackendKind::IoUring | BackendKind::Fallback)) => cfg.backends.push(k),
                _ => {
                    return Err(format!(
                        "--backends takes io_uring, fallback, raw and/or monoio, not '{name}'"
                    ))
                }
            },
        }
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------
// Main

fn main() {
    let mut cfg = or_exit(parse_args(env::args().skip(1)), "vs_tokio", USAGE);
    cfg.backends
        .retain(|&kind| backend_usable("vs_tokio", kind));
    usable_cores(
        "vs_tokio",
        "the echo server and client",
        "CPU per request and req/s",
    );
    println!(
        "coring vs tokio current_thread, monoio and raw io_uring: {} run(s) per contender, \
         interleaved, medians shown; {:.1} s measured after {:.1} s warm-up per run",
        cfg.reps,
        cfg.secs.as_secs_f64(),
        cfg.warmup.as_secs_f64()
    );
    let mut failed = false;
    if cfg.echo {
        let servers = echo_servers(&cfg);
        let mut tables = Vec::new();
        for &conns in &cfg.conns {
            let runs = bench_echo(&cfg, &servers, conns);
            failed |= runs.failed;
            tables.push((conns, runs));
        }
        if tables.len() > 1 {
            print_echo_summary(&servers, &tables);
        }
    }
    if cfg.fread {
        failed |= bench_fread(&cfg);
    }
    if failed {
        eprintln!("vs_tokio: FAILED: see the errors above");
        process::exit(1);
    }
}

// ----------------------------------------------------------------------------------------
// Echo

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Coring(BackendKind),
    /// The plain io_uring loop (Linux only): the practical limit.
    Raw,
    /// monoio on its io_uring driver (Linux only).
    Monoio,
    Tokio,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Coring(kind) => f.pad(&format!("coring {kind}")),
            Server::Raw => f.pad("raw io_uring"),
            Server::Monoio => f.pad("monoio"),
            Server::Tokio => f.pad("tokio current_thread"),
        }
    }
}

/// The servers `cfg` asks for that can run here, with what they run on in words.
fn echo_servers(cfg: &Config) -> Vec<Server> {
    let mut servers: Vec<Server> = cfg.backends.iter().map(|&k| Server::Coring(k)).collect();
    if cfg.raw {
        match raw_probe() {
            Ok(setup) => {
                println!(
                    "raw io_uring: one ring ({setup}), accept / recv / send SQEs, a {} KiB \
                     buffer per connection, one submit_and_wait(1) per loop turn",
                    SERVER_BUF / 1024
                );
                servers.push(Server::Raw);
            }
            Err(e) => eprintln!("vs_tokio: skipping the raw io_uring loop: {e}"),
        }
    }
    if cfg.monoio {
        match monoio_rt::probe() {
            Ok(()) => servers.push(Server::Monoio),
            Err(e) => eprintln!("vs_tokio: skipping monoio: {e}"),
        }
    }
    if cfg.tokio {
        servers.push(Server::Tokio);
    }
    servers
}

#[cfg(target_os = "linux")]
fn raw_probe() -> Result<&'static str, String> {
    coring_bench::raw::probe().map(|s| s.name())
}

#[cfg(not(target_os = "linux"))]
fn raw_probe() -> Result<&'static str, String> {
    Err("io_uring exists only on Linux".to_string())
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

type EchoRuns = Runs<Server, EchoResult>;

/// The server's CPU microseconds per request, which the tables compare.
fn cpu(r: &EchoResult) -> f64 {
    r.cpu_us_per_req
}

/// Runs the echo comparison at `conns` connections and prints its table.
fn bench_echo(cfg: &Config, servers: &[Server], conns: usize) -> EchoRuns {
    let cores = sys::cpus();
    println!(
        "\n== echo: {conns} connections, {} B messages, closed loop; server on {}, client \
         (tokio current_thread, the same for every server) on {}",
        cfg.size,
        core_name(cores.first().copied()),
        core_name(cores.get(1).copied())
    );
    let runs = Runs::interleave(cfg.reps, servers, |s| run_echo(s, cfg, conns));
    print_echo_table(servers, &runs);
    print_targets(&runs);
    runs
}

fn print_echo_table(servers: &[Server], runs: &EchoRuns) {
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
    for &s in servers {
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
    for &s in servers {
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
}

/// The targets the project holds coring's echo server to: server CPU per request of
/// `server` at most `factor` times `base`'s.
const TARGETS: [(Server, Server, f64); 5] = [
    (URING, Server::Monoio, 1.0),
    (URING, FALLBACK, 1.0),
    (URING, Server::Raw, 1.0),
    (FALLBACK, Server::Tokio, 1.0),
    (URING, Server::Tokio, 0.9),
];
const URING: Server = Server::Coring(BackendKind::IoUring);
const FALLBACK: Server = Server::Coring(BackendKind::Fallback);

fn print_targets(runs: &EchoRuns) {
    for (server, base, factor) in TARGETS {
        let (Some(s), Some(b)) = (runs.median(server, cpu), runs.median(base, cpu)) else {
            continue;
        };
        println!(
            "target: {server} server CPU/request <= {factor:.2}x {base}: {:.2}x (paired {}, \
             min {}), {}",
            s / b,
            fmt_x(runs.paired_ratio(server, base, cpu)),
            fmt_ratio(runs.min(server, cpu), runs.min(base, cpu)),
            if s <= factor * b { "met" } else { "MISSED" }
        );
    }
}

/// One line per connection count: each server's median CPU per request, and coring
/// io_uring's paired ratio to each other server.
fn print_echo_summary(servers: &[Server], tables: &[(usize, EchoRuns)]) {
    let others: Vec<Server> = servers.iter().copied().filter(|&s| s != URING).collect();
    println!("\n== summary: server CPU µs/request (median), and coring io_uring / each (paired)");
    let mut head = format!("{:>6}", "conns");
    for s in servers {
        head += &format!(" {:>22}", s.to_string());
    }
    for s in &others {
        head += &format!(" {:>14}", format!("/ {}", short(*s)));
    }
    println!("{head}");
    for (conns, runs) in tables {
        let mut line = format!("{conns:>6}");
        for &s in servers {
            line += &format!(" {:>22}", fmt_opt(runs.median(s, cpu), 2));
        }
        for &s in &others {
            line += &format!(" {:>14}", fmt_x(runs.paired_ratio(URING, s, cpu)));
        }
        println!("{line}");
    }
}

/// A server's name in a narrow column.
fn short(s: Server) -> String {
    match s {
        Server::Coring(kind) => kind.to_string(),
        Server::Raw => "raw".to_string(),
        Server::Monoio => "monoio".to_string(),
        Server::Tokio => "tokio".to_string(),
    }
}

/// One echo run: a server of kind `server` on the first CPU, the tokio load generator on
/// the second.
fn run_echo(server: Server, cfg: &Config, conns: usize) -> Result<EchoResult, String> {
    let load = Load::closed(conns, cfg.size);
    let counter = load.counter.clone();
    let serve = move |conns: usize, hs: Handshake| -> Result<ServerReport, String> {
        match server {
            Server::Coring(backend) => server::serve(
                &Coring {
                    backend,
                    zc: false,
                    time_parks: false,
                },
                conns,
                hs,
            ),
            Server::Raw => raw_server(conns, hs),
            Server::Monoio => monoio_rt::server(conns, hs),
            Server::Tokio => server::serve(&Tokio, conns, hs),
        }
    };
    let mut progress = Progress::new(false, String::new(), "req/s");
    let pair = run_pair(
        conns,
        (cfg.warmup, cfg.secs),
        serve,
        move |addr, tl| client::load(&Tokio, addr, &load, tl),
        &mut progress,
        &counter,
    )?;
    echo_result(&pair, cfg)
}

#[cfg(target_os = "linux")]
fn raw_server(conns: usize, hs: Handshake) -> Result<ServerReport, String> {
    coring_bench::raw::echo::server(conns, hs)
}

#[cfg(not(target_os = "linux"))]
fn raw_server(_conns: usize, hs: Handshake) -> Result<ServerReport, String> {
    hs.refuse("the raw io_uring loop runs on Linux only".to_string())
}

/// The run's numbers, once both sides reported without errors.
fn echo_result(pair: &Pair, cfg: &Config) -> Result<EchoResult, String> {
    let (c, s) = (&pair.client, &pair.server);
    let errors: Vec<String> = c.errors.iter().chain(&s.errors).cloned().collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let served = s.requests(cfg.size);
    if served < 1.0 {
        return Err("the server echoed nothing in the measured window".to_string());
    }
    let usage = s.usage();
    let cpu = usage
        .cpu
        .ok_or("CLOCK_THREAD_CPUTIME_ID is unavailable")?
        .as_secs_f64();
    let hist = c.rec.histogram();
    let per_req = |f: fn(&coring::Metrics) -> u64| s.counter(f).map(|n| n as f64 / served);
    Ok(EchoResult {
        req_per_sec: c.rec.requests() as f64 / cfg.secs.as_secs_f64(),
        cpu_us_per_req: cpu * 1e6 / served,
        total_cpu_us_per_req: c.usage.cpu.map(|c| (cpu + c.as_secs_f64()) * 1e6 / served),
        cpu_share: cpu / s.window().as_secs_f64(),
        p50_us: hist.quantile_ns(0.50) as f64 / 1000.0,
        p99_us: hist.quantile_ns(0.99) as f64 / 1000.0,
        server_run_wait_ms: usage.run_wait.map(|w| w.as_secs_f64() * 1000.0),
        enters_per_req: per_req(|m| m.enters),
        parks_per_req: per_req(|m| m.parks),
        ops_per_req: per_req(|m| m.ops_submitted),
    })
}

/// A tokio `current_thread` runtime with IO and timers.
fn tokio_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// tokio's clock, with time 0 at `start`.
fn tokio_clock(start: Instant) -> WallClock<fn(Instant) -> tokio::time::Sleep> {
    WallClock::new(start, |t| tokio::time::sleep_until(t.into()))
}

/// tokio `current_thread` under the echo harness: the load generator of every run, and a
/// server.
struct Tokio;

impl BenchRuntime for Tokio {
    type Rt = tokio::runtime::Runtime;

    fn build(&self) -> io::Result<Self::Rt> {
        tokio_runtime()
    }

    fn block_on<F: Future>(rt: &Self::Rt, f: F) -> F::Output {
        rt.block_on(f)
    }

    fn clock(start: Instant) -> impl Clock {
        tokio_clock(start)
    }

    fn describe(_rt: &Self::Rt) -> String {
        "tokio current_thread".to_string()
    }
}

impl ServerRuntime for Tokio {
    type Listener = tokio::net::TcpListener;
    type Stream = tokio::net::TcpStream;

    fn bind(rt: &Self::Rt, addr: SocketAddr) -> io::Result<Self::Listener> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(listener)
    }

    coring_bench::listener_methods!();

    fn spawn_echo(stream: Self::Stream, stats: Arc<ServerStats>) {
        // Detached: the loop reports through `stats`.
        drop(tokio::spawn(stats.echo(TokioEcho::new(stream))));
    }
}

/// A tokio server connection: reads into a buffer, `write_all`s what it read.
struct TokioEcho {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl TokioEcho {
    fn new(stream: tokio::net::TcpStream) -> io::Result<TokioEcho> {
        stream.set_nodelay(true)?;
        Ok(TokioEcho {
            stream,
            buf: vec![0u8; SERVER_BUF],
        })
    }
}

impl EchoConn for TokioEcho {
    async fn echo_once(&mut self) -> io::Result<usize> {
        let n = self.stream.read(&mut self.buf).await?;
        self.stream.write_all(&self.buf[..n]).await?;
        Ok(n)
    }
}

impl ClientRuntime for Tokio {
    fn spawn_connection(c: Connection<'_>) -> impl Future<Output = ConnResult> {
        let connect = TokioConn::connect(c.addr, c.conn, c.load.size);
        // The concrete clock, not `Self::clock`'s opaque one: `tokio::spawn` must see that
        // its sleeps are `Send`.
        let task = tokio::spawn(c.task(tokio_clock(c.tl.start), connect));
        async move { task.await.map_err(|e| e.to_string()) }
    }
}

/// One client connection: `write_all` the message, `read_exact` the reply, compare.
struct TokioConn {
    stream: tokio::net::TcpStream,
    msg: Message,
    reply: Vec<u8>,
}

impl TokioConn {
    async fn connect(addr: SocketAddr, conn: usize, size: usize) -> io::Result<TokioConn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(TokioConn {
            stream,
            msg: Message::new(conn, size),
            reply: vec![0u8; size],
        })
    }
}

impl RoundTrip for TokioConn {
    async fn round_trip(&mut self) -> io::Result<()> {
        self.msg.stamp();
        self.stream.write_all(&self.msg.request).await?;
        self.stream.read_exact(&mut self.reply).await?;
        self.msg.check(&self.reply)
    }
}

/// monoio under the echo harness (Linux only: its io_uring driver).
#[cfg(target_os = "linux")]
mod monoio_rt {
    use std::cell::RefCell;
    use std::future::Future;
    use std::io;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Instant;

    use coring_bench::echo::pair::Handshake;
    use coring_bench::echo::runtime::{BenchRuntime, OwnedStream, ServerRuntime};
    use coring_bench::echo::server::{self, ServerReport, ServerStats};
    use coring_bench::load::{Clock, WallClock};
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};

    type Runtime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

    /// monoio on its io_uring driver, with the timer and otherwise its defaults.
    pub struct Monoio;

    /// Whether monoio's io_uring runtime can be built here.
    pub fn probe() -> Result<(), String> {
        Monoio.build().map(drop).map_err(|e| e.to_string())
    }

    /// The monoio echo server thread's body.
    pub fn server(conns: usize, hs: Handshake) -> Result<ServerReport, String> {
        server::serve(&Monoio, conns, hs)
    }

    impl BenchRuntime for Monoio {
        // monoio's block_on takes the runtime by `&mut`.
        type Rt = RefCell<Runtime>;

        fn build(&self) -> io::Result<Self::Rt> {
            let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .enable_timer()
                .build()?;
            Ok(RefCell::new(rt))
        }

        fn block_on<F: Future>(rt: &Self::Rt, f: F) -> F::Output {
            rt.borrow_mut().block_on(f)
        }

        fn clock(start: Instant) -> impl Clock {
            WallClock::new(start, |t: Instant| monoio::time::sleep_until(t.into()))
        }

        fn describe(_rt: &Self::Rt) -> String {
            "monoio 0.2 (io_uring driver)".to_string()
        }
    }

    impl ServerRuntime for Monoio {
        type Listener = TcpListener;
        type Stream = TcpStream;

        fn bind(rt: &Self::Rt, addr: SocketAddr) -> io::Result<TcpListener> {
            // Inside the runtime, where monoio wants its sockets made.
            Self::block_on(rt, async { TcpListener::bind(addr) })
        }

        coring_bench::listener_methods!();

        fn spawn_echo(stream: TcpStream, stats: Arc<ServerStats>) {
            // Detached: the loop reports through `stats`.
            drop(monoio::spawn(stats.echo_owned(MonoioStream(stream))));
        }
    }

    /// monoio's stream as the harness's owned-buffer stream.
    struct MonoioStream(TcpStream);

    impl OwnedStream for MonoioStream {
        fn set_nodelay(&self) -> io::Result<()> {
            self.0.set_nodelay(true)
        }

        // monoio's read future itself, as coring's and tokio's servers await theirs.
        fn read(
            &mut self,
            buf: Vec<u8>,
        ) -> impl std::future::Future<Output = (io::Result<usize>, Vec<u8>)> {
            self.0.read(buf)
        }

        async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
            let (res, buf) = self.0.write_all(buf).await;
            (res.map(drop), buf)
        }
    }
}

/// monoio runs on Linux only (its io_uring driver).
#[cfg(not(target_os = "linux"))]
mod monoio_rt {
    use coring_bench::echo::pair::Handshake;
    use coring_bench::echo::server::ServerReport;

    const UNSUPPORTED: &str = "monoio's io_uring driver runs on Linux only";

    pub fn probe() -> Result<(), String> {
        Err(UNSUPPORTED.to_string())
    }

    pub fn server(_conns: usize, hs: Handshake) -> Result<ServerReport, String> {
        hs.refuse(UNSUPPORTED.to_string())
    }
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
        let name = match *self {
            // Named as the echo servers are.
            Reader::Coring(kind) => return Server::Coring(kind).fmt(f),
            Reader::TokioFs => "tokio::fs seek+read_exact",
            Reader::TokioPread => "tokio spawn_blocking pread",
        };
        f.pad(name)
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

/// Runs the file-read comparison and prints its table; returns whether anything failed.
fn bench_fread(cfg: &Config) -> bool {
    let mut readers: Vec<Reader> = cfg.backends.iter().map(|&k| Reader::Coring(k)).collect();
    if cfg.tokio {
        readers.extend([Reader::TokioFs, Reader::TokioPread]);
    }
    if readers.is_empty() {
        return false;
    }
    let file = match TestFile::create_in(&cfg.dir, cfg.file_mb, true) {
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
    let plan = ReadPlan {
        path: file.path().to_path_buf(),
        blocks: file.blocks(),
        qd: cfg.qd,
        sched: Timeline::starting_now(cfg.warmup, cfg.secs),
        stats: Arc::new(ReadStats::default()),
    };
    let worker = thread::Builder::new()
        .name("fread".into())
        .spawn(move || {
            let res = match reader {
                Reader::Coring(kind) => fread_coring(kind, &plan),
                Reader::TokioFs | Reader::TokioPread => fread_tokio(reader, &plan),
            };
            let errors =
                std::mem::take(&mut *plan.stats.errors.lock().unwrap_or_else(|p| p.into_inner()));
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
            thread_cpu: sys::thread_cpu(),
            process_cpu: sys::process_cpu(),
        }
    }
}

type Window = (ReadSample, ReadSample);

/// Samples at the window's edges (on `clock`, the readers' runtime's), then raises `stop`
/// and waits for the readers' `tasks`.
async fn measure<E: fmt::Debug>(
    clock: &impl Clock,
    tl: &Timeline,
    stats: &ReadStats,
    tasks: Vec<impl Future<Output = Result<(), E>>>,
) -> Window {
    let edges = at_edges(clock, tl, || ReadSample::now(stats)).await;
    stats.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if let Err(e) = t.await {
            stats.error(format!("reader task: {e:?}"));
        }
    }
    edges
}

/// What one file-read run does, whichever the reader.
struct ReadPlan {
    path: PathBuf,
    blocks: u64,
    /// Reads in flight, one task each.
    qd: usize,
    sched: Timeline,
    stats: Arc<ReadStats>,
}

fn fread_coring(kind: BackendKind, plan: &ReadPlan) -> Result<Window, String> {
    on_coring(kind, async |_rt| {
        let file = coring::fs::File::open(&plan.path)
            .await
            .map_err(|e| format!("open: {e}"))?;
        let file = Rc::new(file);
        let tasks: Vec<_> = (0..plan.qd)
            .map(|i| {
                let reader = coring_reader(file.clone(), i, plan.blocks, plan.stats.clone());
                coring::spawn(reader)
            })
            .collect();
        let clock = WallClock::new(plan.sched.start, coring::time::sleep_until);
        Ok(measure(&clock, &plan.sched, &plan.stats, tasks).await)
    })
}

async fn coring_reader(
    file: Rc<coring::fs::File>,
    task: usize,
    blocks: u64,
    stats: Arc<ReadStats>,
) {
    let mut offsets = XorShift::for_slot(task);
    let mut buf = Vec::with_capacity(BLOCK);
    while !stats.stop.load(Ordering::Relaxed) {
        let block = offsets.block(blocks);
        let off = block * BLOCK as u64;
        buf.clear();
        let (res, b) = file.read_at(buf, off).await;
        buf = b;
        let checked = res.map_err(|e| e.to_string());
        if let Err(e) = checked.and_then(|n| check_block(&buf, n, block)) {
            stats.error(format!("coring read_at({off}): {e}"));
            return;
        }
        stats.reads.fetch_add(1, Ordering::Relaxed);
    }
}

fn fread_tokio(reader: Reader, plan: &ReadPlan) -> Result<Window, String> {
    let rt = tokio_runtime().map_err(|e| format!("runtime: {e}"))?;
    let shared = Arc::new(StdFile::open(&plan.path).map_err(|e| format!("open: {e}"))?);
    rt.block_on(async {
        let tasks: Vec<_> = (0..plan.qd)
            .map(|i| {
                let (blocks, stats) = (plan.blocks, plan.stats.clone());
                if reader == Reader::TokioFs {
                    tokio::spawn(tokio_fs_reader(plan.path.clone(), i, blocks, stats))
                } else {
                    tokio::spawn(tokio_pread_reader(shared.clone(), i, blocks, stats))
                }
            })
            .collect();
        Ok(measure(
            &tokio_clock(plan.sched.start),
            &plan.sched,
            &plan.stats,
            tasks,
        )
        .await)
    })
}

/// `tokio::fs::File`, one handle per task: seek, then `read_exact`.
async fn tokio_fs_reader(path: PathBuf, task: usize, blocks: u64, stats: Arc<ReadStats>) {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return stats.error(format!("tokio::fs open: {e}")),
    };
    let mut offsets = XorShift::for_slot(task);
    let mut buf = vec![0u8; BLOCK];
    while !stats.stop.load(Ordering::Relaxed) {
        let block = offsets.block(blocks);
        let off = block * BLOCK as u64;
        let res = async {
            file.seek(SeekFrom::Start(off)).await?;
            file.read_exact(&mut buf).await
        }
        .await
        .map_err(|e| e.to_string())
        .and_then(|n| check_block(&buf, n, block));
        if let Err(e) = res {
            return stats.error(format!("tokio::fs read at {off}: {e}"));
        }
        stats.reads.fetch_add(1, Ordering::Relaxed);
    }
}

/// One shared `std::fs::File`; each read is a `pread` in `spawn_blocking`, the buffer moved
/// in and back out so it is reused.
async fn tokio_pread_reader(file: Arc<StdFile>, task: usize, blocks: u64, stats: Arc<ReadStats>) {
    let mut offsets = XorShift::for_slot(task);
    let mut buf = vec![0u8; BLOCK];
    while !stats.stop.load(Ordering::Relaxed) {
        let block = offsets.block(blocks);
        let off = block * BLOCK as u64;
        let f = file.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let res = f.read_exact_at(&mut buf, off);
            (res, buf)
        })
        .await;
        let res = match joined {
            Ok((res, b)) => {
                buf = b;
                res.map_err(|e| e.to_string())
                    .and_then(|()| check_block(&buf, BLOCK, block))
            }
            Err(e) => return stats.error(format!("spawn_blocking: {e}")),
        };
        if let Err(e) = res {
            return stats.error(format!("pread at {off}: {e}"));
        }
        stats.reads.fetch_add(1, Ordering::Relaxed);
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
