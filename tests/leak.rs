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
