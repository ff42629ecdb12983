//! Poll-based IO traits on coring's completion-based types: [`Compat`] gives a
//! [`TcpStream`](crate::net::TcpStream), a `UnixStream` (Unix) or
//! a [`File`](crate::fs::File) (read and written sequentially from a cursor) the tokio
//! traits `AsyncRead`/`AsyncWrite`/`AsyncBufRead` (feature `tokio-io`) and the `futures-io`
//! traits `AsyncRead`/`AsyncWrite`/`AsyncBufRead` (feature `futures-io`), so that libraries
//! written against them (hyper through `hyper_util::rt::TokioIo`, codecs, TLS) run on
//! coring.
//!
//! ```no_run
//! # #[cfg(feature = "tokio-io")]
//! # fn main() -> std::io::Result<()> {
//! use coring::compat::Compat;
//! use coring::net::TcpStream;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! coring::start(async {
//!     let mut stream = Compat::new(TcpStream::connect("127.0.0.1:8080").await?);
//!     stream.write_all(b"ping").await?;
//!     stream.flush().await?; // waits for the send; reports its error
//!     let mut reply = [0u8; 4];
//!     stream.read_exact(&mut reply).await?;
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "tokio-io"))]
//! # fn main() {}
//! ```
//!
//! # How a completion fits a poll
//!
//! A poll-based trait lends the caller's buffer for one call only, while a kernel
//! operation needs a buffer it owns until it completes, however many polls that takes and
//! even if the caller goes away. So the adapter owns one buffer per direction, and the
//! cost is **one copy** per byte, between that buffer and the caller's (on top of whatever
//! the stream's own read does; see [`TcpStream`](crate::net::TcpStream)), plus one small
//! allocation per operation (the boxed operation future):
//!
//! - **Reads** receive into the adapter's buffer (at least 4 KiB, at most 256 KiB, sized
//!   by the caller's request) and copy out what fits; the rest is kept for the next poll.
//!   A read that returns `Pending` stays in flight *in the adapter*: if the caller's
//!   future is dropped (a `select!` that picked another branch, a timeout), nothing the
//!   kernel reads for it is lost; the next poll collects it. Every poll-based read is
//!   therefore cancel-safe.
//! - **Writes** copy the caller's bytes into the adapter's buffer and return `Ok(n)` at
//!   once; the send (looping over short sends) runs in the background and is driven by
//!   later polls of either direction. A write reported as accepted really is accepted:
//!   its bytes go out in order before any later ones; if the send fails, the error is
//!   reported by the next `poll_write`, `poll_flush` or `poll_shutdown`/`poll_close` (or
//!   by a read's poll of a file). While up to 64 KiB wait for a send in flight, further
//!   writes are accepted; beyond that they wait (back-pressure). `poll_flush` waits for
//!   every accepted byte to be handed to the kernel (as `write(2)` would have) and
//!   reports the error of any; `poll_shutdown` (`poll_close`) flushes and then shuts the
//!   stream's write side down (a file is only flushed: no `fsync`, as with tokio).
//!   Dropping the adapter with a send pending finishes it in a background task of the
//!   current runtime (where one is running); its error then goes nowhere, so flush
//!   before dropping when the outcome matters.
//! - **Files** have one cursor, starting at 0 ([`Compat::new`]) or where you say
//!   ([`Compat::with_position`]): a read starts where the bytes handed out so far end,
//!   after waiting for pending writes (so it sees them); a write goes where the cursor is
//!   and drops what was read ahead of it.
//!
//! Read and write from one task at a time per direction (the usual rule for these traits:
//! they take `&mut self`).
//!
//! # Choosing between this and owned buffers
//!
//! The native API (`read(buf).await` with an owned buffer) costs no copy and no
//! allocation per operation; use it in code you write for coring. Use `Compat` where a
//! library wants the poll-based traits.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use crate::buf::BufResult;

#[cfg(feature = "futures-io")]
mod futures_impl;
#[cfg(feature = "tokio-io")]
mod tokio_impl;

/// A boxed operation future: owns the IO object's handle and the buffer until it ends.
type OpFuture<O> = Pin<Box<dyn Future<Output = O>>>;

/// Bytes that may wait for a send in flight before writes wait too.
const WRITE_STAGE_CAP: usize = 64 * 1024;
/// The smallest receive the adapter submits: a caller asking for a few bytes at a time
/// (a line reader) should not cost one operation per few bytes.
const READ_MIN: usize = 4 * 1024;
/// The largest receive the adapter submits, however large the caller's buffer.
const READ_MAX: usize = 256 * 1024;

mod sealed {
    use super::OpFuture;
    use crate::buf::BufResult;
    use std::io;
    use std::rc::Rc;

    /// The operations the adapter runs on an IO type; implemented by the crate only.
    pub trait Ops: Sized + 'static {
        /// Whether reads and writes take a position (a file) rather than a stream's order.
        const POSITIONED: bool;
        /// Reads into `buf` (cleared, capacity reserved), at `pos` if positioned.
        fn read_op(io: Rc<Self>, buf: Vec<u8>, pos: u64) -> OpFuture<BufResult<usize, Vec<u8>>>;
        /// Writes all of `buf`, at `pos` if positioned.
        fn write_op(io: Rc<Self>, buf: Vec<u8>, pos: u64) -> OpFuture<BufResult<(), Vec<u8>>>;
        /// Shuts the write side down, for a stream.
        fn shutdown_op(io: Rc<Self>) -> Option<OpFuture<io::Result<()>>>;
    }
}

/// An IO type [`Compat`] can adapt: [`TcpStream`](crate::net::TcpStream),
/// `UnixStream` (Unix) and [`File`](crate::fs::File). Sealed.
pub trait CompatIo: sealed::Ops {}

impl<T: sealed::Ops> CompatIo for T {}

macro_rules! stream_ops {
    ($ty:ty) => {
        impl sealed::Ops for $ty {
            const POSITIONED: bool = false;
            fn read_op(
                io: Rc<Self>,
                buf: Vec<u8>,
                _pos: u64,
            ) -> OpFuture<BufResult<usize, Vec<u8>>> {
                Box::pin(async move { io.read(buf).await })
            }
            fn write_op(io: Rc<Self>, buf: Vec<u8>, _pos: u64) -> OpFuture<BufResult<(), Vec<u8>>> {
                Box::pin(async move { io.write_all(buf).await })
            }
            fn shutdown_op(io: Rc<Self>) -> Option<OpFuture<io::Result<()>>> {
                Some(Box::pin(async move {
                    match io.shutdown(std::net::Shutdown::Write).await {
                        // The peer is gone already: nothing left to shut (as tokio does).
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                        res => res,
                    }
                }))
            }
        }
    };
}

stream_ops!(crate::net::TcpStream);
#[cfg(unix)]
stream_ops!(crate::net::UnixStream);

impl sealed::Ops for crate::fs::File {
    const POSITIONED: bool = true;
    fn read_op(io: Rc<Self>, buf: Vec<u8>, pos: u64) -> OpFuture<BufResult<usize, Vec<u8>>> {
        Box::pin(async move { io.read_at(buf, pos).await })
    }
    fn write_op(io: Rc<Self>, buf: Vec<u8>, pos: u64) -> OpFuture<BufResult<(), Vec<u8>>> {
        Box::pin(async move { io.write_all_at(buf, pos).await })
    }
    fn shutdown_op(_io: Rc<Self>) -> Option<OpFuture<io::Result<()>>> {
        None
    }
}

/// A [`TcpStream`](crate::net::TcpStream), `UnixStream` (Unix) or
/// [`File`](crate::fs::File) with the poll-based IO traits of tokio (feature `tokio-io`)
/// and futures (feature `futures-io`): see the [module docs](self) for how reads and
/// writes are buffered, what a dropped poll keeps and what it costs.
///
/// Not `Send`, like the IO types it wraps: hand a stream to another runtime as
/// `std::net::TcpStream` (`into_std`/`from_std`) and wrap it there.
pub struct Compat<T: CompatIo> {
    io: Rc<T>,
    read: ReadSide,
    write: WriteSide<T>,
    /// The cursor of a file: where the next byte read or written goes (the bytes handed
    /// out by reads and accepted by writes so far).
    pos: u64,
}

/// The read direction: the buffer the kernel reads into, and the read in flight.
#[derive(Default)]
struct ReadSide {
    /// Received bytes, `start..len()` not handed out yet.
    buf: Vec<u8>,
    start: usize,
    op: Option<OpFuture<BufResult<usize, Vec<u8>>>>,
}

/// The write direction: accepted bytes not submitted yet, the send in flight, and what
/// went wrong with bytes already reported as written.
struct WriteSide<T> {
    /// Accepted bytes waiting for the send in flight to finish.
    stage: Vec<u8>,
    /// Where `stage` goes in a file.
    stage_pos: u64,
    op: Option<OpFuture<BufResult<(), Vec<u8>>>>,
    /// The buffer of the last send, kept for the next stage.
    spare: Vec<u8>,
    /// The failure of a send of accepted bytes, found by a poll that could not report it.
    error: Option<io::Error>,
    shutdown: Option<OpFuture<io::Result<()>>>,
    shut: bool,
    _io: std::marker::PhantomData<fn() -> T>,
}

impl<T> Default for WriteSide<T> {
    fn default() -> Self {
        WriteSide {
            stage: Vec::new(),
            stage_pos: 0,
            op: None,
            spare: Vec::new(),
            error: None,
            shutdown: None,
            shut: false,
            _io: std::marker::PhantomData,
        }
    }
}

impl<T: CompatIo> WriteSide<T> {
    fn is_idle(&self) -> bool {
        self.op.is_none() && self.stage.is_empty() && self.shutdown.is_none()
    }

    /// Drives the sends until every accepted byte is with the kernel: `Ready(Ok)` then, or
    /// the first error of a send (its stage and everything accepted after it are dropped:
    /// the stream is broken).
    #[inline]
    fn poll_drain(&mut self, io: &Rc<T>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The common case, several times per request: nothing to send.
        if self.op.is_none() && self.stage.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.poll_sends(io, cx)
    }

    fn poll_sends(&mut self, io: &Rc<T>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(op) = self.op.as_mut() {
                let (res, mut buf) = ready!(op.as_mut().poll(cx));
                self.op = None;
                buf.clear();
                if buf.capacity() > self.spare.capacity() {
                    self.spare = buf;
                }
                if let Err(e) = res {
                    self.stage.clear();
                    return Poll::Ready(Err(e));
                }
            }
            if self.stage.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let buf = std::mem::replace(&mut self.stage, std::mem::take(&mut self.spare));
            let pos = self.stage_pos;
            self.stage_pos += buf.len() as u64;
            self.op = Some(T::write_op(io.clone(), buf, pos));
        }
    }

    /// Drives the sends as far as they go without waiting; an error is kept for the next
    /// write-side poll (the caller is not a writer that could hear it now).
    #[inline]
    fn drive(&mut self, io: &Rc<T>, cx: &mut Context<'_>) {
        if let Poll::Ready(Err(e)) = self.poll_drain(io, cx) {
            self.error.get_or_insert(e);
        }
    }
}

impl<T: CompatIo> Compat<T> {
    /// Wraps `io`; a file's cursor starts at 0.
    pub fn new(io: T) -> Compat<T> {
        Compat::with_position(io, 0)
    }

    /// Wraps `io` with a file's cursor at `pos` (ignored for a stream).
    pub fn with_position(io: T, pos: u64) -> Compat<T> {
        Compat {
            io: Rc::new(io),
            read: ReadSide::default(),
            write: WriteSide::default(),
            pos,
        }
    }

    /// The wrapped IO object, for its own methods (`peer_addr`, `metadata`...). Reading or
    /// writing through it directly while the adapter has bytes buffered or operations in
    /// flight interleaves the two orders.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// A file's cursor: the bytes handed out by reads and accepted by writes so far (from
    /// the starting position). Always 0 for a stream.
    pub fn position(&self) -> u64 {
        if T::POSITIONED {
            self.pos
        } else {
            0
        }
    }

    /// Unwraps the IO object, if the adapter holds nothing for it: no operation in
    /// flight, no accepted byte unsent, no received byte unread. Otherwise gives the
    /// adapter back: flush it, or read what it holds, first.
    // The adapter comes back whole (its buffers hold the caller's bytes), as `into_std`
    // gives a stream back: boxing it would cost an allocation for a rare path.
    #[allow(clippy::result_large_err)]
    pub fn into_inner(self) -> Result<T, Compat<T>> {
        let unread = self.read.start < self.read.buf.len();
        if unread || !self.write.is_idle() || self.write.error.is_some() {
            return Err(self);
        }
        // A read in flight on a stream holds bytes nobody has read yet; a file's can go
        // (dropped with the adapter below).
        if self.read.op.is_some() && !T::POSITIONED {
            return Err(self);
        }
        let io = self.io.clone();
        let pos = self.pos;
        // Nothing to send: the drop spawns nothing and leaves `io` the only handle.
        drop(self);
        Rc::try_unwrap(io).map_err(|io| Compat {
            io,
            read: ReadSide::default(),
            write: WriteSide::default(),
            pos,
        })
    }

    /// The bytes received and not handed out yet, receiving more first if there are none;
    /// `hint`: how many the caller would like. Empty at end of file.
    fn poll_fill(&mut self, cx: &mut Context<'_>, hint: usize) -> Poll<io::Result<&[u8]>> {
        if self.read.start < self.read.buf.len() {
            return Poll::Ready(Ok(&self.read.buf[self.read.start..]));
        }
        if T::POSITIONED {
            // A file's read must see the writes before it: wait for them.
            if let Err(e) = ready!(self.write.poll_drain(&self.io, cx)) {
                return Poll::Ready(Err(e));
            }
        } else {
            // Sends go on while the caller reads (it may never flush).
            self.write.drive(&self.io, cx);
        }
        let read = &mut self.read;
        let op = match read.op.as_mut() {
            Some(op) => op,
            None => {
                let mut buf = std::mem::take(&mut read.buf);
                buf.clear();
                buf.reserve(hint.clamp(READ_MIN, READ_MAX));
                read.start = 0;
                read.op.insert(T::read_op(self.io.clone(), buf, self.pos))
            }
        };
        let (res, mut buf) = ready!(op.as_mut().poll(cx));
        read.op = None;
        let res = res.and_then(|n| {
            if n > buf.len() {
                return Err(io::Error::other(format!(
                    "coring compat: a read reported {n} bytes into a buffer of {}",
                    buf.len()
                )));
            }
            buf.truncate(n);
            Ok(())
        });
        if res.is_err() {
            buf.clear();
        }
        read.buf = buf;
        read.start = 0;
        Poll::Ready(res.map(|()| &read.buf[..]))
    }

    /// Marks `n` of the bytes [`poll_fill`](Self::poll_fill) gave as handed out.
    fn consume(&mut self, n: usize) {
        let left = self.read.buf.len() - self.read.start;
        assert!(
            n <= left,
            "coring compat: consume({n}) of {left} buffered bytes (AsyncBufRead misuse)"
        );
        self.read.start += n;
        self.pos += n as u64;
    }

    /// Reads into `dst` what is buffered or arrives next; `Ok(0)` at end of file (or for
    /// an empty `dst`).
    fn poll_read_slice(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut [std::mem::MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        if dst.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let src = ready!(self.poll_fill(cx, dst.len()))?;
        let n = src.len().min(dst.len());
        // SAFETY: MaybeUninit<u8> has the layout of u8, and `src` (initialised bytes of
        // the adapter's own buffer) cannot overlap the caller's `dst` (a `&mut` borrow).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), n);
        }
        self.consume(n);
        Poll::Ready(Ok(n))
    }

    /// Accepts as many of `bufs`' bytes as fit (see the module docs).
    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.write.error.take() {
            return Poll::Ready(Err(e));
        }
        if self.write.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "coring compat: write after poll_shutdown/poll_close",
            )));
        }
        if T::POSITIONED {
            // A write moves on from the cursor: what was read ahead of it is stale.
            self.read = ReadSide::default();
        }
        if let Poll::Ready(Err(e)) = self.write.poll_drain(&self.io, cx) {
            return Poll::Ready(Err(e));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let room = WRITE_STAGE_CAP.saturating_sub(self.write.stage.len());
        if room == 0 {
            // A send is in flight (poll_drain left it pending, with our waker).
            return Poll::Pending;
        }
        if self.write.stage.is_empty() {
            self.write.stage_pos = self.pos;
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(room - n);
            self.write.stage.extend_from_slice(&b[..take]);
            n += take;
            if n == room {
                break;
            }
        }
        self.pos += n as u64;
        // Submit now if nothing is in flight (else the stage waits for it); a failure is
        // the next call's to report.
        if self.write.op.is_none() {
            self.write.drive(&self.io, cx);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.write.error.take() {
            return Poll::Ready(Err(e));
        }
        self.write.poll_drain(&self.io, cx)
    }

    fn poll_shutdown_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_inner(cx))?;
        if self.write.shut {
            return Poll::Ready(Ok(()));
        }
        if self.write.shutdown.is_none() {
            match T::shutdown_op(self.io.clone()) {
                Some(op) => self.write.shutdown = Some(op),
                None => return Poll::Ready(Ok(())),
            }
        }
        let op = self.write.shutdown.as_mut().expect("set above");
        let res = ready!(op.as_mut().poll(cx));
        self.write.shutdown = None;
        if res.is_ok() {
            self.write.shut = true;
        }
        Poll::Ready(res)
    }
}

impl<T: CompatIo> Drop for Compat<T> {
    fn drop(&mut self) {
        if self.write.op.is_none() && self.write.stage.is_empty() {
            return;
        }
        // Accepted bytes are sent even so: a background task finishes the sends, where a
        // runtime runs (elsewhere the operations are dropped like any: cancelled).
        let mut write = std::mem::take(&mut self.write);
        let io = self.io.clone();
        crate::runtime::context::try_with(|rt| {
            let task = rt.executor.spawn(&rt.shared, async move {
                let _ = std::future::poll_fn(|cx| write.poll_drain(&io, cx)).await;
            });
            drop(task); // detached
        });
    }
}

impl<T: CompatIo + std::fmt::Debug> std::fmt::Debug for Compat<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compat")
            .field("io", &self.io)
            .field("buffered", &(self.read.buf.len() - self.read.start))
            .field("reading", &self.read.op.is_some())
            .field("unsent", &self.write.stage.len())
            .field("sending", &self.write.op.is_some())
            .finish()
    }
}
