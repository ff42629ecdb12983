//! Ordering and deadlines: `coring::link::link` (IOSQE_IO_LINK on io_uring, emulated in
//! order elsewhere), the `File` helpers built on it, and `coring::time::deadline_for`
//! (IORING_OP_LINK_TIMEOUT on io_uring, the runtime's timer elsewhere).
//!
//! The `coring_test!` tests run on every real backend; the `mock_` tests drive the mock
//! backend, whose completions the test chooses (a short write on demand, a result racing
//! the deadline), on every platform.

mod common;

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::{eventually, poll_once, with_watchdog, TempDir, ECANCELED};
use coring::cancel::{is_cancelled, CancelToken};
use coring::fs::{File, OpenOptions};
use coring::link::link;
use coring::mock::MockHandle;
use coring::net::{TcpListener, TcpStream, UdpSocket};
use coring::task::yield_now;
use coring::time::{deadline_for, timeout};
use coring::{BackendKind, Builder, Runtime};

/// A buffer that counts its drops, to prove each is dropped exactly once (and only once
/// the kernel is done with it).
struct CountedBuf {
    vec: Vec<u8>,
    drops: Rc<Cell<u32>>,
}

impl CountedBuf {
    fn new(data: &[u8], cap: usize) -> (CountedBuf, Rc<Cell<u32>>) {
        let drops = Rc::new(Cell::new(0));
        let mut vec = Vec::with_capacity(cap.max(data.len()));
        vec.extend_from_slice(data);
        (
            CountedBuf {
                vec,
                drops: drops.clone(),
            },
            drops,
        )
    }
}

impl Drop for CountedBuf {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

// SAFETY: delegates to the inner Vec, whose heap pointer is stable across moves.
unsafe impl coring::buf::IoBuf for CountedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.vec.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.vec.len()
    }
    fn bytes_total(&self) -> usize {
        self.vec.capacity()
    }
}

// SAFETY: delegates to the inner Vec.
unsafe impl coring::buf::IoBufMut for CountedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.vec.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { coring::buf::IoBufMut::set_init(&mut self.vec, pos) }
    }
}

/// How many operations the kernel ordered or timed itself: only io_uring does.
fn linked(rt: &Runtime) -> u64 {
    rt.metrics().ops_linked
}

/// What `ops_linked` grows by when `n` operations go to the kernel linked: `n` on
/// io_uring, 0 where the runtime emulates the order.
fn native(backend: BackendKind, n: u64) -> u64 {
    if backend == BackendKind::IoUring {
        n
    } else {
        0
    }
}

/// A connected pair of TCP streams.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (b, _) = listener.accept().await.unwrap();
    (a, b)
}

// Write then fdatasync, linked: both results come back, with the buffer, and the bytes are
// in the file. On io_uring the kernel ordered them (two linked entries).
coring_test!(write_then_sync_returns_both_results, |builder| {
    let rt = builder.build().unwrap();
    let backend = rt.backend();
    let dir = TempDir::new("link-wts");
    let path = dir.path("f");
    let before = linked(&rt);
    common::block_on_bounded(&rt, async {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(&path)
            .await
            .unwrap();
        let ((written, buf), synced) =
            link(file.write_at(b"hello".to_vec(), 0), file.sync_data()).await;
        assert_eq!(written.unwrap(), 5);
        synced.unwrap();
        assert_eq!(buf, b"hello");
        // The same chain with fsync, and a read linked to the next write.
        let ((written, _), synced) =
            link(file.write_at(b" world".to_vec(), 5), file.sync_all()).await;
        assert_eq!(written.unwrap(), 6);
        synced.unwrap();
        let ((read, buf), (written, _)) = link(
            file.read_at(Vec::with_capacity(11), 0),
            file.write_at(b"!".to_vec(), 11),
        )
        .await;
        assert_eq!(read.unwrap(), 11, "a full read lets the write go");
        assert_eq!(buf, b"hello world");
        assert_eq!(written.unwrap(), 1);
        file.close().await.unwrap();
    });
    assert_eq!(std::fs::read(&path).unwrap(), b"hello world!");
    assert_eq!(linked(&rt) - before, native(backend, 6));
});

// The File helpers: write_at_then_sync returns both results; write_all_at_then_sync writes
// everything, then syncs; an empty buffer only syncs.
coring_test!(file_helpers_write_then_sync, async {
    let dir = TempDir::new("link-helpers");
    let path = dir.path("f");
    let file = File::create(&path).await.unwrap();
    let ((written, buf), synced) = file.write_at_then_sync(b"abc".to_vec(), 0, true).await;
    assert_eq!(written.unwrap(), 3);
    synced.unwrap();
    assert_eq!(buf, b"abc");
    let big = vec![7u8; 256 * 1024];
    let (res, buf) = file.write_all_at_then_sync(big, 3, false).await;
    res.unwrap();
    assert_eq!(buf.len(), 256 * 1024);
    let (res, _) = file.write_all_at_then_sync(Vec::new(), 0, true).await;
    res.unwrap();
    file.close().await.unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len(), 3 + 256 * 1024);
    assert_eq!(&on_disk[..3], b"abc");
    assert!(on_disk[3..].iter().all(|&b| b == 7));
});

// A write that fails (the handle is read-only) cancels what is linked behind it: the
// second write, on a writable handle of the same file, never reaches the kernel.
coring_test!(failing_first_cancels_second, async {
    let dir = TempDir::new("link-fail");
    let path = dir.path("f");
    std::fs::write(&path, b"").unwrap();
    let read_only = File::open(&path).await.unwrap();
    let writable = OpenOptions::new().write(true).open(&path).await.unwrap();
    let ((first, _), (second, buf)) = link(
        read_only.write_at(b"first".to_vec(), 0),
        writable.write_at(b"second".to_vec(), 0),
    )
    .await;
    assert!(first.is_err(), "a write through a read-only handle fails");
    let e = second.unwrap_err();
    assert!(is_cancelled(&e), "the second ends cancelled, not {e:?}");
    assert_eq!(buf, b"second", "its buffer comes back");
    // And a sync behind a failed write is cancelled alike.
    let ((first, _), synced) =
        link(read_only.write_at(b"x".to_vec(), 0), writable.sync_data()).await;
    assert!(first.is_err());
    assert!(is_cancelled(&synced.unwrap_err()));
    read_only.close().await.unwrap();
    writable.close().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"", "nothing was written");
});

// A first operation that never reaches the kernel (an offset no backend takes) cancels the
// second all the same.
coring_test!(invalid_first_never_starts_the_second, async {
    let dir = TempDir::new("link-invalid");
    let path = dir.path("f");
    let file = File::create(&path).await.unwrap();
    let ((first, _), (second, _)) = link(
        file.write_at(b"first".to_vec(), u64::MAX),
        file.write_at(b"second".to_vec(), 0),
    )
    .await;
    assert_eq!(first.unwrap_err().raw_os_error(), Some(common::EINVAL));
    assert!(is_cancelled(&second.unwrap_err()));
    // A second that never reaches the kernel leaves the first to run alone.
    let ((first, _), (second, _)) = link(
        file.write_at(b"first".to_vec(), 0),
        file.write_at(b"second".to_vec(), u64::MAX),
    )
    .await;
    assert_eq!(first.unwrap(), 5);
    assert_eq!(second.unwrap_err().raw_os_error(), Some(common::EINVAL));
    file.close().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first");
});

// A short read (the file ends before the buffer is full) breaks the chain, as io_uring
// does: the write behind it never happens.
coring_test!(short_read_breaks_the_chain, async {
    let dir = TempDir::new("link-short-read");
    let path = dir.path("f");
    std::fs::write(&path, b"abc").unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .await
        .unwrap();
    let ((read, buf), (written, _)) = link(
        file.read_at(Vec::with_capacity(10), 0),
        file.write_at(b"XYZ".to_vec(), 100),
    )
    .await;
    assert_eq!(read.unwrap(), 3);
    assert_eq!(buf, b"abc");
    assert!(
        is_cancelled(&written.unwrap_err()),
        "a short read cancels the next"
    );
    file.close().await.unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"abc",
        "the write did not run"
    );
});

// Many chains at once on a tiny submission queue: a full queue is flushed before a chain
// goes in, never between its two entries, so every chain keeps its order and result.
coring_test!(full_queue_never_splits_a_chain, |builder| {
    let rt = builder.entries(4).build().unwrap();
    let backend = rt.backend();
    let dir = TempDir::new("link-full-sq");
    let path = dir.path("f");
    let before = linked(&rt);
    common::block_on_bounded(&rt, async {
        let file = Rc::new(File::create(&path).await.unwrap());
        let tasks: Vec<_> = (0..40u8)
            .map(|i| {
                let file = file.clone();
                coring::spawn(async move {
                    link(
                        file.write_at(vec![i; 16], u64::from(i) * 16),
                        file.sync_data(),
                    )
                    .await
                })
            })
            .collect();
        for t in tasks {
            let ((written, _), synced) = t.await.unwrap();
            assert_eq!(written.unwrap(), 16);
            synced.unwrap();
        }
    });
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len(), 40 * 16);
    for (i, chunk) in on_disk.chunks(16).enumerate() {
        assert!(chunk.iter().all(|&b| usize::from(b) == i));
    }
    assert_eq!(linked(&rt) - before, native(backend, 80));
});

// Where io_uring runs an operation outside its ring (here an fsync sent to the blocking
// pool as if the kernel lacked the opcode), the runtime keeps the chain's order itself,
// with the same results.
coring_test!(chains_outside_the_ring_are_kept_in_order, |builder| {
    let rt = builder.emulate_missing_opcodes(&["fsync"]).build().unwrap();
    let dir = TempDir::new("link-outside");
    let path = dir.path("f");
    std::fs::write(&path, b"").unwrap();
    let before = linked(&rt);
    common::block_on_bounded(&rt, async {
        let writable = OpenOptions::new().write(true).open(&path).await.unwrap();
        let read_only = File::open(&path).await.unwrap();
        let ((written, _), synced) =
            link(writable.write_at(b"ok".to_vec(), 0), writable.sync_data()).await;
        assert_eq!(written.unwrap(), 2);
        synced.unwrap();
        let ((written, _), synced) =
            link(read_only.write_at(b"no".to_vec(), 0), writable.sync_data()).await;
        assert!(written.is_err());
        assert!(is_cancelled(&synced.unwrap_err()));
        // A sync first, a write behind it: the write waits for the pool's sync.
        let (synced, (written, _)) =
            link(writable.sync_all(), writable.write_at(b"!".to_vec(), 2)).await;
        synced.unwrap();
        assert_eq!(written.unwrap(), 1);
    });
    assert_eq!(
        linked(&rt) - before,
        0,
        "no chain went to the kernel linked"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"ok!");
});

// An enclosing token reaches the operations under a deadline, and a deadline that did not
// fire leaves no timer behind.
coring_test!(deadline_under_a_cancel_token, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let token = CancelToken::new();
        let canceller = token.clone();
        let cancelling = coring::spawn(async move {
            coring::time::sleep(Duration::from_millis(20)).await;
            canceller.cancel();
        });
        let start = Instant::now();
        let (res, _) = token
            .bind(deadline_for(
                a.recv_from(Vec::with_capacity(8)),
                Duration::from_secs(20),
            ))
            .await;
        assert!(is_cancelled(&res.unwrap_err()));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the token, not the deadline"
        );
        cancelling.await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (res, _) = b.send_to(b"x".to_vec(), a.local_addr().unwrap()).await;
        res.unwrap();
        let (res, _) =
            deadline_for(a.recv_from(Vec::with_capacity(8)), Duration::from_secs(20)).await;
        assert_eq!(res.unwrap().0, 1);
    });
    assert_eq!(
        rt.pending_timers(),
        0,
        "no timer outlives its deadline future"
    );
});

// A read with a deadline on a socket that gets no data ends cancelled at the deadline,
// gives its buffer back, and the stream reads what arrives afterwards.
coring_test!(deadline_read_times_out_and_stream_stays_usable, async {
    let (a, b) = tcp_pair().await;
    let start = Instant::now();
    let (res, buf) = deadline_for(a.read(Vec::with_capacity(64)), Duration::from_millis(50)).await;
    let waited = start.elapsed();
    let e = res.unwrap_err();
    assert!(is_cancelled(&e), "the deadline cancels the read, not {e:?}");
    assert_eq!(buf.capacity(), 64);
    assert!(
        waited >= Duration::from_millis(45),
        "ended early: {waited:?}"
    );
    let (res, _) = b.write(b"later".to_vec()).await;
    res.unwrap();
    let (res, buf) = deadline_for(a.read(buf), Duration::from_secs(10)).await;
    assert_eq!(res.unwrap(), 5);
    assert_eq!(buf, b"later");
});

// A read whose data arrives before the deadline returns it, without waiting for the
// deadline.
coring_test!(deadline_read_gets_data_in_time, async {
    let (a, b) = tcp_pair().await;
    let writer = coring::spawn(async move {
        coring::time::sleep(Duration::from_millis(20)).await;
        let (res, _) = b.write(b"in time".to_vec()).await;
        res.unwrap();
        b
    });
    let start = Instant::now();
    let (res, buf) = deadline_for(a.read(Vec::with_capacity(64)), Duration::from_secs(20)).await;
    assert_eq!(res.unwrap(), 7);
    assert_eq!(buf, b"in time");
    assert!(start.elapsed() < Duration::from_secs(10));
    drop(writer.await.unwrap());
});

// A datagram receive is an operation of its own: on io_uring the kernel keeps its
// deadline (IORING_OP_LINK_TIMEOUT). It ends cancelled, and the socket receives later.
coring_test!(deadline_datagram_receive, |builder| {
    let rt = builder.build().unwrap();
    let backend = rt.backend();
    let before = linked(&rt);
    common::block_on_bounded(&rt, async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (res, buf) = deadline_for(
            a.recv_from(Vec::with_capacity(32)),
            Duration::from_millis(30),
        )
        .await;
        assert!(is_cancelled(&res.unwrap_err()));
        let (res, _) = b.send_to(b"ping".to_vec(), a.local_addr().unwrap()).await;
        res.unwrap();
        let (res, buf) = deadline_for(a.recv_from(buf), Duration::from_secs(10)).await;
        assert_eq!(res.unwrap().0, 4);
        assert_eq!(buf, b"ping");
    });
    assert_eq!(linked(&rt) - before, native(backend, 2));
});

// A chain dropped while its first operation waits: both buffers stay with the runtime
// until the kernel lets go, then each is dropped exactly once; nothing reaches the peer.
coring_test!(dropping_a_chain_mid_flight_leaks_nothing, async {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (recv_buf, recv_drops) = CountedBuf::new(b"", 32);
    let (send_buf, send_drops) = CountedBuf::new(b"never sent", 0);
    let mut chain = Box::pin(link(
        a.recv_from(recv_buf),
        b.send_to(send_buf, peer.local_addr().unwrap()),
    ));
    assert!(poll_once(&mut chain).await.is_pending());
    drop(chain);
    drop(a);
    drop(b);
    eventually("both buffers dropped", || {
        recv_drops.get() == 1 && send_drops.get() == 1
    })
    .await;
    // Give a stray send time to land, then make sure none did.
    let (res, _) = deadline_for(
        peer.recv_from(Vec::with_capacity(32)),
        Duration::from_millis(50),
    )
    .await;
    assert!(
        is_cancelled(&res.unwrap_err()),
        "the second operation never ran"
    );
    coring::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(recv_drops.get(), 1);
    assert_eq!(send_drops.get(), 1);
});

// Cancelling a token bound around a chain cancels both: the first in the kernel, the
// second behind it without ever starting.
coring_test!(cancel_token_cancels_the_chain, async {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let token = CancelToken::new();
    let canceller = token.clone();
    let cancelling = coring::spawn(async move {
        coring::time::sleep(Duration::from_millis(20)).await;
        canceller.cancel();
    });
    let ((first, buf), (second, _)) = token
        .bind(link(
            a.recv_from(Vec::with_capacity(16)),
            b.send_to(b"no".to_vec(), peer.local_addr().unwrap()),
        ))
        .await;
    assert!(is_cancelled(&first.unwrap_err()));
    assert_eq!(buf.capacity(), 16);
    assert!(is_cancelled(&second.unwrap_err()));
    let (res, _) = deadline_for(
        peer.recv_from(Vec::with_capacity(16)),
        Duration::from_millis(50),
    )
    .await;
    assert!(is_cancelled(&res.unwrap_err()), "the send never ran");
    cancelling.await.unwrap();
});

// Misuse is caught with a message that says what to do: a future that starts no
// operation, or more than one, cannot be linked.
coring_test!(linking_a_non_operation_panics, |builder| {
    let dir = TempDir::new("link-misuse");
    let path = dir.path("f");
    std::fs::write(&path, b"").unwrap();
    let message = |r: std::thread::Result<()>| {
        let payload = r.expect_err("linking a non-operation must panic");
        payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    };
    let rt = builder.build().unwrap();
    let no_op = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let file = File::open(&path).await.unwrap();
            let _ = link(
                coring::time::sleep(Duration::from_millis(10)),
                file.sync_data(),
            )
            .await;
        })
    }));
    let m = message(no_op);
    assert!(
        m.contains("first future started no IO operation") && m.contains("write_all_at_then_sync"),
        "{m}"
    );
    drop(rt);
    let rt = builder.build().unwrap();
    let two_ops = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let file = File::open(&path).await.unwrap();
            let mut x = Box::pin(file.read_at(Vec::with_capacity(4), 0));
            let mut y = Box::pin(file.read_at(Vec::with_capacity(4), 0));
            let both = std::future::poll_fn(move |cx| {
                let a = x.as_mut().poll(cx);
                let b = y.as_mut().poll(cx);
                if a.is_ready() && b.is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            let _ = link(both, file.sync_data()).await;
        })
    }));
    let m = message(two_ops);
    assert!(m.contains("started more than one IO operation"), "{m}");
});

// A short write breaks the chain on the real kernel: a child process with a small file
// size limit (RLIMIT_FSIZE, SIGXFSZ ignored) gets a short write, and the sync linked behind
// it is cancelled.
#[cfg(target_os = "linux")]
mod short_write {
    use super::*;

    const ENV: &str = "CORING_LINK_SHORT_WRITE_CHILD";
    const OK: &str = "LINK_SHORT_WRITE_OK";

    #[test]
    fn io_uring() {
        common::child::run_child(ENV, "io_uring", "short_write::child", OK);
    }

    #[test]
    fn fallback() {
        common::child::run_child(ENV, "fallback", "short_write::child", OK);
    }

    /// Runs only as the child (the variable names the backend).
    #[test]
    fn child() {
        let Ok(mode) = std::env::var(ENV) else {
            return;
        };
        let backend = match mode.as_str() {
            "io_uring" => BackendKind::IoUring,
            _ => BackendKind::Fallback,
        };
        let dir = TempDir::new("link-short-write");
        let path = dir.path("f");
        // SAFETY: ignoring a signal and lowering a limit of this (child) process only.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: libc::RLIM_INFINITY,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        let rt = Builder::new().backend(backend).build().unwrap();
        rt.block_on(async {
            let file = File::create(&path).await.unwrap();
            let ((written, _), synced) =
                link(file.write_at(vec![1u8; 8192], 0), file.sync_data()).await;
            assert_eq!(written.unwrap(), 4096, "the limit makes the write short");
            let e = synced.unwrap_err();
            assert!(
                is_cancelled(&e),
                "a short write cancels the sync, not {e:?}"
            );
            // At the limit, the write fails (EFBIG) and its sync is cancelled too.
            let ((written, _), synced) =
                link(file.write_at(vec![1u8; 10], 4096), file.sync_data()).await;
            assert_eq!(written.unwrap_err().raw_os_error(), Some(libc::EFBIG));
            assert!(is_cancelled(&synced.unwrap_err()));
            file.close().await.unwrap();
        });
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        println!("{OK}");
    }
}

/// A mock runtime and its handle.
fn mock_runtime() -> (Runtime, MockHandle) {
    let rt = Builder::new()
        .backend(BackendKind::Mock)
        .shutdown_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mock = rt.mock();
    (rt, mock)
}

/// A file whose descriptor the operations name (the mock never touches it).
fn some_file() -> Rc<File> {
    let null = if cfg!(windows) { "NUL" } else { "/dev/null" };
    Rc::new(File::from_std(std::fs::File::open(null).unwrap()))
}

/// Lets spawned tasks run and the driver reap what the test completed.
async fn turns(n: usize) {
    for _ in 0..n {
        yield_now().await;
    }
}

/// The kinds of the operations the mock holds.
fn kinds(mock: &MockHandle) -> Vec<&'static str> {
    mock.pending().iter().map(|op| op.kind).collect()
}

// The emulated chain: the sync is not started while the write runs; a full write lets it
// go, and both results come back.
#[test]
fn mock_full_write_then_sync() {
    with_watchdog("mock_full_write_then_sync", || {
        let (rt, mock) = mock_runtime();
        rt.block_on(async {
            let file = some_file();
            let f = file.clone();
            let h = coring::spawn(async move {
                link(f.write_at(b"0123456789".to_vec(), 0), f.sync_data()).await
            });
            turns(2).await;
            assert_eq!(kinds(&mock), ["write"], "the sync waits for the write");
            mock.complete(mock.only("write").key, 10);
            turns(2).await;
            assert_eq!(kinds(&mock), ["fsync"], "a full write lets the sync start");
            mock.complete(mock.only("fsync").key, 0);
            let ((written, _), synced) = h.await.unwrap();
            assert_eq!(written.unwrap(), 10);
            synced.unwrap();
        });
    });
}

// A short write, or a failed one, ends the sync with ECANCELED without it ever reaching
// the "kernel".
#[test]
fn mock_short_or_failed_write_cancels_the_sync() {
    with_watchdog("mock_short_or_failed_write", || {
        let (rt, mock) = mock_runtime();
        rt.block_on(async {
            for res in [4, 0, -ECANCELED, -common::EINVAL] {
                let file = some_file();
                let f = file.clone();
                let h = coring::spawn(async move {
                    link(f.write_at(b"0123456789".to_vec(), 0), f.sync_data()).await
                });
                turns(2).await;
                mock.complete(mock.only("write").key, res);
                let ((written, buf), synced) = h.await.unwrap();
                match written {
                    Ok(n) => assert_eq!(n as i32, res),
                    Err(e) => assert_eq!(e.raw_os_error(), Some(-res)),
                }
                assert_eq!(buf, b"0123456789");
                let e = synced.unwrap_err();
                assert!(is_cancelled(&e), "after {res}: {e:?}");
                assert!(mock.pending().is_empty(), "the sync never started");
            }
        });
    });
}

// Dropping a chain whose write is in the "kernel": the write's buffer stays until its
// completion, however late, then is dropped once; the held sync never starts.
#[test]
fn mock_drop_mid_flight_keeps_buffers_until_completion() {
    with_watchdog("mock_drop_mid_flight", || {
        let (rt, mock) = mock_runtime();
        rt.block_on(async {
            let file = some_file();
            let (buf, drops) = CountedBuf::new(b"payload", 0);
            let r = timeout(
                Duration::from_millis(1),
                link(file.write_at(buf, 0), file.sync_data()),
            )
            .await;
            assert!(r.is_err(), "nothing completed the write");
            turns(5).await;
            let op = mock.only("write");
            assert!(
                op.cancel_requested,
                "the dropped chain's write is cancelled"
            );
            assert_eq!(kinds(&mock), ["write"], "the sync never started");
            assert_eq!(drops.get(), 0, "buffer freed while the kernel owned it");
            mock.complete(op.key, 7);
            turns(3).await;
            assert_eq!(drops.get(), 1, "dropped once the kernel let go");
            assert!(mock.pending().is_empty());
        });
    });
}

// A token cancels the chain: the write is asked to stop, and the held sync ends at once.
#[test]
fn mock_cancel_token_ends_the_held_sync_at_once() {
    with_watchdog("mock_cancel_token", || {
        let (rt, mock) = mock_runtime();
        rt.block_on(async {
            let file = some_file();
            let token = CancelToken::new();
            let f = file.clone();
            let bound =
                token.bind(async move { link(f.write_at(b"x".to_vec(), 0), f.sync_data()).await });
            let h = coring::spawn(bound);
            turns(2).await;
            token.cancel();
            turns(2).await;
            let op = mock.only("write");
            assert!(op.cancel_requested);
            mock.complete(op.key, -ECANCELED);
            let ((written, _), synced) = h.await.unwrap();
            assert!(is_cancelled(&written.unwrap_err()));
            assert!(is_cancelled(&synced.unwrap_err()));
        });
    });
}

// On a backend without kernel timeouts the deadline's timer cancels the operation: it
// ends with ECANCELED, or with its real result if that came first.
#[test]
fn mock_deadline_cancels_or_keeps_the_real_result() {
    with_watchdog("mock_deadline", || {
        let (rt, mock) = mock_runtime();
        rt.block_on(async {
            let file = some_file();
            let f = file.clone();
            let h = coring::spawn(async move {
                deadline_for(
                    f.read_at(Vec::with_capacity(8), 0),
                    Duration::from_millis(20),
                )
                .await
            });
            turns(2).await;
            let op = mock.only("read");
            assert!(!op.cancel_requested);
            coring::time::sleep(Duration::from_millis(40)).await;
            let op = mock.only("read");
            assert!(op.cancel_requested, "the deadline cancels the read");
            mock.complete(op.key, -ECANCELED);
            let (res, buf) = h.await.unwrap();
            assert!(is_cancelled(&res.unwrap_err()));
            assert_eq!(buf.capacity(), 8);

            // The "kernel" finished the read before it saw the cancel: the data counts.
            let f = file.clone();
            let h = coring::spawn(async move {
                deadline_for(
                    f.read_at(Vec::with_capacity(8), 0),
                    Duration::from_millis(20),
                )
                .await
            });
            coring::time::sleep(Duration::from_millis(40)).await;
            let op = mock.only("read");
            assert!(op.cancel_requested);
            mock.fill(op.key, b"data");
            mock.complete(op.key, 4);
            let (res, buf) = h.await.unwrap();
            assert_eq!(res.unwrap(), 4);
            assert_eq!(buf, b"data");
        });
    });
}

// A future that completes before its deadline leaves no timer behind, and a deadline that
// passed before the first poll ends the operation without starting it.
#[test]
fn mock_deadline_edges() {
    with_watchdog("mock_deadline_edges", || {
        let (rt, mock) = mock_runtime();
        rt.block_on(async {
            let file = some_file();
            let late = coring::time::deadline_at(file.sync_data(), Instant::now());
            assert!(is_cancelled(&late.await.unwrap_err()));
            assert!(mock.pending().is_empty(), "it never started");
            let f = file.clone();
            let h = coring::spawn(async move {
                deadline_for(f.sync_data(), Duration::from_secs(3600)).await
            });
            turns(2).await;
            mock.complete(mock.only("fsync").key, 0);
            h.await.unwrap().unwrap();
        });
    });
}
