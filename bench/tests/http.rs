//! The HTTP load generator against tiny in-test servers (std threads, one per connection):
//! exact byte counts, pipelined responses in order, chunked bodies, servers that close after
//! N requests (gracefully or not), one that never answers, and a whole run whose counts
//! agree with its latency histogram. Each test runs on every backend this machine has.
//! Nothing is timed: runs that last a while only check what they counted.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring::BackendKind;
use coring_bench::http::conn::{ErrorKind, HttpConn, MAX_FAILS};
use coring_bench::http::target::Target;
use coring_bench::http::{self, Cpus, HttpConfig};
use coring_bench::load::{drive_pipelined, Clock, Pacing, Pipelined, Recorder, WallClock, Window};

/// What the server does with the `k`-th request (from 0) of a connection.
enum Reply {
    /// Writes these bytes; then, if `close`, closes the connection (gracefully: it stops
    /// writing and reads until the client closes, so no reset loses the reply).
    Bytes { bytes: Vec<u8>, close: bool },
    /// Closes the connection (gracefully) without answering.
    Close,
}

type Script = dyn Fn(usize) -> Reply + Send + Sync;

/// A server on an ephemeral loopback port; counts what it wrote and the requests it read.
struct Server {
    addr: SocketAddr,
    written: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

/// Writes `bytes` in pieces of varying sizes, so that responses straddle reads.
fn write_in_pieces(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    const SIZES: [usize; 6] = [1, 7, 100, 3, 4000, 65536];
    let (mut pos, mut i) = (0, 0);
    while pos < bytes.len() {
        let n = SIZES[i % SIZES.len()].min(bytes.len() - pos);
        s.write_all(&bytes[pos..pos + n])?;
        pos += n;
        i += 1;
    }
    Ok(())
}

fn linger_close(mut s: TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

fn serve_conn(mut s: TcpStream, script: &Script, written: &AtomicU64, requests: &AtomicU64) {
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (mut buf, mut k) = (Vec::new(), 0usize);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Answer every complete request read so far in one go (pipelining).
        let mut out = Vec::new();
        let mut close = false;
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            requests.fetch_add(1, Ordering::Relaxed);
            match script(k) {
                Reply::Bytes { bytes, close: c } => {
                    out.extend_from_slice(&bytes);
                    close = c;
                }
                Reply::Close => close = true,
            }
            k += 1;
            if close {
                break;
            }
        }
        if write_in_pieces(&mut s, &out).is_err() {
            return;
        }
        written.fetch_add(out.len() as u64, Ordering::Relaxed);
        if close {
            return linger_close(s);
        }
    }
}

impl Server {
    fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let script: Arc<Script> = Arc::new(script);
        let (written, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (w, r) = (written.clone(), requests.clone());
        // Detached: it lives until the test process ends.
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                let (script, w, r) = (script.clone(), w.clone(), r.clone());
                std::thread::spawn(move || serve_conn(s, &*script, &w, &r));
            }
        });
        Server {
            addr,
            written,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/x", self.addr)
    }

    fn target(&self) -> Arc<Target> {
        Arc::new(Target::new(&self.url(), "GET", &[], true).unwrap())
    }
}

fn content_length(status: u16, body: usize) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status} X\r\nContent-Length: {body}\r\n\r\n").into_bytes();
    r.resize(r.len() + body, b'a' + (body % 26) as u8);
    r
}

/// A chunked body of `body` bytes in chunks of up to `chunk` bytes, with an extension on
/// the first chunk and a trailer.
fn chunked(body: usize, chunk: usize) -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let (mut left, mut first) = (body, true);
    while left > 0 {
        let n = left.min(chunk);
        let ext = if first { ";ext=1" } else { "" };
        r.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        r.resize(r.len() + n, b'z');
        r.extend_from_slice(b"\r\n");
        left -= n;
        first = false;
    }
    r.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
    r
}

/// The backends to test on: those this machine can run.
fn backends() -> Vec<BackendKind> {
    [BackendKind::IoUring, BackendKind::Fallback]
        .into_iter()
        .filter(|&k| coring_bench::contender::backend_usable("http test", k))
        .collect()
}

/// Runs `body` on a runtime of each backend, bounded.
fn on_each_backend(mut body: impl AsyncFnMut(BackendKind)) {
    for kind in backends() {
        let rt = coring_bench::contender::coring_runtime(kind).unwrap();
        rt.block_on(async {
            coring::time::timeout(Duration::from_secs(60), body(kind))
                .await
                .unwrap_or_else(|_| panic!("{kind}: the test took over 60 s"))
        });
    }
}

/// A connection whose every response counts as measured (warm-up ended at time 0).
fn conn(target: Arc<Target>) -> HttpConn<impl Clock + Copy> {
    let clock = WallClock::new(Instant::now(), coring::time::sleep_until);
    let window = Window {
        warm_end_ns: 0,
        end_ns: u64::MAX,
    };
    HttpConn::new(target, clock, window, Duration::from_secs(10)).keeping_responses()
}

/// Sends `n` requests `depth` at a time and waits for every answer.
async fn exchange<C: Clock>(c: &mut HttpConn<C>, n: usize, depth: usize) {
    let mut sent = 0;
    while sent < n {
        let k = depth.min(n - sent);
        c.send(k).await.unwrap();
        sent += k;
        while c.unanswered() > 0 {
            let r = c.recv(None).await.unwrap();
            assert!(r.count > 0);
        }
    }
}

#[test]
fn byte_counts_are_exact_and_non_2xx_counted_apart() {
    // Bodies from empty to 1 MiB; every third response a 404.
    const SIZES: [usize; 6] = [0, 1, 1000, 65535, 65536, 1 << 20];
    let reply = |k: usize| {
        let status = if k % 3 == 2 { 404 } else { 200 };
        content_length(status, SIZES[k % SIZES.len()])
    };
    let server = Server::start(move |k| Reply::Bytes {
        bytes: reply(k),
        close: false,
    });
    let mut total_written = 0;
    on_each_backend(async |kind| {
        let mut c = conn(server.target());
        exchange(&mut c, 24, 1).await;
        let counts = c.counts()[1];
        let want_body: u64 = (0..24).map(|k| SIZES[k % 6] as u64).sum();
        let want_wire: u64 = (0..24).map(|k| reply(k).len() as u64).sum();
        assert_eq!(counts.responses, 24, "{kind}");
        assert_eq!(counts.body_bytes, want_body, "{kind}");
        assert_eq!(counts.read_bytes, want_wire, "{kind}");
        assert_eq!(counts.non_2xx(), 8, "{kind}");
        assert_eq!(counts.by_class[3], 8, "{kind}");
        assert_eq!(counts.error_total(), 0, "{kind}");
        assert_eq!(counts.connects, 1, "{kind}");
        let sizes: Vec<u64> = c.responses().iter().map(|r| r.body_bytes).collect();
        assert_eq!(
            sizes,
            (0..24).map(|k| SIZES[k % 6] as u64).collect::<Vec<_>>()
        );
        total_written += want_wire;
    });
    assert_eq!(server.written.load(Ordering::Relaxed), total_written);
}

#[test]
fn pipelined_responses_come_back_in_order() {
    // The k-th response of a connection has a k-byte body, framed by Content-Length or
    // chunked in turn, so a response taken for another shows in the sizes.
    let server = Server::start(|k| Reply::Bytes {
        bytes: if k % 2 == 0 {
            content_length(200, k)
        } else {
            chunked(k, 1 + k % 13)
        },
        close: false,
    });
    on_each_backend(async |kind| {
        let mut c = conn(server.target());
        exchange(&mut c, 64, 8).await;
        let sizes: Vec<u64> = c.responses().iter().map(|r| r.body_bytes).collect();
        assert_eq!(sizes, (0..64).collect::<Vec<u64>>(), "{kind}");

        // The same through the load loop, closed loop at depth 4, for a short while: every
        // response in order, and each one measured or counted as warm-up.
        let mut c = conn(server.target());
        let clock = WallClock::new(Instant::now(), coring::time::sleep_until);
        let window = Window {
            warm_end_ns: 20_000_000,
            end_ns: 200_000_000,
        };
        let mut rec = Recorder::new(Arc::new(AtomicU64::new(0)));
        drive_pipelined(&clock, &mut c, Pacing::Closed, 4, window, &mut rec)
            .await
            .unwrap();
        let n = c.responses().len() as u64;
        assert!(n > 0, "{kind}: no responses in 200 ms");
        assert_eq!(rec.requests() + rec.warmup(), n, "{kind}");
        assert_eq!(c.unanswered(), 0, "{kind}");
        let sizes: Vec<u64> = c.responses().iter().map(|r| r.body_bytes).collect();
        assert_eq!(sizes, (0..n).collect::<Vec<u64>>(), "{kind}");
    });
}

#[test]
fn open_loop_reads_cut_short_by_the_schedule_lose_nothing() {
    // A slow server (3 ms per request) and one connection due to send every 1 ms with up to
    // 8 in flight: the connection often waits for a response when the next request comes
    // due, and its read is cancelled to send it. No response may be lost, duplicated or
    // taken out of order by that.
    let server = Server::start(|k| {
        std::thread::sleep(Duration::from_millis(3));
        Reply::Bytes {
            bytes: if k % 2 == 0 {
                content_length(200, k)
            } else {
                chunked(k, 1 + k % 5)
            },
            close: false,
        }
    });
    let mut answered = 0;
    on_each_backend(async |kind| {
        let mut c = conn(server.target());
        let clock = WallClock::new(Instant::now(), coring::time::sleep_until);
        let window = Window {
            warm_end_ns: 0,
            end_ns: 300_000_000,
        };
        let pacing = Pacing::Open(coring_bench::load::ConnSchedule::new(1000.0, 1, 0));
        let mut rec = Recorder::new(Arc::new(AtomicU64::new(0)));
        drive_pipelined(&clock, &mut c, pacing, 8, window, &mut rec)
            .await
            .unwrap();
        let n = c.responses().len() as u64;
        assert!(n > 0, "{kind}");
        assert_eq!(rec.requests(), n, "{kind}");
        assert_eq!(c.unanswered(), 0, "{kind}");
        let sizes: Vec<u64> = c.responses().iter().map(|r| r.body_bytes).collect();
        assert_eq!(sizes, (0..n).collect::<Vec<u64>>(), "{kind}");
        assert_eq!(c.counts()[1].error_total(), 0, "{kind}");
        assert_eq!(c.counts()[1].connects, 1, "{kind}");
        // The server is the bottleneck: the schedule was not kept, and the requests it
        // could not send are counted.
        assert!(rec.unsent() > 0, "{kind}");
        answered += n;
    });
    // Every request the server read was answered once, on one connection per backend.
    assert_eq!(server.requests.load(Ordering::Relaxed), answered);
}

#[test]
fn chunked_bodies_of_every_shape() {
    // Chunk sizes from 1 byte to larger than a read, and an empty body.
    const SHAPES: [(usize, usize); 6] = [
        (0, 1),
        (1, 1),
        (100, 1),
        (5000, 333),
        (200_000, 100_000),
        (1 << 20, 70_000),
    ];
    let server = Server::start(|k| {
        let (body, chunk) = SHAPES[k % SHAPES.len()];
        Reply::Bytes {
            bytes: chunked(body, chunk),
            close: false,
        }
    });
    on_each_backend(async |kind| {
        let mut c = conn(server.target());
        exchange(&mut c, 12, 3).await;
        let sizes: Vec<u64> = c.responses().iter().map(|r| r.body_bytes).collect();
        let want: Vec<u64> = (0..12).map(|k| SHAPES[k % 6].0 as u64).collect();
        assert_eq!(sizes, want, "{kind}");
        let wire: u64 = (0..12)
            .map(|k| chunked(SHAPES[k % 6].0, SHAPES[k % 6].1).len() as u64)
            .sum();
        assert_eq!(c.counts()[1].read_bytes, wire, "{kind}");
        assert_eq!(c.counts()[1].error_total(), 0, "{kind}");
    });
}

#[test]
fn a_server_that_closes_after_n_requests_with_connection_close() {
    // Like file_server --max-requests: the 5th response says `Connection: close`.
    let server = Server::start(|k| {
        let close = k == 4;
        let extra = if close { "Connection: close\r\n" } else { "" };
        Reply::Bytes {
            bytes: format!(
                "HTTP/1.1 200 OK\r\n{extra}Content-Length: {k}\r\n\r\n{}",
                "b".repeat(k)
            )
            .into_bytes(),
            close,
        }
    });
    on_each_backend(async |kind| {
        for depth in [1, 3] {
            let mut c = conn(server.target());
            exchange(&mut c, 20, depth).await;
            let counts = c.counts()[1];
            // Every request answered once, none counted as an error; 4 connections, each
            // closed by the server after its 5th response.
            assert_eq!(counts.responses, 20, "{kind} depth {depth}");
            assert_eq!(counts.error_total(), 0, "{kind} depth {depth}");
            assert_eq!(counts.server_closes, 4, "{kind} depth {depth}");
            assert_eq!(counts.connects, 4, "{kind} depth {depth}");
            let sizes: Vec<u64> = c.responses().iter().map(|r| r.body_bytes).collect();
            assert_eq!(sizes, (0..20).map(|k| k % 5).collect::<Vec<u64>>());
            // Pipelined requests sent after the closing one went again on the next
            // connection.
            if depth == 1 {
                assert_eq!(counts.resent, 0);
            } else {
                assert!(counts.resent > 0, "{kind}: {counts:?}");
            }
        }
    });
}

#[test]
fn a_server_that_closes_without_warning_gets_the_requests_again() {
    // Answers 3 requests per connection, then closes without `Connection: close`.
    let server = Server::start(|k| {
        if k < 3 {
            Reply::Bytes {
                bytes: content_length(200, 10),
                close: false,
            }
        } else {
            Reply::Close
        }
    });
    on_each_backend(async |kind| {
        for depth in [1, 2] {
            let mut c = conn(server.target());
            exchange(&mut c, 9, depth).await;
            let counts = c.counts()[1];
            assert_eq!(counts.responses, 9, "{kind} depth {depth}");
            assert_eq!(counts.body_bytes, 90);
            // Each close that found requests unanswered is an error; each is followed by a
            // new connection that sends them again.
            let closed = counts.errors[ErrorKind::Closed as usize];
            assert!(closed >= 2, "{kind} depth {depth}: {counts:?}");
            assert_eq!(counts.error_total(), closed, "{kind}: {counts:?}");
            assert_eq!(counts.connects, closed + 1, "{kind}: {counts:?}");
            assert!(counts.resent >= closed, "{kind}: {counts:?}");
        }
    });
}

#[test]
fn a_server_that_never_answers_makes_the_connection_give_up() {
    let server = Server::start(|_| Reply::Close);
    on_each_backend(async |kind| {
        let mut c = conn(server.target());
        c.send(1).await.unwrap();
        let e = c.recv(None).await.unwrap_err();
        assert!(e.to_string().contains("in a row"), "{kind}: {e}");
        let counts = c.counts()[1];
        assert_eq!(counts.responses, 0);
        assert_eq!(
            counts.error_total(),
            u64::from(MAX_FAILS),
            "{kind}: {counts:?}"
        );
    });
    // Nobody listening: connect errors, then the same.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    on_each_backend(async |kind| {
        let t = Arc::new(Target::new(&format!("http://{addr}/"), "GET", &[], true).unwrap());
        let mut c = conn(t);
        let e = c.send(1).await.unwrap_err();
        assert!(e.to_string().contains("connect"), "{kind}: {e}");
        assert_eq!(
            c.counts()[1].errors[ErrorKind::Connect as usize],
            u64::from(MAX_FAILS)
        );
    });
}

#[test]
fn a_whole_run_counts_what_it_measured() {
    // Open loop with pipelining, two threads, then closed loop without keep-alive: the
    // window's responses are exactly the latencies measured, and the 404s are counted.
    let server = Server::start(|k| Reply::Bytes {
        bytes: content_length(if k % 4 == 3 { 404 } else { 200 }, 100),
        close: false,
    });
    for kind in backends() {
        let mut cfg = HttpConfig::new(&server.url());
        cfg.conns = vec![4];
        cfg.rates = vec![Some(2000.0)];
        cfg.pipelines = vec![2];
        cfg.threads = 2;
        cfg.cpus = Cpus::Unpinned;
        cfg.secs = Duration::from_millis(300);
        cfg.warmup = Duration::from_millis(100);
        cfg.backend = kind;
        cfg.progress = false;
        let mut runs = http::run_all(&cfg).unwrap();
        let mut closed = cfg.clone();
        closed.rates = vec![None];
        closed.pipelines = vec![1];
        closed.keep_alive = false;
        closed.threads = 1;
        runs.extend(http::run_all(&closed).unwrap());
        for r in &runs {
            assert!(
                r.error.is_none(),
                "{kind} {}: {:?} {:?}",
                r.label,
                r.error,
                r.notes
            );
            let count = |name: &str| {
                r.counts
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| *v)
                    .unwrap()
            };
            assert!(r.ops > 0, "{kind} {}", r.label);
            assert_eq!(count("responses"), r.ops, "{kind} {}", r.label);
            assert_eq!(r.latency.as_ref().unwrap().len(), r.ops);
            assert_eq!(count("errors"), 0, "{kind} {}: {:?}", r.label, r.counts);
            assert_eq!(count("non_2xx"), count("4xx"));
            if r.open_loop {
                // Every 4th response of a kept-alive connection is a 404.
                assert!(count("4xx") > 0, "{kind}: {:?}", r.counts);
            }
            assert_eq!(count("body_bytes"), 100 * r.ops);
            assert_eq!(r.mode.name(), "http");
            assert_eq!(r.backend, coring_bench::cli::backend_name(kind));
        }
        assert!(runs[0].open_loop && runs[0].label.contains("pipe 2 2t"));
        // Without keep-alive, each request has a connection of its own.
        let connects = runs[1]
            .counts
            .iter()
            .find(|(k, _)| *k == "connects")
            .unwrap()
            .1;
        // (Those opened during the warm-up may have been answered in the window.)
        assert!(connects + 4 >= runs[1].ops, "{:?}", runs[1].counts);
    }
    assert!(server.requests.load(Ordering::Relaxed) > 0);
}
