//! Edge cases that readiness-based emulation must get right (and io_uring too).

mod common;

use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use coring::net::TcpListener;
use coring::time::{sleep, timeout};

/// The stream of the tests whose point is generic (wakeups, descriptor reuse): a Unix
/// socketpair on Unix; a loopback TCP connection on Windows, which has no socketpair (and
/// coring offers no Unix-domain sockets there).
#[cfg(unix)]
type PairStream = coring::net::UnixStream;
/// The stream of the tests whose point is generic (wakeups, descriptor reuse): a Unix
/// socketpair on Unix; a loopback TCP connection on Windows, which has no socketpair (and
/// coring offers no Unix-domain sockets there).
#[cfg(windows)]
type PairStream = coring::net::TcpStream;

/// Two connected [`PairStream`]s.
#[cfg(unix)]
fn stream_pair() -> (PairStream, PairStream) {
    PairStream::pair().unwrap()
}

/// Two connected [`PairStream`]s (TCP_NODELAY on both, so small writes go at once, as on
/// a socketpair).
#[cfg(windows)]
fn stream_pair() -> (PairStream, PairStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (
        PairStream::from_std(a).unwrap(),
        PairStream::from_std(b).unwrap(),
    )
}

/// The descriptor number (socket value on Windows) of `s`.
#[cfg(unix)]
fn raw_of(s: &PairStream) -> u64 {
    use std::os::fd::AsRawFd;
    s.as_raw_fd() as u64
}

/// The descriptor number (socket value on Windows) of `s`.
#[cfg(windows)]
fn raw_of(s: &PairStream) -> u64 {
    use std::os::windows::io::AsRawSocket;
    s.as_raw_socket()
}

/// Raises the soft descriptor limit so a test can hold a few thousand sockets. (Windows
/// has no such limit.)
#[cfg(windows)]
fn raise_fd_limit(_want: u64) {}

/// Raises the soft descriptor limit so a test can hold a few thousand sockets.
#[cfg(unix)]
fn raise_fd_limit(want: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the live rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// A burst of 1,000 connections queued in the backlog before anyone accepts: every one is
// accepted (edge-triggered readiness reports the listener once, yet all must drain).
coring_test!(backlog_burst_of_1000_connects, async {
    raise_fd_limit(8192);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients = std::thread::spawn(move || {
        (0..1000)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    let mut accepted = Vec::new();
    for _ in 0..1000 {
        let (s, _) = listener.accept().await.unwrap();
        accepted.push(s);
    }
    assert_eq!(accepted.len(), 1000);
    // Each accepted stream is a real, distinct connection.
    let (r, _) = accepted[999].write_all(b"!".to_vec()).await;
    r.unwrap();
    drop(accepted);
    let mut saw_bang = 0;
    for mut c in clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        if c.read(&mut b).unwrap() == 1 {
            saw_bang += 1;
        }
    }
    assert_eq!(saw_bang, 1);
});

// Two reads wait on one socket; data for one arrives: exactly one completes, the other
// keeps waiting (no lost wakeup) and completes with the next data.
coring_test!(two_readers_one_socket_no_lost_wakeup, async {
    let (a, b) = stream_pair();
    let a = Rc::new(a);
    let r1 = {
        let a = a.clone();
        coring::spawn(async move { a.read(Vec::with_capacity(4)).await })
    };
    let r2 = {
        let a = a.clone();
        coring::spawn(async move { a.read(Vec::with_capacity(4)).await })
    };
    sleep(Duration::from_millis(5)).await;
    let (r, _) = b.write_all(b"one!".to_vec()).await;
    r.unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !r1.is_finished() && !r2.is_finished() {
        assert!(std::time::Instant::now() < end, "no reader completed");
        sleep(Duration::from_millis(1)).await;
    }
    // Give the other reader every chance to (wrongly) complete too.
    sleep(Duration::from_millis(10)).await;
    let done = [r1.is_finished(), r2.is_finished()];
    assert_eq!(done.iter().filter(|d| **d).count(), 1, "{done:?}");
    let (r, _) = b.write_all(b"two!".to_vec()).await;
    r.unwrap();
    let mut got = Vec::new();
    for h in [r1, r2] {
        let (r, buf) = timeout(Duration::from_secs(5), h).await.unwrap().unwrap();
        assert_eq!(r.unwrap(), 4);
        got.push(buf);
    }
    got.sort();
    assert_eq!(got, [b"one!".to_vec(), b"two!".to_vec()]);
});

// The socket becomes readable, but someone else drains it before the waiting op retries:
// the op must go back to waiting (not spin, not hang) and complete on the next data.
coring_test!(readable_then_drained_elsewhere, async {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut peer = std::net::TcpStream::connect(addr).unwrap();
    let (s, _) = listener.accept().await.unwrap();
    let s = Rc::new(s);
    let waiting = {
        let s = s.clone();
        coring::spawn(async move { s.read(Vec::with_capacity(16)).await })
    };
    sleep(Duration::from_millis(5)).await;
    // Data arrives and is drained synchronously through a std view of the same socket
    // (non-blocking), all within one turn of the loop, before the waiting read retries.
    peer.write_all(b"stolen").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    #[cfg(unix)]
    {
        use std::os::fd::{AsRawFd, FromRawFd};
        let raw = s.as_raw_fd();
        // SAFETY: the std view is forgotten below, so it never closes the descriptor,
        // which stays owned by `s`.
        let mut view = unsafe { std::net::TcpStream::from_raw_fd(raw) };
        let mut b = [0u8; 16];
        let n = view.read(&mut b);
        std::mem::forget(view);
        let _ = n; // io_uring may have completed the read already; either is fine.
    }
    // The same through a raw socket. The socket is in blocking mode (overlapped calls need
    // no other), and the pending overlapped receive has most likely taken the data: the
    // view reads in non-blocking mode, so that it cannot block the runtime's thread, and
    // gives the socket back as it was.
    #[cfg(windows)]
    {
        use std::os::windows::io::{AsRawSocket, FromRawSocket};
        let raw = s.as_raw_socket();
        // SAFETY: the std view is forgotten below, so it never closes the socket, which
        // stays owned by `s`.
        let mut view = unsafe { std::net::TcpStream::from_raw_socket(raw) };
        view.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        let n = view.read(&mut b);
        view.set_nonblocking(false).unwrap();
        std::mem::forget(view);
        let _ = n; // the pending receive may have taken the data; either is fine.
    }
    sleep(Duration::from_millis(20)).await;
    if !waiting.is_finished() {
        peer.write_all(b"fresh").unwrap();
    }
    let (r, buf) = timeout(Duration::from_secs(5), waiting)
        .await
        .expect("a read whose data was drained elsewhere must still complete on new data")
        .unwrap();
    let n = r.unwrap();
    assert!(n > 0);
    assert!(buf == b"stolen" || buf == b"fresh", "{buf:?}");
});

// Writing into a peer that vanished mid-stream surfaces EPIPE/ECONNRESET as an error and
// never kills the process with SIGPIPE.
// Not on Windows, where CI runs Wine 8: a pending overlapped send to a peer that resets
// the connection is sometimes never completed there (reproduced without coring: a plain
// WSASend of 64 MiB to a peer that reads 100 KB and closes hung in 2 of 10 runs); on
// Windows it ends with WSAECONNRESET; `net.rs` `tcp_errors` checks writes to a closed peer on
// every backend.
#[cfg(unix)]
mod peer_closes {
    use super::*;
    coring_test!(peer_closes_mid_write, async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            let mut b = vec![0u8; 100_000];
            let _ = c.read(&mut b);
            // Close after reading a little: the writer is mid-write.
        });
        let (s, _) = listener.accept().await.unwrap();
        let big = vec![1u8; 64 << 20];
        let (r, _) = s.write_all(big).await;
        let e = r.expect_err("a 64 MiB write to a peer that closed must fail");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        );
        reader.join().unwrap();
    });
}

// A socket closed after waiting once, and a new socket that gets the same descriptor
// number: the new one must still be woken (the fallback registers per open file, not per
// descriptor number, since closing removed the old registration).
// (Unix hands out the lowest free number, so the last round's comes back; Windows reuses
// handle values less predictably, and other tests running at once take the freed ones:
// there any earlier round's counts, and rounds go on, up to 500, until one came back.)
coring_test!(reused_descriptor_number_is_woken, async {
    let mut last = None;
    let mut seen = std::collections::HashSet::new();
    let mut reused = false;
    let rounds = if cfg!(windows) { 500 } else { 20 };
    for round in 0..rounds {
        let (a, b) = stream_pair();
        let raw = raw_of(&a);
        if last == Some(raw) || (cfg!(windows) && seen.contains(&raw)) {
            reused = true;
        }
        last = Some(raw);
        seen.insert(raw);
        let reader = coring::spawn(async move { a.read(Vec::with_capacity(8)).await });
        sleep(Duration::from_millis(2)).await; // the read parks: nothing written yet
        let (r, _) = b.write_all(b"wake".to_vec()).await;
        r.unwrap();
        let (r, buf) = timeout(Duration::from_secs(5), reader)
            .await
            .unwrap_or_else(|_| panic!("round {round}: read on a reused descriptor never woke"))
            .unwrap();
        assert_eq!(r.unwrap(), 4);
        assert_eq!(buf, b"wake");
        // On io_uring the dropped stream's multishot receive is cancelled and keeps the
        // descriptor open until its final completion is reaped, a loop turn later: let
        // that happen so the number is free for the next round.
        sleep(Duration::from_millis(1)).await;
        if reused && round >= 19 {
            break;
        }
    }
    assert!(
        reused,
        "descriptor numbers were never reused; the test proved nothing"
    );
});
