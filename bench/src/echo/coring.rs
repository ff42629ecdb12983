//! coring under the echo harness: [`Coring`] runs the server and the load generator on one
//! backend.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring::buf::IoBuf;
use coring::net::{TcpListener, TcpStream};
use coring::time::timeout;
use coring::{BackendKind, Metrics, Runtime};

use super::client::{ConnResult, Connection, Message};
use super::runtime::{BenchRuntime, ClientRuntime, OwnedStream, ServerRuntime};
use super::server::ServerStats;
use crate::load::{Clock, RoundTrip, WallClock};

/// A round trip that takes longer than this ends its connection with an error.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that takes longer than this to open fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// coring on `backend` (`Auto` lets the runtime choose, and `CORING_BACKEND` overrides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coring {
    /// The backend to ask for.
    pub backend: BackendKind,
    /// As a server: reply with `send_zc` (zero-copy) instead of `write_all`.
    pub zc: bool,
    /// Time the runtime's parks ([`coring::Builder::time_parks`]).
    pub time_parks: bool,
}

thread_local! {
    /// Whether the echo connections this thread's server spawns reply with `send_zc`: set
    /// when the thread builds its runtime (`ServerRuntime::spawn_echo` has no `self`).
    static SERVER_ZC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl BenchRuntime for Coring {
    type Rt = Runtime;

    fn build(&self) -> io::Result<Runtime> {
        SERVER_ZC.with(|z| z.set(self.zc));
        coring::Builder::new()
            .backend(self.backend)
            .time_parks(self.time_parks)
            .build()
    }

    fn block_on<F: Future>(rt: &Runtime, f: F) -> F::Output {
        rt.block_on(f)
    }

    fn clock(start: Instant) -> impl Clock {
        WallClock::new(start, coring::time::sleep_until)
    }

    fn describe(rt: &Runtime) -> String {
        rt.backend_description()
    }

    fn backend(rt: &Runtime) -> Option<BackendKind> {
        Some(rt.backend())
    }
}

impl ServerRuntime for Coring {
    type Listener = TcpListener;
    type Stream = TcpStream;

    fn bind(_rt: &Runtime, addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr)
    }

    crate::listener_methods!();

    fn spawn_echo(stream: TcpStream, stats: Arc<ServerStats>) {
        // Detached: the loop reports through `stats`.
        if SERVER_ZC.with(|z| z.get()) {
            drop(coring::spawn(stats.echo_owned(ZeroCopy(stream))));
        } else {
            drop(coring::spawn(stats.echo_owned(stream)));
        }
    }

    fn metrics(rt: &Runtime) -> Option<Metrics> {
        Some(rt.metrics())
    }
}

impl OwnedStream for TcpStream {
    fn set_nodelay(&self) -> io::Result<()> {
        TcpStream::set_nodelay(self, true)
    }

    // coring's own futures, not wrapped in an `async fn` of the harness: the tokio server
    // awaits tokio's read and write futures directly too.
    fn read(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        // A read fills the Vec from its start and sets its length to what it read.
        TcpStream::read(self, buf)
    }

    fn write_all(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)> {
        TcpStream::write_all(self, buf)
    }
}

/// A server connection that replies with zero-copy sends (`--server-send zc`).
struct ZeroCopy(TcpStream);

impl OwnedStream for ZeroCopy {
    fn set_nodelay(&self) -> io::Result<()> {
        self.0.set_nodelay(true)
    }

    fn read(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        self.0.read(buf)
    }

    /// `write_all` with `send_zc`: each send resumes where the last (short) one stopped.
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let total = buf.len();
        let mut done = 0;
        let mut buf = buf;
        while done < total {
            let (res, slice) = self.0.send_zc(buf.slice(done..total)).await;
            buf = slice.into_inner();
            match res {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => done += n,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }
}

impl ClientRuntime for Coring {
    fn spawn_connection(c: Connection<'_>) -> impl Future<Output = ConnResult> {
        let connect = CoringConn::connect(c.addr, c.conn, c.load.size);
        let task = coring::spawn(c.task(Self::clock(c.tl.start), connect));
        async move { task.await.map_err(|e| format!("{e:?}")) }
    }
}

/// One client connection: writes a message, reads it back whole, checks it.
struct CoringConn {
    stream: TcpStream,
    msg: Message,
    reply: Vec<u8>,
}

impl CoringConn {
    async fn connect(addr: SocketAddr, conn: usize, size: usize) -> io::Result<CoringConn> {
        let connect = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok::<_, io::Error>(stream)
        };
        // An elapsed timeout converts to a `TimedOut` error.
        let stream = timeout(CONNECT_TIMEOUT, connect).await??;
        Ok(CoringConn {
            stream,
            msg: Message::new(conn, size),
            reply: Vec::with_capacity(size),
        })
    }

    async fn exchange(&mut self) -> io::Result<()> {
        self.msg.stamp();
        let request = std::mem::take(&mut self.msg.request);
        let size = request.len();
        let (res, request) = self.stream.write_all(request).await;
        self.msg.request = request;
        res?;
        let mut reply = std::mem::take(&mut self.reply);
        reply.clear();
        let (res, reply) = self.stream.read_exact(reply.slice(..size)).await;
        self.reply = reply.into_inner();
        res?;
        self.msg.check(&self.reply)
    }
}

impl RoundTrip for CoringConn {
    async fn round_trip(&mut self) -> io::Result<()> {
        match timeout(ROUND_TRIP_TIMEOUT, self.exchange()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no echo within {ROUND_TRIP_TIMEOUT:?}"),
            )),
        }
    }
}
