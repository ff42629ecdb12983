//! Lifecycle edge cases on the mock backend, where the test plays the kernel: completions
//! arrive late, out of order, short, empty, too large, after a cancel was requested, or
//! never (a submit failure).
//!
//! These run on the mock backend only, on purpose: they need completions the real kernel
//! will not produce on demand (a result racing a cancel, a short file write, a byte count
//! beyond the buffer). The driver, op layer and user API under test are the same code
//! every backend uses.

mod common;

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use common::{with_watchdog, DropFlagBuf};
use coring::fs::File;
use coring::mock::MockHandle;
use coring::net::TcpListener;
use coring::task::yield_now;
use coring::time::timeout;
use coring::{BackendKind, Builder, Runtime};

/// Error codes as the platform's kernel reports them (Winsock's and Win32's on Windows),
/// for the "kernel" to complete operations with.
#[cfg(unix)]
mod errno {
    pub const ECONNREFUSED: i32 = libc::ECONNREFUSED;
    pub const ECONNRESET: i32 = libc::ECONNRESET;
    pub const ENOBUFS: i32 = libc::ENOBUFS;
    pub const ENOMEM: i32 = libc::ENOMEM;
}
/// Error codes as the platform's kernel reports them (Winsock's and Win32's on Windows),
/// for the "kernel" to complete operations with.
#[cfg(windows)]
mod errno {
    use windows_sys::Win32::Foundation::ERROR_NOT_ENOUGH_MEMORY;
    use windows_sys::Win32::Networking::WinSock::{WSAECONNREFUSED, WSAECONNRESET, WSAENOBUFS};
    pub const ECONNREFUSED: i32 = WSAECONNREFUSED;
    pub const ECONNRESET: i32 = WSAECONNRESET;
    pub const ENOBUFS: i32 = WSAENOBUFS;
    pub const ENOMEM: i32 = ERROR_NOT_ENOUGH_MEMORY as i32;
}

/// The stream the stream tests use (the mock never touches its socket): a Unix socketpair
/// on Unix; a loopback TCP connection on Windows, which has no socketpair (and coring
/// offers no Unix-domain sockets there).
#[cfg(unix)]
type PairStream = coring::net::UnixStream;
/// The stream the stream tests use (the mock never touches its socket): a Unix socketpair
/// on Unix; a loopback TCP connection on Windows, which has no socketpair (and coring
/// offers no Unix-domain sockets there).
#[cfg(windows)]
type PairStream = coring::net::TcpStream;
/// The std type of [`PairStream`].
#[cfg(unix)]
type StdPairStream = std::os::unix::net::UnixStream;
/// The std type of [`PairStream`].
#[cfg(windows)]
type StdPairStream = std::net::TcpStream;

/// Two connected std streams of [`StdPairStream`]'s kind.
#[cfg(unix)]
fn std_pair() -> (StdPairStream, StdPairStream) {
    std::os::unix::net::UnixStream::pair().unwrap()
}

/// Two connected std streams of [`StdPairStream`]'s kind: a loopback TCP connection.
#[cfg(windows)]
fn std_pair() -> (StdPairStream, StdPairStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Gives up `s`'s socket: the value a "kernel" completes an accept with.
#[cfg(unix)]
fn into_raw(s: StdPairStream) -> i32 {
    use std::os::fd::IntoRawFd;
    s.into_raw_fd()
}

/// Gives up `s`'s socket: the value a "kernel" completes an accept with (socket values fit
/// 32 bits, as coring's descriptors assume).
#[cfg(windows)]
fn into_raw(s: StdPairStream) -> i32 {
    use std::os::windows::io::IntoRawSocket;
    i32::try_from(s.into_raw_socket()).expect("a socket value beyond 32 bits")
}

/// A file that is always there, for operations the mock never performs.
#[cfg(unix)]
const NULL_DEVICE: &str = "/dev/null";
/// A file that is always there, for operations the mock never performs.
#[cfg(windows)]
const NULL_DEVICE: &str = "NUL";

fn mock_runtime() -> (Runtime, MockHandle) {
    // Short shutdown deadline: a test may leave an operation its "kernel" never finishes.
    let rt = Builder::new()
        .backend(BackendKind::Mock)
        .shutdown_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mock = rt.mock();
    (rt, mock)
}

/// Runs `test` on a fresh mock runtime, under the watchdog.
fn with_mock(name: &str, test: impl FnOnce(Runtime, MockHandle)) {
    with_watchdog(name, || {
        let (rt, mock) = mock_runtime();
        test(rt, mock)
    })
}

/// A file whose descriptor the operations name (the mock never touches it).
fn some_file() -> File {
    File::from_std(std::fs::File::open(NULL_DEVICE).unwrap())
}

/// Lets spawned tasks run and the driver reap what the test completed.
async fn turns(n: usize) {
    for _ in 0..n {
        yield_now().await;
    }
}

/// Spawns `io` on a fresh file and lets it submit its first operation.
async fn spawn_on_file<T, F>(io: impl FnOnce(File) -> F) -> coring::JoinHandle<T>
where
    F: std::future::Future<Output = T> + 'static,
    T: 'static,
{
    let h = coring::spawn(io(some_file()));
    turns(2).await;
    h
}

// A read whose future is dropped keeps its buffer for as long as the "kernel" takes to
// finish it, however many turns that is, and the driver asked for a cancel meanwhile.
#[test]
fn late_completion_after_drop_frees_the_buffer_only_then() {
    with_mock("late_completion_after_drop", |rt, mock| {
        let (buf, dropped) = DropFlagBuf::new(64);
        rt.block_on(async {
            let file = some_file();
            let r = timeout(Duration::from_millis(1), file.read_at(buf, 0)).await;
            assert!(r.is_err(), "nothing completed the read");
            turns(50).await;
            let op = mock.only("read");
            assert!(op.cancel_requested, "dropping the future asks for a cancel");
            assert!(!dropped.get(), "buffer freed while the kernel owned it");
            // The kernel ignores the cancel and finishes the read much later.
            mock.fill(op.key, b"late data");
            mock.complete(op.key, 9);
            turns(2).await;
            assert!(
                dropped.get(),
                "the orphan's buffer is released after completion"
            );
        });
        let m = rt.metrics();
        assert_eq!((m.ops_orphaned, rt.ops_in_flight()), (1, 0), "{m:?}");
    });
}

/// A listener for the accept tests (the mock never touches it): a Unix one at `path` on
/// Unix, a loopback TCP one on Windows (coring offers no Unix-domain sockets there).
#[cfg(unix)]
fn mock_listener(path: &std::path::Path) -> coring::net::UnixListener {
    coring::net::UnixListener::bind(path).unwrap()
}

/// A listener for the accept tests (the mock never touches it): a Unix one at `path` on
/// Unix, a loopback TCP one on Windows (coring offers no Unix-domain sockets there).
#[cfg(windows)]
fn mock_listener(_path: &std::path::Path) -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

// An accept whose future was dropped is kept by the listener, not cancelled: the
// connection the "kernel" accepts for it is what the next accept returns.
#[test]
fn dropped_accept_is_kept_and_its_connection_returned_next() {
    with_mock("dropped_accept_is_kept", |rt, mock| {
        let (ours, peer) = std_pair();
        let dir = std::env::temp_dir().join(format!("coring-mock-accept-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        rt.block_on(async {
            let listener = mock_listener(&dir);
            let r = timeout(Duration::from_millis(1), listener.accept()).await;
            assert!(r.is_err());
            turns(2).await;
            let op = mock.only("accept");
            assert!(
                !op.cancel_requested,
                "a dropped accept is kept, not cancelled"
            );
            let next = coring::spawn(async move {
                let r = listener.accept().await;
                (r, listener)
            });
            turns(2).await;
            assert_eq!(
                mock.pending().len(),
                1,
                "the next accept waits for the kept one"
            );
            let fd = into_raw(ours);
            mock.complete(op.key, fd);
            let (r, _listener) = next.await.unwrap();
            #[cfg(unix)]
            {
                let (stream, _) = r.expect("the kept accept's connection");
                use std::os::fd::AsRawFd;
                assert_eq!(
                    stream.as_raw_fd(),
                    fd,
                    "the connection accepted for the dropped call"
                );
                let _ = &peer; // kept open to the end, unread
            }
            // A TCP accept reads its peer's address, which the mock's "kernel" cannot fill
            // in: the kept accept's connection reaches the next accept as that error (its
            // socket closed, so its peer sees end of file), and no new accept was submitted.
            #[cfg(windows)]
            {
                let err = r.expect_err("an accept without a peer address");
                assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
                assert!(
                    mock.pending().is_empty(),
                    "the next accept submitted its own"
                );
                peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut b = [0u8; 1];
                assert_eq!(
                    (&peer).read(&mut b).unwrap(),
                    0,
                    "the kept accept's connection was not the one handed on"
                );
            }
        });
        let _ = std::fs::remove_file(&dir);
        assert_eq!(rt.ops_in_flight(), 0);
    });
}

// unregister() on a listener with a kept accept, where the backend cannot cancel at once
// (the mock, or io_uring without synchronous cancel): the accept is asked to cancel, and
// its -ECANCELED is the listener's own doing, not the next accept's error: that accept
// submits a new one.
#[test]
fn kept_accept_cancelled_by_unregister_is_no_error_of_the_next_accept() {
    with_mock("kept_accept_cancelled_by_unregister", |rt, mock| {
        let path = std::env::temp_dir().join(format!("coring-mock-unreg-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        rt.block_on(async {
            let listener = mock_listener(&path);
            let r = timeout(Duration::from_millis(1), listener.accept()).await;
            assert!(r.is_err());
            turns(2).await;
            let _ = listener.unregister();
            let op = mock.only("accept");
            assert!(op.cancel_requested, "unregister cancels the kept accept");
            mock.complete(op.key, -common::ECANCELED);
            turns(2).await;
            let h = coring::spawn(async move { listener.accept().await.map(drop) });
            turns(2).await;
            assert!(!h.is_finished(), "the next accept must wait, not fail");
            let next = mock.only("accept");
            assert!(!next.cancel_requested, "a new accept");
            h.abort();
        });
        let _ = std::fs::remove_file(&path);
    });
}

// The same for a UDP socket's kept receive: unregister() asks it to cancel, and its
// -ECANCELED is the socket's own doing, not the next receive's error; a kept receive that
// failed on its own (the "kernel" reports ECONNREFUSED) passes its error to the next
// receive, which then submits no receive of its own.
#[test]
fn kept_udp_receive_cancelled_or_failed() {
    with_mock("kept_udp_receive_cancelled_or_failed", |rt, mock| {
        rt.block_on(async {
            let sock = Rc::new(coring::net::UdpSocket::bind("127.0.0.1:0").unwrap());
            let r = timeout(Duration::from_millis(1), sock.recv(Vec::with_capacity(8))).await;
            assert!(r.is_err());
            turns(2).await;
            let _ = sock.unregister();
            let op = mock.only("recvmsg");
            assert!(op.cancel_requested, "unregister cancels the kept receive");
            mock.complete(op.key, -common::ECANCELED);
            turns(2).await;
            let s = sock.clone();
            let h = coring::spawn(async move { s.recv_from(Vec::with_capacity(8)).await.0 });
            turns(2).await;
            assert!(!h.is_finished(), "the next receive must wait, not fail");
            let next = mock.only("recvmsg");
            assert!(!next.cancel_requested, "a new receive");
            h.abort();
            turns(2).await;
            // That receive is kept too; the "kernel" fails it.
            let kept = mock.only("recvmsg");
            assert!(!kept.cancel_requested, "an aborted receive is kept");
            mock.complete(kept.key, -errno::ECONNREFUSED);
            turns(2).await;
            let (r, _) = sock.recv_from(Vec::with_capacity(8)).await;
            assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
            assert!(mock.pending().is_empty(), "served without a new receive");
        });
    });
}

// A kept receive that failed before `unregister` cancelled the kept receives keeps its
// error for the next receive (unregister drops only what its cancel ended), and does not
// keep unregister from succeeding.
#[test]
fn kept_udp_receive_error_survives_unregister() {
    with_mock("kept_udp_receive_error_survives_unregister", |rt, mock| {
        rt.block_on(async {
            let sock = coring::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let r = timeout(Duration::from_millis(1), sock.recv(Vec::with_capacity(8))).await;
            assert!(r.is_err());
            turns(2).await;
            let kept = mock.only("recvmsg");
            mock.complete(kept.key, -errno::ECONNREFUSED);
            turns(2).await;
            // The kept receive has finished: it holds the descriptor for its error, not for
            // the kernel, so unregister succeeds (issue 14, defect 4: it used to say
            // ResourceBusy here).
            sock.unregister().unwrap();
            let (r, _) = sock.recv_from(Vec::with_capacity(8)).await;
            assert_eq!(
                r.unwrap_err().kind(),
                std::io::ErrorKind::ConnectionRefused,
                "the kept receive's error goes to the next receive"
            );
            assert!(mock.pending().is_empty(), "served without a new receive");
        });
    });
}

// A listener dropped while it keeps a dropped accept: the accept is cancelled, and a
// connection the "kernel" accepted anyway (the cancel lost the race) is closed, so the
// peer sees end of file.
#[test]
fn listener_dropped_with_a_kept_accept_closes_what_it_accepted() {
    with_mock("listener_dropped_with_kept_accept", |rt, mock| {
        let (ours, mut peer) = std_pair();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let r = timeout(Duration::from_millis(1), listener.accept()).await;
            assert!(r.is_err());
            turns(2).await;
            assert!(!mock.only("accept").cancel_requested);
            drop(listener);
            turns(2).await;
            let op = mock.only("accept");
            assert!(
                op.cancel_requested,
                "dropping the listener cancels the kept accept"
            );
            // The "kernel" accepted a connection before it saw the cancel.
            mock.complete(op.key, into_raw(ours));
            turns(2).await;
        });
        let mut b = [0u8; 1];
        assert_eq!(
            peer.read(&mut b).unwrap(),
            0,
            "accepted descriptor left open"
        );
        assert_eq!(rt.ops_in_flight(), 0);
    });
}

// Completions in the reverse order of submission reach the futures they belong to, with
// their own bytes.
#[test]
fn out_of_order_completions_reach_their_own_futures() {
    with_mock("out_of_order_completions", |rt, mock| {
        rt.block_on(async {
            let file = Rc::new(some_file());
            let handles: Vec<_> = (0..3u64)
                .map(|i| {
                    let file = file.clone();
                    coring::spawn(async move { file.read_at(Vec::with_capacity(16), i).await })
                })
                .collect();
            turns(2).await;
            let ops = mock.pending();
            assert_eq!(ops.len(), 3, "{ops:?}");
            for (i, op) in ops.iter().enumerate().rev() {
                let data = format!("reply {i}");
                mock.fill(op.key, data.as_bytes());
                mock.complete(op.key, data.len() as i32);
                turns(1).await;
            }
            for (i, h) in handles.into_iter().enumerate() {
                let (res, buf) = h.await.unwrap();
                assert_eq!(res.unwrap(), 7);
                assert_eq!(buf, format!("reply {i}").into_bytes());
            }
        });
    });
}

// write_all goes on after a short write from where it stopped, and a write of zero bytes
// is WriteZero, not a loop.
#[test]
fn short_then_zero_writes() {
    with_mock("short_then_zero_writes", |rt, mock| {
        rt.block_on(async {
            let h =
                spawn_on_file(|f| async move { f.write_all_at(b"0123456789".to_vec(), 100).await })
                    .await;
            let op = mock.only("write");
            assert_eq!(mock.written(op.key), b"0123456789");
            mock.complete(op.key, 4);
            turns(2).await;
            let op = mock.only("write");
            assert_eq!(
                mock.written(op.key),
                b"456789",
                "the rest, after the short write"
            );
            mock.complete(op.key, 0);
            let (res, buf) = h.await.unwrap();
            assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::WriteZero);
            assert_eq!(buf, b"0123456789", "the buffer comes back whole");
        });
    });
}

// read_exact goes on after a short read, and end of file before the buffer is full is
// UnexpectedEof; only bytes the completions reported count as read.
#[test]
fn short_read_then_eof_in_read_exact() {
    with_mock("short_read_then_eof", |rt, mock| {
        rt.block_on(async {
            let h =
                spawn_on_file(|f| async move { f.read_exact_at(Vec::with_capacity(10), 0).await })
                    .await;
            let op = mock.only("read");
            assert_eq!(op.len, 10);
            // Five bytes written into the buffer, three reported.
            mock.fill(op.key, b"abcde");
            mock.complete(op.key, 3);
            turns(2).await;
            let op = mock.only("read");
            assert_eq!(op.len, 7, "the unfilled rest");
            mock.complete(op.key, 0);
            let (res, buf) = h.await.unwrap();
            assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
            assert_eq!(buf, b"abc", "exactly the reported bytes are initialised");
        });
    });
}

// A byte count larger than the buffer (a broken kernel) is an error, and marks nothing
// beyond the buffer as initialised.
#[test]
fn result_beyond_the_buffer_is_an_error() {
    with_mock("result_beyond_the_buffer", |rt, mock| {
        rt.block_on(async {
            let h =
                spawn_on_file(|f| async move { f.read_at(Vec::with_capacity(8), 0).await }).await;
            let op = mock.only("read");
            mock.complete(op.key, 100);
            let (res, buf) = h.await.unwrap();
            let err = res.unwrap_err();
            assert!(err.to_string().contains("100 bytes"), "{err}");
            assert!(buf.is_empty());
        });
    });
}

// A submission the kernel refuses completes with that error at once; nothing stays in
// flight and the next submission works.
#[test]
fn refused_submission_completes_with_its_error() {
    with_mock("refused_submission", |rt, mock| {
        rt.block_on(async {
            let file = some_file();
            mock.fail_next_pushes(1, errno::ENOMEM);
            let (res, buf) = file.read_at(Vec::with_capacity(8), 0).await;
            assert_eq!(res.unwrap_err().raw_os_error(), Some(errno::ENOMEM));
            assert_eq!(buf.capacity(), 8, "the buffer comes back");
            assert_eq!(rt.ops_in_flight(), 0);
            let file = Rc::new(file);
            let f = file.clone();
            let h = coring::spawn(async move { f.read_at(Vec::with_capacity(8), 0).await });
            turns(2).await;
            let op = mock.only("read");
            mock.complete(op.key, 0);
            assert_eq!(h.await.unwrap().0.unwrap(), 0);
        });
    });
}

// A test that awaits an operation nobody completes gets a panic naming the pending
// operations, not a silent spin until the watchdog.
#[test]
fn waiting_for_nothing_panics_with_advice() {
    with_mock("waiting_for_nothing", |rt, mock| {
        let file = some_file();
        let r = catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(async { file.read_at(Vec::with_capacity(8), 0).await })
        }));
        let msg = match r {
            Ok(_) => panic!("the read completed without anyone completing it"),
            Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
        };
        assert!(msg.contains("would sleep forever"), "{msg}");
        assert_eq!(mock.pending().len(), 1);
    });
}

/// A stream on the mock with multishot receives (8 provided buffers of 64 bytes).
fn multishot_stream(mock: &MockHandle) -> (Rc<PairStream>, StdPairStream) {
    mock.enable_multishot(8, 64);
    let (a, b) = std_pair();
    (Rc::new(PairStream::from_std(a).unwrap()), b)
}

/// Spawns one read of up to `cap` bytes and lets it submit.
async fn spawn_read(
    s: &Rc<PairStream>,
    cap: usize,
) -> coring::JoinHandle<(std::io::Result<usize>, Vec<u8>)> {
    let s = s.clone();
    let h = coring::spawn(async move { s.read(Vec::with_capacity(cap)).await });
    turns(2).await;
    h
}

// Arrivals are read in order; a final completion that still carries data (the kernel ended
// the receive, e.g. on CQ overflow) is delivered like the others, and the next read arms a
// new receive, whose end of file reads as 0.
#[test]
fn multishot_final_completion_with_data_then_rearm() {
    with_mock("multishot_final_completion_with_data", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = multishot_stream(&mock);
            let h = spawn_read(&s, 100).await;
            let op = mock.only("recv_multi");
            mock.deliver(op.key, b"hello", true);
            assert_eq!(h.await.unwrap().1, b"hello");
            let h = spawn_read(&s, 100).await;
            mock.deliver(op.key, b"last", false);
            assert_eq!(h.await.unwrap().1, b"last");
            assert!(
                mock.pending().is_empty(),
                "the final completion ended the receive"
            );
            let h = spawn_read(&s, 100).await;
            let again = mock.only("recv_multi");
            mock.complete(again.key, 0);
            let (res, buf) = h.await.unwrap();
            assert_eq!((res.unwrap(), buf.len()), (0, 0), "end of file");
            assert_eq!(mock.provided_in_use(), 0, "every buffer handed back");
        });
    });
}

// Out of provided buffers (-ENOBUFS ends the receive): that read is a single-shot receive
// into the caller's buffer, and the read after it arms a multishot receive again.
#[test]
fn multishot_enobufs_reads_once_single_shot() {
    with_mock("multishot_enobufs", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = multishot_stream(&mock);
            let h = spawn_read(&s, 100).await;
            let op = mock.only("recv_multi");
            mock.complete(op.key, -errno::ENOBUFS);
            turns(2).await;
            let single = mock.only("recv");
            mock.fill(single.key, b"direct");
            mock.complete(single.key, 6);
            assert_eq!(h.await.unwrap().1, b"direct");
            let _h = spawn_read(&s, 100).await;
            mock.only("recv_multi");
        });
    });
}

// Arrivals queued for a stream that is then dropped: the receive is cancelled, and every
// provided buffer it filled (before and after the drop) goes back; nothing stays in flight.
#[test]
fn multishot_buffers_of_a_dropped_stream_go_back() {
    with_mock("multishot_dropped_stream", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = multishot_stream(&mock);
            let h = spawn_read(&s, 3).await;
            let op = mock.only("recv_multi");
            mock.deliver(op.key, b"abcdef", true);
            mock.deliver(op.key, b"ghi", true);
            // A 3-byte read takes part of the first arrival; the rest stays in the stream.
            assert_eq!(h.await.unwrap().1, b"abc");
            assert_eq!(mock.provided_in_use(), 2);
            drop(s);
            turns(2).await;
            assert!(mock.only("recv_multi").cancel_requested, "dropping cancels");
            // An arrival racing the cancel, then the cancel's final completion.
            mock.deliver(op.key, b"late", true);
            mock.complete(op.key, -common::ECANCELED);
            turns(2).await;
            assert_eq!(
                mock.provided_in_use(),
                0,
                "buffers of the dropped stream leaked"
            );
        });
        assert_eq!(rt.ops_in_flight(), 0);
    });
}

// A stream nobody reads reaches the cap of queued arrivals: the driver cancels the
// receive (data then waits in the socket). The reads that follow get every arrival in
// order (each takes all the queued ones that fit), then the cancel's end is invisible: the
// next read arms again.
#[test]
fn multishot_cap_cancels_and_nothing_is_lost() {
    with_mock("multishot_cap", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = multishot_stream(&mock);
            let h = spawn_read(&s, 64).await;
            let op = mock.only("recv_multi");
            mock.deliver(op.key, b"arrival 0", true);
            assert_eq!(h.await.unwrap().1, b"arrival 0");
            for i in 1..=8 {
                mock.deliver(op.key, format!("arrival {i}").as_bytes(), true);
            }
            turns(2).await;
            assert!(
                mock.only("recv_multi").cancel_requested,
                "the cap asks for a cancel"
            );
            assert!(rt.metrics().multishot_throttled >= 1);
            mock.complete(op.key, -common::ECANCELED);
            let want: Vec<u8> = (1..=8)
                .flat_map(|i| format!("arrival {i}").into_bytes())
                .collect();
            // 72 bytes: 64 in the first read (the eighth arrival split), 8 in the second.
            let h = spawn_read(&s, 64).await;
            let mut got = h.await.unwrap().1;
            assert_eq!(got.len(), 64, "the first read fills its buffer");
            let h = spawn_read(&s, 64).await;
            got.extend(h.await.unwrap().1);
            assert_eq!(got, want);
            // The cancelled receive's end: this read goes single-shot, then re-arms.
            let h = spawn_read(&s, 64).await;
            let single = mock.only("recv");
            mock.fill(single.key, b"after");
            mock.complete(single.key, 5);
            assert_eq!(h.await.unwrap().1, b"after");
            assert_eq!(mock.provided_in_use(), 0);
        });
    });
}

// A read takes every arrival already queued that fits (in order, the last maybe in part),
// and returns without waiting for more.
#[test]
fn multishot_read_takes_every_queued_arrival_that_fits() {
    with_mock("multishot_read_takes_queued", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = multishot_stream(&mock);
            let h = spawn_read(&s, 5).await;
            let op = mock.only("recv_multi");
            for part in [&b"ab"[..], b"cd", b"ef"] {
                mock.deliver(op.key, part, true);
            }
            assert_eq!(h.await.unwrap().1, b"abcde");
            assert_eq!(mock.provided_in_use(), 1, "\"f\" still held");
            let h = spawn_read(&s, 10).await;
            assert_eq!(h.await.unwrap().1, b"f", "no waiting for more");
            let h = spawn_read(&s, 10).await;
            assert!(!h.is_finished(), "nothing queued: the read waits");
            mock.deliver(op.key, b"gh", true);
            assert_eq!(h.await.unwrap().1, b"gh");
            assert_eq!(mock.provided_in_use(), 0);
        });
    });
}

// Bulk traffic: after 4 reads in a row that each began with an arrival filling a whole
// provided buffer and moved at least 4 KiB into a larger caller's buffer, the stream
// cancels its multishot receive, reads what it queued (and what raced the cancel), then
// receives straight into the caller's buffer. After 4 direct reads in a row shorter than
// 4 KiB it arms a multishot receive again. Every byte arrives once, in order.
#[test]
fn bulk_arrivals_switch_to_direct_reads_and_short_reads_switch_back() {
    const B: usize = 4096; // provided buffer
    const C: usize = 4 * B; // the caller's buffer
    with_mock("bulk_switch", |rt, mock| {
        rt.block_on(async {
            mock.enable_multishot(8, B);
            let (a, _peer) = std_pair();
            let s = Rc::new(PairStream::from_std(a).unwrap());
            let mut sent = Vec::new();
            let mut got = Vec::new();
            let mut next = |len: usize| -> Vec<u8> {
                let part: Vec<u8> = (sent.len()..sent.len() + len).map(|i| i as u8).collect();
                sent.extend_from_slice(&part);
                part
            };
            let op = {
                let h = spawn_read(&s, C).await;
                let op = mock.only("recv_multi");
                mock.deliver(op.key, &next(B), true);
                got.extend(h.await.unwrap().1);
                op
            };
            for _ in 0..3 {
                assert!(!mock.only("recv_multi").cancel_requested);
                let h = spawn_read(&s, C).await;
                mock.deliver(op.key, &next(B), true);
                got.extend(h.await.unwrap().1);
            }
            assert!(
                mock.only("recv_multi").cancel_requested,
                "4 full arrivals into larger buffers cancel the multishot receive"
            );
            assert_eq!(rt.metrics().bulk_switches, 1);
            // Arrivals racing the cancel, read one by one (full ones: they must not count
            // towards a mode switch while the receive drains), then the cancel's end.
            for len in [B, B, B, B, 40] {
                let h = spawn_read(&s, C).await;
                mock.deliver(op.key, &next(len), true);
                got.extend(h.await.unwrap().1);
            }
            mock.complete(op.key, -common::ECANCELED);
            // From now on reads receive into the caller's buffer directly.
            for len in [2 * B, C, 10, 10, 10] {
                let h = spawn_read(&s, C).await;
                let direct = mock.only("recv");
                assert_eq!(
                    direct.len as usize, C,
                    "the caller's buffer, not a provided one"
                );
                mock.fill(direct.key, &next(len));
                mock.complete(direct.key, len as i32);
                got.extend(h.await.unwrap().1);
            }
            // One more short direct read (the fourth in a row) ends bulk mode.
            let h = spawn_read(&s, C).await;
            let direct = mock.only("recv");
            mock.fill(direct.key, &next(7));
            mock.complete(direct.key, 7);
            got.extend(h.await.unwrap().1);
            let h = spawn_read(&s, C).await;
            let again = mock.only("recv_multi");
            mock.deliver(again.key, &next(5), true);
            got.extend(h.await.unwrap().1);
            assert!(got == sent, "bytes lost or reordered across the switches");
            assert_eq!(mock.provided_in_use(), 0);
            assert_eq!(rt.metrics().bulk_switches, 1);
        });
    });
}

// A bulk stream read through a buffer one and a half provided buffers long: every other
// read begins with the half arrival the previous one left; such reads do not vote, so the
// full-start reads still make a streak and the stream reaches bulk mode.
#[test]
fn reads_starting_with_leftover_data_do_not_break_the_bulk_streak() {
    const B: usize = 4096;
    const C: usize = B + B / 2;
    with_mock("bulk_one_and_a_half", |rt, mock| {
        rt.block_on(async {
            mock.enable_multishot(8, B);
            let (a, _peer) = std_pair();
            let s = Rc::new(PairStream::from_std(a).unwrap());
            let h = spawn_read(&s, C).await;
            let key = mock.only("recv_multi").key;
            mock.deliver(key, &[1; B], true);
            mock.deliver(key, &[1; B], true);
            assert_eq!(h.await.unwrap().0.unwrap(), C);
            for i in 1..16 {
                if mock.only("recv_multi").cancel_requested {
                    break;
                }
                // Alternately one and two new arrivals, so each read fills its buffer.
                for _ in 0..(1 + i % 2) {
                    mock.deliver(key, &[1; B], true);
                }
                turns(3).await;
                let h = spawn_read(&s, C).await;
                assert_eq!(h.await.unwrap().0.unwrap(), C, "read {i}");
            }
            assert_eq!(rt.metrics().bulk_switches, 1, "never reached bulk mode");
        });
    });
}

// Small provided buffers (Builder::recv_buffers) and messages a few buffers long: every
// read begins with a full buffer, but moves far less than 4 KiB, so it is no bulk
// traffic and the stream stays on its multishot receive (direct reads would never be
// shorter than a buffer, so the stream would never come back).
#[test]
fn messages_over_small_provided_buffers_are_no_bulk() {
    with_mock("small_buffers_no_bulk", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = multishot_stream(&mock); // 64-byte provided buffers
            let mut op = None;
            for round in 0..10u8 {
                let h = spawn_read(&s, 1024).await;
                let key = *op.get_or_insert_with(|| mock.only("recv_multi").key);
                // A 300-byte message: four full buffers and a partial one.
                for len in [64, 64, 64, 64, 44] {
                    mock.deliver(key, &vec![round; len], true);
                }
                assert_eq!(h.await.unwrap().1, vec![round; 300]);
            }
            assert!(!mock.only("recv_multi").cancel_requested);
            assert_eq!(rt.metrics().bulk_switches, 0);
        });
    });
}

// Reads no larger than a provided buffer never leave multishot mode, however full the
// arrivals: a direct read could not take more than one arrival holds.
#[test]
fn small_reads_stay_multishot() {
    with_mock("small_reads_stay_multishot", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = multishot_stream(&mock);
            let h = spawn_read(&s, 64).await;
            let op = mock.only("recv_multi");
            mock.deliver(op.key, &[1; 64], true);
            assert_eq!(h.await.unwrap().1.len(), 64);
            for _ in 0..10 {
                let h = spawn_read(&s, 64).await;
                mock.deliver(op.key, &[2; 64], true);
                assert_eq!(h.await.unwrap().1.len(), 64);
            }
            assert!(!mock.only("recv_multi").cancel_requested);
        });
    });
}

/// A stream on the mock without multishot receives: every read is a single-shot recv.
fn single_shot_stream() -> (Rc<PairStream>, StdPairStream) {
    let (a, b) = std_pair();
    (Rc::new(PairStream::from_std(a).unwrap()), b)
}

// A single-shot read dropped while the kernel owns its receive: the receive is not
// cancelled but kept by the stream; the next read waits for it and returns what it got
// (in parts if its buffer is smaller), and only then does a read submit a new receive.
#[test]
fn dropped_single_shot_read_is_kept_and_read_next() {
    with_mock("dropped_single_shot_read_is_kept", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = single_shot_stream();
            let r = timeout(Duration::from_millis(1), s.read(Vec::with_capacity(64))).await;
            assert!(r.is_err(), "nothing completed the read");
            turns(2).await;
            let op = mock.only("recv");
            assert!(
                !op.cancel_requested,
                "a dropped stream read is kept, not cancelled"
            );
            let h = spawn_read(&s, 4).await;
            assert_eq!(
                mock.pending().len(),
                1,
                "the next read waits for the kept receive"
            );
            mock.fill(op.key, b"kept data");
            mock.complete(op.key, 9);
            assert_eq!(h.await.unwrap().1, b"kept");
            let h = spawn_read(&s, 64).await;
            assert_eq!(h.await.unwrap().1, b" data");
            let h = spawn_read(&s, 64).await;
            // The kept receive is finished: this read submits its own.
            let next = mock.only("recv");
            mock.fill(next.key, b"new");
            mock.complete(next.key, 3);
            assert_eq!(h.await.unwrap().1, b"new");
        });
        assert_eq!(rt.ops_in_flight(), 0);
    });
}

// A read whose receive completed but whose future was dropped before it collected the
// result (a select that picked another branch): the bytes go to the next read; an end of
// file or error it got is reported once, to the next read.
#[test]
fn completed_but_dropped_read_hands_its_result_to_the_next() {
    with_mock("completed_but_dropped_read", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = single_shot_stream();
            for (data, res) in [(&b"abc"[..], 3), (b"", 0), (b"", -errno::ECONNRESET)] {
                let h = spawn_read(&s, 64).await;
                let op = mock.only("recv");
                mock.fill(op.key, data);
                mock.complete(op.key, res);
                // The completion is reaped, then the read is dropped before it runs.
                h.abort();
                turns(2).await;
                let (r, buf) = spawn_read(&s, 64).await.await.unwrap();
                match res {
                    3 => assert_eq!((r.unwrap(), buf), (3, b"abc".to_vec())),
                    0 => assert_eq!(r.unwrap(), 0, "end of file"),
                    _ => assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset),
                }
                assert!(mock.pending().is_empty(), "served without a new receive");
            }
        });
    });
}

// The stream dropped while it keeps a dropped read's receive: the receive is cancelled,
// and its buffer is freed only when the "kernel" finishes it.
#[test]
fn stream_dropped_with_a_kept_receive_cancels_it() {
    with_mock("stream_dropped_with_kept_receive", |rt, mock| {
        let (buf, dropped) = DropFlagBuf::new(64);
        rt.block_on(async {
            let (s, _peer) = single_shot_stream();
            let r = timeout(Duration::from_millis(1), s.read(buf)).await;
            assert!(r.is_err());
            turns(2).await;
            assert!(!mock.only("recv").cancel_requested);
            drop(s);
            turns(2).await;
            let op = mock.only("recv");
            assert!(
                op.cancel_requested,
                "dropping the stream cancels the kept receive"
            );
            assert!(!dropped.get(), "buffer freed while the kernel owned it");
            mock.complete(op.key, -common::ECANCELED);
            turns(2).await;
            assert!(dropped.get(), "buffer released after the final completion");
        });
        assert_eq!(rt.ops_in_flight(), 0);
    });
}

// into_std with a kept receive: the receive is cancelled and the descriptor handed over
// when it got nothing; when it holds received bytes the stream comes back (read them
// first), and after they are read into_std succeeds.
#[test]
fn into_std_with_a_kept_receive() {
    with_mock("into_std_with_kept_receive", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = single_shot_stream();
            let r = timeout(Duration::from_millis(1), s.read(Vec::with_capacity(8))).await;
            assert!(r.is_err());
            turns(2).await;
            let op = mock.only("recv");
            mock.fill(op.key, b"held");
            mock.complete(op.key, 4);
            turns(2).await;
            let s = Rc::into_inner(s).expect("one owner");
            let s = s.into_std().expect_err("received data not read yet");
            let (r, buf) = s.read(Vec::with_capacity(8)).await;
            assert_eq!((r.unwrap(), buf), (4, b"held".to_vec()));
            s.into_std().expect("nothing held any more");
        });
    });
}

// An error ends the receive after data: the data is read first, then the error.
#[test]
fn multishot_error_after_data() {
    with_mock("multishot_error_after_data", |rt, mock| {
        rt.block_on(async {
            let (s, _peer) = multishot_stream(&mock);
            let h = spawn_read(&s, 64).await;
            let op = mock.only("recv_multi");
            mock.deliver(op.key, b"data", true);
            mock.complete(op.key, -errno::ECONNRESET);
            assert_eq!(h.await.unwrap().1, b"data");
            let h = spawn_read(&s, 64).await;
            let (res, _) = h.await.unwrap();
            assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
        });
    });
}

// A stream whose multishot receive (holding received data) runs on one runtime, read on
// another: an InvalidInput error, not a single-shot read that would skip the held bytes;
// back on the first runtime the bytes are all there, in order.
#[test]
fn multishot_stream_read_on_another_runtime_is_refused() {
    with_watchdog("multishot_other_runtime", || {
        let (rt1, mock1) = mock_runtime();
        let (rt2, _mock2) = mock_runtime();
        let (s, _peer) = multishot_stream(&mock1);
        rt1.block_on(async {
            let h = spawn_read(&s, 2).await;
            let op = mock1.only("recv_multi");
            mock1.deliver(op.key, b"abcd", true);
            assert_eq!(h.await.unwrap().1, b"ab");
        });
        rt2.block_on(async {
            let (res, _) = s.read(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        });
        rt1.block_on(async {
            assert_eq!(s.read(Vec::with_capacity(8)).await.1, b"cd");
        });
    });
}
