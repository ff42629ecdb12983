use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr;
use std::path::Path;

use super::accept::Acceptor;
use super::socket::{listen, wraps_fd_owner};
use super::stream::{self, socket, socket_conversions, stream_io, with_std, Stream};
use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::op::net::RawAddr;
use crate::op::SharedFd;
use crate::platform;

/// A Unix domain socket listening for connections.
///
/// As with [`TcpListener`](crate::net::TcpListener), an accept whose future is dropped
/// after it was submitted is retained, and the next [`accept`](Self::accept) returns its
/// connection.
pub struct UnixListener {
    acceptor: Acceptor,
}

impl UnixListener {
    /// Binds to a filesystem path and listens (backlog 1024).
    ///
    /// # Errors
    ///
    /// As `bind(2)`: `AddrInUse` if the path exists; `InvalidInput` for a path that is too
    /// long or contains a NUL byte.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let raw = RawAddr::from_unix_path(path.as_ref().as_os_str().as_bytes())?;
        let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
        listen(&fd, &raw)?;
        Ok(UnixListener::from_shared(fd))
    }

    /// Waits for a connection.
    ///
    /// Cancel-safe: if the future is dropped after the kernel accepted a connection for
    /// it, a later `accept` returns that connection (several accepts may run at once).
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (fd, _) = self.acceptor.accept().await?;
        let stream = UnixStream::from_shared(fd);
        let addr = stream.peer_addr()?;
        Ok((stream, addr))
    }

    /// The connections this listener accepts, as a
    /// [`Stream`](futures_core::Stream) (see [`Incoming`](super::Incoming)).
    pub fn incoming(&self) -> super::Incoming<'_, (UnixStream, SocketAddr)> {
        super::Incoming::new(move || self.accept())
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(
            self.shared().raw(),
            |s: &std::os::unix::net::UnixListener| s.local_addr(),
        )
    }
}

wraps_fd_owner!(UnixListener, acceptor);
socket_conversions!(UnixListener, std::os::unix::net::UnixListener);

/// The longest pause between a [`UnixStream::connect`]'s attempts while the listener's
/// accept queue is full: how late, at most, a connect notices room made in it.
const UNIX_CONNECT_MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// A connected Unix domain stream socket.
///
/// `!Send` and `!Sync`: it belongs to the runtime (the thread, the core) it is used on. To
/// move it to another thread, take the std socket out with `into_std`, send that, and
/// adopt it there with `from_std` (see [Moving a socket to another
/// core](crate::net#moving-a-socket-to-another-core)).
pub struct UnixStream {
    inner: Stream,
}

impl UnixStream {
    /// Connects to the socket at `path`.
    ///
    /// Like a blocking `connect(2)`, it waits while the listener's accept queue is full,
    /// until the listener accepts (or closes: `ConnectionRefused`). The kernel reports no
    /// readiness for room in another socket's queue, so the wait is a retry: after 1 ms,
    /// then pauses doubling up to 50 ms. Bound it with [`crate::time::timeout`] if the
    /// listener may never accept.
    ///
    /// # Errors
    ///
    /// As `connect(2)`: `NotFound`, `ConnectionRefused`; `InvalidInput` for a bad path.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let path = path.as_ref().as_os_str().as_bytes();
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let raw = RawAddr::from_unix_path(path)?;
            match stream::connect(libc::AF_UNIX, libc::SOCK_STREAM, raw).await {
                Ok(fd) => return Ok(UnixStream::from_shared(fd)),
                // The accept queue is full (EAGAIN of a non-blocking connect on every
                // backend): wait for the listener to make room.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    crate::time::sleep(pause).await;
                    pause = (pause * 2).min(UNIX_CONNECT_MAX_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A connected pair of sockets.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let fds = platform::socketpair(libc::AF_UNIX, libc::SOCK_STREAM)?;
        Ok((
            UnixStream::from_shared(SharedFd::new(fds[0])),
            UnixStream::from_shared(SharedFd::new(fds[1])),
        ))
    }

    stream_io!();

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.inner.fd.raw(), |s: &std::os::unix::net::UnixStream| {
            s.peer_addr()
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.inner.fd.raw(), |s: &std::os::unix::net::UnixStream| {
            s.local_addr()
        })
    }
}

wraps_fd_owner!(UnixStream, inner);
socket_conversions!(UnixStream, std::os::unix::net::UnixStream);
