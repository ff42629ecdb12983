//! Stream read semantics, run on both backends. On io_uring these exercise the multishot
//! receive with provided buffers (one armed receive per stream, arrivals copied out,
//! leftovers kept in the stream); on the fallback backend the same reads are single-shot,
//! and must behave identically.

mod common;

use std::time::Duration;

use coring::net::{TcpListener, TcpStream};
use coring::time::{sleep, timeout};
use coring::BackendKind;

/// A connected TCP pair on loopback.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = coring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (server, _) = listener.accept().await.unwrap();
    (connect.await.unwrap(), server)
}

/// `n` connected pairs whose server side had one read time out (on io_uring: each with
/// its multishot receive armed, waiting for data).
async fn armed_pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let mut pairs = Vec::new();
    for _ in 0..n {
        let (client, server) = tcp_pair().await;
        let res = timeout(Duration::from_millis(1), server.read(Vec::with_capacity(1))).await;
        assert!(res.is_err(), "nothing sent yet");
        pairs.push((client, server));
    }
    pairs
}

/// A coring stream accepted from a plain std client (the test writes from the std side,
/// so what the coring side receives arrives on its own schedule).
async fn std_client_pair() -> (std::net::TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// Runs `test` on a runtime from `builder` with multishot reads, then on one with
/// single-shot reads (which io_uring then adopts too when dropped).
fn with_both_read_modes<Fut: std::future::Future<Output = ()>>(
    builder: coring::Builder,
    test: impl Fn() -> Fut,
) {
    for b in [builder.clone(), builder.multishot_reads(false)] {
        let rt = b.build().unwrap();
        common::block_on_bounded(&rt, test());
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

// 8 MiB through 100-byte reads: every arrival (up to 4 KiB on io_uring) is split over
// many reads, byte-exact.
coring_test!(large_transfer_through_small_reads, async {
    // Under Wine each 100-byte read costs a trip through its server (8 MiB took 5 s alone
    // and near the 30 s bound with the other tests running): 2 MiB there.
    const LEN: usize = if cfg!(windows) { 2 << 20 } else { 8 << 20 };
    let (client, server) = tcp_pair().await;
    let data = pattern(LEN);
    let writer = coring::spawn(async move {
        let (r, _) = client.write_all(data).await;
        r.unwrap();
        client
    });
    let mut got = Vec::with_capacity(LEN);
    while got.len() < LEN {
        let (r, buf) = server.read(Vec::with_capacity(100)).await;
        let n = r.unwrap();
        assert!(n > 0, "unexpected EOF after {} bytes", got.len());
        assert_eq!(buf.len(), n, "exactly n bytes marked initialised");
        got.extend_from_slice(&buf);
    }
    assert!(got == pattern(LEN), "data corrupted");
    drop(writer.await.unwrap());
});

// Bulk, then ping-pong of small messages, then bulk again, read with 64 KiB buffers: on
// io_uring the stream moves from multishot receives to direct ones (bulk) and back (small
// messages) and to direct again, with a cancel racing arrivals at each switch; every byte
// arrives once, in order, and no provided buffer stays taken.
coring_test!(bulk_small_bulk_keeps_every_byte_in_order, |builder| {
    bulk_small_bulk(builder)
});

// The same with provided buffers smaller than the bulk threshold (256 B; a read must still
// move 4 KiB to count as bulk): the switches in both directions happen, nothing is lost.
coring_test!(bulk_switches_with_small_provided_buffers, |builder| {
    bulk_small_bulk(builder.recv_buffers(64, 256))
});

fn bulk_small_bulk(builder: coring::Builder) {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        const BULK: usize = 4 << 20;
        const SMALL: usize = 100;
        const ROUNDS: usize = 50;
        let total = 2 * BULK + ROUNDS * SMALL;
        let data = pattern(total);
        let (client, server) = tcp_pair().await;
        let writer = coring::spawn({
            let data = data.clone();
            async move {
                let (r, _) = client.write_all(data[..BULK].to_vec()).await;
                r.unwrap();
                for i in 0..ROUNDS {
                    let at = BULK + i * SMALL;
                    let (r, _) = client.write_all(data[at..at + SMALL].to_vec()).await;
                    r.unwrap();
                    // Wait for the reader's ack, so each message is its own arrival.
                    let (r, ack) = client.read_exact(Vec::with_capacity(1)).await;
                    r.unwrap();
                    assert_eq!(ack, [i as u8]);
                }
                let (r, _) = client.write_all(data[total - BULK..].to_vec()).await;
                r.unwrap();
                client
            }
        });
        let mut got = Vec::with_capacity(total);
        let mut acked = 0;
        while got.len() < total {
            let (r, buf) = server.read(Vec::with_capacity(64 << 10)).await;
            let n = r.unwrap();
            assert!(n > 0, "unexpected EOF after {} bytes", got.len());
            assert_eq!(buf.len(), n);
            got.extend_from_slice(&buf);
            // Ack every small message now complete.
            while acked < ROUNDS && got.len() >= BULK + (acked + 1) * SMALL {
                let (r, _) = server.write_all(vec![acked as u8]).await;
                r.unwrap();
                acked += 1;
            }
        }
        assert!(got == data, "data lost, duplicated or reordered");
        drop(writer.await.unwrap());
    });
    assert_eq!(
        rt.provided_buffers_in_use(),
        0,
        "provided buffers still taken"
    );
    if rt.backend() == BackendKind::IoUring {
        // Into bulk mode twice (out of it in between): the switches this test is about.
        assert!(rt.metrics().bulk_switches >= 2, "{:?}", rt.metrics());
    }
}

// A read future dropped after its data arrived but before it returned it (what a select
// does when another branch wins): the bytes go to the next read. On the fallback the
// readiness retry runs the recv inside the driver, into the dropped read's buffer; on
// io_uring they wait in the multishot receive. Either way nothing is lost.
coring_test!(read_dropped_after_its_data_arrived_loses_nothing, async {
    let (client, server) = tcp_pair().await;
    drop_reads_after_arrival(&client, &server, 20, 64).await;
});

// The same in bulk mode: after a bulk transfer through 64 KiB reads, io_uring reads
// receive straight into the caller's buffer (single-shot), and a dropped one's receive is
// kept by the stream for the next read.
coring_test!(read_dropped_in_bulk_mode_loses_nothing, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, read_dropped_in_bulk_mode(&rt));
});

async fn read_dropped_in_bulk_mode(rt: &coring::Runtime) {
    const BULK: usize = 1 << 20;
    let (client, server) = tcp_pair().await;
    let writer = coring::spawn(async move {
        let (r, _) = client.write_all(pattern(BULK)).await;
        r.unwrap();
        client
    });
    let mut got = Vec::with_capacity(BULK);
    while got.len() < BULK {
        let (r, buf) = server.read(Vec::with_capacity(64 << 10)).await;
        assert!(r.unwrap() > 0);
        got.extend_from_slice(&buf);
    }
    assert!(got == pattern(BULK));
    let client = writer.await.unwrap();
    if rt.backend() == BackendKind::IoUring {
        assert!(rt.metrics().bulk_switches >= 1, "never reached bulk mode");
    }
    drop_reads_after_arrival(&client, &server, 3, 64 << 10).await;
}

/// `rounds` times: a read of up to `cap` bytes is polled once (nothing sent yet), the
/// peer sends 10 bytes, the driver gets to run, the read is dropped; the next read must
/// return those 10 bytes.
async fn drop_reads_after_arrival(client: &TcpStream, server: &TcpStream, rounds: u8, cap: usize) {
    for round in 0..rounds {
        let mut read = Box::pin(server.read(Vec::with_capacity(cap)));
        assert!(
            common::poll_once(&mut read).await.is_pending(),
            "nothing was sent yet"
        );
        let (r, _) = client.write_all(vec![round; 10]).await;
        r.unwrap();
        // Let the driver see the data (and, on the fallback, receive it for the read).
        sleep(Duration::from_millis(2)).await;
        drop(read);
        let (r, buf) = timeout(Duration::from_secs(5), server.read(Vec::with_capacity(cap)))
            .await
            .expect("the dropped read's bytes were lost");
        assert_eq!((r.unwrap(), buf), (10, vec![round; 10]), "round {round}");
    }
}

// read_exact across arrival boundaries: 3 writes of odd sizes read back as 5-byte records.
coring_test!(read_exact_across_chunks, async {
    let (client, server) = tcp_pair().await;
    let data = pattern(5 * 1000);
    let (a, rest) = data.split_at(1234);
    let (b, c) = rest.split_at(2001);
    for part in [a, b, c] {
        let (r, _) = client.write_all(part.to_vec()).await;
        r.unwrap();
        sleep(Duration::from_millis(2)).await;
    }
    let mut got = Vec::new();
    for _ in 0..1000 {
        let (r, buf) = server.read_exact(Vec::with_capacity(5)).await;
        r.unwrap();
        got.extend_from_slice(&buf);
    }
    assert_eq!(got, data);
});

// A read future dropped while waiting loses nothing: the data that arrives afterwards is
// what the next read returns.
coring_test!(dropped_read_loses_nothing, async {
    let (client, server) = tcp_pair().await;
    for round in 0..20u8 {
        let res = timeout(
            Duration::from_millis(5),
            server.read(Vec::with_capacity(64)),
        )
        .await;
        assert!(res.is_err(), "nothing was sent yet");
        let msg = vec![round; 10 + round as usize];
        let (r, _) = client.write_all(msg.clone()).await;
        r.unwrap();
        // Let the arrival land (in the stream, on io_uring) before the next read.
        sleep(Duration::from_millis(1)).await;
        let (r, buf) = server
            .read_exact(vec![0u8; msg.len()].into_boxed_slice())
            .await;
        r.unwrap();
        assert_eq!(&buf[..], &msg[..], "round {round}");
    }
});

// EOF reads as 0, and keeps reading as 0; buffered data comes before it.
coring_test!(eof_after_data, async {
    let (client, server) = tcp_pair().await;
    let (r, _) = client.write_all(b"last words".to_vec()).await;
    r.unwrap();
    drop(client);
    let (r, buf) = server.read_exact(Vec::with_capacity(10)).await;
    r.unwrap();
    assert_eq!(buf, b"last words");
    for _ in 0..3 {
        let (r, buf) = server.read(Vec::with_capacity(10)).await;
        assert_eq!(r.unwrap(), 0);
        assert!(buf.is_empty());
    }
});

// A peer reset (close with unread data and SO_LINGER 0) surfaces as an error.
coring_test!(peer_reset_is_an_error, async {
    let (client, server) = tcp_pair().await;
    // Arm the receive first, so the reset reaches an armed multishot on io_uring.
    let res = timeout(Duration::from_millis(5), server.read(Vec::with_capacity(8))).await;
    assert!(res.is_err());
    let std_client = client.into_std().unwrap();
    set_linger_zero(&std_client);
    drop(std_client);
    let (r, _) = server.read(Vec::with_capacity(8)).await;
    let e = r.expect_err("a reset must be an error");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e:?}");
});

/// SO_LINGER with a zero timeout: closing `s` then resets the connection.
#[cfg(unix)]
fn set_linger_zero(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a live linger struct and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

/// SO_LINGER with a zero timeout: closing `s` then resets the connection.
#[cfg(windows)]
fn set_linger_zero(s: &std::net::TcpStream) {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock;
    let linger = WinSock::LINGER {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a live LINGER struct and its size.
    let r = unsafe {
        WinSock::setsockopt(
            s.as_raw_socket() as WinSock::SOCKET,
            WinSock::SOL_SOCKET,
            WinSock::SO_LINGER,
            (&linger as *const WinSock::LINGER).cast(),
            std::mem::size_of::<WinSock::LINGER>() as i32,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

// Many connections with unread data take more provided buffers than the ring has (256 on
// io_uring): receives that find the ring empty end with ENOBUFS and the reads fall back to
// single-shot; every byte still arrives, and every buffer comes back.
coring_test!(buffer_ring_exhaustion_delivers_everything, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        const CONNS: usize = 80;
        const MSGS: usize = 6;
        const SIZE: usize = 1000;
        // Then several separate arrivals to each: 480 arrivals for 256 buffers, none read
        // yet.
        let pairs = armed_pairs(CONNS).await;
        for m in 0..MSGS {
            for (i, (client, _)) in pairs.iter().enumerate() {
                let (r, _) = client.write_all(vec![(i + m) as u8; SIZE]).await;
                r.unwrap();
            }
            sleep(Duration::from_millis(2)).await;
        }
        for (i, (_, server)) in pairs.iter().enumerate() {
            let mut got = Vec::new();
            while got.len() < MSGS * SIZE {
                let (r, buf) = server.read(Vec::with_capacity(700)).await;
                assert!(r.unwrap() > 0);
                got.extend_from_slice(&buf);
            }
            let want: Vec<u8> = (0..MSGS).flat_map(|m| vec![(i + m) as u8; SIZE]).collect();
            assert!(got == want, "connection {i}: data corrupted");
        }
        drop(pairs);
        common::eventually("every provided buffer back in the ring", || {
            rt.provided_buffers_in_use() == 0
        })
        .await;
    });
    assert_eq!(rt.provided_buffers_in_use(), 0);
});

// A stream dropped with its receive armed and data waiting in it: the receive is
// cancelled, its buffers go back to the ring, its descriptor is closed, nothing hangs.
coring_test!(drop_with_pending_data_leaks_nothing, |builder| {
    let rt = builder.build().unwrap();
    let baseline = common::fd_count();
    common::block_on_bounded(&rt, async {
        for _ in 0..50 {
            let (client, server) = tcp_pair().await;
            let res = timeout(Duration::from_millis(1), server.read(Vec::with_capacity(4))).await;
            assert!(res.is_err());
            for _ in 0..3 {
                let (r, _) = client.write_all(pattern(3000)).await;
                r.unwrap();
            }
            sleep(Duration::from_millis(1)).await;
            // Take part of one arrival so the stream also holds a partly read buffer (on
            // the fallback: the 4 bytes the timed-out read's kept receive got).
            let (r, _) = server.read(Vec::with_capacity(10)).await;
            let n = r.unwrap();
            assert!((1..=10).contains(&n), "{n}");
            drop(server);
            drop(client);
        }
        common::eventually("cancelled receives to finish", || {
            rt.ops_in_flight() == 0 && rt.provided_buffers_in_use() == 0
        })
        .await;
    });
    assert_eq!(rt.provided_buffers_in_use(), 0);
    assert_eq!(rt.ops_in_flight(), 0);
    // Other tests in this binary may open descriptors concurrently.
    assert!(common::fd_count() <= baseline + 8);
});

// into_std after reads: the armed receive is cancelled at once so the descriptor can be
// handed over; while the stream holds unread data, into_std gives it back instead of
// losing the data.
coring_test!(into_std_keeps_unread_data, async {
    use std::io::Read;
    let (client, server) = tcp_pair().await;
    let (r, _) = client.write_all(b"0123456789".to_vec()).await;
    r.unwrap();
    let (r, _) = server.read_exact(Vec::with_capacity(4)).await;
    r.unwrap();
    // On io_uring the other 6 bytes are in the stream now (on the fallback backend, in the
    // socket): either way they must reach whoever reads next.
    let server = match server.into_std() {
        Ok(std_server) => {
            let mut rest = [0u8; 6];
            std_server.set_nonblocking(false).unwrap();
            (&std_server).read_exact(&mut rest).unwrap();
            assert_eq!(&rest, b"456789");
            TcpStream::from_std(std_server).unwrap()
        }
        Err(server) => {
            let (r, rest) = server.read_exact(Vec::with_capacity(6)).await;
            r.unwrap();
            assert_eq!(rest, b"456789");
            server
        }
    };
    // Nothing buffered any more: into_std succeeds.
    let std_server = server
        .into_std()
        .expect("nothing buffered, no operation in flight");
    drop(std_server);
});

// Backpressure: a stream nobody reads does not empty its socket into the runtime's shared
// provided-buffer ring. On io_uring its multishot receive is cancelled once a few arrivals
// wait unread (the driver's cap, 8), so the rest stays in the socket and TCP flow control
// throttles the writer, as with plain reads; the fallback has no provided buffers. Meanwhile
// another connection's reads work, and afterwards the slow stream's reader gets every byte,
// in order (the arrivals queued before the cancel first, then the rest through re-armed
// receives).
coring_test!(unread_stream_is_throttled, |builder| {
    use std::cell::Cell;
    use std::rc::Rc;
    /// The driver's cap on unread arrivals per multishot receive.
    const CAP: usize = 8;
    /// What may come on top of the cap: the arrival the stream is partly reading, and those
    /// the kernel posts in the same batch of task work before the cancel is submitted (it
    /// retries a receive up to 32 times per wakeup). Far below the ring's 256.
    const MARGIN: usize = 40;
    const LEN: usize = 2 << 20;
    const CHUNK: usize = 64 << 10;
    let rt = builder.build().unwrap();
    let uring = rt.backend() == BackendKind::IoUring;
    common::block_on_bounded(&rt, async {
        let (client, server) = tcp_pair().await;
        let (client2, server2) = tcp_pair().await;
        // Arm the receive (on io_uring) with a read that gets nothing.
        let res = timeout(Duration::from_millis(1), server.read(Vec::with_capacity(1))).await;
        assert!(res.is_err(), "nothing was sent yet");
        let written = Rc::new(Cell::new(0usize));
        let writer = coring::spawn({
            let written = written.clone();
            async move {
                let data = pattern(LEN);
                for part in data.chunks(CHUNK) {
                    let (r, _) = client.write_all(part.to_vec()).await;
                    r.unwrap();
                    written.set(written.get() + part.len());
                }
                client
            }
        });
        // Leave `server` unread until the writer stalls (for 30 ms) or 200 ms pass,
        // checking the buffers it holds and that the other connection still reads.
        let mut max_in_use = 0;
        let (mut last, mut still) = (0, 0);
        for round in 0..200u32 {
            sleep(Duration::from_millis(1)).await;
            max_in_use = max_in_use.max(rt.provided_buffers_in_use());
            if round % 10 == 0 {
                let msg = vec![round as u8; 100];
                let (r, _) = client2.write_all(msg.clone()).await;
                r.unwrap();
                let (r, buf) = server2.read_exact(Vec::with_capacity(100)).await;
                r.unwrap();
                assert_eq!(buf, msg, "second connection, round {round}");
            }
            let now = written.get();
            still = if now == last { still + 1 } else { 0 };
            last = now;
            if still >= 30 {
                break;
            }
        }
        max_in_use = max_in_use.max(rt.provided_buffers_in_use());
        assert!(
            max_in_use <= CAP + MARGIN,
            "an unread stream held {max_in_use} provided buffers (cap {CAP}); {}",
            rt.backend_description()
        );
        if uring {
            assert!(
                rt.metrics().multishot_throttled > 0,
                "2 MiB unread must reach the cap: {:?}",
                rt.metrics()
            );
        }
        let mut got = Vec::with_capacity(LEN);
        while got.len() < LEN {
            let (r, buf) = server.read(Vec::with_capacity(CHUNK)).await;
            let n = r.unwrap();
            assert!(n > 0, "unexpected EOF after {} bytes", got.len());
            got.extend_from_slice(&buf);
        }
        assert_eq!(got.len(), LEN);
        assert!(got == pattern(LEN), "data corrupted");
        drop(writer.await.unwrap());
        // Once everything was read, no buffer is held.
        common::eventually("every provided buffer back in the ring", || {
            rt.provided_buffers_in_use() == 0
        })
        .await;
        eprintln!(
            "unread_stream_is_throttled: max in use {max_in_use}, {:?}",
            rt.metrics()
        );
    });
});

// Only io_uring has provided buffers; the fallback backend never uses any (nor does IOCP,
// which takes its place on Windows).
#[test]
fn fallback_uses_no_provided_buffers() {
    for &kind in common::BACKENDS {
        if kind == BackendKind::IoUring {
            continue;
        }
        let rt = common::runtime(kind);
        common::block_on_bounded(&rt, async {
            let (client, server) = tcp_pair().await;
            let (r, _) = client.write_all(b"abc".to_vec()).await;
            r.unwrap();
            let (r, _) = server.read_exact(Vec::with_capacity(3)).await;
            r.unwrap();
        });
        assert_eq!(rt.provided_buffers_in_use(), 0, "{kind:?}");
    }
}

// A tiny provided-buffer ring (8 buffers of 256 bytes, Builder::recv_buffers): arrivals
// larger than a buffer take several, 6 streams with unread data exhaust the ring
// (ENOBUFS, single-shot reads), and every byte still arrives in order through small and
// large reads; every buffer comes back.
coring_test!(tiny_recv_buffers_deliver_everything, |builder| {
    let rt = builder.recv_buffers(8, 256).build().unwrap();
    common::block_on_bounded(&rt, async {
        const CONNS: usize = 6;
        const LEN: usize = 64 << 10;
        let pairs = armed_pairs(CONNS).await;
        let mut writers = Vec::new();
        let mut servers = Vec::new();
        for (i, (client, server)) in pairs.into_iter().enumerate() {
            writers.push(coring::spawn(async move {
                let (r, _) = client.write_all(pattern(LEN + i)).await;
                r.unwrap();
                client
            }));
            servers.push(server);
        }
        for (i, server) in servers.iter().enumerate() {
            let mut got = Vec::new();
            let mut cap = 100;
            while got.len() < LEN + i {
                let (r, buf) = server.read(Vec::with_capacity(cap)).await;
                assert!(r.unwrap() > 0);
                got.extend_from_slice(&buf);
                cap = if cap == 100 { 16 << 10 } else { 100 };
            }
            assert!(got == pattern(LEN + i), "connection {i}: data corrupted");
        }
        for w in writers {
            drop(w.await.unwrap());
        }
        drop(servers);
        common::eventually("every provided buffer back in the ring", || {
            rt.provided_buffers_in_use() == 0
        })
        .await;
    });
});

// Builder::multishot_reads(false): every read is its own receive, on both backends (so
// 50 ping-pong rounds submit at least 50 receives and 50 sends on the reading side; with
// multishot on, io_uring would submit one receive for all of them).
coring_test!(multishot_reads_off_receives_per_read, |builder| {
    // Off stays off whatever else is configured, in either order.
    let rt = builder
        .multishot_reads(false)
        .recv_buffers(64, 4096)
        .build()
        .unwrap();
    common::block_on_bounded(&rt, async {
        let (client, server) = tcp_pair().await;
        let echo = coring::spawn(async move {
            for _ in 0..50 {
                let (r, buf) = client.read_exact(Vec::with_capacity(8)).await;
                r.unwrap();
                let (r, _) = client.write_all(buf).await;
                r.unwrap();
            }
        });
        for i in 0..50u64 {
            let (r, _) = server.write_all(i.to_le_bytes().to_vec()).await;
            r.unwrap();
            let (r, buf) = server.read_exact(Vec::with_capacity(8)).await;
            r.unwrap();
            assert_eq!(buf, i.to_le_bytes());
        }
        echo.await.unwrap();
    });
    let m = rt.metrics();
    assert!(m.ops_submitted >= 200, "{m:?}");
    assert_eq!(rt.provided_buffers_in_use(), 0);
});

// Builder::recv_buffers refuses shapes the kernel or a sane memory budget cannot take,
// with a message naming the limit. (Builder validation only: no runtime, so no backend.)
#[test]
fn recv_buffers_out_of_range_panic_with_the_limit() {
    let cases: [(u16, usize, &str); 5] = [
        (3, 4096, "power of two"),
        (0, 4096, "power of two"),
        (256, 0, "from 1 byte to 1 MiB"),
        (256, (1 << 20) + 1, "from 1 byte to 1 MiB"),
        (32768, 1 << 20, "exceed 256 MiB"),
    ];
    for (count, size, want) in cases {
        let r = std::panic::catch_unwind(|| coring::Builder::new().recv_buffers(count, size));
        let msg = r.expect_err("an out-of-range shape must panic");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains(want), "({count}, {size}): {msg}");
    }
    // The largest accepted shapes build.
    let _ = coring::Builder::new().recv_buffers(32768, 8192);
    let _ = coring::Builder::new().recv_buffers(256, 1 << 20);
}

// into_std right after a read was polled once (data waiting in the socket) and dropped:
// the bytes are neither lost nor skipped, whether the receive had completed unreaped,
// was still queued for the kernel, or waited for readiness. Either the stream comes back
// (read them there) or the std stream reads them.
coring_test!(
    into_std_right_after_a_dropped_read_keeps_its_bytes,
    |builder| {
        with_both_read_modes(builder, || async {
            use std::io::{Read, Write};
            let (mut client, server) = std_client_pair().await;
            client.write_all(b"hello").unwrap();
            sleep(Duration::from_millis(5)).await;
            let mut read = Box::pin(server.read(Vec::with_capacity(16)));
            if common::poll_once(&mut read).await.is_ready() {
                // Served at once (nothing left to lose): the scenario needs a pending read.
                return;
            }
            drop(read);
            let got = match server.into_std() {
                Err(s) => {
                    let (r, b) = timeout(Duration::from_secs(5), s.read(Vec::with_capacity(16)))
                        .await
                        .expect("the stream came back but its 5 received bytes are gone");
                    r.unwrap();
                    b
                }
                Ok(mut std_s) => {
                    std_s.set_nonblocking(false).unwrap();
                    std_s
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut b = [0u8; 16];
                    let n = std_s
                        .read(&mut b)
                        .expect("into_std succeeded but the bytes are gone");
                    b[..n].to_vec()
                }
            };
            assert_eq!(got, b"hello");
        });
    }
);

// Two tasks reading at once from a stream with an adopted receive (a dropped single-shot
// read's: on the fallback every read is one): one waits for it, the other reads on its
// own; both finish, and between them they get every byte.
coring_test!(
    concurrent_reads_with_an_adopted_receive_both_finish,
    |builder| {
        with_both_read_modes(builder, || async {
            use std::io::Write;
            use std::rc::Rc;
            let (mut client, server) = std_client_pair().await;
            let server = Rc::new(server);
            let r = timeout(
                Duration::from_millis(2),
                server.read(Vec::with_capacity(16)),
            )
            .await;
            assert!(r.is_err(), "nothing sent yet");
            let tasks: Vec<_> = (0..2)
                .map(|_| {
                    let s = server.clone();
                    coring::spawn(async move { s.read(Vec::with_capacity(16)).await })
                })
                .collect();
            for _ in 0..5 {
                coring::task::yield_now().await;
            }
            client.write_all(b"abc").unwrap();
            sleep(Duration::from_millis(20)).await;
            client.write_all(b"def").unwrap();
            let mut got = Vec::new();
            for (i, t) in tasks.into_iter().enumerate() {
                let (r, b) = timeout(Duration::from_secs(5), t)
                    .await
                    .unwrap_or_else(|_| panic!("reading task {i} never woke"))
                    .unwrap();
                assert!(r.unwrap() > 0);
                got.extend(b);
            }
            // Each read is whole arrivals here; which task got which is not defined.
            got.sort_unstable();
            assert_eq!(got, b"abcdef");
        });
    }
);

// A stream whose adopted receive belonged to a runtime since dropped (which cancelled it)
// reads on a new runtime. (Two runtimes per backend, so no coring_test! runtime.)
#[test]
fn stream_with_an_adopted_receive_outlives_its_runtime() {
    use std::io::Write;
    // Multishot reads (io_uring: a receive the dropped runtime cancelled, read from
    // here), and single-shot ones (an adopted receive on every backend).
    for (&kind, multishot) in common::BACKENDS
        .iter()
        .flat_map(|k| [(k, true), (k, false)])
    {
        common::with_watchdog("stream_outlives_runtime", || {
            let rt1 = coring::Builder::new()
                .backend(kind)
                .multishot_reads(multishot)
                .build()
                .unwrap();
            let (server, mut client) = rt1.block_on(async {
                let (client, server) = std_client_pair().await;
                let r = timeout(Duration::from_millis(2), server.read(Vec::with_capacity(8))).await;
                assert!(r.is_err(), "nothing sent yet");
                (server, client)
            });
            drop(rt1);
            client.write_all(b"x").unwrap();
            let rt2 = common::runtime(kind);
            rt2.block_on(async {
                let (r, b) = timeout(Duration::from_secs(5), server.read(Vec::with_capacity(8)))
                    .await
                    .unwrap_or_else(|_| panic!("{kind:?}: read on the new runtime hung"));
                // Windows binds a socket to the completion port of the first runtime that
                // did IO on it, for good (see `driver/backend/iocp`): the new runtime is
                // refused, with InvalidInput, instead.
                #[cfg(windows)]
                {
                    drop(b);
                    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
                }
                #[cfg(unix)]
                match r {
                    Ok(n) => assert_eq!((n, b), (1, b"x".to_vec()), "{kind:?}"),
                    Err(e) => panic!("{kind:?}: read on the new runtime: {e}"),
                }
            });
        });
    }
}

// A claim names the adopted receive it was taken on: reader A waits on adopted receive
// K1; unregister() cancels K1; another dropped read leaves K2 adopted; reader D claims
// K2. A must not wait on K2 unclaimed (stealing D's wake); it finds K1 gone and reads on
// its own. Both finish, with every byte between them. Single-shot reads, so that io_uring
// adopts receives too.
coring_test!(
    claim_on_a_replaced_adopted_receive_does_not_hang,
    |builder| {
        use coring::task::yield_now;
        use std::io::Write;
        use std::rc::Rc;
        let rt = builder.multishot_reads(false).build().unwrap();
        common::block_on_bounded(&rt, async {
            let (mut client, server) = std_client_pair().await;
            let server = Rc::new(server);
            let mut k1 = Box::pin(server.read(Vec::with_capacity(16)));
            assert!(common::poll_once(&mut k1).await.is_pending());
            drop(k1);
            let s = server.clone();
            let a = coring::spawn(async move { s.read(Vec::with_capacity(16)).await });
            yield_now().await;
            yield_now().await;
            let _ = server.unregister();
            let mut k2 = Box::pin(server.read(Vec::with_capacity(16)));
            assert!(common::poll_once(&mut k2).await.is_pending());
            drop(k2);
            let s = server.clone();
            let d = coring::spawn(async move { s.read(Vec::with_capacity(16)).await });
            for _ in 0..5 {
                yield_now().await;
            }
            client.write_all(b"hello").unwrap();
            sleep(Duration::from_millis(20)).await;
            client.write_all(b"world").unwrap();
            let mut got = Vec::new();
            for (name, h) in [("A", a), ("D", d)] {
                let (r, b) = timeout(Duration::from_secs(5), h)
                    .await
                    .unwrap_or_else(|_| panic!("reader {name} never woke"))
                    .unwrap();
                assert!(r.unwrap() > 0);
                got.extend(b);
            }
            got.sort_unstable();
            let mut want = b"helloworld".to_vec();
            want.sort_unstable();
            assert_eq!(got, want);
        });
    }
);

// A read on another runtime while a read of the first runtime waits on the stream's
// adopted receive: InvalidInput (the first runtime may hold bytes for the stream), not a
// receive of its own that could take newer bytes first. (Two runtimes per backend, so no
// coring_test! runtime.) On the readiness backend a stream read that waits submits no
// receive (it waits for the socket's readiness, see `Push::NotReady`), so a dropped one
// leaves nothing behind and the first runtime holds nothing for the stream: the second
// runtime's read is not refused, it reads what arrives, and the waiting read then gets
// what comes after (here the end of the stream).
#[test]
fn read_elsewhere_while_a_claimed_adopted_receive_waits_is_refused() {
    use coring::task::yield_now;
    use std::rc::Rc;
    for &kind in common::BACKENDS {
        common::with_watchdog("read_elsewhere_claimed", || {
            let rt1 = coring::Builder::new()
                .backend(kind)
                .multishot_reads(false)
                .build()
                .unwrap();
            let (server, client, waiting) = rt1.block_on(async {
                let (client, server) = tcp_pair().await;
                let server = Rc::new(server);
                let mut k1 = Box::pin(server.read(Vec::with_capacity(16)));
                assert!(common::poll_once(&mut k1).await.is_pending());
                drop(k1);
                let s = server.clone();
                let waiting = coring::spawn(async move { s.read(Vec::with_capacity(16)).await });
                yield_now().await;
                yield_now().await;
                (server, client, waiting)
            });
            let rt2 = common::runtime(kind);
            if kind == coring::BackendKind::Fallback {
                // Nothing is held on the first runtime: this read takes what arrives.
                rt2.block_on(async {
                    let mut peer = client.into_std().expect("no operation uses the client");
                    std::io::Write::write_all(&mut peer, b"xy").unwrap();
                    let (r, b) = server.read(Vec::with_capacity(16)).await;
                    assert_eq!((r.unwrap(), b), (2, b"xy".to_vec()));
                    drop(peer);
                });
                rt1.block_on(async {
                    let (r, _) = timeout(Duration::from_secs(5), waiting)
                        .await
                        .expect("the waiting read never woke")
                        .unwrap();
                    assert_eq!(r.unwrap(), 0, "the peer closed after the bytes rt2 read");
                });
                return;
            }
            rt2.block_on(async {
                let (r, _) = server.read(Vec::with_capacity(16)).await;
                let e = r.expect_err("must not read around the other runtime's receive");
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{kind:?}: {e}");
            });
            // Back on the first runtime the waiting read gets the bytes.
            rt1.block_on(async {
                let (r, _) = client.write_all(b"AB".to_vec()).await;
                r.unwrap();
                let (r, b) = timeout(Duration::from_secs(5), waiting)
                    .await
                    .expect("the waiting read never woke")
                    .unwrap();
                assert_eq!((r.unwrap(), b), (2, b"AB".to_vec()), "{kind:?}");
            });
        });
    }
}

// A stream read polled on one runtime (its multishot receive armed there) and then awaited
// on another panics with advice instead of hanging (issue 14, defect 7). io_uring only:
// multishot receives exist only there; on the fallback a read that waits holds nothing
// and reads on whichever runtime polls it.
#[cfg(target_os = "linux")]
#[test]
fn a_multishot_read_moved_to_another_runtime_panics_with_advice() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    common::with_watchdog("moved multishot read", || {
        let first = common::runtime(coring::BackendKind::IoUring);
        let second = common::runtime(coring::BackendKind::IoUring);
        let (client, server) = first.block_on(tcp_pair());
        let mut read = Box::pin(server.read(Vec::with_capacity(16)));
        first.block_on(async {
            assert!(common::poll_once(&mut read).await.is_pending());
        });
        let r = catch_unwind(AssertUnwindSafe(|| second.block_on(read)));
        let payload = r.expect_err("the moved read must not be awaited");
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.contains("awaited outside it"), "{msg}");
        drop((client, server));
    });
}
