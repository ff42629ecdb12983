//! TCP, UDP and Unix sockets.

mod common;

use std::net::Shutdown;
use std::rc::Rc;

use common::TempDir;
use coring::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

coring_test!(tcp_echo, async {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = coring::spawn(async move {
        let (s, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, s.peer_addr().unwrap());
        let mut buf = Vec::with_capacity(4096);
        loop {
            let (r, b) = s.read(buf).await;
            let n = r.unwrap();
            if n == 0 {
                break;
            }
            let (r, b) = s.write_all(b).await;
            r.unwrap();
            buf = b;
            buf.clear();
        }
    });
    let c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    assert!(c.nodelay().unwrap());
    assert_eq!(c.peer_addr().unwrap(), addr);
    for i in 0..100u32 {
        let msg = format!("message {i}").into_bytes();
        let (r, msg) = c.write_all(msg).await;
        r.unwrap();
        let (r, back) = c.read_exact(Vec::with_capacity(msg.len())).await;
        r.unwrap();
        assert_eq!(back, msg);
    }
    c.shutdown(Shutdown::Write).await.unwrap();
    server.await.unwrap();
    // The server closed: EOF.
    let (r, _) = c.read(Vec::with_capacity(8)).await;
    assert_eq!(r.unwrap(), 0);
});

// A reader task and a writer task share one stream; short writes of a large buffer are
// looped by write_all.
coring_test!(tcp_concurrent_read_and_write_on_one_stream, async {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    const LEN: usize = 8 << 20;
    let sink = coring::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut total = 0usize;
        let mut sum = 0u64;
        let mut buf = Vec::with_capacity(65536);
        loop {
            let (r, b) = s.read(buf).await;
            let n = r.unwrap();
            if n == 0 {
                break;
            }
            sum += b[..n].iter().map(|&x| u64::from(x)).sum::<u64>();
            total += n;
            buf = b;
        }
        let (r, _) = s.write_all(b"done".to_vec()).await;
        r.unwrap();
        (total, sum)
    });
    let c = Rc::new(TcpStream::connect(addr).await.unwrap());
    let reader = {
        let c = c.clone();
        coring::spawn(async move {
            let (r, b) = c.read_exact(Vec::with_capacity(4)).await;
            r.unwrap();
            b
        })
    };
    let data: Vec<u8> = (0..LEN).map(|i| (i % 256) as u8).collect();
    let expected: u64 = data.iter().map(|&x| u64::from(x)).sum();
    let (r, _) = c.write_all(data).await;
    r.unwrap();
    c.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(sink.await.unwrap(), (LEN, expected));
    assert_eq!(reader.await.unwrap(), b"done");
});

coring_test!(tcp_errors, async {
    // Nothing listens on a freshly closed port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = TcpListener::bind(l.local_addr().unwrap()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    // Writing to a peer that closed: EPIPE / ECONNRESET, never SIGPIPE.
    let addr = l.local_addr().unwrap();
    let c = TcpStream::connect(addr).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    drop(s);
    let mut saw_error = false;
    for _ in 0..100 {
        let (r, _) = c.write(vec![7u8; 65536]).await;
        if let Err(e) = r {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "{e}"
            );
            saw_error = true;
            break;
        }
    }
    assert!(saw_error, "writes to a closed peer must fail");
});

coring_test!(udp_send_recv, async {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b_addr = b.local_addr().unwrap();
    let (r, _) = a.send_to(b"ping".to_vec(), b_addr).await;
    assert_eq!(r.unwrap(), 4);
    let (r, buf) = b.recv_from(Vec::with_capacity(64)).await;
    let (n, from) = r.unwrap();
    assert_eq!((n, from), (4, a.local_addr().unwrap()));
    assert_eq!(buf, b"ping");
    // Connected mode.
    a.connect(b_addr).await.unwrap();
    assert_eq!(a.peer_addr().unwrap(), b_addr);
    let (r, _) = a.send("pong").await;
    assert_eq!(r.unwrap(), 4);
    let (r, buf) = b.recv(Vec::with_capacity(2)).await;
    // A datagram larger than the buffer is truncated to it.
    assert_eq!(r.unwrap(), 2);
    assert_eq!(buf, b"po");
    // IPv6 loopback, if the machine has it.
    if let Ok(v6) = UdpSocket::bind("[::1]:0") {
        let (r, _) = v6.send_to(b"six".to_vec(), v6.local_addr().unwrap()).await;
        r.unwrap();
        let (r, buf) = v6.recv_from(Vec::with_capacity(8)).await;
        assert_eq!(r.unwrap().1, v6.local_addr().unwrap());
        assert_eq!(buf, b"six");
    }
});

coring_test!(unix_stream_and_listener, async {
    let dir = TempDir::new("unix");
    let path = dir.path("sock");
    let l = UnixListener::bind(&path).unwrap();
    assert_eq!(l.local_addr().unwrap().as_pathname(), Some(path.as_path()));
    let server = coring::spawn(async move {
        let (s, _addr) = l.accept().await.unwrap();
        let (r, b) = s.read(Vec::with_capacity(16)).await;
        r.unwrap();
        let (r, _) = s.write_all(b).await;
        r.unwrap();
    });
    let c = UnixStream::connect(&path).await.unwrap();
    let (r, _) = c.write_all(b"unix!".to_vec()).await;
    r.unwrap();
    let (r, b) = c.read_exact(Vec::with_capacity(5)).await;
    r.unwrap();
    assert_eq!(b, b"unix!");
    server.await.unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let (r, _) = a.write_all("pair").await;
    r.unwrap();
    a.shutdown(Shutdown::Write).await.unwrap();
    let (r, buf) = b.read(Vec::with_capacity(8)).await;
    assert_eq!(r.unwrap(), 4);
    assert_eq!(buf, b"pair");
    let (r, _) = b.read(Vec::with_capacity(8)).await;
    assert_eq!(r.unwrap(), 0);
    // Bad paths are refused clearly.
    let long = "x".repeat(200);
    assert_eq!(
        UnixListener::bind(&long).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(
        UnixStream::connect(dir.path("missing"))
            .await
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::NotFound
    );
});

coring_test!(std_and_raw_fd_conversions, async {
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let listener = TcpListener::from_std(std_listener).unwrap();
    let mut std_client = std::net::TcpStream::connect(addr).unwrap();
    let (s, _) = listener.accept().await.unwrap();
    std_client.write_all(b"from std").unwrap();
    let (r, b) = s.read_exact(Vec::with_capacity(8)).await;
    r.unwrap();
    assert_eq!(b, b"from std");
    // Round trip through a raw fd and back into std.
    let raw = s.into_raw_fd();
    // SAFETY: raw was just released by into_raw_fd and is owned by nobody else.
    let s = unsafe { TcpStream::from_raw_fd(raw) };
    let (r, _) = s.write_all(b"back".to_vec()).await;
    r.unwrap();
    let mut got = [0u8; 4];
    std_client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"back");
    let std_stream = s.into_std().unwrap();
    assert_eq!(
        std_stream.peer_addr().unwrap(),
        std_client.local_addr().unwrap()
    );
});

// An accept future dropped after a connection arrived for it but before it returned it
// (what a select does when another branch wins): the listener keeps the accept, and the
// next accept returns that connection, which works. Before, the accepted descriptor was
// closed with the dropped future on io_uring.
coring_test!(
    accept_dropped_after_its_connection_arrived_loses_nothing,
    async {
        use std::future::Future;
        use std::io::{Read, Write};
        use std::time::Duration;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for round in 0..10u8 {
            let mut accept = Box::pin(listener.accept());
            let first =
                std::future::poll_fn(|cx| std::task::Poll::Ready(accept.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "nobody connected yet");
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            // Let the driver see the connection (and accept it for the pending future).
            coring::time::sleep(Duration::from_millis(2)).await;
            drop(accept);
            let (server, peer) = coring::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("the dropped accept's connection was lost")
                .unwrap();
            assert_eq!(peer, client.local_addr().unwrap(), "round {round}");
            let (r, _) = server.write_all(vec![round; 3]).await;
            r.unwrap();
            let mut got = [0u8; 3];
            client.read_exact(&mut got).unwrap();
            assert_eq!(got, [round; 3]);
            client.write_all(b"x").unwrap();
        }
    }
);

// A listener whose dropped accept is still waiting converts back to std (the accept is
// cancelled), and one whose kept accept got a connection gives itself back until that
// connection is accepted.
coring_test!(listener_into_std_with_a_kept_accept, async {
    use std::time::Duration;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Nobody connects: the kept accept is cancelled at once and the conversion works.
    let r = coring::time::timeout(Duration::from_millis(2), listener.accept()).await;
    assert!(r.is_err(), "nobody connected");
    let listener =
        TcpListener::from_std(listener.into_std().expect("kept accept cancelled")).unwrap();
    let r = coring::time::timeout(Duration::from_millis(2), listener.accept()).await;
    assert!(r.is_err(), "nobody connected");
    let _client = std::net::TcpStream::connect(addr).unwrap();
    coring::time::sleep(Duration::from_millis(5)).await;
    let listener = match listener.into_std() {
        // The kept accept took the connection before it could be cancelled: accept it.
        Err(listener) => {
            let (_s, _) = listener.accept().await.unwrap();
            listener
        }
        // Cancelled at once, the connection still in the backlog.
        Ok(std_listener) => {
            let l = TcpListener::from_std(std_listener).unwrap();
            let (_s, _) = l.accept().await.unwrap();
            l
        }
    };
    listener.into_std().expect("nothing kept any more");
});

// Two tasks accepting at once on a listener that keeps a dropped accept: one waits for the
// kept accept, the other accepts on its own (the driver keeps one waker per operation, so
// both waiting on the kept one would leave one asleep forever); both get a connection.
coring_test!(concurrent_accepts_with_a_kept_accept_both_finish, async {
    use std::time::Duration;
    let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let r = coring::time::timeout(Duration::from_millis(2), listener.accept()).await;
    assert!(r.is_err(), "nobody connected");
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let l = listener.clone();
            coring::spawn(async move { l.accept().await.map(|_| ()) })
        })
        .collect();
    for _ in 0..5 {
        coring::task::yield_now().await;
    }
    let _c1 = std::net::TcpStream::connect(addr).unwrap();
    let _c2 = std::net::TcpStream::connect(addr).unwrap();
    for (i, t) in tasks.into_iter().enumerate() {
        coring::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap_or_else(|_| panic!("accepting task {i} never woke"))
            .unwrap()
            .unwrap();
    }
});

// A listener dropped while its kept accept holds a connection (accepted and reaped, not
// returned yet): the connection is closed, not leaked.
coring_test!(
    listener_dropped_with_a_completed_kept_accept_closes_it,
    |builder| {
        use std::io::Read;
        use std::time::Duration;
        let rt = builder.build().unwrap();
        common::block_on_bounded(&rt, async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let r = coring::time::timeout(Duration::from_millis(2), listener.accept()).await;
            assert!(r.is_err(), "nobody connected");
            assert_eq!(rt.ops_in_flight(), 1, "the kept accept");
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            common::eventually("the kept accept to complete", || rt.ops_in_flight() == 0).await;
            drop(listener);
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut b = [0u8; 1];
            let r = client.read(&mut b);
            assert!(
                matches!(r, Ok(0)),
                "accepted connection never closed: {r:?}"
            );
        });
    }
);

// into_std right after an accept was polled once (a connection waiting) and dropped: the
// connection is neither lost nor closed, whether the accept had completed, was still
// queued for the kernel, or waited for readiness.
coring_test!(
    listener_into_std_right_after_a_dropped_accept_keeps_the_connection,
    async {
        use std::io::{Read, Write};
        use std::time::Duration;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        coring::time::sleep(Duration::from_millis(5)).await;
        let mut accept = Box::pin(listener.accept());
        assert!(common::poll_once(&mut accept).await.is_pending());
        drop(accept);
        let server: std::net::TcpStream = match listener.into_std() {
            Err(listener) => {
                let (s, _) = coring::time::timeout(Duration::from_secs(5), listener.accept())
                    .await
                    .expect("the kept accept's connection was lost")
                    .unwrap();
                s.into_std().unwrap()
            }
            Ok(std_listener) => {
                std_listener.set_nonblocking(false).unwrap();
                std_listener.accept().unwrap().0
            }
        };
        server.set_nonblocking(false).unwrap();
        (&server).write_all(b"ok").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 2];
        client.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ok");
    }
);

// A listener whose kept accept belonged to a runtime since dropped (which cancelled it)
// accepts on a new runtime. (Two runtimes per backend, so no coring_test! runtime.)
#[test]
fn listener_with_a_kept_accept_outlives_its_runtime() {
    use std::time::Duration;
    for &kind in common::BACKENDS {
        common::with_watchdog("listener_outlives_runtime", || {
            let rt1 = common::runtime(kind);
            let listener = rt1.block_on(async {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let r = coring::time::timeout(Duration::from_millis(2), l.accept()).await;
                assert!(r.is_err(), "nobody connected");
                l
            });
            drop(rt1);
            let addr = listener.local_addr().unwrap();
            let rt2 = common::runtime(kind);
            let _c = std::net::TcpStream::connect(addr).unwrap();
            rt2.block_on(async {
                coring::time::timeout(Duration::from_secs(5), listener.accept())
                    .await
                    .unwrap_or_else(|_| panic!("{kind:?}: accept on the new runtime hung"))
                    .unwrap_or_else(|e| panic!("{kind:?}: accept on the new runtime: {e}"));
            });
        });
    }
}

// A claim names the kept accept it was taken on: task A waits on kept accept K1;
// unregister() cancels K1; another dropped accept leaves K2 kept; task D claims K2. A must
// not wait on K2 unclaimed (it would steal D's wake, and one of them would sleep forever):
// it finds K1 gone and accepts on its own. Both finish.
coring_test!(claim_on_a_replaced_kept_accept_does_not_hang, |builder| {
    use coring::task::yield_now;
    use std::time::Duration;
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let mut k1 = Box::pin(listener.accept());
        assert!(common::poll_once(&mut k1).await.is_pending());
        drop(k1);
        let l = listener.clone();
        let a = coring::spawn(async move { l.accept().await.map(drop) });
        yield_now().await;
        yield_now().await;
        let _ = listener.unregister();
        let mut k2 = Box::pin(listener.accept());
        assert!(common::poll_once(&mut k2).await.is_pending());
        drop(k2);
        let l = listener.clone();
        let d = coring::spawn(async move { l.accept().await.map(drop) });
        for _ in 0..5 {
            yield_now().await;
        }
        let _c1 = std::net::TcpStream::connect(addr).unwrap();
        let _c2 = std::net::TcpStream::connect(addr).unwrap();
        for (name, h) in [("A", a), ("D", d)] {
            coring::time::timeout(Duration::from_secs(5), h)
                .await
                .unwrap_or_else(|_| panic!("accepting task {name} never woke"))
                .unwrap()
                .unwrap();
        }
    });
});

// Several accepts at once, two of them dropped after the kernel accepted connections for
// them: every connection is handed out by later accepts, none is closed unseen.
coring_test!(concurrent_accepts_dropped_lose_no_connection, async {
    use std::io::Read;
    use std::time::Duration;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut k1 = Box::pin(listener.accept());
    assert!(common::poll_once(&mut k1).await.is_pending());
    drop(k1);
    // A waits on the kept accept; B, finding it claimed, submits its own.
    let mut a = Box::pin(listener.accept());
    assert!(common::poll_once(&mut a).await.is_pending());
    let mut b = Box::pin(listener.accept());
    assert!(common::poll_once(&mut b).await.is_pending());
    let mut clients = [
        std::net::TcpStream::connect(addr).unwrap(),
        std::net::TcpStream::connect(addr).unwrap(),
    ];
    coring::time::sleep(Duration::from_millis(20)).await;
    drop(b);
    drop(a);
    let mut accepted = Vec::new();
    for _ in 0..2 {
        let (s, _) = coring::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("a connection accepted by the kernel was closed unseen")
            .unwrap();
        accepted.push(s);
    }
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 1];
        let r = c.read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the connection must be open and silent: {r:?}"
        );
    }
});
