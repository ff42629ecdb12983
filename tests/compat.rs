//! `coring::compat::Compat`: tokio's and futures' IO traits on coring's streams and files,
//! and the adapter's guarantees: a read dropped mid-flight loses nothing, a write reported
//! as accepted is sent (its failure reported by the next flush), a file has one cursor.

mod common;

use std::future::Future;
use std::io::IoSlice;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use coring::compat::Compat;
use coring::net::{TcpListener, TcpStream};

// A connected loopback TCP pair (`TCP_NODELAY` on both ends, so small sends go at once).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, connected) = futures::join!(listener.accept(), TcpStream::connect(addr));
    let (a, b) = (accepted.unwrap().0, connected.unwrap());
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

// Polls `fut` exactly once with a no-op waker.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(fut).poll(&mut cx)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

// tokio's traits: an echo through the adapter on both ends, with `read_exact`,
// `read_line` (AsyncBufRead) and a large vectored write.
coring_test!(tokio_traits_round_trip, async {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (a, b) = tcp_pair().await;
    let (mut a, mut b) = (Compat::new(a), Compat::new(b));
    a.write_all(b"hello\nworld").await.unwrap();
    a.flush().await.unwrap();
    let mut line = String::new();
    b.read_line(&mut line).await.unwrap();
    assert_eq!(line, "hello\n");
    let mut rest = [0u8; 5];
    b.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"world");
    // Bigger than the adapter's write stage and read buffer, both ways at once.
    let big = pattern(1 << 20);
    let writer = async {
        let (head, tail) = big.split_at(1000);
        let n = a
            .write_vectored(&[IoSlice::new(head), IoSlice::new(tail)])
            .await
            .unwrap();
        assert!(n > 0 && n <= big.len());
        a.write_all(&big[n..]).await.unwrap();
        a.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = futures::join!(writer, reader);
    assert!(got == big, "the bytes arrived changed or out of order");
    // After shutdown, writing is an error, not a silent loss.
    assert!(a.write_all(b"late").await.is_err());
});

// futures' traits on the same adapter type.
coring_test!(futures_traits_round_trip, async {
    use futures::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (a, b) = tcp_pair().await;
    let (mut a, mut b) = (Compat::new(a), Compat::new(b));
    let big = pattern(300_000);
    let writer = async {
        a.write_all(&big).await.unwrap();
        a.close().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = futures::join!(writer, reader);
    assert!(got == big);
    // AsyncBufRead: fill_buf at end of stream is empty.
    assert!(b.fill_buf().await.unwrap().is_empty());
});

// A Unix stream through both traits.
#[cfg(unix)]
coring_test!(unix_stream, async {
    use coring::net::UnixStream;
    let (a, b) = UnixStream::pair().unwrap();
    let (mut a, mut b) = (Compat::new(a), Compat::new(b));
    tokio::io::AsyncWriteExt::write_all(&mut a, b"over unix")
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::flush(&mut a).await.unwrap();
    let mut buf = [0u8; 9];
    futures::AsyncReadExt::read_exact(&mut b, &mut buf)
        .await
        .unwrap();
    assert_eq!(&buf, b"over unix");
});

// A read polled once (so its receive is in flight, owned by the adapter) and then
// dropped loses nothing: the bytes the kernel receives for it come with the next read.
coring_test!(read_dropped_mid_flight_keeps_bytes, async {
    use tokio::io::AsyncReadExt;
    let (a, b) = tcp_pair().await;
    let mut b = Compat::new(b);
    let mut buf = [0u8; 64];
    {
        let mut read = pin!(b.read(&mut buf));
        assert!(poll_once(&mut read).is_pending(), "nothing was sent yet");
    } // dropped with its receive in flight
    let (res, _) = a.write_all(b"first".to_vec()).await;
    res.unwrap();
    // Let the receive complete inside the adapter while no read is waiting.
    coring::time::sleep(Duration::from_millis(30)).await;
    let n = b.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"first");

    // The same through `select!`: a read that loses to a timer, three times over (the
    // one receive stays in flight in the adapter throughout), then sends: they all
    // arrive, in order, with the next reads.
    for round in 0..3u8 {
        let read = b.read(&mut buf).fuse_it();
        let timer = coring::time::sleep(Duration::from_millis(5)).fuse_it();
        futures::pin_mut!(read, timer);
        futures::select! {
            r = read => panic!("round {round}: read won with {r:?} before any send"),
            () = timer => {}
        }
    }
    for round in 0..3u8 {
        let (res, _) = a.write_all(vec![b'0' + round; 3]).await;
        res.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 9 {
        let n = b.read(&mut buf).await.unwrap();
        assert!(n > 0, "early end of stream");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"000111222");

    // Received data larger than the caller's buffer stays for the next reads.
    let (res, _) = a.write_all(pattern(10_000)).await;
    res.unwrap();
    let mut small = [0u8; 7];
    let mut got = Vec::new();
    while got.len() < 10_000 {
        let n = b.read(&mut small).await.unwrap();
        got.extend_from_slice(&small[..n]);
    }
    assert_eq!(got, pattern(10_000));
});

// `FutureExt::fuse` without importing `futures::FutureExt` (whose `poll_unpin` etc.
// clash with nothing here, but keep the names explicit).
trait FuseIt: Future + Sized {
    fn fuse_it(self) -> futures::future::Fuse<Self> {
        futures::FutureExt::fuse(self)
    }
}
impl<F: Future> FuseIt for F {}

// A write is `Ok` once the bytes are copied; a send that then fails is reported by the
// next flush (and a later write works again on a healthy stream).
coring_test!(write_error_after_ok_reported_at_flush, async {
    use tokio::io::AsyncWriteExt;
    let (a, b) = tcp_pair().await;
    // The write side is shut down under the adapter: every send fails.
    a.shutdown(std::net::Shutdown::Write).await.unwrap();
    let mut a = Compat::new(a);
    let n = a.write(b"accepted, then lost").await.unwrap();
    assert_eq!(n, 19, "a write is accepted whole");
    let err = a
        .flush()
        .await
        .expect_err("the failed send must surface at flush");
    assert_ne!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
    // Reported once: the stream stays usable for the caller to decide.
    a.flush().await.unwrap();
    drop(b);
});

// Accepted bytes go out even when the adapter is dropped without a flush, and writes
// beyond the stage wait for the send in flight (back-pressure, no unbounded buffering).
coring_test!(accepted_bytes_survive_drop_without_flush, async {
    let (a, b) = tcp_pair().await;
    let mut a = Compat::new(a);
    let big = pattern(200_000);
    let mut w = pin!(tokio::io::AsyncWriteExt::write(&mut a, &big));
    let n = match poll_once(&mut w) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("the first write must be accepted at once"),
    };
    assert!(
        n > 0 && n < big.len(),
        "one write accepts at most the stage ({n})"
    );
    let mut sent = n;
    while sent < big.len() {
        sent += tokio::io::AsyncWriteExt::write(&mut a, &big[sent..])
            .await
            .unwrap();
    }
    drop(a); // no flush: a background task finishes the sends, then closes
    let mut got = Vec::new();
    loop {
        let (res, buf) = b.read(Vec::with_capacity(65536)).await;
        if res.unwrap() == 0 {
            break;
        }
        got.extend_from_slice(&buf);
    }
    assert!(got == big, "{} of {} bytes arrived", got.len(), big.len());
});

// A file has one cursor: writes append at it, a read after writes sees them, a write
// after a read goes where the read stopped; `with_position` starts elsewhere.
coring_test!(file_sequential_cursor, async {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = common::TempDir::new("compat");
    let path = dir.path("f");
    let file = coring::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open(&path)
        .await
        .unwrap();
    let mut f = Compat::new(file);
    let data = pattern(100_000);
    f.write_all(&data).await.unwrap();
    f.flush().await.unwrap();
    assert_eq!(f.position(), 100_000);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // Reading at the end: end of file.
    let mut buf = [0u8; 16];
    assert_eq!(f.read(&mut buf).await.unwrap(), 0);
    // Written, then read back from a second adapter starting at 10.
    f.write_all(b"tail").await.unwrap();
    f.shutdown().await.unwrap();
    let f = f.into_inner().expect("nothing pending after a flush");
    let mut g = Compat::with_position(f, 10);
    let mut head = [0u8; 5];
    g.read_exact(&mut head).await.unwrap();
    assert_eq!(head, data[10..15]);
    // A write goes right after what was read (the read-ahead is dropped).
    g.write_all(b"XY").await.unwrap();
    let mut next = [0u8; 3];
    g.read_exact(&mut next).await.unwrap();
    assert_eq!(next, data[17..20]);
    let mut rest = Vec::new();
    g.read_to_end(&mut rest).await.unwrap();
    assert_eq!(g.position(), 100_004);
    assert!(rest.ends_with(b"tail"));
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(&on_disk[15..17], b"XY");
    assert_eq!(on_disk.len(), 100_004);
});

// `into_inner` refuses while the adapter holds something for the stream.
coring_test!(into_inner_refuses_with_buffered_bytes, async {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = tcp_pair().await;
    let (res, _) = a.write_all(b"abcdef".to_vec()).await;
    res.unwrap();
    let mut b = Compat::new(b);
    let mut one = [0u8; 1];
    b.read_exact(&mut one).await.unwrap();
    let mut b = b.into_inner().expect_err("5 bytes are still buffered");
    let mut rest = [0u8; 5];
    b.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"bcdef");
    let b = b.into_inner().expect("nothing buffered now");
    let mut a = Compat::new(a);
    a.write_all(b"x").await.unwrap();
    a.flush().await.unwrap();
    let (res, buf) = b.read(Vec::with_capacity(4)).await;
    assert_eq!(res.unwrap(), 1);
    assert_eq!(buf, b"x");
});
