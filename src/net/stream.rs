//! What TCP and Unix streams share: socket creation, connect, read/write/shutdown, and
//! borrowing the descriptor as a std type for synchronous queries.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll};

use super::kept::Held;
use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::driver::op::{Kept, Op};
use crate::driver::Backend;
use crate::driver::{Driver, OpDesc, Submitted};
use crate::op::net::{Connect, RawAddr, RecvMultiOrphan, Shutdown};
use crate::op::rw::{Recv, Send};
use crate::op::{self, SharedFd};
use crate::platform;

/// Creates a close-on-exec, non-blocking socket. Non-blocking mode is what every backend
/// needs (io_uring arms its own poll on EAGAIN; a readiness backend retries on it); for the
/// caller it changes nothing: every operation still completes only when done.
pub(crate) fn socket(domain: i32, ty: i32) -> io::Result<SharedFd> {
    platform::socket(domain, ty).map(SharedFd::new)
}

/// Runs `f` on a std view of `fd` without taking ownership of it.
pub(crate) fn with_std<S: FromRawFd, R>(fd: RawFd, f: impl FnOnce(&S) -> R) -> R {
    // SAFETY: fd is open for the duration of the call (the caller holds its owner), and
    // ManuallyDrop keeps the temporary std value from closing it.
    let s = ManuallyDrop::new(unsafe { S::from_raw_fd(fd) });
    f(&s)
}

/// Connects a new socket of `domain`/`ty` to `addr` through the runtime.
pub(crate) async fn connect(domain: i32, ty: i32, addr: RawAddr) -> io::Result<SharedFd> {
    let fd = socket(domain, ty)?;
    Op::new(Connect::new(&fd, addr)).await?;
    Ok(fd)
}

/// A connected stream socket.
///
/// # Reads
///
/// Where the backend supports it (io_uring with a provided-buffer ring, see
/// `Backend::multishot_recv`), the first read arms one multishot receive for the stream:
/// the kernel keeps its poll armed and posts a completion per arrival into a provided
/// buffer, instead of a receive failing, arming a poll and retrying for every read. Each
/// read copies the arrivals already queued, oldest first, into the caller's buffer until
/// it is full (it never waits for more once it has some); what does not fit stays in the
/// stream (holding its provided buffer) for the next read. Nothing received is lost
/// when a read future is dropped: arrivals wait in the driver's slot for the next read.
/// An unread stream holds at most a few arrivals: when its queue reaches the driver's cap
/// (`MULTISHOT_QUEUE_CAP`, decided at reap), the driver cancels the receive so that further
/// data waits in the socket and TCP flow control throttles the peer; reads drain what was
/// queued first. When the multishot receive ends for lack of buffers (-ENOBUFS) or was
/// cancelled (by that cap), that read is a single-shot receive into the caller's buffer
/// and a later read arms again.
///
/// Bulk traffic switches a stream to direct reads (see `Multishot::observe`): when 4 reads
/// in a row each start with an arrival that filled a whole provided buffer and move at
/// least [`bulk_bytes`] into a larger caller's buffer, the receive is cancelled, its
/// arrivals are read out in order, and from then on each read is a single-shot receive
/// straight into the caller's buffer (no copy, one receive per buffer-full instead of one
/// completion per provided buffer). After 4 direct reads in a row shorter than that, the
/// next read arms a multishot receive again.
///
/// Single-shot reads (the fallback backend, bulk mode, the read after ENOBUFS) keep the
/// same guarantee: a read future dropped after submitting its receive leaves the receive
/// to the stream (`Adopted`), not cancelled, and the next read returns what it received
/// before anything else; the stream cancels it only when dropped. Two reads in flight at
/// once on one stream race for its bytes anyway: only the first one dropped is kept, a
/// second is cancelled like any operation (what it had received is lost), so read a stream
/// from one task at a time.
/// Elsewhere (the fallback backend, a second read racing one in progress) every read is a
/// single-shot receive. A stream whose receive runs on another runtime (used there, then
/// read on this one) fails its reads with `InvalidInput` rather than skip or reorder the
/// data that runtime may hold for it, until that runtime has finished the receive (for
/// instance cancelled it when dropped): then what it got is read from here, in order.
pub(crate) struct Stream {
    pub(crate) fd: SharedFd,
    multi: RefCell<Multishot>,
}

/// A stream's multishot receive and the data it holds.
#[derive(Default)]
struct Multishot {
    /// The driver the receive runs on; set while `armed` or `partial` is.
    driver: Option<Rc<RefCell<Driver>>>,
    /// The armed receive's key, and the descriptor handle it owns (given to the driver as
    /// an orphan if the stream goes first).
    armed: Option<(usize, SharedFd)>,
    /// An arrival partly copied out: provided buffer id, next byte, end.
    partial: Option<(u16, usize, usize)>,
    /// The peer closed its side: reads return 0 from now on.
    eof: bool,
    /// A read is in progress on the multishot path (a second one goes single-shot).
    reading: bool,
    /// Bulk mode: reads receive straight into the caller's buffer (single-shot, no copy)
    /// instead of through the shared provided buffers; see [`Multishot::observe`].
    direct: bool,
    /// Consecutive reads that argued for leaving the current mode.
    streak: u8,
    /// The size of the provided buffers its multishot receives fill (read from the
    /// backend when one is armed; fixed for a runtime's life), for the read-mode choice.
    buf_size: usize,
    /// Whether the current multishot-path read's first arrival filled a whole provided
    /// buffer; `None` if the read began with data left from an earlier arrival (then it
    /// does not vote on the read mode).
    first_full: Option<bool>,
    /// A single-shot receive whose read future was dropped first (see [`Adopted`]).
    /// Boxed: rare, and a stream stays small.
    adopted: Option<Box<Adopted>>,
}

/// A single-shot receive whose read future was dropped while the kernel owned it, or
/// before it collected the result: the stream keeps it instead of cancelling it, and the
/// next read returns what it received, so a dropped read loses nothing on this path
/// either (and no later receive can overtake it). Cancelled only when the stream goes.
struct Adopted {
    recv: Kept<Box<dyn Held>>,
    /// Received bytes not read yet, once it completed: `start..end` of its buffer.
    start: usize,
    end: usize,
}

/// A single-shot stream receive into the caller's buffer; if its future is dropped after
/// submission, the receive goes to the stream ([`Adopted`]) rather than being cancelled.
/// Only one can be kept: a second read dropped meanwhile (reads racing on one stream) is
/// cancelled like any operation.
struct SingleRead<'a, B: IoBufMut + 'static> {
    stream: &'a Stream,
    op: Op<Recv<B>>,
}

impl<B: IoBufMut> std::future::Future for SingleRead<'_, B> {
    type Output = BufResult<usize, B>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BufResult<usize, B>> {
        std::pin::Pin::new(&mut self.op).poll(cx)
    }
}

impl<B: IoBufMut> Drop for SingleRead<'_, B> {
    fn drop(&mut self) {
        let mut st = self.stream.multi.borrow_mut();
        if st.adopted.is_some() {
            return;
        }
        if let Some(recv) = Kept::detach(&mut self.op, |r| Box::new(r) as Box<dyn Held>) {
            st.adopted = Some(Box::new(Adopted {
                recv,
                start: 0,
                end: 0,
            }));
        }
    }
}

/// How a read goes (see [`Stream::begin_multishot`]).
enum Path<'a> {
    Multishot(Reading<'a>, Rc<RefCell<Driver>>),
    SingleShot,
    /// A dropped read's receive is kept: read what it got first.
    Adopted(AdoptedClaim<'a>),
    /// Single-shot because the stream is in bulk mode; its result may end that mode.
    Direct,
    /// The stream's multishot receive (and maybe data) lives on another runtime.
    Elsewhere,
}

/// What a multishot-path read ended with.
enum Step {
    Done(io::Result<usize>),
    /// Receive into the caller's buffer with a single-shot recv instead.
    SingleShot,
}

/// Releases the adopted receive's claim (by id: it may have been cancelled and another
/// adopted meanwhile) when the read waiting for it ends or is dropped.
struct AdoptedClaim<'a>(&'a RefCell<Multishot>, u64);

impl Drop for AdoptedClaim<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.0.borrow_mut().adopted.as_mut() {
            a.recv.release(self.1);
        }
    }
}

/// The error of a read whose stream's receive lives on another runtime.
fn elsewhere() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "this stream's receive runs on another runtime, which may hold data received for \
         it: read it there (or move it with into_std() there)",
    )
}

/// Clears `reading` when a multishot-path read finishes or is dropped.
struct Reading<'a>(&'a RefCell<Multishot>);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut st = self.0.borrow_mut();
        st.reading = false;
        st.settle();
    }
}

/// Reads in a row that must argue for the other mode before a stream switches between
/// multishot and bulk (direct) reads: hysteresis, so that one odd read does not cost a
/// cancel and a re-arm.
const MODE_SWITCH_STREAK: u8 = 4;

/// What a read must move to count as bulk: a provided buffer, and at least 4 KiB. With
/// small provided buffers (`Builder::recv_buffers`), messages larger than one buffer
/// but small are not bulk: they would switch a stream to direct reads and, never shorter
/// than a buffer, never switch it back.
fn bulk_bytes(provided_buf_size: usize) -> usize {
    provided_buf_size.max(4096)
}

impl Multishot {
    /// Tracks which read mode suits the stream's traffic and reports whether to switch.
    ///
    /// Multishot receives suit small arrivals: no buffer is pinned per stream and no
    /// receive is submitted per read. Bulk traffic is better read straight into the
    /// caller's buffer: one receive fills up to the whole buffer, with no copy out of 4 KiB
    /// provided buffers (on loopback that copy and the per-buffer completions cost about
    /// twice the receiver CPU per byte, `cargo bench --bench stream`). So, on the multishot
    /// path, a read whose first arrival filled a whole provided buffer and which moved at
    /// least [`bulk_bytes`] into a larger caller's buffer (`argues` = true) counts towards
    /// bulk mode; in bulk mode, a read that returned less than that counts towards going
    /// back. Anything else resets the count.
    fn observe(&mut self, argues: bool) -> bool {
        if !argues {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        if self.streak < MODE_SWITCH_STREAK {
            return false;
        }
        self.streak = 0;
        self.direct = !self.direct;
        true
    }

    /// Drops the driver handle once nothing needs it, so an idle stream does not keep a
    /// finished runtime's ring alive.
    fn settle(&mut self) {
        if self.armed.is_none() && self.partial.is_none() {
            self.driver = None;
        }
    }

    /// Hands the held buffer back and cancels the armed receive (the driver keeps it, with
    /// the descriptor handle, until its final completion, and recycles every buffer it
    /// names).
    fn release(&mut self) {
        // A kept receive still in flight is orphaned (cancelled) by its drop.
        self.adopted = None;
        let Some(driver) = self.driver.take() else {
            return;
        };
        // The driver is never borrowed while user code runs; if it were, leaking the
        // buffer and the receive is the safe choice (both stay the kernel's or ours).
        let Ok(mut d) = driver.try_borrow_mut() else {
            std::mem::forget(self.armed.take());
            return;
        };
        if let Some((bid, _, _)) = self.partial.take() {
            d.recycle_buf(bid);
        }
        if let Some((key, fd)) = self.armed.take() {
            let mut fd = Some(fd);
            d.orphan(key, || {
                Box::new(RecvMultiOrphan {
                    fd: fd.take().expect("coring: orphan data taken once"),
                })
            });
        }
    }
}

impl Adopted {
    /// Takes the receive's final completion: its bytes become readable; `Err` carries an
    /// end of file (`Ok(0)`) or error, which the caller reports and drops this for.
    fn complete(&mut self, c: crate::driver::Completion) -> Result<(), io::Result<usize>> {
        match c
            .result()
            .and_then(|n| op::checked_len(n, self.recv.data().capacity()))
        {
            Ok(n) if n > 0 => {
                self.end = n;
                Ok(())
            }
            res => Err(res),
        }
    }
}

impl Drop for Multishot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Copies as much of `data` as fits into `buf` from byte `at` on (the bytes before it
/// were filled by this read already) and marks the buffer initialised up to the end of
/// the copy. Returns the bytes copied.
pub(crate) fn copy_out<B: IoBufMut>(data: &[u8], buf: &mut B, at: usize) -> usize {
    debug_assert!(at <= buf.bytes_total());
    let n = data.len().min(buf.bytes_total() - at);
    // SAFETY: buf is writable for bytes_total() >= at + n bytes at stable_mut_ptr(); data
    // is n readable bytes in the provided buffer, which cannot overlap the caller's buffer.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.stable_mut_ptr().add(at), n) };
    // SAFETY: the first `at` bytes were written by this read before, the next n just now;
    // at + n <= bytes_total().
    unsafe { buf.set_init(at + n) };
    n
}

impl Stream {
    pub(crate) fn new(fd: SharedFd) -> Stream {
        Stream {
            fd,
            multi: RefCell::default(),
        }
    }

    /// Cancels the armed multishot receive and an adopted receive at once where the
    /// backend can, so that no operation holds the descriptor any more; data they had
    /// received stays in the stream. Best effort: a receive that cannot be cancelled
    /// synchronously, or that has data queued, stays (cancelled) until reads drain it.
    pub(crate) fn disarm(&self) {
        self.cancel_adopted();
        let mut st = self.multi.borrow_mut();
        let (Some(&(key, _)), Some(driver)) = (st.armed.as_ref(), st.driver.clone()) else {
            return;
        };
        let mut d = driver.borrow_mut();
        if !d.cancel_now(key) || d.has_queued_data(key) {
            return;
        }
        // Only non-data completions are left: collect them, the final one last.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while let Poll::Ready(c) = d.poll_op(key, &mut cx) {
            if let Some(bid) = c.buffer() {
                d.recycle_buf(bid);
            }
            if !c.more() {
                st.armed = None;
                break;
            }
        }
        drop(d);
        st.settle();
    }

    /// Cancels an adopted receive at once where the backend can, keeping what it received
    /// for reads; an empty or failed result is dropped with it.
    fn cancel_adopted(&self) {
        let mut st = self.multi.borrow_mut();
        let Some(a) = st.adopted.as_mut() else {
            return;
        };
        if let Some(c) = a.recv.cancel_now() {
            if a.complete(c).is_err() {
                st.adopted = None;
            }
        }
    }

    /// Gives up the descriptor, cancelling the stream's receives (synchronously where
    /// the backend can). Gives `self` back, state intact, while it holds received data not
    /// yet read (read it first) or a receive that could not be cancelled at once (it is
    /// being cancelled: try again once the runtime has run; whatever it receives meanwhile
    /// stays in the stream).
    pub(crate) fn into_fd(self) -> Result<SharedFd, Stream> {
        self.disarm();
        {
            let st = self.multi.borrow();
            if st.partial.is_some() || st.armed.is_some() || st.adopted.is_some() {
                drop(st);
                return Err(self);
            }
        }
        let Stream { fd, multi } = self;
        drop(multi);
        Ok(fd)
    }

    pub(crate) async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        if buf.bytes_total() == 0 {
            return (Ok(0), buf);
        }
        let mut buf = buf;
        let (reading, driver) = loop {
            match self.begin_multishot() {
                Path::Multishot(reading, driver) => break (reading, driver),
                Path::SingleShot => return self.single(buf).await,
                Path::Adopted(claim) => {
                    let res = poll_fn(|cx| self.poll_adopted(cx, claim.1, &mut buf)).await;
                    drop(claim);
                    match res {
                        Some(res) => return (res, buf),
                        // It ended cancelled with nothing, or another replaced it: read
                        // as if it never was.
                        None => continue,
                    }
                }
                Path::Direct => {
                    let (res, buf) = self.single(buf).await;
                    if let Ok(n) = res {
                        let mut st = self.multi.borrow_mut();
                        // A short read (not EOF) argues for going back to multishot.
                        let short = n > 0 && n < bulk_bytes(st.buf_size);
                        st.observe(short);
                    }
                    return (res, buf);
                }
                Path::Elsewhere => return (Err(elsewhere()), buf),
            }
        };
        let step = poll_fn(|cx| self.poll_multishot(cx, &driver, &mut buf)).await;
        let out = match step {
            Step::Done(res) => {
                if let Ok(n) = res {
                    self.observe_multishot(&driver, n, buf.bytes_total());
                }
                (res, buf)
            }
            Step::SingleShot => self.single(buf).await,
        };
        drop(reading);
        out
    }

    /// After a multishot-path read of `n` bytes into a buffer of `cap`: whether it argues
    /// for bulk mode (see [`Multishot::observe`]), and if the stream switches, the cancel
    /// of its multishot receive. Its queued arrivals (and any racing the cancel) are read
    /// first, in order; then its final completion sends reads to the socket directly. No
    /// observation while a receive cancelled for bulk mode drains.
    fn observe_multishot(&self, driver: &Rc<RefCell<Driver>>, n: usize, cap: usize) {
        let mut st = self.multi.borrow_mut();
        if st.direct {
            return;
        }
        // A read that began with leftover data (a caller buffer not a multiple of the
        // provided ones, in a bulk stream) is neutral: it neither votes nor breaks a streak.
        let Some(first_full) = st.first_full.take() else {
            return;
        };
        let big = bulk_bytes(st.buf_size);
        let bulk = first_full && n >= big && cap > big;
        if st.observe(bulk) {
            if let Some(&(key, _)) = st.armed.as_ref() {
                driver.borrow_mut().cancel_for_bulk(key);
            }
        }
    }

    /// A single-shot receive into `buf` that the stream adopts if the read is dropped.
    fn single<B: IoBufMut>(&self, buf: B) -> SingleRead<'_, B> {
        SingleRead {
            stream: self,
            op: Op::new(Recv::new(&self.fd, buf, true)),
        }
    }

    /// Reads from adopted receive `id`: waits for its completion, then copies what it
    /// received (the rest stays for the next read). `None`: it is not the adopted one any
    /// more, or it ended cancelled without data (by `disarm`), which is no error of the
    /// read.
    fn poll_adopted<B: IoBufMut>(
        &self,
        cx: &mut Context<'_>,
        id: u64,
        buf: &mut B,
    ) -> Poll<Option<io::Result<usize>>> {
        let mut st = self.multi.borrow_mut();
        let Some(a) = st.adopted.as_mut().filter(|a| a.recv.id() == id) else {
            return Poll::Ready(None);
        };
        if a.end == 0 {
            let Ok(c) = std::task::ready!(a.recv.poll_here(cx)) else {
                return Poll::Ready(Some(Err(elsewhere())));
            };
            if c.res == -libc::ECANCELED {
                st.adopted = None;
                return Poll::Ready(None);
            }
            if let Err(res) = a.complete(c) {
                // End of file or an error: the stream's, reported once here.
                st.adopted = None;
                return Poll::Ready(Some(res));
            }
        }
        let n = copy_out(&a.recv.data().received(a.end)[a.start..], buf, 0);
        a.start += n;
        if a.start == a.end {
            st.adopted = None;
        }
        Poll::Ready(Some(Ok(n)))
    }

    /// Chooses a read's path: multishot if the backend supports it and no other read is in
    /// progress; never single-shot past data another runtime's receive holds for the
    /// stream (that would skip or reorder bytes).
    fn begin_multishot(&self) -> Path<'_> {
        let driver = crate::runtime::context::driver();
        let mut st = self.multi.borrow_mut();
        if let Some(a) = st.adopted.as_mut() {
            if let Some(id) = a.recv.claim() {
                return Path::Adopted(AdoptedClaim(&self.multi, id));
            }
            // A read waits for it already. This concurrent one reads on its own, unless
            // the receive is another runtime's: then that runtime may hold bytes for it.
            if !a.recv.on_this_runtime() {
                return Path::Elsewhere;
            }
            return Path::SingleShot;
        }
        if let Some(d) = st.driver.clone() {
            if !Rc::ptr_eq(&d, &driver) {
                // The receive (or data it got) is another runtime's. Once that runtime
                // has finished it (for instance cancelled it when dropped), what it got is
                // read from here, in order; until then it must be read there.
                let finished = st
                    .armed
                    .as_ref()
                    .is_none_or(|&(k, _)| d.borrow().is_finished(k));
                if !finished || st.reading {
                    return Path::Elsewhere;
                }
                st.reading = true;
                drop(st);
                return Path::Multishot(Reading(&self.multi), d);
            }
        }
        if st.reading {
            return Path::SingleShot;
        }
        if st.direct && st.armed.is_none() && st.partial.is_none() {
            // Bulk mode, and the multishot receive (cancelled on entering it) has been
            // drained: nothing received is held, so reading the socket keeps the order.
            return Path::Direct;
        }
        if st.driver.is_none() && !driver.borrow_mut().backend_mut().multishot_recv() {
            return Path::SingleShot;
        }
        st.reading = true;
        st.first_full = None;
        drop(st);
        Path::Multishot(Reading(&self.multi), driver)
    }

    fn poll_multishot<B: IoBufMut>(
        &self,
        cx: &mut Context<'_>,
        driver: &Rc<RefCell<Driver>>,
        buf: &mut B,
    ) -> Poll<Step> {
        let mut st = self.multi.borrow_mut();
        // Bytes this poll has put into `buf`: a read takes every arrival already queued
        // that fits, then returns without waiting for more.
        let mut filled = 0;
        loop {
            if let Some((bid, start, end)) = st.partial {
                let mut d = driver.borrow_mut();
                let n = copy_out(&d.provided_buf(bid, end)[start..], buf, filled);
                filled += n;
                if start + n < end {
                    // `buf` is full.
                    st.partial = Some((bid, start + n, end));
                    return Poll::Ready(Step::Done(Ok(filled)));
                }
                st.partial = None;
                d.recycle_buf(bid);
            }
            if filled > 0 {
                let more = filled < buf.bytes_total()
                    && st
                        .armed
                        .as_ref()
                        .is_some_and(|&(key, _)| driver.borrow().next_is_data(key));
                if !more {
                    return Poll::Ready(Step::Done(Ok(filled)));
                }
            }
            if st.eof {
                return Poll::Ready(Step::Done(Ok(0)));
            }
            let key = match &st.armed {
                Some((key, _)) => *key,
                // Never arm on another runtime's driver (a finished receive read from here):
                // this read receives directly, on this runtime.
                None if !Rc::ptr_eq(driver, &crate::runtime::context::driver()) => {
                    return Poll::Ready(Step::SingleShot);
                }
                None => {
                    let desc = OpDesc::RecvMulti {
                        fd: self.fd.fd_ref(),
                    };
                    let mut d = driver.borrow_mut();
                    match d.submit(&desc, cx.waker()) {
                        Ok(Submitted::InFlight(key)) => {
                            st.armed = Some((key, self.fd.clone()));
                            st.buf_size = d.provided_buf_size();
                            st.driver = Some(driver.clone());
                            key
                        }
                        // Not accepted (or, impossibly, finished at once): read single-shot.
                        Ok(Submitted::Completed(_)) | Err(_) => {
                            return Poll::Ready(Step::SingleShot)
                        }
                    }
                }
            };
            let c = match driver.borrow_mut().poll_op(key, cx) {
                Poll::Ready(c) => c,
                Poll::Pending => return Poll::Pending,
            };
            if !c.more() {
                // That was the final completion: the key is dead.
                st.armed = None;
            }
            match c.res {
                n if n > 0 => {
                    let Some(bid) = c.buffer() else {
                        return Poll::Ready(Step::Done(Err(io::Error::other(
                            "coring: a multishot receive reported data without a buffer",
                        ))));
                    };
                    let n = n as usize;
                    st.partial = Some((bid, 0, n));
                    if filled == 0 {
                        // Half of the bulk evidence (see `Stream::observe_multishot`).
                        st.first_full = Some(n == st.buf_size);
                    }
                }
                res => {
                    if let Some(bid) = c.buffer() {
                        driver.borrow_mut().recycle_buf(bid);
                    }
                    match -res {
                        0 => st.eof = true,
                        // Out of provided buffers, or cancelled: by the driver's cap on
                        // unread arrivals, or by `disarm` (a dropped stream never reads
                        // again; its orphan recycles whatever comes). Every
                        // arrival queued before this final completion was collected above,
                        // in order, so nothing is lost: this read receives directly, and a
                        // later read arms again.
                        libc::ENOBUFS | libc::ECANCELED if !c.more() => {
                            return Poll::Ready(Step::SingleShot);
                        }
                        errno => {
                            return Poll::Ready(Step::Done(Err(io::Error::from_raw_os_error(
                                errno,
                            ))));
                        }
                    }
                }
            }
        }
    }

    pub(crate) async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        if let Err(e) = self.fd.check_write_order() {
            return (Err(e), buf);
        }
        Op::new(Send::new(&self.fd, buf, true)).await
    }

    pub(crate) async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        op::write_all(buf, |slice, _| self.write(slice)).await
    }

    pub(crate) async fn read_exact<B: IoBufMut>(&self, buf: B) -> BufResult<(), B> {
        op::read_exact(buf, |slice, _| self.read(slice)).await
    }

    pub(crate) async fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        // Only the write side is ordered behind sends (`OpDesc::is_ordered_write`).
        if how == std::net::Shutdown::Write {
            self.fd.check_write_order()?;
        }
        Op::new(Shutdown::new(&self.fd, how)).await
    }
}

/// Implements the conversions every socket type shares, given its `fd` field and std twin,
/// and registration with the runtime's io_uring (as for `File`).
macro_rules! socket_conversions {
    ($ty:ident, $std:ty) => {
        impl $ty {
            /// Registers the socket with the current runtime's io_uring, exactly as
            /// [`File::register`](crate::fs::File::register) does for a file: its
            /// operations on this runtime then name a slot of the ring's file table
            /// instead of the descriptor. A no-op on the fallback backend; other runtimes
            /// use the descriptor; the slot is released when the socket is closed.
            ///
            /// # Errors
            ///
            /// As [`File::register`](crate::fs::File::register).
            ///
            /// # Panics
            ///
            /// Outside a runtime.
            pub fn register(&self) -> std::io::Result<()> {
                self.shared().register(concat!("this ", stringify!($ty)))
            }

            /// Releases the socket's registered slot now (see
            /// [`File::unregister`](crate::fs::File::unregister)).
            ///
            /// # Errors
            ///
            /// `ResourceBusy` while an operation still uses the socket.
            pub fn unregister(&self) -> std::io::Result<()> {
                self.quiesce();
                self.shared()
                    .unregister(concat!(stringify!($ty), "::unregister"))
            }

            /// Whether operations submitted now, on this thread's runtime, use a
            /// registered slot (see [`File::is_registered`](crate::fs::File::is_registered)).
            pub fn is_registered(&self) -> bool {
                self.shared().is_registered()
            }

            /// Adopts a standard library socket (switching it to non-blocking mode).
            ///
            /// # Errors
            ///
            /// If the descriptor's flags cannot be changed.
            pub fn from_std(socket: $std) -> std::io::Result<$ty> {
                use std::os::fd::IntoRawFd;
                let fd = socket.into_raw_fd();
                let shared = $crate::op::SharedFd::new(fd);
                $crate::platform::set_nonblocking(fd, true)?;
                Ok(Self::from_shared(shared))
            }

            /// Converts into the standard library socket (left in non-blocking mode).
            ///
            /// # Errors
            ///
            /// Gives `self` back while an operation (for example one being cancelled) still
            /// uses the descriptor, or while a stream holds data it received but `read`
            /// has not returned yet (read it first).
            pub fn into_std(self) -> Result<$std, $ty> {
                use std::os::fd::FromRawFd;
                let shared = match self.into_shared() {
                    Ok(shared) => shared,
                    Err(this) => return Err(this),
                };
                match shared.into_raw() {
                    // SAFETY: into_raw gave us sole ownership of the descriptor.
                    Ok(fd) => Ok(unsafe { <$std>::from_raw_fd(fd) }),
                    Err(fd) => Err(Self::from_shared(fd)),
                }
            }
        }

        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.shared().raw()
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                // SAFETY: the descriptor stays open while `self` is borrowed.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(self.shared().raw()) }
            }
        }

        impl std::os::fd::FromRawFd for $ty {
            /// # Safety
            ///
            /// `fd` must be an open socket of the right kind that the caller owns and gives
            /// up; it should be in non-blocking mode.
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> $ty {
                Self::from_shared($crate::op::SharedFd::new(fd))
            }
        }

        impl std::os::fd::IntoRawFd for $ty {
            /// # Panics
            ///
            /// If an operation still uses the descriptor; finish or drop it first.
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                match self.into_shared().map(|s| s.into_raw()) {
                    Ok(Ok(fd)) => fd,
                    _ => panic!(concat!(
                        stringify!($ty),
                        "::into_raw_fd: an operation still uses the socket, or it holds \
                         received data not yet read; let it finish (or read it) first"
                    )),
                }
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("fd", &self.shared().raw())
                    .finish()
            }
        }
    };
}

pub(crate) use socket_conversions;

/// Implements the reads, writes and shutdown every stream type shares, on its `inner`
/// [`Stream`].
macro_rules! stream_io {
    () => {
        /// Receives into the start of the buffer; `Ok(0)` means the peer closed its side
        /// (or the buffer has no capacity).
        ///
        /// Cancel-safe: if the future is dropped (a `select` that picked another branch,
        /// a timeout), nothing the kernel received for it is lost; the next read returns
        /// it. This holds for one read at a time: of two reads in flight at once on one
        /// stream that are both dropped, the second one's bytes may be lost.
        pub async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
            self.inner.read(buf).await
        }

        /// Receives until the buffer's capacity is full; `UnexpectedEof` if the peer closes
        /// first.
        pub async fn read_exact<B: IoBufMut>(&self, buf: B) -> BufResult<(), B> {
            self.inner.read_exact(buf).await
        }

        /// Sends the buffer's initialised bytes; may send fewer. A closed peer gives
        /// `BrokenPipe` (never SIGPIPE).
        ///
        /// Sends (and a `shutdown(Write)`) take effect in the order they were issued, also
        /// from several tasks at once. While a send of the stream is in flight on one
        /// runtime, a send or `shutdown(Write)` issued on another runtime of the thread fails
        /// with `InvalidInput` (it could overtake it), as a read does when another runtime
        /// holds the stream's receive.
        pub async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
            self.inner.write(buf).await
        }

        /// Sends all of the buffer's initialised bytes, looping over short sends. Not atomic
        /// with respect to other writers of the stream: another task's send can land
        /// between two parts of a short-sent buffer.
        pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
            self.inner.write_all(buf).await
        }

        /// Shuts down the read half, the write half or both. `Write` takes effect after the
        /// sends issued before it (a graceful end; sends issued after it fail with
        /// `BrokenPipe`); `Read` and `Both` take effect at once (`Both` also fails a send
        /// waiting for a peer that does not read).
        pub async fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
            self.inner.shutdown(how).await
        }
    };
}

pub(crate) use stream_io;
