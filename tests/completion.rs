//! The completion contract every backend keeps, written for issue 15's completion-port
//! backend and run on all of them: a cancelled receive or accept gives its buffer back and
//! leaves the socket usable; reads in flight when the runtime is dropped are neither freed
//! early nor leaked; ten thousand operations in flight at once on one runtime; a wake from
//! another thread ends a wait with nothing else to wake it.

mod common;

use std::rc::Rc;
use std::time::{Duration, Instant};

use coring::cancel::CancelToken;
use coring::fs::File;
use coring::net::{TcpListener, TcpStream};
use coring::time::sleep;

/// A connected TCP pair on loopback.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = coring::spawn(async move { TcpStream::connect(addr).await });
    let (accepted, _) = listener.accept().await.unwrap();
    (connect.await.unwrap().unwrap(), accepted)
}

// A receive waiting on an empty socket, cancelled: it ends with the cancel's error, its
// buffer comes back untouched, and the socket then reads what arrives.
coring_test!(
    cancelled_receive_returns_buffer_and_socket_stays_usable,
    async {
        let (a, b) = tcp_pair().await;
        let token = CancelToken::new();
        let read = token.bind(a.read(Vec::with_capacity(64)));
        let canceller = token.clone();
        let _cancel = coring::spawn(async move {
            sleep(Duration::from_millis(20)).await;
            canceller.cancel();
        });
        let (res, buf) = read.await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(common::ECANCELED));
        assert_eq!((buf.capacity(), buf.len()), (64, 0));

        let (res, _) = b.write_all(b"after".to_vec()).await;
        res.unwrap();
        let (res, buf) = a.read(buf).await;
        assert_eq!(&buf[..res.unwrap()], b"after");
    }
);

// An accept waiting for a connection, cancelled: it ends with the cancel's error, and the
// listener then accepts the next connection.
coring_test!(cancelled_accept_leaves_listener_usable, async {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancelToken::new();
    let accept = token.bind(listener.accept());
    let canceller = token.clone();
    let _cancel = coring::spawn(async move {
        sleep(Duration::from_millis(20)).await;
        canceller.cancel();
    });
    let err = accept.await.map(drop).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(common::ECANCELED));

    let connect = coring::spawn(async move { TcpStream::connect(addr).await });
    let (server, peer) = listener.accept().await.unwrap();
    let client = connect.await.unwrap().unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    let (res, _) = client.write_all(b"hi".to_vec()).await;
    res.unwrap();
    let (res, buf) = server.read(Vec::with_capacity(8)).await;
    assert_eq!(&buf[..res.unwrap()], b"hi");
});

// Reads waiting on sockets when their futures and then the runtime are dropped: no buffer
// is freed while its read can still write into it (the flags stay clear until the drop
// completes the reads), none is leaked (every flag is set once the runtime is gone), and
// the descriptors the runtime opened are closed.
coring_test!(
    runtime_drop_with_reads_in_flight_frees_each_buffer_once,
    |builder| {
        let before = common::fd_count();
        let rt = builder.build().unwrap();
        let mut flags = Vec::new();
        let mut peers = Vec::new();
        common::block_on_bounded(&rt, async {
            for _ in 0..32 {
                let (a, b) = tcp_pair().await;
                let (buf, dropped) = common::DropFlagBuf::new(256);
                flags.push(dropped);
                let a = Rc::new(a);
                let reader = a.clone();
                // Spawned and never awaited: the read is in flight when the runtime drops.
                let _read = coring::spawn(async move {
                    let _ = reader.read(buf).await;
                });
                peers.push((a, b));
            }
            // Let every task submit its read.
            sleep(Duration::from_millis(20)).await;
            assert_eq!(
                flags.iter().filter(|f| f.get()).count(),
                0,
                "a buffer was freed while its read was still in flight"
            );
        });
        drop(peers);
        drop(rt);
        assert!(
            flags.iter().all(|f| f.get()),
            "a read's buffer was leaked by the runtime's drop"
        );
        // Closing may finish on other threads (the blocking pool): allow it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while common::fd_count() > before + 2 {
            assert!(
                Instant::now() < deadline,
                "descriptors: {} before the runtime, {} after its drop",
                before,
                common::fd_count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
);

// Ten thousand reads of one file in flight at once on one runtime: every one completes
// with the right bytes.
coring_test!(ten_thousand_operations_in_flight, async {
    let dir = common::TempDir::new("completion-10k");
    let path = dir.path("data");
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let file = Rc::new(File::open(&path).await.unwrap());
    let data = Rc::new(data);
    let mut tasks = Vec::with_capacity(10_000);
    for i in 0..10_000usize {
        let (file, data) = (file.clone(), data.clone());
        tasks.push(coring::spawn(async move {
            let off = (i * 7) % 4000;
            let (res, buf) = file.read_at(Vec::with_capacity(64), off as u64).await;
            let n = res.unwrap();
            assert_eq!(&buf[..n], &data[off..off + n], "read {i} at {off}");
            assert!(n > 0, "read {i} at {off} returned nothing");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
});

// A runtime waiting with no timer and no IO that could end its wait: a value sent from
// another thread wakes it.
coring_test!(wake_from_another_thread, async {
    let (tx, mut rx) = coring::sync::mpsc::channel::<u32>(1);
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        tx.try_send(7).unwrap();
    });
    assert_eq!(rx.recv().await, Some(7));
    assert!(start.elapsed() >= Duration::from_millis(50));
    sender.join().unwrap();
});
