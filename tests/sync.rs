//! Channels on one core (local and Send flavours): order, backpressure, closing, and the
//! senders' wait list (one waker per pending send, wakes outside the lock, no stranding).

mod common;

use std::cell::Cell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use coring::sync::{local, mpsc, oneshot, TryRecvError, TrySendError};

coring_test!(local_mpsc_backpressure_order_and_close, async {
    let (tx, mut rx) = local::mpsc::channel::<u32>(4);
    let sent = Rc::new(Cell::new(0));
    let producer = {
        let sent = sent.clone();
        coring::spawn(async move {
            for i in 0..100 {
                tx.send(i).await.unwrap();
                sent.set(i + 1);
            }
        })
    };
    coring::task::yield_now().await;
    // The producer stopped at capacity.
    assert_eq!(sent.get(), 4);
    let mut got = Vec::new();
    while let Some(v) = rx.recv().await {
        got.push(v);
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    producer.await.unwrap();
    let (tx, rx) = local::mpsc::channel::<u32>(1);
    drop(rx);
    assert_eq!(tx.send(1).await.unwrap_err().0, 1);
    assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
});

coring_test!(local_oneshot, async {
    let (tx, rx) = local::oneshot::channel::<String>();
    drop(coring::spawn(async move { tx.send("hi".into()).unwrap() }));
    assert_eq!(rx.await.unwrap(), "hi");
    let (tx, rx) = local::oneshot::channel::<u8>();
    drop(tx);
    assert!(rx.await.is_err());
    let (tx, rx) = local::oneshot::channel::<u8>();
    drop(rx);
    assert_eq!(tx.send(3), Err(3));
});

coring_test!(send_mpsc_and_oneshot_report_closing, async {
    let (tx, mut rx) = mpsc::channel::<u8>(2);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
    assert_eq!(rx.try_recv(), Ok(1));
    let tx2 = tx.clone();
    drop(tx);
    tx2.send(4).await.unwrap();
    drop(tx2);
    assert_eq!(rx.recv().await, Some(2));
    assert_eq!(rx.recv().await, Some(4));
    assert_eq!(rx.recv().await, None);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    let (tx, rx) = mpsc::channel::<u8>(1);
    drop(rx);
    assert!(tx.is_closed());
    let err = tx.send(9).await.unwrap_err();
    assert_eq!(err.0, 9);
    assert!(err.to_string().contains("receiver was dropped"));
    let (tx, rx) = oneshot::channel::<u8>();
    drop(tx);
    assert_eq!(rx.await, Err(oneshot::RecvError));
});

// Blocking receives accept "no deadline" (Duration::MAX) without overflowing.
#[test]
fn blocking_receive_without_deadline() {
    let (tx, mut rx) = oneshot::channel::<u8>();
    std::thread::spawn(move || tx.send(5).unwrap());
    assert_eq!(rx.recv_blocking(std::time::Duration::MAX).unwrap(), 5);
    let (tx, mut rx) = mpsc::channel::<u8>(1);
    std::thread::spawn(move || tx.try_send(6).unwrap());
    assert_eq!(rx.recv_blocking(std::time::Duration::MAX).unwrap(), 6);
}

/// A waker whose live clones are counted through its Arc's strong count; waking does
/// nothing (tests poll by hand).
struct CountWaker;
impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {}
}

/// Live clones of a [`CountWaker`] besides `counter` itself and the test's own `Waker`.
fn registered(counter: &Arc<CountWaker>) -> usize {
    Arc::strong_count(counter) - 2
}

/// A waker that records that it was woken.
#[derive(Default)]
struct FlagWaker(AtomicBool);
impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A pending send polled 1000 times (a select loop whose other branches keep firing)
/// keeps one waker in the channel, replaced when the task's waker changes.
fn pending_send_keeps_one_waker<F>(send: impl FnOnce() -> F)
where
    F: Future<Output = Result<(), coring::sync::SendError<u32>>>,
{
    let counter = Arc::new(CountWaker);
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    let mut send = pin!(send());
    for _ in 0..1000 {
        assert!(send.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(
        registered(&counter),
        1,
        "one pending send holds this many wakers"
    );
    // Polled from another task: the channel holds that task's waker instead.
    let other = Waker::from(Arc::new(CountWaker));
    assert!(send
        .as_mut()
        .poll(&mut Context::from_waker(&other))
        .is_pending());
    assert_eq!(registered(&counter), 0);
}

// Failed before the fix: every poll pushed another waker clone.
#[test]
fn mpsc_pending_send_keeps_one_waker() {
    common::with_watchdog("mpsc_pending_send_keeps_one_waker", || {
        let (tx, _rx) = mpsc::channel::<u32>(1);
        tx.try_send(0).unwrap();
        pending_send_keeps_one_waker(|| tx.send(1));
    });
}

// Failed before the fix: every poll pushed another waker clone.
#[test]
fn local_pending_send_keeps_one_waker() {
    common::with_watchdog("local_pending_send_keeps_one_waker", || {
        let (tx, _rx) = local::mpsc::channel::<u32>(1);
        tx.try_send(0).unwrap();
        pending_send_keeps_one_waker(|| tx.send(1));
    });
}

/// 1000 sends given up by a zero `timeout` (each polled once by hand, so it registers
/// before the timeout elapses) leave no waker behind; a live pending send keeps its one.
async fn timed_out_sends_leave_no_wakers<F>(
    send: impl Fn(u32) -> F,
    mut try_recv: impl FnMut() -> Result<u32, TryRecvError>,
) where
    F: Future<Output = Result<(), coring::sync::SendError<u32>>>,
{
    let counter = Arc::new(CountWaker);
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    let mut live = pin!(send(1));
    assert!(live.as_mut().poll(&mut cx).is_pending());
    for i in 0..1000 {
        let attempt = pin!(coring::time::timeout(Duration::ZERO, send(i + 2)));
        assert!(matches!(attempt.poll(&mut cx), Poll::Ready(Err(_))));
    }
    assert_eq!(
        registered(&counter),
        1,
        "wakers left by 1000 dropped sends + 1 live"
    );
    // The live send was first in line: the receive wakes it, and it sends.
    assert_eq!(try_recv(), Ok(0));
    assert!(matches!(live.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(registered(&counter), 0);
    assert_eq!(try_recv(), Ok(1));
    coring::task::yield_now().await;
}

// Failed before the fix: each dropped send left its waker in the list (1001 of them).
coring_test!(timed_out_sends_leave_no_wakers_mpsc, async {
    let (tx, mut rx) = mpsc::channel::<u32>(1);
    tx.try_send(0).unwrap();
    timed_out_sends_leave_no_wakers(|v| tx.send(v), || rx.try_recv()).await;
});

// Failed before the fix: each dropped send left its waker in the list (1001 of them).
coring_test!(timed_out_sends_leave_no_wakers_local, async {
    let (tx, mut rx) = local::mpsc::channel::<u32>(1);
    tx.try_send(0).unwrap();
    timed_out_sends_leave_no_wakers(|v| tx.send(v), || rx.try_recv()).await;
});

/// Four senders wait on a full channel (filled by the caller with `queued` values, 0 up);
/// the one the first receive wakes is dropped without being polled (a lost select branch).
/// Polling only the senders that were woken, as an executor does, and draining all that is
/// queued between rounds, the other three still all send.
fn dropped_woken_sender_strands_no_one<F>(
    queued: u32,
    send: impl Fn(u32) -> F,
    mut try_recv: impl FnMut() -> Result<u32, TryRecvError>,
) where
    F: Future<Output = Result<(), coring::sync::SendError<u32>>>,
{
    let flags: Vec<Arc<FlagWaker>> = (0..4).map(|_| Arc::default()).collect();
    let wakers: Vec<Waker> = flags.iter().map(|f| Waker::from(f.clone())).collect();
    let mut sends: Vec<Option<Pin<Box<F>>>> =
        (0..4).map(|i| Some(Box::pin(send(100 + i)))).collect();
    for (s, w) in sends.iter_mut().zip(&wakers) {
        let s = s.as_mut().unwrap();
        assert!(s.as_mut().poll(&mut Context::from_waker(w)).is_pending());
    }
    let mut got = vec![try_recv().unwrap()];
    let woken = flags.iter().position(|f| f.0.load(Ordering::SeqCst));
    let dropped = woken.expect("a receive from a full channel woke no sender");
    sends[dropped] = None;
    for _round in 0..20 {
        for (i, s) in sends.iter_mut().enumerate() {
            if s.is_some() && flags[i].0.swap(false, Ordering::SeqCst) {
                let cx = &mut Context::from_waker(&wakers[i]);
                if let Poll::Ready(r) = s.as_mut().unwrap().as_mut().poll(cx) {
                    r.unwrap();
                    *s = None;
                }
            }
        }
        while let Ok(v) = try_recv() {
            got.push(v);
        }
        let woken = (0..4).any(|i| sends[i].is_some() && flags[i].0.load(Ordering::SeqCst));
        if sends.iter().all(Option::is_none) {
            break;
        }
        assert!(
            woken,
            "senders {:?} wait on an empty channel, none woken",
            pending(&sends)
        );
    }
    let mut expected: Vec<u32> = (0..queued).collect();
    expected.extend((0..4).filter(|&i| i != dropped as u32).map(|i| 100 + i));
    got.sort_unstable();
    assert_eq!(got, expected);
}

/// Indices of the send futures still alive.
fn pending<F>(sends: &[Option<F>]) -> Vec<usize> {
    (0..sends.len()).filter(|&i| sends[i].is_some()).collect()
}

// Guards the wake-one policy (the old code woke every waiting sender, so it passed): a
// dropped woken sender passes its wake on, and every receive wakes a sender, not only
// one from a full queue (capacity 2 shows the difference).
#[test]
fn mpsc_dropped_woken_sender_strands_no_one() {
    common::with_watchdog("mpsc_dropped_woken_sender_strands_no_one", || {
        for capacity in [1, 2] {
            let (tx, mut rx) = mpsc::channel::<u32>(capacity as usize);
            (0..capacity).for_each(|v| tx.try_send(v).unwrap());
            dropped_woken_sender_strands_no_one(capacity, |v| tx.send(v), || rx.try_recv());
        }
    });
}

// Guards the wake-one policy, as above, for the single-core channel.
#[test]
fn local_dropped_woken_sender_strands_no_one() {
    common::with_watchdog("local_dropped_woken_sender_strands_no_one", || {
        for capacity in [1, 2] {
            let (tx, mut rx) = local::mpsc::channel::<u32>(capacity as usize);
            (0..capacity).for_each(|v| tx.try_send(v).unwrap());
            dropped_woken_sender_strands_no_one(capacity, |v| tx.send(v), || rx.try_recv());
        }
    });
}

/// A waker that, when woken, looks at the channel it waits on (as an executor that polls
/// the woken task at once would).
struct ReentrantWaker(Mutex<Option<mpsc::Sender<u32>>>);
impl Wake for ReentrantWaker {
    fn wake(self: Arc<Self>) {
        if let Some(tx) = self.0.lock().unwrap().as_ref() {
            let _ = tx.is_closed();
        }
    }
}

// Failed before the fix (deadlock): mpsc's receive woke the waiting senders while it held
// the channel's lock.
#[test]
fn mpsc_recv_wakes_senders_outside_the_lock() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (tx, mut rx) = mpsc::channel::<u32>(1);
        tx.try_send(0).unwrap();
        let w = Arc::new(ReentrantWaker(Mutex::new(Some(tx.clone()))));
        let waker = Waker::from(w.clone());
        let mut cx = Context::from_waker(&waker);
        let mut send = pin!(tx.send(1));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(rx.try_recv(), Ok(0));
        // The same through recv_blocking.
        assert!(send.as_mut().poll(&mut cx).is_ready());
        let mut send = pin!(tx.send(2));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(rx.recv_blocking(Duration::from_secs(1)).unwrap(), 1);
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(3))
        .expect("a receive deadlocked: it woke a sender while holding the channel lock");
}

/// Runs `fut` on this thread, parking between polls; panics if no wake comes within
/// 5 s of a pending poll (a lost wake-up).
fn park_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread, AtomicBool);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.1.store(true, Ordering::SeqCst);
            self.0.unpark();
        }
    }
    let unpark = Arc::new(Unpark(std::thread::current(), AtomicBool::new(false)));
    let waker = Waker::from(unpark.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !unpark.1.swap(false, Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "a pending send was never woken");
            std::thread::park_timeout(left);
        }
    }
}

// Guards the wake-one policy across threads: senders register and cancel while the
// receiver pops, and no send is left waiting (the old code woke every waiter, so it
// passed). Capacity 2, so that receives from a queue that was not full must wake too.
#[test]
fn mpsc_threads_racing_send_cancel_and_recv_lose_no_wakeup() {
    common::with_watchdog(
        "mpsc_threads_racing_send_cancel_and_recv_lose_no_wakeup",
        || {
            const THREADS: u32 = 3;
            const EACH: u32 = 500;
            let (tx, mut rx) = mpsc::channel::<u32>(2);
            let senders: Vec<_> = (0..THREADS)
                .map(|t| {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let noop = Waker::from(Arc::new(CountWaker));
                        for i in 0..EACH {
                            if i % 3 == 0 {
                                // A send polled once and given up: registered, maybe woken.
                                // (If it found room, its u32::MAX went in; the receiver skips it.)
                                let mut cancelled = pin!(tx.send(u32::MAX));
                                let _ = cancelled.as_mut().poll(&mut Context::from_waker(&noop));
                            }
                            park_on(tx.send(t * EACH + i)).unwrap();
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut got = Vec::new();
            loop {
                let v = match rx.recv_blocking(Duration::from_secs(10)) {
                    Ok(v) => v,
                    Err(e) if e.is_closed() => break,
                    Err(e) => panic!("receive: {e}"),
                };
                if v != u32::MAX {
                    got.push(v);
                }
            }
            for s in senders {
                s.join().unwrap();
            }
            got.sort_unstable();
            assert_eq!(got, (0..THREADS * EACH).collect::<Vec<_>>());
        },
    );
}
