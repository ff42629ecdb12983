use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use super::stream::{socket_conversions, with_std};
use super::tcp::each_addr;
use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::driver::op::Op;
use crate::op::net::{Connect, RawAddr, RecvFrom, SendTo};
use crate::op::rw::{Recv, Send};
use crate::op::SharedFd;

/// A UDP socket.
pub struct UdpSocket {
    fd: SharedFd,
}

impl UdpSocket {
    /// Binds a socket to `addr`.
    ///
    /// # Errors
    ///
    /// As `bind(2)`.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        let std = std::net::UdpSocket::bind(addr)?;
        UdpSocket::from_std(std)
    }

    /// Sends a datagram of the buffer's initialised bytes to `addr` (the first resolved).
    pub async fn send_to<B: IoBuf>(&self, buf: B, addr: impl ToSocketAddrs) -> BufResult<usize, B> {
        let addr = match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) => {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "no address to send to");
                return (Err(e), buf);
            }
            Err(e) => return (Err(e), buf),
        };
        Op::new(SendTo::new(&self.fd, buf, &addr)).await
    }

    /// Receives one datagram into the start of the buffer; returns its length and sender.
    /// A datagram larger than the buffer is truncated.
    ///
    /// Not cancel-safe, unlike stream reads: if the future is dropped after the kernel
    /// received a datagram for it (a `select` that picked another branch), that datagram
    /// is dropped with the receive. Keep one receive running (for example in its own task)
    /// rather than racing it against other futures.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> BufResult<(usize, SocketAddr), B> {
        Op::new(RecvFrom::new(&self.fd, buf)).await
    }

    /// Sets the default destination for [`send`](Self::send) and the only source
    /// [`recv`](Self::recv) accepts.
    pub async fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        each_addr(addr, |a| {
            Op::new(Connect::new(&self.fd, RawAddr::from_ip(&a)))
        })
        .await
    }

    /// Sends a datagram to the connected address.
    pub async fn send<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        Op::new(Send::new(&self.fd, buf)).await
    }

    /// Receives a datagram from the connected address. Not cancel-safe: as
    /// [`recv_from`](Self::recv_from).
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        Op::new(Recv::new(&self.fd, buf, false)).await
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::net::UdpSocket| s.local_addr())
    }

    /// The connected address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::net::UdpSocket| s.peer_addr())
    }

    fn from_shared(fd: SharedFd) -> UdpSocket {
        UdpSocket { fd }
    }
    /// Nothing holds the descriptor between operations.
    fn quiesce(&self) {}
    fn shared(&self) -> &SharedFd {
        &self.fd
    }
    fn into_shared(self) -> Result<SharedFd, Self> {
        Ok(self.fd)
    }
}

socket_conversions!(UdpSocket, std::net::UdpSocket);
