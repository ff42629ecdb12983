//! Cancel-safe UDP receives: a `recv`/`recv_from` whose future is dropped after it
//! submitted its receive leaves the receive to the socket, and later receives return its
//! datagram, in arrival order, on every backend.
//!
//! Each test drops receives whose datagram has already arrived (the runtime has reaped
//! the completion, the future was never polled again), which is the case that lost the
//! datagram before the receives were kept; most also drop receives still waiting.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use common::{eventually, poll_each_pending, poll_once};
use coring::net::UdpSocket;
use coring::time::{sleep, timeout};
use coring::Runtime;

/// How long a receive that must succeed may wait before the test fails (instead of
/// hanging) because its datagram was lost.
const LOST: Duration = Duration::from_secs(5);

/// A coring socket and a std socket to send to it from, both on loopback.
fn pair() -> (UdpSocket, std::net::UdpSocket, SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sock.local_addr().unwrap();
    (sock, sender, to)
}

/// Receives one datagram into a buffer of `cap`, failing the test if none comes.
async fn recv_from(sock: &UdpSocket, cap: usize) -> (usize, SocketAddr, Vec<u8>) {
    let (r, buf) = timeout(LOST, sock.recv_from(Vec::with_capacity(cap)))
        .await
        .expect("no datagram: one was lost");
    let (n, from) = r.unwrap();
    (n, from, buf)
}

/// Waits until the runtime has reaped every operation's final completion (the dropped
/// receives got their datagrams), without polling their futures.
async fn all_completed(rt: &Runtime) {
    eventually("the receives to complete", || rt.ops_in_flight() == 0).await;
}

/// Polls receive `recv` once, so that it submits its receive, then drops it while the
/// receive waits.
async fn drop_waiting<F: Future + Unpin>(mut recv: F) {
    assert!(poll_once(&mut recv).await.is_pending());
}

/// Polls receive `recv` once, runs `arrive` (which sends it a datagram), waits until the
/// runtime has reaped the receive's completion, then drops `recv`, never polled again:
/// the receive is dropped holding a datagram.
async fn drop_holding<F: Future + Unpin>(rt: &Runtime, mut recv: F, arrive: impl Future) {
    assert!(poll_once(&mut recv).await.is_pending());
    arrive.await;
    all_completed(rt).await;
}

/// Drops a `recv_from` into a buffer of `cap` holding `data`, sent by `sender` (see
/// [`drop_holding`]).
async fn drop_recv_from_holding(
    rt: &Runtime,
    sock: &UdpSocket,
    sender: &std::net::UdpSocket,
    data: &[u8],
    cap: usize,
) {
    let to = sock.local_addr().unwrap();
    let arrive = async {
        sender.send_to(data, to).unwrap();
    };
    drop_holding(
        rt,
        Box::pin(sock.recv_from(Vec::with_capacity(cap))),
        arrive,
    )
    .await;
}

// (a) One receive dropped after its datagram arrived, one dropped while still waiting: the
// next receives return both datagrams, with their sender and length, in order.
coring_test!(dropped_recv_from_keeps_its_datagram, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let (sock, sender, to) = pair();
        drop_recv_from_holding(&rt, &sock, &sender, b"first", 64).await;
        let (n, from, buf) = recv_from(&sock, 64).await;
        assert_eq!(
            (n, from, &buf[..]),
            (5, sender.local_addr().unwrap(), &b"first"[..])
        );

        drop_waiting(Box::pin(sock.recv_from(Vec::with_capacity(64)))).await;
        sender.send_to(b"second", to).unwrap();
        sender.send_to(b"third", to).unwrap();
        assert_eq!(recv_from(&sock, 64).await.2, b"second");
        assert_eq!(recv_from(&sock, 64).await.2, b"third");
    });
    assert_eq!(rt.ops_in_flight(), 0);
});

/// Drops `n` receives after polling each once; if `arrive_first`, sends `n + 1` datagrams
/// (0, 1, ...) and waits for the receives to get theirs before dropping them, else drops
/// them first and then sends, spaced out (Linux then serves the waiting receives in no
/// set order). The next `n + 1` receives must return 0..=n in order.
async fn dropped_receives_in_order(rt: &Runtime, n: u8, arrive_first: bool) {
    let (sock, sender, to) = pair();
    let mut futs: Vec<_> = (0..n)
        .map(|_| Box::pin(sock.recv_from(Vec::with_capacity(8))))
        .collect();
    poll_each_pending(&mut futs).await;
    if !arrive_first {
        drop(futs);
        futs = Vec::new();
    }
    for i in 0..=n {
        sender.send_to(&[i], to).unwrap();
        sleep(Duration::from_millis(1)).await;
    }
    all_completed(rt).await;
    drop(futs);
    for i in 0..=n {
        let (len, _, buf) = recv_from(&sock, 8).await;
        assert_eq!(
            (len, buf[0]),
            (1, i),
            "datagram {i} (arrive_first {arrive_first})"
        );
    }
}

// (b) N dropped receives, then N + 1 datagrams: all received, in order.
coring_test!(dropped_receives_keep_datagram_order, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        for arrive_first in [true, false] {
            for n in [1, 4, 16] {
                dropped_receives_in_order(&rt, n, arrive_first).await;
            }
        }
    });
});

// (c) A kept `recv` (no address asked for) read back by `recv_from` still gives the
// sender; a kept `recv_from` read back by `recv` gives the datagram.
coring_test!(
    kept_recv_read_back_by_recv_from_gives_the_sender,
    |builder| {
        let rt = builder.build().unwrap();
        common::block_on_bounded(&rt, async {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            a.connect(b.local_addr().unwrap()).await.unwrap();
            b.connect(a.local_addr().unwrap()).await.unwrap();

            let arrive = async {
                a.send(b"to recv".to_vec()).await.0.unwrap();
            };
            drop_holding(&rt, Box::pin(b.recv(Vec::with_capacity(16))), arrive).await;
            let (n, from, buf) = recv_from(&b, 16).await;
            assert_eq!(
                (n, from, &buf[..]),
                (7, a.local_addr().unwrap(), &b"to recv"[..])
            );

            let arrive = async {
                a.send(b"to recv_from".to_vec()).await.0.unwrap();
            };
            drop_holding(&rt, Box::pin(b.recv_from(Vec::with_capacity(16))), arrive).await;
            let (r, buf) = timeout(LOST, b.recv(Vec::with_capacity(16)))
                .await
                .expect("datagram lost");
            assert_eq!((r.unwrap(), &buf[..]), (12, &b"to recv_from"[..]));
        });
    }
);

// (d) A kept datagram larger than the next caller's buffer is truncated to it and
// reported with the truncated length, as a direct receive reports it; one larger than
// the dropped call's own buffer was truncated to that buffer by the kernel.
coring_test!(kept_datagram_truncates_like_a_direct_receive, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let (sock, sender, to) = pair();
        // The direct path, for reference.
        sender.send_to(b"0123456789", to).unwrap();
        let direct = recv_from(&sock, 4).await;
        assert_eq!((direct.0, &direct.2[..]), (4, &b"0123"[..]));

        // Kept in a buffer of 64, read back into one of 4.
        drop_recv_from_holding(&rt, &sock, &sender, b"0123456789", 64).await;
        let kept = recv_from(&sock, 4).await;
        assert_eq!((kept.0, &kept.2[..]), (direct.0, &direct.2[..]));
        assert_eq!(kept.1, direct.1);

        // Kept in a buffer of 4, read back into one of 64: what the kernel put there.
        drop_recv_from_holding(&rt, &sock, &sender, b"abcdefghij", 4).await;
        let kept = recv_from(&sock, 64).await;
        assert_eq!((kept.0, &kept.2[..]), (4, &b"abcd"[..]));

        // An empty datagram is a datagram, not an end of file.
        drop_recv_from_holding(&rt, &sock, &sender, b"", 4).await;
        assert_eq!(recv_from(&sock, 4).await.0, 0);
    });
});

// (e) into_std while a kept receive holds a datagram gives the socket back, state intact;
// once it is read, into_std succeeds. A kept receive still waiting is cancelled by
// into_std (the descriptor is handed over) and a datagram sent afterwards reaches the std
// socket: nothing is lost either way.
coring_test!(into_std_with_kept_receives_loses_nothing, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let (sock, sender, to) = pair();
        drop_recv_from_holding(&rt, &sock, &sender, b"held", 16).await;
        let sock = sock.into_std().expect_err("a kept datagram not read yet");
        assert_eq!(recv_from(&sock, 16).await.2, b"held");

        drop_waiting(Box::pin(sock.recv_from(Vec::with_capacity(16)))).await;
        // The backends cancel a waiting receive at once (io_uring's synchronous cancel,
        // the fallback's parked queue); retry while one is still on its way.
        let mut sock = sock;
        let std = loop {
            match sock.into_std() {
                Ok(std) => break std,
                Err(back) => sock = back,
            }
            sleep(Duration::from_millis(1)).await;
        };
        sender.send_to(b"after", to).unwrap();
        std.set_nonblocking(false).unwrap();
        std.set_read_timeout(Some(LOST)).unwrap();
        let mut b = [0u8; 16];
        let (n, _) = std
            .recv_from(&mut b)
            .expect("the datagram sent after into_std");
        assert_eq!(&b[..n], b"after");
    });
});

// A kept receive that failed (a connected socket whose peer's port is closed: the ICMP
// error ends the waiting receive with ECONNREFUSED) hands its error to the next receive,
// as a stream read does; the socket works on after it.
coring_test!(kept_receive_error_goes_to_the_next_receive, |builder| {
    let rt = builder.build().unwrap();
    common::block_on_bounded(&rt, async {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(closed_addr).await.unwrap();
        let arrive = async {
            sock.send(b"anyone?".to_vec()).await.0.unwrap();
        };
        drop_holding(&rt, Box::pin(sock.recv(Vec::with_capacity(16))), arrive).await;
        let (r, _) = timeout(LOST, sock.recv(Vec::with_capacity(16)))
            .await
            .expect("the kept receive's error was lost");
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
    });
});

/// A biased two-way select: `other` is polled first, and when it is ready `recv` is
/// dropped, whether or not its receive has completed meanwhile (as `select!` with
/// `biased;` does, or any select whose other branch happens to be polled first).
async fn unless<R, F: Future<Output = R> + Unpin>(
    mut other: impl Future<Output = ()> + Unpin,
    mut recv: F,
) -> Option<R> {
    std::future::poll_fn(|cx| {
        if Pin::new(&mut other).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Pin::new(&mut recv).poll(cx).map(Some)
    })
    .await
}

// (f) A receive raced against another branch in a loop (a yield, a short sleep, a
// timeout) while 1000 datagrams arrive: none is lost, none reordered. The other branch
// often wins in the very turn that reaped the receive's completion, so receives are
// dropped holding datagrams. The sender keeps at most 32 datagrams unreceived, so the
// socket's buffer never overflows.
coring_test!(receives_raced_in_a_select_lose_nothing, async {
    const COUNT: u32 = 1000;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sock.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let sender = std::thread::spawn({
        let received = received.clone();
        move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let end = std::time::Instant::now() + Duration::from_secs(25);
            for i in 0..COUNT {
                while i as usize >= received.load(Ordering::Acquire) + 32 {
                    assert!(std::time::Instant::now() < end, "receiver stalled");
                    std::thread::sleep(Duration::from_micros(50));
                }
                s.send_to(&i.to_le_bytes(), to).unwrap();
                if i % 7 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    });
    let mut next = 0u32;
    let mut dropped = 0u32;
    let mut idle_since = std::time::Instant::now();
    let mut round = 0u64;
    while next < COUNT {
        round += 1;
        let recv = Box::pin(sock.recv_from(Vec::with_capacity(8)));
        let res = match round % 3 {
            0 => unless(Box::pin(coring::task::yield_now()), recv).await,
            1 => unless(Box::pin(sleep(Duration::from_micros(round % 200))), recv).await,
            _ => timeout(Duration::from_micros(round % 300), recv).await.ok(),
        };
        let Some((r, b)) = res else {
            dropped += 1;
            assert!(
                idle_since.elapsed() < LOST,
                "no datagram for {LOST:?} after {next}: one was lost"
            );
            continue;
        };
        let (n, _) = r.unwrap();
        assert_eq!(n, 4);
        let got = u32::from_le_bytes(b[..4].try_into().unwrap());
        assert_eq!(got, next, "datagram {next} lost or reordered");
        next += 1;
        received.store(next as usize, Ordering::Release);
        idle_since = std::time::Instant::now();
    }
    sender.join().unwrap();
    // Not asserted (timing): the race is only a race if some receives were dropped.
    eprintln!("{dropped} receives dropped by the other branch");
});

// A socket used on one runtime, its kept receive still waiting there, then received on
// on another: refused (that runtime may receive a datagram for it), as a stream read or
// an accept is; back on the first runtime the datagram arrives; once the first runtime is
// gone (its shutdown cancelled the kept receive), the second receives normally.
coring_test!(kept_receive_of_another_runtime, |builder| {
    let rt1 = builder.build().unwrap();
    let rt2 = coring::Builder::new()
        .backend(rt1.backend())
        .build()
        .unwrap();
    let (sock, sender, to) = pair();
    common::block_on_bounded(&rt1, async {
        drop_waiting(Box::pin(sock.recv_from(Vec::with_capacity(16)))).await;
    });
    common::block_on_bounded(&rt2, async {
        let (r, _) = sock.recv_from(Vec::with_capacity(16)).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    });
    common::block_on_bounded(&rt1, async {
        sender.send_to(b"one", to).unwrap();
        assert_eq!(recv_from(&sock, 16).await.2, b"one");
        drop_waiting(Box::pin(sock.recv_from(Vec::with_capacity(16)))).await;
    });
    drop(rt1);
    common::block_on_bounded(&rt2, async {
        sender.send_to(b"two", to).unwrap();
        // Windows binds a socket to the completion port of the first runtime that did IO
        // on it, for good: another runtime is refused even once that one is dropped.
        #[cfg(windows)]
        {
            let (r, _) = sock.recv_from(Vec::with_capacity(16)).await;
            assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        }
        #[cfg(unix)]
        assert_eq!(recv_from(&sock, 16).await.2, b"two");
    });
});

// A kept receive owns the dropped call's buffer: not freed while kept (the kernel may
// still write into it), freed once a later receive has copied its datagram out; and when
// the socket is dropped with a receive still kept, freed once the cancel's final
// completion is in: during the drop itself where the backend cancels synchronously (both
// do, for a waiting receive: io_uring's synchronous cancel, the fallback's parked queue),
// else when the completion is reaped.
coring_test!(
    kept_receive_buffer_lives_until_read_back_or_cancelled,
    async {
        let (sock, sender, to) = pair();
        let (buf, dropped) = common::DropFlagBuf::new(16);
        drop_waiting(Box::pin(sock.recv_from(buf))).await;
        sleep(Duration::from_millis(5)).await;
        assert!(
            !dropped.get(),
            "a kept receive's buffer was freed (cancelled?)"
        );
        sender.send_to(b"kept", to).unwrap();
        assert_eq!(recv_from(&sock, 16).await.2, b"kept");
        assert!(
            dropped.get(),
            "buffer not released once its datagram was read"
        );

        let (buf, dropped) = common::DropFlagBuf::new(16);
        drop_waiting(Box::pin(sock.recv_from(buf))).await;
        drop(sock);
        eventually("the cancelled receive to complete", || dropped.get()).await;
    }
);

// A call waiting on the kept receives it claimed is told when another receive is kept
// after its claim (it used to sleep while that one got the datagram). Two submission orders, so that whichever receive the kernel
// (or the fallback's FIFO) serves first, one of them hands the datagram to the receive
// the waiting call does not watch.
async fn late_kept_receive(b_first: bool) {
    let (sock, sender, to) = pair();
    let sock = std::rc::Rc::new(sock);
    let mut b = Box::pin(sock.recv_from(Vec::with_capacity(16)));
    if b_first {
        assert!(poll_once(&mut b).await.is_pending()); // own op, submitted first
    }
    let mut k1 = Box::pin(sock.recv_from(Vec::with_capacity(16)));
    assert!(poll_once(&mut k1).await.is_pending());
    drop(k1); // kept: k1
              // A, in its own task: claims k1 and waits.
    let a = coring::spawn({
        let sock = sock.clone();
        async move { sock.recv_from(Vec::with_capacity(16)).await }
    });
    sleep(Duration::from_millis(10)).await;
    if !b_first {
        assert!(poll_once(&mut b).await.is_pending()); // k1 claimed: own op
    }
    drop(b); // kept: k3, claimed by nobody; A does not know
    sleep(Duration::from_millis(10)).await;
    sender.send_to(b"only", to).unwrap();
    let (r, buf) = timeout(Duration::from_secs(3), a)
        .await
        .unwrap_or_else(|_| {
            panic!("b_first={b_first}: a datagram was received (by a kept receive) but the waiting recv_from was never woken")
        })
        .unwrap();
    r.unwrap();
    assert_eq!(buf, b"only");
}

coring_test!(a_waiting_call_sees_receives_kept_after_its_claim, async {
    late_kept_receive(true).await;
    late_kept_receive(false).await;
});

// A call that found every kept receive claimed, and so submitted its own, is told when the
// claiming call is dropped (its claims released): it claims them too, and returns the
// datagram a kept receive gets (it used to hang, waiting for a second datagram).
coring_test!(
    a_call_with_its_own_receive_takes_released_kept_ones,
    async {
        let (sock, sender, to) = pair();
        let sock = std::rc::Rc::new(sock);
        let mut k0 = Box::pin(sock.recv_from(Vec::with_capacity(16)));
        assert!(poll_once(&mut k0).await.is_pending());
        drop(k0); // kept k0
        let mut a = Box::pin(sock.recv_from(Vec::with_capacity(16)));
        assert!(poll_once(&mut a).await.is_pending()); // A claims k0
        let b = coring::spawn({
            let sock = sock.clone();
            async move { sock.recv_from(Vec::with_capacity(16)).await }
        });
        sleep(Duration::from_millis(10)).await; // B: k0 claimed -> own receive
        let mut k1 = Box::pin(sock.recv_from(Vec::with_capacity(16)));
        assert!(poll_once(&mut k1).await.is_pending());
        drop(k1); // kept k1 (own receive, since k0 is claimed)
        drop(a); // k0 released: nobody waits on k0 or k1 now
        sleep(Duration::from_millis(10)).await;
        sender.send_to(b"only", to).unwrap();
        let (r, buf) = timeout(Duration::from_secs(3), b)
        .await
        .expect(
            "the only live recv_from hangs: its datagram went to a kept receive nobody waits on",
        )
        .unwrap();
        r.unwrap();
        assert_eq!(buf, b"only");
    }
);

// unregister() while a retained receive has finished (its datagram waits to be handed on):
// the kernel no longer uses the descriptor for it, so it is not "busy" (issue 14, defect
// 4); the datagram is still returned afterwards.
coring_test!(
    unregister_with_a_finished_retained_receive_succeeds,
    |builder| {
        let rt = builder.build().unwrap();
        common::block_on_bounded(&rt, async {
            let (sock, sender, _to) = pair();
            sock.register().unwrap();
            drop_recv_from_holding(&rt, &sock, &sender, b"held", 16).await;
            sock.unregister()
                .expect("a finished retained receive does not keep the descriptor busy");
            assert!(!sock.is_registered());
            let (n, _, buf) = recv_from(&sock, 16).await;
            assert_eq!(&buf[..n], b"held");
        });
    }
);

// A call forgotten (`mem::forget`) while it waits on a retained receive holds nothing back:
// the next receive gets the datagram (issue 14, defect 2). Before, the forgotten call's
// claim kept every later receive from waiting on the retained one, so its datagram was
// never returned.
coring_test!(a_forgotten_receive_holds_nothing_back, async {
    let (sock, sender, to) = pair();
    drop_waiting(Box::pin(sock.recv_from(Vec::with_capacity(16)))).await;
    let mut forgotten = Box::pin(sock.recv_from(Vec::with_capacity(16)));
    assert!(poll_once(&mut forgotten).await.is_pending());
    std::mem::forget(forgotten);
    sender.send_to(b"A", to).unwrap();
    assert_eq!(recv_from(&sock, 16).await.2, b"A");
    sender.send_to(b"B", to).unwrap();
    assert_eq!(recv_from(&sock, 16).await.2, b"B");
});

coring_test!(recv_refuses_a_buffer_without_room, async {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (r, _) = a.send_to(b"kept".to_vec(), b.local_addr().unwrap()).await;
    r.unwrap();
    // Refused before anything is received: the datagram is not lost to truncation.
    let (r, _) = b.recv_from(Vec::new()).await;
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    let (r, buf) = b.recv_from(vec![0u8; 64]).await;
    assert_eq!(r.unwrap().0, 4);
    assert_eq!(buf, b"kept");
});
