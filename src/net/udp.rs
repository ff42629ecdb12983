use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use super::retained::{AnyRecv, Outcome, RetainedOps};
use super::stream::{socket_conversions, with_std};
use super::tcp::each_addr;
use crate::buf::copy_out;
use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::driver::op::{Op, Operation};
use crate::driver::Completion;
use crate::op::net::{Connect, RawAddr, RecvFrom, SendTo};
use crate::op::rw::Send;
use crate::op::{checked_len, SharedFd};

/// A UDP socket.
///
/// # Receives are cancel-safe
///
/// A [`recv_from`](Self::recv_from) or [`recv`](Self::recv) whose future is dropped after
/// it submitted its receive (a `select` that picked another branch, a timeout) is retained by
/// the socket, not cancelled: the datagram the kernel receives for it is what a later
/// receive returns, before any newer one. Several dropped receives are retained at once, and
/// their datagrams are returned in the order the kernel received them. The socket cancels
/// the receives it keeps only when it is dropped (or converted with `into_std`, or
/// unregistered, keeping the datagrams they got).
///
/// The order holds for one receiving call at a time (a loop, with `select` or timeouts
/// around each receive). Receives running at once on one socket (from several tasks, or
/// several futures polled together) take datagrams in an order the kernel chooses: a call
/// whose own receive got a datagram returns it even if a receive dropped meanwhile by
/// another call had got an earlier one, which then goes to the next call. Nothing is
/// lost either way.
///
/// A retained receive holds the dropped call's buffer until a later receive copies its
/// datagram out (or the socket is dropped): the datagram was truncated to that buffer, and
/// is truncated again to the later call's buffer if that one is smaller.
///
/// `!Send` and `!Sync`: it belongs to the runtime (the thread, the core) it is used on. To
/// move it to another thread, take the std socket out with `into_std`, send that, and
/// adopt it there with `from_std` (see [Moving a socket to another
/// core](crate::net#moving-a-socket-to-another-core)).
pub struct UdpSocket {
    fd: SharedFd,
    /// Receives whose futures were dropped. Always `recvmsg`s, so that each knows its
    /// sender whichever call reads it back.
    retained: RetainedOps<Box<dyn AnyRecv>>,
}

/// A retained receive's datagram, copied into `buf` as a receive into `buf` would have put it:
/// its first `buf.bytes_total()` bytes, the length reported being what was copied (as a
/// direct receive reports the truncated length, on every backend). A retained receive's error
/// is this call's.
fn read_back<B: IoBufMut>(
    held: &dyn AnyRecv,
    c: Completion,
    buf: &mut B,
) -> io::Result<(usize, SocketAddr)> {
    let n = checked_len(c.result()?, held.capacity())?;
    let from = held
        .sender()
        .expect("coring: a UDP socket keeps only receives that record the sender")?;
    Ok((copy_out(held.received(n), buf, 0), from))
}

/// The first address `addr` resolves to (`send_to`'s destination).
fn first_addr(addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to send to"))
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
        let addr = match first_addr(addr) {
            Ok(a) => a,
            Err(e) => return (Err(e), buf),
        };
        Op::new(SendTo::new(&self.fd, buf, &addr)).await
    }

    /// Sends a datagram to `addr` (the first resolved) without copying the buffer
    /// (io_uring's IORING_OP_SENDMSG_ZC): completes, handing the buffer back, only once the
    /// kernel's notification says it no longer references it (a future dropped meanwhile
    /// leaves the buffer to the runtime, which frees it after the notification). Where the
    /// backend or kernel has no zero-copy send (the fallback and IOCP backends, Linux before
    /// 6.1), a plain [`send_to`](Self::send_to). Worth it only for large datagrams.
    pub async fn send_to_zc<B: IoBuf>(
        &self,
        buf: B,
        addr: impl ToSocketAddrs,
    ) -> BufResult<usize, B> {
        let addr = match first_addr(addr) {
            Ok(a) => a,
            Err(e) => return (Err(e), buf),
        };
        Op::new(SendTo::zero_copy(&self.fd, buf, &addr)).await
    }

    /// Receives one datagram into the start of the buffer; returns its length and sender.
    /// A datagram larger than the buffer is truncated to it, and the length returned is
    /// the truncated one (what the buffer holds).
    ///
    /// Cancel-safe: if the future is dropped after it submitted its receive, the socket
    /// keeps the receive, and the datagram the kernel receives for it is returned by a
    /// later `recv_from` or [`recv`](Self::recv), in the order the datagrams arrived,
    /// before any datagram received after it (see [`UdpSocket`]). Such a datagram was
    /// truncated to the dropped call's buffer, and is truncated again to this call's.
    /// A retained receive that failed (say `ConnectionRefused` after an ICMP error) passes its
    /// error to the call that reads it back.
    ///
    /// # Errors
    ///
    /// As `recvmsg(2)`; `InvalidInput` for a buffer with no capacity (before anything is
    /// received: the datagram would be lost to truncation); `InvalidInput` while a retained receive runs on another runtime (the
    /// socket was used there) that has not finished it: it may hold a datagram, which
    /// must be received there (or once that runtime has cancelled it, say when dropped).
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> BufResult<(usize, SocketAddr), B> {
        if let Err(e) = crate::buf::check_room(buf.bytes_total(), "recv") {
            return (Err(e), buf);
        }
        // `recvmsg` also for `recv`: a retained receive knows its sender whoever reads it.
        let own = Op::new(RecvFrom::new(&self.fd, buf));
        match self
            .retained
            .call(own, |r| Box::new(r) as Box<dyn AnyRecv>)
            .await
        {
            Outcome::Own(r, c) => r.complete(c),
            Outcome::Retained(held, c, r) => {
                let mut buf = r.into_buf();
                let res = read_back(&*held, c, &mut buf);
                (res, buf)
            }
            Outcome::Elsewhere(e, r) => (Err(e), r.into_buf()),
        }
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
        Op::new(Send::new(&self.fd, buf, false)).await
    }

    /// Sends a datagram to the connected address without copying the buffer (io_uring's
    /// IORING_OP_SEND_ZC), as [`send_to_zc`](Self::send_to_zc) does to an address; a plain
    /// [`send`](Self::send) where there is no zero-copy send (Linux before 6.0, other
    /// backends).
    pub async fn send_zc<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        Op::new(Send::zero_copy(&self.fd, buf, false)).await
    }

    /// Receives a datagram from the connected address: as [`recv_from`](Self::recv_from)
    /// (the same cancel-safety, the same truncation), without the sender's address. A
    /// retained receive dropped from either method is read back by either.
    ///
    /// # Errors
    ///
    /// As [`recv_from`](Self::recv_from).
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        let (res, buf) = self.recv_from(buf).await;
        (res.map(|(n, _)| n), buf)
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
        UdpSocket {
            fd,
            retained: RetainedOps::new(
                "this socket's receive runs on another runtime, which may receive a \
                 datagram for it: receive it there",
            ),
        }
    }
    /// Cancels retained receives (see [`RetainedOps::quiesce`]); datagrams they got stay.
    fn quiesce(&self) -> usize {
        self.retained.quiesce()
    }
    fn shared(&self) -> &SharedFd {
        &self.fd
    }
    /// Gives `self` back, state intact, while a retained receive holds a datagram (or an
    /// error) not returned yet (receive it first) or could not be cancelled at once (it is
    /// being cancelled: try again once the runtime has run).
    fn into_shared(self) -> Result<SharedFd, Self> {
        if !self.retained.settle() {
            return Err(self);
        }
        Ok(self.fd)
    }
}

socket_conversions!(UdpSocket, std::net::UdpSocket);
