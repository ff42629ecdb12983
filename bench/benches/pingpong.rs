//! Cross-core ping-pong through channels: coring's `sync::mpsc` between two pinned cores of
//! a `Pool`, against tokio with `tokio::sync::mpsc`.
//!
//! ```text
//! cargo bench -p coring-bench --bench pingpong              # 200000 round trips, 3 runs each
//! cargo bench -p coring-bench --bench pingpong -- --trips 50000 --runs 5
//! ```
//!
//! Contenders: coring (parks in the kernel when idle), coring with `park_spin(50 µs)`,
//! two pinned tokio current_thread runtimes (every message crosses threads, like coring),
//! and tokio's multi-thread runtime (2 workers).
//!
//! Reports, per contender (median of the runs, interleaved, the order rotating per round):
//! - round trip: one message side A -> side B and one back, awaited each time
//!   (p50 / p99 latency from an HDR histogram, round trips per second);
//! - stream: side A sends `trips` messages one way through a 1024-slot channel and side B
//!   receives them (messages per second, from the first send to the last receive).
//!
//! The ping, pong, source and sink tasks are written once, over the two channel APIs
//! (`Tx`, `Rx`); each contender only says where side A and side B run (`Sides`).
//! Tokio's multi-thread scheduler decides where its two tasks run (it may run both on one
//! worker); coring's are pinned to CPUs 0 and 1, so every message crosses cores.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use coring::Pool;
use coring_bench::args::{self, or_exit, ArgError};
use coring_bench::hist::LatencyHist;
use coring_bench::runs::{fmt_opt, Runs};

/// The longest any one task may take.
const TIMEOUT: Duration = Duration::from_secs(300);

const USAGE: &str = "\
usage: cargo bench -p coring-bench --bench pingpong -- [options]
  --trips N    round trips, and stream messages, per run (default 200000)
  --runs N     runs per contender, interleaved; the median is reported (default 3)
  -h, --help   this help";

struct Args {
    trips: usize,
    runs: usize,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, ArgError> {
    let defaults = Args {
        trips: 200_000,
        runs: 3,
    };
    args::parse(args, defaults, |a, flag, flags| {
        match flag.name.as_str() {
            "--trips" => a.trips = flags.count(flag)?,
            "--runs" => a.runs = flags.count(flag)?,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

/// One run's numbers.
#[derive(Clone, Copy, Debug)]
struct PingResult {
    p50_us: f64,
    p99_us: f64,
    trips_per_s: f64,
    stream_msgs_per_s: f64,
}

impl fmt::Display for PingResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rtt p50 {:>7.2} µs  p99 {:>7.2} µs  {:>8.0} round trips/s  {:>9.0} stream msgs/s",
            self.p50_us, self.p99_us, self.trips_per_s, self.stream_msgs_per_s
        )
    }
}

// ----------------------------------------------------------------------------------------
// The tasks, written once

/// The sending end of a channel of `u64`.
trait Tx: Send + 'static {
    /// Sends `v`; false once the receiver is gone.
    fn send(&self, v: u64) -> impl Future<Output = bool> + Send;
}

/// The receiving end of a channel of `u64`.
trait Rx: Send + 'static {
    /// The next value; `None` once every sender is gone.
    fn recv(&mut self) -> impl Future<Output = Option<u64>> + Send;
}

/// A kind of channel.
trait Channel {
    type Tx: Tx;
    type Rx: Rx;
    /// A channel of `cap` slots.
    fn channel(cap: usize) -> (Self::Tx, Self::Rx);
}

/// Side A of the round trips: sends `i`, awaits it back, `trips` times; the latency of each
/// and the time of all.
async fn ping(tx: impl Tx, mut rx: impl Rx, trips: usize) -> (LatencyHist, Duration) {
    let mut hist = LatencyHist::new();
    let start = Instant::now();
    for i in 0..trips as u64 {
        let t = Instant::now();
        assert!(tx.send(i).await, "the pong side went away");
        assert_eq!(rx.recv().await, Some(i));
        hist.record(t.elapsed().as_nanos() as u64);
    }
    (hist, start.elapsed())
}

/// Side B of the round trips: sends back what it receives until the ping side is done.
async fn pong(tx: impl Tx, mut rx: impl Rx) {
    while let Some(v) = rx.recv().await {
        if !tx.send(v).await {
            break;
        }
    }
}

/// Side A of the stream: sends `n` messages; when it started.
async fn source(tx: impl Tx, n: usize) -> Instant {
    let start = Instant::now();
    for i in 0..n as u64 {
        assert!(tx.send(i).await, "the sink went away");
    }
    start
}

/// Side B of the stream: counts messages until the source is done; when it got the last.
async fn sink(mut rx: impl Rx) -> (u64, Instant) {
    let mut n = 0u64;
    while rx.recv().await.is_some() {
        n += 1;
    }
    (n, Instant::now())
}

/// A task for one side: builds its future there (it may hold what cannot cross threads).
type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Where a contender runs its two sides.
trait Sides {
    /// Runs `job`'s future on side `side` (0 or 1), detached.
    fn spawn(&self, side: usize, job: Job);

    /// Starts `make()`'s future on side `side`; the returned closure waits for its output.
    fn start<T, F>(
        &self,
        side: usize,
        make: impl FnOnce() -> F + Send + 'static,
    ) -> impl FnOnce() -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std_mpsc::channel();
        self.spawn(
            side,
            Box::new(move || {
                Box::pin(async move {
                    let _ = tx.send(make().await);
                })
            }),
        );
        move || {
            rx.recv_timeout(TIMEOUT)
                .expect("a ping-pong task finished in time")
        }
    }
}

/// One run on `sides` with channels of kind `C`: the round trips, then the stream.
fn run<C: Channel>(sides: &impl Sides, trips: usize) -> PingResult {
    let ((to_b, from_a), (to_a, from_b)) = (C::channel(1), C::channel(1));
    let ponger = sides.start(1, move || pong(to_a, from_a));
    let pinger = sides.start(0, move || ping(to_b, from_b, trips));
    let (hist, elapsed) = pinger();
    ponger();
    let (tx, rx) = C::channel(1024);
    let sink = sides.start(1, move || sink(rx));
    let source = sides.start(0, move || source(tx, trips));
    let start = source();
    let (n, end) = sink();
    assert_eq!(n, trips as u64);
    let secs = |d: Duration| d.as_secs_f64();
    PingResult {
        p50_us: hist.quantile_ns(0.50) as f64 / 1000.0,
        p99_us: hist.quantile_ns(0.99) as f64 / 1000.0,
        trips_per_s: trips as f64 / secs(elapsed),
        stream_msgs_per_s: trips as f64 / secs(end.duration_since(start)),
    }
}

// ----------------------------------------------------------------------------------------
// coring

/// `Channel`, `Tx` and `Rx` for a bounded mpsc module with tokio's API (`channel(cap)`,
/// `Sender::send(v).await`, `Receiver::recv().await`), which coring's `sync::mpsc` shares.
macro_rules! mpsc_channel {
    ($name:ident, $($module:ident)::+) => {
        struct $name;

        impl Channel for $name {
            type Tx = $($module)::+::Sender<u64>;
            type Rx = $($module)::+::Receiver<u64>;

            fn channel(cap: usize) -> (Self::Tx, Self::Rx) {
                $($module)::+::channel(cap)
            }
        }

        impl Tx for $($module)::+::Sender<u64> {
            async fn send(&self, v: u64) -> bool {
                $($module)::+::Sender::send(self, v).await.is_ok()
            }
        }

        impl Rx for $($module)::+::Receiver<u64> {
            async fn recv(&mut self) -> Option<u64> {
                $($module)::+::Receiver::recv(self).await
            }
        }
    };
}

mpsc_channel!(CoringChannel, coring::sync::mpsc);

/// Side A on the pool's core 0, side B on core 1.
impl Sides for Pool {
    fn spawn(&self, side: usize, job: Job) {
        drop(self.spawn_on(side, job));
    }
}

// ----------------------------------------------------------------------------------------
// tokio

mpsc_channel!(TokioChannel, tokio::sync::mpsc);

/// tokio's multi-thread runtime: its scheduler decides where each side runs.
impl Sides for tokio::runtime::Runtime {
    fn spawn(&self, _side: usize, job: Job) {
        drop(tokio::runtime::Runtime::spawn(self, job()));
    }
}

/// Two tokio current_thread runtimes on two pinned threads: every message crosses threads,
/// as coring's do (the like-for-like comparison for thread-per-core).
struct PinnedTokio {
    sides: [std_mpsc::Sender<Job>; 2],
}

impl PinnedTokio {
    fn new() -> PinnedTokio {
        let start = |cpu: usize| {
            let (tx, rx) = std_mpsc::channel::<Job>();
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio current_thread runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    loop {
                        // Poll the job queue without blocking the runtime thread for long.
                        match rx.try_recv() {
                            Ok(job) => drop(tokio::task::spawn_local(job())),
                            Err(std_mpsc::TryRecvError::Empty) => {
                                tokio::time::sleep(Duration::from_millis(1)).await
                            }
                            Err(_) => return,
                        }
                    }
                });
            });
            tx
        };
        PinnedTokio {
            sides: [start(0), start(1)],
        }
    }
}

impl Sides for PinnedTokio {
    fn spawn(&self, side: usize, job: Job) {
        self.sides[side]
            .send(job)
            .expect("the tokio side thread runs");
    }
}

// ----------------------------------------------------------------------------------------
// Main

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Coring,
    CoringSpin,
    TokioPair,
    TokioMt,
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Contender::Coring => "coring",
            Contender::CoringSpin => "coring+spin",
            Contender::TokioPair => "tokio 2x1",
            Contender::TokioMt => "tokio mt",
        })
    }
}

fn main() {
    let a = or_exit(parse_args(std::env::args().skip(1)), "pingpong", USAGE);
    let cpus = coring_bench::sys::cpus().len();
    if cpus < 2 {
        println!("pingpong needs 2 CPUs; this machine has {cpus}");
        return;
    }
    let pool = Pool::builder()
        .cores(2)
        .build()
        .expect("pool of 2 pinned cores");
    let spin = Pool::builder()
        .cores(2)
        .runtime(coring::Builder::new().park_spin(Duration::from_micros(50)))
        .build()
        .expect("pool of 2 pinned cores");
    let tokio_mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a tokio multi_thread runtime");
    let tokio_pair = PinnedTokio::new();
    println!(
        "cross-core ping-pong, {} round trips and a {}-message stream per run, {} runs (median)",
        a.trips, a.trips, a.runs
    );
    println!(
        "coring:        Pool of 2 pinned cores, coring::sync::mpsc, {}",
        pool.core_info(0).backend_description
    );
    println!("coring+spin:   the same with Builder::park_spin(50 µs)");
    println!(
        "tokio 2x1:     two tokio current_thread runtimes pinned to CPUs 0 and 1, \
         tokio::sync::mpsc"
    );
    println!(
        "tokio mt:      tokio multi_thread, 2 workers (its scheduler may keep both tasks on one)\n"
    );
    use Contender::*;
    let contenders = [Coring, CoringSpin, TokioPair, TokioMt];
    let runs = Runs::interleave(a.runs, &contenders, |c| {
        Ok::<_, String>(match c {
            Coring => run::<CoringChannel>(&pool, a.trips),
            CoringSpin => run::<CoringChannel>(&spin, a.trips),
            TokioPair => run::<TokioChannel>(&tokio_pair, a.trips),
            TokioMt => run::<TokioChannel>(&tokio_mt, a.trips),
        })
    });
    println!(
        "\n{:<13} {:>12} {:>12} {:>16} {:>18}",
        "", "rtt p50 µs", "rtt p99 µs", "round trips/s", "stream msgs/s"
    );
    for c in contenders {
        println!(
            "{:<13} {:>12} {:>12} {:>16} {:>18}",
            c.to_string(),
            fmt_opt(runs.median(c, |r| r.p50_us), 2),
            fmt_opt(runs.median(c, |r| r.p99_us), 2),
            fmt_opt(runs.median(c, |r| r.trips_per_s), 0),
            fmt_opt(runs.median(c, |r| r.stream_msgs_per_s), 0),
        );
    }
    pool.shutdown().expect("the pool shuts down");
    spin.shutdown().expect("the pool shuts down");
}
