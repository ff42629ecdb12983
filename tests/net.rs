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
