use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use super::accept::Acceptor;
use super::socket::{listen, wraps_fd_owner};
use super::stream::{self, socket, socket_conversions, stream_io, with_std, Stream};
use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::op::net::RawAddr;
use crate::op::SharedFd;
use crate::platform::{self, c};

/// Resolves `addr` and tries `f` on each address in turn, returning the first success or
/// the last error.
pub(crate) async fn each_addr<A, T, F, Fut>(addr: A, mut f: F) -> io::Result<T>
where
    A: ToSocketAddrs,
    F: FnMut(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = io::Result<T>>,
{
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match f(a).await {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

fn domain(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => c::AF_INET,
        SocketAddr::V6(_) => c::AF_INET6,
    }
}

/// Binds and listens on a new socket; `reuseport` lets listeners share the port (see
/// [`platform::prepare_listener`]; refused on Windows).
fn listen_on(addr: SocketAddr, reuseport: bool) -> io::Result<SharedFd> {
    let fd = socket(domain(&addr), c::SOCK_STREAM)?;
    platform::prepare_listener(fd.raw(), reuseport)?;
    listen(&fd, &RawAddr::from_ip(&addr))?;
    Ok(fd)
}

/// A TCP socket listening for connections.
///
/// An accept whose future is dropped after it was submitted (a `select` that picked
/// another branch, a timeout) is retained, and the next [`accept`](Self::accept) returns its
/// connection: no connection the kernel accepted is closed unseen.
///
/// `!Send` and `!Sync`: it belongs to the runtime (the thread, the core) it is used on. To
/// move it to another thread, take the std socket out with `into_std`, send that, and
/// adopt it there with `from_std` (see [Moving a socket to another
/// core](crate::net#moving-a-socket-to-another-core)).
pub struct TcpListener {
    acceptor: Acceptor,
}

impl TcpListener {
    /// Binds to `addr` (the first resolved address that works) and listens, with a backlog
    /// of 1024 and SO_REUSEADDR.
    ///
    /// # Errors
    ///
    /// As `bind(2)`/`listen(2)`, e.g. `AddrInUse`.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        Self::bind_with(addr, false)
    }

    /// Like [`bind`](Self::bind), plus SO_REUSEPORT, so several listeners (one per core)
    /// can share the port and the kernel spreads connections among them (on FreeBSD with
    /// SO_REUSEPORT_LB; Darwin's SO_REUSEPORT shares the port but does not spread
    /// connections). Opt-in only: with it, any process of the same user may bind the same
    /// port.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind).
    pub fn bind_reuseport(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        Self::bind_with(addr, true)
    }

    fn bind_with(addr: impl ToSocketAddrs, reuseport: bool) -> io::Result<TcpListener> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match listen_on(a, reuseport) {
                Ok(fd) => return Ok(TcpListener::from_shared(fd)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any address",
            )
        }))
    }

    /// Waits for a connection.
    ///
    /// Cancel-safe: if the future is dropped after the kernel accepted a connection for
    /// it, a later `accept` returns that connection (several accepts may run at once).
    ///
    /// On io_uring the listener accepts with one multishot operation (one submission for
    /// any number of connections): connections it accepted wait in the listener until an
    /// `accept` takes them, and dropping the listener closes those not taken.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            let (fd, addr) = self.acceptor.accept().await?;
            let stream = TcpStream::from_shared(fd);
            let addr = match addr {
                Some(addr) => addr.to_ip()?,
                // A multishot accept does not report the peer: ask the connection. One
                // reset before that has no peer any more (ENOTCONN): it is gone, as it
                // would be right after an accept that returned it; take the next one.
                None => match stream.peer_addr() {
                    Ok(addr) => addr,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => continue,
                    Err(e) => return Err(e),
                },
            };
            return Ok((stream, addr));
        }
    }

    /// The connections this listener accepts, as a
    /// [`Stream`](futures_core::Stream) (see [`Incoming`](super::Incoming)).
    pub fn incoming(&self) -> super::Incoming<'_, (TcpStream, SocketAddr)> {
        super::Incoming::new(move || self.accept())
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.shared().raw(), |s: &std::net::TcpListener| {
            s.local_addr()
        })
    }
}

wraps_fd_owner!(TcpListener, acceptor);
socket_conversions!(TcpListener, std::net::TcpListener);

/// A TCP connection.
///
/// `!Send` and `!Sync`: it belongs to the runtime (the thread, the core) it is used on. To
/// move it to another thread, take the std socket out with `into_std`, send that, and
/// adopt it there with `from_std` (see [Moving a socket to another
/// core](crate::net#moving-a-socket-to-another-core)).
pub struct TcpStream {
    inner: Stream,
}

impl TcpStream {
    /// Connects to `addr`, trying each resolved address in turn.
    ///
    /// # Errors
    ///
    /// The last address's error, e.g. `ConnectionRefused`.
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |a| async move {
            let fd = stream::connect(domain(&a), c::SOCK_STREAM, RawAddr::from_ip(&a)).await?;
            Ok(TcpStream::from_shared(fd))
        })
        .await
    }

    stream_io!();

    /// Sets TCP_NODELAY (disables Nagle's algorithm).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        platform::set_nodelay(self.inner.fd.raw(), on)
    }

    /// Whether TCP_NODELAY is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        with_std(self.inner.fd.raw(), |s: &std::net::TcpStream| s.nodelay())
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.inner.fd.raw(), |s: &std::net::TcpStream| s.peer_addr())
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.inner.fd.raw(), |s: &std::net::TcpStream| {
            s.local_addr()
        })
    }
}

wraps_fd_owner!(TcpStream, inner);
socket_conversions!(TcpStream, std::net::TcpStream);
