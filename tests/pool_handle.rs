//! Reaching any core: `PoolHandle` (spawn_on, submit_to, run_on_all), aborts, the shared
//! blocking-wait error, `Sharded`, `spawn_blocking`, shutdown with forwarded work in
//! flight, use after shutdown, and a pool dropped on its own core.
//!
//! Every test runs on every backend of the platform (the `pool_test!` macro, as in
//! tests/pool.rs: io_uring on Linux, the fallback on Unix, IOCP on Windows). Tests in this
//! binary run one at a time: each starts a thread on every CPU.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use coring::sync::{mpsc, oneshot, WaitError};
use coring::{BackendKind, Builder, Pool, PoolHandle, Sharded};

static SERIAL: Mutex<()> = Mutex::new(());

const WAIT: Duration = Duration::from_secs(30);

macro_rules! pool_test {
    ($name:ident, |$kind:ident| $body:block) => {
        mod $name {
            use super::*;

            fn run($kind: BackendKind) {
                let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
                common::with_watchdog(stringify!($name), || $body)
            }

            #[cfg(target_os = "linux")]
            #[test]
            fn io_uring() {
                run(BackendKind::IoUring)
            }

            #[cfg(unix)]
            #[test]
            fn fallback() {
                run(BackendKind::Fallback)
            }

            #[cfg(windows)]
            #[test]
            fn iocp() {
                run(BackendKind::Iocp)
            }
        }
    };
}

/// At least two cores even on a one-CPU machine (unpinned), so work really crosses.
fn pool(kind: BackendKind) -> Pool {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    Pool::builder()
        .backend(kind)
        .cores(n)
        .pin(false)
        .build()
        .expect("pool")
}

thread_local! {
    /// Per core thread: the (source, sequence) of every call it ran, in the order run.
    static LOG: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// A source id for calls made from a plain thread (cores are 0..n).
const PLAIN: usize = usize::MAX;

/// Issues `per_pair` calls to every core without waiting in between, then awaits them
/// all; each must come back once, from its target core, with its own sequence number.
async fn call_everyone(handle: PoolHandle, source: usize, per_pair: usize) -> usize {
    let mut calls = Vec::new();
    for target in 0..handle.cores() {
        for seq in 0..per_pair {
            calls.push((
                target,
                seq,
                handle.submit_to(target, move || {
                    // Recorded when the closure runs, on the target: the issue order.
                    LOG.with(|l| l.borrow_mut().push((source, seq)));
                    async move { (coring::current_core().unwrap(), source, seq) }
                }),
            ));
        }
    }
    let n = calls.len();
    for (target, seq, call) in calls {
        assert_eq!(call.await.unwrap(), (target, source, seq));
    }
    n
}

// submit_to from every core to every core (and from a plain thread to every core): each
// call runs exactly once, on its target, and the calls of one source to one target run in
// the order they were issued.
pool_test!(submit_to_every_pair_exactly_once_in_order, |kind| {
    let pool = pool(kind);
    let n = pool.cores();
    let handle = pool.handle();
    const PER_PAIR: usize = 300;
    let callers: Vec<_> = (0..n)
        .map(|c| {
            let h = handle.clone();
            handle.spawn_on(c, move || call_everyone(h, c, PER_PAIR))
        })
        .collect();
    // A plain thread calls every core too, waiting on each.
    let h = handle.clone();
    let plain = std::thread::spawn(move || {
        let mut calls: Vec<_> = (0..h.cores())
            .flat_map(|t| (0..PER_PAIR).map(move |s| (t, s)))
            .map(|(t, s)| {
                let call = h.submit_to(t, move || {
                    LOG.with(|l| l.borrow_mut().push((PLAIN, s)));
                    async move { (coring::current_core().unwrap(), s) }
                });
                (t, s, call)
            })
            .collect();
        for (t, s, call) in &mut calls {
            assert_eq!(call.wait(WAIT).unwrap(), (*t, *s));
        }
    });
    for mut c in callers {
        assert_eq!(c.wait(WAIT).unwrap(), n * PER_PAIR);
    }
    plain.join().unwrap();
    for target in 0..n {
        let log = handle
            .submit_to(target, || async { LOG.with(|l| l.borrow().clone()) })
            .wait(WAIT)
            .unwrap();
        for source in (0..n).chain([PLAIN]) {
            let seqs: Vec<usize> = log
                .iter()
                .filter(|(s, _)| *s == source)
                .map(|&(_, q)| q)
                .collect();
            assert_eq!(
                seqs,
                (0..PER_PAIR).collect::<Vec<_>>(),
                "calls from {source} to core {target}: lost, doubled or reordered"
            );
        }
    }
    pool.shutdown().unwrap();
});

// A task routes by key: current_core() says where it runs, the handle reaches the owner.
pool_test!(route_by_key_with_current_core, |kind| {
    let pool = pool(kind);
    assert_eq!(coring::current_core(), None, "a plain thread is on no core");
    let handle = pool.handle();
    let h = handle.clone();
    let owners = handle
        .submit_to(0, move || async move {
            let mut seen = Vec::new();
            for key in 0..16usize {
                let owner = key % h.cores();
                let here = coring::current_core().unwrap();
                let ran_on = if owner == here {
                    here
                } else {
                    h.submit_to(owner, || async { coring::current_core().unwrap() })
                        .await
                        .unwrap()
                };
                seen.push((owner, ran_on));
            }
            seen
        })
        .wait(WAIT)
        .unwrap();
    assert!(owners.iter().all(|(o, r)| o == r), "{owners:?}");
    pool.shutdown().unwrap();
});

// A closure (or its future) that panics gives its caller a JoinError (a task) or
// WaitError::Panicked (a plain thread); the target core keeps running, its other tasks
// included.
pool_test!(
    panicking_call_is_the_callers_error_and_core_survives,
    |kind| {
        let pool = pool(kind);
        let handle = pool.handle();
        let last = pool.cores() - 1;
        let mut long = handle.spawn_on(last, || async {
            coring::time::sleep(Duration::from_millis(100)).await;
            "still here"
        });
        let err = handle
            .submit_to(last, || -> std::future::Ready<u8> {
                panic!("closure failed on purpose")
            })
            .wait(WAIT)
            .unwrap_err();
        assert!(err.is_panic(), "{err}");
        assert!(
            err.to_string().contains("closure failed on purpose"),
            "{err}"
        );
        let h = handle.clone();
        let from_core = handle
            .submit_to(0, move || async move {
                let e = h
                    .submit_to(last, || async {
                        coring::time::sleep(Duration::from_millis(1)).await;
                        panic!("future failed on purpose")
                    })
                    .await
                    .unwrap_err();
                (e.is_panic(), e.to_string())
            })
            .wait(WAIT)
            .unwrap();
        assert!(from_core.0, "{}", from_core.1);
        assert!(from_core.1.contains("future failed on purpose"));
        assert_eq!(long.wait(WAIT).unwrap(), "still here");
        assert_eq!(
            handle.submit_to(last, || async { 5 }).wait(WAIT).unwrap(),
            5
        );
        pool.shutdown().unwrap();
    }
);

/// Sets its flag when dropped: proves a remote future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits (sleeping 1 ms at a time, at most 10 s) until `flag` is set.
fn eventually_set(flag: &AtomicBool, what: &str) {
    for _ in 0..10_000 {
        if flag.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting for: {what}");
}

// SpawnHandle::abort from a plain thread cancels the task on its core (its future is
// dropped, the handle says Closed); dropping a Submit cancels the remote call; wait
// returns Timeout (not a panic) and can be called again.
pool_test!(abort_cancels_and_wait_times_out_without_panicking, |kind| {
    let pool = pool(kind);
    let handle = pool.handle();
    let (started_tx, mut started_rx) = oneshot::channel::<()>();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let mut h = handle.spawn_on(1, move || async move {
        let _flag = flag;
        let _ = started_tx.send(());
        coring::time::sleep(Duration::from_secs(3600)).await;
    });
    started_rx.recv_blocking(WAIT).unwrap();
    let e = h.wait(Duration::from_millis(10)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    h.abort();
    assert!(h.wait(WAIT).unwrap_err().is_closed());
    eventually_set(&dropped, "the aborted task's future dropped");
    // A Submit dropped before its output arrives cancels the call.
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let (started_tx, mut started_rx) = oneshot::channel::<()>();
    let call = handle.submit_to(0, move || async move {
        let _flag = flag;
        let _ = started_tx.send(());
        coring::time::sleep(Duration::from_secs(3600)).await;
    });
    started_rx.recv_blocking(WAIT).unwrap();
    drop(call);
    eventually_set(&dropped, "the dropped call's future dropped");
    // Aborting a finished task changes nothing.
    let mut done = handle.spawn_on(0, || async { 3 });
    assert_eq!(done.wait(WAIT).unwrap(), 3);
    done.abort();
    pool.shutdown().unwrap();
});

// Every blocking wait panics, with advice, on a core thread instead of stalling it.
pool_test!(blocking_waits_panic_on_a_core_thread, |kind| {
    let pool = pool(kind);
    let handle = pool.handle();
    let h = handle.clone();
    let errors = handle
        .submit_to(0, move || async move {
            let mut msgs = Vec::new();
            let (_tx, mut rx) = oneshot::channel::<u8>();
            msgs.push(catch(move || rx.recv_blocking(WAIT).map(drop)));
            let (_tx, mut rx) = mpsc::channel::<u8>(1);
            msgs.push(catch(move || rx.recv_blocking(WAIT).map(drop)));
            let mut other = h.spawn_on(1, || async { 1 });
            msgs.push(catch(move || other.wait(WAIT).map(drop)));
            let mut all = h.run_on_all(|_| async {});
            msgs.push(catch(move || all.wait(WAIT).map(drop)));
            msgs
        })
        .wait(WAIT)
        .unwrap();
    for (what, msg) in [
        "oneshot::Receiver::recv_blocking",
        "mpsc::Receiver::recv_blocking",
        "SpawnHandle::wait",
        "Gather::wait",
    ]
    .iter()
    .zip(errors)
    {
        let msg = msg.expect("a blocking wait on a core thread must panic");
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains("core 0") && msg.contains(".await"), "{msg}");
    }
    pool.shutdown().unwrap();
});

/// Runs `f`, returning its panic message (`None` if it returned).
fn catch(f: impl FnOnce() -> Result<(), WaitError>) -> Option<String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => {
            r.ok();
            None
        }
        Err(p) => Some(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

// Shutdown with forwarded work in flight: calls between cores, calls from plain threads
// still queued or running, all end: each caller gets Closed (or its task is cancelled),
// none hangs until its timeout.
pool_test!(
    shutdown_with_forwarded_work_in_flight_ends_every_caller,
    |kind| {
        let pool = pool(kind);
        let n = pool.cores();
        let handle = pool.handle();
        let (started_tx, mut started_rx) = mpsc::channel::<()>(1024);
        // Every core calls every core with work that never finishes.
        let callers: Vec<_> = (0..n)
            .map(|c| {
                let h = handle.clone();
                let started = started_tx.clone();
                handle.spawn_on(c, move || async move {
                    let calls: Vec<_> = (0..h.cores())
                        .map(|t| {
                            let started = started.clone();
                            h.submit_to(t, move || async move {
                                let _ = started.try_send(());
                                coring::time::sleep(Duration::from_secs(3600)).await;
                            })
                        })
                        .collect();
                    for call in calls {
                        let _ = call.await;
                    }
                })
            })
            .collect();
        // Plain threads wait on calls of their own.
        let waiters: Vec<_> = (0..n)
            .map(|t| {
                let mut call = handle.submit_to(t, || async {
                    coring::time::sleep(Duration::from_secs(3600)).await;
                });
                std::thread::spawn(move || call.wait(WAIT))
            })
            .collect();
        for _ in 0..n * n {
            started_rx.recv_blocking(WAIT).unwrap();
        }
        pool.shutdown().unwrap();
        for mut c in callers {
            let e = c.wait(WAIT).unwrap_err();
            assert!(e.is_closed(), "a calling task: {e}");
        }
        for w in waiters {
            let e = w.join().unwrap().unwrap_err();
            assert!(e.is_closed(), "a waiting thread: {e}");
        }
    }
);

// After shutdown a handle (and a Sharded over it) refuses work with an error, never a
// panic: from a plain thread, and awaited on another runtime.
pool_test!(handles_used_after_shutdown_get_an_error, |kind| {
    let pool = pool(kind);
    let handle = pool.handle();
    let sharded = Sharded::new(&handle, |core| core);
    assert!(!handle.is_shut_down());
    pool.shutdown().unwrap();
    assert!(handle.is_shut_down());
    assert!(handle
        .spawn_on(0, || async { 1 })
        .wait(WAIT)
        .unwrap_err()
        .is_closed());
    assert!(handle
        .submit_to(1, || async { 1 })
        .wait(WAIT)
        .unwrap_err()
        .is_closed());
    assert!(handle
        .run_on_all(|c| async move { c })
        .wait(WAIT)
        .unwrap_err()
        .is_closed());
    assert!(sharded
        .invoke_on(0, |c| async move { *c })
        .wait(WAIT)
        .unwrap_err()
        .is_closed());
    let rt = Builder::new().backend(kind).build().unwrap();
    let e = common::block_on_bounded(&rt, async {
        handle.submit_to(0, || async { 1 }).await.unwrap_err()
    });
    assert!(e.is_cancelled(), "{e}");
    let e = common::block_on_bounded(&rt, async {
        sharded
            .map_reduce(|c| async move { *c }, 0, |a, b| a + b)
            .await
    })
    .unwrap_err();
    assert!(e.is_cancelled(), "{e}");
});

// Dropping the last reference to a Pool on one of its own core threads does not wait
// for that thread: it used to wait (the pool's shutdown timeout, here an hour, beyond the
// watchdog) for the very thread doing the waiting. The task's result comes back, the
// other cores stop, and the handle then refuses work.
pool_test!(dropping_the_pool_on_its_own_core_does_not_stall, |kind| {
    let pool = Pool::builder()
        .backend(kind)
        .cores(2)
        .pin(false)
        .shutdown_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let handle = pool.handle();
    // The way users shared a pool before there was a handle.
    let shared = Arc::new(Mutex::new(Some(pool)));
    let inside = shared.clone();
    let mut h = handle.spawn_on(0, move || async move {
        let pool = inside.lock().unwrap().take().unwrap();
        drop(inside);
        // The last reference, dropped on core 0.
        drop(pool);
        "dropped on core 0"
    });
    drop(shared);
    assert_eq!(h.wait(WAIT).unwrap(), "dropped on core 0");
    assert!(handle.is_shut_down());
    assert!(handle
        .submit_to(1, || async { 1 })
        .wait(WAIT)
        .unwrap_err()
        .is_closed());
    // The same through an explicit shutdown on a core: it returns at once.
    let pool = Pool::builder()
        .backend(kind)
        .cores(2)
        .pin(false)
        .shutdown_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let handle = pool.handle();
    let r = handle
        .spawn_on(1, move || async move { pool.shutdown().is_ok() })
        .wait(WAIT)
        .unwrap();
    assert!(r);
    assert!(handle.is_shut_down());
});

// run_on_all is a ready barrier: once it returns, every core's setup future has
// finished (here: bound a listener and spawned its accept loop), so clients connect with
// no sleep.
pool_test!(run_on_all_is_a_ready_barrier, |kind| {
    let pool = pool(kind);
    let addrs = pool
        .run_on_all(|core| async move {
            let listener = coring::net::TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            drop(coring::spawn(async move {
                while let Ok((s, _)) = listener.accept().await {
                    let _ = s.write_all(vec![core as u8]).await;
                }
            }));
            Ok::<_, std::io::Error>(addr)
        })
        .wait(WAIT)
        .unwrap();
    assert_eq!(addrs.len(), pool.cores());
    for (core, addr) in addrs.into_iter().enumerate() {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(addr.unwrap()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b[0] as usize, core);
    }
    pool.shutdown().unwrap();
});

/// A per-core service: records where it was made and dropped.
struct Shard {
    core: usize,
    made_on: usize,
    hits: Cell<u64>,
    events: Arc<Mutex<Vec<String>>>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.events.lock().unwrap().push(format!(
            "drop {} on {:?}",
            self.core,
            coring::current_core()
        ));
    }
}

// Sharded: one instance per core, made on its core (once), used locally through an Rc
// with no lock, reached from anywhere with invoke_on / invoke_on_all / map_reduce, and
// dropped on its own core when the last clone goes.
pool_test!(sharded_instances_live_on_their_cores, |kind| {
    let pool = pool(kind);
    let n = pool.cores();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let sharded = Sharded::new(&pool.handle(), move |core| {
        ev.lock().unwrap().push(format!("make {core}"));
        Shard {
            core,
            made_on: coring::current_core().unwrap(),
            hits: Cell::new(0),
            events: ev.clone(),
        }
    });
    // From a plain thread: each core's instance, on its core.
    for core in 0..n {
        let (c, made_on) = sharded
            .invoke_on(core, |s: Rc<Shard>| async move {
                s.hits.set(s.hits.get() + 1);
                (s.core, s.made_on)
            })
            .wait(WAIT)
            .unwrap();
        assert_eq!((c, made_on), (core, core));
    }
    // From a task: the local instance directly, the others through the pool.
    let s = sharded.clone();
    let (total, cores) = pool
        .handle()
        .submit_to(n - 1, move || async move {
            let local = s.local();
            assert!(Rc::ptr_eq(&local, &s.local()), "one instance per core");
            local.hits.set(local.hits.get() + 10);
            let total = s
                .map_reduce(|s| async move { s.hits.get() }, 0, |a, b| a + b)
                .await
                .unwrap();
            let cores = s.invoke_on_all(|s| async move { s.core }).await.unwrap();
            (total, cores)
        })
        .wait(WAIT)
        .unwrap();
    assert_eq!(total, n as u64 + 10);
    assert_eq!(cores, (0..n).collect::<Vec<_>>());
    // Off the pool, local() is misuse with advice.
    let msg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sharded.local();
    }))
    .unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("invoke_on"), "{msg}");
    {
        let made = events.lock().unwrap();
        for core in 0..n {
            let count = made
                .iter()
                .filter(|e| **e == format!("make {core}"))
                .count();
            assert_eq!(
                count, 1,
                "core {core}'s instance made {count} times: {made:?}"
            );
        }
    }
    drop(sharded);
    for core in 0..n {
        let want = format!("drop {core} on Some({core})");
        let mut found = false;
        for _ in 0..10_000 {
            if events.lock().unwrap().contains(&want) {
                found = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(found, "{want}: {:?}", events.lock().unwrap());
    }
    pool.shutdown().unwrap();
});

/// A gate blocking jobs until opened (bounded: a job gives up after WAIT).
struct Gate(Mutex<bool>, Condvar);

impl Gate {
    fn wait(&self) {
        let g = self.0.lock().unwrap();
        let _ = self.1.wait_timeout_while(g, WAIT, |open| !*open).unwrap();
    }

    fn open(&self) {
        *self.0.lock().unwrap() = true;
        self.1.notify_all();
    }
}

// spawn_blocking runs on one bounded pool shared by every core: with 2 threads and 3
// queue places, the 6th job (from either core) is refused with WouldBlock and a clear
// message; once the jobs finish there is room again. A job's panic is its handle's
// JoinError; an aborted job that has not started is skipped.
pool_test!(spawn_blocking_is_bounded_and_shared, |kind| {
    let pool = Pool::builder()
        .backend(kind)
        .cores(2)
        .pin(false)
        .runtime(Builder::new().blocking_threads(2).blocking_queue(3))
        .build()
        .unwrap();
    let handle = pool.handle();
    let gate = Arc::new(Gate(Mutex::new(false), Condvar::new()));
    let ran = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let r = ran.clone();
    let mut first = handle.spawn_on(0, move || async move {
        let mut jobs = Vec::new();
        for i in 0..4u32 {
            let g = g.clone();
            jobs.push(
                coring::spawn_blocking(move || {
                    g.wait();
                    i
                })
                .unwrap(),
            );
        }
        // The fifth place: a job aborted while it waits in the queue.
        let r = r.clone();
        let skipped = coring::spawn_blocking(move || r.store(true, Ordering::SeqCst)).unwrap();
        skipped.abort();
        let refused = coring::spawn_blocking(|| 0).map(drop).unwrap_err();
        (jobs, skipped, refused)
    });
    let (jobs, skipped, refused) = match first.wait(WAIT) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock);
    assert!(refused.to_string().contains("saturated"), "{refused}");
    // The other core shares the bound.
    let e = handle
        .submit_to(1, || async {
            coring::spawn_blocking(|| 0).map(drop).unwrap_err().kind()
        })
        .wait(WAIT)
        .unwrap();
    assert_eq!(e, std::io::ErrorKind::WouldBlock);
    gate.open();
    let sum = handle
        .submit_to(1, move || async move {
            let mut sum = 0;
            for j in jobs {
                sum += j.await.unwrap();
            }
            let skipped = skipped.await.unwrap_err();
            assert!(skipped.is_cancelled(), "{skipped}");
            // Room again, and a panic is the handle's error.
            let p = coring::spawn_blocking(|| -> u32 { panic!("blocking job failed on purpose") })
                .unwrap()
                .await
                .unwrap_err();
            assert!(p.is_panic(), "{p}");
            sum + coring::spawn_blocking(|| 100).unwrap().await.unwrap()
        })
        .wait(WAIT)
        .unwrap();
    assert_eq!(sum, 106);
    assert!(!ran.load(Ordering::SeqCst), "the aborted job ran");
    pool.shutdown().unwrap();
});

// Off the pool: a plain runtime has its own bounded blocking pool (here 1 thread, no
// queue: the second job is refused), and a blocking wait inside block_on panics with
// advice instead of stalling the runtime.
coring_test!(
    spawn_blocking_and_blocking_waits_on_a_plain_runtime,
    |builder| {
        let rt = builder
            .blocking_threads(1)
            .blocking_queue(0)
            .build()
            .unwrap();
        common::block_on_bounded(&rt, async {
            let (_tx, mut rx) = oneshot::channel::<u8>();
            let msg = catch(move || rx.recv_blocking(WAIT).map(drop))
                .expect("a blocking wait inside block_on must panic");
            assert!(msg.contains("block_on") && msg.contains(".await"), "{msg}");
            let gate = Arc::new(Gate(Mutex::new(false), Condvar::new()));
            let g = gate.clone();
            let first = coring::spawn_blocking(move || {
                g.wait();
                7
            })
            .unwrap();
            let refused = coring::spawn_blocking(|| 0).map(drop).unwrap_err();
            assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock, "{refused}");
            gate.open();
            assert_eq!(first.await.unwrap(), 7);
            assert_eq!(coring::spawn_blocking(|| 8).unwrap().await.unwrap(), 8);
        });
        assert_eq!(coring::current_core(), None);
    }
);

// Every core's metrics at once, from a plain thread and from a task: one snapshot per
// core, in core order, each counting the work that ran on that core.
pool_test!(metrics_of_every_core, |kind| {
    let pool = pool(kind);
    let handle = pool.handle();
    // 50 nops on core 1 only.
    handle
        .submit_to(1, || async {
            for _ in 0..50 {
                coring::nop().await.unwrap();
            }
        })
        .wait(WAIT)
        .unwrap();
    let all = handle.metrics().wait(WAIT).unwrap();
    assert_eq!(all.len(), handle.cores());
    // (Latency is sampled, so completions are what count every nop.)
    assert!(
        all[1].ops_completed >= 50,
        "core 1: {:?}",
        all[1].ops_completed
    );
    assert!(all.iter().all(|m| m.tasks_polled > 0));
    // The same from a task on core 0.
    let h = handle.clone();
    let from_task = handle
        .submit_to(0, move || async move { h.metrics().await })
        .wait(WAIT)
        .unwrap()
        .unwrap();
    assert_eq!(from_task.len(), handle.cores());
    assert!(from_task[1].ops_completed >= all[1].ops_completed);
    pool.shutdown().unwrap();
});
