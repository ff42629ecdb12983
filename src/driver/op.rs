//! `Op<T>`: the future every IO call awaits.
//!
//! Lifecycle: `Unsubmitted -> InFlight(key) -> Collected`. While in flight, the operation's data
//! (fd handle, buffer, path, address) is referenced by the kernel through the pointers in
//! its [`OpDesc`]; those pointers target heap memory owned by the data, so moving the data
//! into the driver's table on drop keeps them valid. Drop never frees early: an in-flight
//! operation is handed to the driver as an orphan and a cancel is submitted.

use crate::platform::c;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{Completion, Driver, OpDesc, Orphan, Submitted};
use crate::runtime::context;
use std::cell::RefCell;

/// One operation: describes itself once, and turns its completion into a result.
///
/// Implementors keep every byte the kernel touches (buffers, paths, socket addresses,
/// iovec arrays, statx results) in heap memory they own, so the value can be moved while
/// the operation is in flight.
pub(crate) trait Operation: 'static {
    /// What awaiting the operation yields.
    type Output;

    /// The backend-neutral description; called at submission (again if a readiness
    /// backend had nothing to start yet, see `Push::NotReady`: it must describe the same
    /// operation each time).
    fn describe(&mut self) -> OpDesc;

    /// Builds the output from the final completion. Also used for orphans, whose output is
    /// dropped at once (closing an fd the kernel opened for nobody, releasing a buffer).
    fn complete(self, c: Completion) -> Self::Output;

    /// Receives a completion that is not the final one (it carries `CQE_F_MORE`): a
    /// zero-copy send's result, whose notification follows. Called in order, before
    /// `complete`, whether the future is awaited or was dropped (then with the driver
    /// borrowed: only record it, see `Orphan::progress`). Single-shot operations never
    /// get one.
    fn progress(&mut self, c: Completion) {
        debug_assert!(
            false,
            "coring: a single-shot operation got a completion with CQE_F_MORE: {c:?}"
        );
    }

    /// The operation, described by `desc`, was left in flight on the driver with identity
    /// `driver` (`context::driver_id`) rather than completed during submission; `complete`
    /// (or, for a leaked operation, nothing) follows once, whatever happens to the future.
    fn in_flight(&mut self, _desc: &OpDesc, _driver: u64) {}

    /// Whether [`describe`](Self::describe) may return an ordered write
    /// ([`OpDesc::is_ordered_write`]: a stream send, a write-side shutdown). Such an
    /// operation is submitted even past its task's inline budget; for every other one the
    /// compiler drops that test from the submission path.
    const MAY_BE_ORDERED_WRITE: bool = false;
}

impl<T: Operation> Orphan for T {
    fn finish(self: Box<Self>, c: Completion) {
        drop((*self).complete(c));
    }

    fn progress(&mut self, c: Completion) {
        Operation::progress(self, c);
    }
}

/// Data the driver can keep as an orphan: an operation, or a type-erased one.
pub(crate) trait IntoOrphan: 'static {
    fn into_orphan(self) -> Box<dyn Orphan>;
}

impl<T: Operation> IntoOrphan for T {
    fn into_orphan(self) -> Box<dyn Orphan> {
        Box::new(self)
    }
}

/// A submitted operation whose future was dropped, retained by the object it acts for (a
/// stream's receive, a listener's accept) instead of being cancelled: the object's next
/// call collects the completion, so what the kernel did for the dropped call (bytes
/// received, a connection accepted) is not lost, and no later operation of that object
/// overtakes it. Dropping a `Retained` whose completion is not collected orphans the
/// operation (cancelled; the driver keeps the data until the final completion).
///
/// The driver keeps one waker per operation, so calls that wait for a retained operation
/// poll it with a waker that wakes all of them (`net/retained.rs` `Watchers`): none has it
/// to itself, and a call that is forgotten holds nothing back.
pub(crate) struct Retained<T: IntoOrphan> {
    driver: Rc<RefCell<Driver>>,
    /// The key while the final completion is not collected.
    key: Option<usize>,
    /// The final completion, once collected, and where it came in its driver's order of
    /// final completions ([`Driver::finished_seq`]).
    done: Option<(Completion, u64)>,
    /// Tells retained operations apart.
    id: u64,
    /// Always `Some` outside `Drop`.
    data: Option<T>,
}

impl<T: IntoOrphan> Retained<T> {
    /// Takes `op`'s submitted operation, if it has one, as `wrap(data)`.
    pub(crate) fn detach<O: Operation>(op: &mut Op<O>, wrap: impl FnOnce(O) -> T) -> Option<Self> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (key, data, driver) = op.detach()?;
        Some(Retained {
            driver,
            key: Some(key),
            done: None,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            data: Some(wrap(data)),
        })
    }

    /// Whether the final completion has been collected (the kernel is done with the
    /// operation; its result waits to be handed on).
    pub(crate) fn is_collected(&self) -> bool {
        self.done.is_some()
    }

    /// This retained operation's id (unique in the process).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether the operation runs on the current thread's runtime.
    pub(crate) fn on_this_runtime(&self) -> bool {
        Rc::ptr_eq(&self.driver, &context::driver())
    }

    /// Where the final completion, once collected, came in its driver's order of final
    /// completions: of two retained operations finished on one runtime, the lower number
    /// finished first.
    pub(crate) fn finished_seq(&self) -> Option<u64> {
        self.done.map(|(_, seq)| seq)
    }

    /// The operation's data (for a receive, its buffer).
    pub(crate) fn data(&self) -> &T {
        self.data
            .as_ref()
            .expect("coring: retained operation without data")
    }

    /// Waits, on the current thread's runtime, for the final completion. An operation of
    /// another runtime (the object moved) is collected only if complete already (that
    /// runtime finished or cancelled it, e.g. when it was dropped); else `Err(())`: it must
    /// be awaited there.
    pub(crate) fn poll_here(&mut self, cx: &mut Context<'_>) -> Poll<Result<Completion, ()>> {
        if self.done.is_none() && !self.on_this_runtime() {
            // Looked at without polling: a poll would put this call's waker (or none) in
            // place of the one the operation's own runtime waits with.
            let finished = self
                .key
                .is_some_and(|key| self.driver.borrow().is_finished(key));
            if !finished {
                return Poll::Ready(Err(()));
            }
            let mut noop = Context::from_waker(std::task::Waker::noop());
            return Poll::Ready(match self.poll_complete(&mut noop) {
                Poll::Ready(c) => Ok(c),
                Poll::Pending => Err(()),
            });
        }
        self.poll_complete(cx).map(Ok)
    }

    /// Waits for the final completion (at once if collected already).
    fn poll_complete(&mut self, cx: &mut Context<'_>) -> Poll<Completion> {
        if let Some((c, _)) = self.done {
            return Poll::Ready(c);
        }
        let key = self
            .key
            .expect("coring: retained operation without key or completion");
        let mut d = self.driver.borrow_mut();
        let seq = d.finished_seq(key);
        let c = std::task::ready!(d.poll_op(key, cx));
        // Retained operations are single-shot: the first completion is the final one.
        let seq = seq.expect("coring: a retained operation had a completion before its final one");
        drop(d);
        self.key = None;
        self.done = Some((c, seq));
        Poll::Ready(c)
    }

    /// Cancels the operation and collects its final completion at once where the backend
    /// can; the completion (maybe a success that beat the cancel), or `None` if it could
    /// not be collected (the operation then stays as it was).
    pub(crate) fn cancel_now(&mut self) -> Option<Completion> {
        if let Some((c, _)) = self.done {
            return Some(c);
        }
        let key = self.key?;
        if !self.driver.borrow_mut().cancel_now(key) {
            return None;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_complete(&mut cx) {
            Poll::Ready(c) => Some(c),
            Poll::Pending => None,
        }
    }

    /// The data and the final completion, once collected (the caller now owns what the
    /// completion carries, such as an accepted descriptor).
    ///
    /// # Panics
    ///
    /// If the kernel may still use the data.
    pub(crate) fn into_done(mut self) -> (T, Completion) {
        let (Some((c, _)), None) = (self.done, self.key) else {
            panic!("coring: retained operation still in flight");
        };
        let data = self
            .data
            .take()
            .expect("coring: retained operation without data");
        (data, c)
    }
}

impl<T: IntoOrphan> Drop for Retained<T> {
    fn drop(&mut self) {
        let Some(data) = self.data.take() else {
            return;
        };
        let Some(key) = self.key else {
            // Collected (by `cancel_now`) but never handed on: finish it as the driver
            // finishes an orphan, so that what it got (an accepted descriptor) is released.
            if let Some((c, _)) = self.done {
                data.into_orphan().finish(c);
            }
            return;
        };
        // As the drop of a `ProvidedRecv` (driver/provided.rs): never reached from code the
        // driver runs; leaking is the safe choice if it were.
        let Ok(mut d) = self.driver.try_borrow_mut() else {
            std::mem::forget(data);
            return;
        };
        // Cancelled at once where the backend can, so that what the operation holds (the
        // descriptor, for one) is released now, not when the loop next turns.
        d.cancel_now(key);
        let mut data = Some(data);
        let finished = d.orphan(key, || {
            data.take()
                .expect("coring: orphan data taken once")
                .into_orphan()
        });
        drop(d);
        // Already completed: finish it here, outside the driver borrow, as the driver
        // would (closing an accepted descriptor, freeing a buffer).
        match (finished, data) {
            (Some((c, Some(orphan))), _) => orphan.finish(c),
            (Some((c, None)), Some(data)) => data.into_orphan().finish(c),
            _ => {}
        }
    }
}

enum State {
    Unsubmitted,
    /// Held back by an injected [`Fault::Delay`](crate::fault::Fault::Delay): submitted
    /// (without asking the rules again) once the timer fires.
    #[cfg(feature = "fault-injection")]
    Delayed(std::pin::Pin<Box<crate::time::Sleep>>),
    InFlight(usize),
    /// The final completion was taken (or the operation detached).
    Collected,
}

/// The future of one operation.
pub(crate) struct Op<T: Operation> {
    state: State,
    data: Option<T>,
    driver: Option<Rc<RefCell<Driver>>>,
    /// What injected faults decided for this operation, once asked.
    #[cfg(feature = "fault-injection")]
    verdict: Option<crate::fault::Verdict>,
}

impl<T: Operation> Op<T> {
    /// An operation that will be submitted on first poll, on the current runtime.
    pub(crate) fn new(data: T) -> Op<T> {
        Op {
            state: State::Unsubmitted,
            data: Some(data),
            driver: None,
            #[cfg(feature = "fault-injection")]
            verdict: None,
        }
    }
}

impl<T: Operation> Op<T> {
    /// Takes a submitted operation (in flight, or completed but not collected) out of this
    /// future, which then drops without orphaning it. The caller owns the key, the data
    /// and the duty this future had: collect the final completion with
    /// [`Driver::poll_op`], or hand the data to [`Driver::orphan`], before dropping it.
    pub(crate) fn detach(&mut self) -> Option<(usize, T, Rc<RefCell<Driver>>)> {
        let State::InFlight(key) = self.state else {
            return None;
        };
        let (Some(data), Some(driver)) = (self.data.take(), self.driver.take()) else {
            return None;
        };
        self.state = State::Collected;
        Some((key, data, driver))
    }
}

// Op holds no self-references: the kernel only sees heap memory owned by `data`.
impl<T: Operation> Unpin for Op<T> {}

impl<T: Operation> Op<T> {
    /// Polls the operation (submitting it on the first poll) to its final completion, and
    /// returns its data with the raw completion instead of building the output: for a
    /// caller that decides what the completion means (see `net/retained.rs`).
    ///
    /// # Panics
    ///
    /// If polled again after it returned `Ready`.
    pub(crate) fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<(T, Completion)> {
        #[cfg(feature = "fault-injection")]
        if let State::Delayed(timer) = &mut self.state {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.state = State::Unsubmitted;
            self.verdict = Some(crate::fault::Verdict::Submit(None));
        }
        let c = match self.state {
            State::Unsubmitted => {
                let data = self.data.as_mut().expect("coring: operation without data");
                let desc = data.describe();
                // Asked once per operation: a submission put off (the inline budget, a
                // readiness wait) keeps its verdict.
                #[cfg(feature = "fault-injection")]
                let desc = match *self
                    .verdict
                    .get_or_insert_with(|| crate::fault::apply(&desc))
                {
                    crate::fault::Verdict::Submit(None) => desc,
                    crate::fault::Verdict::Submit(Some(max)) => crate::fault::shorten(desc, max),
                    crate::fault::Verdict::Fail(code) => {
                        return self.finish(Completion::error(code));
                    }
                    crate::fault::Verdict::Delay(d) => {
                        self.state = State::Delayed(Box::pin(crate::time::sleep(d)));
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                };
                // Checked here, where the description's variant is known to the compiler:
                // for an operation without a file offset the check costs nothing.
                let (submitted, driver) = match desc.check() {
                    Ok(()) => context::submit(data, &desc, cx.waker()),
                    Err(errno) => (Err(std::io::Error::from_raw_os_error(errno)), None),
                };
                match submitted {
                    Ok(Submitted::InFlight(key)) => {
                        self.state = State::InFlight(key);
                        self.driver = driver;
                        return Poll::Pending;
                    }
                    Ok(Submitted::Completed(c)) => c,
                    // Nothing submitted: the backend wakes us when the descriptor may be
                    // ready (or the task yields its turn), and the next poll submits again.
                    Ok(Submitted::NotReady) => return Poll::Pending,
                    // Nothing reached the kernel: complete with the error through the same
                    // path a kernel error takes.
                    Err(e) => Completion::error(e.raw_os_error().unwrap_or(c::EIO)),
                }
            }
            State::InFlight(key) => {
                let driver = self
                    .driver
                    .as_ref()
                    .expect("coring: in-flight op without driver");
                let mut polled = driver.borrow_mut().poll_op(key, cx);
                // Completions before the final one (a zero-copy send's result, ahead of
                // its notification) go to the operation; the slot, and with it the data,
                // stays in flight until the final one.
                while let Poll::Ready(c) = polled {
                    if !c.more() {
                        break;
                    }
                    self.data
                        .as_mut()
                        .expect("coring: operation without data")
                        .progress(c);
                    polled = driver.borrow_mut().poll_op(key, cx);
                }
                let Poll::Ready(c) = polled else {
                    // Only the runtime that submitted it turns its driver: awaited anywhere
                    // else, it would never complete.
                    assert!(
                        context::is_current_driver(driver),
                        "coring: an IO operation started on one coring runtime is awaited \
                         outside it (on another runtime, or none); await it on the runtime \
                         that started it"
                    );
                    return Poll::Pending;
                };
                c
            }
            State::Collected => panic!("coring: operation future polled after completion"),
            #[cfg(feature = "fault-injection")]
            State::Delayed(_) => unreachable!("released above"),
        };
        self.finish(c)
    }

    /// Hands the final completion over with the data.
    fn finish(&mut self, c: Completion) -> Poll<(T, Completion)> {
        self.state = State::Collected;
        let data = self.data.take().expect("coring: operation without data");
        Poll::Ready((data, c))
    }

    /// Whether the operation was submitted and its completion not collected yet (the
    /// kernel may be using its data).
    #[inline]
    pub(crate) fn in_flight(&self) -> bool {
        matches!(self.state, State::InFlight(_))
    }

    /// The data of an operation that was never submitted; `None` once it was.
    pub(crate) fn into_unsubmitted(mut self) -> Option<T> {
        match self.state {
            State::Unsubmitted => self.data.take(),
            #[cfg(feature = "fault-injection")]
            State::Delayed(_) => self.data.take(),
            _ => None,
        }
    }

    /// Asks the backend to cancel the operation if it is in flight, without waiting: its
    /// final completion comes as usual (`-ECANCELED`, unless it finished first).
    pub(crate) fn request_cancel(&self) {
        if let (State::InFlight(key), Some(driver)) = (&self.state, &self.driver) {
            driver.borrow_mut().cancel(*key);
        }
    }
}

impl<T: Operation> Future for Op<T> {
    type Output = T::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        self.get_mut()
            .poll_raw(cx)
            .map(|(data, c)| data.complete(c))
    }
}

impl<T: Operation> Drop for Op<T> {
    fn drop(&mut self) {
        let State::InFlight(key) = self.state else {
            return;
        };
        let (Some(driver), Some(data)) = (self.driver.take(), self.data.take()) else {
            return;
        };
        let mut data = Some(data);
        let finished = driver.borrow_mut().orphan(key, || {
            Box::new(data.take().expect("coring: orphan data taken once"))
        });
        // The completion had already arrived: finish it now, outside the driver borrow
        // (dropping the output may close an fd or run user Drop code).
        match (finished, data) {
            (Some((c, Some(orphan))), _) => orphan.finish(c),
            (Some((c, None)), Some(data)) => drop(data.complete(c)),
            _ => {}
        }
    }
}
