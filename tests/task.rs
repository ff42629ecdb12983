//! Tasks, timers and API misuse.

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use coring::time::{interval, sleep, sleep_until, timeout};

coring_test!(spawn_join_and_yield, async {
    let order = Rc::new(RefCell::new(Vec::new()));
    let a = {
        let order = order.clone();
        coring::spawn(async move {
            order.borrow_mut().push("a1");
            coring::task::yield_now().await;
            order.borrow_mut().push("a2");
            1
        })
    };
    let b = {
        let order = order.clone();
        coring::spawn(async move {
            order.borrow_mut().push("b1");
            2
        })
    };
    assert_eq!(a.await.unwrap() + b.await.unwrap(), 3);
    assert_eq!(*order.borrow(), ["a1", "b1", "a2"]);
    // Nested spawns and !Send values.
    let rc = Rc::new(Cell::new(0));
    let inner = rc.clone();
    coring::spawn(async move {
        let inner2 = inner.clone();
        coring::spawn(async move { inner2.set(inner2.get() + 1) })
            .await
            .unwrap();
        inner.set(inner.get() + 1);
    })
    .await
    .unwrap();
    assert_eq!(rc.get(), 2);
});

coring_test!(panicking_task_is_reported_not_fatal, async {
    let h = coring::spawn(async {
        panic!("task exploded on purpose");
    });
    let err = h.await.unwrap_err();
    assert!(err.is_panic());
    assert!(err.to_string().contains("exploded"), "{err}");
    // The runtime keeps working.
    assert_eq!(coring::spawn(async { 5 }).await.unwrap(), 5);
    let payload = coring::spawn(async { std::panic::panic_any(42u32) })
        .await
        .unwrap_err()
        .into_panic();
    assert_eq!(*payload.downcast::<u32>().unwrap(), 42);
});

coring_test!(abort_and_is_finished, async {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let h = coring::spawn(async move {
        sleep(Duration::from_secs(30)).await;
        r.set(true);
    });
    coring::task::yield_now().await;
    assert!(!h.is_finished());
    h.abort();
    let err = h.await.unwrap_err();
    assert!(err.is_cancelled());
    assert!(!ran.get());
    let done = coring::spawn(async { 1 });
    coring::task::yield_now().await;
    assert!(done.is_finished());
    done.abort(); // too late: the output stays
    assert_eq!(done.await.unwrap(), 1);
    // Detached tasks keep running.
    let flag = Rc::new(Cell::new(false));
    let f = flag.clone();
    drop(coring::spawn(async move { f.set(true) }));
    sleep(Duration::from_millis(1)).await;
    assert!(flag.get());
});

coring_test!(timers, async {
    let t = Instant::now();
    sleep(Duration::from_millis(20)).await;
    assert!(t.elapsed() >= Duration::from_millis(20));
    sleep_until(Instant::now() - Duration::from_secs(1)).await; // past: immediate
    let r = timeout(Duration::from_millis(10), sleep(Duration::from_secs(30))).await;
    assert!(r.is_err());
    let err: std::io::Error = r.unwrap_err().into();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(
        timeout(Duration::from_secs(5), async { 7 }).await.unwrap(),
        7
    );
    // Many timers fire in deadline order.
    let fired = Rc::new(RefCell::new(Vec::new()));
    let hs: Vec<_> = (0..50u64)
        .rev()
        .map(|i| {
            let fired = fired.clone();
            coring::spawn(async move {
                sleep(Duration::from_millis(i)).await;
                fired.borrow_mut().push(i);
            })
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    let fired = fired.borrow().clone();
    assert_eq!(fired.len(), 50);
    assert!(fired.windows(2).all(|w| w[0] <= w[1]), "{fired:?}");
    // Huge durations do not overflow.
    let r = timeout(Duration::from_millis(1), sleep(Duration::MAX)).await;
    assert!(r.is_err());
});

coring_test!(interval_ticks, async {
    let mut iv = interval(Duration::from_millis(5));
    let start = Instant::now();
    let first = iv.tick().await;
    assert!(first <= Instant::now());
    let mut last = first;
    for _ in 0..5 {
        let t = iv.tick().await;
        assert!(t > last);
        last = t;
    }
    assert!(start.elapsed() >= Duration::from_millis(25));
});

// Durations too long for an Instant (Duration::MAX) mean "never", not a panic: the first
// tick of such an interval is immediate, the second never comes (issue 14, defect 6).
coring_test!(huge_durations_saturate_instead_of_panicking, async {
    let mut iv = interval(Duration::MAX);
    iv.tick().await;
    assert!(timeout(Duration::from_millis(20), iv.tick()).await.is_err());
    assert!(timeout(Duration::from_millis(1), sleep(Duration::MAX))
        .await
        .is_err());
    assert!(timeout(Duration::MAX, async { 7 }).await == Ok(7));
});

// Timers and sleeps dropped before firing leave nothing behind.
coring_test!(dropped_timers_are_removed, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        for _ in 0..1000 {
            let _ = timeout(Duration::from_micros(1), sleep(Duration::from_secs(60))).await;
        }
    });
    assert_eq!(rt.pending_timers(), 0);
});

// Wakers are Send: a std thread can wake a task, and the runtime wakes up from its park.
coring_test!(wake_from_another_thread, async {
    use std::sync::{Arc, Mutex};
    let slot: Arc<Mutex<(bool, Option<std::task::Waker>)>> = Arc::new(Mutex::new((false, None)));
    let s2 = slot.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut g = s2.lock().unwrap();
        g.0 = true;
        if let Some(w) = g.1.take() {
            w.wake();
        }
    });
    let slot2 = slot.clone();
    coring::spawn(std::future::poll_fn(move |cx| {
        let mut g = slot2.lock().unwrap();
        if g.0 {
            std::task::Poll::Ready(())
        } else {
            g.1 = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    }))
    .await
    .unwrap();
    t.join().unwrap();
});

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// Misuse panics with a message that says what to do.
#[test]
fn spawn_outside_runtime_panics_with_advice() {
    let p = catch_unwind(|| drop(coring::spawn(async {}))).unwrap_err();
    let msg = panic_message(p);
    assert!(msg.contains("outside a coring runtime"), "{msg}");
    assert!(msg.contains("block_on"), "{msg}");
}

#[test]
fn io_outside_runtime_panics_with_advice() {
    let fut = coring::nop();
    let p = catch_unwind(AssertUnwindSafe(|| {
        let rt = coring::Runtime::new().unwrap();
        // Poll the op on a foreign executor: no coring runtime is current.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = Box::pin(fut);
        let _ = fut.as_mut().poll(&mut cx);
        drop(rt);
    }))
    .unwrap_err();
    let msg = panic_message(p);
    assert!(msg.contains("outside a coring runtime"), "{msg}");
}

#[test]
fn nested_block_on_panics_with_advice() {
    let rt = coring::Runtime::new().unwrap();
    let rt2 = coring::Runtime::new().unwrap();
    let p = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async { rt2.block_on(async {}) })
    }))
    .unwrap_err();
    let msg = panic_message(p);
    assert!(msg.contains("inside a coring runtime"), "{msg}");
    // The runtime is still usable afterwards.
    assert_eq!(rt.block_on(async { 3 }), 3);
}

#[test]
fn start_runs_a_future() {
    assert_eq!(
        coring::start(async { coring::spawn(async { 9 }).await.unwrap() }),
        9
    );
}

// abort() before the task ever ran, and abort() of a task from inside its own poll: the
// future is dropped on its thread at its next run, never mid-poll.
coring_test!(abort_before_first_poll_and_self_abort, async {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let h = coring::spawn(async move { r.set(true) });
    h.abort();
    assert!(h.await.unwrap_err().is_cancelled());
    assert!(!ran.get(), "an aborted task must not run");

    let slot: Rc<RefCell<Option<coring::JoinHandle<()>>>> = Rc::new(RefCell::new(None));
    let s = slot.clone();
    let reached_end = Rc::new(Cell::new(false));
    let end = reached_end.clone();
    let h = coring::spawn(async move {
        coring::task::yield_now().await;
        if let Some(me) = s.borrow().as_ref() {
            me.abort(); // aborting ourselves while being polled
        }
        coring::task::yield_now().await;
        end.set(true);
    });
    // Hand the task its own handle (it has not run yet: spawned tasks start at the next
    // yield).
    *slot.borrow_mut() = Some(h);
    for _ in 0..10 {
        coring::task::yield_now().await;
    }
    let h = slot.borrow_mut().take().unwrap();
    assert!(h.is_finished());
    assert!(h.await.unwrap_err().is_cancelled());
    assert!(!reached_end.get(), "the self-aborted task kept running");
});

/// Counts drops of the values it is attached to.
#[derive(Clone)]
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

// Task cells are recycled per runtime (size classes); every future and every output must
// still be dropped exactly once, whatever the cell size, whether the output is joined,
// detached before or after completion, or the task is aborted.
coring_test!(task_cells_drop_futures_and_outputs_once, async {
    let futs = Rc::new(Cell::new(0));
    let outs = Rc::new(Cell::new(0));
    async fn sized<const N: usize>(
        f: DropCount,
        o: DropCount,
        yields: usize,
    ) -> ([u8; N], DropCount) {
        let _f = f;
        for _ in 0..yields {
            coring::task::yield_now().await;
        }
        ([7; N], o)
    }
    let mut expected = 0;
    for round in 0..3 {
        let mut joined = Vec::new();
        for i in 0..300 {
            let (f, o) = (DropCount(futs.clone()), DropCount(outs.clone()));
            let yields = i % 3;
            let h: coring::JoinHandle<Box<dyn std::any::Any>> = match i % 4 {
                0 => coring::spawn(async move { Box::new(sized::<8>(f, o, yields).await) as _ }),
                1 => coring::spawn(async move { Box::new(sized::<200>(f, o, yields).await) as _ }),
                2 => coring::spawn(async move { Box::new(sized::<1500>(f, o, yields).await) as _ }),
                _ => coring::spawn(async move { Box::new(sized::<9000>(f, o, yields).await) as _ }),
            };
            expected += 1;
            match (i + round) % 5 {
                0 => drop(h), // detached before it runs
                1 => {
                    // Before its first poll: the output value goes with the future.
                    h.abort();
                    joined.push(h);
                }
                _ => joined.push(h),
            }
        }
        for _ in 0..5 {
            coring::task::yield_now().await;
        }
        for h in joined {
            // Some finished long ago, some are still yielding.
            let _ = h.await;
        }
        for _ in 0..5 {
            coring::task::yield_now().await;
        }
    }
    assert_eq!(futs.get(), expected, "every future dropped exactly once");
    assert_eq!(
        outs.get(),
        expected,
        "every output (or its unspent input) dropped once"
    );
});

// The last reference to a task may be a waker on another thread, dropped after the task
// finished and after its runtime is gone: the cell is then freed there, not cached.
coring_test!(last_task_reference_dropped_on_another_thread, |builder| {
    let rt = builder.build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<std::task::Waker>();
    common::block_on_bounded(&rt, async move {
        for _ in 0..100 {
            let tx = tx.clone();
            let h = coring::spawn(std::future::poll_fn(move |cx| {
                tx.send(cx.waker().clone()).unwrap();
                std::task::Poll::Ready(vec![1u8; 64])
            }));
            assert_eq!(h.await.unwrap().len(), 64);
        }
    });
    drop(rt);
    let t = std::thread::spawn(move || {
        let wakers: Vec<_> = rx.iter().collect();
        assert_eq!(wakers.len(), 100);
        for (i, w) in wakers.into_iter().enumerate() {
            if i % 2 == 0 {
                w.wake(); // the runtime is closed: dropped, not run
            }
        }
    });
    t.join().unwrap();
});

// The timer wheel keeps deadlines to the microsecond across its levels: sleeps from a few
// microseconds to tens of milliseconds never wake before their deadline, and a reset
// sleep follows its new deadline.
coring_test!(sleeps_never_wake_early_at_any_scale, async {
    let hs: Vec<_> = (0..300u64)
        .map(|i| {
            coring::spawn(async move {
                // 1 µs .. ~40 ms, spread over the wheel's lower levels.
                let d = Duration::from_micros((i * i * 7919) % 40_000 + 1);
                let deadline = Instant::now() + d;
                sleep_until(deadline).await;
                let now = Instant::now();
                assert!(now >= deadline, "woke {:?} early", deadline - now);
            })
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    let mut s = Box::pin(sleep(Duration::from_secs(60)));
    let target = Instant::now() + Duration::from_millis(3);
    s.as_mut().reset(target);
    s.await;
    assert!(Instant::now() >= target);
});

// A wake from another thread that publishes data and then calls wake_by_ref while the task
// is still queued must not be lost: the executor's clearing of the "scheduled" flag and a
// waker's claim are both read-modify-writes, so either the waker enqueues the task or the
// next poll sees the data. (With a plain load in wake_by_ref and a plain store before the
// poll, this stalled after 40k-120k rounds on this machine.)
coring_test!(wake_by_ref_from_another_thread_is_never_lost, async {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    const ROUNDS: usize = 300_000;
    struct Shared {
        flag: AtomicBool,
        got: AtomicUsize,
        waker: Mutex<Option<std::task::Waker>>,
        stop: AtomicBool,
    }
    let s = Arc::new(Shared {
        flag: AtomicBool::new(false),
        got: AtomicUsize::new(0),
        waker: Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    let s2 = s.clone();
    let waker_thread = std::thread::spawn(move || {
        let w = loop {
            if let Some(w) = s2.waker.lock().unwrap().clone() {
                break w;
            }
            if s2.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::yield_now();
        };
        for i in 0..ROUNDS {
            while s2.got.load(Ordering::Acquire) != i {
                if s2.stop.load(Ordering::Relaxed) {
                    return;
                }
                std::hint::spin_loop();
            }
            s2.flag.store(true, Ordering::Release);
            w.wake_by_ref();
        }
    });
    let s3 = s.clone();
    let task = coring::spawn(std::future::poll_fn(move |cx| {
        s3.waker
            .lock()
            .unwrap()
            .get_or_insert_with(|| cx.waker().clone());
        if s3.flag.swap(false, Ordering::Acquire) {
            if s3.got.fetch_add(1, Ordering::Release) + 1 == ROUNDS {
                return std::task::Poll::Ready(());
            }
            // Queued again at once: the next run is where a lost wake would hide.
            cx.waker().wake_by_ref();
        }
        std::task::Poll::Pending
    }));
    // Progress watchdog: a lost wake leaves the task pending with the flag set forever.
    let mut last = (0, Instant::now());
    let mut task = std::pin::pin!(task);
    let done = loop {
        if let Ok(r) = timeout(Duration::from_millis(100), task.as_mut()).await {
            break r;
        }
        let got = s.got.load(std::sync::atomic::Ordering::Relaxed);
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            s.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!(
                "lost wake: stuck at round {got} of {ROUNDS} with the flag {}",
                s.flag.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    };
    done.unwrap();
    waker_thread.join().unwrap();
});

/// Records the thread it is dropped on.
struct DroppedOn(Rc<Cell<Option<std::thread::ThreadId>>>);

impl Drop for DroppedOn {
    fn drop(&mut self) {
        self.0.set(Some(std::thread::current().id()));
    }
}

// A task whose future owns its own JoinHandle: dropping the finished future drops the
// handle, so nobody will collect the output. The output must then be dropped at once, on
// the task's thread, not left in the cell for the last reference (here a waker held by
// another thread) to drop there.
coring_test!(
    unclaimed_output_is_dropped_on_the_owning_thread,
    |builder| {
        let rt = builder.build().unwrap();
        let dropped_on: Rc<Cell<Option<std::thread::ThreadId>>> = Rc::default();
        let (tx, rx) = std::sync::mpsc::channel::<std::task::Waker>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let remote = std::thread::spawn(move || {
            let w = rx.recv().unwrap();
            go_rx.recv().unwrap();
            drop(w);
        });
        let d = dropped_on.clone();
        common::block_on_bounded(&rt, async move {
            let own: Rc<RefCell<Option<coring::JoinHandle<DroppedOn>>>> = Rc::default();
            let inner = Box::pin(async move {
                std::future::poll_fn(|cx| {
                    tx.send(cx.waker().clone()).unwrap();
                    std::task::Poll::Ready(())
                })
                .await;
                coring::task::yield_now().await;
                DroppedOn(d)
            });
            // The handle lives in the future's own field, so it goes when the future is
            // dropped, after it returned Ready (not inside the poll, as an async block's
            // locals would).
            let h = coring::spawn(Holding {
                _handle: own.clone(),
                inner,
            });
            *own.borrow_mut() = Some(h);
            drop(own);
            for _ in 0..10 {
                coring::task::yield_now().await;
            }
        });
        assert_eq!(
            dropped_on.get(),
            Some(std::thread::current().id()),
            "the output was not dropped on the task's thread"
        );
        go_tx.send(()).unwrap();
        remote.join().unwrap();
    }
);

/// A future that holds a value until the future itself is dropped.
struct Holding<H, F> {
    _handle: H,
    inner: std::pin::Pin<Box<F>>,
}

impl<H: Unpin, F: std::future::Future> std::future::Future for Holding<H, F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.get_mut().inner.as_mut().poll(cx)
    }
}

/// Panics when dropped.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("drop after Ready");
    }
}

// A future that panics while being dropped after returning Ready: the task reports the
// panic through its JoinHandle; the runtime and other tasks carry on.
coring_test!(panic_dropping_a_finished_future_is_the_tasks_panic, async {
    // The bomb is a field of the future, dropped after Ready (an async block's local
    // would go off inside the poll).
    let h = coring::spawn(Holding {
        _handle: PanicsOnDrop,
        inner: Box::pin(async {
            coring::task::yield_now().await;
            42
        }),
    });
    let err = h.await.unwrap_err();
    assert!(err.is_panic(), "{err:?}");
    assert_eq!(coring::spawn(async { 7 }).await.unwrap(), 7);
});

// A sleep reset from outside the task awaiting it (shared through a RefCell) wakes that
// task at the new deadline rather than forgetting it.
coring_test!(reset_from_elsewhere_wakes_the_waiting_task, async {
    let shared = Rc::new(RefCell::new(Box::pin(sleep(Duration::from_secs(3600)))));
    let s = shared.clone();
    let waiter = coring::spawn(std::future::poll_fn(move |cx| {
        s.borrow_mut().as_mut().poll(cx)
    }));
    coring::task::yield_now().await; // the waiter registers its waker
    let target = Instant::now() + Duration::from_millis(5);
    shared.borrow_mut().as_mut().reset(target);
    timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiting task was not woken at the new deadline")
        .unwrap();
    assert!(Instant::now() >= target);
});

/// Lives in a task's future across an await and reports, when dropped, whether it is
/// still where it was during the first poll: a future is pinned, so the runtime must drop
/// it in place (an async block's borrows of its own locals point into that place).
struct PinnedHome {
    home: Cell<usize>,
    report: Rc<Cell<Option<bool>>>,
}

impl PinnedHome {
    fn new(report: &Rc<Cell<Option<bool>>>) -> PinnedHome {
        PinnedHome {
            home: Cell::new(0),
            report: report.clone(),
        }
    }

    /// Records where it lies now (call inside the future, before its first await).
    fn settle(&self) {
        self.home.set(self as *const PinnedHome as usize);
    }
}

impl Drop for PinnedHome {
    fn drop(&mut self) {
        let in_place = self as *const PinnedHome as usize == self.home.get();
        self.report.set(Some(in_place));
    }
}

// Every way a task's unfinished future is dropped drops it in place: aborted through its
// JoinHandle, cancelled when the runtime goes, dropped after its poll panicked. (Moving it
// out first, as the runtime once did, left self-borrowing drop code reading the cell's
// next contents: a listener's kept accept then panicked or leaked under ASAN.)
coring_test!(unfinished_task_futures_are_dropped_in_place, |builder| {
    let report = |r: &Rc<Cell<Option<bool>>>, how: &str| {
        assert_eq!(
            r.get(),
            Some(true),
            "{how}: future moved before it was dropped"
        );
    };
    // Aborted.
    let rt = builder.clone().build().unwrap();
    let aborted = Rc::new(Cell::new(None));
    rt.block_on(async {
        let home = PinnedHome::new(&aborted);
        let h = coring::spawn(async move {
            home.settle();
            std::future::pending::<()>().await;
            drop(home);
        });
        coring::task::yield_now().await;
        h.abort();
        coring::task::yield_now().await;
    });
    report(&aborted, "abort");
    // Cancelled by the runtime's drop.
    let at_shutdown = Rc::new(Cell::new(None));
    rt.block_on(async {
        let home = PinnedHome::new(&at_shutdown);
        drop(coring::spawn(async move {
            home.settle();
            std::future::pending::<()>().await;
            drop(home);
        }));
        coring::task::yield_now().await;
    });
    drop(rt);
    report(&at_shutdown, "runtime drop");
    // Dropped after a panicking poll.
    let rt = builder.build().unwrap();
    let after_panic = Rc::new(Cell::new(None));
    rt.block_on(async {
        let home = PinnedHome::new(&after_panic);
        let h = coring::spawn(async move {
            home.settle();
            coring::task::yield_now().await;
            if home.home.get() != 0 {
                panic!("on purpose: the future must then be dropped in place");
            }
            drop(home);
        });
        assert!(h.await.unwrap_err().is_panic());
    });
    report(&after_panic, "panic");
});

/// A panic payload whose own drop panics (unless already unwinding).
struct PanickyPayload;

impl Drop for PanickyPayload {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("on purpose: the panic payload's drop panics too");
        }
    }
}

/// Lives in a task's future; its drop panics with a [`PanickyPayload`].
struct DropPanicsWithPanickyPayload;

impl Drop for DropPanicsWithPanickyPayload {
    fn drop(&mut self) {
        std::panic::panic_any(PanickyPayload);
    }
}

// A task whose future's drop panics with a payload whose drop panics as well: aborting it
// does not unwind out of block_on, and dropping the runtime still cancels every other task
// on its own thread (another task's future, whose last waker another thread holds, is
// dropped here, not there).
coring_test!(panicking_panic_payloads_stay_inside_the_task, |builder| {
    use std::sync::{mpsc, Arc, Mutex};
    let rt = builder.clone().build().unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            let h = coring::spawn(async {
                let _g = DropPanicsWithPanickyPayload;
                std::future::pending::<()>().await;
            });
            coring::task::yield_now().await;
            h.abort();
            coring::task::yield_now().await;
            coring::task::yield_now().await;
        })
    }));
    assert!(r.is_ok(), "a task's drop panic unwound out of block_on");
    drop(rt);

    let dropped_on = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel::<std::task::Waker>();
    let (release, released) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let w = rx.recv().unwrap();
        // Keep the waker until the runtime is gone, then drop the last reference here.
        let _ = released.recv_timeout(Duration::from_secs(10));
        drop(w);
    });
    let rt = builder.build().unwrap();
    let on = dropped_on.clone();
    rt.block_on(async move {
        drop(coring::spawn(async {
            let _g = DropPanicsWithPanickyPayload;
            std::future::pending::<()>().await;
        }));
        drop(coring::spawn(async move {
            struct RecordThread(Arc<Mutex<Option<std::thread::ThreadId>>>);
            impl Drop for RecordThread {
                fn drop(&mut self) {
                    *self.0.lock().unwrap() = Some(std::thread::current().id());
                }
            }
            let _r = RecordThread(on);
            let mut sent = false;
            std::future::poll_fn(|cx| {
                if !std::mem::replace(&mut sent, true) {
                    tx.send(cx.waker().clone()).unwrap();
                }
                std::task::Poll::<()>::Pending
            })
            .await;
        }));
        coring::task::yield_now().await;
        coring::task::yield_now().await;
    });
    let r = catch_unwind(AssertUnwindSafe(move || drop(rt)));
    release.send(()).unwrap();
    holder.join().unwrap();
    assert!(
        r.is_ok(),
        "a task's drop panic unwound out of the runtime's drop"
    );
    assert_eq!(
        *dropped_on.lock().unwrap(),
        Some(std::thread::current().id()),
        "a task's future was dropped off the runtime's thread (or never)"
    );
});

// A detached task whose output's drop panics with a payload whose drop panics too: the
// output is dropped on the runtime's thread without anything unwinding out of block_on.
coring_test!(
    output_drop_with_a_panicking_payload_stays_inside_the_task,
    |builder| {
        struct Output;
        impl Drop for Output {
            fn drop(&mut self) {
                std::panic::panic_any(PanickyPayload);
            }
        }
        let rt = builder.build().unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(async {
                drop(coring::spawn(async { Output }));
                coring::task::yield_now().await;
                coring::task::yield_now().await;
            })
        }));
        assert!(r.is_ok(), "an output's drop panic unwound out of block_on");
    }
);

// live_tasks() counts every spawned task that has not finished, polled yet or not (issue
// 14, defect 9): those that finish at their first poll, those aborted before it, and those
// still waiting.
coring_test!(live_tasks_counts_tasks_not_polled_yet, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let quick: Vec<_> = (0..10).map(|_| coring::spawn(async {})).collect();
        let waiting = coring::spawn(sleep(Duration::from_secs(60)));
        let aborted = coring::spawn(sleep(Duration::from_secs(60)));
        assert_eq!(rt.live_tasks(), 12, "spawned, none polled yet");
        aborted.abort();
        for h in quick {
            h.await.unwrap();
        }
        assert!(aborted.await.is_err());
        assert_eq!(rt.live_tasks(), 1, "only the sleeping task is left");
        waiting.abort();
        assert!(waiting.await.is_err());
        assert_eq!(rt.live_tasks(), 0);
    });
});

// A Sleep polled on one runtime (armed in its timers) and then awaited on another, or after
// the first is gone, panics with advice instead of never firing (issue 14, defect 7).
#[test]
fn a_sleep_moved_to_another_runtime_panics_with_advice() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    for &kind in common::BACKENDS {
        for drop_first in [false, true] {
            common::with_watchdog("moved sleep", || {
                let first = common::runtime(kind);
                let second = common::runtime(kind);
                let mut s = Box::pin(sleep(Duration::from_millis(50)));
                first.block_on(async {
                    assert!(common::poll_once(&mut s).await.is_pending());
                });
                if drop_first {
                    drop(first);
                }
                let r = catch_unwind(AssertUnwindSafe(|| second.block_on(s)));
                let msg = panic_message(r.expect_err("the moved sleep must not be awaited"));
                assert!(
                    msg.contains("awaited outside it"),
                    "{kind:?}, first dropped {drop_first}: {msg}"
                );
            });
        }
    }
}
