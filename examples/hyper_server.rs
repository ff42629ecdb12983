//! An HTTP/1.1 server: hyper 1.x on coring, with hyper's runtime traits (`hyper::rt`)
//! backed by coring: IO through [`coring::compat::Compat`] (tokio's IO traits) wrapped in
//! `hyper_util::rt::TokioIo`, a timer backed by `coring::time`, and connections spawned
//! on the local executor. Every connection is one `!Send` task on the runtime's thread.
//!
//! Routes:
//!
//! - `GET /`: a fixed short body (what `bench/scripts/hyper_vs_tokio.sh` measures);
//! - `POST /echo`: the request body, streamed back as it arrives;
//! - `GET /stream?n=N`: N chunks (default 5), one per millisecond, chunked encoding;
//! - `GET /files/NAME`: the file `NAME` under `--root`, read through coring
//!   (`coring::fs::File::read_at`) and streamed in 64 KiB chunks.
//!
//! Keep-alive is hyper's default for HTTP/1.1. The server prints `listening on
//! http://ADDR` on stdout once bound (so `--addr 127.0.0.1:0` works) and its backend on
//! stderr; `CORING_BACKEND=io_uring|fallback` picks the backend.
//!
//! ```text
//! cargo run --release --example hyper_server -- --addr 127.0.0.1:8080 --root /tmp
//! curl -v http://127.0.0.1:8080/ http://127.0.0.1:8080/stream?n=3
//! curl --data-binary @/etc/hostname http://127.0.0.1:8080/echo
//! ```
//!
//! # Why `TokioIo` over `Compat` rather than `hyper::rt::Read`/`Write` on coring
//!
//! `TokioIo` is a field-for-field wrapper: its `hyper::rt::Read` hands hyper's buffer
//! cursor to tokio's `ReadBuf` and back, with no copy and no allocation, so implementing
//! hyper's traits directly on the compat state machine would save nothing measurable, and
//! would make the coring crate depend on hyper. The one copy per byte is the compat
//! adapter's (a completion needs a buffer it owns; see `coring::compat`).

#[path = "hyper_common/service.rs"]
mod service;

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write as _};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use coring::compat::Compat;
use coring::fs::File;
use coring::net::TcpListener;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use service::Body;

const USAGE: &str = "usage: hyper_server [--addr ADDR] [--root DIR]
  --addr ADDR   listen address (default 127.0.0.1:8080; port 0 picks one)
  --root DIR    directory served under /files/ (default .)
CORING_BACKEND=io_uring|fallback|auto picks the backend.";

/// The chunk size of a file response.
const FILE_CHUNK: usize = 64 * 1024;

fn main() -> ExitCode {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let mut root = PathBuf::from(".");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let parsed = match (arg.as_str(), value) {
            ("--addr", Some(v)) => v.parse().map(|a| addr = a).map_err(|e| format!("{e}")),
            ("--root", Some(v)) => {
                root = PathBuf::from(v);
                Ok(())
            }
            _ => Err(format!("unexpected argument {arg}")),
        };
        if let Err(e) = parsed {
            eprintln!("hyper_server: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let rt = match coring::Builder::new().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyper_server: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("hyper_server: backend {}", rt.backend_description());
    match rt.block_on(serve(addr, Rc::new(root))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper_server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts connections for ever, one task each.
async fn serve(addr: SocketAddr, root: Rc<PathBuf>) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    {
        let mut out = io::stdout().lock();
        // The tests and the benchmark script read this line to learn the port.
        writeln!(out, "listening on http://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    let exec = CoringExecutor;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of descriptors and the like: keep serving the connections there are.
            Err(e) => {
                eprintln!("hyper_server: accept: {e}");
                coring::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // A connection the peer already reset fails this; hyper will find out, and the
        // server keeps serving the others.
        let _ = stream.set_nodelay(true);
        let root = root.clone();
        hyper::rt::Executor::execute(&exec, async move {
            let io = TokioIo::new(Compat::new(stream));
            let svc = service_fn(move |req| route(req, root.clone()));
            let conn = http1::Builder::new()
                .timer(CoringTimer)
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(io, svc);
            if let Err(e) = conn.await {
                eprintln!("hyper_server: {peer}: {e}");
            }
        });
    }
}

async fn route(req: Request<Incoming>, root: Rc<PathBuf>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let resp = match (req.method(), path) {
        (&Method::GET, "/") => service::hello(),
        (&Method::POST, "/echo") => {
            // Streamed back frame by frame as it arrives (no collecting).
            Response::new(service::boxed(req.into_body().map_err(io::Error::other)))
        }
        (&Method::GET, "/stream") => {
            let n = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(5);
            Response::new(chunks(n))
        }
        (&Method::GET, p) if p.starts_with("/files/") => {
            let name = &p["/files/".len()..];
            file_response(&root, name).await
        }
        (_, "/" | "/echo" | "/stream") => {
            service::status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => service::status(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

/// `n` chunks, one per millisecond (a body that is produced while it is sent).
fn chunks(n: u32) -> Body {
    let stream = futures::stream::unfold(0, move |i| async move {
        if i == n {
            return None;
        }
        coring::time::sleep(Duration::from_millis(1)).await;
        let frame = Frame::data(Bytes::from(format!("chunk {i}\n")));
        Some((Ok::<_, io::Error>(frame), i + 1))
    });
    service::boxed(StreamBody::new(stream))
}

/// A file under `root`, streamed: one `read_at` per chunk, each sent before the next is
/// read. Names are single path components (no `/`, no `..`): nothing outside `root`.
async fn file_response(root: &Path, name: &str) -> Response<Body> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return service::status(StatusCode::FORBIDDEN, "forbidden\n");
    }
    let file = match File::open(root.join(name)).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return service::status(StatusCode::NOT_FOUND, "not found\n")
        }
        Err(_) => return service::status(StatusCode::FORBIDDEN, "forbidden\n"),
    };
    let len = match file.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        _ => return service::status(StatusCode::FORBIDDEN, "forbidden\n"),
    };
    let file = Rc::new(file);
    let stream = futures::stream::unfold(0u64, move |pos| {
        let file = file.clone();
        async move {
            if pos >= len {
                return None;
            }
            let (res, buf) = file.read_at(Vec::with_capacity(FILE_CHUNK), pos).await;
            match res {
                Ok(0) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while being sent",
                    )),
                    len,
                )),
                Ok(n) => {
                    let mut buf = buf;
                    buf.truncate(n);
                    Some((Ok(Frame::data(Bytes::from(buf))), pos + n as u64))
                }
                Err(e) => Some((Err(e), len)),
            }
        }
    });
    let mut resp = Response::new(service::boxed(StreamBody::new(stream.boxed_local())));
    resp.headers_mut()
        .insert(hyper::header::CONTENT_LENGTH, len.into());
    resp
}

/// hyper's executor trait on coring: spawns on the current runtime's thread (futures need
/// not be `Send`). hyper's HTTP/1 server needs no executor; HTTP/2 and the client do.
#[derive(Clone, Copy, Debug)]
struct CoringExecutor;

impl<F: Future + 'static> hyper::rt::Executor<F> for CoringExecutor {
    fn execute(&self, fut: F) {
        drop(coring::spawn(fut)); // detached
    }
}

/// hyper's timer on `coring::time`.
#[derive(Clone, Copy, Debug)]
struct CoringTimer;

impl hyper::rt::Timer for CoringTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoringSleep::new(coring::time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoringSleep::new(coring::time::sleep_until(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoringSleep>() {
            Some(s) => s.get_mut().sleep_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A `coring::time::Sleep` with the `Send + Sync` that `hyper::rt::Sleep` demands. A
/// coring timer belongs to its runtime's thread, and hyper's HTTP/1 connection never
/// leaves it here (it is a `!Send` task), so the bounds are only formal; they are upheld
/// by checking the thread: polling elsewhere panics, and dropping elsewhere leaks the
/// timer entry rather than touch another thread's timers.
struct CoringSleep {
    sleep: ManuallyDrop<coring::time::Sleep>,
    owner: ThreadId,
}

impl CoringSleep {
    fn new(sleep: coring::time::Sleep) -> CoringSleep {
        CoringSleep {
            sleep: ManuallyDrop::new(sleep),
            owner: thread_mark(),
        }
    }

    fn sleep_mut(&mut self) -> &mut coring::time::Sleep {
        assert_eq!(
            thread_mark(),
            self.owner,
            "a coring timer was used on another thread than its runtime's"
        );
        &mut self.sleep
    }
}

/// This thread's identity (never reused by another thread), cached: without the cache,
/// `std::thread::current()` clones and drops an `Arc` each time.
fn thread_mark() -> ThreadId {
    thread_local!(static ID: ThreadId = std::thread::current().id());
    ID.with(|id| *id)
}

// SAFETY: the inner `Sleep` (an `Rc` to its thread's timers) is only touched on the
// thread that made it: `sleep_mut` asserts the thread before every use, and `drop`
// leaks it on any other thread. Moving the bytes to another thread touches nothing.
unsafe impl Send for CoringSleep {}
// SAFETY: a shared `&CoringSleep` gives access to nothing (every use takes `&mut`).
unsafe impl Sync for CoringSleep {}

impl Future for CoringSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(self.get_mut().sleep_mut()).poll(cx)
    }
}

impl hyper::rt::Sleep for CoringSleep {}

impl Drop for CoringSleep {
    fn drop(&mut self) {
        if thread_mark() == self.owner {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.sleep) };
        }
    }
}
