//! Explicit cancellation (`coring::cancel::CancelToken`): an operation cancelled without
//! dropping its future ends with `ECANCELED` and gives its buffer back, or with its real
//! result if the kernel finished first; no byte read, written, datagram or connection is
//! lost, and the object stays usable. Every test runs on every backend; where the
//! backends take different paths (io_uring's multishot receive, the fallback's readiness
//! wait), the test names both.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::poll_once;
use coring::cancel::CancelToken;
use coring::fs::File;
use coring::net::{TcpListener, TcpStream, UdpSocket};
use coring::time::{sleep, timeout};

/// How long anything that must happen may take before the test fails instead of hanging.
const BOUND: Duration = Duration::from_secs(5);

fn is_cancelled(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(common::ECANCELED)
}

/// The stream the tests cancel operations on: a Unix socketpair on Unix; a loopback TCP
/// connection on Windows, which has no socketpair (and coring offers no Unix-domain
/// sockets there).
#[cfg(unix)]
type PairStream = coring::net::UnixStream;
/// The stream the tests cancel operations on: a Unix socketpair on Unix; a loopback TCP
/// connection on Windows, which has no socketpair (and coring offers no Unix-domain
/// sockets there).
#[cfg(windows)]
type PairStream = TcpStream;
/// The std type of [`PairStream`].
#[cfg(unix)]
type StdPairStream = std::os::unix::net::UnixStream;
/// The std type of [`PairStream`].
#[cfg(windows)]
type StdPairStream = std::net::TcpStream;

/// A coring stream and the std stream at its other end.
#[cfg(unix)]
fn stream_pair() -> (PairStream, StdPairStream) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    (PairStream::from_std(a).unwrap(), b)
}

/// A coring stream and the std stream at its other end (TCP_NODELAY on both, so small
/// writes go at once, as on a socketpair).
#[cfg(windows)]
fn stream_pair() -> (PairStream, StdPairStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (PairStream::from_std(a).unwrap(), b)
}

/// Cancels `token` after `after`, from another task.
fn cancel_later(token: &CancelToken, after: Duration) {
    let token = token.clone();
    let _detached = coring::spawn(async move {
        sleep(after).await;
        token.cancel();
    });
}

/// Reads from `s` until `want` bytes came, failing if they do not within [`BOUND`].
async fn read_n(s: &PairStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let (r, buf) = timeout(BOUND, s.read(Vec::with_capacity(want - got.len())))
            .await
            .expect("bytes that were sent never arrived");
        let n = r.unwrap();
        assert!(n > 0, "end of file after {} of {want} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// A read waiting for data is cancelled from another task: it ends with ECANCELED and its
/// buffer, the stream keeps working, and data sent afterwards reaches the next read.
/// (io_uring: the read waits on the stream's multishot receive, which stays armed;
/// fallback: it waits for readability with nothing submitted.)
fn waiting_read_is_cancelled(builder: coring::Builder) {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let (a, mut b) = stream_pair();
        for round in 0..3u8 {
            let token = CancelToken::new();
            cancel_later(&token, Duration::from_millis(5));
            let (r, buf) = timeout(BOUND, token.bind(a.read(Vec::with_capacity(64))))
                .await
                .expect("a cancelled read never ended");
            assert!(is_cancelled(&r.unwrap_err()), "round {round}");
            assert_eq!(buf.capacity(), 64, "the buffer comes back");
            assert!(token.is_cancelled());

            b.write_all(&[round; 5]).unwrap();
            assert_eq!(read_n(&a, 5).await, vec![round; 5]);
        }
    });
}

coring_test!(
    a_waiting_read_ends_cancelled_and_the_stream_goes_on,
    |builder| waiting_read_is_cancelled(builder)
);

// io_uring's single-shot path: the receive is in the kernel, grouped under the token.
#[cfg(target_os = "linux")]
#[test]
fn a_waiting_single_shot_receive_ends_cancelled_on_io_uring() {
    common::with_watchdog("single_shot_cancel", || {
        waiting_read_is_cancelled(
            coring::Builder::new()
                .backend(coring::BackendKind::IoUring)
                .multishot_reads(false),
        )
    });
}

/// The race the API exists for: data arrives around the moment of the cancel. Whatever
/// each read returns (its real bytes, or ECANCELED), every byte sent is read exactly once,
/// in order. Three timings: the cancel in the same turn as the send, after one yield, and
/// after the runtime has certainly reaped the data (on io_uring the read then returns
/// it: the kernel finished first).
fn race(builder: coring::Builder) {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let (a, mut b) = stream_pair();
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let (mut real, mut cancelled) = (0, 0);
        for i in 0..150u32 {
            let token = CancelToken::new();
            let mut read = Box::pin(token.bind(a.read(Vec::with_capacity(16))));
            // Ready at once when an earlier read ended cancelled with bytes waiting in the
            // socket (the fallback's reads wait for readability with nothing submitted).
            let first = poll_once(&mut read).await;
            let chunk = [(i % 251) as u8; 3];
            b.write_all(&chunk).unwrap();
            sent.extend_from_slice(&chunk);
            let (r, buf) = match first {
                std::task::Poll::Ready(out) => out,
                std::task::Poll::Pending => {
                    match i % 3 {
                        0 => {}
                        1 => coring::task::yield_now().await,
                        _ => sleep(Duration::from_millis(2)).await,
                    }
                    token.cancel();
                    timeout(BOUND, read).await.expect("a cancelled read hung")
                }
            };
            match r {
                Ok(n) => {
                    assert!(n > 0, "no end of file here");
                    got.extend_from_slice(&buf[..n]);
                    real += 1;
                }
                Err(e) => {
                    assert!(is_cancelled(&e), "unexpected error {e}");
                    cancelled += 1;
                }
            }
        }
        let rest = read_n(&a, sent.len() - got.len()).await;
        got.extend_from_slice(&rest);
        assert_eq!(got, sent, "bytes lost, duplicated or reordered");
        assert!(real + cancelled == 150);
        eprintln!("race: {real} reads returned data, {cancelled} ended cancelled");
    });
}

coring_test!(cancel_racing_arrivals_loses_no_byte, |builder| race(
    builder
));

// The deterministic half of the race on io_uring: the receive's completion was reaped
// before the cancel, so the read returns it. (On the fallback the read was never
// submitted, waiting for readability: it ends cancelled and the bytes wait in the socket
// for the next read, which the race test above checks.)
#[cfg(target_os = "linux")]
#[test]
fn a_receive_the_kernel_finished_first_returns_its_bytes_on_io_uring() {
    common::with_watchdog("finished_first", || {
        for multishot in [true, false] {
            let rt = coring::Builder::new()
                .backend(coring::BackendKind::IoUring)
                .multishot_reads(multishot)
                .build()
                .unwrap();
            common::block_on_bounded(&rt, async {
                let (a, mut b) = stream_pair();
                let token = CancelToken::new();
                let mut read = Box::pin(token.bind(a.read(Vec::with_capacity(16))));
                assert!(poll_once(&mut read).await.is_pending());
                b.write_all(b"first").unwrap();
                sleep(Duration::from_millis(20)).await;
                token.cancel();
                let (r, buf) = read.await;
                assert_eq!(r.unwrap(), 5, "multishot {multishot}");
                assert_eq!(&buf[..], b"first");
            });
        }
    });
}

// Writes to a peer that does not read: the cancel stops the one waiting for room; every
// write reports exactly what it sent (a partial count, or ECANCELED for nothing), so the
// peer receives exactly the reported bytes, and the stream writes again afterwards.
coring_test!(cancelled_writes_report_exactly_what_was_sent, async {
    let (a, b) = stream_pair();
    let token = CancelToken::new();
    cancel_later(&token, Duration::from_millis(20));
    let pattern =
        |off: usize, len: usize| -> Vec<u8> { (off..off + len).map(|i| (i % 251) as u8).collect() };
    let mut sent = 0usize;
    loop {
        let chunk = pattern(sent, 64 * 1024);
        let (r, _) = timeout(BOUND, token.bind(a.write(chunk)))
            .await
            .expect("a cancelled write hung");
        match r {
            Ok(n) => sent += n,
            Err(e) => {
                assert!(is_cancelled(&e), "unexpected error {e}");
                break;
            }
        }
    }
    // Cancelled for good: a write bound to the token now ends at once.
    let (r, buf) = token.bind(a.write(vec![1u8; 10])).await;
    assert!(is_cancelled(&r.unwrap_err()));
    assert_eq!(buf.len(), 10);

    // The stream is not poisoned: an unbound write goes through once the peer reads.
    let reader = std::thread::spawn(move || {
        let mut b = b;
        let mut all = Vec::new();
        b.set_read_timeout(Some(BOUND)).unwrap();
        while all.len() < sent + 7 {
            let mut chunk = vec![0u8; 256 * 1024];
            let n = b.read(&mut chunk).expect("peer read");
            assert!(n > 0);
            all.extend_from_slice(&chunk[..n]);
        }
        all
    });
    let (r, _) = timeout(BOUND, a.write_all(pattern(sent, 7)))
        .await
        .expect("the write after the cancel hung");
    r.unwrap();
    let all = reader.join().unwrap();
    assert_eq!(all.len(), sent + 7, "the peer got more than was reported");
    assert!(all == pattern(0, sent + 7), "the peer got other bytes");
});

// Operations started under a cancelled token end at once without reaching the kernel:
// the file stays empty and the runtime submitted nothing.
coring_test!(operations_after_the_cancel_end_at_once, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let dir = common::TempDir::new("cancel-after");
        let file = File::create(dir.path("f")).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (later, mut peer2) = stream_pair();
        peer2.write_all(b"1").unwrap();
        assert_eq!(read_n(&later, 1).await, b"1");
        // A read that waits, dropped: the fallback now knows the socket is empty.
        let waited = timeout(Duration::from_millis(5), later.read(Vec::with_capacity(8))).await;
        assert!(waited.is_err(), "nothing was sent");
        let token = CancelToken::new();
        token.cancel();
        let before = rt.metrics().ops_submitted;
        let (w, buf) = token.bind(file.write_at(b"data".to_vec(), 0)).await;
        assert!(is_cancelled(&w.unwrap_err()));
        assert_eq!(&buf[..], b"data");
        let accepted = token.bind(listener.accept()).await;
        assert!(is_cancelled(&accepted.unwrap_err()));
        let connect = token
            .bind(TcpStream::connect(listener.local_addr().unwrap()))
            .await;
        assert!(is_cancelled(&connect.unwrap_err()));
        // A stream's first read, and a later one (the fallback then waits for readability
        // before building a receive; io_uring's multishot receive is armed by then).
        let (first, _peer1) = stream_pair();
        let (r, _) = token.bind(first.read(Vec::with_capacity(8))).await;
        assert!(is_cancelled(&r.unwrap_err()));
        let (r, _) = token.bind(later.read(Vec::with_capacity(8))).await;
        assert!(is_cancelled(&r.unwrap_err()));
        assert_eq!(
            rt.metrics().ops_submitted,
            before,
            "something reached the kernel"
        );
        assert_eq!(file.metadata().await.unwrap().len(), 0);
        // Unbound, the same operations work.
        file.write_all_at(b"data".to_vec(), 0).await.0.unwrap();
        assert_eq!(file.metadata().await.unwrap().len(), 4);
    });
});

// A waiting accept is cancelled; a connection made afterwards is accepted by the next
// call (not lost to the cancelled one).
coring_test!(a_cancelled_accept_loses_no_connection, async {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancelToken::new();
    cancel_later(&token, Duration::from_millis(5));
    let r = timeout(BOUND, token.bind(listener.accept()))
        .await
        .expect("a cancelled accept hung");
    assert!(is_cancelled(&r.unwrap_err()));
    let client = std::net::TcpStream::connect(addr).unwrap();
    let (_conn, peer) = timeout(BOUND, listener.accept())
        .await
        .expect("the connection was lost")
        .unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
});

// A receive that waits behind a retained one (an earlier call was dropped while its
// receive waited) is cancelled; the datagram that comes later goes to the next call.
coring_test!(
    a_call_waiting_behind_a_retained_receive_is_cancelled,
    async {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sock.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut dropped = Box::pin(sock.recv_from(Vec::with_capacity(64)));
        assert!(poll_once(&mut dropped).await.is_pending());
        drop(dropped);

        let token = CancelToken::new();
        cancel_later(&token, Duration::from_millis(5));
        let (r, buf) = timeout(BOUND, token.bind(sock.recv_from(Vec::with_capacity(32))))
            .await
            .expect("a cancelled receive hung");
        assert!(is_cancelled(&r.unwrap_err()));
        assert_eq!(buf.capacity(), 32);

        sender.send_to(b"later", to).unwrap();
        let (r, buf) = timeout(BOUND, sock.recv_from(Vec::with_capacity(64)))
            .await
            .expect("the datagram was lost");
        assert_eq!(r.unwrap(), (5, sender.local_addr().unwrap()));
        assert_eq!(&buf[..], b"later");
    }
);

// A bound receive dropped while it waits is retained for the socket's next call; the token
// cancelled afterwards cancels it (io_uring), and the next call, unbound, submits its own
// receive instead of reporting that cancel: the datagram is not lost.
coring_test!(
    a_token_cancelled_after_its_call_was_dropped_loses_nothing,
    async {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sock.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let token = CancelToken::new();
        let mut dropped = Box::pin(token.bind(sock.recv_from(Vec::with_capacity(64))));
        assert!(poll_once(&mut dropped).await.is_pending());
        drop(dropped);
        token.cancel();
        sleep(Duration::from_millis(5)).await;
        sender.send_to(b"kept", to).unwrap();
        let (r, buf) = timeout(BOUND, sock.recv_from(Vec::with_capacity(64)))
            .await
            .expect("the datagram was lost");
        assert_eq!(r.unwrap(), (4, sender.local_addr().unwrap()));
        assert_eq!(&buf[..], b"kept");
    }
);

// A stream read waiting behind a retained receive (io_uring single-shot path: an earlier
// read was dropped while its receive waited) is cancelled; the bytes sent later reach the
// next read. On the fallback and io_uring's multishot path nothing is retained and the
// read waits as in the first test; the test runs there too.
coring_test!(
    a_read_waiting_behind_a_retained_receive_is_cancelled,
    |builder| {
        let rt = builder.multishot_reads(false).build().unwrap();
        common::block_on_bounded(&rt, async {
            let (a, mut b) = stream_pair();
            let mut dropped = Box::pin(a.read(Vec::with_capacity(64)));
            assert!(poll_once(&mut dropped).await.is_pending());
            drop(dropped);

            let token = CancelToken::new();
            cancel_later(&token, Duration::from_millis(5));
            let (r, _) = timeout(BOUND, token.bind(a.read(Vec::with_capacity(64))))
                .await
                .expect("a cancelled read hung");
            assert!(is_cancelled(&r.unwrap_err()));

            b.write_all(b"after").unwrap();
            assert_eq!(read_n(&a, 5).await, b"after");
        });
    }
);

// A pipe read (on the fallback a blocking-pool job waiting for the descriptor; on
// io_uring a read in the kernel) is cancelled and gives its buffer back; the pipe then
// delivers what is written next.
// Pipes from pipe(2): a Unix facility (Windows' anonymous pipes have no overlapped IO).
#[cfg(unix)]
coring_test!(a_waiting_pipe_read_is_cancelled, async {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array. (Not pipe2: macOS lacks it.)
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are new and owned by nothing else.
    let (rd, mut wr) = unsafe {
        (
            File::from_std(std::fs::File::from_raw_fd(fds[0])),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let token = CancelToken::new();
    cancel_later(&token, Duration::from_millis(5));
    let (r, buf) = timeout(BOUND, token.bind(rd.read_at(Vec::with_capacity(8), 0)))
        .await
        .expect("a cancelled pipe read hung");
    assert!(is_cancelled(&r.unwrap_err()));
    assert_eq!(buf.capacity(), 8);
    wr.write_all(b"pipe").unwrap();
    let (r, buf) = timeout(BOUND, rd.read_at(Vec::with_capacity(8), 0))
        .await
        .expect("the pipe's bytes were lost");
    assert_eq!(r.unwrap(), 4);
    assert_eq!(&buf[..], b"pipe");
});

// The token covers the operations of everything its future polls, not of tasks it spawns,
// and not timers; tokens nest, the innermost one owning an operation.
coring_test!(the_token_covers_what_its_future_polls, async {
    let (a, mut b) = stream_pair();
    let (c, mut d) = stream_pair();
    let outer = CancelToken::new();
    let inner = CancelToken::new();
    let mut both = Box::pin(outer.bind(async {
        let nested = inner.bind(c.read(Vec::with_capacity(8)));
        let own = a.read(Vec::with_capacity(8));
        let timer = sleep(Duration::from_millis(30));
        // Both reads and the timer in one future (no join macro needed for three).
        let mut nested = Box::pin(nested);
        let mut own = Box::pin(own);
        let mut timer = Box::pin(timer);
        let (mut r_nested, mut r_own, mut fired) = (None, None, false);
        std::future::poll_fn(|cx| {
            use std::future::Future;
            if r_nested.is_none() {
                if let std::task::Poll::Ready(r) = nested.as_mut().poll(cx) {
                    r_nested = Some(r);
                }
            }
            if r_own.is_none() {
                if let std::task::Poll::Ready(r) = own.as_mut().poll(cx) {
                    r_own = Some(r);
                }
            }
            if !fired {
                fired = timer.as_mut().poll(cx).is_ready();
            }
            if r_nested.is_some() && r_own.is_some() && fired {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        (r_nested.unwrap(), r_own.unwrap())
    }));
    assert!(poll_once(&mut both).await.is_pending());
    outer.cancel();
    // The outer token ended its own read; the nested one's read waits for its data, and the
    // timer still fires.
    d.write_all(b"nested").unwrap();
    let ((r_nested, nested_buf), (r_own, _)) =
        timeout(BOUND, both).await.expect("the bound future hung");
    assert!(is_cancelled(&r_own.unwrap_err()));
    assert_eq!(r_nested.unwrap(), 6);
    assert_eq!(&nested_buf[..], b"nested");
    assert!(!inner.is_cancelled());
    b.write_all(b"x").unwrap();
    assert_eq!(read_n(&a, 1).await, b"x");
});

// A close is not the token's to stop: it gives up a descriptor the caller no longer holds,
// so under a cancelled token it still closes (found by coring-torture's storm: files
// opened by a cancelled future and then closed under its token leaked their descriptors).
// (On Windows, without pipe(2), a file opened with no sharing shows it: it opens again
// only once the handle is closed.)
#[cfg(unix)]
coring_test!(a_close_under_a_cancelled_token_still_closes, async {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are new and owned by nothing else.
    let (mut rd, wr) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            File::from_std(std::fs::File::from_raw_fd(fds[1])),
        )
    };
    let token = CancelToken::new();
    token.cancel();
    token.bind(wr.close()).await.unwrap();
    // The write end is gone: the read end sees end of file (with the write end leaked,
    // this non-blocking read would fail with WouldBlock).
    // SAFETY: fcntl on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK) },
        0
    );
    let mut byte = [0u8; 1];
    assert_eq!(rd.read(&mut byte).expect("the write end was not closed"), 0);
});

#[cfg(windows)]
coring_test!(a_close_under_a_cancelled_token_still_closes, async {
    use std::os::windows::fs::OpenOptionsExt;
    let dir = common::TempDir::new("cancel-close");
    let path = dir.path("f");
    // No sharing: nobody else can open the file while this handle is open.
    let exclusive = |create: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .share_mode(0)
            .open(&path)
    };
    let f = File::from_std(exclusive(true).unwrap());
    assert!(
        exclusive(false).is_err(),
        "a second open must fail while the handle is open"
    );
    let token = CancelToken::new();
    token.cancel();
    token.bind(f.close()).await.unwrap();
    exclusive(false).expect("the handle was not closed");
});
