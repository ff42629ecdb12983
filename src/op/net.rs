//! Socket operations: accept, connect, sendmsg/recvmsg (for addressed datagrams), shutdown.

use crate::platform::c;
use std::io;
use std::mem;
use std::net::SocketAddr;

use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::driver::op::{IntoOrphan, Operation};
use crate::driver::{Completion, OpDesc, Orphan};
use crate::op::{checked_len, SharedFd};
use crate::platform;

/// A socket address in kernel form, in heap memory the kernel may read or fill.
pub(crate) struct RawAddr {
    pub(crate) storage: c::sockaddr_storage,
    pub(crate) len: c::socklen_t,
}

impl RawAddr {
    /// Room for any address, for the kernel to fill.
    pub(crate) fn empty() -> RawAddr {
        RawAddr {
            // SAFETY: sockaddr_storage is plain integers; all-zeroes is a valid value.
            storage: unsafe { mem::zeroed() },
            len: mem::size_of::<c::sockaddr_storage>() as c::socklen_t,
        }
    }

    /// The kernel form of an IP socket address.
    pub(crate) fn from_ip(addr: &SocketAddr) -> RawAddr {
        let mut raw = RawAddr::empty();
        raw.len = platform::ip_to_raw(addr, &mut raw.storage);
        raw
    }

    /// The kernel form of a Unix socket path (abstract names start with a NUL byte).
    #[cfg(unix)]
    pub(crate) fn from_unix_path(path: &[u8]) -> io::Result<RawAddr> {
        let mut raw = RawAddr::empty();
        // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_un.
        let sun = unsafe {
            &mut *(&mut raw.storage as *mut c::sockaddr_storage).cast::<c::sockaddr_un>()
        };
        if path.len() >= sun.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "unix socket path is {} bytes; the limit is {}",
                    path.len(),
                    sun.sun_path.len() - 1
                ),
            ));
        }
        if path.first() != Some(&0) && path.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unix socket path contains an interior NUL byte",
            ));
        }
        sun.sun_family = c::AF_UNIX as c::sa_family_t;
        for (dst, src) in sun.sun_path.iter_mut().zip(path) {
            *dst = *src as c::c_char;
        }
        let base = mem::offset_of!(c::sockaddr_un, sun_path);
        // Pathnames include their terminating NUL; abstract names are counted exactly.
        let extra = usize::from(path.first() != Some(&0));
        raw.len = (base + path.len() + extra) as c::socklen_t;
        platform::set_sockaddr_len(&mut raw.storage, raw.len);
        Ok(raw)
    }

    pub(crate) fn as_ptr(&self) -> *const c::sockaddr {
        (&self.storage as *const c::sockaddr_storage).cast()
    }

    /// Reads an IP socket address back.
    pub(crate) fn to_ip(&self) -> io::Result<SocketAddr> {
        platform::ip_from_raw(&self.storage)
    }
}

/// `accept4` (or what the platform has instead); yields the new descriptor, close-on-exec
/// and non-blocking, and the peer's address.
pub(crate) struct Accept {
    fd: SharedFd,
    addr: Box<RawAddr>,
}

impl Accept {
    pub(crate) fn new(fd: &SharedFd) -> Accept {
        Accept {
            fd: fd.clone(),
            addr: Box::new(RawAddr::empty()),
        }
    }
}

impl Operation for Accept {
    type Output = io::Result<(SharedFd, Box<RawAddr>)>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Accept {
            fd: self.fd.fd_ref(),
            addr: (&mut self.addr.storage as *mut c::sockaddr_storage).cast(),
            addrlen: &mut self.addr.len,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        // An orphaned accept drops the SharedFd at once, closing the connection.
        c.result().map(|fd| (SharedFd::new(fd as i32), self.addr))
    }
}

/// `connect`.
pub(crate) struct Connect {
    fd: SharedFd,
    addr: Box<RawAddr>,
}

impl Connect {
    pub(crate) fn new(fd: &SharedFd, addr: RawAddr) -> Connect {
        Connect {
            fd: fd.clone(),
            addr: Box::new(addr),
        }
    }
}

impl Operation for Connect {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Connect {
            fd: self.fd.fd_ref(),
            addr: self.addr.as_ptr(),
            addrlen: self.addr.len,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}

/// The heap block a sendmsg/recvmsg points the kernel at: header, one iovec, address.
struct Msg {
    hdr: c::msghdr,
    iov: c::iovec,
    addr: RawAddr,
}

impl Msg {
    fn new(ptr: *mut u8, len: usize, addr: RawAddr) -> Box<Msg> {
        // SAFETY: msghdr is plain integers and pointers; all-zeroes (null pointers) is valid.
        let hdr: c::msghdr = unsafe { mem::zeroed() };
        let mut msg = Box::new(Msg {
            hdr,
            iov: c::iovec {
                iov_base: ptr.cast(),
                iov_len: len,
            },
            addr,
        });
        // The header points into the same heap block, which never moves.
        msg.hdr.msg_iov = &mut msg.iov;
        msg.hdr.msg_iovlen = 1;
        msg.hdr.msg_name = (&mut msg.addr.storage as *mut c::sockaddr_storage).cast();
        msg.hdr.msg_namelen = msg.addr.len;
        msg
    }
}

/// `sendmsg` of a buffer to an address; or its zero-copy form (see
/// `OpDesc::Send::zerocopy`).
pub(crate) struct SendTo<B> {
    fd: SharedFd,
    buf: B,
    msg: Box<Msg>,
}

impl<B: IoBuf> SendTo<B> {
    pub(crate) fn new(fd: &SharedFd, buf: B, addr: &SocketAddr) -> SendTo<B> {
        let msg = Msg::new(
            buf.stable_ptr().cast_mut(),
            buf.bytes_init(),
            RawAddr::from_ip(addr),
        );
        SendTo {
            fd: fd.clone(),
            buf,
            msg,
        }
    }

    /// The zero-copy form: completes, giving the buffer back, once the kernel no longer
    /// references it.
    pub(crate) fn zero_copy(
        fd: &SharedFd,
        buf: B,
        addr: &SocketAddr,
    ) -> crate::op::rw::ZeroCopy<SendTo<B>> {
        crate::op::rw::ZeroCopy::new(SendTo::new(fd, buf, addr), None)
    }
}

impl<B: IoBuf> Operation for SendTo<B> {
    type Output = BufResult<usize, B>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::SendMsg {
            fd: self.fd.fd_ref(),
            msg: &self.msg.hdr,
            flags: platform::SEND_FLAGS as u32,
            stream: false,
            zerocopy: false,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        crate::op::rw::written(c, self.buf)
    }
}

/// The heap block a vectored stream `recvmsg`/`sendmsg` points the kernel at: the header
/// (no address) and its iovec array.
struct VecMsg {
    hdr: c::msghdr,
    iov: Vec<c::iovec>,
}

impl VecMsg {
    fn new(iov: Vec<c::iovec>) -> Box<VecMsg> {
        // SAFETY: msghdr is plain integers and pointers; all-zeroes (null pointers) is valid.
        let hdr: c::msghdr = unsafe { mem::zeroed() };
        let mut msg = Box::new(VecMsg { hdr, iov });
        // The header points at the vector's heap array, which never moves (the vector is
        // not touched again).
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        // Linux's IOV_MAX is 1024: a longer list fails with EINVAL, never truncates.
        msg.hdr.msg_iovlen = msg.iov.len().min(i32::MAX as usize) as _;
        msg
    }
}

/// Vectored `recvmsg` on a stream into several owned buffers, filled in order.
pub(crate) struct RecvVectored<B> {
    fd: SharedFd,
    bufs: Vec<B>,
    msg: Box<VecMsg>,
}

impl<B: IoBufMut> RecvVectored<B> {
    pub(crate) fn new(fd: &SharedFd, mut bufs: Vec<B>) -> Self {
        let iov = bufs
            .iter_mut()
            .map(|b| c::iovec {
                iov_base: b.stable_mut_ptr().cast(),
                iov_len: b.bytes_total() as _,
            })
            .collect();
        RecvVectored {
            fd: fd.clone(),
            bufs,
            msg: VecMsg::new(iov),
        }
    }
}

impl<B: IoBufMut> Operation for RecvVectored<B> {
    type Output = BufResult<usize, Vec<B>>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::RecvMsg {
            fd: self.fd.fd_ref(),
            msg: &mut self.msg.hdr,
            flags: 0,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        super::rw::filled_in_order(c, self.bufs)
    }
}

/// Vectored `sendmsg` on a stream of several owned buffers' initialised bytes, in order,
/// skipping the first `skip` bytes (already sent by an earlier call of a
/// `write_vectored_all`). Ordered with the stream's other sends.
pub(crate) struct SendVectored<B> {
    fd: SharedFd,
    bufs: Vec<B>,
    msg: Box<VecMsg>,
    /// Bytes this call may send.
    len: usize,
    /// Counted among the stream's ordered writes in flight (`SharedFd::write_in_flight`).
    counted: bool,
}

impl<B: IoBuf> SendVectored<B> {
    pub(crate) fn new(fd: &SharedFd, bufs: Vec<B>, skip: usize) -> Self {
        let mut skip = skip;
        let mut len = 0;
        let iov = bufs
            .iter()
            .filter_map(|b| {
                let n = b.bytes_init();
                let from = skip.min(n);
                skip -= from;
                (from < n).then(|| {
                    len += n - from;
                    c::iovec {
                        // SAFETY: from < n <= the buffer's initialised length.
                        iov_base: unsafe { b.stable_ptr().add(from) }.cast_mut().cast(),
                        iov_len: (n - from) as _,
                    }
                })
            })
            .collect();
        SendVectored {
            fd: fd.clone(),
            bufs,
            msg: VecMsg::new(iov),
            len,
            counted: false,
        }
    }

    /// Whether there is nothing (left) to send.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffers back (for a send that was never submitted).
    pub(crate) fn into_bufs(self) -> Vec<B> {
        self.bufs
    }
}

impl<B: IoBuf> Operation for SendVectored<B> {
    type Output = BufResult<usize, Vec<B>>;
    const MAY_BE_ORDERED_WRITE: bool = true;

    fn describe(&mut self) -> OpDesc {
        OpDesc::SendMsg {
            fd: self.fd.fd_ref(),
            msg: &self.msg.hdr,
            flags: platform::SEND_FLAGS as u32,
            stream: true,
            zerocopy: false,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        if self.counted {
            self.fd.write_done();
        }
        let res = c.result().and_then(|n| checked_len(n, self.len));
        (res, self.bufs)
    }

    fn in_flight(&mut self, desc: &OpDesc, driver: u64) {
        self.counted = self.fd.write_in_flight(desc, driver);
    }
}

/// `recvmsg` into a buffer, reporting the sender's address.
pub(crate) struct RecvFrom<B> {
    fd: SharedFd,
    buf: B,
    msg: Box<Msg>,
}

impl<B: IoBufMut> RecvFrom<B> {
    pub(crate) fn new(fd: &SharedFd, mut buf: B) -> RecvFrom<B> {
        let msg = Msg::new(buf.stable_mut_ptr(), buf.bytes_total(), RawAddr::empty());
        RecvFrom {
            fd: fd.clone(),
            buf,
            msg,
        }
    }
}

impl<B: IoBufMut> RecvFrom<B> {
    /// The buffer's capacity: the most a completion may report.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.bytes_total()
    }

    /// The first `n` bytes of the buffer, which the receive's completion reported filled.
    ///
    /// # Panics
    ///
    /// If `n` exceeds the buffer's capacity (check the completion with `checked_len`).
    pub(crate) fn received(&self, n: usize) -> &[u8] {
        crate::op::rw::received(&self.buf, n)
    }

    /// The buffer back (for a receive that was never submitted, or has completed).
    pub(crate) fn into_buf(self) -> B {
        self.buf
    }

    /// The sender's address, once the receive completed.
    pub(crate) fn sender(&self) -> io::Result<SocketAddr> {
        // The kernel wrote the address and its length into the header; IP addresses are
        // read by family.
        self.msg.addr.to_ip()
    }
}

impl<B: IoBufMut> Operation for RecvFrom<B> {
    type Output = BufResult<(usize, SocketAddr), B>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::RecvMsg {
            fd: self.fd.fd_ref(),
            msg: &mut self.msg.hdr,
            flags: 0,
        }
    }

    fn complete(mut self, c: Completion) -> Self::Output {
        let res = c
            .result()
            .and_then(|n| checked_len(n, self.buf.bytes_total()));
        let res = res.and_then(|n| {
            // SAFETY: the kernel wrote n bytes at the start; n <= bytes_total() (checked).
            unsafe { self.buf.set_filled(n) };
            Ok((n, self.sender()?))
        });
        (res, self.buf)
    }
}

/// `shutdown(fd, how)`.
pub(crate) struct Shutdown {
    fd: SharedFd,
    how: i32,
    /// Counted among the stream's ordered writes in flight (`SharedFd::write_in_flight`).
    counted: bool,
}

impl Shutdown {
    pub(crate) fn new(fd: &SharedFd, how: std::net::Shutdown) -> Shutdown {
        let how = match how {
            std::net::Shutdown::Read => c::SHUT_RD,
            std::net::Shutdown::Write => c::SHUT_WR,
            std::net::Shutdown::Both => c::SHUT_RDWR,
        };
        Shutdown {
            fd: fd.clone(),
            how,
            counted: false,
        }
    }
}

impl Operation for Shutdown {
    type Output = io::Result<()>;
    const MAY_BE_ORDERED_WRITE: bool = true;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Shutdown {
            fd: self.fd.fd_ref(),
            how: self.how,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        if self.counted {
            self.fd.write_done();
        }
        c.result().map(drop)
    }

    fn in_flight(&mut self, desc: &OpDesc, driver: u64) {
        self.counted = self.fd.write_in_flight(desc, driver);
    }
}

/// What a stream's multishot receive owns once its stream is gone: only the descriptor
/// (the buffers are the backend's ring). Owned by the driver until the final completion,
/// so the descriptor number cannot be reused while the kernel may still resolve it; the
/// driver hands back the provided buffers of every completion it receives meanwhile.
pub(crate) struct RecvMultiOrphan {
    // Owned, never read: keeps the descriptor open until the final completion.
    #[allow(dead_code)]
    pub(crate) fd: SharedFd,
}

impl Orphan for RecvMultiOrphan {
    fn finish(self: Box<Self>, _c: Completion) {
        // Dropping the descriptor handle is all there is to do.
    }
}

impl IntoOrphan for RecvMultiOrphan {
    fn into_orphan(self) -> Box<dyn Orphan> {
        Box::new(self)
    }
}
