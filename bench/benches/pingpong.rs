//! Cross-core ping-pong through channels: coring's `sync::mpsc` between two pinned cores of
//! a `Pool`, against tokio's multi-thread runtime (2 workers) with `tokio::sync::mpsc`.
//!
//! ```text
//! cargo bench --bench pingpong                  # defaults: 200000 round trips, 3 runs each
//! cargo bench --bench pingpong -- --trips 50000 --runs 5
//! ```
//!
//! Contenders: coring (parks in the kernel when idle), coring with `park_spin(50 µs)`,
//! two pinned tokio current_thread runtimes (every message crosses threads, like coring),
//! and tokio's multi-thread runtime.
//!
//! Reports, per contender (median of the runs, interleaved):
//! - round trip: one message core 0 -> core 1 and one back, awaited each time
//!   (p50 / p99 latency, round trips per second);
//! - stream: core 0 sends `trips` messages one way through a 1024-slot channel and core 1
//!   receives them (messages per second).
//!
//! Tokio's scheduler decides where its two tasks run (it may run both on one worker);
//! coring's are pinned to CPUs 0 and 1, so every message crosses cores.

use std::time::{Duration, Instant};

use coring::sync::mpsc;
use coring::Pool;

struct Args {
    trips: usize,
    runs: usize,
}

fn args() -> Args {
    let mut a = Args {
        trips: 200_000,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        match f.as_str() {
            "--trips" => a.trips = it.next().and_then(|v| v.parse().ok()).expect("--trips N"),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--bench" => {}
            other => panic!("unknown argument {other}; use --trips N --runs N"),
        }
    }
    a
}

#[derive(Clone, Copy, Debug, Default)]
struct Result {
    p50_us: f64,
    p99_us: f64,
    trips_per_s: f64,
    stream_msgs_per_s: f64,
}

fn percentiles(mut lat: Vec<u64>) -> (f64, f64) {
    lat.sort_unstable();
    let at = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

fn coring_run(pool: &Pool, trips: usize) -> Result {
    let (to_b, mut from_a) = mpsc::channel::<u64>(1);
    let (to_a, mut from_b) = mpsc::channel::<u64>(1);
    let ponger = pool.spawn_on(1, move || async move {
        while let Some(v) = from_a.recv().await {
            if to_a.send(v).await.is_err() {
                break;
            }
        }
    });
    let pinger = pool.spawn_on(0, move || async move {
        let mut lat = Vec::with_capacity(trips);
        let start = Instant::now();
        for i in 0..trips as u64 {
            let t = Instant::now();
            to_b.send(i).await.unwrap();
            assert_eq!(from_b.recv().await, Some(i));
            lat.push(t.elapsed().as_nanos() as u64);
        }
        (lat, start.elapsed())
    });
    let (lat, elapsed) = pinger.wait(Duration::from_secs(300)).unwrap();
    ponger.wait(Duration::from_secs(30)).unwrap();
    let (tx, mut rx) = mpsc::channel::<u64>(1024);
    let sink = pool.spawn_on(1, move || async move {
        let mut n = 0u64;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let source = pool.spawn_on(0, move || async move {
        let start = Instant::now();
        for i in 0..trips as u64 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        start
    });
    let start = source.wait(Duration::from_secs(300)).unwrap();
    let n = sink.wait(Duration::from_secs(300)).unwrap();
    let stream = start.elapsed();
    assert_eq!(n, trips as u64);
    let (p50, p99) = percentiles(lat);
    Result {
        p50_us: p50,
        p99_us: p99,
        trips_per_s: trips as f64 / elapsed.as_secs_f64(),
        stream_msgs_per_s: trips as f64 / stream.as_secs_f64(),
    }
}

fn tokio_run(rt: &tokio::runtime::Runtime, trips: usize) -> Result {
    rt.block_on(async move {
        let (to_b, mut from_a) = tokio::sync::mpsc::channel::<u64>(1);
        let (to_a, mut from_b) = tokio::sync::mpsc::channel::<u64>(1);
        let ponger = tokio::spawn(async move {
            while let Some(v) = from_a.recv().await {
                if to_a.send(v).await.is_err() {
                    break;
                }
            }
        });
        let pinger = tokio::spawn(async move {
            let mut lat = Vec::with_capacity(trips);
            let start = Instant::now();
            for i in 0..trips as u64 {
                let t = Instant::now();
                to_b.send(i).await.unwrap();
                assert_eq!(from_b.recv().await, Some(i));
                lat.push(t.elapsed().as_nanos() as u64);
            }
            (lat, start.elapsed())
        });
        let (lat, elapsed) = pinger.await.unwrap();
        ponger.await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1024);
        let sink = tokio::spawn(async move {
            let mut n = 0u64;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        let start = Instant::now();
        let source = tokio::spawn(async move {
            for i in 0..trips as u64 {
                tx.send(i).await.unwrap();
            }
        });
        source.await.unwrap();
        let n = sink.await.unwrap();
        let stream = start.elapsed();
        assert_eq!(n, trips as u64);
        let (p50, p99) = percentiles(lat);
        Result {
            p50_us: p50,
            p99_us: p99,
            trips_per_s: trips as f64 / elapsed.as_secs_f64(),
            stream_msgs_per_s: trips as f64 / stream.as_secs_f64(),
        }
    })
}

/// Two tokio current_thread runtimes on two pinned threads: every message crosses threads,
/// as coring's do (the like-for-like comparison for thread-per-core).
struct TokioPair {
    a: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
    b: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl TokioPair {
    fn new() -> TokioPair {
        let start = |cpu: usize| {
            let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    loop {
                        // Poll the job queue without blocking the runtime thread for long.
                        match rx.try_recv() {
                            Ok(job) => job(),
                            Err(std::sync::mpsc::TryRecvError::Empty) => {
                                tokio::time::sleep(Duration::from_millis(1)).await
                            }
                            Err(_) => return,
                        }
                    }
                });
            });
            tx
        };
        TokioPair {
            a: start(0),
            b: start(1),
        }
    }

    fn run(&self, trips: usize) -> Result {
        let (to_b, mut from_a) = tokio::sync::mpsc::channel::<u64>(1);
        let (to_a, mut from_b) = tokio::sync::mpsc::channel::<u64>(1);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.b
            .send(Box::new(move || {
                tokio::task::spawn_local(async move {
                    while let Some(v) = from_a.recv().await {
                        if to_a.send(v).await.is_err() {
                            break;
                        }
                    }
                });
            }))
            .unwrap();
        self.a
            .send(Box::new(move || {
                tokio::task::spawn_local(async move {
                    let mut lat = Vec::with_capacity(trips);
                    let start = Instant::now();
                    for i in 0..trips as u64 {
                        let t = Instant::now();
                        to_b.send(i).await.unwrap();
                        assert_eq!(from_b.recv().await, Some(i));
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    let _ = done_tx.send((lat, start.elapsed()));
                });
            }))
            .unwrap();
        let (lat, elapsed) = done_rx.recv_timeout(Duration::from_secs(300)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1024);
        let (n_tx, n_rx) = std::sync::mpsc::channel();
        self.b
            .send(Box::new(move || {
                tokio::task::spawn_local(async move {
                    let mut n = 0u64;
                    while rx.recv().await.is_some() {
                        n += 1;
                    }
                    let _ = n_tx.send(n);
                });
            }))
            .unwrap();
        let start = Instant::now();
        self.a
            .send(Box::new(move || {
                tokio::task::spawn_local(async move {
                    for i in 0..trips as u64 {
                        tx.send(i).await.unwrap();
                    }
                });
            }))
            .unwrap();
        let n = n_rx.recv_timeout(Duration::from_secs(300)).unwrap();
        let stream = start.elapsed();
        assert_eq!(n, trips as u64);
        let (p50, p99) = percentiles(lat);
        Result {
            p50_us: p50,
            p99_us: p99,
            trips_per_s: trips as f64 / elapsed.as_secs_f64(),
            stream_msgs_per_s: trips as f64 / stream.as_secs_f64(),
        }
    }
}

fn median(mut v: Vec<Result>) -> Result {
    let mid = v.len() / 2;
    let pick = |v: &mut Vec<Result>, f: fn(&Result) -> f64| {
        v.sort_by(|a, b| f(a).total_cmp(&f(b)));
        f(&v[mid])
    };
    Result {
        p50_us: pick(&mut v, |r| r.p50_us),
        p99_us: pick(&mut v, |r| r.p99_us),
        trips_per_s: pick(&mut v, |r| r.trips_per_s),
        stream_msgs_per_s: pick(&mut v, |r| r.stream_msgs_per_s),
    }
}

fn main() {
    let a = args();
    let cpus = core_affinity::get_core_ids().map_or(0, |c| c.len());
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
        .unwrap();
    let tokio_pair = TokioPair::new();
    println!(
        "cross-core ping-pong, {} round trips and a {}-message stream per run, {} runs (median)",
        a.trips, a.trips, a.runs
    );
    println!(
        "coring:        Pool of 2 pinned cores, coring::sync::mpsc, {}",
        pool.core_info(0).backend_description
    );
    println!("coring+spin:   the same with Builder::park_spin(50 µs)");
    println!("tokio 2x1:     two tokio current_thread runtimes pinned to CPUs 0 and 1, tokio::sync::mpsc");
    println!(
        "tokio mt:      tokio multi_thread, 2 workers (its scheduler may keep both tasks on one)\n"
    );
    let mut rows: Vec<(&str, Vec<Result>)> = vec![
        ("coring", Vec::new()),
        ("coring+spin", Vec::new()),
        ("tokio 2x1", Vec::new()),
        ("tokio mt", Vec::new()),
    ];
    for _ in 0..a.runs {
        rows[0].1.push(coring_run(&pool, a.trips));
        rows[1].1.push(coring_run(&spin, a.trips));
        rows[2].1.push(tokio_pair.run(a.trips));
        rows[3].1.push(tokio_run(&tokio_mt, a.trips));
    }
    println!(
        "{:<13} {:>12} {:>12} {:>16} {:>18}",
        "", "rtt p50 µs", "rtt p99 µs", "round trips/s", "stream msgs/s"
    );
    for (name, runs) in rows {
        let r = median(runs);
        println!(
            "{name:<13} {:>12.2} {:>12.2} {:>16.0} {:>18.0}",
            r.p50_us, r.p99_us, r.trips_per_s, r.stream_msgs_per_s
        );
    }
    pool.shutdown().unwrap();
    spin.shutdown().unwrap();
}
