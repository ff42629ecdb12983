//! The driver: the operation table, its lifecycle, cancellation and orphans, written once
//! for every backend.
//!
//! The driver owns every operation from submission to its final completion, whatever
//! happens to the operation's future: dropped, forgotten, or the runtime shut down. It
//! runs on one of the backends of [`backend`], whose contract is the [`Backend`] trait;
//! everything that decides what a completion means lives here, once: the
//! `-errno -> io::Error` conversion ([`Completion::result`]), wakers, orphans and their
//! clean-up, the shutdown deadline, and the cap on a multishot receive's unread arrivals.
//!
//! Beside the table: `desc` (the backend-neutral description of an operation), `op` (the
//! `Op<T>` future and the operation trait), `syscall` (a description run as plain system
//! calls, for the readiness backend and the blocking pool), `offload` (the blocking pool),
//! `cached_read` and `backoff` (completing reads during submission, and rationing such
//! attempts), `fixed` (registered files and buffers) and `provided` (a stream's multishot
//! receive into the backend's provided buffers), `chain` (operations the kernel orders,
//! or the driver holds back to emulate that order: `coring::link`, deadlines), and `iopoll`
//! (which operations a backend runs on its polled ring, and what a refusal there means).

pub(crate) mod backend;
mod chain;
// Completing reads during submission and rationing it: the io_uring and readiness
// backends (Unix).
#[cfg(unix)]
pub(crate) mod backoff;
#[cfg(unix)]
pub(crate) mod cached_read;
pub(crate) mod dense;
pub(crate) mod desc;
pub(crate) mod fixed;
pub(crate) mod iopoll;
pub(crate) mod metrics;
pub(crate) mod offload;
pub(crate) mod op;
// Pipes for splicing files into sockets: Linux's splice(2).
#[cfg(target_os = "linux")]
pub(crate) mod pipes;
pub(crate) mod provided;
// A description run as plain system calls: Unix's, or Windows' (for the blocking pool).
#[cfg(unix)]
pub(crate) mod syscall;
#[cfg(windows)]
#[path = "syscall_windows.rs"]
pub(crate) mod syscall;

use crate::platform::RawFd;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

pub(crate) use backend::{AnyBackend, Backend, Enqueued, Linked, Push, Unpark, Wait};
pub(crate) use desc::OpDesc;
use metrics::LatencySampler;
pub use metrics::{Histogram, Metrics, OpLatency};

/// CQE flag: the completion names a provided buffer (id in the upper 16 bits).
pub(crate) const CQE_F_BUFFER: u32 = 1 << 0;
/// CQE flag: a multishot operation stays in flight; more completions follow.
pub(crate) const CQE_F_MORE: u32 = 1 << 1;
/// CQE flag: the completion is a zero-copy send's notification: the kernel no longer
/// references the send's buffer. It is the operation's final completion (no
/// [`CQE_F_MORE`]); its result carries nothing the operation needs.
pub(crate) const CQE_F_NOTIF: u32 = 1 << 3;
/// Where a CQE keeps the provided buffer's id.
pub(crate) const CQE_BUFFER_SHIFT: u32 = 16;

/// Most data arrivals a multishot receive may hold queued in its slot (received into
/// provided buffers, not yet collected by the stream's reads) before the driver asks the
/// kernel to cancel it.
///
/// Without a cap, a multishot receive empties the socket into the runtime's shared
/// provided-buffer ring even while nobody reads the stream: the socket's receive buffer
/// stays empty, TCP keeps the window open, and one slow reader can take every provided
/// buffer, pushing all other streams off the multishot path (-ENOBUFS). With the cap,
/// reaching it cancels the receive (an ordinary cancel by key, as for orphans, but the
/// slot keeps its owner and its queue: nothing is lost), so further data stays in the
/// socket and TCP flow control throttles the peer as with plain reads. The stream's reads
/// drain the queue, then see the final `-ECANCELED` and re-arm on a later read.
///
/// A stream therefore holds at most this many buffers in its slot, plus the one it is
/// partly reading, plus what the kernel receives between the reap that reaches the cap and
/// the cancel taking effect (one batch of task work: Linux retries a multishot receive up
/// to 32 times per wakeup, so a burst arriving at an idle stream can fill 32 buffers before
/// any reap sees them; the cap bounds what follows). With the default ring (256 × 4 KiB,
/// `Builder::recv_buffers`), 8 × 4 KiB = 32 KiB keeps a busy stream's reads fed between
/// trips into the kernel while leaving the ring to dozens of other streams; a ring of
/// fewer than 8 buffers runs out (ENOBUFS) before the cap.
///
/// A listener's multishot accept is capped the same way: at most this many accepted
/// connections wait in its slot, each holding a descriptor; beyond that the accept is
/// cancelled and further connections wait in the kernel's backlog (as with single-shot
/// accepts) until the listener's accepts have taken the queued ones and armed it again.
pub(crate) const MULTISHOT_QUEUE_CAP: usize = 8;

/// What a backend reports when an operation finishes (or, for a multishot operation, makes
/// progress): the raw result (`>= 0`, or `-errno`) and flags (CQE flags on io_uring; the
/// fallback backend only ever reports 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) res: i32,
    pub(crate) flags: u32,
}

impl Completion {
    /// A completion carrying `-errno`, for operations that never reached the kernel.
    pub(crate) fn error(errno: i32) -> Completion {
        Completion {
            res: -errno,
            flags: 0,
        }
    }

    /// Whether more completions of the same (multishot) operation follow; the completion
    /// without this flag is the operation's final one.
    pub(crate) fn more(self) -> bool {
        self.flags & CQE_F_MORE != 0
    }

    /// The provided buffer this completion filled, if it names one.
    pub(crate) fn buffer(self) -> Option<u16> {
        (self.flags & CQE_F_BUFFER != 0).then_some((self.flags >> CQE_BUFFER_SHIFT) as u16)
    }

    /// The one `-errno -> io::Error` conversion every completion goes through.
    pub(crate) fn result(self) -> io::Result<u32> {
        if self.res < 0 {
            Err(io::Error::from_raw_os_error(-self.res))
        } else {
            Ok(self.res as u32)
        }
    }
}

/// What [`Driver::submit`] did with an operation.
pub(crate) enum Submitted {
    /// In flight under this key.
    InFlight(usize),
    /// Finished during submission (a read served from the page cache): its final
    /// completion, delivered at once through the same conversion as any other.
    Completed(Completion),
    /// Not submitted: it would only wait for its descriptor's readiness, and the backend
    /// wakes the waker when it may be ready ([`Push::NotReady`]); or the task used up its
    /// inline completions for this poll and yields (woken at once). Submit it again when
    /// polled.
    NotReady,
}

/// Something that finishes an operation whose future is gone: it receives the final
/// completion, builds the output and drops it (closing a returned fd, freeing a buffer).
pub(crate) trait Orphan {
    fn finish(self: Box<Self>, c: Completion);

    /// Receives a completion of a multishot operation that is not its final one (it
    /// carries [`CQE_F_MORE`]) and that no owner will see: called while the driver is
    /// borrowed, so it only releases what the completion carries (closes an accepted
    /// descriptor) and runs no user code. Provided buffers are the driver's business,
    /// not this.
    fn progress(&mut self, _c: Completion) {}
}

/// One entry of the operation table.
///
/// A multishot operation is the same lifecycle with a queue: its completions that carry
/// [`CQE_F_MORE`] wait in `queued`, in order, until the owner collects them one by one
/// ([`Driver::poll_op`]); the slot stays in flight until the completion without the flag,
/// which is final. A single-shot operation never queues anything (and so never allocates).
enum Slot {
    /// Submitted; the owner (if it polled) waits with this waker. `group` is the
    /// [`CancelToken`](crate::cancel::CancelToken) group it was started under (0: none),
    /// which [`Driver::cancel_group`] cancels.
    InFlight {
        waker: Option<Waker>,
        queued: VecDeque<Completion>,
        group: u32,
        /// The operation's entry in the latency sampler (0: not timed; see
        /// [`LatencySampler::started`]).
        timed: u32,
    },
    /// The final completion arrived; the owner has not collected it (nor, for a multishot
    /// operation, the completions queued before it).
    Finished {
        queued: VecDeque<Completion>,
        last: Completion,
        /// The driver's count of final completions when this one was reaped: orders
        /// operations by when they finished (see [`Driver::finished_seq`]).
        seq: u64,
    },
    /// The owner was dropped; the driver owns the operation until its final completion,
    /// and hands back the provided buffer of any completion it receives meanwhile.
    Orphaned(Box<dyn Orphan>),
}

impl Slot {
    fn in_flight(waker: Option<Waker>, group: u32) -> Slot {
        Slot::InFlight {
            waker,
            queued: VecDeque::new(),
            group,
            timed: 0,
        }
    }
}

/// The driver: operation table plus backend.
pub(crate) struct Driver {
    /// Unique within the process (never reused, unlike an address).
    id: u64,
    ops: Slab<Slot>,
    backend: AnyBackend,
    /// Orphans whose final completion was reaped, waiting to be finished
    /// ([`Driver::finish_orphans`]) outside the driver's borrow: finishing one runs user
    /// `Drop` code (a buffer, an accepted connection's descriptor).
    finished: Vec<(Box<dyn Orphan>, Completion)>,
    /// Provided buffers named by completions no owner will see (orphans'), handed back to
    /// the backend after reaping.
    recycle: Vec<u16>,
    /// Multishot receives whose queue of unread arrivals reached [`MULTISHOT_QUEUE_CAP`]
    /// during reaping; cancelled (owner kept) once the reap is done.
    throttle: Vec<usize>,
    /// Final completions reaped so far for owned operations (the next one's `seq`).
    finished_seq: u64,
    /// Operations in the table that have not reached the backend: staged by a `link`
    /// being polled, or held behind the chain member before them (see `chain.rs`).
    /// Nearly always empty.
    held: Vec<chain::Held>,
    pub(crate) metrics: Metrics,
    /// Times one operation in so many, per opcode ([`Metrics::op_latency`]).
    sampler: LatencySampler,
    /// Whether parks are timed ([`Metrics::time_parked`]; `Builder::time_parks`).
    pub(crate) time_parks: bool,
    /// Collections of completions so far ([`Metrics::reap_batch`]'s count).
    reaps: u64,
    /// Empty pipes for file-to-socket splices (`net::sendfile`).
    #[cfg(target_os = "linux")]
    pub(crate) pipes: pipes::PipePool,
    /// Errors the next kernel entries return instead of entering (test hook: proves that
    /// pushed work survives a failed `io_uring_enter`).
    #[cfg(feature = "test-util")]
    injected: VecDeque<i32>,
}

impl Driver {
    pub(crate) fn new(backend: AnyBackend, latency_sample: u32) -> Driver {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Driver {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ops: Slab::with_capacity(64),
            backend,
            finished: Vec::new(),
            recycle: Vec::new(),
            throttle: Vec::new(),
            finished_seq: 0,
            held: Vec::new(),
            metrics: Metrics::default(),
            sampler: LatencySampler::new(latency_sample),
            time_parks: false,
            reaps: 0,
            #[cfg(target_os = "linux")]
            pipes: pipes::PipePool::default(),
            #[cfg(feature = "test-util")]
            injected: VecDeque::new(),
        }
    }

    /// The driver's part of a [`Metrics`] snapshot: its counters, the backend's (blocking
    /// pool, polled ring, completion-queue overflow) and the latency histograms.
    pub(crate) fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        // The batches of zero, counted but not recorded (a failed entry counts as one).
        let zeros = m.enters.saturating_sub(m.enter_batch.count());
        m.enter_batch.add_zeros(zeros);
        let zeros = self.reaps.saturating_sub(m.reap_batch.count());
        m.reap_batch.add_zeros(zeros);
        m.ops_offloaded = self.backend.offloaded();
        m.cq_overflow = self.backend.cq_overflow();
        if let Some(route) = self.backend.poll_route() {
            (m.ops_polled, m.ops_poll_rerouted) = route.counts();
        }
        m.op_latency = self.sampler.table().to_vec();
        m
    }

    /// Makes the next kernel entries fail with these errnos, without entering (test hook).
    #[cfg(feature = "test-util")]
    pub(crate) fn inject_enter_errors(&mut self, errnos: &[i32]) {
        self.injected.extend(errnos);
    }

    /// One call of the backend's `enter` (or an injected failure, in tests).
    fn enter_once(&mut self, wait: Wait) -> io::Result<()> {
        self.metrics.enters += 1;
        #[cfg(feature = "test-util")]
        if let Some(errno) = self.injected.pop_front() {
            let e = io::Error::from_raw_os_error(errno);
            return Err(backend::classify_enter_error(e));
        }
        let batch = self.backend.enter(wait)?;
        // Zeros are not recorded: the snapshot counts them from `enters`.
        if batch != 0 {
            self.metrics.enter_batch.record(batch as u64);
        }
        Ok(())
    }

    /// The driver's identity: unique within the process, never 0.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The backend the driver runs on.
    pub(crate) fn backend(&self) -> &AnyBackend {
        &self.backend
    }

    /// The backend the driver runs on, for calls that change it (registration tables,
    /// setting up provided buffers).
    pub(crate) fn backend_mut(&mut self) -> &mut AnyBackend {
        &mut self.backend
    }

    /// Operations the kernel still owns (waiting, or orphaned).
    pub(crate) fn in_flight(&self) -> usize {
        self.ops
            .iter()
            .filter(|(_, s)| !matches!(s, Slot::Finished { .. }))
            .count()
    }

    /// Submits an operation; the returned key names it until its final completion is
    /// collected ([`Driver::poll_op`]) or it is handed to [`Driver::orphan`]. With
    /// `inline`, the backend may complete it at once ([`Submitted::Completed`]); the
    /// runtime rations that per task poll (an inline completion never returns Pending, so
    /// a task looping over cached reads would never yield).
    ///
    /// The caller has checked `desc` ([`OpDesc::check`]). On error nothing was handed to
    /// the kernel and the caller still owns everything. `group` is the cancel group the
    /// operation belongs to ([`Driver::cancel_group`]; 0: none).
    #[inline]
    pub(crate) fn submit(
        &mut self,
        desc: &OpDesc,
        waker: &Waker,
        inline: bool,
        group: u32,
    ) -> io::Result<Submitted> {
        // One operation in so many is timed from here to its final completion, on a path
        // of its own: the untimed path carries no clock and no check beyond this one.
        if self.sampler.tick() {
            return self.submit_sampled(desc, waker, inline, group);
        }
        self.push_new::<false>(desc, waker, inline, group, None)
    }

    /// [`Driver::submit`] for an operation the latency sampler times.
    #[cold]
    #[inline(never)]
    fn submit_sampled(
        &mut self,
        desc: &OpDesc,
        waker: &Waker,
        inline: bool,
        group: u32,
    ) -> io::Result<Submitted> {
        let at = Instant::now();
        self.push_new::<true>(desc, waker, inline, group, Some(at))
    }

    /// Pushes the operation to the backend (making room if the queue is full) and records
    /// what happened; `TIMED` with `started_at`, the latency sampler's start.
    #[inline(always)]
    fn push_new<const TIMED: bool>(
        &mut self,
        desc: &OpDesc,
        waker: &Waker,
        mut inline: bool,
        group: u32,
        started_at: Option<Instant>,
    ) -> io::Result<Submitted> {
        loop {
            // The key the slot will have; the slot is made only for an operation left in
            // flight, so one completed during the push costs no slot and no waker clone.
            let key = self.ops.vacant_key();
            match self.backend.push(key, desc, inline, waker) {
                Ok(Push::Queued) => {
                    let timed = match started_at {
                        Some(at) if TIMED => self.sampler.started(desc.name(), at),
                        _ => 0,
                    };
                    let slot = self.ops.insert(Slot::InFlight {
                        waker: Some(waker.clone()),
                        queued: VecDeque::new(),
                        group,
                        timed,
                    });
                    debug_assert_eq!(slot, key, "coring: the slab gave another key");
                    self.metrics.ops_submitted += 1;
                    return Ok(Submitted::InFlight(key));
                }
                Ok(Push::Completed(c)) => {
                    self.metrics.ops_submitted += 1;
                    self.metrics.ops_completed += 1;
                    self.metrics.ops_inline += 1;
                    if let (true, Some(at)) = (TIMED, started_at) {
                        self.sampler.finished_inline(desc.name(), at);
                    }
                    return Ok(Submitted::Completed(c));
                }
                Ok(Push::NotReady) => return Ok(Submitted::NotReady),
                Ok(Push::Full) => {
                    self.make_room()?;
                    // Tried already: pushed again, it goes to the queue.
                    inline = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether descriptor `fd` (open file `id`) may have something to read: `Pending` (and
    /// `waker` woken later) only on a readiness backend that knows it has nothing (see
    /// [`Backend::poll_readable`]).
    #[inline]
    pub(crate) fn poll_readable(&mut self, fd: RawFd, id: u64, waker: &Waker) -> Poll<()> {
        self.backend.poll_readable(fd, id, waker)
    }

    /// Polls an in-flight operation for its next completion: a queued one of a multishot
    /// operation (with [`Completion::more`]; the slot stays), else the final one (the slot
    /// is freed and the key dead).
    pub(crate) fn poll_op(&mut self, key: usize, cx: &mut Context<'_>) -> Poll<Completion> {
        match &mut self.ops[key] {
            Slot::Finished { queued, last, .. } => {
                if let Some(c) = queued.pop_front() {
                    return Poll::Ready(c);
                }
                let c = *last;
                self.ops.remove(key);
                Poll::Ready(c)
            }
            Slot::InFlight { waker, queued, .. } => {
                if let Some(c) = queued.pop_front() {
                    return Poll::Ready(c);
                }
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Slot::Orphaned(_) => unreachable!("coring: polled an orphaned operation"),
        }
    }

    /// Whether operation `key`'s final completion has arrived (its owner may still have
    /// queued completions to collect before it).
    pub(crate) fn is_finished(&self, key: usize) -> bool {
        matches!(self.ops[key], Slot::Finished { .. })
    }

    /// Where operation `key`'s final completion, if it has arrived, came in the order
    /// this driver reaped final completions: of two operations finished on one driver, the
    /// one with the lower number finished first (for instance, of two receives pending on
    /// one datagram socket, it holds the earlier datagram, whatever order they were
    /// submitted in).
    pub(crate) fn finished_seq(&self, key: usize) -> Option<u64> {
        match self.ops[key] {
            Slot::Finished { seq, .. } => Some(seq),
            _ => None,
        }
    }

    /// Whether the next completion [`Driver::poll_op`] would return for a multishot
    /// operation is already queued and carries data (`res > 0`).
    pub(crate) fn next_is_data(&self, key: usize) -> bool {
        match &self.ops[key] {
            Slot::InFlight { queued, .. } | Slot::Finished { queued, .. } => {
                queued.front().is_some_and(|c| c.res > 0)
            }
            Slot::Orphaned(_) => false,
        }
    }

    /// Cancels a stream's multishot receive for bulk mode, without waiting; the stream
    /// collects the final completion (and any queued before it) as usual.
    pub(crate) fn cancel_for_bulk(&mut self, key: usize) {
        self.metrics.bulk_switches += 1;
        self.cancel(key);
    }

    /// Asks the backend to cancel operation `key` if it is in flight, without waiting; its
    /// owner collects the final completion as usual.
    pub(crate) fn cancel(&mut self, key: usize) {
        if matches!(self.ops[key], Slot::InFlight { .. }) {
            self.request_cancel(key);
        }
    }

    /// Asks the backend to cancel every in-flight operation of cancel group `group` (a
    /// [`CancelToken`](crate::cancel::CancelToken)'s), without waiting; their owners
    /// collect the final completions as usual (`-ECANCELED`, unless they finished first).
    pub(crate) fn cancel_group(&mut self, group: u32) {
        let keys: Vec<usize> = self
            .ops
            .iter()
            .filter(|(_, s)| matches!(s, Slot::InFlight { group: g, .. } if *g == group))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.request_cancel(key);
        }
    }

    /// Whether a multishot operation has a queued completion that carries data (`res > 0`)
    /// its owner has not collected.
    pub(crate) fn has_queued_data(&self, key: usize) -> bool {
        match &self.ops[key] {
            Slot::InFlight { queued, .. } | Slot::Finished { queued, .. } => {
                queued.iter().any(|c| c.res > 0)
            }
            Slot::Orphaned(_) => false,
        }
    }

    /// Called when an operation's owner is dropped before it collected its final
    /// completion.
    ///
    /// If the final completion already arrived, the slot is freed and that completion
    /// returned, so the caller finishes the operation itself, outside the driver's borrow:
    /// with its own data (no allocation), or, when completions before the final one were
    /// never collected (a multishot operation's), with the orphan `orphan()` made, which
    /// has released what they carried ([`Orphan::progress`]). Otherwise the driver takes
    /// the data from `orphan()` and keeps it until the final completion, and asks the
    /// backend to cancel. Either way the provided buffers of completions the owner never
    /// collected go back to the backend here.
    pub(crate) fn orphan(
        &mut self,
        key: usize,
        orphan: impl FnOnce() -> Box<dyn Orphan>,
    ) -> Option<(Completion, Option<Box<dyn Orphan>>)> {
        match &mut self.ops[key] {
            Slot::Finished { queued, last, .. } => {
                let last = *last;
                let queued = std::mem::take(queued);
                self.ops.remove(key);
                if let Some(bid) = last.buffer() {
                    self.backend.recycle_buf(bid);
                }
                if queued.is_empty() {
                    return Some((last, None));
                }
                // Completions the owner never collected: the orphan releases what they
                // carry; the caller finishes it, outside this borrow.
                let mut data = orphan();
                for c in queued {
                    if let Some(bid) = c.buffer() {
                        self.backend.recycle_buf(bid);
                    }
                    data.progress(c);
                }
                Some((last, Some(data)))
            }
            Slot::InFlight { queued, timed, .. } => {
                if *timed != 0 {
                    self.sampler.forget(*timed);
                }
                let queued = std::mem::take(queued);
                let mut data = orphan();
                for c in queued {
                    if let Some(bid) = c.buffer() {
                        self.backend.recycle_buf(bid);
                    }
                    data.progress(c);
                }
                self.ops[key] = Slot::Orphaned(data);
                self.metrics.ops_orphaned += 1;
                self.request_cancel(key);
                None
            }
            Slot::Orphaned(_) => unreachable!("coring: an operation was orphaned twice"),
        }
    }

    /// Cancels an in-flight operation and, where the backend can, waits in the kernel until
    /// it no longer acts on it, then collects its completions. Returns whether its final
    /// completion is now in the table (the key stays valid for [`Driver::poll_op`] either
    /// way). Falls back to an asynchronous cancel.
    pub(crate) fn cancel_now(&mut self, key: usize) -> bool {
        if !matches!(self.ops[key], Slot::InFlight { .. }) {
            return true;
        }
        if !self.held.is_empty() && self.cancel_held(key) {
            return true;
        }
        let synced = self.backend.cancel_sync(key).is_ok();
        // Also when the backend could not cancel synchronously: the operation may have
        // finished already, its completion waiting in the backend (a socket op done at
        // submission on the fallback).
        self.reap();
        if !synced && !matches!(self.ops[key], Slot::Finished { .. }) {
            self.request_cancel(key);
        }
        matches!(self.ops[key], Slot::Finished { .. })
    }

    fn request_cancel(&mut self, key: usize) {
        // Never pushed: it ends here, without reaching the kernel.
        if !self.held.is_empty() && self.cancel_held(key) {
            return;
        }
        // Cancellation is best effort: if the queue stays full the operation simply
        // completes on its own, and the table keeps it until then.
        for _ in 0..3 {
            match self.backend.cancel(key) {
                Ok(Enqueued::Yes) | Err(_) => return,
                Ok(Enqueued::QueueFull) => {
                    if self.make_room().is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The submission queue is full: hand it to the kernel and collect completions.
    fn make_room(&mut self) -> io::Result<()> {
        self.enter(Wait::No)?;
        self.reap();
        Ok(())
    }

    /// One trip into the kernel: submit, maybe sleep, then collect every completion.
    pub(crate) fn turn(&mut self, wait: Wait) -> io::Result<()> {
        if let Wait::Park(_) = wait {
            self.metrics.parks += 1;
            if self.time_parks {
                return self.timed_park(wait);
            }
        }
        self.enter(wait)?;
        self.reap();
        Ok(())
    }

    /// A park with a clock read before and after it ([`Metrics::time_parked`]).
    #[inline(never)]
    fn timed_park(&mut self, wait: Wait) -> io::Result<()> {
        let asleep = Instant::now();
        let entered = self.enter(wait);
        self.metrics.time_parked += asleep.elapsed();
        entered?;
        self.reap();
        Ok(())
    }

    /// Enters the kernel, retrying transient failures. Pushed work is never given back on
    /// an error: it stays in the table until its completion, whatever happens.
    fn enter(&mut self, mut wait: Wait) -> io::Result<()> {
        let mut busy = 0u32;
        loop {
            match self.enter_once(wait) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.metrics.enter_retries += 1;
                    // A signal ended the wait early; the caller's loop re-evaluates.
                    if let Wait::Park(_) = wait {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // EAGAIN / EBUSY: the kernel has no room right now (too many
                    // completions pending). Collect what is there and try again; after a
                    // few tries, sleep briefly for a completion so we never spin.
                    self.metrics.enter_retries += 1;
                    self.reap();
                    // What was just reaped may have woken tasks: retry without sleeping
                    // and let the event loop decide whether to park.
                    wait = Wait::No;
                    busy += 1;
                    if busy > 3 {
                        match self.enter_once(Wait::Park(Some(Duration::from_millis(1)))) {
                            Ok(()) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                                ) =>
                            {
                                self.metrics.enter_retries += 1;
                            }
                            Err(e) => return Err(e),
                        }
                        self.reap();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Collects every available completion into the table, waking futures, finishing
    /// orphans, recycling the provided buffers of orphans' completions, and cancelling the
    /// multishot receives that reached [`MULTISHOT_QUEUE_CAP`].
    fn reap(&mut self) {
        let ops = &mut self.ops;
        let finished = &mut self.finished;
        let recycle = &mut self.recycle;
        let throttle = &mut self.throttle;
        let metrics = &mut self.metrics;
        let finished_seq = &mut self.finished_seq;
        let sampler = &mut self.sampler;
        let mut reaped = 0u64;
        self.backend.reap(|key, c| {
            reaped += 1;
            let Some(slot) = ops.get_mut(key) else {
                debug_assert!(false, "coring: completion for unknown operation {key}");
                return;
            };
            if !c.more() {
                metrics.ops_completed += 1;
                if c.flags & CQE_F_NOTIF != 0 {
                    metrics.zerocopy_notifications += 1;
                }
            }
            match slot {
                Slot::InFlight { waker, queued, .. } if c.more() => {
                    queued.push_back(c);
                    // The one place the backpressure cap is decided (see
                    // MULTISHOT_QUEUE_CAP): an arrival (data received, a connection
                    // accepted) that brings the unread queue to the cap gets the multishot
                    // operation cancelled. (A zero-copy send queues one completion at most.) Counting at the cap (not above)
                    // asks once per fill, not for every arrival the kernel posts before
                    // the cancel lands; a queue drained and refilled asks again, which is
                    // harmless (cancelling a finished key only reports -ENOENT).
                    if c.res > 0
                        && queued.iter().filter(|q| q.res > 0).count() == MULTISHOT_QUEUE_CAP
                    {
                        throttle.push(key);
                    }
                    if let Some(w) = waker {
                        w.wake_by_ref();
                    }
                }
                Slot::InFlight {
                    waker,
                    queued,
                    timed,
                    ..
                } => {
                    if *timed != 0 {
                        sampler.finished(*timed);
                    }
                    let waker = waker.take();
                    let queued = std::mem::take(queued);
                    *slot = Slot::Finished {
                        queued,
                        last: c,
                        seq: *finished_seq,
                    };
                    *finished_seq += 1;
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
                Slot::Orphaned(data) => {
                    if let Some(bid) = c.buffer() {
                        recycle.push(bid);
                    }
                    if c.more() {
                        data.progress(c);
                    } else {
                        if let Slot::Orphaned(data) = ops.remove(key) {
                            finished.push((data, c));
                        }
                    }
                }
                Slot::Finished { .. } => {
                    debug_assert!(false, "coring: completion after final for {key}")
                }
            }
        });
        // Zeros are not recorded: the snapshot counts them from `reaps`.
        self.reaps += 1;
        if reaped != 0 {
            self.metrics.reap_batch.record(reaped);
        }
        // Checked first: most reaps have none of these, and an empty drain still costs its
        // setup.
        if !self.held.is_empty() {
            self.advance_chains();
        }
        if !self.recycle.is_empty() {
            for bid in self.recycle.drain(..) {
                self.backend.recycle_buf(bid);
            }
        }

        if !self.throttle.is_empty() {
            // request_cancel may reap again (queue full): work on a taken list.
            let mut throttle = std::mem::take(&mut self.throttle);
            for key in throttle.drain(..) {
                // Only a receive still running needs the cancel; the owner keeps the slot
                // and every queued arrival, and collects the final -ECANCELED after them.
                if matches!(self.ops.get(key), Some(Slot::InFlight { .. })) {
                    self.metrics.multishot_throttled += 1;
                    self.request_cancel(key);
                }
            }
            if self.throttle.is_empty() {
                self.throttle = throttle;
            }
        }
    }

    /// Whether orphans whose final completion has been reaped wait to be finished
    /// ([`Driver::finish_orphans`]).
    #[inline]
    pub(crate) fn has_orphans_to_finish(&self) -> bool {
        !self.finished.is_empty()
    }

    /// Finishes the orphans whose final completion has been reaped (closing a descriptor the
    /// kernel opened for nobody, dropping a buffer), outside `driver`'s borrow, each on its
    /// own: a `Drop` that panics is contained (the panic hook has reported it) and the
    /// others are finished all the same, as a task's panic is contained by its task.
    /// Called by the event loop after every turn that leaves any
    /// ([`Driver::has_orphans_to_finish`]); user code that runs meanwhile may use the
    /// runtime again.
    #[cold]
    #[inline(never)]
    pub(crate) fn finish_orphans(driver: &RefCell<Driver>) {
        let mut batch = {
            let mut d = driver.borrow_mut();
            if d.finished.is_empty() {
                return;
            }
            std::mem::take(&mut d.finished)
        };
        for (data, c) in batch.drain(..) {
            finish_contained(data, c);
        }
        // Give the (empty) vector back for its capacity, unless more arrived meanwhile.
        let mut d = driver.borrow_mut();
        if d.finished.is_empty() {
            d.finished = batch;
        }
    }

    /// Cancels everything still in flight and waits, up to `deadline`, for the kernel to
    /// finish with it. Operations still running after the deadline are leaked, never freed:
    /// the kernel may still write into their buffers.
    pub(crate) fn shutdown(&mut self, deadline: Duration) {
        // Orphans too: their cancel was requested when their futures were dropped, but a
        // request that found the queue full three times was given up on.
        let keys: Vec<usize> = self
            .ops
            .iter()
            .filter(|(_, s)| !matches!(s, Slot::Finished { .. }))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.request_cancel(key);
        }
        // `None`: no deadline (a timeout too large to add to now, such as Duration::MAX).
        let end = Instant::now().checked_add(deadline);
        while self.in_flight() > 0 {
            let left = match end {
                Some(end) => match end.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break,
                },
                None => None,
            };
            if self.turn(Wait::Park(left)).is_err() {
                break;
            }
        }
        let leaked = self.in_flight();
        if leaked > 0 {
            log::error!(
                "coring: {leaked} operation(s) did not finish within {deadline:?} of runtime \
                 shutdown; leaking their buffers instead of freeing memory the kernel may \
                 still write"
            );
            self.leak_in_flight();
        }
    }

    /// Makes the table forget every orphaned operation without freeing it, so that a
    /// driver whose backend can no longer report completions never frees kernel-owned
    /// memory. Used after a fatal backend error, after the shutdown deadline, and on drop.
    /// (Operations whose futures still exist keep their data there; the future's drop
    /// orphans them into this table, whose own drop leaks them.)
    pub(crate) fn leak_in_flight(&mut self) {
        for (_, slot) in self.ops.iter_mut() {
            if let Slot::Orphaned(_) = slot {
                if let Slot::Orphaned(data) = std::mem::replace(slot, Slot::in_flight(None, 0)) {
                    self.metrics.ops_leaked += 1;
                    std::mem::forget(data);
                }
            }
        }
    }
}

/// Finishes one orphan, containing a panic of its `Drop` code: the unwinding stops here and
/// the payload is dropped (and if dropping the payload panics too, it is leaked).
fn finish_contained(data: Box<dyn Orphan>, c: Completion) {
    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || data.finish(c)));
    if let Err(payload) = finished {
        if let Err(again) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)))
        {
            std::mem::forget(again);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Reaped but not finished yet (the runtime normally finishes them after each
        // turn): finish them, so what they hold (an accepted descriptor) is released.
        for (data, c) in std::mem::take(&mut self.finished) {
            finish_contained(data, c);
        }
        // Whatever is still orphaned here was never completed: the kernel may still own
        // its memory, so it is leaked rather than freed.
        self.leak_in_flight();
    }
}
