//! What TCP and Unix streams share: socket creation, connect, read/write/shutdown, and
//! borrowing the descriptor as a std type for synchronous queries.

use crate::platform::c;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::mem::ManuallyDrop;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::retained::{next_watcher_id, AnyRecv, Watchers};
use crate::buf::{copy_out, BufResult, FixedBuf, IoBuf, IoBufMut};
use crate::driver::op::{Op, Retained};
use crate::driver::provided::{Location, ProvidedRead, ProvidedRecv};
use crate::driver::{Backend, Driver};
use crate::op::net::{Connect, RawAddr, RecvMultiOrphan, RecvVectored, SendVectored, Shutdown};
use crate::op::rw::{Recv, Send};
use crate::op::{self, SharedFd};
use crate::platform::{self, FromRaw, RawFd};
use crate::runtime::context;

/// Creates a close-on-exec, non-blocking socket. Non-blocking mode is what every backend
/// needs (io_uring arms its own poll on EAGAIN; a readiness backend retries on it); for the
/// caller it changes nothing: every operation still completes only when done.
pub(crate) fn socket(domain: i32, ty: i32) -> io::Result<SharedFd> {
    platform::socket(domain, ty).map(SharedFd::new)
}

/// Runs `f` on a std view of `fd` without taking ownership of it.
pub(crate) fn with_std<S: FromRaw, R>(fd: RawFd, f: impl FnOnce(&S) -> R) -> R {
    // SAFETY: fd is open for the duration of the call (the caller holds its owner), and
    // ManuallyDrop keeps the temporary std value from closing it.
    let s = ManuallyDrop::new(unsafe { S::from_raw(fd) });
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
/// `Backend::multishot_recv`), the first read arms one multishot receive for the stream
/// (`driver::provided::ProvidedRecv`): the kernel keeps its poll armed and posts a
/// completion per arrival into a provided buffer, instead of a receive failing, arming a
/// poll and retrying for every read. Each read copies the arrivals already queued, oldest
/// first, into the caller's buffer until it is full (it never waits for more once it has
/// some); what does not fit stays in the stream (holding its provided buffer) for the next
/// read. Nothing received is lost when a read future is dropped: arrivals wait in the
/// driver's slot for the next read. An unread stream holds at most a few arrivals: when
/// its queue reaches the driver's cap (`MULTISHOT_QUEUE_CAP`, decided at reap), the driver
/// cancels the receive so that further data waits in the socket and TCP flow control
/// throttles the peer; reads drain what was queued first. When the multishot receive ends
/// for lack of buffers (-ENOBUFS) or was cancelled (by that cap), that read is a
/// single-shot receive into the caller's buffer and a later read arms again.
///
/// Bulk traffic switches a stream to direct reads (see `ReadState::observe`): when 4
/// reads in a row each start with an arrival that filled a whole provided buffer and move
/// at least [`bulk_bytes`] into a larger caller's buffer, the receive is cancelled, its
/// arrivals are read out in order, and from then on each read is a single-shot receive
/// straight into the caller's buffer (no copy, one receive per buffer-full instead of one
/// completion per provided buffer). After 4 direct reads in a row shorter than that, the
/// next read arms a multishot receive again.
///
/// Single-shot reads (the fallback backend, bulk mode, the read after ENOBUFS) keep the
/// same guarantee: a read future dropped after submitting its receive leaves the receive
/// to the stream (`RetainedRecv`), not cancelled, and the next read returns what it
/// received before anything else; the stream cancels it only when dropped. Two reads in
/// flight at once on one stream race for its bytes anyway: only the first one dropped is
/// retained, a second is cancelled like any operation (what it had received is lost), so
/// read a stream from one task at a time.
/// Elsewhere (the fallback backend, a second read racing one in progress) every read is a
/// single-shot receive. A stream whose receive runs on another runtime (used there, then
/// read on this one) fails its reads with `InvalidInput` rather than skip or reorder the
/// data that runtime may hold for it, until that runtime has finished the receive (for
/// instance cancelled it when dropped): then what it got is read from here, in order.
pub(crate) struct Stream {
    pub(crate) fd: SharedFd,
    read: RefCell<ReadState>,
    /// A zero-copy send was refused with EOPNOTSUPP (Linux has none for Unix-domain
    /// sockets): `send_zc` sends plainly from then on.
    no_zerocopy: std::cell::Cell<bool>,
}

/// How a stream reads: its multishot receive, a retained single-shot receive, and the
/// read mode.
#[derive(Default)]
struct ReadState {
    /// A single-shot receive whose read future was dropped first (see [`RetainedRecv`]).
    /// Boxed: rare, and a stream stays small. Declared first: dropped before the
    /// multishot receive, as when the stream goes.
    retained: Option<Box<RetainedRecv>>,
    /// The multishot receive into the backend's provided buffers, and what it holds.
    provided: ProvidedRecv<RecvMultiOrphan>,
    /// A read is in progress on the multishot path (a second one goes single-shot).
    reading: bool,
    /// Bulk mode: reads receive straight into the caller's buffer (single-shot, no copy)
    /// instead of through the shared provided buffers; see [`ReadState::observe`].
    direct: bool,
    /// Consecutive reads that argued for leaving the current mode.
    streak: u8,
    /// The runtime (`context::driver_id`) found to have no multishot receives, so that
    /// reads there go single-shot without asking it again; 0: none known.
    single_shot_runtime: u64,
}

/// A single-shot receive whose read future was dropped while the kernel owned it, or
/// before it collected the result: the stream retains it instead of cancelling it, and the
/// next read returns what it received, so a dropped read loses nothing on this path
/// either (and no later receive can overtake it). Cancelled only when the stream goes.
/// Every read that waits for it polls it with one waker that wakes them all
/// ([`Watchers`]): none has it to itself, so a read that is forgotten (`mem::forget`)
/// holds nothing back.
struct RetainedRecv {
    recv: Retained<Box<dyn AnyRecv>>,
    /// Received bytes not read yet, once it completed: `start..end` of its buffer.
    start: usize,
    end: usize,
    /// The reads waiting for it, and the waker that wakes them all.
    watchers: Arc<Watchers>,
    wake_all: Waker,
}

/// A single-shot stream receive into the caller's buffer; if its future is dropped after
/// submission, the receive goes to the stream ([`RetainedRecv`]) rather than being
/// cancelled. Only one can be retained: a second read dropped meanwhile (reads racing on
/// one stream) is cancelled like any operation.
///
/// On a readiness backend (`wait_readable`), the receive is built only once the socket may
/// have something to read ([`context::poll_readable`]): a read that has to wait costs no
/// operation.
struct SingleRead<'a, B: IoBufMut + 'static> {
    stream: &'a Stream,
    op: Op<Recv<B>>,
    wait_readable: bool,
}

impl<B: IoBufMut> std::future::Future for SingleRead<'_, B> {
    type Output = BufResult<usize, B>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BufResult<usize, B>> {
        if self.wait_readable {
            // Asked once: the wake that follows a `Pending` is the readable edge, and from
            // then on the receive's own submission decides (a spurious wake costs it one
            // `NotReady`).
            self.wait_readable = false;
            let fd = &self.stream.fd;
            std::task::ready!(context::poll_readable(fd.raw(), fd.id(), cx.waker()));
        }
        std::pin::Pin::new(&mut self.op).poll(cx)
    }
}

impl<B: IoBufMut> Drop for SingleRead<'_, B> {
    fn drop(&mut self) {
        // The common case first: the receive completed (or was never submitted), so there
        // is nothing the stream could retain.
        if !self.op.in_flight() {
            return;
        }
        let mut st = self.stream.read.borrow_mut();
        if st.retained.is_some() {
            return;
        }
        if let Some(recv) = Retained::detach(&mut self.op, |r| Box::new(r) as Box<dyn AnyRecv>) {
            let watchers = Arc::new(Watchers::default());
            st.retained = Some(Box::new(RetainedRecv {
                recv,
                start: 0,
                end: 0,
                wake_all: Waker::from(watchers.clone()),
                watchers,
            }));
        }
    }
}

/// The future of [`Stream::write`]: a send, or its refusal (writes in flight on another
/// runtime). A plain future rather than an `async fn`: one state machine less per write.
pub(crate) enum Write<B: IoBuf + 'static> {
    Op(Op<Send<B>>),
    Refused(Option<(io::Error, B)>),
}

impl<B: IoBuf> std::future::Future for Write<B> {
    type Output = BufResult<usize, B>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BufResult<usize, B>> {
        match self.get_mut() {
            Write::Op(op) => std::pin::Pin::new(op).poll(cx),
            Write::Refused(r) => {
                let (e, buf) = r
                    .take()
                    .expect("coring: write future polled after completion");
                Poll::Ready((Err(e), buf))
            }
        }
    }
}

/// How a read goes (see [`Stream::choose_path`]).
enum Path<'a> {
    /// Through the multishot receive, on this driver (the current runtime's, or another's
    /// that finished the receive and still holds what it got).
    Multishot(Reading<'a>, Rc<RefCell<Driver>>),
    SingleShot,
    /// Single-shot on a runtime without multishot receives (a readiness backend, or
    /// io_uring with them turned off): wait for readability before building the receive.
    SingleShotReadiness,
    /// A dropped read's receive is retained: read what it got first.
    Retained(RetainedWait<'a>),
    /// Single-shot because the stream is in bulk mode; its result may end that mode.
    Direct,
    /// The stream's multishot receive (and maybe data) lives on another runtime.
    Elsewhere,
}

/// A read waiting for the retained receive, as watcher `.1` of it: unregistered when the
/// read ends or is dropped.
struct RetainedWait<'a>(&'a RefCell<ReadState>, u64);

impl Drop for RetainedWait<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.0.borrow_mut().retained.as_ref() {
            a.watchers.unwatch(self.1);
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
struct Reading<'a>(&'a RefCell<ReadState>);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut st = self.0.borrow_mut();
        st.reading = false;
        st.provided.settle();
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

impl ReadState {
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
}

impl RetainedRecv {
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

impl Stream {
    pub(crate) fn new(fd: SharedFd) -> Stream {
        Stream {
            fd,
            read: RefCell::default(),
            no_zerocopy: std::cell::Cell::new(false),
        }
    }

    /// Cancels the armed multishot receive and a retained receive at once where the
    /// backend can, so that no operation holds the descriptor any more; data they had
    /// received stays in the stream. Best effort: a receive that cannot be cancelled
    /// synchronously, or that has data queued, stays (cancelled) until reads drain it.
    /// Returns 1 if a retained receive that has finished still holds the descriptor (for
    /// its data, not for the kernel), else 0.
    pub(crate) fn disarm(&self) -> usize {
        self.cancel_retained();
        let mut st = self.read.borrow_mut();
        st.provided.cancel_now();
        // A retained receive that finished holds the descriptor, but not for the kernel.
        usize::from(st.retained.as_ref().is_some_and(|a| a.recv.is_collected()))
    }

    /// Cancels a retained receive at once where the backend can, keeping what it received
    /// for reads; an empty or failed result is dropped with it.
    fn cancel_retained(&self) {
        let mut st = self.read.borrow_mut();
        let Some(a) = st.retained.as_mut() else {
            return;
        };
        if let Some(c) = a.recv.cancel_now() {
            if a.complete(c).is_err() {
                st.retained = None;
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
            let st = self.read.borrow();
            if !st.provided.is_idle() || st.retained.is_some() {
                drop(st);
                return Err(self);
            }
        }
        let Stream { fd, read, .. } = self;
        drop(read);
        Ok(fd)
    }

    pub(crate) async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        if let Err(e) = crate::buf::check_room(buf.bytes_total(), "read") {
            return (Err(e), buf);
        }
        let mut buf = buf;
        let (reading, driver) = loop {
            match self.choose_path() {
                Path::Multishot(reading, driver) => break (reading, driver),
                Path::SingleShot => return self.single(buf).await,
                Path::SingleShotReadiness => {
                    let mut read = self.single(buf);
                    read.wait_readable = true;
                    return read.await;
                }
                Path::Retained(wait) => {
                    let res = poll_fn(|cx| self.poll_retained(cx, wait.1, &mut buf)).await;
                    drop(wait);
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
                        let mut st = self.read.borrow_mut();
                        // A short read (not EOF) argues for going back to multishot.
                        let short = n > 0 && n < bulk_bytes(st.provided.buf_size());
                        st.observe(short);
                    }
                    return (res, buf);
                }
                Path::Elsewhere => return (Err(elsewhere()), buf),
            }
        };
        let fd = self.fd.fd_ref();
        let read = poll_fn(|cx| {
            let hold = || RecvMultiOrphan {
                fd: self.fd.clone(),
            };
            let mut st = self.read.borrow_mut();
            st.provided.poll_read(cx, &driver, fd, hold, &mut buf)
        })
        .await;
        let out = match read {
            ProvidedRead::Read(res) => {
                if let Ok(n) = res {
                    self.observe_multishot(n, buf.bytes_total());
                }
                (res, buf)
            }
            ProvidedRead::Direct => self.single(buf).await,
        };
        drop(reading);
        out
    }

    /// After a multishot-path read of `n` bytes into a buffer of `cap`: whether it argues
    /// for bulk mode (see [`ReadState::observe`]), and if the stream switches, the cancel
    /// of its multishot receive. Its queued arrivals (and any racing the cancel) are read
    /// first, in order; then its final completion sends reads to the socket directly. No
    /// observation while a receive cancelled for bulk mode drains.
    fn observe_multishot(&self, n: usize, cap: usize) {
        let mut st = self.read.borrow_mut();
        if st.direct {
            return;
        }
        // A read that began with leftover data (a caller buffer not a multiple of the
        // provided ones, in a bulk stream) is neutral: it neither votes nor breaks a streak.
        let Some(first_full) = st.provided.take_first_full() else {
            return;
        };
        let big = bulk_bytes(st.provided.buf_size());
        let bulk = first_full && n >= big && cap > big;
        if st.observe(bulk) {
            st.provided.cancel_for_bulk();
        }
    }

    /// A single-shot receive into `buf` that the stream retains if the read is dropped.
    fn single<B: IoBufMut>(&self, buf: B) -> SingleRead<'_, B> {
        SingleRead {
            stream: self,
            op: Op::new(Recv::new(&self.fd, buf, true)),
            wait_readable: false,
        }
    }

    /// Reads from the retained receive, as its watcher `watcher`: waits for its
    /// completion, then copies what it received (the rest stays for the next read).
    /// `None`: there is none any more (another read took all it had), or it ended
    /// cancelled without data (by `disarm`), which is no error of the read.
    fn poll_retained<B: IoBufMut>(
        &self,
        cx: &mut Context<'_>,
        watcher: u64,
        buf: &mut B,
    ) -> Poll<Option<io::Result<usize>>> {
        let mut st = self.read.borrow_mut();
        let Some(a) = st.retained.as_mut() else {
            return Poll::Ready(None);
        };
        if a.end == 0 {
            a.watchers.watch(watcher, cx.waker());
            let mut all = Context::from_waker(&a.wake_all);
            let c = match a.recv.poll_here(&mut all) {
                Poll::Ready(Ok(c)) => c,
                Poll::Ready(Err(())) => return Poll::Ready(Some(Err(elsewhere()))),
                // Cancelled by the read's token: the receive stays for the next read.
                Poll::Pending if context::cancel_requested(cx.waker()) => {
                    return Poll::Ready(Some(Err(context::cancelled())));
                }
                Poll::Pending => return Poll::Pending,
            };
            if c.res == -c::ECANCELED {
                st.retained = None;
                return Poll::Ready(None);
            }
            if let Err(res) = a.complete(c) {
                // End of file or an error: the stream's, reported once here.
                st.retained = None;
                if let Ok(0) = res {
                    crate::buf::set_empty(buf);
                }
                return Poll::Ready(Some(res));
            }
        }
        let n = copy_out(&a.recv.data().received(a.end)[a.start..], buf, 0);
        a.start += n;
        if a.start == a.end {
            st.retained = None;
        }
        Poll::Ready(Some(Ok(n)))
    }

    /// Chooses a read's path: multishot if the backend supports it and no other read is in
    /// progress; never single-shot past data another runtime's receive holds for the
    /// stream (that would skip or reorder bytes).
    fn choose_path(&self) -> Path<'_> {
        let mut st = self.read.borrow_mut();
        if st.retained.is_some() {
            // Every read waits for it (it is not any one read's), and reads what it got
            // first; one on another runtime that has not finished it gets `Elsewhere`.
            return Path::Retained(RetainedWait(&self.read, next_watcher_id()));
        }
        // A runtime without multishot receives, known from an earlier read, and nothing
        // held: the answer without reaching for the runtime's driver.
        if st.provided.is_idle()
            && st.single_shot_runtime != 0
            && st.single_shot_runtime == context::driver_id()
        {
            return if st.direct && !st.reading {
                Path::Direct
            } else {
                Path::SingleShotReadiness
            };
        }
        let driver = context::driver();
        match st.provided.location(&driver) {
            // The receive (or data it got) is another runtime's. Once that runtime has
            // finished it (for instance cancelled it when dropped), what it got is read
            // from here, in order; until then it must be read there.
            Location::RunningElsewhere => return Path::Elsewhere,
            Location::FinishedElsewhere(_) if st.reading => return Path::Elsewhere,
            Location::FinishedElsewhere(d) => {
                st.reading = true;
                drop(st);
                return Path::Multishot(Reading(&self.read), d);
            }
            Location::Here | Location::Idle => {}
        }
        if st.reading {
            return Path::SingleShot;
        }
        if st.direct && st.provided.is_idle() {
            // Bulk mode, and the multishot receive (cancelled on entering it) has been
            // drained: nothing received is held, so reading the socket keeps the order.
            return Path::Direct;
        }
        if st.provided.is_idle() && !driver.borrow_mut().backend_mut().multishot_recv() {
            st.single_shot_runtime = context::driver_id();
            return Path::SingleShot;
        }
        st.reading = true;
        st.provided.begin_read();
        drop(st);
        Path::Multishot(Reading(&self.read), driver)
    }

    /// Whether a read may receive from the socket directly, past the stream's read
    /// machinery: nothing received is held (a retained receive, multishot arrivals) and no
    /// read is in progress. An armed multishot receive holding nothing is cancelled at once
    /// for it where the backend can (a later plain read arms it again).
    fn may_read_directly(&self) -> bool {
        let mut st = self.read.borrow_mut();
        if st.retained.is_some() || st.reading {
            return false;
        }
        if !st.provided.is_idle() {
            st.provided.cancel_now();
        }
        st.provided.is_idle()
    }

    /// A receive into a registered buffer (IORING_OP_READ_FIXED on a socket where the pool
    /// is registered with this runtime's ring; a plain receive elsewhere). Data the stream
    /// holds already is read first, as by `read` (copied into the buffer).
    pub(crate) async fn read_fixed(&self, buf: FixedBuf) -> BufResult<usize, FixedBuf> {
        if !self.may_read_directly() {
            return self.read(buf).await;
        }
        let fixed = buf.fixed();
        SingleRead {
            stream: self,
            op: Op::new(Recv::new(&self.fd, buf, true).with_fixed(fixed)),
            wait_readable: true,
        }
        .await
    }

    /// A vectored receive: fills the buffers in order, up to their capacities. Data the
    /// stream holds already is read first, into the first buffer with room (as by `read`).
    pub(crate) async fn readv<B: IoBufMut>(&self, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        let mut bufs = bufs;
        let Some(i) = bufs.iter().position(|b| b.bytes_total() > 0) else {
            let e = crate::buf::check_room(0, "readv").unwrap_err();
            return (Err(e), bufs);
        };
        if !self.may_read_directly() {
            // Held data goes into the first buffer with room; the ones after it hold
            // nothing (as after a vectored read that filled only the first).
            let b = bufs.remove(i);
            let (res, b) = self.read(b).await;
            bufs.insert(i, b);
            for later in &mut bufs[i + 1..] {
                crate::buf::set_empty(later);
            }
            return (res, bufs);
        }
        Op::new(RecvVectored::new(&self.fd, bufs)).await
    }

    /// A vectored send of the buffers' initialised bytes, in order; may send fewer.
    pub(crate) async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        if let Err(e) = self.fd.check_write_order() {
            return (Err(e), bufs);
        }
        let op = SendVectored::new(&self.fd, bufs, 0);
        if op.is_empty() {
            return (Ok(0), op.into_bufs());
        }
        Op::new(op).await
    }

    /// Sends every initialised byte of the buffers, in order, looping over short sends.
    pub(crate) async fn write_vectored_all<B: IoBuf>(&self, bufs: Vec<B>) -> BufResult<(), Vec<B>> {
        let total: usize = bufs.iter().map(|b| b.bytes_init()).sum();
        let mut bufs = bufs;
        let mut done = 0;
        while done < total {
            if let Err(e) = self.fd.check_write_order() {
                return (Err(e), bufs);
            }
            let (res, back) = Op::new(SendVectored::new(&self.fd, bufs, done)).await;
            bufs = back;
            match res {
                Ok(0) => {
                    let e = io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("write accepted 0 bytes after {done} of {total}"),
                    );
                    return (Err(e), bufs);
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), bufs),
            }
        }
        (Ok(()), bufs)
    }

    /// A zero-copy send (see `stream_io!`'s `send_zc`).
    pub(crate) async fn send_zc<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        self.zero_copy(buf, |fd, buf| Send::zero_copy(fd, buf, true))
            .await
    }

    /// A zero-copy send from a registered buffer (see `stream_io!`'s `send_zc_fixed`).
    pub(crate) async fn send_zc_fixed(&self, buf: FixedBuf) -> BufResult<usize, FixedBuf> {
        self.zero_copy(buf, |fd, buf| Send::zero_copy_fixed(fd, buf, true))
            .await
    }

    /// Runs the zero-copy send `send` makes of `buf`; where the socket refuses zero-copy
    /// sends (EOPNOTSUPP, refused before anything was sent: Linux has them for TCP and UDP
    /// only), a plain send instead, for this one and every later `send_zc` of the stream.
    async fn zero_copy<B: IoBuf>(
        &self,
        buf: B,
        send: impl FnOnce(&SharedFd, B) -> crate::op::rw::ZeroCopy<Send<B>>,
    ) -> BufResult<usize, B> {
        if let Err(e) = self.fd.check_write_order() {
            return (Err(e), buf);
        }
        let buf = if self.no_zerocopy.get() {
            buf
        } else {
            match Op::new(send(&self.fd, buf)).await {
                (Err(e), buf) if e.raw_os_error() == Some(c::EOPNOTSUPP) => {
                    self.no_zerocopy.set(true);
                    buf
                }
                done => return done,
            }
        };
        self.write(buf).await
    }

    pub(crate) fn write<B: IoBuf>(&self, buf: B) -> Write<B> {
        match self.fd.check_write_order() {
            Ok(()) => Write::Op(Op::new(Send::new(&self.fd, buf, true))),
            Err(e) => Write::Refused(Some((e, buf))),
        }
    }

    pub(crate) fn write_all<B: IoBuf>(
        &self,
        buf: B,
    ) -> impl std::future::Future<Output = BufResult<(), B>> + '_ {
        op::write_all(buf, |slice, _| self.write(slice))
    }

    pub(crate) fn read_exact<B: IoBufMut>(
        &self,
        buf: B,
    ) -> impl std::future::Future<Output = BufResult<(), B>> + '_ {
        op::read_exact(buf, |slice, _| self.read(slice))
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
                let finished = self.quiesce();
                self.shared()
                    .unregister(concat!(stringify!($ty), "::unregister"), finished)
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
                let fd = $crate::platform::FromRaw::into_raw(socket);
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
                let shared = match self.into_shared() {
                    Ok(shared) => shared,
                    Err(this) => return Err(this),
                };
                match shared.into_raw() {
                    // SAFETY: into_raw gave us sole ownership of the descriptor.
                    Ok(fd) => Ok(unsafe { <$std as $crate::platform::FromRaw>::from_raw(fd) }),
                    Err(fd) => Err(Self::from_shared(fd)),
                }
            }
        }

        $crate::net::stream::raw_conversions!($ty);

        #[cfg(feature = "fault-injection")]
        impl $crate::fault::sealed::Sealed for $ty {}

        #[cfg(feature = "fault-injection")]
        impl $crate::fault::FaultTarget for $ty {
            fn fault_id(&self) -> u64 {
                self.shared().id()
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

/// The raw-descriptor traits of a socket type: `AsRawFd`, `AsFd`, `FromRawFd`, `IntoRawFd`.
#[cfg(unix)]
macro_rules! raw_conversions {
    ($ty:ident) => {
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
    };
}

/// The raw-socket traits of a socket type: `AsRawSocket`, `AsSocket`, `FromRawSocket`,
/// `IntoRawSocket`.
#[cfg(windows)]
macro_rules! raw_conversions {
    ($ty:ident) => {
        impl std::os::windows::io::AsRawSocket for $ty {
            fn as_raw_socket(&self) -> std::os::windows::io::RawSocket {
                $crate::platform::windows::socket_of(self.shared().raw()) as u64
            }
        }

        impl std::os::windows::io::AsSocket for $ty {
            fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
                // SAFETY: the descriptor stays open while `self` is borrowed.
                unsafe {
                    std::os::windows::io::BorrowedSocket::borrow_raw(
                        $crate::platform::windows::socket_of(self.shared().raw()) as u64,
                    )
                }
            }
        }

        impl std::os::windows::io::FromRawSocket for $ty {
            /// # Safety
            ///
            /// `socket` must be an open socket of the right kind that the caller owns and gives
            /// up; it should be in non-blocking mode.
            unsafe fn from_raw_socket(socket: std::os::windows::io::RawSocket) -> $ty {
                // Socket values fit 32 bits (see `platform::windows`).
                Self::from_shared($crate::op::SharedFd::new(socket as isize as i32))
            }
        }

        impl std::os::windows::io::IntoRawSocket for $ty {
            /// # Panics
            ///
            /// If an operation still uses the descriptor; finish or drop it first.
            fn into_raw_socket(self) -> std::os::windows::io::RawSocket {
                match self.into_shared().map(|s| s.into_raw()) {
                    Ok(Ok(fd)) => $crate::platform::windows::socket_of(fd) as u64,
                    _ => panic!(concat!(
                        stringify!($ty),
                        "::into_raw_socket: an operation still uses the socket, or it holds \
                         received data not yet read; let it finish (or read it) first"
                    )),
                }
            }
        }
    };
}

pub(crate) use raw_conversions;

/// Implements the reads, writes and shutdown every stream type shares, on its `inner`
/// [`Stream`].
macro_rules! stream_io {
    () => {
        /// Receives into the start of the buffer (up to its capacity); `Ok(0)` means the
        /// peer closed its side. The buffer comes back holding exactly the bytes received
        /// (a `Vec`'s length is set to them, whatever it was before); to append to a
        /// `Vec` that already holds data, pass `vec.slice(vec.len()..)`.
        ///
        /// A buffer with no capacity is an `InvalidInput` error (its `Ok(0)` would read as
        /// the peer closing).
        ///
        /// Cancel-safe: if the future is dropped (a `select` that picked another branch,
        /// a timeout), nothing the kernel received for it is lost; the next read returns
        /// it. This holds for one read at a time: of two reads in flight at once on one
        /// stream that are both dropped, the second one's bytes may be lost.
        // These return the inner future itself rather than wrapping it in an `async fn`:
        // one state machine less to move and drop per call.
        pub fn read<B: IoBufMut>(
            &self,
            buf: B,
        ) -> impl std::future::Future<Output = BufResult<usize, B>> + '_ {
            self.inner.read(buf)
        }

        /// Receives until the buffer's capacity is full; `UnexpectedEof` if the peer closes
        /// first.
        pub fn read_exact<B: IoBufMut>(
            &self,
            buf: B,
        ) -> impl std::future::Future<Output = BufResult<(), B>> + '_ {
            self.inner.read_exact(buf)
        }

        /// Sends the buffer's initialised bytes; may send fewer. A closed peer gives
        /// `BrokenPipe` (never SIGPIPE).
        ///
        /// Sends (and a `shutdown(Write)`) take effect in the order they were issued, also
        /// from several tasks at once. While a send of the stream is in flight on one
        /// runtime, a send or `shutdown(Write)` issued on another runtime of the thread fails
        /// with `InvalidInput` (it could overtake it), as a read does when another runtime
        /// holds the stream's receive.
        pub fn write<B: IoBuf>(
            &self,
            buf: B,
        ) -> impl std::future::Future<Output = BufResult<usize, B>> + '_ {
            self.inner.write(buf)
        }

        /// Sends all of the buffer's initialised bytes, looping over short sends. Not atomic
        /// with respect to other writers of the stream: another task's send can land
        /// between two parts of a short-sent buffer.
        pub fn write_all<B: IoBuf>(
            &self,
            buf: B,
        ) -> impl std::future::Future<Output = BufResult<(), B>> + '_ {
            self.inner.write_all(buf)
        }

        /// Borrows the stream as a read half and a write half, for two tasks (or two
        /// branches of a `join`) that each own one side. The stream's own methods work
        /// as well: every one takes `&self`.
        pub fn split(&self) -> (crate::net::ReadHalf<'_>, crate::net::WriteHalf<'_>) {
            crate::net::split::split(&self.inner)
        }

        /// Splits the stream into owned halves that can move into two tasks (on this
        /// thread: they are `!Send`, like the stream), and be put back together with
        /// [`OwnedReadHalf::reunite`](crate::net::OwnedReadHalf::reunite).
        pub fn into_split(
            self,
        ) -> (
            crate::net::OwnedReadHalf<Self>,
            crate::net::OwnedWriteHalf<Self>,
        ) {
            crate::net::split::into_split(self, |s| &s.inner)
        }

        /// Sends up to `len` bytes of `file`, starting at `offset`, without copying them
        /// through user space; returns how many were sent. Fewer than `len` only if the
        /// file ends first (0 if `offset` is at or past its end); `len` 0 sends nothing.
        /// The file's own position is neither used nor moved. A registered file (or
        /// stream) is used by its slot.
        ///
        /// How (see `src/net/sendfile.rs`): `sendfile(2)` (Linux's, FreeBSD's or
        /// macOS's) on the readiness backend and on io_uring, where it runs during
        /// submission when the file's pages are cached and on the blocking pool when they
        /// are not; with [`Builder::splice_files`](crate::Builder::splice_files), io_uring
        /// instead links two IORING_OP_SPLICEs (file to pipe, pipe to socket) per up to
        /// 256 KiB, through a pipe the runtime pools. On Windows, a copy through a 64 KiB
        /// buffer (`read_at` then `write_all`; `TransmitFile` is not used yet).
        ///
        /// Order: the bytes follow those of writes that completed before the call. Do not
        /// write to the stream from another task while it runs: unlike `write`, its
        /// transfers are not kept in issue order with other sends, so such a write could
        /// land inside the file's bytes.
        ///
        /// Cancel-safe in the same sense as a dropped `write_all`: dropping the future
        /// stops the transfer (the bytes already sent stay sent; how many is unknown);
        /// a splice transfer's pipe is closed, never reused with bytes in it, so the next
        /// `send_file` on the runtime sends exactly its own bytes.
        ///
        /// # Errors
        ///
        /// `BrokenPipe` or `ConnectionReset` if the peer closed (on Linux, `splice` and
        /// `sendfile` raise SIGPIPE first where the process has not ignored it, which
        /// Rust programs do by default); an error reading the file; `InvalidInput` for
        /// an `offset` beyond `i64::MAX` or while writes of the stream are in flight on
        /// another runtime. After an error, how many bytes were sent is unknown.
        pub async fn send_file(
            &self,
            file: &$crate::fs::File,
            offset: u64,
            len: u64,
        ) -> std::io::Result<u64> {
            $crate::net::sendfile::send_file(&self.inner, file, offset, len).await
        }

        /// Sends the buffer's initialised bytes without copying them (io_uring's
        /// IORING_OP_SEND_ZC); may send fewer, as [`write`](Self::write).
        ///
        /// The kernel sends from the buffer's own pages and may still reference them after
        /// the send itself completed (until TCP has them acknowledged, or the local peer
        /// has copied them), so the future completes, and hands the buffer back, only when
        /// the kernel's notification says it no longer does; the result is the send's
        /// (bytes sent). A future dropped meanwhile leaves the buffer to the runtime,
        /// which frees it after the notification, never before. Sends stay in issue order
        /// with the stream's other sends (the next one need not wait for the
        /// notification).
        ///
        /// Worth it for large buffers (tens of KiB): for small ones the notification
        /// costs more than the copy it saves. Where the backend or kernel has no
        /// zero-copy send (the fallback and IOCP backends, Linux before 6.0, and Unix-domain
        /// sockets, for which Linux has none: the first refusal switches the stream to plain
        /// sends), this is a plain send, with the same result and the buffer back at once.
        pub fn send_zc<B: IoBuf>(
            &self,
            buf: B,
        ) -> impl std::future::Future<Output = BufResult<usize, B>> + '_ {
            self.inner.send_zc(buf)
        }

        /// [`send_zc`](Self::send_zc) from a buffer of a
        /// [`FixedBufPool`](crate::buf::FixedBufPool): where the pool is registered with
        /// this runtime's ring, the kernel uses the registered pages
        /// (IORING_RECVSEND_FIXED_BUF) and skips pinning them for the send; elsewhere as
        /// `send_zc` with any buffer.
        pub fn send_zc_fixed(
            &self,
            buf: $crate::buf::FixedBuf,
        ) -> impl std::future::Future<Output = BufResult<usize, $crate::buf::FixedBuf>> + '_ {
            self.inner.send_zc_fixed(buf)
        }

        /// Sends from a registered buffer (a [`FixedBuf`](crate::buf::FixedBuf)): the
        /// registered-buffer send, which on io_uring is
        /// [`send_zc_fixed`](Self::send_zc_fixed) (the kernel's only send that takes a
        /// registered buffer; its pages are pinned already, so nothing is copied), and
        /// elsewhere a plain send of the same memory. Completes once the kernel no longer
        /// references the buffer, as `send_zc`.
        pub fn write_fixed(
            &self,
            buf: $crate::buf::FixedBuf,
        ) -> impl std::future::Future<Output = BufResult<usize, $crate::buf::FixedBuf>> + '_ {
            self.inner.send_zc_fixed(buf)
        }

        /// Receives into the start of a registered buffer (a
        /// [`FixedBuf`](crate::buf::FixedBuf)): where its pool is registered with this
        /// runtime's ring, io_uring reads the socket with IORING_OP_READ_FIXED straight into
        /// the registered pages; elsewhere a plain receive. Data the stream already holds
        /// (received by an earlier [`read`](Self::read) into the runtime's provided
        /// buffers) is returned first, copied, as `read` would. Cancel-safe as `read`.
        pub fn read_fixed(
            &self,
            buf: $crate::buf::FixedBuf,
        ) -> impl std::future::Future<Output = BufResult<usize, $crate::buf::FixedBuf>> + '_ {
            self.inner.read_fixed(buf)
        }

        /// Receives into several buffers in one call (`recvmsg` with an iovec per buffer),
        /// filling them in order, each from its start; returns the total. Data the stream
        /// already holds is returned first, into the first buffer with room.
        ///
        /// Not cancel-safe, unlike [`read`](Self::read): if the future is dropped while the
        /// receive is in flight, it is cancelled, and bytes it had received are lost.
        pub fn readv<B: IoBufMut>(
            &self,
            bufs: Vec<B>,
        ) -> impl std::future::Future<Output = BufResult<usize, Vec<B>>> + '_ {
            self.inner.readv(bufs)
        }

        /// Sends the buffers' initialised bytes in one call (`sendmsg` with an iovec per
        /// buffer), in order; may send fewer. Ordered with the stream's other sends, as
        /// [`write`](Self::write).
        pub fn writev<B: IoBuf>(
            &self,
            bufs: Vec<B>,
        ) -> impl std::future::Future<Output = BufResult<usize, Vec<B>>> + '_ {
            self.inner.writev(bufs)
        }

        /// Sends every initialised byte of the buffers, in order, with vectored sends,
        /// looping over short ones (each resumes where the last stopped). Not atomic with
        /// respect to other writers, as [`write_all`](Self::write_all).
        pub fn write_vectored_all<B: IoBuf>(
            &self,
            bufs: Vec<B>,
        ) -> impl std::future::Future<Output = BufResult<(), Vec<B>>> + '_ {
            self.inner.write_vectored_all(bufs)
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
