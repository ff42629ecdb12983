//! The task cell, its waker, and the per-thread executor.
//!
//! A task is one `Arc` holding its future. Wakers are that `Arc`, so waking never
//! allocates. Wakers are `Send` (as `Waker` requires): a wake on the owning runtime's
//! thread pushes onto the local run queue; a wake from any other thread goes through the
//! runtime's remote queue and unparks its backend. The future itself is only ever
//! touched on the owning thread.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use slab::Slab;

use super::join::{Join, JoinError, JoinHandle};
use crate::driver::Unpark;
use crate::runtime::context;

/// The part of a runtime other threads may touch: its remote run queue and unparker.
pub(crate) struct Shared {
    /// Unique per runtime; tells a waker whether it runs on its task's thread.
    pub(crate) id: usize,
    remote: Mutex<Remote>,
    /// Set when a remote wake has already unparked the runtime and it has not yet looked.
    notified: AtomicBool,
    /// Set while the runtime spins before parking (see `Builder::park_spin`): a remote
    /// wake then only needs to set `notified`, not to unpark through the kernel.
    spinning: AtomicBool,
    unparker: Arc<dyn Unpark>,
}

struct Remote {
    queue: Vec<Arc<dyn Runnable>>,
    closed: bool,
}

impl Shared {
    pub(crate) fn new(unparker: Arc<dyn Unpark>) -> Shared {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        Shared {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            remote: Mutex::new(Remote {
                queue: Vec::new(),
                closed: false,
            }),
            notified: AtomicBool::new(false),
            spinning: AtomicBool::new(false),
            unparker,
        }
    }

    /// Makes the runtime's loop look at its remote queue soon, unparking it at most once
    /// per batch of remote wakes.
    pub(crate) fn notify(&self) {
        // SeqCst pairs with `stop_spinning`: either the spinner sees `notified`, or we see
        // that it stopped spinning and unpark it.
        if !self.notified.swap(true, Ordering::SeqCst) && !self.spinning.load(Ordering::SeqCst) {
            self.unparker.unpark();
        }
    }

    /// Whether a remote wake arrived that the runtime has not looked at yet.
    pub(crate) fn is_notified(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }

    pub(crate) fn start_spinning(&self) {
        self.spinning.store(true, Ordering::SeqCst);
    }

    /// Stops spinning; returns whether a remote wake arrived meanwhile (then the caller
    /// must not park: that wake did not unpark it).
    pub(crate) fn stop_spinning(&self) -> bool {
        self.spinning.store(false, Ordering::SeqCst);
        self.notified.load(Ordering::SeqCst)
    }

    fn push_remote(&self, task: Arc<dyn Runnable>) {
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        if remote.closed {
            // The runtime is gone and has dropped every future; nothing left to run.
            return;
        }
        remote.queue.push(task);
        drop(remote);
        self.notify();
    }

    fn take_remote(&self, into: &mut VecDeque<Arc<dyn Runnable>>) {
        // Pushers set `notified` after pushing, so a clear flag means nothing new arrived
        // since the last look (or its notify is still coming and will unpark us): skip
        // the lock on the common, purely local path.
        if !self.notified.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        into.extend(remote.queue.drain(..));
    }

    fn close(&self) -> Vec<Arc<dyn Runnable>> {
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        remote.closed = true;
        std::mem::take(&mut remote.queue)
    }
}

/// A spawned task as the executor sees it.
pub(crate) trait Runnable: Send + Sync {
    /// Polls the task once. Called on the owning thread only.
    fn run(self: Arc<Self>);
    /// Drops the future without finishing it (runtime shutdown). Owning thread only.
    fn shutdown(&self);
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

/// One spawned task.
///
/// Everything but `shared` and `scheduled` is touched only on the owning runtime's thread:
/// the executor runs it there, `JoinHandle` (which reaches it) is `!Send`, and the runtime
/// drops every unfinished future on its thread before it goes away. That is what makes
/// the `Send`/`Sync` impls below sound for a `!Send` future.
struct Task<F: Future> {
    shared: Arc<Shared>,
    /// In a run queue (local or remote) already.
    scheduled: AtomicBool,
    stage: UnsafeCell<Stage<F>>,
    /// Set once `stage` holds `Finished` or `Consumed`; lets `JoinHandle` check without
    /// touching `stage` while the future may be running.
    complete: Cell<bool>,
    aborted: Cell<bool>,
    join_interest: Cell<bool>,
    join_waker: Cell<Option<Waker>>,
    /// Key in the executor's registry of live tasks.
    key: Cell<usize>,
}

// SAFETY: the non-thread-safe fields (stage, cells) are accessed only on the owning thread
// (see the type's docs); other threads only touch `shared` (Sync) and `scheduled` (atomic),
// and may drop the last reference only after the owning thread has dropped the future and
// any output (stage is `Consumed` by then).
unsafe impl<F: Future> Send for Task<F> {}
// SAFETY: as above.
unsafe impl<F: Future> Sync for Task<F> {}

impl<F: Future + 'static> Task<F> {
    fn schedule(self: Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        // Move our reference into whichever queue takes it: no extra count traffic.
        let mut task = Some(self);
        context::try_with(|inner| {
            if task
                .as_ref()
                .is_some_and(|t| inner.shared.id == t.shared.id)
            {
                inner.executor.push(task.take().expect("checked above"));
            }
        });
        if let Some(task) = task {
            let shared = task.shared.clone();
            shared.push_remote(task);
        }
    }

    /// Stores the output (or drops it if nobody will join) and wakes the joiner.
    fn finish(&self, result: Result<F::Output, JoinError>) {
        // SAFETY: owning thread, and the future is not running (it just returned or was
        // dropped), so nothing else borrows `stage`.
        let stage = unsafe { &mut *self.stage.get() };
        *stage = if self.join_interest.get() {
            Stage::Finished(result)
        } else {
            Stage::Consumed
        };
        self.complete.set(true);
        if let Some(w) = self.join_waker.take() {
            w.wake();
        }
        let key = self.key.replace(UNREGISTERED);
        if key != UNREGISTERED {
            context::try_with(|inner| inner.executor.deregister(key));
        }
    }
}

/// `Task::key` of a task not in the executor's registry (not yet pending once, or done).
const UNREGISTERED: usize = usize::MAX;

/// The waker of a task is its `Arc`, with a vtable of our own so that the executor can
/// lend a task its waker for one poll without touching the reference count.
fn raw_waker<F: Future + 'static>(task: *const Task<F>) -> RawWaker {
    RawWaker::new(task.cast(), vtable::<F>())
}

fn vtable<F: Future + 'static>() -> &'static RawWakerVTable {
    &RawWakerVTable::new(
        waker_clone::<F>,
        waker_wake::<F>,
        waker_wake_by_ref::<F>,
        waker_drop::<F>,
    )
}

/// # Safety
///
/// `p` comes from `Arc::<Task<F>>::as_ptr` or `into_raw` of a live task.
unsafe fn waker_clone<F: Future + 'static>(p: *const ()) -> RawWaker {
    // SAFETY: p points to a live Arc<Task<F>> (the waker holds or borrows a reference).
    unsafe { Arc::increment_strong_count(p.cast::<Task<F>>()) };
    raw_waker::<F>(p.cast())
}

/// # Safety
///
/// `p` is an owned reference (from `waker_clone` or `Arc::into_raw`).
unsafe fn waker_wake<F: Future + 'static>(p: *const ()) {
    // SAFETY: the waker owned one strong reference, which this consumes.
    let task = unsafe { Arc::from_raw(p.cast::<Task<F>>()) };
    task.schedule();
}

/// # Safety
///
/// `p` points to a live task.
unsafe fn waker_wake_by_ref<F: Future + 'static>(p: *const ()) {
    // SAFETY: p points to a live task for the duration of the call.
    let task = unsafe { &*p.cast::<Task<F>>() };
    if !task.scheduled.load(Ordering::Acquire) {
        // SAFETY: as above; take a new strong reference for the run queue.
        unsafe { Arc::increment_strong_count(p.cast::<Task<F>>()) };
        // SAFETY: the reference just taken is owned by this Arc.
        unsafe { Arc::from_raw(p.cast::<Task<F>>()) }.schedule();
    }
}

/// # Safety
///
/// `p` is an owned reference.
unsafe fn waker_drop<F: Future + 'static>(p: *const ()) {
    // SAFETY: releases the strong reference the waker owned.
    unsafe { Arc::decrement_strong_count(p.cast::<Task<F>>()) };
}

impl<F: Future + 'static> Runnable for Task<F> {
    fn run(self: Arc<Self>) {
        self.scheduled.store(false, Ordering::Release);
        if self.complete.get() {
            return;
        }
        if self.aborted.get() {
            self.shutdown();
            return;
        }
        // SAFETY: the waker borrows `self`'s reference for this poll only (ManuallyDrop:
        // never dropped, so the count is untouched); clones take their own reference.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw_waker(Arc::as_ptr(&self))) });
        let mut cx = Context::from_waker(&waker);
        // SAFETY: owning thread; the only other code that reaches `stage` (finish,
        // shutdown, JoinHandle) runs when the future is not being polled, and
        // `JoinHandle` checks `complete` before touching it.
        let stage = unsafe { &mut *self.stage.get() };
        let Stage::Running(fut) = stage else {
            return;
        };
        // SAFETY: the future lives inside the Arc allocation and is never moved out of
        // it; it is dropped in place (by assigning another stage).
        let fut = unsafe { Pin::new_unchecked(fut) };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx))) {
            Ok(Poll::Pending) => {
                if self.key.get() == UNREGISTERED {
                    // From now on wakers may be held anywhere, so the executor must own a
                    // reference to drop the future on this thread at shutdown.
                    let key = context::try_with(|inner| inner.executor.register(self.clone()));
                    self.key.set(key.unwrap_or(UNREGISTERED));
                }
            }
            Ok(Poll::Ready(out)) => self.finish(Ok(out)),
            Err(payload) => {
                // Drop the broken future now; a panic while dropping it is swallowed.
                let drop_stage = catch_unwind(AssertUnwindSafe(|| {
                    // SAFETY: as above; the poll is over.
                    unsafe { *self.stage.get() = Stage::Consumed };
                }));
                drop(drop_stage);
                self.finish(Err(JoinError::panic(payload)));
            }
        }
    }

    fn shutdown(&self) {
        if self.complete.get() {
            return;
        }
        // SAFETY: owning thread, future not running.
        let old = std::mem::replace(unsafe { &mut *self.stage.get() }, Stage::Consumed);
        // Dropping the future may drop in-flight operations (they become orphans) or run
        // user code that panics; the panic must not take the runtime down.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
        self.finish(Err(JoinError::cancelled()));
    }
}

impl<F: Future + 'static> Join<F::Output> for Task<F> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JoinError>> {
        if !self.complete.get() {
            self.join_waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        // SAFETY: owning thread (JoinHandle is !Send); complete, so the future is gone.
        let stage = unsafe { &mut *self.stage.get() };
        match std::mem::replace(stage, Stage::Consumed) {
            Stage::Finished(result) => Poll::Ready(result),
            _ => panic!("JoinHandle polled after it already returned the task's output"),
        }
    }

    fn abort(self: Arc<Self>) {
        if self.complete.get() || self.aborted.replace(true) {
            return;
        }
        // Schedule it like a wake: its next run drops the future, on its own thread, and
        // never while it is being polled (an abort from inside the task lands here too).
        self.schedule();
    }

    fn is_finished(&self) -> bool {
        self.complete.get()
    }

    fn detach(&self) {
        self.join_interest.set(false);
        if self.complete.get() {
            // SAFETY: owning thread; the future is gone.
            unsafe { *self.stage.get() = Stage::Consumed };
        }
    }
}

/// The local run queue and the registry of live tasks of one runtime.
pub(crate) struct Executor {
    queue: RefCell<VecDeque<Arc<dyn Runnable>>>,
    tasks: RefCell<Slab<Arc<dyn Runnable>>>,
    /// Reused buffer for the remote queue.
    incoming: RefCell<VecDeque<Arc<dyn Runnable>>>,
}

impl Executor {
    pub(crate) fn new() -> Executor {
        Executor {
            queue: RefCell::new(VecDeque::with_capacity(256)),
            tasks: RefCell::new(Slab::with_capacity(256)),
            incoming: RefCell::new(VecDeque::new()),
        }
    }

    pub(crate) fn spawn<F>(&self, shared: &Arc<Shared>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let task = Arc::new(Task {
            shared: shared.clone(),
            scheduled: AtomicBool::new(true),
            stage: UnsafeCell::new(Stage::Running(future)),
            complete: Cell::new(false),
            aborted: Cell::new(false),
            join_interest: Cell::new(true),
            join_waker: Cell::new(None),
            key: Cell::new(UNREGISTERED),
        });
        // Registered in `tasks` only if its first poll returns Pending (see `run`): a task
        // that finishes at once never needs it, and until its first poll it is reachable
        // through the run queue, which shutdown also drains.
        self.queue.borrow_mut().push_back(task.clone());
        JoinHandle::new(task)
    }

    fn push(&self, task: Arc<dyn Runnable>) {
        self.queue.borrow_mut().push_back(task);
    }

    fn deregister(&self, key: usize) {
        let removed = self.tasks.borrow_mut().try_remove(key);
        drop(removed);
    }

    fn register(&self, task: Arc<dyn Runnable>) -> usize {
        self.tasks.borrow_mut().insert(task)
    }

    /// Whether any task is ready to run.
    pub(crate) fn has_ready(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Live (spawned, unfinished) tasks.
    pub(crate) fn live(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Runs up to `budget` ready tasks, after pulling in tasks woken by other threads.
    pub(crate) fn run_ready(&self, shared: &Shared, budget: usize) {
        {
            let mut incoming = self.incoming.borrow_mut();
            shared.take_remote(&mut incoming);
            if !incoming.is_empty() {
                self.queue.borrow_mut().extend(incoming.drain(..));
            }
        }
        for _ in 0..budget {
            let next = self.queue.borrow_mut().pop_front();
            match next {
                Some(task) => {
                    crate::driver::reset_inline_budget();
                    task.run()
                }
                None => break,
            }
        }
    }

    /// Drops every unfinished task's future, on this thread, until none is left (dropping
    /// a future may spawn or wake others).
    pub(crate) fn shutdown(&self, shared: &Shared) {
        loop {
            let mut tasks: Vec<_> = self.tasks.borrow_mut().drain().collect();
            // Tasks never polled yet live only in the run queue.
            tasks.extend(self.queue.borrow_mut().drain(..));
            if tasks.is_empty() {
                break;
            }
            for t in &tasks {
                t.shutdown();
            }
        }
        drop(shared.close());
    }
}
