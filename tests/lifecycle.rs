//! Operation lifecycle under cancellation, submit errors, tiny rings and shutdown.

mod common;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{eventually, DropFlagBuf, TempDir};
use coring::fs::File;
use coring::time::{sleep, timeout};

/// A connected stream socket: a Unix stream, or on Windows (which coring gives no Unix
/// sockets) a TCP connection on the loopback.
#[cfg(unix)]
type Stream = coring::net::UnixStream;
#[cfg(windows)]
type Stream = coring::net::TcpStream;
#[cfg(unix)]
type StdStream = std::os::unix::net::UnixStream;
#[cfg(windows)]
type StdStream = std::net::TcpStream;

/// A connected pair of std stream sockets.
fn std_pair() -> (StdStream, StdStream) {
    #[cfg(unix)]
    return StdStream::pair().unwrap();
    #[cfg(windows)]
    {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = StdStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }
}

/// A connected pair of coring stream sockets.
fn pair() -> (Stream, Stream) {
    #[cfg(unix)]
    return Stream::pair().unwrap();
    #[cfg(windows)]
    {
        let (a, b) = std_pair();
        (Stream::from_std(a).unwrap(), Stream::from_std(b).unwrap())
    }
}

/// A connected stream pair whose first socket's send buffer is full (its peer never
/// reads), so a write on it lends the caller's buffer to the kernel and stays pending on
/// every backend until cancelled. (A UDP receive used to serve here, but a dropped one is
/// now kept by its socket, not cancelled (tests/udp.rs); a stream read on io_uring copies
/// from the runtime's provided buffers, see tests/multishot.rs.)
fn full_stream() -> (Stream, Stream) {
    let (a, b) = std_pair();
    a.set_nonblocking(true).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    loop {
        match std::io::Write::write(&mut &a, &chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the socket: {e}"),
        }
    }
    // Windows: an overlapped send on a non-blocking socket may fail at once with
    // WSAEWOULDBLOCK instead of waiting, and coring leaves a socket's mode as it is there.
    #[cfg(windows)]
    a.set_nonblocking(false).unwrap();
    (Stream::from_std(a).unwrap(), Stream::from_std(b).unwrap())
}
/// A buffer of `len` initialised bytes to write, that records when it is dropped.
fn write_buf(len: usize) -> (DropFlagBuf, Rc<Cell<bool>>) {
    let (mut buf, dropped) = DropFlagBuf::new(len);
    buf.vec.resize(len, 1);
    (buf, dropped)
}

// Dropping an in-flight write keeps its buffer until the kernel's final completion (the
// cancel's ECANCELED here), and the cancel makes that completion come promptly.
coring_test!(dropped_write_keeps_buffer_until_completion, |builder| {
    let rt = builder.build().unwrap();
    let (buf, dropped) = write_buf(64);
    common::block_on_bounded(&rt, async {
        let (a, _b) = full_stream();
        let res = timeout(Duration::from_millis(20), a.write(buf)).await;
        assert!(
            res.is_err(),
            "the send buffer is full, the write must still be pending"
        );
        // The future is gone, the kernel still owns the write: the buffer must live on.
        assert!(
            !dropped.get(),
            "buffer freed while the kernel still owned it"
        );
        eventually("cancelled write to complete", || dropped.get()).await;
    });
    let m = rt.metrics();
    assert_eq!(m.ops_orphaned, 1, "{m:?}");
    assert_eq!(rt.ops_in_flight(), 0);
});

// The same with many writes and no explicit timeout: aborting tasks drops their writes,
// which go to the driver as orphans (not freed at the drop) and are freed after their
// completions.
coring_test!(aborted_tasks_release_buffers_after_completion, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let (a, _b) = full_stream();
        let a = Rc::new(a);
        let mut flags = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..64 {
            let (buf, dropped) = write_buf(16);
            flags.push(dropped);
            let a = a.clone();
            handles.push(coring::spawn(async move { a.write(buf).await.0 }));
        }
        coring::task::yield_now().await;
        sleep(Duration::from_millis(5)).await;
        assert!(
            flags.iter().all(|f| !f.get()),
            "a pending write's buffer was freed"
        );
        for h in &handles {
            h.abort();
        }
        for h in handles {
            assert!(h.await.unwrap_err().is_cancelled());
        }
        eventually("all cancelled writes to complete", || {
            flags.iter().all(|f| f.get())
        })
        .await;
    });
    let m = rt.metrics();
    assert_eq!(m.ops_orphaned, 64, "{m:?}");
    assert_eq!(rt.ops_in_flight(), 0);
});

// A write that completes after its future was dropped (at submission, before the runtime
// reaped its completion) sends from its own buffer, which is freed only at the reap.
// A write into a socket with room completes at submission: on io_uring in the kernel (the
// future sees it at the next reap); on the fallback during the submitting poll, until the
// task's inline budget for that poll is spent, after which writes are queued and reaped
// too. So: write, all within one poll of this task, until one write is not ready at once,
// and drop that one.
coring_test!(late_completion_after_drop_is_cleaned_up, async {
    let (a, b) = pair();
    let mut before = 0;
    let dropped = loop {
        let (mut buf, dropped) = DropFlagBuf::new(8);
        buf.vec.extend_from_slice(b"ready");
        let mut write = Box::pin(a.write(buf));
        match common::poll_once(&mut write).await {
            std::task::Poll::Ready((r, _)) => {
                assert_eq!(r.unwrap(), 5);
                before += 5;
                assert!(
                    before < 64 * 1024,
                    "every write completed in its first poll"
                );
            }
            std::task::Poll::Pending => {
                drop(write);
                break dropped;
            }
        }
    };
    assert!(!dropped.get(), "freed before the completion was reaped");
    eventually("orphaned write to be reaped", || dropped.get()).await;
    let (r, got) = b.read_exact(Vec::with_capacity(before + 5)).await;
    r.unwrap();
    assert!(
        got.ends_with(b"ready"),
        "the dropped write's bytes were sent"
    );
});

/// An error a kernel entry cannot go on after: EFAULT, or on Windows `ERROR_NOACCESS`.
#[cfg(unix)]
const FATAL_ENTER_ERROR: i32 = libc::EFAULT;
#[cfg(windows)]
const FATAL_ENTER_ERROR: i32 = 998;

/// The transient kernel-entry errors: EINTR, EAGAIN, EBUSY, or on Windows their
/// counterparts the runtime retries (`WSAEINTR`, `WSAEWOULDBLOCK`, `ERROR_BUSY`).
#[cfg(unix)]
const TRANSIENT_ENTER_ERRORS: [i32; 3] = [libc::EINTR, libc::EAGAIN, libc::EBUSY];
#[cfg(windows)]
const TRANSIENT_ENTER_ERRORS: [i32; 3] = [10004, 10035, 170];

// io_uring_enter failing after the SQE was pushed: the op is never freed early, not even
// when the failure is fatal and block_on panics.
coring_test!(submit_error_orphans_the_op, |builder| {
    let rt = builder
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (a, b) = full_stream();
    let (buf, dropped) = write_buf(64);
    let flag = dropped.clone();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            rt.inject_enter_errors(&[FATAL_ENTER_ERROR]);
            a.write(buf).await.0
        })
    }));
    let msg = outcome.expect_err("a fatal enter error must panic block_on");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("cannot continue"), "panic message: {msg}");
    // The future was dropped while unwinding; the write may still be in the kernel's hands.
    assert!(!flag.get(), "buffer freed after a failed submit");
    drop(b);
    // Shutdown cancels, waits for the completion, then frees.
    drop(rt);
    assert!(
        dropped.get(),
        "buffer must be freed once the kernel finished with it"
    );
});

// EINTR, EAGAIN and EBUSY from io_uring_enter are retried; nothing is lost.
coring_test!(transient_enter_errors_are_retried, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        for errno in TRANSIENT_ENTER_ERRORS {
            rt.inject_enter_errors(&[errno, errno, errno, errno, errno]);
            let mut handles = Vec::new();
            for _ in 0..32 {
                handles.push(coring::spawn(coring::nop()));
            }
            for h in handles {
                h.await.unwrap().unwrap();
            }
        }
    });
    assert!(rt.metrics().enter_retries >= 15, "{:?}", rt.metrics());
});

// A 4-entry ring (8 CQ entries) with 10,000 concurrent operations: the submission queue
// fills and the completion queue overflows constantly, yet every result arrives.
coring_test!(tiny_ring_delivers_every_result, |builder| {
    let rt = builder.entries(4).build().unwrap();
    let dir = TempDir::new("tiny");
    let path = dir.path("data");
    let data: Vec<u8> = (0..80_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let data = Rc::new(data);
    common::block_on_bounded(&rt, async {
        let file = Rc::new(File::open(&path).await.unwrap());
        let done = Rc::new(Cell::new(0usize));
        let mut handles = Vec::with_capacity(10_000);
        for i in 0..10_000usize {
            let file = file.clone();
            let data = data.clone();
            let done = done.clone();
            handles.push(coring::spawn(async move {
                match i % 3 {
                    0 => coring::nop().await.unwrap(),
                    1 => {
                        let off = (i * 8) % (data.len() - 8);
                        let (r, buf) = file.read_at(Vec::with_capacity(8), off as u64).await;
                        assert_eq!(r.unwrap(), 8);
                        assert_eq!(&buf[..], &data[off..off + 8], "read {i} at {off}");
                    }
                    _ => sleep(Duration::from_millis((i % 7) as u64)).await,
                }
                done.set(done.get() + 1);
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(done.get(), 10_000);
    });
    let m = rt.metrics();
    assert!(m.ops_completed >= 6_667, "{m:?}");
    assert_eq!(rt.ops_in_flight(), 0);
});

// Dropping the runtime with tasks and operations in flight cancels them, waits for the
// completions, then frees the buffers; the sockets are closed.
coring_test!(runtime_drop_cancels_in_flight_ops, |builder| {
    let baseline = common::fd_count();
    let rt = builder.build().unwrap();
    let (a, b) = pair();
    let a = Rc::new(a);
    let mut flags = Vec::new();
    rt.block_on(async {
        for _ in 0..100 {
            let (buf, dropped) = DropFlagBuf::new(32);
            flags.push(dropped);
            let a = a.clone();
            drop(coring::spawn(async move { a.read(buf).await.0 }));
        }
        sleep(Duration::from_millis(10)).await;
    });
    assert_eq!(rt.live_tasks(), 100);
    assert!(flags.iter().all(|f| !f.get()));
    drop(a);
    let started = Instant::now();
    drop(rt);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown should not need its whole deadline"
    );
    assert!(
        flags.iter().all(|f| f.get()),
        "every buffer freed after its completion"
    );
    drop(b);
    // Other tests in this binary may open descriptors concurrently; ours are all closed.
    assert!(common::fd_count() <= baseline + 8);
});

/// CPU time this thread has used so far.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time this thread has used so far (kernel and user time, `GetThreadTimes`).
#[cfg(windows)]
fn thread_cpu_time() -> Duration {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetCurrentThread, GetThreadTimes};
    let zero = || FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero(), zero(), zero(), zero());
    // SAFETY: writes four FILETIMEs into live locals, for this thread's pseudo-handle.
    let ok = unsafe {
        GetThreadTimes(
            GetCurrentThread(),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    assert!(ok != 0, "GetThreadTimes failed");
    let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    // 100 ns units.
    Duration::from_nanos((ticks(kernel) + ticks(user)) * 100)
}

// An idle runtime sleeps in the kernel: a 1 s sleep takes a handful of loop turns and
// almost no CPU (a busy loop would burn the whole second).
coring_test!(idle_runtime_sleeps_in_kernel, |builder| {
    let rt = builder.build().unwrap();
    let cpu = thread_cpu_time;
    let before = rt.metrics();
    let cpu0 = cpu();
    rt.block_on(sleep(Duration::from_secs(1)));
    let used = cpu() - cpu0;
    let m = rt.metrics();
    let parks = m.parks - before.parks;
    assert!(parks <= 5, "a 1 s sleep parked {parks} times: {m:?}");
    // Deliberately loose (10x the target) so a noisy machine cannot fail it; the park count
    // above is the precise check.
    assert!(
        used < Duration::from_millis(100),
        "1 s idle sleep used {used:?} of CPU"
    );
});

// shutdown_timeout(Duration::MAX): dropping the runtime waits as long as it takes, and
// must not overflow `Instant + Duration` (it used to panic in Drop, skipping the wait).
coring_test!(an_unbounded_shutdown_timeout_does_not_overflow, |builder| {
    let rt = builder.shutdown_timeout(Duration::MAX).build().unwrap();
    rt.block_on(async {
        // One operation the drop must cancel and wait for.
        let (a, _b) = pair();
        let a = Box::leak(Box::new(a));
        drop(coring::spawn(
            async move { a.read(Vec::with_capacity(8)).await },
        ));
        coring::task::yield_now().await;
    });
    let r = catch_unwind(AssertUnwindSafe(|| drop(rt)));
    assert!(r.is_ok(), "dropping the runtime panicked");
});

// Ring sizes the kernel would refuse (or that leave no room for the runtime's own wake-up
// read) are a panic naming the limit, not a silent "io_uring unavailable" fallback.
#[test]
fn bad_ring_sizes_panic_with_the_limit() {
    let msg = |r: std::thread::Result<coring::Builder>| {
        let e = r.map(drop).expect_err("accepted");
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let one = msg(catch_unwind(|| coring::Builder::new().entries(1)));
    assert!(one.contains("2..=32768"), "{one}");
    let big = msg(catch_unwind(|| coring::Builder::new().entries(65536)));
    assert!(big.contains("2..=32768"), "{big}");
    let cq = msg(catch_unwind(|| coring::Builder::new().cq_entries(1 << 17)));
    assert!(cq.contains("65536"), "{cq}");
    let small_cq = catch_unwind(|| {
        let _ = coring::Builder::new().entries(64).cq_entries(8).build();
    });
    let small_cq = small_cq.expect_err("cq smaller than sq accepted");
    let small_cq = small_cq
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(small_cq.contains("at least as large"), "{small_cq}");
}

// An operation submitted on one runtime and then awaited on another would never complete
// (only its own runtime turns its driver): a panic that says so, instead of a silent hang.
#[test]
fn an_op_awaited_on_another_runtime_panics_with_advice() {
    for &kind in common::BACKENDS {
        common::with_watchdog("an_op_awaited_on_another_runtime", || {
            let rt_a = coring::Builder::new().backend(kind).build().unwrap();
            let rt_b = coring::Builder::new().backend(kind).build().unwrap();
            #[cfg(unix)]
            let (rd, _wr) = {
                let mut fds = [0; 2];
                // SAFETY: fds has room for the two descriptors pipe returns.
                assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
                // SAFETY: both descriptors were just created and are owned here, once each.
                unsafe {
                    use std::os::fd::FromRawFd;
                    (
                        std::fs::File::from_raw_fd(fds[0]),
                        std::fs::File::from_raw_fd(fds[1]),
                    )
                }
            };
            #[cfg(windows)]
            let (rd, _wr) = common::win_pipe();
            // A read of an empty pipe through File: a plain operation that waits (a stream
            // read would be kept by its stream instead).
            let rd: &'static File = Box::leak(Box::new(File::from_std(rd)));
            let mut read = Box::pin(async move { rd.read_at(Vec::with_capacity(8), 0).await });
            rt_a.block_on(async {
                assert!(common::poll_once(&mut read).await.is_pending());
            });
            let r = catch_unwind(AssertUnwindSafe(|| {
                rt_b.block_on(async { coring::time::timeout(Duration::from_secs(5), read).await })
            }));
            let e = r
                .map(drop)
                .expect_err("awaiting it on another runtime did not panic");
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(
                msg.contains("await it on the runtime that started it"),
                "{msg}"
            );
        });
    }
}

/// A buffer whose `Drop` panics: a user bug the runtime must contain.
struct PanicBuf(Vec<u8>);

impl Drop for PanicBuf {
    fn drop(&mut self) {
        panic!("PanicBuf dropped (a user Drop that panics, on purpose)");
    }
}

// SAFETY: delegates to the inner Vec, whose heap pointer is stable across moves.
unsafe impl coring::buf::IoBuf for PanicBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.0.len()
    }
    fn bytes_total(&self) -> usize {
        self.0.capacity()
    }
}

// SAFETY: delegates to the inner Vec.
unsafe impl coring::buf::IoBufMut for PanicBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { coring::buf::IoBufMut::set_init(&mut self.0, pos) }
    }
}

/// A pipe as two std files: the read end for a coring `File`, the write end kept open so
/// the read waits.
#[cfg(windows)]
fn pipe_files() -> (File, std::fs::File) {
    let (rd, wr) = common::win_pipe();
    (File::from_std(rd), wr)
}

/// A pipe as two std files: the read end for a coring `File`, the write end kept open so
/// the read waits.
#[cfg(unix)]
fn pipe_files() -> (File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array. (Not pipe2: macOS lacks it.)
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe {
        use std::os::fd::FromRawFd;
        (
            File::from(std::os::fd::OwnedFd::from_raw_fd(fds[0])),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

// A cancelled read whose buffer's `Drop` panics, finished by the runtime after the kernel's
// final completion: the panic is contained (as a task's is), the other orphans of the
// batch are finished all the same (their buffers dropped), `block_on` returns and the
// runtime keeps working (issue 14, defect 1).
coring_test!(
    panicking_drop_of_an_orphans_buffer_is_contained,
    |builder| {
        let rt = builder.build().unwrap();
        let (p1, _w1) = pipe_files();
        let (p2, _w2) = pipe_files();
        let (other, other_dropped) = DropFlagBuf::new(16);
        common::block_on_bounded(&rt, async {
            let a = coring::spawn(async move {
                let buf = PanicBuf(Vec::with_capacity(16));
                let r = timeout(Duration::from_millis(10), p1.read_at(buf, 0)).await;
                assert!(r.is_err(), "nothing was written: the read times out");
            });
            let b = coring::spawn(async move {
                let r = timeout(Duration::from_millis(10), p2.read_at(other, 0)).await;
                assert!(r.is_err(), "nothing was written: the read times out");
            });
            a.await.unwrap();
            b.await.unwrap();
            eventually("the orphans to be finished", || {
                other_dropped.get() && rt.ops_in_flight() == 0
            })
            .await;
            coring::nop().await.unwrap();
        });
        assert_eq!(rt.ops_in_flight(), 0);
    }
);
