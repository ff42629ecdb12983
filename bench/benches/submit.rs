//! Reaching another core: coring's `PoolHandle::submit_to` (a closure runs on core 1 and
//! its output comes back to core 0) against coring's mailbox ping-pong (`sync::mpsc`
//! between the same two cores, as in the pingpong bench) and against two pinned tokio
//! current_thread runtimes joined by a tokio mpsc carrying the same call (closure plus a
//! tokio oneshot for the reply, a `spawn_local` task per call on the far side).
//!
//! ```text
//! cargo bench -p coring-bench --bench submit                # 100000 calls, 3 runs each
//! cargo bench -p coring-bench --bench submit -- --calls 20000 --runs 5 --window 64
//! ```
//!
//! Per contender (median of the runs, interleaved, the order rotating per round):
//! - round trip: one call from core 0 to core 1 and back, awaited each time (p50 / p99
//!   from an HDR histogram, calls per second);
//! - throughput: `window` calls in flight at once, awaited as a batch, again and again
//!   (calls per second).
//!
//! Side A runs on CPU 0 and side B on CPU 1 (pinned) for every contender.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use coring::Pool;
use coring_bench::args::{self, or_exit, ArgError};
use coring_bench::hist::LatencyHist;
use coring_bench::runs::{fmt_opt, fmt_x, Runs};

/// The longest any one run may take.
const TIMEOUT: Duration = Duration::from_secs(300);

const USAGE: &str = "\
usage: cargo bench -p coring-bench --bench submit -- [options]
  --calls N    calls per run, for the round trips and for the throughput (default 100000)
  --window N   calls in flight at once for the throughput (default 64)
  --runs N     runs per contender, interleaved; the median is reported (default 3)
  -h, --help   this help";

struct Args {
    calls: usize,
    window: usize,
    runs: usize,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, ArgError> {
    let defaults = Args {
        calls: 100_000,
        window: 64,
        runs: 3,
    };
    args::parse(args, defaults, |a, flag, flags| {
        match flag.name.as_str() {
            "--calls" => a.calls = flags.count(flag)?,
            "--window" => a.window = flags.count(flag)?,
            "--runs" => a.runs = flags.count(flag)?,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

/// One run's numbers.
#[derive(Clone, Copy, Debug)]
struct CallResult {
    p50_us: f64,
    p99_us: f64,
    trips_per_s: f64,
    window_calls_per_s: f64,
}

impl fmt::Display for CallResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rtt p50 {:>7.2} µs  p99 {:>7.2} µs  {:>8.0} calls/s  {:>9.0} windowed calls/s",
            self.p50_us, self.p99_us, self.trips_per_s, self.window_calls_per_s
        )
    }
}

/// What a contender measures on side A: `calls` round trips one at a time, then `calls`
/// calls `window` at a time; (latencies, time of the round trips, time of the windowed).
fn result(hist: LatencyHist, trips: Duration, windowed: Duration, calls: usize) -> CallResult {
    CallResult {
        p50_us: hist.quantile_ns(0.50) as f64 / 1000.0,
        p99_us: hist.quantile_ns(0.99) as f64 / 1000.0,
        trips_per_s: calls as f64 / trips.as_secs_f64(),
        window_calls_per_s: calls as f64 / windowed.as_secs_f64(),
    }
}

// ----------------------------------------------------------------------------------------
// coring: submit_to

/// Side A's task on core 0: calls core 1 through the pool handle.
fn coring_submit(pool: &Pool, calls: usize, window: usize) -> CallResult {
    let handle = pool.handle();
    let mut run = pool.spawn_on(0, move || async move {
        let mut hist = LatencyHist::new();
        let start = Instant::now();
        for i in 0..calls as u64 {
            let t = Instant::now();
            let v = handle.submit_to(1, move || async move { i + 1 }).await;
            assert_eq!(v.unwrap(), i + 1);
            hist.record(t.elapsed().as_nanos() as u64);
        }
        let trips = start.elapsed();
        let start = Instant::now();
        let mut done = 0;
        while done < calls {
            let n = window.min(calls - done);
            let batch: Vec<_> = (0..n as u64)
                .map(|i| handle.submit_to(1, move || async move { i }))
                .collect();
            for (i, call) in batch.into_iter().enumerate() {
                assert_eq!(call.await.unwrap(), i as u64);
            }
            done += n;
        }
        result(hist, trips, start.elapsed(), calls)
    });
    run.wait(TIMEOUT).expect("the submit_to run finished")
}

// ----------------------------------------------------------------------------------------
// coring: mailbox ping-pong (sync::mpsc both ways)

fn coring_mailbox(pool: &Pool, calls: usize, window: usize) -> CallResult {
    use coring::sync::mpsc;
    let (to_b, mut from_a) = mpsc::channel::<u64>(window.max(1));
    let (to_a, mut from_b) = mpsc::channel::<u64>(window.max(1));
    let pong = pool.spawn_on(1, move || async move {
        while let Some(v) = from_a.recv().await {
            if to_a.send(v + 1).await.is_err() {
                break;
            }
        }
    });
    let mut run = pool.spawn_on(0, move || async move {
        let mut hist = LatencyHist::new();
        let start = Instant::now();
        for i in 0..calls as u64 {
            let t = Instant::now();
            to_b.send(i).await.unwrap();
            assert_eq!(from_b.recv().await, Some(i + 1));
            hist.record(t.elapsed().as_nanos() as u64);
        }
        let trips = start.elapsed();
        let start = Instant::now();
        let mut done = 0;
        while done < calls {
            let n = window.min(calls - done);
            for i in 0..n as u64 {
                to_b.send(i).await.unwrap();
            }
            for i in 0..n as u64 {
                assert_eq!(from_b.recv().await, Some(i + 1));
            }
            done += n;
        }
        result(hist, trips, start.elapsed(), calls)
    });
    let r = run.wait(TIMEOUT).expect("the mailbox run finished");
    drop(pong);
    r
}

// ----------------------------------------------------------------------------------------
// tokio: two pinned current_thread runtimes, calls over a tokio mpsc

/// A job for one side: builds its (maybe `!Send`) future there.
type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A call to side B: the closure, and where its output goes.
type Call = (
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = u64>>> + Send>,
    tokio::sync::oneshot::Sender<u64>,
);

/// Two tokio current_thread runtimes on threads pinned to CPUs 0 and 1, each running
/// the jobs it is sent as local tasks; side B serves calls from a tokio mpsc.
struct PinnedTokio {
    sides: [tokio::sync::mpsc::UnboundedSender<Job>; 2],
    calls: tokio::sync::mpsc::Sender<Call>,
}

impl PinnedTokio {
    fn new() -> PinnedTokio {
        let start = |cpu: usize| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio current_thread runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    while let Some(job) = rx.recv().await {
                        drop(tokio::task::spawn_local(job()));
                    }
                });
            });
            tx
        };
        let sides = [start(0), start(1)];
        let (calls, mut incoming) = tokio::sync::mpsc::channel::<Call>(1024);
        // Side B's server: a local task per call, as coring's submit_to spawns one.
        sides[1]
            .send(Box::new(move || {
                Box::pin(async move {
                    while let Some((f, reply)) = incoming.recv().await {
                        drop(tokio::task::spawn_local(async move {
                            let _ = reply.send(f().await);
                        }));
                    }
                })
            }))
            .expect("tokio side B runs");
        PinnedTokio { sides, calls }
    }

    /// Calls side B from side A: the closure's output.
    async fn call(calls: &tokio::sync::mpsc::Sender<Call>, v: u64) -> u64 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let f: Call = (Box::new(move || Box::pin(async move { v + 1 })), tx);
        calls.send(f).await.expect("side B serves");
        rx.await.expect("side B replied")
    }

    fn run(&self, calls: usize, window: usize) -> CallResult {
        let (done_tx, done_rx) = std_mpsc::channel();
        let sender = self.calls.clone();
        self.sides[0]
            .send(Box::new(move || {
                Box::pin(async move {
                    let mut hist = LatencyHist::new();
                    let start = Instant::now();
                    for i in 0..calls as u64 {
                        let t = Instant::now();
                        assert_eq!(PinnedTokio::call(&sender, i).await, i + 1);
                        hist.record(t.elapsed().as_nanos() as u64);
                    }
                    let trips = start.elapsed();
                    let start = Instant::now();
                    let mut done = 0;
                    while done < calls {
                        let n = window.min(calls - done);
                        let mut replies = Vec::with_capacity(n);
                        for i in 0..n as u64 {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            let f: Call = (Box::new(move || Box::pin(async move { i })), tx);
                            sender.send(f).await.expect("side B serves");
                            replies.push(rx);
                        }
                        for (i, rx) in replies.into_iter().enumerate() {
                            assert_eq!(rx.await.expect("side B replied"), i as u64);
                        }
                        done += n;
                    }
                    let _ = done_tx.send(result(hist, trips, start.elapsed(), calls));
                })
            }))
            .expect("tokio side A runs");
        done_rx
            .recv_timeout(TIMEOUT)
            .expect("the tokio run finished")
    }
}

// ----------------------------------------------------------------------------------------
// Main

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Submit,
    Mailbox,
    TokioPair,
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Contender::Submit => "coring submit_to",
            Contender::Mailbox => "coring mpsc ping-pong",
            Contender::TokioPair => "tokio 2x1 mpsc call",
        })
    }
}

fn main() {
    let a = or_exit(parse_args(std::env::args().skip(1)), "submit", USAGE);
    let cpus = coring_bench::sys::cpus().len();
    if cpus < 2 {
        println!("submit needs 2 CPUs; this machine has {cpus}");
        return;
    }
    let pool = Pool::builder()
        .cores(2)
        .build()
        .expect("pool of 2 pinned cores");
    let tokio_pair = PinnedTokio::new();
    println!(
        "core 0 -> core 1 calls: {} round trips and {} calls {} at a time per run, {} runs \
         (median)",
        a.calls, a.calls, a.window, a.runs
    );
    println!(
        "coring:  Pool of 2 pinned cores, {}",
        pool.core_info(0).backend_description
    );
    println!("tokio:   two current_thread runtimes pinned to CPUs 0 and 1, tokio::sync::mpsc\n");
    use Contender::*;
    let contenders = [Submit, Mailbox, TokioPair];
    let runs = Runs::interleave(a.runs, &contenders, |c| {
        Ok::<_, String>(match c {
            Submit => coring_submit(&pool, a.calls, a.window),
            Mailbox => coring_mailbox(&pool, a.calls, a.window),
            TokioPair => tokio_pair.run(a.calls, a.window),
        })
    });
    println!(
        "\n{:<22} {:>11} {:>11} {:>11} {:>16} {:>22}",
        "", "rtt p50 µs", "rtt p99 µs", "calls/s", "windowed calls/s", "vs submit_to (rtt/thr)"
    );
    for c in contenders {
        let p50 = runs.paired_ratio(c, Submit, |r| r.p50_us);
        let thr = runs.paired_ratio(c, Submit, |r| r.window_calls_per_s);
        println!(
            "{:<22} {:>11} {:>11} {:>11} {:>16} {:>22}",
            c.to_string(),
            fmt_opt(runs.median(c, |r| r.p50_us), 2),
            fmt_opt(runs.median(c, |r| r.p99_us), 2),
            fmt_opt(runs.median(c, |r| r.trips_per_s), 0),
            fmt_opt(runs.median(c, |r| r.window_calls_per_s), 0),
            format!("{} / {}", fmt_x(p50), fmt_x(thr)),
        );
    }
    pool.shutdown().expect("the pool shuts down");
}
