//! The per-opcode fallback: an operation whose io_uring opcode the kernel lacks runs on the
//! blocking pool and completes exactly as it would through the ring. The kernel here has
//! every opcode, so the test hook `emulate_missing_opcodes` hides them. On the fallback
//! backend the same test runs with everything offloaded or readiness-driven already.

mod common;

use common::TempDir;
use coring::fs::{self, File};
use coring::net::{TcpListener, TcpStream};

const HIDDEN: &[&str] = &[
    "READ", "WRITE", "READV", "WRITEV", "FSYNC", "OPENAT", "CLOSE", "STATX", "UNLINKAT",
    "RENAMEAT", "MKDIRAT", "ACCEPT", "CONNECT", "RECV", "SEND", "SHUTDOWN",
];

coring_test!(missing_opcodes_run_on_the_pool, |builder| {
    let rt = builder.emulate_missing_opcodes(HIDDEN).build().unwrap();
    let dir = TempDir::new("offload");
    common::block_on_bounded(&rt, async {
        let d = dir.path("d");
        fs::create_dir(&d).await.unwrap();
        let p = d.join("f");
        let f = File::create(&p).await.unwrap();
        let (r, _) = f.write_all_at(b"offloaded".to_vec(), 0).await;
        r.unwrap();
        let (r, _) = f.writev_at(vec![b"!".to_vec()], 9).await;
        r.unwrap();
        f.sync_all().await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 10);
        f.close().await.unwrap();
        let q = d.join("g");
        fs::rename(&p, &q).await.unwrap();
        let f = File::open(&q).await.unwrap();
        let (r, buf) = f.read_exact_at(Vec::with_capacity(10), 0).await;
        r.unwrap();
        assert_eq!(buf, b"offloaded!");
        let (r, bufs) = f.readv_at(vec![Vec::with_capacity(3)], 0).await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(bufs[0], b"off");
        drop(f);
        fs::remove_file(&q).await.unwrap();
        fs::remove_dir(&d).await.unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = coring::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, b) = s.read(Vec::with_capacity(64)).await;
            r.unwrap();
            let (r, _) = s.write_all(b).await;
            r.unwrap();
            s.shutdown(std::net::Shutdown::Write).await.unwrap();
        });
        let c = TcpStream::connect(addr).await.unwrap();
        let (r, _) = c.write_all(b"echo".to_vec()).await;
        r.unwrap();
        let (r, b) = c.read_exact(Vec::with_capacity(4)).await;
        r.unwrap();
        assert_eq!(b, b"echo");
        server.await.unwrap();
    });
    let m = rt.metrics();
    assert!(m.ops_offloaded >= 10, "{m:?}");
});

// An offloaded socket operation waits for its socket in poll(2) on a pool thread (io_uring
// with the opcode hidden; the fallback parks it on readiness instead). Cancelling it (the
// listener is dropped with its timed-out accept kept) ends that wait, so the op finishes
// and the listener's descriptor closes; before, the pool thread waited for a connection
// forever and kept the port.
coring_test!(
    a_cancelled_offloaded_accept_releases_the_listener,
    |builder| {
        let rt = builder
            .emulate_missing_opcodes(&["ACCEPT"])
            .build()
            .unwrap();
        common::block_on_bounded(&rt, async {
            use std::time::{Duration, Instant};
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let accept = coring::time::timeout(Duration::from_millis(20), listener.accept()).await;
            assert!(accept.is_err(), "nobody connects");
            drop(listener);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::net::TcpListener::bind(addr) {
                    Ok(_) => break,
                    Err(_) if Instant::now() < deadline => {
                        coring::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => {
                        panic!("the listener stayed open: its cancelled accept holds it: {e}")
                    }
                }
            }
        });
    }
);

/// Retries a conversion that gives the object back while an operation is still being
/// cancelled (as its docs tell the caller to), until it succeeds; bounded.
async fn converted_eventually<T, S>(mut obj: T, convert: fn(T) -> Result<S, T>, what: &str) -> S {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match convert(obj) {
            Ok(s) => return s,
            Err(back) => obj = back,
        }
        assert!(
            std::time::Instant::now() < end,
            "into_std never succeeded: the kept {what} on the pool was never cancelled"
        );
        coring::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

// With the opcode hidden, an io_uring runtime runs a dropped receive, kept by its socket,
// on the pool; into_std cancels it and must succeed once the runtime ran: the synchronous
// cancel used to "succeed" with ENOENT (the op is not in the ring), and no cancel reached
// the pool job. (The fallback parks the receive on readiness and cancels it at once.)
coring_test!(into_std_with_a_kept_receive_on_the_pool, |builder| {
    let rt = builder
        .emulate_missing_opcodes(&["RECVMSG"])
        .build()
        .unwrap();
    common::block_on_bounded(&rt, async {
        let sock = coring::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut r = Box::pin(sock.recv_from(Vec::with_capacity(16)));
        assert!(common::poll_once(&mut r).await.is_pending());
        drop(r);
        converted_eventually(sock, coring::net::UdpSocket::into_std, "receive").await;
    });
});

// The same for a listener's kept accept.
coring_test!(into_std_with_a_kept_accept_on_the_pool, |builder| {
    let rt = builder
        .emulate_missing_opcodes(&["ACCEPT"])
        .build()
        .unwrap();
    common::block_on_bounded(&rt, async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = Box::pin(l.accept());
        assert!(common::poll_once(&mut a).await.is_pending());
        drop(a);
        converted_eventually(l, TcpListener::into_std, "accept").await;
    });
});
