//! Blocking pool behaviour: results, the thread bound, idle exit, panics, drop.
//!
//! Every wait is bounded; something that does not happen fails with a message
//! instead of hanging. No assertion depends on how fast the machine is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use coring_fallback::BlockingPool;

/// Upper bound on any wait for something that must happen.
const BOUND: Duration = Duration::from_secs(10);

/// Receives one message, failing with `what` after [`BOUND`].
fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|err| panic!("{what}: nothing received within {BOUND:?} ({err})"))
}

/// Polls `condition` until it holds, failing with `what` after [`BOUND`].
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} within {BOUND:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Spawns `n` jobs that each announce themselves and then block until released
/// (or [`BOUND`] passes). Returns the release senders: drop them to release.
fn spawn_blockers(pool: &BlockingPool, n: usize, started: &Sender<()>) -> Vec<Sender<()>> {
    (0..n)
        .map(|_| {
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let started = started.clone();
            pool.spawn(move || {
                started.send(()).expect("the test waits for this");
                // Ends on release (the sender is dropped) or after BOUND.
                let _released = release_rx.recv_timeout(BOUND);
            })
            .expect("spawn");
            release_tx
        })
        .collect()
}

#[test]
fn runs_1000_jobs_within_max_threads() {
    const MAX: usize = 4;
    let pool = BlockingPool::new(MAX, Duration::from_secs(5));
    assert_eq!(pool.threads(), 0, "threads start lazily");
    assert_eq!(pool.max_threads(), MAX);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    for i in 0..1000usize {
        let (running, peak, tx) = (Arc::clone(&running), Arc::clone(&peak), tx.clone());
        pool.spawn(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            if i % 100 == 0 {
                thread::sleep(Duration::from_millis(1));
            } else {
                thread::yield_now();
            }
            running.fetch_sub(1, Ordering::SeqCst);
            tx.send(i * 2).expect("the test receives every result");
        })
        .expect("spawn");
        assert!(pool.threads() <= MAX, "{} threads alive", pool.threads());
    }
    drop(tx);

    let mut seen = vec![false; 1000];
    for _ in 0..1000 {
        let value = recv(&rx, "a job result");
        assert!(!seen[value / 2], "result {value} received twice");
        seen[value / 2] = true;
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (1..=MAX).contains(&peak),
        "{peak} jobs ran at once with max_threads = {MAX}"
    );
    assert!(pool.threads() <= MAX, "{} threads alive", pool.threads());
}

#[test]
fn starts_threads_up_to_the_bound_for_blocked_jobs() {
    const MAX: usize = 3;
    let pool = BlockingPool::new(MAX, Duration::from_secs(10));
    let (started_tx, started_rx) = mpsc::channel();
    let release = spawn_blockers(&pool, MAX, &started_tx);
    for _ in 0..MAX {
        recv(
            &started_rx,
            "a blocked job started: the pool did not grow to max_threads",
        );
    }
    assert_eq!(pool.threads(), MAX);

    // One more job waits in the queue instead of growing the pool.
    let (done_tx, done_rx) = mpsc::channel();
    pool.spawn(move || done_tx.send(()).expect("the test waits for this"))
        .expect("spawn");
    assert_eq!(pool.threads(), MAX, "the pool grew past max_threads");
    assert!(
        done_rx.try_recv().is_err(),
        "a job ran although every thread was blocked"
    );
    drop(release);
    recv(
        &done_rx,
        "the queued job ran after the blockers were released",
    );
}

#[test]
fn idle_threads_exit_after_the_idle_timeout() {
    let pool = BlockingPool::new(3, Duration::from_millis(50));
    let (started_tx, started_rx) = mpsc::channel();
    let release = spawn_blockers(&pool, 3, &started_tx);
    for _ in 0..3 {
        recv(&started_rx, "a blocked job started");
    }
    assert_eq!(pool.threads(), 3);
    drop(release);
    eventually("idle threads did not all exit", || pool.threads() == 0);

    // The pool still works after its threads have exited.
    let (tx, rx) = mpsc::channel();
    pool.spawn(move || tx.send(7).expect("the test waits for this"))
        .expect("spawn");
    assert_eq!(recv(&rx, "a job after all threads exited"), 7);
    eventually("the new thread did not exit when idle", || {
        pool.threads() == 0
    });
}

#[test]
fn jobs_racing_idle_exits_all_run() {
    // A 0 ms idle timeout makes threads exit as soon as the queue is empty, so
    // spawns constantly race exits; no job may be stranded in the queue.
    let pool = BlockingPool::new(3, Duration::ZERO);
    let (tx, rx) = mpsc::channel();
    for round in 0..200usize {
        for i in 0..5 {
            let tx = tx.clone();
            pool.spawn(move || {
                tx.send(round * 5 + i)
                    .expect("the test receives every result")
            })
            .expect("spawn");
        }
        if round % 10 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    drop(tx);
    let mut seen = vec![false; 1000];
    for _ in 0..1000 {
        seen[recv(&rx, "a job racing idle exits")] = true;
    }
    assert!(seen.iter().all(|&s| s));
    eventually("idle threads did not all exit", || pool.threads() == 0);
}

/// Sends on drop, so a job that panics still reports that it ran.
struct SendOnDrop(Sender<()>);

impl Drop for SendOnDrop {
    fn drop(&mut self) {
        self.0.send(()).expect("the test waits for this");
    }
}

/// A panic payload whose own drop panics.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        // resume_unwind skips the panic hook, keeping the test output clean.
        std::panic::resume_unwind(Box::new("payload drop panicked (expected by this test)"));
    }
}

#[test]
fn panicking_jobs_do_not_reduce_capacity() {
    const MAX: usize = 2;
    let pool = BlockingPool::new(MAX, Duration::from_secs(10));
    let (ran_tx, ran_rx) = mpsc::channel();
    for i in 0..6 {
        let guard = SendOnDrop(ran_tx.clone());
        pool.spawn(move || {
            let _guard = guard;
            match i {
                0 => panic!("deliberate panic in a blocking job (expected by this test)"),
                1 => std::panic::resume_unwind(Box::new(PanicOnDrop)),
                // resume_unwind skips the panic hook, keeping the output clean.
                _ => std::panic::resume_unwind(Box::new("deliberate quiet panic")),
            }
        })
        .expect("spawn");
    }
    for _ in 0..6 {
        recv(&ran_rx, "a panicking job ran");
    }
    let alive = pool.threads();
    assert!(
        (1..=MAX).contains(&alive),
        "{alive} threads alive after panics (idle timeout is long, so they should survive)"
    );

    // Both threads are still available at once.
    let (started_tx, started_rx) = mpsc::channel();
    let release = spawn_blockers(&pool, MAX, &started_tx);
    for _ in 0..MAX {
        recv(
            &started_rx,
            "a blocked job started: panics cost the pool a thread",
        );
    }
    assert_eq!(pool.threads(), MAX);
    drop(release);
}

#[test]
fn drop_does_not_block_and_queued_jobs_still_run() {
    let pool = BlockingPool::new(1, Duration::from_secs(10));
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    {
        let done_tx = done_tx.clone();
        pool.spawn(move || {
            started_tx.send(()).expect("the test waits for this");
            // If Drop blocked, the release below would only come after BOUND.
            let released = release_rx.recv_timeout(BOUND).is_ok();
            done_tx
                .send((0, released))
                .expect("the test waits for this");
        })
        .expect("spawn");
    }
    recv(&started_rx, "the first job started");
    for i in 1..=10 {
        let done_tx = done_tx.clone();
        pool.spawn(move || done_tx.send((i, true)).expect("the test waits for this"))
            .expect("spawn");
    }
    drop(done_tx);
    drop(pool);
    release_tx.send(()).expect("the first job waits for this");

    let (first, released) = recv(&done_rx, "the running job finished after drop");
    assert_eq!(first, 0);
    assert!(
        released,
        "dropping the pool blocked until the running job gave up"
    );
    for expected in 1..=10 {
        let (i, _) = recv(&done_rx, "a queued job ran after the pool was dropped");
        assert_eq!(i, expected, "one thread runs the queue in FIFO order");
    }
}

#[test]
fn zero_max_threads_means_one_named_thread() {
    let pool = BlockingPool::new(0, Duration::from_secs(1));
    assert_eq!(pool.max_threads(), 1);
    let (tx, rx) = mpsc::channel();
    pool.spawn(move || {
        let name = thread::current().name().map(str::to_owned);
        tx.send(name).expect("the test waits for this");
    })
    .expect("spawn");
    assert_eq!(
        recv(&rx, "a job on a pool built with max_threads = 0").as_deref(),
        Some("coring-blocking")
    );
}
