//! Thread-per-core pools: cross-core spawn, channels, wakeups, pinning, shutdown.
//!
//! Every test runs on every backend of the platform (the `pool_test!` macro, as
//! `coring_test!`: io_uring on Linux, the fallback on Unix, IOCP on Windows). Tests in this binary run one
//! at a time: they start threads on every CPU and some count process descriptors.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coring::sync::{mpsc, oneshot};
use coring::{BackendKind, Pool};

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

fn pool(kind: BackendKind) -> Pool {
    Pool::builder().backend(kind).build().expect("pool")
}

pool_test!(spawn_on_and_broadcast, |kind| {
    let pool = pool(kind);
    let n = pool.cores();
    assert!(n >= 1);
    for i in 0..n {
        assert_eq!(pool.core_info(i).backend, kind);
        let mut h = pool.spawn_on(i, move || async move {
            // A !Send value lives on the core.
            let rc = std::rc::Rc::new(coring::current_core().unwrap());
            coring::time::sleep(Duration::from_millis(1)).await;
            *rc * 100
        });
        assert_eq!(h.wait(WAIT).unwrap(), i * 100);
    }
    let all: Vec<usize> = pool
        .broadcast(|| async { coring::current_core().unwrap() })
        .into_iter()
        .map(|mut h| h.wait(WAIT).unwrap())
        .collect();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    // A handle awaited on another core.
    let last = n - 1;
    let inner = pool.spawn_on(last, || async { "from the last core" });
    let mut outer = pool.spawn_on(0, move || async move { inner.await.unwrap() });
    assert_eq!(outer.wait(WAIT).unwrap(), "from the last core");
    pool.shutdown().unwrap();
});

pool_test!(panicking_task_is_reported, |kind| {
    let pool = pool(kind);
    let mut h = pool.spawn_on(0, || async { panic!("core task failed on purpose") });
    let err = h.wait(WAIT).unwrap_err();
    assert!(err.is_panic(), "{err}");
    // The core survives.
    assert_eq!(pool.spawn_on(0, || async { 1 }).wait(WAIT).unwrap(), 1);
    pool.shutdown().unwrap();
});

// 100,000 messages from senders on every core to a receiver on core 0: each arrives once,
// in order per sender, and backpressure (capacity 64) holds the senders back.
pool_test!(cross_core_mpsc_exactly_once_in_order, |kind| {
    let pool = pool(kind);
    let cores = pool.cores();
    let per_sender = 100_000 / cores;
    let (tx, mut rx) = mpsc::channel::<(usize, usize)>(64);
    let mut receiver = pool.spawn_on(0, move || async move {
        let mut next: HashMap<usize, usize> = HashMap::new();
        let mut total = 0usize;
        let mut max_len = 0usize;
        while let Some((sender, seq)) = rx.recv().await {
            max_len = max_len.max(rx.len());
            let expected = next.entry(sender).or_insert(0);
            assert_eq!(seq, *expected, "sender {sender} out of order");
            *expected += 1;
            total += 1;
        }
        (total, next, max_len)
    });
    let senders: Vec<_> = (0..cores)
        .map(|c| {
            let tx = tx.clone();
            pool.spawn_on(c, move || async move {
                for seq in 0..per_sender {
                    tx.send((c, seq)).await.unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    for mut s in senders {
        s.wait(WAIT).unwrap();
    }
    let (total, next, max_len) = receiver.wait(WAIT).unwrap();
    assert_eq!(total, per_sender * cores);
    assert!(next.values().all(|&n| n == per_sender), "{next:?}");
    assert!(max_len <= 64, "capacity exceeded: {max_len}");
    pool.shutdown().unwrap();
});

// A receiver parked on core A is woken by a send from core B (or from a plain thread),
// while an idle pool uses (almost) no CPU: the cores sleep in the kernel.
pool_test!(
    blocked_receiver_woken_across_cores_and_idle_is_quiet,
    |kind| {
        let pool = pool(kind);
        let last = pool.cores() - 1;
        let (tx, rx) = oneshot::channel::<Instant>();
        let mut waiter = pool.spawn_on(0, move || async move { rx.await.unwrap() });
        std::thread::sleep(Duration::from_millis(50));
        let mut sender = pool.spawn_on(last, move || async move {
            tx.send(Instant::now()).unwrap();
        });
        sender.wait(WAIT).unwrap();
        let sent_at = waiter.wait(WAIT).unwrap();
        assert!(sent_at.elapsed() < WAIT);
        // From outside any runtime, too.
        let (tx, mut rx) = mpsc::channel::<u32>(1);
        let mut waiter = pool.spawn_on(last, move || async move { rx.recv().await });
        std::thread::sleep(Duration::from_millis(20));
        tx.try_send(7).unwrap();
        assert_eq!(waiter.wait(WAIT).unwrap(), Some(7));
        // Idle: measure the whole process's CPU over half a second.
        let before = process_cpu_time();
        std::thread::sleep(Duration::from_millis(500));
        let used = process_cpu_time() - before;
        // A polling pool would burn ~500 ms per core; the bound is loose on purpose.
        assert!(
            used < Duration::from_millis(100),
            "idle pool used {used:?} CPU in 500 ms"
        );
        pool.shutdown().unwrap();
    }
);

/// The CPU time (user and system) the whole process has used.
#[cfg(unix)]
fn process_cpu_time() -> Duration {
    // SAFETY: rusage is plain integers; all-zeroes is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    Duration::new(ru.ru_utime.tv_sec as u64, ru.ru_utime.tv_usec as u32 * 1000)
        + Duration::new(ru.ru_stime.tv_sec as u64, ru.ru_stime.tv_usec as u32 * 1000)
}

/// The CPU time (user and system) the whole process has used.
#[cfg(windows)]
fn process_cpu_time() -> Duration {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessTimes};
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: writes four FILETIMEs into live locals, for the current process's
    // pseudo-handle.
    let ok = unsafe {
        GetProcessTimes(
            GetCurrentProcess(),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    assert!(
        ok != 0,
        "GetProcessTimes: {}",
        std::io::Error::last_os_error()
    );
    // FILETIME counts 100 ns units.
    let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    Duration::from_nanos((ticks(kernel) + ticks(user)) * 100)
}

/// Two connected streams: a Unix socketpair on Unix; a loopback TCP connection on
/// Windows, which has no socketpair (and coring offers no Unix-domain sockets there).
#[cfg(unix)]
fn stream_pair() -> (coring::net::UnixStream, coring::net::UnixStream) {
    coring::net::UnixStream::pair().unwrap()
}

/// Two connected streams: a Unix socketpair on Unix; a loopback TCP connection on
/// Windows, which has no socketpair (and coring offers no Unix-domain sockets there).
#[cfg(windows)]
fn stream_pair() -> (coring::net::TcpStream, coring::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (
        coring::net::TcpStream::from_std(a).unwrap(),
        coring::net::TcpStream::from_std(b).unwrap(),
    )
}

// Shutdown with tasks and operations in flight on every core is bounded and closes every
// descriptor those tasks held.
pool_test!(
    shutdown_with_work_in_flight_is_bounded_and_leak_free,
    |kind| {
        let baseline = common::fd_count();
        let pool = pool(kind);
        let handles = pool.broadcast(|| async {
            let (a, b) = stream_pair();
            let listener = coring::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let reader = coring::spawn(async move { a.read(Vec::with_capacity(16)).await.0 });
            let acceptor = coring::spawn(async move { listener.accept().await.map(drop) });
            coring::time::sleep(Duration::from_secs(3600)).await;
            drop((reader, acceptor, b));
        });
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        pool.shutdown().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        for mut h in handles {
            assert!(h.wait(WAIT).unwrap_err().is_closed());
        }
        assert_eq!(
            common::fd_count(),
            baseline,
            "descriptors leaked by shutdown"
        );
    }
);

// Each core thread is pinned to its CPU (checked with sched_getaffinity inside it); a CPU
// that does not exist is a clear error, and unpinned mode accepts any label.
pool_test!(pinning_is_verified_and_degrades_clearly, |kind| {
    let pool = pool(kind);
    for i in 0..pool.cores() {
        let cpu = pool.core_info(i).cpu.expect("pinned by default");
        let set = pool
            .spawn_on(i, || async { thread_affinity() })
            .wait(WAIT)
            .unwrap();
        if let Some(set) = set {
            assert_eq!(set, vec![cpu], "core {i} affinity");
        }
    }
    pool.shutdown().unwrap();
    let err = Pool::builder()
        .backend(kind)
        .cpu_list([4096])
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("pin(false)"), "{err}");
    let unpinned = Pool::builder()
        .backend(kind)
        .cpu_list([4096])
        .pin(false)
        .build()
        .unwrap();
    assert_eq!(unpinned.core_info(0).cpu, None);
    assert_eq!(unpinned.spawn_on(0, || async { 5 }).wait(WAIT).unwrap(), 5);
    unpinned.shutdown().unwrap();
});

/// The CPUs the calling thread may run on (Linux: sched_getaffinity); `None` where the
/// platform has no per-thread affinity to read.
#[cfg(target_os = "linux")]
fn thread_affinity() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bitmask; all-zeroes is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: passes the size of the live set for the kernel to fill.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(
        r,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    Some(
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: c < CPU_SETSIZE, within the set.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect(),
    )
}

#[cfg(not(target_os = "linux"))]
fn thread_affinity() -> Option<Vec<usize>> {
    None
}

// A closure handed to spawn_on that panics while building its future: that is the task's
// panic (reported through its handle), and the core, with its other tasks, carries on. It
// used to run outside any task and unwind out of the core's runtime, cancelling everything
// on the core and closing its mailbox.
pool_test!(a_panic_building_the_future_is_the_tasks_panic, |kind| {
    let pool = pool(kind);
    let mut long = pool.spawn_on(0, || async {
        coring::time::sleep(Duration::from_millis(100)).await;
        7
    });
    let mut bad = pool.spawn_on(0, || -> std::future::Ready<u32> {
        panic!("building the future failed on purpose")
    });
    let err = bad.wait(WAIT).unwrap_err();
    assert!(err.is_panic(), "{err}");
    assert_eq!(
        long.wait(WAIT).unwrap(),
        7,
        "an unrelated task on the core was lost"
    );
    assert_eq!(pool.spawn_on(0, || async { 1 }).wait(WAIT).unwrap(), 1);
    pool.shutdown().unwrap();
});

// shutdown_timeout(Duration::MAX) means "wait as long as it takes": it used to overflow
// `Instant + Duration` and panic in Pool::shutdown, then again in Drop (an abort).
pool_test!(an_unbounded_shutdown_timeout_does_not_overflow, |kind| {
    let pool = Pool::builder()
        .backend(kind)
        .shutdown_timeout(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(pool.spawn_on(0, || async { 2 }).wait(WAIT).unwrap(), 2);
    pool.shutdown().unwrap();
});
