//! Reads and writes on files and sockets.

use crate::buf::{BufResult, FixedBuf, IoBuf, IoBufMut};
use crate::driver::fixed::Fixed;
use crate::driver::op::Operation;
use crate::driver::{Completion, OpDesc};
use crate::op::{checked_len, rw_len, SharedFd};
use crate::platform;
use crate::platform::c;

/// `pread` into the start of an owned buffer.
pub(crate) struct Read<B> {
    fd: SharedFd,
    buf: B,
    offset: u64,
    /// The buffer's registered entry (a [`FixedBuf`] of a registered pool).
    buf_index: Option<Fixed>,
}

impl<B: IoBufMut> Read<B> {
    pub(crate) fn new(fd: &SharedFd, buf: B, offset: u64) -> Self {
        Read {
            fd: fd.clone(),
            buf,
            offset,
            buf_index: None,
        }
    }
}

impl Read<FixedBuf> {
    /// A read into a pool buffer, naming its registered entry if it has one.
    pub(crate) fn fixed(fd: &SharedFd, buf: FixedBuf, offset: u64) -> Self {
        let buf_index = buf.fixed();
        Read {
            buf_index,
            ..Read::new(fd, buf, offset)
        }
    }
}

impl<B: IoBufMut> Operation for Read<B> {
    type Output = BufResult<usize, B>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Read {
            fd: self.fd.fd_ref(),
            buf: self.buf.stable_mut_ptr(),
            len: rw_len(self.buf.bytes_total()),
            offset: self.offset,
            buf_index: self.buf_index,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        filled(c, self.buf)
    }
}

/// `pwrite` of an owned buffer's initialised bytes.
pub(crate) struct Write<B> {
    fd: SharedFd,
    buf: B,
    offset: u64,
    /// The buffer's registered entry (a [`FixedBuf`] of a registered pool).
    buf_index: Option<Fixed>,
}

impl<B: IoBuf> Write<B> {
    pub(crate) fn new(fd: &SharedFd, buf: B, offset: u64) -> Self {
        Write {
            fd: fd.clone(),
            buf,
            offset,
            buf_index: None,
        }
    }
}

impl Write<FixedBuf> {
    /// A write from a pool buffer, naming its registered entry if it has one.
    pub(crate) fn fixed(fd: &SharedFd, buf: FixedBuf, offset: u64) -> Self {
        let buf_index = buf.fixed();
        Write {
            buf_index,
            ..Write::new(fd, buf, offset)
        }
    }
}

impl<B: IoBuf> Operation for Write<B> {
    type Output = BufResult<usize, B>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Write {
            fd: self.fd.fd_ref(),
            buf: self.buf.stable_ptr(),
            len: rw_len(self.buf.bytes_init()),
            offset: self.offset,
            buf_index: self.buf_index,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        written(c, self.buf)
    }
}

/// The result of a read into the start of `buf`: the byte count, checked against the
/// buffer, becomes the buffer's content ([`IoBufMut::set_filled`]).
pub(crate) fn filled<B: IoBufMut>(c: Completion, mut buf: B) -> BufResult<usize, B> {
    let res = c.result().and_then(|n| checked_len(n, buf.bytes_total()));
    if let Ok(n) = res {
        // SAFETY: the kernel wrote n bytes at the start of the buffer, and n was just
        // checked against bytes_total().
        unsafe { buf.set_filled(n) };
    }
    (res, buf)
}

/// The result of a write of `buf`'s initialised bytes, checked against them.
pub(crate) fn written<B: IoBuf>(c: Completion, buf: B) -> BufResult<usize, B> {
    let res = c.result().and_then(|n| checked_len(n, buf.bytes_init()));
    (res, buf)
}

/// Builds the iovec array for a vectored operation; the array is heap memory owned by
/// the op, so its address is stable.
fn iovecs(parts: impl Iterator<Item = (*mut u8, usize)>) -> Vec<c::iovec> {
    parts
        .map(|(ptr, len)| c::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        })
        .collect()
}

fn iovcnt(iov: &[c::iovec]) -> u32 {
    // More than u32::MAX entries cannot be built in practice; the kernel rejects more than
    // IOV_MAX (1024) with EINVAL, which reaches the caller as an io::Error.
    iov.len().min(u32::MAX as usize) as u32
}

/// `preadv` into several owned buffers, filled in order.
pub(crate) struct Readv<B> {
    fd: SharedFd,
    bufs: Vec<B>,
    iov: Vec<c::iovec>,
    offset: u64,
}

impl<B: IoBufMut> Readv<B> {
    pub(crate) fn new(fd: &SharedFd, mut bufs: Vec<B>, offset: u64) -> Self {
        let iov = iovecs(
            bufs.iter_mut()
                .map(|b| (b.stable_mut_ptr(), b.bytes_total())),
        );
        Readv {
            fd: fd.clone(),
            bufs,
            iov,
            offset,
        }
    }
}

impl<B: IoBufMut> Operation for Readv<B> {
    type Output = BufResult<usize, Vec<B>>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Readv {
            fd: self.fd.fd_ref(),
            iov: self.iov.as_ptr(),
            iovcnt: iovcnt(&self.iov),
            offset: self.offset,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        filled_in_order(c, self.bufs)
    }
}

/// The result of a vectored read into `bufs`, each from its start and in order: the byte
/// count, checked against their room, is spread over them ([`IoBufMut::set_filled`]:
/// each holds exactly what it received, the ones past the end none).
pub(crate) fn filled_in_order<B: IoBufMut>(
    c: Completion,
    mut bufs: Vec<B>,
) -> BufResult<usize, Vec<B>> {
    let total: usize = bufs.iter().map(|b| b.bytes_total()).sum();
    let res = c.result().and_then(|n| checked_len(n, total));
    if let Ok(n) = res {
        let mut left = n;
        for b in &mut bufs {
            let take = left.min(b.bytes_total());
            // SAFETY: the kernel filled the buffers in order; this one received `take`
            // bytes at its start, take <= bytes_total().
            unsafe { b.set_filled(take) };
            left -= take;
        }
    }
    (res, bufs)
}

/// `pwritev` of several owned buffers' initialised bytes, in order.
pub(crate) struct Writev<B> {
    fd: SharedFd,
    bufs: Vec<B>,
    iov: Vec<c::iovec>,
    offset: u64,
}

impl<B: IoBuf> Writev<B> {
    pub(crate) fn new(fd: &SharedFd, bufs: Vec<B>, offset: u64) -> Self {
        let iov = iovecs(
            bufs.iter()
                .map(|b| (b.stable_ptr().cast_mut(), b.bytes_init())),
        );
        Writev {
            fd: fd.clone(),
            bufs,
            iov,
            offset,
        }
    }
}

impl<B: IoBuf> Operation for Writev<B> {
    type Output = BufResult<usize, Vec<B>>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Writev {
            fd: self.fd.fd_ref(),
            iov: self.iov.as_ptr(),
            iovcnt: iovcnt(&self.iov),
            offset: self.offset,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        let total: usize = self.bufs.iter().map(|b| b.bytes_init()).sum();
        let res = c.result().and_then(|n| checked_len(n, total));
        (res, self.bufs)
    }
}

/// `recv` into the start of an owned buffer.
pub(crate) struct Recv<B> {
    fd: SharedFd,
    buf: B,
    stream: bool,
    /// The buffer's registered entry (a [`FixedBuf`] of a registered pool).
    buf_index: Option<Fixed>,
}

impl<B: IoBufMut> Recv<B> {
    /// `stream`: the socket is a byte stream (TCP, Unix stream), not datagrams.
    pub(crate) fn new(fd: &SharedFd, buf: B, stream: bool) -> Self {
        Recv {
            fd: fd.clone(),
            buf,
            stream,
            buf_index: None,
        }
    }

    /// The same receive, naming the registered entry `buf` lies in (see
    /// [`FixedBuf::fixed`]).
    pub(crate) fn with_fixed(mut self, buf_index: Option<Fixed>) -> Self {
        self.buf_index = buf_index;
        self
    }
}

impl<B: IoBufMut> Recv<B> {
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
        received(&self.buf, n)
    }
}

/// The first `n` bytes of a receive's buffer, which its completion reported filled.
///
/// # Panics
///
/// If `n` exceeds the buffer's capacity (check the completion with `checked_len`).
pub(crate) fn received<B: IoBufMut>(buf: &B, n: usize) -> &[u8] {
    assert!(
        n <= buf.bytes_total(),
        "coring: {n} bytes received into a buffer of {}",
        buf.bytes_total()
    );
    // SAFETY: the kernel wrote the first n bytes (its completion said so, and the caller
    // only asks once the receive completed); n <= bytes_total(); the buffer lives as long
    // as the borrow and is not written while the kernel is done with it.
    unsafe { std::slice::from_raw_parts(buf.stable_ptr(), n) }
}

impl<B: IoBufMut> Operation for Recv<B> {
    type Output = BufResult<usize, B>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Recv {
            fd: self.fd.fd_ref(),
            buf: self.buf.stable_mut_ptr(),
            len: rw_len(self.buf.bytes_total()),
            flags: 0,
            stream: self.stream,
            buf_index: self.buf_index,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        filled(c, self.buf)
    }
}

/// `send` of an owned buffer's initialised bytes, never raising SIGPIPE (`MSG_NOSIGNAL`,
/// or `SO_NOSIGPIPE` on the socket where the flag does not exist); or its zero-copy form.
pub(crate) struct Send<B> {
    fd: SharedFd,
    buf: B,
    /// On a stream socket (see `OpDesc::Send::stream`).
    stream: bool,
    /// Counted among the stream's ordered writes in flight (`SharedFd::write_in_flight`).
    counted: bool,
}

impl<B: IoBuf> Send<B> {
    /// A send of `buf` on `fd`; `stream`: a stream socket, whose sends stay in order.
    pub(crate) fn new(fd: &SharedFd, buf: B, stream: bool) -> Self {
        Send {
            fd: fd.clone(),
            buf,
            stream,
            counted: false,
        }
    }

    /// A zero-copy send of `buf` (a plain one where the backend or kernel has none): it
    /// completes, and gives the buffer back, only once the kernel no longer references it.
    pub(crate) fn zero_copy(fd: &SharedFd, buf: B, stream: bool) -> ZeroCopy<Self> {
        ZeroCopy::new(Send::new(fd, buf, stream), None)
    }
}

impl Send<FixedBuf> {
    /// A zero-copy send from a pool buffer, naming its registered entry if it has one.
    pub(crate) fn zero_copy_fixed(fd: &SharedFd, buf: FixedBuf, stream: bool) -> ZeroCopy<Self> {
        let buf_index = buf.fixed();
        ZeroCopy::new(Send::new(fd, buf, stream), buf_index)
    }
}

impl<B: IoBuf> Operation for Send<B> {
    type Output = BufResult<usize, B>;
    const MAY_BE_ORDERED_WRITE: bool = true;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Send {
            fd: self.fd.fd_ref(),
            buf: self.buf.stable_ptr(),
            len: rw_len(self.buf.bytes_init()),
            flags: platform::SEND_FLAGS,
            stream: self.stream,
            zerocopy: false,
            buf_index: None,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        if self.counted {
            self.fd.write_done();
        }
        written(c, self.buf)
    }

    fn in_flight(&mut self, desc: &OpDesc, driver: u64) {
        self.counted = self.fd.write_in_flight(desc, driver);
    }
}

/// The zero-copy form of a send ([`Send`], `SendTo`): the same description flagged
/// `zerocopy` (naming the registered entry of a [`FixedBuf`] where it has one), and the
/// send's result, which comes before the kernel's notification, held until that final
/// completion, which alone gives the buffer back. A wrapper, so that plain sends carry
/// none of this.
pub(crate) struct ZeroCopy<T> {
    op: T,
    buf_index: Option<Fixed>,
    /// The send's result, ahead of its notification.
    sent: Option<Completion>,
}

impl<T> ZeroCopy<T> {
    pub(crate) fn new(op: T, buf_index: Option<Fixed>) -> ZeroCopy<T> {
        ZeroCopy {
            op,
            buf_index,
            sent: None,
        }
    }
}

impl<T: Operation> Operation for ZeroCopy<T> {
    type Output = T::Output;
    const MAY_BE_ORDERED_WRITE: bool = T::MAY_BE_ORDERED_WRITE;

    fn describe(&mut self) -> OpDesc {
        let mut desc = self.op.describe();
        match &mut desc {
            OpDesc::Send {
                zerocopy,
                buf_index,
                ..
            } => {
                *zerocopy = true;
                *buf_index = self.buf_index;
            }
            OpDesc::SendMsg { zerocopy, .. } => *zerocopy = true,
            other => unreachable!("coring: {} has no zero-copy form", other.name()),
        }
        desc
    }

    /// The send's result; the buffer stays the kernel's until the notification.
    fn progress(&mut self, c: Completion) {
        debug_assert!(
            self.sent.is_none(),
            "coring: a zero-copy send got a second completion with CQE_F_MORE: {c:?}"
        );
        self.sent = Some(c);
    }

    /// After the send's result, the final completion is its notification; a send without
    /// one (a plain send where the backend has no zero-copy one, or one that failed before
    /// sending) has its result in its only completion.
    fn complete(self, c: Completion) -> Self::Output {
        self.op.complete(self.sent.unwrap_or(c))
    }

    fn in_flight(&mut self, desc: &OpDesc, driver: u64) {
        self.op.in_flight(desc, driver);
    }
}

/// A no-op through the backend; completes with 0.
pub(crate) struct Nop;

impl Operation for Nop {
    type Output = std::io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Nop
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}
