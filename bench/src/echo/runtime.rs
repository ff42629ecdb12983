//! What the echo harness needs from an async runtime. The server and the load generator are
//! written once ([`super::server::serve`], [`super::client::load`]) on top of these traits;
//! each runtime supplies only its runtime, sockets, timer and spawn. coring's are in
//! [`super::coring`]; the comparison benches add tokio's and monoio's.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use coring::{BackendKind, Metrics};

use super::client::{ConnResult, Connection};
use super::server::{ServerStats, SERVER_BUF};
use crate::load::Clock;

/// A runtime the echo harness can run a server or a load generator on.
pub trait BenchRuntime {
    /// The runtime itself (`coring::Runtime`, a tokio `Runtime`, ...), built and run on one
    /// thread.
    type Rt;

    /// Builds the runtime on the calling thread.
    ///
    /// # Errors
    ///
    /// The runtime's setup error.
    fn build(&self) -> io::Result<Self::Rt>;

    /// Runs `f` to completion on `rt`.
    fn block_on<F: Future>(rt: &Self::Rt, f: F) -> F::Output;

    /// The runtime's clock, with time 0 at `start`.
    fn clock(start: Instant) -> impl Clock;

    /// What the tables call it, e.g. `tokio current_thread` or coring's backend description.
    fn describe(rt: &Self::Rt) -> String;

    /// The coring backend it runs on (`None` for other runtimes).
    fn backend(_rt: &Self::Rt) -> Option<BackendKind> {
        None
    }
}

/// A runtime the echo server can run on.
pub trait ServerRuntime: BenchRuntime {
    /// A listening TCP socket.
    type Listener;
    /// An accepted connection.
    type Stream;

    /// Binds a listener to `addr` (inside `rt`, where the runtime wants that).
    ///
    /// # Errors
    ///
    /// `bind(2)`/`listen(2)`'s error.
    fn bind(rt: &Self::Rt, addr: SocketAddr) -> io::Result<Self::Listener>;

    /// Where `listener` listens.
    ///
    /// # Errors
    ///
    /// `getsockname(2)`'s error.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Accepts the next connection.
    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<Self::Stream>>;

    /// Spawns, detached, a task that echoes on `stream` until the peer closes:
    /// [`ServerStats::echo`] (or [`ServerStats::echo_owned`]) on the runtime's spawn.
    fn spawn_echo(stream: Self::Stream, stats: Arc<ServerStats>);

    /// The runtime's counters now (coring only).
    fn metrics(_rt: &Self::Rt) -> Option<Metrics> {
        None
    }
}

/// [`ServerRuntime::local_addr`] and [`ServerRuntime::accept`] for a runtime whose listener
/// has `local_addr()` and an `async fn accept() -> io::Result<(Stream, SocketAddr)>`, as
/// coring's, tokio's and monoio's do. A macro, since what they share is the methods'
/// names and signatures, not a trait; use it inside the `impl ServerRuntime` block.
#[macro_export]
macro_rules! listener_methods {
    () => {
        fn local_addr(listener: &Self::Listener) -> ::std::io::Result<::std::net::SocketAddr> {
            listener.local_addr()
        }

        async fn accept(listener: &Self::Listener) -> ::std::io::Result<Self::Stream> {
            Ok(listener.accept().await?.0)
        }
    };
}

/// A runtime the load generator can run on.
pub trait ClientRuntime: BenchRuntime {
    /// Spawns the task of client connection `c`: [`Connection::task`] with the runtime's
    /// clock and socket. The task starts at once; the returned future waits for it.
    fn spawn_connection(c: Connection<'_>) -> impl Future<Output = ConnResult>;
}

/// A server connection, one turn of the echo loop at a time ([`ServerStats::echo`] runs
/// the loop).
pub trait EchoConn {
    /// Reads once and writes back what it read; returns the count, 0 once the peer has
    /// closed.
    fn echo_once(&mut self) -> impl Future<Output = io::Result<usize>>;
}

/// A connection whose reads and writes take the buffer by value and give it back with the
/// result, as coring's and monoio's do; [`Owned`] is its echo loop.
pub trait OwnedStream {
    /// Sets `TCP_NODELAY`, as every echo server does.
    fn set_nodelay(&self) -> io::Result<()>;
    /// Reads once into `buf`, from its start (`buf` arrives empty); gives back the count.
    fn read(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
}

/// The echo loop of an [`OwnedStream`]: reads into an owned [`SERVER_BUF`]-byte buffer
/// and writes back what it read, reusing the buffer.
#[derive(Debug)]
pub struct Owned<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S> Owned<S> {
    /// The echo loop of `stream`.
    pub fn new(stream: S) -> Owned<S> {
        Owned {
            stream,
            buf: Vec::with_capacity(SERVER_BUF),
        }
    }
}

impl<S: OwnedStream> EchoConn for Owned<S> {
    async fn echo_once(&mut self) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let (res, buf) = self.stream.read(buf).await;
        self.buf = buf;
        let n = res?;
        if n > 0 {
            let (res, buf) = self.stream.write_all(std::mem::take(&mut self.buf)).await;
            self.buf = buf;
            res?;
        }
        Ok(n)
    }
}

/// Runs `main` to completion while also polling `side` until it finishes; whatever `side`
/// has not done when `main` finishes is dropped with it. (A server's accept loop runs this
/// way beside its schedule, without a spawn, so that it needs no `Send` on any runtime.)
pub async fn alongside<M: Future, S: Future<Output = ()>>(main: M, side: S) -> M::Output {
    let (mut main, mut side) = (pin!(main), pin!(side));
    let mut side_done = false;
    poll_fn(|cx| {
        if !side_done {
            side_done = side.as_mut().poll(cx).is_ready();
        }
        main.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::task::{Context, Poll, Waker};

    /// Pending `n` times (waking itself), then ready; counts its polls.
    async fn pending_times(n: u32, polls: &Cell<u32>) {
        poll_fn(|cx| {
            polls.set(polls.get() + 1);
            if polls.get() > n {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await
    }

    #[test]
    fn the_side_future_runs_until_main_is_done() {
        let (main_polls, side_polls) = (Cell::new(0), Cell::new(0));
        let both = alongside(
            async {
                pending_times(3, &main_polls).await;
                7
            },
            pending_times(10, &side_polls),
        );
        let mut both = pin!(both);
        let mut cx = Context::from_waker(Waker::noop());
        let out = loop {
            if let Poll::Ready(v) = both.as_mut().poll(&mut cx) {
                break v;
            }
        };
        assert_eq!(out, 7);
        // Polled alongside main each time, and dropped unfinished with it.
        assert_eq!((main_polls.get(), side_polls.get()), (4, 4));

        let (main_polls, side_polls) = (Cell::new(0), Cell::new(0));
        let mut both = pin!(alongside(
            pending_times(3, &main_polls),
            pending_times(1, &side_polls)
        ));
        while both.as_mut().poll(&mut cx).is_pending() {}
        // Once finished, the side future is not polled again.
        assert_eq!((main_polls.get(), side_polls.get()), (4, 2));
    }
}
