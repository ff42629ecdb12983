//! The task cell, its waker, and the per-thread executor.
//!
//! A task is one heap cell: a [`Header`] (reference count, flags, the owning runtime)
//! followed by the future's stage. References to it ([`TaskRef`]) are counted like an
//! `Arc`'s; the run queue, the registry of live tasks, the `JoinHandle` and every waker
//! each own one. Wakers are that pointer with one static vtable, so waking never
//! allocates. Wakers are `Send` (as `Waker` requires): a wake on the owning runtime's
//! thread pushes onto the local run queue; a wake from any other thread goes through the
//! runtime's remote queue and unparks its backend. The future itself is only ever touched
//! on the owning thread.
//!
//! Cells come from the runtime's [`CellCache`] and go back to it when their last reference
//! is dropped on the owning thread (anywhere else, straight to the allocator).

use std::alloc::Layout;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use slab::Slab;

use super::budget::{Cut, InlineBudget};
use super::cells::{cell_layout, CellCache, KEEP_BYTES, TRIM_BATCH};
use super::join::{JoinError, JoinHandle};
use crate::driver::Unpark;
use crate::runtime::context;

/// The part of a runtime other threads may touch: its remote run queue and unparker.
pub(crate) struct Shared {
    /// Unique per runtime; tells a waker whether it runs on its task's thread.
    pub(crate) id: usize,
    remote: Mutex<Remote>,
    /// Set when a remote wake has already unparked the runtime and it has not yet looked.
    notified: AtomicBool,
    /// Set while the runtime is awake: running its loop, or spinning before parking (see
    /// `Builder::park_spin`). A remote wake then only needs to set `notified`, which the
    /// loop looks at before it parks, not to unpark it through the kernel (a syscall on
    /// the waking side, a completion on the woken). Cleared (by `stop_spinning`) right
    /// before a park, set again (by `start_spinning`) once the park returns.
    spinning: AtomicBool,
    unparker: Arc<dyn Unpark>,
}

struct Remote {
    queue: Vec<TaskRef>,
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
            // Awake: a runtime is built on a running thread, and its loop clears this
            // before it first parks.
            spinning: AtomicBool::new(true),
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

    fn push_remote(&self, task: TaskRef) {
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        if remote.closed {
            // The runtime is gone and has dropped every future; nothing left to run.
            return;
        }
        remote.queue.push(task);
        drop(remote);
        self.notify();
    }

    fn take_remote(&self, into: &mut VecDeque<TaskRef>) {
        // Pushers set `notified` after pushing, so a clear flag means nothing new arrived
        // since the last look (or its notify is still coming and will unpark us): skip
        // the lock on the common, purely local path.
        // A load first: this runs every turn and the flag is usually clear, and a swap is a
        // locked instruction even then.
        if !self.notified.load(Ordering::Acquire) || !self.notified.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        into.extend(remote.queue.drain(..));
    }

    fn close(&self) -> Vec<TaskRef> {
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        remote.closed = true;
        std::mem::take(&mut remote.queue)
    }
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

/// The type-independent start of every task cell.
///
/// Everything but `refs`, `scheduled`, `vtable` and `shared` is touched only on the owning
/// runtime's thread: the executor runs the task there, `JoinHandle` (which reaches it) is
/// `!Send`, and the runtime drops every unfinished future on its thread before it goes
/// away. Other threads hold wakers, which only count references and schedule.
#[repr(C)]
struct Header {
    /// Owned references: run queue entries, registry entry, `JoinHandle`, wakers.
    refs: AtomicUsize,
    /// In a run queue (local or remote) already.
    scheduled: AtomicBool,
    /// Set once the stage holds `Finished` or `Consumed`; lets `JoinHandle` check without
    /// touching the stage while the future may be running.
    complete: Cell<bool>,
    aborted: Cell<bool>,
    join_interest: Cell<bool>,
    /// Whether the task's last poll ended on its inline budget (see the `budget` module):
    /// it gets the small contended slice while other tasks are ready.
    hungry: Cell<bool>,
    vtable: &'static Vtable,
    shared: Arc<Shared>,
    join_waker: Cell<Option<Waker>>,
    /// Key in the executor's registry of live tasks.
    key: Cell<usize>,
}

/// A task cell: the header, then the future's stage. `repr(C)` puts the header first, so
/// a pointer to the cell is a pointer to its header.
#[repr(C)]
struct TaskCell<F: Future> {
    header: Header,
    stage: UnsafeCell<Stage<F>>,
}

/// The operations on a cell that depend on its future's type.
struct Vtable {
    /// Polls the future once (owning thread, task not complete).
    poll: unsafe fn(&TaskRef),
    /// Drops the future and finishes the task as cancelled (owning thread, not complete).
    cancel: unsafe fn(NonNull<Header>),
    /// Drops whatever the stage holds (owning thread, or `Consumed` already).
    consume: unsafe fn(NonNull<Header>),
    /// Drops the cell's contents in place.
    drop_cell: unsafe fn(NonNull<Header>),
    /// The layout the cell was allocated with.
    layout: Layout,
}

impl<F: Future + 'static> TaskCell<F> {
    const VTABLE: Vtable = Vtable {
        poll: poll_cell::<F>,
        cancel: cancel_cell::<F>,
        consume: consume_cell::<F>,
        drop_cell: drop_cell::<F>,
        layout: cell_layout(Layout::new::<TaskCell<F>>()),
    };

    /// # Safety
    ///
    /// `h` is the header of a live `TaskCell<F>`.
    unsafe fn from_header<'a>(h: NonNull<Header>) -> &'a TaskCell<F> {
        // SAFETY: per the contract; the header is the cell's first field (repr(C)).
        unsafe { h.cast::<TaskCell<F>>().as_ref() }
    }

    /// The stage, mutably.
    ///
    /// # Safety
    ///
    /// Owning thread, and nothing else borrows the stage: the future is not being polled
    /// (or this is the poll itself).
    #[allow(clippy::mut_from_ref)]
    unsafe fn stage(&self) -> &mut Stage<F> {
        // SAFETY: per the contract.
        unsafe { &mut *self.stage.get() }
    }

    /// Drops the stage where it lies and leaves `Consumed` there. The future is pinned in
    /// the cell: moving it out to drop it elsewhere would break the promise `Pin` made to
    /// it (an async block's drop glue reaches its own borrowed locals through pointers into
    /// the cell; after a move they would point at whatever the cell holds next). A panic
    /// in a drop is caught and returned; the rest of the stage is still dropped (drop glue
    /// unwinds through the remaining fields) and never dropped again.
    ///
    /// # Safety
    ///
    /// Owning thread; the future is not running, and nothing else borrows the stage.
    unsafe fn drop_stage_in_place(&self) -> std::thread::Result<()> {
        let stage = self.stage.get();
        // SAFETY: per the contract the stage is ours to drop; it is valid (not dropped
        // yet) because every path that drops it writes `Consumed` right after.
        let r = catch_unwind(AssertUnwindSafe(|| unsafe {
            std::ptr::drop_in_place(stage)
        }));
        // SAFETY: the old stage was dropped (completely, even after a panic), so it is
        // overwritten without dropping it again.
        unsafe { std::ptr::write(stage, Stage::Consumed) };
        r
    }

    /// Stores the output (or drops it if nobody will join) and completes the task.
    ///
    /// # Safety
    ///
    /// Owning thread; the future is not running.
    unsafe fn finish(&self, result: Result<F::Output, JoinError>) {
        // Drop the future (if still there) before deciding where the output goes: its drop
        // may run user code that drops this task's own JoinHandle, and then nobody will
        // collect the output, which must not be left in the cell for the last reference
        // (maybe a waker on another thread) to drop. A panic in that drop is the task's
        // panic, as in a poll; it never unwinds into the executor.
        // SAFETY: per the contract.
        let dropped = unsafe { self.drop_stage_in_place() };
        let result = match (dropped, result) {
            (Ok(()), result) => result,
            // Already failed (a panic in poll, a cancel): that stays the reason.
            (Err(payload), Err(e)) => {
                drop_quietly(payload);
                Err(e)
            }
            (Err(payload), Ok(out)) => {
                drop_quietly(out);
                Err(JoinError::panic(payload))
            }
        };
        if self.header.join_interest.get() {
            // SAFETY: as above; nothing borrows the stage (the drop is over).
            *unsafe { self.stage() } = Stage::Finished(result);
        } else {
            // Dropped here, on the owning thread; its drop may panic, which is swallowed.
            drop_quietly(result);
        }
        self.header.completed();
    }
}

/// Drops `v` here, swallowing a panic from its drop: nothing a task leaves behind may
/// unwind into the executor (a half-finished shutdown would leave other tasks' futures to
/// whichever thread drops their last waker). The panic's payload is dropped the same way;
/// if that panics too, the second payload is leaked (forgotten) rather than risk a third.
pub(crate) fn drop_quietly<T>(v: T) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(v))) {
        if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(again);
        }
    }
}

/// # Safety
///
/// `task` is a `TaskCell<F>`, on its owning thread, not complete, not being polled.
unsafe fn poll_cell<F: Future + 'static>(task: &TaskRef) {
    // SAFETY: per the contract.
    let cell = unsafe { TaskCell::<F>::from_header(task.ptr) };
    // The waker borrows `task`'s reference for this poll only (ManuallyDrop: never
    // dropped, so the count is untouched); clones take their own reference.
    // SAFETY: the pointer is a live task header, as the waker vtable expects.
    let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw_waker(task.ptr)) });
    let mut cx = Context::from_waker(&waker);
    // SAFETY: owning thread; the only other code that reaches the stage (finish, cancel,
    // JoinHandle) runs when the future is not being polled, and `JoinHandle` checks
    // `complete` before touching it.
    let Stage::Running(fut) = (unsafe { cell.stage() }) else {
        return;
    };
    // SAFETY: the future lives in the cell and is never moved out of it; it is dropped in
    // place (by assigning another stage).
    let fut = unsafe { Pin::new_unchecked(fut) };
    match catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx))) {
        Ok(Poll::Pending) => {
            let h = task.header();
            if h.key.get() == UNREGISTERED {
                // From now on wakers may be held anywhere, so the executor must own a
                // reference to drop the future on this thread at shutdown.
                let key = context::try_with(|inner| inner.executor.register(task.clone()));
                h.key.set(key.unwrap_or(UNREGISTERED));
            }
        }
        // SAFETY: owning thread, and the poll is over.
        Ok(Poll::Ready(out)) => unsafe { cell.finish(Ok(out)) },
        // The broken future is dropped by finish (a panic while dropping it is swallowed:
        // the poll's panic stays the task's).
        // SAFETY: owning thread; the poll is over.
        Err(payload) => unsafe { cell.finish(Err(JoinError::panic(payload))) },
    }
}

/// # Safety
///
/// `h` is a `TaskCell<F>`, on its owning thread, not complete, not being polled.
unsafe fn cancel_cell<F: Future + 'static>(h: NonNull<Header>) {
    // SAFETY: per the contract.
    let cell = unsafe { TaskCell::<F>::from_header(h) };
    // Dropping the future (in place: it is pinned) may drop in-flight operations (they
    // become orphans) or run user code that panics; the panic must not take the runtime
    // down.
    // SAFETY: owning thread, future not running.
    if let Err(payload) = unsafe { cell.drop_stage_in_place() } {
        drop_quietly(payload);
    }
    // SAFETY: as above.
    unsafe { cell.finish(Err(JoinError::cancelled())) };
}

/// # Safety
///
/// `h` is a `TaskCell<F>`; on its owning thread with the future not running, or with the
/// stage `Consumed` already.
unsafe fn consume_cell<F: Future + 'static>(h: NonNull<Header>) {
    // SAFETY: per the contract.
    unsafe { *TaskCell::<F>::from_header(h).stage() = Stage::Consumed };
}

/// # Safety
///
/// `h` is a `TaskCell<F>` nobody references any more; its stage is `Consumed` unless this
/// runs on the owning thread.
unsafe fn drop_cell<F: Future + 'static>(h: NonNull<Header>) {
    // SAFETY: per the contract, the cell is unreferenced, so it can be dropped in place.
    unsafe { std::ptr::drop_in_place(h.cast::<TaskCell<F>>().as_ptr()) };
}

impl Header {
    /// Marks the task complete (its stage already says how), wakes the joiner and leaves
    /// the registry. Owning thread.
    fn completed(&self) {
        self.complete.set(true);
        if let Some(w) = self.join_waker.take() {
            w.wake();
        }
        let key = self.key.replace(UNREGISTERED);
        context::try_with(|inner| {
            if key != UNREGISTERED {
                inner.executor.deregister(key);
            }
            inner.executor.live.set(inner.executor.live.get() - 1);
        });
    }
}

/// `Header::key` of a task not in the executor's registry (not yet pending once, or done).
const UNREGISTERED: usize = usize::MAX;

/// Beyond this many references, counting aborts the process (as `Arc` does): the count
/// must never wrap.
const MAX_REFS: usize = isize::MAX as usize;

/// One owned reference to a task cell.
pub(crate) struct TaskRef {
    ptr: NonNull<Header>,
}

// SAFETY: what other threads may do with a TaskRef (drop it, clone it, schedule it) touches
// only the atomic count, the `scheduled` flag and `shared` (Sync); everything else is
// touched on the owning thread (see `Header`). The last reference may be dropped on
// another thread only after the owning thread consumed the stage (the runtime cancels
// every unfinished task on its thread before it goes away).
unsafe impl Send for TaskRef {}
// SAFETY: as above.
unsafe impl Sync for TaskRef {}

impl TaskRef {
    fn header(&self) -> &Header {
        // SAFETY: a TaskRef keeps its cell alive.
        unsafe { self.ptr.as_ref() }
    }

    /// Takes another reference to the task behind `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` is a live task header (someone holds a reference for the whole call).
    unsafe fn clone_raw(ptr: NonNull<Header>) -> TaskRef {
        // SAFETY: per the contract.
        let old = unsafe { ptr.as_ref() }.refs.fetch_add(1, Ordering::Relaxed);
        if old > MAX_REFS {
            std::process::abort();
        }
        TaskRef { ptr }
    }

    /// Queues the task to be polled, unless it is queued already.
    fn schedule(self) {
        if self.header().scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        self.enqueue();
    }

    /// Puts the task on its runtime's run queue; the caller has just set `scheduled`
    /// (with a read-modify-write, see `run`).
    fn enqueue(self) {
        let owner = self.header().shared.id;
        // Move our reference into whichever queue takes it: no extra count traffic.
        let mut task = Some(self);
        context::try_with(|inner| {
            if inner.shared.id == owner {
                inner.executor.push(task.take().expect("taken once"));
            }
        });
        if let Some(task) = task {
            // Keep the runtime's shared part alive while it is being notified, even if the
            // task is run and freed in the meantime.
            let shared = task.header().shared.clone();
            shared.push_remote(task);
        }
    }

    /// Polls the task once (or cancels it if aborted), with its share of the inline
    /// `budget` (which, for a hungry task, depends on whether tasks of `executor` wait
    /// behind it). Owning thread. Returns the task if it is to go back to the run
    /// queue (a [`Cut::Requeue`] yield).
    #[inline(always)]
    fn run(self, executor: &Executor, budget: &InlineBudget) -> Option<TaskRef> {
        let h = self.header();
        // A read-modify-write, as every waker's claim is: a wake that finds the flag set
        // must be ordered before this clear, so the poll below sees whatever the waker
        // published before waking. (A plain store here and a plain load in a waker can
        // both read stale values, store-buffer style, and lose the wake for good.)
        h.scheduled.swap(false, Ordering::AcqRel);
        if h.complete.get() {
            return None;
        }
        if h.aborted.get() {
            self.cancel();
            return None;
        }
        let hungry = h.hungry.get();
        budget.start(hungry, || executor.has_ready(), self.ptr.as_ptr().cast());
        // SAFETY: owning thread (run queues are per runtime), not complete, and the future
        // is not being polled (a task is in at most one queue, and run is not re-entered
        // for the same task).
        unsafe { (h.vtable.poll)(&self) };
        let cut = budget.finish(hungry);
        if hungry || cut != Cut::No {
            return self.after_budget(cut);
        }
        None
    }

    /// After a poll of a hungry task, or one the budget cut short: the task is hungry if it
    /// was cut short, and goes back to the run queue (returned) if its yield did not wake
    /// it.
    #[inline]
    fn after_budget(self, cut: Cut) -> Option<TaskRef> {
        let h = self.header();
        h.hungry.set(cut != Cut::No);
        // The wake the yield did not do: claimed like a waker's (a wake during the poll
        // may have queued the task already), and this reference goes to the queue.
        (cut == Cut::Requeue && !h.complete.get() && !h.scheduled.swap(true, Ordering::AcqRel))
            .then_some(self)
    }

    /// Drops the future without finishing it (runtime shutdown, abort). Owning thread.
    fn cancel(&self) {
        let h = self.header();
        if h.complete.get() {
            return;
        }
        // SAFETY: owning thread, not complete, not being polled (cancel runs from the run
        // queue or at shutdown, never inside the task's own poll).
        unsafe { (h.vtable.cancel)(self.ptr) };
    }
}

impl Clone for TaskRef {
    fn clone(&self) -> TaskRef {
        // SAFETY: self holds a reference.
        unsafe { TaskRef::clone_raw(self.ptr) }
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        let refs = &self.header().refs;
        // A count of 1 is ours alone: no other reference exists to clone from, so the
        // check needs no read-modify-write (the common case for the last of a short task's
        // references). Acquire pairs with the Release decrements of other owners.
        if refs.load(Ordering::Acquire) != 1 {
            if refs.fetch_sub(1, Ordering::Release) != 1 {
                return;
            }
            fence(Ordering::Acquire);
        }
        // SAFETY: that was the last reference.
        unsafe { free_cell(self.ptr) };
    }
}

/// Drops a cell's contents and frees its memory: to its runtime's cache on the owning
/// thread, to the allocator anywhere else.
///
/// # Safety
///
/// The last reference to the cell is gone.
unsafe fn free_cell(ptr: NonNull<Header>) {
    // SAFETY: the cell is still intact until drop_cell below.
    let (owner, vtable) = unsafe {
        let h = ptr.as_ref();
        (h.shared.id, h.vtable)
    };
    // Dropping the contents may run user code (a leftover output, a waker's drop) that
    // spawns or drops other tasks; nothing of this runtime is borrowed here.
    // SAFETY: unreferenced; the stage is Consumed unless on the owning thread (see
    // `TaskRef`'s Send impl).
    unsafe { (vtable.drop_cell)(ptr) };
    let mut memory = Some(ptr.cast::<u8>());
    context::try_with(|inner| {
        if inner.shared.id == owner {
            let p = memory.take().expect("taken once");
            // SAFETY: allocated by this runtime's cache with the vtable's layout (any
            // cell is a global allocation with it), contents dropped, unreferenced.
            unsafe { inner.executor.cells.borrow_mut().free(p, vtable.layout) };
        }
    });
    if let Some(p) = memory {
        // SAFETY: every cell is one global allocation with the vtable's layout.
        unsafe { std::alloc::dealloc(p.as_ptr(), vtable.layout) };
    }
}

/// Whether `waker` is the waker of the task whose header is at `task` (that is, waking
/// it would only schedule that task).
pub(crate) fn is_waker_of(waker: &Waker, task: *const ()) -> bool {
    waker.data() == task && std::ptr::eq(waker.vtable(), &WAKER_VTABLE)
}

/// The waker of a task is a counted pointer to its header.
fn raw_waker(ptr: NonNull<Header>) -> RawWaker {
    RawWaker::new(ptr.as_ptr().cast(), &WAKER_VTABLE)
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

/// The header a waker's data pointer points to.
fn waker_header(p: *const ()) -> NonNull<Header> {
    // SAFETY: our wakers are made from non-null header pointers only (`raw_waker`).
    unsafe { NonNull::new_unchecked(p.cast_mut().cast()) }
}

/// # Safety
///
/// `p` comes from `raw_waker` and the waker being cloned holds or borrows a reference.
unsafe fn waker_clone(p: *const ()) -> RawWaker {
    // SAFETY: per the contract the task is live; the clone owns the new reference.
    let task = ManuallyDrop::new(unsafe { TaskRef::clone_raw(waker_header(p)) });
    raw_waker(task.ptr)
}

/// # Safety
///
/// `p` is an owned reference (from `waker_clone`).
unsafe fn waker_wake(p: *const ()) {
    // SAFETY: the waker owned one reference, which this consumes.
    TaskRef {
        ptr: waker_header(p),
    }
    .schedule();
}

/// # Safety
///
/// `p` points to a live task for the duration of the call.
unsafe fn waker_wake_by_ref(p: *const ()) {
    let ptr = waker_header(p);
    // Claim with a swap, never a plain load (see `TaskRef::run`); only the claimant takes
    // a reference for the run queue.
    // SAFETY: live for the call, per the contract.
    if !unsafe { ptr.as_ref() }
        .scheduled
        .swap(true, Ordering::AcqRel)
    {
        // SAFETY: as above; the new reference goes to the run queue.
        unsafe { TaskRef::clone_raw(ptr) }.enqueue();
    }
}

/// # Safety
///
/// `p` is an owned reference.
unsafe fn waker_drop(p: *const ()) {
    // SAFETY: releases the reference the waker owned.
    drop(TaskRef {
        ptr: waker_header(p),
    });
}

/// `poll_join::<F>` for a future whose output is `T`.
type PollJoin<T> = unsafe fn(NonNull<Header>, &mut Context<'_>) -> Poll<Result<T, JoinError>>;

/// A `JoinHandle`'s reference: the task, and how to take its output of type `T`.
pub(crate) struct JoinRef<T> {
    task: TaskRef,
    /// `poll_join::<F>` for the task's future type.
    poll: PollJoin<T>,
    /// The stage is reached without synchronisation: only on the owning thread.
    _not_send: PhantomData<*const ()>,
}

/// # Safety
///
/// `h` is a `TaskCell<F>` on its owning thread.
unsafe fn poll_join<F: Future + 'static>(
    h: NonNull<Header>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, JoinError>> {
    // SAFETY: per the contract.
    let cell = unsafe { TaskCell::<F>::from_header(h) };
    if !cell.header.complete.get() {
        cell.header.join_waker.set(Some(cx.waker().clone()));
        return Poll::Pending;
    }
    // SAFETY: owning thread; complete, so the future is gone.
    match std::mem::replace(unsafe { cell.stage() }, Stage::Consumed) {
        Stage::Finished(result) => Poll::Ready(result),
        _ => panic!("JoinHandle polled after it already returned the task's output"),
    }
}

impl<T> JoinRef<T> {
    pub(crate) fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        // SAFETY: `poll` matches the cell's future type (set together in `spawn`), and a
        // JoinRef is !Send, so this is the owning thread.
        unsafe { (self.poll)(self.task.ptr, cx) }
    }

    pub(crate) fn abort(&self) {
        let h = self.task.header();
        if h.complete.get() || h.aborted.replace(true) {
            return;
        }
        // Schedule it like a wake: its next run drops the future, on its own thread, and
        // never while it is being polled (an abort from inside the task lands here too).
        self.task.clone().schedule();
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.task.header().complete.get()
    }

    /// Gives up the output: the task runs on, and its output is dropped when it finishes.
    pub(crate) fn detach(&self) {
        let h = self.task.header();
        h.join_interest.set(false);
        if h.complete.get() {
            // SAFETY: owning thread (JoinRef is !Send); complete, so the future is gone.
            unsafe { (h.vtable.consume)(self.task.ptr) };
        }
    }
}

/// The local run queue, the registry of live tasks and the cell cache of one runtime.
pub(crate) struct Executor {
    queue: RefCell<VecDeque<TaskRef>>,
    tasks: RefCell<Slab<TaskRef>>,
    /// Spawned tasks not finished yet (the registry holds only those pending once).
    live: Cell<usize>,
    /// Reused buffer for the remote queue.
    incoming: RefCell<VecDeque<TaskRef>>,
    cells: RefCell<CellCache>,
    /// Polls of tasks (and of `block_on`'s future, [`Executor::count_poll`]) so far.
    polls: Cell<u64>,
}

impl Executor {
    pub(crate) fn new() -> Executor {
        Executor {
            queue: RefCell::new(VecDeque::with_capacity(256)),
            tasks: RefCell::new(Slab::with_capacity(256)),
            live: Cell::new(0),
            incoming: RefCell::new(VecDeque::new()),
            cells: RefCell::new(CellCache::new()),
            polls: Cell::new(0),
        }
    }

    /// Counts a poll of a future the executor does not run (`block_on`'s).
    #[inline(always)]
    pub(crate) fn count_poll(&self) {
        self.polls.set(self.polls.get() + 1);
    }

    /// Polls of futures so far (see [`Executor::count_poll`]).
    pub(crate) fn polls(&self) -> u64 {
        self.polls.get()
    }

    pub(crate) fn spawn<F>(&self, shared: &Arc<Shared>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let vtable = &TaskCell::<F>::VTABLE;
        let mem = self.cells.borrow_mut().alloc(vtable.layout);
        let cell = TaskCell {
            header: Header {
                // One for the run queue, one for the JoinHandle.
                refs: AtomicUsize::new(2),
                scheduled: AtomicBool::new(true),
                complete: Cell::new(false),
                aborted: Cell::new(false),
                join_interest: Cell::new(true),
                hungry: Cell::new(false),
                vtable,
                shared: shared.clone(),
                join_waker: Cell::new(None),
                key: Cell::new(UNREGISTERED),
            },
            stage: UnsafeCell::new(Stage::Running(future)),
        };
        let ptr = mem.cast::<TaskCell<F>>();
        // SAFETY: fresh memory with the cell's (rounded) layout, so large and aligned
        // enough for a TaskCell<F>.
        unsafe { ptr.as_ptr().write(cell) };
        let ptr = ptr.cast::<Header>();
        // Registered in `tasks` only if its first poll returns Pending (see `poll_cell`):
        // a task that finishes at once never needs it, and until its first poll it is
        // reachable through the run queue, which shutdown also drains.
        self.queue.borrow_mut().push_back(TaskRef { ptr });
        self.live.set(self.live.get() + 1);
        JoinHandle::new(JoinRef {
            task: TaskRef { ptr },
            poll: poll_join::<F>,
            _not_send: PhantomData,
        })
    }

    #[inline]
    fn push(&self, task: TaskRef) {
        self.queue.borrow_mut().push_back(task);
    }

    fn deregister(&self, key: usize) {
        let removed = self.tasks.borrow_mut().try_remove(key);
        drop(removed);
    }

    fn register(&self, task: TaskRef) -> usize {
        self.tasks.borrow_mut().insert(task)
    }

    /// Whether any task is ready to run.
    pub(crate) fn has_ready(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Live (spawned, unfinished) tasks, polled or not.
    pub(crate) fn live(&self) -> usize {
        self.live.get()
    }

    /// Called before the runtime parks: returns part of the cached cells beyond a small
    /// reserve to the allocator (see the `cells` module).
    pub(crate) fn trim_cells(&self) {
        let mut cells = self.cells.borrow_mut();
        if cells.cached_bytes() > KEEP_BYTES {
            cells.trim(KEEP_BYTES, TRIM_BATCH);
        }
    }

    /// Runs up to `max_polls` ready tasks, after pulling in tasks woken by other threads;
    /// each poll gets its share of the runtime's inline `budget`.
    // Inlined into its one caller, the loop of `block_on`, as it was when it took a closure:
    // a call costs the echo path a prologue and epilogue every loop turn.
    #[inline(always)]
    pub(crate) fn run_ready(&self, shared: &Shared, max_polls: usize, budget: &InlineBudget) {
        {
            let mut incoming = self.incoming.borrow_mut();
            shared.take_remote(&mut incoming);
            if !incoming.is_empty() {
                self.queue.borrow_mut().extend(incoming.drain(..));
            }
        }
        for _ in 0..max_polls {
            let next = self.queue.borrow_mut().pop_front();
            match next {
                Some(task) => {
                    self.count_poll();
                    if let Some(task) = task.run(self, budget) {
                        self.push(task);
                    }
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
                t.cancel();
            }
        }
        drop(shared.close());
    }
}
