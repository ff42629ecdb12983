//! Bulk TCP over loopback, one direction at a time: throughput and CPU per GiB of the side
//! under test, coring (io_uring and fallback backends) against tokio's `current_thread`
//! runtime, in one process, interleaved, each measurement repeated (default 3 times) and
//! the median reported.
//!
//! **Why receive (`--direction recv`, the default).** On io_uring, coring starts each
//! stream on one multishot receive: the kernel lands each arrival in a shared 4 KiB
//! provided buffer, and every `read` copies the oldest arrival (at most 4 KiB) into the
//! caller's buffer. For request/response traffic that saves a failed receive and a poll per
//! read; for a bulk stream it would cost a second copy of every byte and a read call per
//! 4 KiB, where a plain `recv` (the fallback backend, tokio) lands up to the caller's whole
//! buffer (default 64 KiB) at once, straight from the socket; so a stream whose reads keep
//! arriving in full provided buffers switches to such direct reads. This direction shows
//! what a bulk receive costs each runtime, and so whether that switch does its job.
//!
//! **Why send (`--direction send`).** Small writes (`--chunk 1024`) show the per-operation
//! cost of a runtime's send path: coring on io_uring runs a send that finds room in the
//! socket buffer as a non-blocking syscall during submission (`ops_inline` counts those)
//! instead of a ring round trip. Bulk writes (the default 256 KiB, or larger) are where the
//! buffer fills: a send that finds it full, or sends only part, goes to the ring, and once
//! that keeps happening the attempts pause, so that a bulk writer does not pay a failed
//! syscall before every send; these runs show what is left of that cost. (On loopback the
//! buffer seldom stays full, since a send also delivers into the receiver's buffer.)
//!
//! **How.** Each run is one loopback connection (127.0.0.1) between two threads:
//! - the **contender**, on its own thread pinned to the first CPU, in a fresh runtime:
//!   coring on io_uring, coring on the fallback backend (epoll), or tokio `current_thread`.
//!   It connects, then
//!   - as the receiver (`recv`), reads until EOF with an owned buffer of `--buf` bytes
//!     (default 65536): coring `stream.read(buf)` with a `Vec::with_capacity(buf)` cleared
//!     before each read, tokio `AsyncReadExt::read` into a `vec![0; buf]`;
//!   - as the sender (`send`), writes `--mb` MiB (default 2048) in `--chunk`-byte
//!     `write_all` calls (default 262144), then shuts its write side down: coring
//!     `stream.write_all(buf)` with an owned `Vec` it gets back and reuses, tokio
//!     `AsyncWriteExt::write_all(&buf)`. Before each write the chunk's bytes are copied into
//!     that `Vec` from a precomputed pattern, the same cost for every contender;
//! - the **peer**, the same for every contender: a plain std thread pinned to the second
//!   CPU that accepts one connection on a `std::net::TcpListener`, then as the sender
//!   `write_all`s `--mb` MiB in `--chunk`-byte slices of the pattern and closes, or as the
//!   receiver reads into a `--buf`-byte buffer until EOF.
//!
//! Each side measures a window: a sender from its first write to the return of its last, a
//! receiver from its first read that returned data to EOF. Over it: wall time, its own
//! thread CPU time (`CLOCK_THREAD_CPUTIME_ID`, read on the thread at both edges), its calls
//! and, for coring, the runtime's counters (`coring::Metrics`). Reported: the contender's
//! MiB/s and CPU seconds per GiB, the ratio of each coring contender's CPU/GiB to tokio's
//! (ratio of medians, and the median of same-round ratios, "paired"), the peer's CPU per
//! GiB, and bytes per read (`recv`) or coring's operations submitted, and of them completed
//! during submission, per write call (`send`). On loopback the sending thread also runs
//! much of the TCP receive processing (each packet is delivered in its context, unless the
//! receiver holds the socket at that moment), so a receiver's CPU is mostly the copy to user
//! space and the per-read cost of its runtime, while a sender's includes that delivery.
//!
//! Every run must deliver exactly the bytes sent, or it fails. The receiver, whichever side
//! it is, spot-checks the content: the byte at stream offset `o` is `o % 251`, and each
//! read's first and last bytes are compared (two loads per read, the same for every
//! contender, so that a lost, repeated or reordered chunk shows up without a full comparison
//! adding to the receiver's CPU); `--verify` compares every byte instead. A run that makes
//! no progress for 30 s fails the program with a message rather than hang.
//!
//! No timing is asserted; the machine this runs on may be shared and noisy, which is why
//! runs are interleaved and medians are shown, with each run's value beside them.
//!
//! ```text
//! cargo bench -p coring-bench --bench stream
//! cargo bench -p coring-bench --bench stream -- --buf 16384 --mb 4096 --reps 5
//! cargo bench -p coring-bench --bench stream -- --only io_uring --reps 1 --mb 8192   # for perf
//! cargo bench -p coring-bench --bench stream -- --direction send --chunk 1024 --mb 512
//! cargo bench -p coring-bench --bench stream -- --direction send --mb 4096
//! ```

use std::env;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use coring::{BackendKind, Metrics};

use coring_bench::args::{self, or_exit, ArgError};
use coring_bench::contender::{self, backend_usable, refuse_backend_override};
use coring_bench::runs::{fmt_opt, fmt_ratio, fmt_x, Runs};
use coring_bench::sys::{core_name, pin_or_warn, usable_cores, ThreadUsage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Default bytes per sender `write_all` (`--chunk`).
const CHUNK: usize = 256 * 1024;
/// Period of the stream's content: the byte at offset `o` is `o % PERIOD`. A prime, so no
/// chunk or buffer size is a multiple of it and a misplaced chunk changes the bytes seen.
const PERIOD: usize = 251;
/// How long a run may go without any byte sent or received before it is declared hung.
const STALL: Duration = Duration::from_secs(30);
/// How often the main thread looks at a run's progress.
const WATCH_EVERY: Duration = Duration::from_millis(250);
const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

const USAGE: &str = "\
usage: cargo bench -p coring-bench --bench stream -- [options]
  --direction D   recv: the contenders receive from a std sender (default); send: they
                  send to a std receiver
  --mb N          MiB the sender writes per run (default 2048)
  --chunk BYTES   bytes per sender write_all (default 262144)
  --buf BYTES     the receiver's read buffer (default 65536)
  --reps N        runs per contender, interleaved; the median is reported (default 3)
  --only LIST     contenders to run, a comma list of io_uring, fallback and tokio
                  (default all three), and zc: coring on io_uring sending with send_zc
                  (zero-copy; each chunk sent once the last one's buffer came back), not
                  run unless named
  --verify        check every received byte (default: the first and last byte of each
                  read); costs receiver CPU, the same for every contender
  -h, --help      this help

The contender (the receiver, or with --direction send the sender) runs on the first CPU,
its peer (a blocking std thread, the same for every contender) on the second. The
CORING_BACKEND environment variable must not be set: it would override the backend each
coring contender asks for.";

// ----------------------------------------------------------------------------------------
// Command line

#[derive(Debug, Clone)]
struct Config {
    direction: Direction,
    mb: u64,
    chunk: usize,
    buf: usize,
    reps: usize,
    contenders: Vec<Contender>,
    verify: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            direction: Direction::Recv,
            mb: 2048,
            chunk: CHUNK,
            buf: 65536,
            reps: 3,
            // send_zc only when asked for (`--only ...,zc`).
            contenders: ALL
                .iter()
                .copied()
                .filter(|&c| c != Contender::CoringZc)
                .collect(),
            verify: false,
        }
    }
}

impl Config {
    fn total_bytes(&self) -> u64 {
        self.mb << 20
    }
}

/// The command line, checked; `CORING_BACKEND` must not be set (it would override the
/// backend each coring contender asks for).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Config, ArgError> {
    let cfg = args::parse(args, Config::default(), |cfg, flag, flags| {
        match flag.name.as_str() {
            "--verify" => cfg.verify = true,
            "--direction" => {
                let value = flags.value(flag)?;
                cfg.direction = Direction::parse(&value)
                    .ok_or_else(|| format!("--direction takes recv or send, not '{value}'"))?;
            }
            "--mb" => {
                cfg.mb = flags.count(flag)? as u64;
                if cfg.mb > 1 << 20 {
                    return Err("--mb takes at most 1048576 (1 TiB)".to_string());
                }
            }
            "--chunk" => cfg.chunk = bytes(flags.count(flag)?, &flag.name)?,
            "--buf" => cfg.buf = bytes(flags.count(flag)?, &flag.name)?,
            "--reps" => cfg.reps = flags.count(flag)?,
            "--only" => cfg.contenders = parse_contenders(&flags.value(flag)?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    refuse_backend_override("--only")?;
    Ok(cfg)
}

/// A buffer size `n` given to `flag`: at most 1 GiB.
fn bytes(n: usize, flag: &str) -> Result<usize, String> {
    if n > 1 << 30 {
        return Err(format!("{flag} takes at most 1073741824 (1 GiB)"));
    }
    Ok(n)
}

/// The contenders named in `list`, in the usual order (io_uring, fallback, tokio).
fn parse_contenders(list: &str) -> Result<Vec<Contender>, String> {
    let mut wanted = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let c = if name.eq_ignore_ascii_case("tokio") {
            Contender::Tokio
        } else if name.eq_ignore_ascii_case("zc") {
            Contender::CoringZc
        } else {
            match BackendKind::parse(name) {
                Ok(k @ (BackendKind::IoUring | BackendKind::Fallback)) => Contender::Coring(k),
                _ => {
                    return Err(format!(
                        "--only takes io_uring, fallback, tokio and/or zc, not '{name}'"
                    ))
                }
            }
        };
        wanted.push(c);
    }
    if wanted.is_empty() {
        return Err("--only needs at least one of io_uring, fallback, tokio and zc".to_string());
    }
    Ok(ALL.iter().copied().filter(|c| wanted.contains(c)).collect())
}

/// A tokio `current_thread` runtime with IO and timers.
fn tokio_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

// ----------------------------------------------------------------------------------------
// Main

fn main() {
    let mut cfg = or_exit(parse_args(env::args().skip(1)), "stream", USAGE);
    cfg.contenders.retain(|&c| match c {
        Contender::Coring(kind) => backend_usable("stream", kind),
        Contender::CoringZc => backend_usable("stream", BackendKind::IoUring),
        Contender::Tokio => true,
    });
    if cfg.contenders.is_empty() {
        eprintln!("stream: no contender left to run");
        process::exit(1);
    }
    let cores = usable_cores(
        "stream",
        "the sender and the receiver",
        "MiB/s and CPU per GiB",
    );
    let contender_core = cores.first().copied();
    let peer_core = cores.get(1).copied();
    print_setup(&cfg, contender_core, peer_core);
    let runs = Runs::interleave(cfg.reps, &cfg.contenders, |c| {
        run_stream(c, &cfg, contender_core, peer_core)
    });
    print_table(&cfg, &runs);
    if runs.failed {
        eprintln!("stream: FAILED: see the errors above");
        process::exit(1);
    }
}

fn print_setup(
    cfg: &Config,
    contender_core: Option<core_affinity::CoreId>,
    peer_core: Option<core_affinity::CoreId>,
) {
    let chunk = if cfg.chunk.is_multiple_of(1024) {
        format!("{} KiB", cfg.chunk / 1024)
    } else {
        format!("{} B", cfg.chunk)
    };
    let (contender, peer) = match cfg.direction {
        Direction::Recv => (
            format!("receiver reads into a {} B buffer", cfg.buf),
            format!("sender (std thread, {chunk} write_all, the same for every receiver)"),
        ),
        Direction::Send => (
            format!("sender writes {chunk} per write_all"),
            format!(
                "receiver (std thread, {} B reads, the same for every sender)",
                cfg.buf
            ),
        ),
    };
    println!(
        "stream: {} MiB per run over loopback TCP, {}; {contender} on {}, {peer} on {}",
        cfg.mb,
        if cfg.verify {
            "every byte checked"
        } else {
            "first and last byte of each read checked"
        },
        core_name(contender_core),
        core_name(peer_core)
    );
    println!(
        "{} run(s) per contender, interleaved, medians shown\n",
        cfg.reps
    );
}

type Table = Runs<Contender, StreamResult>;

/// A column of the table: its heading, its width and a contender's cell.
struct Column {
    head: &'static str,
    width: usize,
    cell: fn(&Table, Contender) -> String,
}

/// The contender's CPU seconds per GiB, which the table compares.
fn cpu(r: &StreamResult) -> f64 {
    r.cpu_per_gib
}

/// The table's columns after the contender's name, for `dir`.
fn columns(dir: Direction) -> Vec<Column> {
    let col = |head, width, cell| Column { head, width, cell };
    let mut cols = vec![
        col("MiB/s", 7, |t, c| {
            fmt_opt(t.median(c, |r| r.mib_per_sec), 0)
        }),
        col("CPU s/GiB", 10, |t, c| fmt_opt(t.median(c, cpu), 3)),
        col("vs tokio", 9, |t, c| {
            fmt_ratio(t.median(c, cpu), t.median(Contender::Tokio, cpu))
        }),
        col("(paired)", 9, |t, c| {
            fmt_x(t.paired_ratio(c, Contender::Tokio, cpu))
        }),
    ];
    match dir {
        Direction::Recv => {
            cols.push(col("B/read", 8, |t, c| {
                fmt_opt(t.median(c, |r| r.bytes_per_call), 0)
            }));
        }
        Direction::Send => {
            cols.push(col("ops/write", 9, |t, c| {
                fmt_opt(t.median(c, |r| r.per_call(|m| m.ops_submitted)), 2)
            }));
            cols.push(col("inline/write", 12, |t, c| {
                fmt_opt(t.median(c, |r| r.per_call(|m| m.ops_inline)), 2)
            }));
        }
    }
    let peer = match dir {
        Direction::Recv => "send s/GiB",
        Direction::Send => "recv s/GiB",
    };
    cols.push(col(peer, 10, |t, c| {
        fmt_opt(t.median(c, |r| r.peer_cpu_per_gib), 3)
    }));
    cols.push(col("wait ms", 7, |t, c| {
        fmt_opt(t.median(c, |r| r.run_wait_ms.unwrap_or(f64::NAN)), 0)
    }));
    cols
}

fn print_table(cfg: &Config, runs: &Table) {
    let dir = cfg.direction;
    let cols = columns(dir);
    let row = |name: &str, cells: Vec<String>, tail: &str| {
        let mut line = format!("{name:<22}");
        for (col, cell) in cols.iter().zip(cells) {
            line += &format!(" {cell:>w$}", w = col.width);
        }
        println!("{line}   {tail}");
    };
    println!();
    row(
        dir.role(),
        cols.iter().map(|col| col.head.to_string()).collect(),
        &format!("{} CPU s/GiB of each run", dir.name()),
    );
    for &c in &cfg.contenders {
        let cells = cols.iter().map(|col| (col.cell)(runs, c)).collect();
        row(&c.to_string(), cells, &runs.each(c, 3, cpu));
    }
    match dir {
        Direction::Recv => println!(
            "(CPU s/GiB: the receiver thread's CPU seconds per GiB received; vs tokio: ratio \
             of medians; paired: median of same-round ratios; send s/GiB: the sender \
             thread's, which on loopback includes much of the TCP receive processing; wait \
             ms: time the receiver was runnable but waited for a CPU, i.e. other load)"
        ),
        Direction::Send => println!(
            "(CPU s/GiB: the sender thread's CPU seconds per GiB sent, which on loopback \
             includes much of the TCP receive processing; vs tokio: ratio of medians; paired: \
             median of same-round ratios; ops/write: coring operations submitted per \
             write_all call; inline/write: those of them completed during submission, \
             without a trip through the ring or the poller; recv s/GiB: the receiver \
             thread's; wait ms: time the sender was runnable but waited for a CPU, i.e. \
             other load)"
        ),
    }
    let tokio_cpu = runs.median(Contender::Tokio, cpu);
    if tokio_cpu.is_some() {
        for kind in [BackendKind::IoUring, BackendKind::Fallback] {
            let c = Contender::Coring(kind);
            if let Some(med) = runs.median(c, cpu) {
                println!(
                    "coring {kind} {} CPU per GiB vs tokio current_thread: {} (paired {})",
                    dir.role(),
                    fmt_ratio(Some(med), tokio_cpu),
                    fmt_x(runs.paired_ratio(c, Contender::Tokio, cpu)),
                );
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// One run

/// A runtime under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Coring(BackendKind),
    /// coring on io_uring, sending with `send_zc` (as a receiver, as `Coring(IoUring)`).
    CoringZc,
    Tokio,
}

/// Every contender, in the order they are listed.
const ALL: [Contender; 4] = [
    Contender::Coring(BackendKind::IoUring),
    Contender::CoringZc,
    Contender::Coring(BackendKind::Fallback),
    Contender::Tokio,
];

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contender::Coring(kind) => f.pad(&format!("coring {kind}")),
            Contender::CoringZc => f.pad("coring io_uring send_zc"),
            Contender::Tokio => f.pad("tokio current_thread"),
        }
    }
}

/// Which end of the stream the contenders are; the std peer is the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Recv,
    Send,
}

impl Direction {
    fn parse(s: &str) -> Option<Direction> {
        match s {
            "recv" => Some(Direction::Recv),
            "send" => Some(Direction::Send),
            _ => None,
        }
    }

    fn other(self) -> Direction {
        match self {
            Direction::Recv => Direction::Send,
            Direction::Send => Direction::Recv,
        }
    }

    /// "recv" or "send".
    fn name(self) -> &'static str {
        match self {
            Direction::Recv => "recv",
            Direction::Send => "send",
        }
    }

    /// "receiver" or "sender".
    fn role(self) -> &'static str {
        match self {
            Direction::Recv => "receiver",
            Direction::Send => "sender",
        }
    }

    /// What one of this end's calls is: "read" or "write".
    fn call(self) -> &'static str {
        match self {
            Direction::Recv => "read",
            Direction::Send => "write",
        }
    }
}

/// Bytes moved so far in a run, for the watchdog; `abort` tells the peer to stop waiting
/// for a connection that will not come.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    received: AtomicU64,
    abort: AtomicBool,
}

impl Progress {
    fn total(&self) -> u64 {
        self.sent.load(Ordering::Relaxed) + self.received.load(Ordering::Relaxed)
    }
}

/// What each side's thread reports: totals over the whole stream, and its measured window
/// (see [`Meter`]).
struct Report {
    total_bytes: u64,
    window_bytes: u64,
    window_calls: u64,
    wall: Duration,
    usage: ThreadUsage,
    /// coring only: the runtime's counters over the window.
    metrics: Option<Metrics>,
}

impl Report {
    /// CPU seconds per GiB moved in the window.
    fn cpu_per_gib(&self) -> Option<f64> {
        let cpu = self.usage.cpu.filter(|_| self.window_bytes > 0)?;
        Some(cpu.as_secs_f64() * GIB / self.window_bytes as f64)
    }
}

/// One run's numbers, the contender's unless named otherwise.
struct StreamResult {
    direction: Direction,
    mib_per_sec: f64,
    cpu_per_gib: f64,
    /// The peer thread's CPU seconds per GiB.
    peer_cpu_per_gib: f64,
    /// The contender thread's share of one CPU over the window.
    cpu_share: f64,
    /// Reads or write_all calls in the window.
    calls: u64,
    bytes_per_call: f64,
    run_wait_ms: Option<f64>,
    metrics: Option<Metrics>,
}

impl StreamResult {
    /// A runtime counter per call (NaN without counters).
    fn per_call(&self, counter: fn(&Metrics) -> u64) -> f64 {
        self.metrics
            .as_ref()
            .map_or(f64::NAN, |m| counter(m) as f64 / self.calls.max(1) as f64)
    }
}

impl fmt::Display for StreamResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = self.direction;
        let call = dir.call();
        write!(
            f,
            "{:>6.0} MiB/s  {} {:.3} s/GiB ({:>3.0}% CPU)  {} {call}s, {:.0} B/{call}  {} \
             {:.3} s/GiB",
            self.mib_per_sec,
            dir.name(),
            self.cpu_per_gib,
            self.cpu_share * 100.0,
            self.calls,
            self.bytes_per_call,
            dir.other().name(),
            self.peer_cpu_per_gib,
        )?;
        if let Some(m) = &self.metrics {
            let ops = self.per_call(|m| m.ops_submitted);
            let enters = self.per_call(|m| m.enters);
            match dir {
                Direction::Recv => write!(
                    f,
                    "  {ops:.2} ops/read {enters:.2} enters/read, {} multishot throttled",
                    m.multishot_throttled
                )?,
                Direction::Send => write!(
                    f,
                    "  {ops:.2} ops/write {:.2} inline/write {enters:.2} enters/write",
                    self.per_call(|m| m.ops_inline)
                )?,
            }
        }
        if let Some(w) = self.run_wait_ms {
            write!(f, "  waited {w:.0} ms for CPU")?;
        }
        Ok(())
    }
}

/// One run: contender `c` on `contender_core`, the std peer on `peer_core`.
fn run_stream(
    c: Contender,
    cfg: &Config,
    contender_core: Option<core_affinity::CoreId>,
    peer_core: Option<core_affinity::CoreId>,
) -> Result<StreamResult, String> {
    let dir = cfg.direction;
    let (role, peer_role) = (dir.role(), dir.other().role());
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("{peer_role}: bind 127.0.0.1:0: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("{peer_role}: local_addr: {e}"))?;
    let total = cfg.total_bytes();
    let progress = Arc::new(Progress::default());

    let (peer_tx, peer_rx) = mpsc::channel();
    let (p, conf) = (progress.clone(), cfg.clone());
    let peer = thread::Builder::new()
        .name(format!("stream-{}", dir.other().name()))
        .spawn(move || {
            pin_or_warn(peer_core);
            let _ = peer_tx.send(run_peer(listener, &conf, &p));
        })
        .map_err(|e| format!("cannot start the {peer_role} thread: {e}"))?;

    let (tx, rx) = mpsc::channel();
    let (p, conf) = (progress.clone(), cfg.clone());
    let contender = thread::Builder::new()
        .name(format!("stream-{}", dir.name()))
        .spawn(move || {
            pin_or_warn(contender_core);
            let _ = tx.send(run_contender(c, addr, &conf, &p));
        });
    let contender = match contender {
        Ok(t) => t,
        Err(e) => {
            progress.abort.store(true, Ordering::Relaxed);
            let _ = peer.join();
            return Err(format!("cannot start the {role} thread: {e}"));
        }
    };

    let mine = watch(&rx, &progress, total, &format!("the {role}"));
    if mine.is_err() {
        // The peer may still wait for the connection.
        progress.abort.store(true, Ordering::Relaxed);
    }
    let theirs = watch(&peer_rx, &progress, total, &format!("the {peer_role}"));
    contender
        .join()
        .map_err(|_| format!("the {role} thread panicked"))?;
    peer.join()
        .map_err(|_| format!("the {peer_role} thread panicked"))?;
    let (mine, theirs) = match (mine, theirs) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(m), Err(t)) => return Err(format!("{role}: {m}; {peer_role}: {t}")),
        (Err(m), _) => return Err(format!("{role}: {m}")),
        (_, Err(t)) => return Err(format!("{peer_role}: {t}")),
    };
    stream_result(dir, total, mine, theirs)
}

/// The run's numbers from the contender's report (`mine`) and the peer's, once every byte
/// is known to have arrived.
fn stream_result(
    dir: Direction,
    total: u64,
    mine: Report,
    peer: Report,
) -> Result<StreamResult, String> {
    let (sent, received) = match dir {
        Direction::Recv => (&peer, &mine),
        Direction::Send => (&mine, &peer),
    };
    if received.total_bytes != sent.total_bytes || sent.total_bytes != total {
        return Err(format!(
            "the receiver got {} bytes, the sender wrote {} of {total}",
            received.total_bytes, sent.total_bytes
        ));
    }
    if mine.window_bytes == 0 {
        return Err(format!(
            "all {total} bytes came in the first read, so nothing was timed; raise --mb"
        ));
    }
    let cpu = mine
        .usage
        .cpu
        .ok_or("CLOCK_THREAD_CPUTIME_ID is unavailable")?
        .as_secs_f64();
    let wall = mine.wall.as_secs_f64();
    let window = mine.window_bytes as f64;
    Ok(StreamResult {
        direction: dir,
        mib_per_sec: window / MIB / wall,
        cpu_per_gib: cpu * GIB / window,
        peer_cpu_per_gib: peer.cpu_per_gib().unwrap_or(f64::NAN),
        cpu_share: cpu / wall,
        calls: mine.window_calls,
        bytes_per_call: window / mine.window_calls as f64,
        run_wait_ms: mine.usage.run_wait.map(|w| w.as_secs_f64() * 1000.0),
        metrics: mine.metrics,
    })
}

/// Waits for a thread's answer while bytes keep moving; exits the program when nothing has
/// moved for `STALL` (a contender stuck in its runtime cannot be interrupted from here).
fn watch<T>(rx: &Receiver<T>, progress: &Progress, total: u64, what: &str) -> T {
    let mut last = progress.total();
    let mut last_change = Instant::now();
    loop {
        match rx.recv_timeout(WATCH_EVERY) {
            Ok(v) => return v,
            Err(RecvTimeoutError::Timeout) => {
                let now = progress.total();
                if now != last {
                    (last, last_change) = (now, Instant::now());
                } else if last_change.elapsed() >= STALL {
                    eprintln!(
                        "stream: no progress for {STALL:?} while waiting for {what} (sent {} \
                         and received {} of {total} bytes); giving up",
                        progress.sent.load(Ordering::Relaxed),
                        progress.received.load(Ordering::Relaxed),
                    );
                    process::exit(1);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                eprintln!("stream: {what} thread exited (panicked?) without an answer");
                process::exit(1);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// What both directions share: the measured window, the content, and its check

/// One side's count of bytes and calls, published for the watchdog, and its measured
/// window: from [`Meter::open`] (a sender: just before its first write; a receiver: just
/// after its first read that returned data, so that waiting for the connection and the
/// first bytes is left out) to [`Meter::finish`].
struct Meter<'a> {
    bytes: u64,
    calls: u64,
    published: &'a AtomicU64,
    /// coring only: the runtime whose counters the window reports.
    rt: Option<&'a coring::Runtime>,
    start: Option<Edge>,
}

/// A window's opening edge: when, the thread's usage, bytes and calls until then, and the
/// runtime's counters.
struct Edge {
    at: Instant,
    usage: ThreadUsage,
    bytes: u64,
    calls: u64,
    metrics: Option<Metrics>,
}

impl<'a> Meter<'a> {
    fn new(published: &'a AtomicU64, rt: Option<&'a coring::Runtime>) -> Meter<'a> {
        Meter {
            bytes: 0,
            calls: 0,
            published,
            rt,
            start: None,
        }
    }

    /// Counts a call that moved `n` bytes.
    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        self.calls += 1;
        self.published.store(self.bytes, Ordering::Relaxed);
    }

    /// Opens the window, unless it is open already.
    fn open(&mut self) {
        if self.start.is_none() {
            self.start = Some(self.edge());
        }
    }

    fn edge(&self) -> Edge {
        Edge {
            at: Instant::now(),
            usage: ThreadUsage::now(),
            bytes: self.bytes,
            calls: self.calls,
            metrics: self.rt.map(coring::Runtime::metrics),
        }
    }

    /// Closes the window (one never opened is empty: it opens now).
    fn finish(self) -> Report {
        let edge = match self.start {
            Some(edge) => edge,
            None => self.edge(),
        };
        let m1 = self.rt.map(coring::Runtime::metrics);
        Report {
            total_bytes: self.bytes,
            window_bytes: self.bytes - edge.bytes,
            window_calls: self.calls - edge.calls,
            wall: edge.at.elapsed(),
            usage: ThreadUsage::now().since(edge.usage),
            metrics: m1.zip(edge.metrics).map(|(m1, m0)| metrics_since(m1, m0)),
        }
    }

    /// The message for a failed call: `what`, how far the stream got, the error.
    fn error(&self, what: &str, e: impl fmt::Display) -> String {
        format!("{what} after {} bytes: {e}", self.bytes)
    }
}

/// The counters that matter here, from `m0` to `m1`.
fn metrics_since(m1: Metrics, m0: Metrics) -> Metrics {
    Metrics {
        enters: m1.enters - m0.enters,
        ops_submitted: m1.ops_submitted - m0.ops_submitted,
        ops_inline: m1.ops_inline - m0.ops_inline,
        multishot_throttled: m1.multishot_throttled - m0.multishot_throttled,
        ..Metrics::default()
    }
}

/// `PERIOD` bytes more than `len` of the stream's content, so that the `len` bytes starting
/// at any offset are a slice of it.
fn pattern(len: usize) -> Vec<u8> {
    (0..len + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

/// What every sender writes, identically: `--mb` MiB of the stream's content in
/// `--chunk`-byte writes, each a window of one precomputed pattern; its meter counts them.
struct Source<'a> {
    pattern: Vec<u8>,
    chunk: usize,
    total: u64,
    meter: Meter<'a>,
}

impl<'a> Source<'a> {
    fn new(cfg: &Config, progress: &'a Progress, rt: Option<&'a coring::Runtime>) -> Self {
        Source {
            pattern: pattern(cfg.chunk),
            chunk: cfg.chunk,
            total: cfg.total_bytes(),
            meter: Meter::new(&progress.sent, rt),
        }
    }

    /// The next write's bytes, or `None` once everything is written.
    fn next(&self) -> Option<&[u8]> {
        let sent = self.meter.bytes;
        let len = (self.total - sent).min(self.chunk as u64) as usize;
        let phase = (sent % PERIOD as u64) as usize;
        (len > 0).then(|| &self.pattern[phase..phase + len])
    }

    /// Replaces `buf`'s contents with the next write's bytes; false once everything is
    /// written. For the senders that write an owned buffer.
    fn next_into(&self, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        self.next()
            .map(|data| buf.extend_from_slice(data))
            .is_some()
    }
}

/// What every receiver does with each read's data, identically: checks it against the
/// pattern and counts it, opening the measured window after the first read.
struct Tally<'a> {
    verify: bool,
    /// With `verify`: the pattern, `PERIOD` bytes longer than the read buffer.
    pattern: Vec<u8>,
    meter: Meter<'a>,
}

impl<'a> Tally<'a> {
    fn new(cfg: &Config, progress: &'a Progress, rt: Option<&'a coring::Runtime>) -> Self {
        Tally {
            verify: cfg.verify,
            pattern: if cfg.verify {
                pattern(cfg.buf)
            } else {
                Vec::new()
            },
            meter: Meter::new(&progress.received, rt),
        }
    }

    /// Records a read that returned `data` (not empty).
    fn add(&mut self, data: &[u8]) -> Result<(), String> {
        let n = data.len();
        let offset = self.meter.bytes;
        let phase = (offset % PERIOD as u64) as usize;
        let ok = if self.verify {
            data == &self.pattern[phase..phase + n]
        } else {
            data[0] == phase as u8 && data[n - 1] == ((phase + n - 1) % PERIOD) as u8
        };
        if !ok {
            return Err(format!(
                "wrong data in the {n} bytes read at stream offset {offset}"
            ));
        }
        self.meter.add(n);
        self.meter.open();
        Ok(())
    }
}

// ----------------------------------------------------------------------------------------
// The peer: std, blocking, the same for every contender

/// Accepts one connection, then sends or receives: the opposite of the contenders.
fn run_peer(listener: TcpListener, cfg: &Config, progress: &Progress) -> Result<Report, String> {
    let stream = accept(listener, progress)?;
    match cfg.direction.other() {
        Direction::Send => send_std(stream, cfg, progress),
        Direction::Recv => recv_std(stream, cfg, progress),
    }
}

/// Accepts one connection (giving up after `STALL`, or when told to) and makes it blocking,
/// with `STALL` timeouts.
fn accept(listener: TcpListener, progress: &Progress) -> Result<TcpStream, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let deadline = Instant::now() + STALL;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if progress.abort.load(Ordering::Relaxed) {
                    return Err("the other side gave up before connecting".to_string());
                }
                if Instant::now() >= deadline {
                    return Err(format!("no connection within {STALL:?}"));
                }
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(STALL)))
        .and_then(|()| stream.set_read_timeout(Some(STALL)));
    setup.map_err(|e| format!("socket setup: {e}"))?;
    Ok(stream)
}

/// Writes the stream's content straight from the pattern, and closes.
fn send_std(mut stream: TcpStream, cfg: &Config, progress: &Progress) -> Result<Report, String> {
    let mut src = Source::new(cfg, progress, None);
    src.meter.open();
    while let Some(data) = src.next() {
        let n = data.len();
        stream
            .write_all(data)
            .map_err(|e| src.meter.error("write", e))?;
        src.meter.add(n);
    }
    let report = src.meter.finish();
    // The receiver never writes, so the close sends a FIN after the data, not a reset.
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    Ok(report)
}

/// Reads into a `--buf`-byte buffer until EOF.
fn recv_std(mut stream: TcpStream, cfg: &Config, progress: &Progress) -> Result<Report, String> {
    let mut tally = Tally::new(cfg, progress, None);
    let mut buf = vec![0u8; cfg.buf];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(tally.meter.error("read", e)),
        };
        tally.add(&buf[..n])?;
    }
    Ok(tally.meter.finish())
}

// ----------------------------------------------------------------------------------------
// The contenders

/// Runs contender `c` in a fresh runtime on this thread: connects to `addr`, then receives
/// or sends.
fn run_contender(
    c: Contender,
    addr: SocketAddr,
    cfg: &Config,
    progress: &Progress,
) -> Result<Report, String> {
    let dir = cfg.direction;
    match c {
        Contender::Coring(kind) => on_coring(kind, addr, async |rt, stream| match dir {
            Direction::Recv => {
                recv_coring(stream, cfg.buf, Tally::new(cfg, progress, Some(rt))).await
            }
            Direction::Send => {
                send_coring(stream, Source::new(cfg, progress, Some(rt)), false).await
            }
        }),
        Contender::CoringZc => {
            on_coring(BackendKind::IoUring, addr, async |rt, stream| match dir {
                Direction::Recv => {
                    recv_coring(stream, cfg.buf, Tally::new(cfg, progress, Some(rt))).await
                }
                Direction::Send => {
                    send_coring(stream, Source::new(cfg, progress, Some(rt)), true).await
                }
            })
        }
        Contender::Tokio => on_tokio(addr, async |stream| match dir {
            Direction::Recv => recv_tokio(stream, cfg.buf, Tally::new(cfg, progress, None)).await,
            Direction::Send => send_tokio(stream, Source::new(cfg, progress, None)).await,
        }),
    }
}

/// A coring runtime on exactly `kind`, a connection to `addr`, and `body` on them.
fn on_coring(
    kind: BackendKind,
    addr: SocketAddr,
    body: impl AsyncFnOnce(&coring::Runtime, coring::net::TcpStream) -> Result<Report, String>,
) -> Result<Report, String> {
    contender::on_coring(kind, async |rt| {
        let stream = coring::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        body(rt, stream).await
    })
}

/// A tokio `current_thread` runtime, a connection to `addr`, and `body` on it.
fn on_tokio(
    addr: SocketAddr,
    body: impl AsyncFnOnce(tokio::net::TcpStream) -> Result<Report, String>,
) -> Result<Report, String> {
    let rt = tokio_runtime().map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        body(stream).await
    })
}

async fn recv_coring(
    stream: coring::net::TcpStream,
    buf_size: usize,
    mut tally: Tally<'_>,
) -> Result<Report, String> {
    let mut buf = Vec::with_capacity(buf_size);
    loop {
        // A read fills the Vec from its start and sets its length to what it read.
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        let n = res.map_err(|e| tally.meter.error("read", e))?;
        if n == 0 {
            break;
        }
        tally.add(&buf[..n])?;
    }
    Ok(tally.meter.finish())
}

async fn recv_tokio(
    mut stream: tokio::net::TcpStream,
    buf_size: usize,
    mut tally: Tally<'_>,
) -> Result<Report, String> {
    let mut buf = vec![0u8; buf_size];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| tally.meter.error("read", e))?;
        if n == 0 {
            break;
        }
        tally.add(&buf[..n])?;
    }
    Ok(tally.meter.finish())
}

async fn send_coring(
    stream: coring::net::TcpStream,
    mut src: Source<'_>,
    zc: bool,
) -> Result<Report, String> {
    let mut buf = Vec::with_capacity(src.chunk);
    src.meter.open();
    while src.next_into(&mut buf) {
        let (res, b) = if zc {
            send_zc_all(&stream, buf).await
        } else {
            stream.write_all(buf).await
        };
        buf = b;
        res.map_err(|e| src.meter.error("write", e))?;
        src.meter.add(buf.len());
    }
    let report = src.meter.finish();
    stream
        .shutdown(Shutdown::Write)
        .await
        .map_err(|e| format!("shutdown: {e}"))?;
    Ok(report)
}

/// `write_all` with zero-copy sends: each resumes where the last (short) one stopped.
async fn send_zc_all(stream: &coring::net::TcpStream, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    use coring::buf::IoBuf;
    let total = buf.len();
    let mut done = 0;
    let mut buf = buf;
    while done < total {
        let (res, slice) = stream.send_zc(buf.slice(done..total)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => done += n,
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

async fn send_tokio(
    mut stream: tokio::net::TcpStream,
    mut src: Source<'_>,
) -> Result<Report, String> {
    let mut buf = Vec::with_capacity(src.chunk);
    src.meter.open();
    while src.next_into(&mut buf) {
        stream
            .write_all(&buf)
            .await
            .map_err(|e| src.meter.error("write", e))?;
        src.meter.add(buf.len());
    }
    let report = src.meter.finish();
    stream
        .shutdown()
        .await
        .map_err(|e| format!("shutdown: {e}"))?;
    Ok(report)
}
