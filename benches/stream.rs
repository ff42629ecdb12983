//! Bulk TCP receive: throughput and receiver CPU per GiB, coring (io_uring and fallback
//! backends) against tokio's `current_thread` runtime, in one process, interleaved, each
//! measurement repeated (default 3 times) and the median reported.
//!
//! **Why.** On io_uring, coring reads a stream through one multishot receive per stream:
//! the kernel lands each arrival in a shared 4 KiB provided buffer, and every `read` copies
//! the oldest arrival (at most 4 KiB) into the caller's buffer. For request/response
//! traffic that saves a failed receive and a poll per read; for a bulk stream it costs a
//! second copy of every byte and a read call per 4 KiB, where a plain `recv` (the fallback
//! backend, tokio) lands up to the caller's whole buffer (default 64 KiB) at once, straight
//! from the socket. This benchmark shows that difference, and whatever a fix makes of it.
//!
//! **How.** Each run is one loopback connection (127.0.0.1):
//! - the **sender**, the same for every contender: a plain std thread pinned to the second
//!   CPU that accepts one connection on a `std::net::TcpListener`, `write_all`s `--mb` MiB
//!   (default 2048) in 256 KiB chunks, then closes;
//! - the **receiver**, on its own thread pinned to the first CPU, in a fresh runtime:
//!   coring on io_uring, coring on the fallback backend (epoll), or tokio `current_thread`.
//!   It connects, then reads until EOF with an owned buffer of `--buf` bytes (default
//!   65536): coring `stream.read(buf)` with a `Vec::with_capacity(buf)` cleared before each
//!   read, tokio `AsyncReadExt::read` into a `vec![0; buf]`.
//!
//! The receiver measures from its first byte to EOF: wall time, its own thread CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`, read on the receiver thread at both edges) and its read
//! calls. Reported: MiB/s, receiver CPU seconds per GiB, bytes per read, and the ratio of
//! each coring contender's CPU/GiB to tokio's (ratio of medians, and the median of
//! same-round ratios, "paired"). The sender's CPU per GiB is shown too: on loopback the
//! sending thread also runs much of the TCP receive processing (each packet is delivered
//! in its context, unless the receiver holds the socket at that moment), so the receiver's
//! CPU is mostly the copy to user space and the per-read cost of its runtime.
//!
//! Every run must deliver exactly the bytes sent, or it fails. The content is spot-checked:
//! the byte at stream offset `o` is `o % 251`, and each read's first and last bytes are
//! compared (two loads per read, the same for every contender, so that a lost, repeated or
//! reordered chunk shows up without a full comparison adding to the receiver's CPU);
//! `--verify` compares every byte instead. A run that makes no progress for 30 s fails the
//! program with a message rather than hang.
//!
//! No timing is asserted; the machine this runs on may be shared and noisy, which is why
//! runs are interleaved and medians are shown, with each run's value beside them.
//!
//! ```text
//! cargo bench --bench stream
//! cargo bench --bench stream -- --buf 16384 --mb 4096 --reps 5
//! cargo bench --bench stream -- --only io_uring --reps 1 --mb 8192   # for perf
//! ```

use std::env;
use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::process;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use coring::{BackendKind, Metrics};

#[path = "common/args.rs"]
mod args;
#[path = "common/runs.rs"]
mod runs;
use args::Flags;
use runs::{
    backend_usable, core_name, coring_runtime, cpu_clock, fmt_opt, fmt_ratio, fmt_x, pin,
    reject_backend_override, tokio_runtime, usable_cores, Runs, ThreadUsage,
};
use tokio::io::AsyncReadExt;

/// Bytes per sender `write_all`.
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
usage: cargo bench --bench stream -- [options]
  --mb N          MiB the sender writes per run (default 2048)
  --buf BYTES     the receiver's read buffer (default 65536)
  --reps N        runs per contender, interleaved; the median is reported (default 3)
  --only LIST     receivers to run, a comma list of io_uring, fallback and tokio
                  (default all three)
  --verify        check every received byte (default: the first and last byte of each
                  read); costs receiver CPU, the same for every contender
  -h, --help      this help

The sender (std, blocking, 256 KiB write_all) runs on the second CPU, the receiver on the
first. The CORING_BACKEND environment variable must not be set: it would override the
backend each coring contender asks for.";

// ----------------------------------------------------------------------------------------
// Command line

#[derive(Debug, Clone)]
struct Config {
    mb: u64,
    buf: usize,
    reps: usize,
    contenders: Vec<Contender>,
    verify: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mb: 2048,
            buf: 65536,
            reps: 3,
            contenders: ALL.to_vec(),
            verify: false,
        }
    }
}

impl Config {
    fn total_bytes(&self) -> u64 {
        self.mb << 20
    }
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("stream: {msg}\n{USAGE}");
    process::exit(2);
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Config {
    let mut cfg = Config::default();
    let mut flags = Flags::new(args, USAGE, usage_exit);
    while let Some((flag, inline)) = flags.next_flag() {
        match flag.as_str() {
            "--verify" => cfg.verify = true,
            "--mb" => {
                cfg.mb = flags.count(&flag, inline) as u64;
                if cfg.mb > 1 << 20 {
                    usage_exit("--mb takes at most 1048576 (1 TiB)");
                }
            }
            "--buf" => {
                cfg.buf = flags.count(&flag, inline);
                if cfg.buf > 1 << 30 {
                    usage_exit("--buf takes at most 1073741824 (1 GiB)");
                }
            }
            "--reps" => cfg.reps = flags.count(&flag, inline),
            "--only" => cfg.contenders = parse_contenders(&flags.value(&flag, inline)),
            _ => usage_exit(&format!("unknown argument '{flag}'")),
        }
    }
    cfg
}

/// The receivers named in `list`, in the usual order (io_uring, fallback, tokio).
fn parse_contenders(list: &str) -> Vec<Contender> {
    let mut wanted = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let c = if name.eq_ignore_ascii_case("tokio") {
            Contender::Tokio
        } else {
            match BackendKind::parse(name) {
                Ok(k @ (BackendKind::IoUring | BackendKind::Fallback)) => Contender::Coring(k),
                _ => usage_exit(&format!(
                    "--only takes io_uring, fallback and/or tokio, not '{name}'"
                )),
            }
        };
        wanted.push(c);
    }
    if wanted.is_empty() {
        usage_exit("--only needs at least one of io_uring, fallback and tokio");
    }
    ALL.iter().copied().filter(|c| wanted.contains(c)).collect()
}

// ----------------------------------------------------------------------------------------
// Main

fn main() {
    let mut cfg = parse_args(env::args().skip(1));
    reject_backend_override(usage_exit, "--only");
    cfg.contenders.retain(|&c| match c {
        Contender::Coring(kind) => backend_usable("stream", kind),
        Contender::Tokio => true,
    });
    if cfg.contenders.is_empty() {
        eprintln!("stream: no receiver left to run");
        process::exit(1);
    }
    let cores = usable_cores(
        "stream",
        "the sender and the receiver",
        "MiB/s and CPU per GiB",
    );
    let recv_core = cores.first().copied();
    let send_core = cores.get(1).copied();
    println!(
        "stream: {} MiB per run over loopback TCP, {}; receiver reads into a {} B buffer on \
         {}, sender (std thread, {} KiB write_all, the same for every receiver) on {}",
        cfg.mb,
        if cfg.verify {
            "every byte checked"
        } else {
            "first and last byte of each read checked"
        },
        cfg.buf,
        core_name(recv_core),
        CHUNK / 1024,
        core_name(send_core)
    );
    println!(
        "{} run(s) per contender, interleaved, medians shown\n",
        cfg.reps
    );
    let runs = Runs::interleave(cfg.reps, &cfg.contenders, |c| {
        run_stream(c, &cfg, recv_core, send_core)
    });
    print_table(&cfg, &runs);
    if runs.failed {
        eprintln!("stream: FAILED: see the errors above");
        process::exit(1);
    }
}

fn print_table(cfg: &Config, runs: &Runs<Contender, StreamResult>) {
    let cpu = |r: &StreamResult| r.recv_cpu_per_gib;
    let tokio_cpu = runs.median(Contender::Tokio, cpu);
    println!(
        "\n{:<22} {:>7} {:>10} {:>9} {:>9} {:>8} {:>10} {:>7}   recv CPU s/GiB of each run",
        "receiver", "MiB/s", "CPU s/GiB", "vs tokio", "(paired)", "B/read", "send s/GiB", "wait ms"
    );
    for &c in &cfg.contenders {
        let med = runs.median(c, cpu);
        println!(
            "{:<22} {:>7} {:>10} {:>9} {:>9} {:>8} {:>10} {:>7}   {}",
            c.to_string(),
            fmt_opt(runs.median(c, |r| r.mib_per_sec), 0),
            fmt_opt(med, 3),
            fmt_ratio(med, tokio_cpu),
            fmt_x(runs.paired_ratio(c, Contender::Tokio, cpu)),
            fmt_opt(runs.median(c, |r| r.bytes_per_read), 0),
            fmt_opt(runs.median(c, |r| r.send_cpu_per_gib), 3),
            fmt_opt(
                runs.median(c, |r| r.recv_run_wait_ms.unwrap_or(f64::NAN)),
                0
            ),
            runs.each(c, 3, cpu),
        );
    }
    println!(
        "(CPU s/GiB: the receiver thread's CPU seconds per GiB received; vs tokio: ratio of \
         medians; paired: median of same-round ratios; send s/GiB: the sender thread's, which \
         on loopback includes much of the TCP receive processing; wait ms: time the receiver \
         was runnable but waited for a CPU, i.e. other load)"
    );
    if tokio_cpu.is_some() {
        for kind in [BackendKind::IoUring, BackendKind::Fallback] {
            let c = Contender::Coring(kind);
            if let Some(med) = runs.median(c, cpu) {
                println!(
                    "coring {kind} receiver CPU per GiB vs tokio current_thread: {} (paired {})",
                    fmt_ratio(Some(med), tokio_cpu),
                    fmt_x(runs.paired_ratio(c, Contender::Tokio, cpu)),
                );
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// One run

/// A receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Coring(BackendKind),
    Tokio,
}

/// Every receiver, in the order they are listed.
const ALL: [Contender; 3] = [
    Contender::Coring(BackendKind::IoUring),
    Contender::Coring(BackendKind::Fallback),
    Contender::Tokio,
];

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contender::Coring(kind) => f.pad(&format!("coring {kind}")),
            Contender::Tokio => f.pad("tokio current_thread"),
        }
    }
}

/// Bytes moved so far in a run, for the watchdog; `abort` tells the sender to stop waiting
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

/// What the sender thread reports.
struct SendReport {
    bytes: u64,
    cpu: Option<Duration>,
}

/// What the receiver thread reports: totals over the whole stream, and the measured window
/// (from just after the first read that returned data to EOF).
struct RecvReport {
    total_bytes: u64,
    window_bytes: u64,
    window_reads: u64,
    wall: Duration,
    usage: ThreadUsage,
    /// coring only: the runtime's counters over the window.
    metrics: Option<Metrics>,
}

/// One run's numbers.
struct StreamResult {
    mib_per_sec: f64,
    recv_cpu_per_gib: f64,
    send_cpu_per_gib: f64,
    /// The receiver thread's share of one CPU over the window.
    recv_cpu_share: f64,
    reads: u64,
    bytes_per_read: f64,
    recv_run_wait_ms: Option<f64>,
    metrics: Option<Metrics>,
}

impl fmt::Display for StreamResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>6.0} MiB/s  recv {:.3} s/GiB ({:>3.0}% CPU)  {} reads, {:.0} B/read  send {:.3} \
             s/GiB",
            self.mib_per_sec,
            self.recv_cpu_per_gib,
            self.recv_cpu_share * 100.0,
            self.reads,
            self.bytes_per_read,
            self.send_cpu_per_gib,
        )?;
        if let Some(m) = self.metrics {
            let reads = self.reads.max(1) as f64;
            write!(
                f,
                "  {:.2} ops/read {:.2} enters/read, {} multishot throttled",
                m.ops_submitted as f64 / reads,
                m.enters as f64 / reads,
                m.multishot_throttled
            )?;
        }
        if let Some(w) = self.recv_run_wait_ms {
            write!(f, "  waited {w:.0} ms for CPU")?;
        }
        Ok(())
    }
}

/// One run: the sender on `send_core`, receiver `c` on `recv_core`.
fn run_stream(
    c: Contender,
    cfg: &Config,
    recv_core: Option<core_affinity::CoreId>,
    send_core: Option<core_affinity::CoreId>,
) -> Result<StreamResult, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("sender: bind 127.0.0.1:0: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("sender: local_addr: {e}"))?;
    let total = cfg.total_bytes();
    let progress = Arc::new(Progress::default());

    let (send_tx, send_rx) = mpsc::channel();
    let p = progress.clone();
    let sender = thread::Builder::new()
        .name("stream-send".into())
        .spawn(move || {
            pin(send_core);
            let _ = send_tx.send(send(listener, total, &p));
        })
        .map_err(|e| format!("cannot start the sender thread: {e}"))?;

    let (recv_tx, recv_rx) = mpsc::channel();
    let (p, buf, verify) = (progress.clone(), cfg.buf, cfg.verify);
    let receiver = thread::Builder::new()
        .name("stream-recv".into())
        .spawn(move || {
            pin(recv_core);
            let tally = Tally::new(buf, verify, &p.received);
            let res = match c {
                Contender::Coring(kind) => recv_coring(kind, addr, buf, tally),
                Contender::Tokio => recv_tokio(addr, buf, tally),
            };
            let _ = recv_tx.send(res);
        });
    let receiver = match receiver {
        Ok(t) => t,
        Err(e) => {
            progress.abort.store(true, Ordering::Relaxed);
            let _ = sender.join();
            return Err(format!("cannot start the receiver thread: {e}"));
        }
    };

    let recv = watch(&recv_rx, &progress, total, "the receiver");
    if recv.is_err() {
        // The sender may still wait for the connection.
        progress.abort.store(true, Ordering::Relaxed);
    }
    let sent = watch(&send_rx, &progress, total, "the sender");
    receiver
        .join()
        .map_err(|_| "the receiver thread panicked".to_string())?;
    sender
        .join()
        .map_err(|_| "the sender thread panicked".to_string())?;
    let (recv, sent) = match (recv, sent) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(r), Err(s)) => return Err(format!("receiver: {r}; sender: {s}")),
        (Err(r), _) => return Err(format!("receiver: {r}")),
        (_, Err(s)) => return Err(format!("sender: {s}")),
    };
    if recv.total_bytes != sent.bytes || sent.bytes != total {
        return Err(format!(
            "the receiver got {} bytes, the sender wrote {} of {total}",
            recv.total_bytes, sent.bytes
        ));
    }
    if recv.window_bytes == 0 {
        return Err(format!(
            "all {total} bytes came in the first read, so nothing was timed; raise --mb"
        ));
    }
    let cpu = recv
        .usage
        .cpu
        .ok_or("CLOCK_THREAD_CPUTIME_ID is unavailable")?
        .as_secs_f64();
    let wall = recv.wall.as_secs_f64();
    let window = recv.window_bytes as f64;
    Ok(StreamResult {
        mib_per_sec: window / MIB / wall,
        recv_cpu_per_gib: cpu * GIB / window,
        send_cpu_per_gib: sent
            .cpu
            .map_or(f64::NAN, |c| c.as_secs_f64() * GIB / total as f64),
        recv_cpu_share: cpu / wall,
        reads: recv.window_reads,
        bytes_per_read: window / recv.window_reads as f64,
        recv_run_wait_ms: recv.usage.run_wait.map(|w| w.as_secs_f64() * 1000.0),
        metrics: recv.metrics,
    })
}

/// Waits for a thread's answer while bytes keep moving; exits the program when nothing has
/// moved for `STALL` (a receiver stuck in its runtime cannot be interrupted from here).
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
// Sender

/// `PERIOD` bytes more than a chunk of the stream's content, so that the chunk starting at
/// any offset is a slice of it.
fn pattern(len: usize) -> Vec<u8> {
    (0..len + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

/// Accepts one connection (giving up after `STALL`, or when told to), writes `total` bytes
/// of the pattern in `CHUNK`s, and closes.
fn send(listener: TcpListener, total: u64, progress: &Progress) -> Result<SendReport, String> {
    let pat = pattern(CHUNK);
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let deadline = Instant::now() + STALL;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if progress.abort.load(Ordering::Relaxed) {
                    return Err("the receiver gave up before connecting".to_string());
                }
                if Instant::now() >= deadline {
                    return Err(format!("no connection within {STALL:?}"));
                }
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    drop(listener);
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(STALL)));
    setup.map_err(|e| format!("socket setup: {e}"))?;
    let cpu0 = cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID);
    let mut sent = 0u64;
    while sent < total {
        let len = (total - sent).min(CHUNK as u64) as usize;
        let phase = (sent % PERIOD as u64) as usize;
        stream
            .write_all(&pat[phase..phase + len])
            .map_err(|e| format!("write after {sent} bytes: {e}"))?;
        sent += len as u64;
        progress.sent.store(sent, Ordering::Relaxed);
    }
    let cpu = cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
        .zip(cpu0)
        .map(|(b, a)| b.saturating_sub(a));
    // The receiver never writes, so the close sends a FIN after the data, not a reset.
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    Ok(SendReport { bytes: sent, cpu })
}

// ----------------------------------------------------------------------------------------
// Receivers

/// What every receiver does with each read's data, identically: counts it, checks it
/// against the pattern, publishes the count for the watchdog, and opens the measured window
/// after the first read.
struct Tally<'a> {
    offset: u64,
    reads: u64,
    verify: bool,
    /// With `verify`: the pattern, `PERIOD` bytes longer than the buffer.
    pattern: Vec<u8>,
    received: &'a AtomicU64,
    /// The window's opening edge: when, the thread's usage, bytes and reads until then.
    start: Option<(Instant, ThreadUsage, u64, u64)>,
}

impl<'a> Tally<'a> {
    fn new(buf: usize, verify: bool, received: &'a AtomicU64) -> Tally<'a> {
        Tally {
            offset: 0,
            reads: 0,
            verify,
            pattern: if verify { pattern(buf) } else { Vec::new() },
            received,
            start: None,
        }
    }

    /// Records a read that returned `data` (not empty).
    fn add(&mut self, data: &[u8]) -> Result<(), String> {
        let n = data.len();
        let phase = (self.offset % PERIOD as u64) as usize;
        let ok = if self.verify {
            data == &self.pattern[phase..phase + n]
        } else {
            data[0] == phase as u8 && data[n - 1] == ((phase + n - 1) % PERIOD) as u8
        };
        if !ok {
            return Err(format!(
                "wrong data in the {n} bytes read at stream offset {}",
                self.offset
            ));
        }
        self.offset += n as u64;
        self.reads += 1;
        self.received.store(self.offset, Ordering::Relaxed);
        if self.start.is_none() {
            self.start = Some((Instant::now(), ThreadUsage::now(), self.offset, self.reads));
        }
        Ok(())
    }

    /// Closes the window at EOF.
    fn finish(self, metrics: Option<Metrics>) -> RecvReport {
        let (at, usage, bytes, reads) = self
            .start
            .unwrap_or_else(|| (Instant::now(), ThreadUsage::now(), self.offset, self.reads));
        RecvReport {
            total_bytes: self.offset,
            window_bytes: self.offset - bytes,
            window_reads: self.reads - reads,
            wall: at.elapsed(),
            usage: ThreadUsage::now().since(usage),
            metrics,
        }
    }

    fn started(&self) -> bool {
        self.start.is_some()
    }
}

fn recv_coring(
    kind: BackendKind,
    addr: SocketAddr,
    buf_size: usize,
    mut tally: Tally<'_>,
) -> Result<RecvReport, String> {
    let rt = coring_runtime(kind).map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let stream = coring::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut m0 = None;
        let mut buf = Vec::with_capacity(buf_size);
        loop {
            // A read fills the Vec from its start and sets its length to what it read.
            buf.clear();
            let (res, b) = stream.read(buf).await;
            buf = b;
            let n = res.map_err(|e| format!("read after {} bytes: {e}", tally.offset))?;
            if n == 0 {
                break;
            }
            let first = !tally.started();
            tally.add(&buf[..n])?;
            if first {
                m0 = Some(rt.metrics());
            }
        }
        let metrics = m0.map(|m0| metrics_since(rt.metrics(), m0));
        Ok(tally.finish(metrics))
    })
}

fn recv_tokio(
    addr: SocketAddr,
    buf_size: usize,
    mut tally: Tally<'_>,
) -> Result<RecvReport, String> {
    let rt = tokio_runtime().map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut buf = vec![0u8; buf_size];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read after {} bytes: {e}", tally.offset))?;
            if n == 0 {
                break;
            }
            tally.add(&buf[..n])?;
        }
        Ok(tally.finish(None))
    })
}

/// The counters that matter here, from `m0` to `m1`.
fn metrics_since(m1: Metrics, m0: Metrics) -> Metrics {
    Metrics {
        enters: m1.enters - m0.enters,
        ops_submitted: m1.ops_submitted - m0.ops_submitted,
        multishot_throttled: m1.multishot_throttled - m0.multishot_throttled,
        ..Metrics::default()
    }
}
