//! Descriptor leak checks. They count /proc/self/fd (on Windows the process's handles), so
//! this binary holds one test per backend and the tests run one at a time (a lock), with
//! nothing else opening files.
// Linux and Windows only: an exact descriptor count needs /proc/self/fd (FreeBSD's /dev/fd
// lists only 0-2 unless fdescfs is mounted); Windows counts handles (GetProcessHandleCount).
#![cfg(any(target_os = "linux", windows))]

mod common;

use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::TempDir;
use coring::fs::File;
use coring::net::TcpListener;
use coring::time::{sleep, timeout};

static SERIAL: Mutex<()> = Mutex::new(());

async fn settle(rt_in_flight: impl Fn() -> usize) {
    let end = Instant::now() + Duration::from_secs(5);
    while rt_in_flight() > 0 {
        assert!(Instant::now() < end, "operations still in flight after 5 s");
        sleep(Duration::from_millis(1)).await;
    }
}

// open futures dropped while in flight: when the kernel completes them anyway, the
// runtime closes the descriptor it got. accept futures dropped while in flight: the
// listener keeps the accept and hands its connection to the next accept; dropping the
// listener cancels the last one and closes what it got. Afterwards the count is back to
// baseline.
coring_test!(orphaned_open_and_kept_accept_close_their_fds, |builder| {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("leak");
    let path = dir.path("f");
    std::fs::write(&path, b"x").unwrap();
    let rt = builder.build().unwrap();
    let baseline = common::fd_count();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::new();
    rt.block_on(async {
        for _ in 0..200 {
            // The open is submitted, then dropped before the runtime reaps its result.
            let r = timeout(Duration::ZERO, File::open(&path)).await;
            if let Ok(f) = r {
                drop(f.unwrap());
            }
        }
        let mut accepted = 0;
        for _ in 0..50 {
            // A connection waits in the backlog, so the accept completes with a new fd
            // after its future has been dropped; the next accept returns it.
            clients.push(std::net::TcpStream::connect(addr).unwrap());
            let r = timeout(Duration::ZERO, listener.accept()).await;
            if let Ok(conn) = r {
                drop(conn.unwrap());
                accepted += 1;
            }
            // Let the driver collect the kept accept's completion.
            coring::task::yield_now().await;
        }
        assert!(accepted > 0, "no kept accept handed its connection on");
        drop(listener);
        settle(|| rt.ops_in_flight()).await;
    });
    assert!(rt.metrics().ops_orphaned >= 150, "{:?}", rt.metrics());
    // Every connection was closed: accepted ones by the runtime or their owner (EOF), any
    // left in the backlog by the listener's close (reset).
    for mut c in clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(n) => assert_eq!(n, 0, "server side still open"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    assert_eq!(common::fd_count(), baseline, "descriptors leaked");
    drop(rt);
});

// Dropping a runtime releases its own descriptors (ring, eventfd) and every socket that
// in-flight operations held.
coring_test!(runtime_drop_releases_descriptors, |builder| {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let baseline = common::fd_count();
    for _ in 0..20 {
        let rt = builder.clone().build().unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            drop(coring::spawn(
                async move { listener.accept().await.map(drop) },
            ));
            coring::task::yield_now().await;
        });
        drop(rt);
    }
    assert_eq!(common::fd_count(), baseline, "descriptors leaked");
});

// Dropping a listener whose multishot accept (io_uring) took connections nobody accepted
// closes them, also one the kernel reports after the drop: the count comes back, and
// every client sees its connection closed. (Elsewhere the connections wait in the
// kernel's backlog, which goes with the listening socket: the same checks hold.)
coring_test!(dropped_listener_closes_queued_connections, |builder| {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = builder.build().unwrap();
    let base = common::fd_count();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<_> = (0..5)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    common::block_on_bounded(&rt, async {
        // One accept arms the multishot accept (where there is one), which takes the
        // other connections while nobody calls accept.
        let (first, _) = listener.accept().await.unwrap();
        drop(first);
        if rt.backend() == coring::BackendKind::IoUring {
            // The listener, 5 clients, 4 connections waiting in the listener.
            common::eventually("the kernel to accept the others", || {
                common::fd_count() >= base + 1 + 5 + 4
            })
            .await;
        }
        drop(listener);
        settle(|| rt.ops_in_flight()).await;
    });
    for mut c in clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(n) => assert_eq!(n, 0, "server side still open"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    assert_eq!(common::fd_count(), base, "descriptors leaked");
});

/// The mock backend's multishot accept, where the test plays the kernel (mock only, on
/// purpose: a real kernel does not report a connection after the cancel on demand). Linux
/// only, as this file; it uses Unix sockets.
#[cfg(target_os = "linux")]
mod mock {
    use super::*;
    use coring::mock::MockHandle;
    use coring::task::yield_now;
    use coring::{BackendKind, Builder, Runtime};
    use std::io::Write;

    fn mock_runtime() -> (Runtime, MockHandle) {
        let rt = Builder::new()
            .backend(BackendKind::Mock)
            .shutdown_timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let mock = rt.mock();
        (rt, mock)
    }

    async fn turns(n: usize) {
        for _ in 0..n {
            yield_now().await;
        }
    }

    fn fd_count() -> usize {
        common::fd_count()
    }

    // Connections posted with CQE_F_MORE go to accept calls in order; those nobody took
    // are closed when the listener is dropped, and so is one the kernel reports after that.
    #[test]
    fn multishot_accept_queues_and_closes() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        common::with_watchdog("multishot_accept_mock", || {
            let (rt, mock) = mock_runtime();
            mock.enable_multishot_accept();
            let dir = TempDir::new("zc-accept");
            let base = fd_count();
            rt.block_on(async {
                let l = coring::net::UnixListener::bind(dir.path("l.sock")).unwrap();
                let task = coring::spawn(async move {
                    let (s, _) = l.accept().await.unwrap();
                    (l, s)
                });
                turns(2).await;
                let op = mock.only("accept_multi");
                let pair = |mock: &MockHandle| {
                    use std::os::fd::IntoRawFd;
                    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                    mock.complete_more(op.key, a.into_raw_fd());
                    b
                };
                let mut b1 = pair(&mock);
                let (l, s) = task.await.unwrap();
                // The connection is the one the "kernel" accepted (the mock performs no
                // IO: write through std).
                let mut s = s.into_std().unwrap();
                s.write_all(b"hi").unwrap();
                let mut got = [0u8; 2];
                b1.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"hi");
                drop(s);
                // Two more, not accepted; the operation is still the same one.
                let peers = [pair(&mock), pair(&mock)];
                turns(3).await;
                assert_eq!(mock.only("accept_multi").key, op.key);
                assert!(fd_count() > base + 2);
                drop(l);
                turns(2).await;
                assert!(mock.only("accept_multi").cancel_requested);
                // The kernel reports one more before the cancel lands: closed too.
                let late = pair(&mock);
                mock.complete(op.key, -libc::ECANCELED);
                turns(3).await;
                for mut p in peers.into_iter().chain([late]) {
                    let mut b = [0u8; 1];
                    assert_eq!(p.read(&mut b).unwrap(), 0, "closed by the listener");
                }
                drop(b1);
            });
            assert_eq!(rt.ops_in_flight(), 0);
            assert_eq!(fd_count(), base, "descriptors leaked");
        });
    }
}
