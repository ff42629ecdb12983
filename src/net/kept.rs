//! What sockets share to keep the operations of dropped calls: a queue of kept operations
//! (a listener's accepts, a datagram socket's receives) and the type-erased receives a
//! kept receive holds.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::buf::IoBufMut;
use crate::driver::op::{IntoOrphan, Kept, Op, Operation};
use crate::driver::{Completion, Orphan};
use crate::op::net::RecvFrom;
use crate::op::rw::Recv;

/// Operations whose calls were dropped after submission (a select that picked another
/// branch, a timeout), kept, not cancelled, so that what the kernel did for them (a
/// connection accepted, a datagram received) goes to a later call instead of being lost.
///
/// A call takes kept results in the order the operations finished, which need not be the
/// order they were submitted in (Linux serves the receives pending on one socket in no
/// set order). One call at a time waits for the kept operations: it claims every one no
/// other call waits for (the driver keeps one waker per operation); a concurrent call
/// finds them claimed and submits its own. The owner cancels kept operations only when it
/// is dropped (or `quiesce`d: converted or unregistered, keeping the results they got).
pub(crate) struct KeptQueue<T: IntoOrphan> {
    kept: RefCell<VecDeque<Kept<T>>>,
    /// The error a call gets while a kept operation runs on another runtime.
    elsewhere: &'static str,
}

/// The kept operations one call waits for, by id; released when the call ends or is
/// dropped.
struct Claims<'a, T: IntoOrphan> {
    queue: &'a KeptQueue<T>,
    ids: Vec<u64>,
}

impl<T: IntoOrphan> Drop for Claims<'_, T> {
    fn drop(&mut self) {
        for k in self.queue.kept.borrow_mut().iter_mut() {
            if self.ids.contains(&k.id()) {
                k.release(k.id());
            }
        }
    }
}

impl<T: IntoOrphan> KeptQueue<T> {
    /// An empty queue; `elsewhere` is the `InvalidInput` message of a call made while a
    /// kept operation runs on another runtime (which may get a result for it).
    pub(crate) fn new(elsewhere: &'static str) -> KeptQueue<T> {
        KeptQueue {
            kept: RefCell::new(VecDeque::new()),
            elsewhere,
        }
    }

    /// The kept operation that finished first, with its final completion, for the caller
    /// to hand on (its result, or its error: a kept operation's failure is the next call's).
    /// Waits while the operations this call could claim are all in flight. `None` when
    /// there are none (left): the caller submits its own operation. One that ended with
    /// the owner's own cancel (`-ECANCELED`, from [`quiesce`](Self::quiesce)) has nothing
    /// to hand on and is dropped. An error while a kept operation runs on another runtime
    /// and has not finished there: its result must be collected there.
    pub(crate) async fn next(&self) -> Option<io::Result<(T, Completion)>> {
        let mut claims = Claims {
            queue: self,
            ids: Vec::new(),
        };
        poll_fn(|cx| self.poll_next(cx, &mut claims.ids)).await
    }

    fn poll_next(
        &self,
        cx: &mut Context<'_>,
        ids: &mut Vec<u64>,
    ) -> Poll<Option<io::Result<(T, Completion)>>> {
        let mut kept = self.kept.borrow_mut();
        loop {
            // Claim what was kept since the last poll; forget what `quiesce` removed.
            ids.extend(kept.iter_mut().filter_map(|k| k.claim()));
            ids.retain(|id| kept.iter().any(|k| k.id() == *id));
            if ids.is_empty() {
                return Poll::Ready(None);
            }
            // The first finished: by runtime (one that finished on another runtime, before
            // the owner came here, comes first), then in the order its driver reaped them.
            // One still in flight finishes after every one that has.
            let mut first: Option<(usize, (bool, u64))> = None;
            for (i, k) in kept.iter_mut().enumerate() {
                if !ids.contains(&k.id()) {
                    continue;
                }
                match k.poll_here(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Err(())) => {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            self.elsewhere,
                        ))));
                    }
                    Poll::Ready(Ok(_)) => {
                        let seq = k.finished_seq().expect("coring: collected kept operation");
                        let order = (k.on_this_runtime(), seq);
                        if first.is_none_or(|(_, o)| order < o) {
                            first = Some((i, order));
                        }
                    }
                }
            }
            let Some((i, _)) = first else {
                return Poll::Pending;
            };
            let k = kept.remove(i).expect("coring: kept operation");
            ids.retain(|&id| id != k.id());
            let (data, c) = k.into_done();
            if c.res != -libc::ECANCELED {
                return Poll::Ready(Some(Ok((data, c))));
            }
            // Cancelled by `quiesce`: nothing to hand on; look again.
        }
    }

    /// `op`, as a future that, if dropped after submission, leaves its operation to this
    /// queue (as `wrap(data)`).
    pub(crate) fn keep_on_drop<O: Operation>(
        &self,
        op: Op<O>,
        wrap: fn(O) -> T,
    ) -> KeepOnDrop<'_, O, T> {
        KeepOnDrop {
            queue: self,
            op,
            wrap,
        }
    }

    /// Cancels the kept operations at once where the backend can; results they got before
    /// the cancel stay for later calls, failures are dropped (nothing to hand on).
    pub(crate) fn quiesce(&self) {
        self.kept.borrow_mut().retain_mut(|k| match k.cancel_now() {
            // Cancelled (or failed): nothing to hand on.
            Some(c) if c.res < 0 => false,
            _ => true,
        });
    }

    /// [`quiesce`](Self::quiesce), then whether nothing is kept any more: no result waits
    /// to be handed on and no operation still uses the descriptor (one that could not be
    /// cancelled at once is being cancelled: ask again after the runtime has run).
    pub(crate) fn settle(&self) -> bool {
        self.quiesce();
        self.kept.borrow().is_empty()
    }
}

/// An operation that, if its future is dropped after submission, leaves the operation to
/// a [`KeptQueue`].
pub(crate) struct KeepOnDrop<'a, O: Operation, T: IntoOrphan> {
    queue: &'a KeptQueue<T>,
    op: Op<O>,
    wrap: fn(O) -> T,
}

impl<O: Operation, T: IntoOrphan> Future for KeepOnDrop<'_, O, T> {
    type Output = O::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.op).poll(cx)
    }
}

impl<O: Operation, T: IntoOrphan> Drop for KeepOnDrop<'_, O, T> {
    fn drop(&mut self) {
        if let Some(k) = Kept::detach(&mut self.op, self.wrap) {
            self.queue.kept.borrow_mut().push_back(k);
        }
    }
}

/// A receive into a caller's buffer, whatever the buffer type, as a kept receive holds it.
pub(crate) trait Held {
    /// The buffer's capacity: the most a completion may report.
    fn capacity(&self) -> usize;
    /// The first `n` bytes of the buffer, once the receive completed with `n`.
    fn received(&self, n: usize) -> &[u8];
    /// The sender's address, once completed, for a receive that asks for it (`recvmsg`);
    /// `None` for one that does not.
    fn sender(&self) -> Option<io::Result<SocketAddr>>;
    fn into_orphan_box(self: Box<Self>) -> Box<dyn Orphan>;
}

impl<B: IoBufMut> Held for Recv<B> {
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

impl<B: IoBufMut> Held for RecvFrom<B> {
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

impl IntoOrphan for Box<dyn Held> {
    fn into_orphan(self) -> Box<dyn Orphan> {
        self.into_orphan_box()
    }
}
