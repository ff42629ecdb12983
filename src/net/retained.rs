//! What sockets share to keep the operations of dropped calls: a queue of retained operations
//! (a listener's accepts, a datagram socket's receives) and the type-erased receives a
//! retained receive holds.

use crate::platform::c;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::buf::IoBufMut;
use crate::driver::op::{IntoOrphan, Op, Operation, Retained};
use crate::driver::{Completion, Orphan};
use crate::op::net::RecvFrom;
use crate::op::rw::Recv;
use crate::runtime::context;

/// Operations whose calls were dropped after submission (a select that picked another
/// branch, a timeout), retained, not cancelled, so that what the kernel did for them (a
/// connection accepted, a datagram received) goes to a later call instead of being lost.
///
/// Every call is a [`Call`]. No call has a retained operation to itself: every live call
/// polls all of them, with one waker that wakes every live call ([`Watchers`]), so the
/// driver's single waker per operation wakes them all, whichever finishes, and the first
/// call to look takes the result (by the order the operations finished, which need not be
/// the order they were submitted in: Linux serves the receives pending on one socket in
/// no set order). A call that is dropped, or forgotten (`mem::forget`), therefore holds
/// nothing back. A call submits its own operation only while nothing retained on its
/// runtime is still running; a call whose own operation runs when a retained result comes
/// in cancels its own and returns the retained one (if its own got something first after
/// all, it returns that, and the retained result goes to the next call, out of order: only
/// calls running at once reach that case, and their results have no order to keep). The
/// owner cancels retained operations only when it is dropped (or `quiesce`d: converted or
/// unregistered, keeping the results they got).
pub(crate) struct RetainedOps<T: IntoOrphan> {
    retained: RefCell<VecDeque<Retained<T>>>,
    /// The live calls, woken when a retained operation finishes or is added.
    watchers: Arc<Watchers>,
    /// The waker the retained operations are polled with: it wakes every watcher.
    wake_all: Waker,
    /// The error a call gets while a retained operation runs on another runtime.
    elsewhere: &'static str,
}

/// What a [`Call`] got.
pub(crate) enum Outcome<T, O> {
    /// A retained operation's data and final completion, and the call's own operation's data
    /// (never submitted, or cancelled by the call before the kernel used it).
    Retained(T, Completion, O),
    /// The call's own operation's data and final completion.
    Own(O, Completion),
    /// A retained operation runs on another runtime, which may get a result for it (the
    /// object's `elsewhere` error), and the call's own operation's data, never submitted.
    Elsewhere(io::Error, O),
}

impl<T: IntoOrphan> RetainedOps<T> {
    /// An empty queue; `elsewhere` is the `InvalidInput` message of a call made while a
    /// retained operation runs on another runtime (which may get a result for it).
    pub(crate) fn new(elsewhere: &'static str) -> RetainedOps<T> {
        let watchers = Arc::new(Watchers::default());
        RetainedOps {
            retained: RefCell::new(VecDeque::new()),
            wake_all: Waker::from(watchers.clone()),
            watchers,
            elsewhere,
        }
    }

    /// One call, with `op` as its own operation (submitted only if needed), retained as
    /// `wrap(data)` if the call is dropped while it is in flight (or when a retained result
    /// wins over it and it could not be cancelled in time; see [`RetainedOps`]).
    pub(crate) fn call<O: Operation>(&self, op: Op<O>, wrap: fn(O) -> T) -> Call<'_, O, T> {
        Call {
            queue: self,
            op: Some(op),
            wrap,
            id: next_watcher_id(),
            cancelling: false,
        }
    }

    /// Polls every retained operation (with the waker that wakes every live call, so a
    /// completion wakes them all). Returns the id of the one that finished first, if any:
    /// by runtime (one finished on another runtime before the owner came here comes
    /// first), then in the order its driver reaped them; and whether one still runs on this
    /// runtime. `Err` if one runs on another runtime unfinished and `elsewhere` says to
    /// report it (else it is skipped: it cannot finish while the owner is used here).
    fn poll_retained(&self, elsewhere: bool) -> io::Result<(Option<u64>, bool)> {
        let mut cx = Context::from_waker(&self.wake_all);
        let mut retained = self.retained.borrow_mut();
        let mut first: Option<(u64, (bool, u64))> = None;
        let mut running = false;
        for k in retained.iter_mut() {
            match k.poll_here(&mut cx) {
                Poll::Pending => running = true,
                Poll::Ready(Err(())) if elsewhere => {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, self.elsewhere));
                }
                Poll::Ready(Err(())) => {}
                Poll::Ready(Ok(_)) => {
                    let seq = k
                        .finished_seq()
                        .expect("coring: collected retained operation");
                    let order = (k.on_this_runtime(), seq);
                    if first.is_none_or(|(_, o)| order < o) {
                        first = Some((k.id(), order));
                    }
                }
            }
        }
        Ok((first.map(|(id, _)| id), running))
    }

    /// Whether no operation is retained.
    pub(crate) fn is_empty(&self) -> bool {
        self.retained.borrow().is_empty()
    }

    /// Takes finished retained operation `id` out of the queue, with its final completion.
    fn take(&self, id: u64) -> Option<(T, Completion)> {
        let mut retained = self.retained.borrow_mut();
        let i = retained.iter().position(|k| k.id() == id)?;
        let k = retained.remove(i).expect("coring: retained operation");
        drop(retained);
        Some(k.into_done())
    }

    /// Keeps an operation whose call is gone, and tells the live calls.
    fn add(&self, k: Retained<T>) {
        self.retained.borrow_mut().push_back(k);
        self.watchers.wake_all();
    }

    /// Cancels the retained operations at once where the backend can; results (and errors)
    /// they got before the cancel stay for later calls; the cancelled ones go. Returns how
    /// many of those that stay have finished (they hold the descriptor, but the kernel no
    /// longer uses it for them).
    pub(crate) fn quiesce(&self) -> usize {
        let mut retained = self.retained.borrow_mut();
        let mut gone = Vec::new();
        for k in std::mem::take(&mut *retained) {
            let mut k = k;
            match k.cancel_now() {
                // Cancelled: nothing to hand on. (A failure is handed on like a result.)
                Some(c) if c.res == -c::ECANCELED => gone.push(k),
                _ => retained.push_back(k),
            }
        }
        let finished = retained.iter().filter(|k| k.is_collected()).count();
        drop(retained);
        // Dropped outside the borrow: a retained receive's buffer is the user's, and its Drop
        // may use this object again.
        drop(gone);
        finished
    }

    /// [`quiesce`](Self::quiesce), then whether nothing is retained any more: no result waits
    /// to be handed on and no operation still uses the descriptor (one that could not be
    /// cancelled at once is being cancelled: ask again after the runtime has run).
    pub(crate) fn settle(&self) -> bool {
        self.quiesce();
        self.retained.borrow().is_empty()
    }
}

/// The tasks waiting for any of an object's retained operations: the retained operations
/// are polled with a waker that wakes all of them (`Waker::from` this), and each live call
/// (or read) registers its own waker here whenever it polls. Waking drains the list, so a
/// call forgotten with `mem::forget` stays in it only until the next wake.
#[derive(Default)]
pub(crate) struct Watchers {
    list: Mutex<Vec<(u64, Waker)>>,
}

impl Watchers {
    fn list(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Waker)>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers (or refreshes) the waker of watcher `id`.
    pub(crate) fn watch(&self, id: u64, waker: &Waker) {
        let mut list = self.list();
        match list.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) => w.clone_from(waker),
            None => list.push((id, waker.clone())),
        }
    }

    /// Forgets watcher `id` (its call or read is over).
    pub(crate) fn unwatch(&self, id: u64) {
        self.list().retain(|(i, _)| *i != id);
    }

    /// Wakes every watcher (each registers again when it polls).
    pub(crate) fn wake_all(&self) {
        let list = std::mem::take(&mut *self.list());
        for (_, w) in list {
            w.wake();
        }
    }
}

impl Wake for Watchers {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

/// Watcher ids, unique in the process.
pub(crate) fn next_watcher_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One call on a [`RetainedOps`]'s owner (see there): the future of `RetainedOps::call`.
pub(crate) struct Call<'a, O: Operation, T: IntoOrphan> {
    queue: &'a RetainedOps<T>,
    /// The call's own operation; `None` once the call returned.
    op: Option<Op<O>>,
    wrap: fn(O) -> T,
    /// This call's watcher id.
    id: u64,
    /// The own operation was asked to cancel because a retained result is waiting.
    cancelling: bool,
}

impl<O: Operation, T: IntoOrphan> Future for Call<'_, O, T> {
    type Output = Outcome<T, O>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T, O>> {
        let this = self.get_mut();
        let queue = this.queue;
        queue.watchers.watch(this.id, cx.waker());
        loop {
            let op = this
                .op
                .as_mut()
                .expect("coring: call polled after it returned");
            let in_flight = op.in_flight();
            let (first, running) = match queue.poll_retained(!in_flight) {
                Ok(polled) => polled,
                Err(e) => {
                    let op = this.op.take().expect("coring: own operation");
                    let data = op.into_unsubmitted().expect("coring: own op not submitted");
                    return Poll::Ready(Outcome::Elsewhere(e, data));
                }
            };
            if in_flight {
                let Poll::Ready((data, c)) = op.poll_raw(cx) else {
                    if first.is_some() && !this.cancelling {
                        // A retained result is waiting and comes first: stop our own.
                        op.request_cancel();
                        this.cancelling = true;
                    }
                    return Poll::Pending;
                };
                this.op = None;
                if !(this.cancelling && c.res == -c::ECANCELED) {
                    // Our own operation's result (maybe one that beat our cancel).
                    return Poll::Ready(Outcome::Own(data, c));
                }
                // Cancelled for a retained result: take it below with our data back; if
                // another call took it meanwhile (or `quiesce` removed it), submit ours again.
                this.cancelling = false;
                this.op = Some(Op::new(data));
                continue;
            }
            if let Some(id) = first {
                let Some((t, c)) = queue.take(id) else {
                    continue;
                };
                if c.res == -c::ECANCELED {
                    // Cancelled by `quiesce`: nothing to hand on; look again.
                    drop(t);
                    continue;
                }
                let op = this.op.take().expect("coring: own operation");
                let data = op.into_unsubmitted().expect("coring: own op not submitted");
                return Poll::Ready(Outcome::Retained(t, c, data));
            }
            if running && !context::cancel_requested(cx.waker()) {
                // Retained operations still run here: one of them gets the next result.
                return Poll::Pending;
            }
            // Nothing retained runs, or the call's cancel token was cancelled: its own
            // operation then ends at submission, with `ECANCELED`.
            let Poll::Ready((data, c)) = op.poll_raw(cx) else {
                return Poll::Pending;
            };
            this.op = None;
            return Poll::Ready(Outcome::Own(data, c));
        }
    }
}

impl<O: Operation, T: IntoOrphan> Drop for Call<'_, O, T> {
    fn drop(&mut self) {
        let queue = self.queue;
        queue.watchers.unwatch(self.id);
        let retained = self
            .op
            .as_mut()
            .and_then(|op| Retained::detach(op, self.wrap));
        if let Some(k) = retained {
            // Our own operation goes to the queue (and the live calls are told).
            queue.add(k);
        }
    }
}

/// A receive into a caller's buffer, whatever the buffer type, as a retained receive holds it.
pub(crate) trait AnyRecv {
    /// The buffer's capacity: the most a completion may report.
    fn capacity(&self) -> usize;
    /// The first `n` bytes of the buffer, once the receive completed with `n`.
    fn received(&self, n: usize) -> &[u8];
    /// The sender's address, once completed, for a receive that asks for it (`recvmsg`);
    /// `None` for one that does not.
    fn sender(&self) -> Option<io::Result<SocketAddr>>;
    fn into_orphan_box(self: Box<Self>) -> Box<dyn Orphan>;
}

impl<B: IoBufMut> AnyRecv for Recv<B> {
    fn capacity(&self) -> usize {
        Recv::capacity(self)
    }
    fn received(&self, n: usize) -> &[u8] {
        Recv::received(self, n)
    }
    fn sender(&self) -> Option<io::Result<SocketAddr>> {
        None
    }
    fn into_orphan_box(self: Box<Self>) -> Box<dyn Orphan> {
        self
    }
}

impl<B: IoBufMut> AnyRecv for RecvFrom<B> {
    fn capacity(&self) -> usize {
        RecvFrom::capacity(self)
    }
    fn received(&self, n: usize) -> &[u8] {
        RecvFrom::received(self, n)
    }
    fn sender(&self) -> Option<io::Result<SocketAddr>> {
        Some(RecvFrom::sender(self))
    }
    fn into_orphan_box(self: Box<Self>) -> Box<dyn Orphan> {
        self
    }
}

impl IntoOrphan for Box<dyn AnyRecv> {
    fn into_orphan(self) -> Box<dyn Orphan> {
        self.into_orphan_box()
    }
}
