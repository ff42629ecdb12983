//! Poller behaviour: readiness, edge triggering, the waker, deregistration, hang-ups.
//!
//! Every wait is bounded; a missing event fails with a message instead of hanging.
//! The tests are written for both shapes of events (epoll merges the two
//! directions into one event, kqueue reports one event per filter).

#![cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "tvos",
    target_os = "watchos",
    target_os = "visionos",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
))]

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use coring_fallback::{Event, Events, Poller, PollerWaker, WAKER_TOKEN};

/// Upper bound on any wait for something that must happen.
const BOUND: Duration = Duration::from_secs(10);
/// How long to listen for something that must *not* happen.
const QUIET: Duration = Duration::from_millis(100);

/// Waits until an event satisfies `wanted`, for at most [`BOUND`]; returns every
/// event seen on the way (including the wanted one).
fn wait_for(
    poller: &Poller,
    events: &mut Events,
    what: &str,
    wanted: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + BOUND;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {what} within {BOUND:?}; events seen: {seen:?}"
        );
        poller
            .wait(events, Some(left))
            .expect("Poller::wait failed");
        seen.extend(events.iter());
        if events.iter().any(|event| wanted(&event)) {
            return seen;
        }
    }
}

/// Waits until a wait reports the waker, for at most [`BOUND`]; returns whether it did.
fn wait_woken(poller: &Poller, events: &mut Events) -> bool {
    let deadline = Instant::now() + BOUND;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        poller
            .wait(events, Some(left))
            .expect("Poller::wait failed");
        if events.woken() {
            return true;
        }
    }
}

/// The events of one short wait in which nothing is expected to happen.
fn quiet(poller: &Poller, events: &mut Events) -> Vec<Event> {
    poller
        .wait(events, Some(QUIET))
        .expect("Poller::wait failed");
    events.iter().collect()
}

/// Reads everything `stream` has buffered, until it would block.
fn drain(mut stream: &UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return out,
            Err(err) => panic!("read from the socket failed: {err}"),
        }
    }
}

fn nonblocking_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("set O_NONBLOCK");
    (a, b)
}

#[test]
fn registration_reports_writable_and_a_write_reports_readable_once() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(16);
    let (a, b) = nonblocking_pair();
    poller.register(a.as_raw_fd(), 7).expect("register");

    let seen = wait_for(
        &poller,
        &mut events,
        "writable event after registration",
        |e| e.token() == 7 && e.is_writable(),
    );
    assert!(
        seen.iter().all(|e| e.token() == 7 && !e.is_readable()),
        "only a writable event for token 7 was expected after registration, got {seen:?}"
    );
    let seen = quiet(&poller, &mut events);
    assert!(
        seen.is_empty(),
        "edge-triggered: no new edge, yet got {seen:?}"
    );

    let writer = thread::spawn(move || {
        (&b).write_all(b"hello").expect("write from another thread");
        b
    });
    wait_for(
        &poller,
        &mut events,
        "readable event after a write from another thread",
        |e| e.token() == 7 && e.is_readable(),
    );
    let b = writer.join().expect("writer thread panicked");
    assert_eq!(drain(&a), b"hello");

    let seen = quiet(&poller, &mut events);
    assert!(
        !seen.iter().any(|e| e.is_readable()),
        "edge-triggered: a second readable event without new data: {seen:?}"
    );

    (&b).write_all(b"again").expect("second write");
    wait_for(&poller, &mut events, "readable event after new data", |e| {
        e.token() == 7 && e.is_readable()
    });
    assert_eq!(drain(&a), b"again");
}

#[test]
fn waker_wakes_a_blocked_wait_from_another_thread() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(16);
    let waker = poller.waker();
    let (ready_tx, ready_rx) = mpsc::channel();
    let waking = thread::spawn(move || {
        ready_rx.recv().expect("the test signals before waiting");
        // Give the main thread time to block in wait; correct either way.
        thread::sleep(Duration::from_millis(50));
        waker.wake().expect("PollerWaker::wake");
    });
    ready_tx.send(()).expect("waking thread alive");
    assert!(
        wait_woken(&poller, &mut events),
        "the wake from another thread did not reach the poller within {BOUND:?}"
    );
    assert!(
        events.is_empty(),
        "the waker must not appear as an event: {events:?}"
    );
    waking.join().expect("waking thread panicked");
}

#[test]
fn a_wake_before_wait_is_not_lost() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(16);
    let waker = poller.waker().clone();
    waker.wake().expect("PollerWaker::wake");
    drop(waker);
    assert!(
        wait_woken(&poller, &mut events),
        "a wake made before wait was lost"
    );
}

#[test]
fn wakes_before_a_wait_coalesce_into_one() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(16);
    let waker = poller.waker();
    waker.wake().expect("first wake");
    waker.wake().expect("second wake");
    assert!(wait_woken(&poller, &mut events), "two wakes were both lost");
    quiet(&poller, &mut events);
    assert!(!events.woken(), "two wakes before one wait woke two waits");

    // Many wakes from many threads still coalesce, and never saturate the waker.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let waker = poller.waker();
            thread::spawn(move || {
                for _ in 0..1000 {
                    waker.wake().expect("PollerWaker::wake");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("waking thread panicked");
    }
    assert!(wait_woken(&poller, &mut events), "4000 wakes were all lost");
    quiet(&poller, &mut events);
    assert!(!events.woken(), "4000 wakes before one wait woke two waits");
}

#[test]
fn the_waker_token_is_reserved_and_never_reported() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(16);
    let (a, b) = nonblocking_pair();
    let err = poller
        .register(a.as_raw_fd(), WAKER_TOKEN)
        .expect_err("registering the reserved token must fail");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

    poller.register(a.as_raw_fd(), 1).expect("register");
    poller.waker().wake().expect("PollerWaker::wake");
    (&b).write_all(b"x").expect("write");
    let mut seen = wait_for(&poller, &mut events, "readable event", |e| e.is_readable());
    seen.extend(quiet(&poller, &mut events));
    assert!(
        seen.iter().all(|e| e.token() == 1),
        "only token 1 may appear, got {seen:?}"
    );
}

#[test]
fn deregister_stops_events() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(16);
    let (a, b) = nonblocking_pair();
    poller.register(a.as_raw_fd(), 5).expect("register");
    wait_for(
        &poller,
        &mut events,
        "writable event after registration",
        |e| e.token() == 5 && e.is_writable(),
    );

    poller.deregister(a.as_raw_fd()).expect("deregister");
    (&b).write_all(b"unseen").expect("write");
    drop(b);
    let seen = quiet(&poller, &mut events);
    assert!(seen.is_empty(), "events after deregister: {seen:?}");
    assert!(
        poller.deregister(a.as_raw_fd()).is_err(),
        "deregistering twice must fail"
    );

    // The descriptor can be registered again.
    poller.register(a.as_raw_fd(), 6).expect("register again");
    wait_for(
        &poller,
        &mut events,
        "readable event after registering again",
        |e| e.token() == 6 && e.is_readable(),
    );
}

#[test]
fn socket_peer_close_reports_read_closed() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(16);
    let (a, b) = nonblocking_pair();
    poller.register(a.as_raw_fd(), 2).expect("register");
    wait_for(
        &poller,
        &mut events,
        "writable event after registration",
        |e| e.token() == 2 && e.is_writable(),
    );

    drop(b);
    let seen = wait_for(
        &poller,
        &mut events,
        "read-closed event after the peer closed",
        |e| e.token() == 2 && e.is_read_closed(),
    );
    let closed = seen
        .iter()
        .find(|e| e.is_read_closed())
        .expect("found above");
    assert!(closed.is_readable(), "end of file is readable: {closed:?}");
    assert_eq!(drain(&a), b"", "the peer sent nothing");
}

#[test]
fn pipe_hang_ups_report_closed_directions() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(16);

    let (reader, writer) = io::pipe().expect("pipe");
    poller
        .register(reader.as_raw_fd(), 3)
        .expect("register the read end");
    drop(writer);
    wait_for(
        &poller,
        &mut events,
        "read-closed event on a pipe whose writer is gone",
        |e| e.token() == 3 && e.is_read_closed(),
    );

    let (reader, writer) = io::pipe().expect("pipe");
    poller
        .register(writer.as_raw_fd(), 4)
        .expect("register the write end");
    wait_for(
        &poller,
        &mut events,
        "writable event on an empty pipe",
        |e| e.token() == 4 && e.is_writable(),
    );
    drop(reader);
    wait_for(
        &poller,
        &mut events,
        "write-closed event on a pipe whose reader is gone",
        |e| e.token() == 4 && e.is_write_closed(),
    );
}

#[test]
fn zero_and_sub_millisecond_timeouts_return() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(1);
    poller
        .wait(&mut events, Some(Duration::ZERO))
        .expect("zero timeout");
    assert!(events.is_empty() && !events.woken());
    poller
        .wait(&mut events, Some(Duration::from_micros(300)))
        .expect("sub-millisecond timeout");
    assert!(events.is_empty() && !events.woken());
}

#[test]
fn events_beyond_capacity_wait_for_the_next_call() {
    let poller = Poller::new().expect("Poller::new");
    let mut events = Events::with_capacity(1);
    let pairs: Vec<_> = (0..3).map(|_| nonblocking_pair()).collect();
    for (token, (a, _)) in pairs.iter().enumerate() {
        poller.register(a.as_raw_fd(), token).expect("register");
    }
    let mut tokens = Vec::new();
    let deadline = Instant::now() + BOUND;
    while tokens.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "only tokens {tokens:?} reported writable within {BOUND:?}"
        );
        poller
            .wait(&mut events, Some(BOUND))
            .expect("Poller::wait failed");
        assert!(events.len() <= events.capacity());
        for event in &events {
            if event.is_writable() && !tokens.contains(&event.token()) {
                tokens.push(event.token());
            }
        }
    }
    tokens.sort_unstable();
    assert_eq!(tokens, [0, 1, 2]);
}

#[test]
fn waking_a_dropped_poller_is_a_no_op() {
    let poller = Poller::new().expect("Poller::new");
    let waker = poller.waker();
    drop(poller);
    waker.wake().expect("waking a dropped poller must succeed");
}

#[test]
fn handles_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_clone<T: Clone>() {}
    assert_send_sync::<Poller>();
    assert_send_sync::<PollerWaker>();
    assert_send_sync::<Events>();
    assert_clone::<PollerWaker>();
}
