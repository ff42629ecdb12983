//! The thread-local pointer to the runtime running on this thread.

use crate::platform::c;
use std::cell::{Cell, RefCell};
use std::ptr;
use std::rc::Rc;

use super::Inner;
use crate::cancel::Token;
use crate::driver::op::Operation;
use crate::driver::Driver;

thread_local! {
    static CURRENT: Cell<*const Inner> = const { Cell::new(ptr::null()) };
}

/// Runs `f` with the current runtime, panicking with `misuse` outside one.
#[track_caller]
#[inline(always)]
pub(crate) fn with<R>(misuse: &str, f: impl FnOnce(&Inner) -> R) -> R {
    match try_with(f) {
        Some(r) => r,
        None => outside(misuse),
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn outside(misuse: &str) -> ! {
    panic!("{misuse}")
}

/// Runs `f` with the current runtime, if there is one.
#[inline(always)]
pub(crate) fn try_with<R>(f: impl FnOnce(&Inner) -> R) -> Option<R> {
    let p = CURRENT.with(Cell::get);
    if p.is_null() {
        return None;
    }
    // SAFETY: CURRENT is non-null only while an `Entered` guard lives, and the guard
    // borrows an `Rc<Inner>` that outlives it.
    Some(f(unsafe { &*p }))
}

thread_local! {
    /// The identities of this thread's runtimes that have not been dropped.
    static LIVE: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Records that runtime `id` exists on this thread (until [`runtime_dropped`]).
pub(crate) fn runtime_built(id: u64) {
    LIVE.with(|l| l.borrow_mut().push(id));
}

/// Records that runtime `id` is gone: whatever it had in flight will never complete.
pub(crate) fn runtime_dropped(id: u64) {
    LIVE.with(|l| l.borrow_mut().retain(|&x| x != id));
}

/// Whether runtime `id` still exists on this thread. (Runtimes are `!Send`, and what they
/// drive is thread-bound: a runtime of another thread is never this thread's concern.)
pub(crate) fn runtime_alive(id: u64) -> bool {
    LIVE.with(|l| l.borrow().contains(&id))
}

/// The current runtime's identity ([`Driver::id`]), or 0 outside a runtime: for telling
/// runtimes apart without holding a reference. Never reused within a process.
#[inline]
pub(crate) fn driver_id() -> u64 {
    try_with(|inner| inner.driver_id).unwrap_or(0)
}

/// Whether `driver` is the current runtime's (false outside a runtime).
pub(crate) fn is_current_driver(driver: &Rc<RefCell<Driver>>) -> bool {
    try_with(|inner| Rc::ptr_eq(&inner.driver, driver)).unwrap_or(false)
}

/// Submits operation `data` (described as `desc`, already checked) on the current
/// runtime's driver, or has its task yield if its inline budget is spent; returns the driver handle only when the
/// operation is left in flight (the future keeps it for polling and drop), so an operation
/// that completes during submission costs no reference-count traffic. An operation left
/// in flight has been told so ([`Operation::in_flight`]).
#[track_caller]
#[inline(always)]
pub(crate) fn submit<T: Operation>(
    data: &mut T,
    desc: &crate::driver::OpDesc,
    waker: &std::task::Waker,
) -> (
    std::io::Result<crate::driver::Submitted>,
    Option<Rc<RefCell<Driver>>>,
) {
    with(
        "coring IO used outside a coring runtime; await it inside Runtime::block_on or a \
         task spawned on one",
        // Inlined into each caller (every operation type's `Op::poll`), where the
        // description's variant is known: a shared closure would cost a call per submission.
        #[inline(always)]
        |inner| {
            let mut left = inner.budget.left();
            if left == 0 && !inner.linking() {
                if !T::MAY_BE_ORDERED_WRITE || !desc.is_ordered_write() {
                    // The task used up its inline completions for this poll: it yields
                    // instead (polled again after the other ready tasks, with a fresh
                    // budget) rather than send the operation the slow way (the ring and a
                    // park, or the blocking pool) only because it came late. A link's
                    // operation is submitted anyway: its chain is built in this poll.
                    inner.budget.yield_op(waker);
                    return (Ok(crate::driver::Submitted::NotReady), None);
                }
                // An ordered write is submitted anyway (yielding could let a later one
                // overtake it): inline while what a hungry task's slice left of the
                // poll's budget allows, else the slow way.
                left = inner.budget.take_room();
            }
            debug_assert!(T::MAY_BE_ORDERED_WRITE || !desc.is_ordered_write());
            // Outside a bound future or a link (nearly always) the scope check is one
            // load; the scope's work is out of line.
            let r = if inner.in_cancel_scope() {
                match submit_scoped(inner, desc, waker, left) {
                    Scoped::Group(group) => {
                        inner
                            .driver
                            .borrow_mut()
                            .submit(desc, waker, left > 0, group)
                    }
                    Scoped::Submitted(r) => r,
                    Scoped::Cancelled => {
                        // Started under a cancelled token, or behind a link's failed first
                        // operation: it ends at once, as if the kernel had cancelled it,
                        // without reaching the kernel.
                        let c = crate::driver::Completion::error(c::ECANCELED);
                        return (Ok(crate::driver::Submitted::Completed(c)), None);
                    }
                }
            } else {
                inner.driver.borrow_mut().submit(desc, waker, left > 0, 0)
            };
            match r {
                Ok(crate::driver::Submitted::InFlight(_)) => {
                    data.in_flight(desc, inner.driver_id);
                    (r, Some(inner.driver.clone()))
                }
                Ok(crate::driver::Submitted::Completed(_)) => {
                    inner.budget.set_left(left - 1);
                    (r, None)
                }
                Ok(crate::driver::Submitted::NotReady) => {
                    // Waiting for readiness with nothing in the kernel: a cancel must
                    // wake the task, whose next poll then ends the operation.
                    if inner.in_cancel_scope() {
                        wake_on_scope_cancel(inner, waker);
                    }
                    (r, None)
                }
                Err(_) => (r, None),
            }
        },
    )
}

/// What an operation submitted in a scope does ([`submit_scoped`]).
enum Scoped {
    /// Goes to the driver's `submit` with this cancel group (0: none).
    Group(u32),
    /// Was submitted already: staged by a link, or with a deadline.
    Submitted(std::io::Result<crate::driver::Submitted>),
    /// Ends at once with `ECANCELED`, without reaching the kernel.
    Cancelled,
}

/// The scope's part of [`submit`]: the cancel group of an operation started under a
/// token (or `Cancelled` if the token was cancelled); an operation with a deadline is
/// submitted with it (kept by the kernel where the backend can), and a link's operation
/// is staged.
#[cold]
#[inline(never)]
fn submit_scoped(
    inner: &Inner,
    desc: &crate::driver::OpDesc,
    waker: &std::task::Waker,
    left: u32,
) -> Scoped {
    if let Some(stage) = inner.link_stage() {
        return stage_op(inner, stage, desc, waker);
    }
    let Some(group) = scope_group(inner, desc.is_cancellable()) else {
        return Scoped::Cancelled;
    };
    match inner.cancel_token().and_then(|t| t.deadline()) {
        Some(at) if desc.is_cancellable() => Scoped::Submitted(
            inner
                .driver
                .borrow_mut()
                .submit_timed(desc, waker, left > 0, group, at),
        ),
        _ => Scoped::Group(group),
    }
}

/// Stages an operation a link's future submits: in the driver's table, pushed with its
/// chain once the link has polled both futures ([`Driver::submit_chain`]).
///
/// # Panics
///
/// If the future submits a second operation: a link takes single operations.
fn stage_op(
    inner: &Inner,
    stage: &crate::link::Stage,
    desc: &crate::driver::OpDesc,
    waker: &std::task::Waker,
) -> Scoped {
    if stage.is_cancelled() {
        // The chain's first operation ended before reaching the kernel: this one does not
        // start.
        return Scoped::Cancelled;
    }
    stage.check_single();
    let Some(group) = scope_group(inner, desc.is_cancellable()) else {
        return Scoped::Cancelled;
    };
    let key = inner.driver.borrow_mut().stage(desc, waker, group);
    stage.staged(key);
    Scoped::Submitted(Ok(crate::driver::Submitted::InFlight(key)))
}

/// Makes `stage` the current runtime's link stage until the guard drops (which restores
/// the enclosing state): operations submitted meanwhile are staged there.
pub(crate) fn enter_link(stage: &crate::link::Stage) -> LinkScope<'_> {
    let prev = try_with(|inner| {
        let scope = inner.cancel_scope.get();
        inner
            .cancel_scope
            .set(scope.map_addr(|a| a | super::LINK_TAG));
        (scope, inner.link_stage.replace(stage))
    });
    LinkScope {
        prev,
        _stage: std::marker::PhantomData,
    }
}

/// The guard of [`enter_link`].
pub(crate) struct LinkScope<'a> {
    /// The enclosing scope word and stage, or `None` outside a runtime.
    prev: Option<(*const Token, *const crate::link::Stage)>,
    /// The stage must outlive the guard: the runtime points at it meanwhile.
    _stage: std::marker::PhantomData<&'a crate::link::Stage>,
}

impl Drop for LinkScope<'_> {
    fn drop(&mut self) {
        if let Some((scope, stage)) = self.prev {
            try_with(|inner| {
                inner.cancel_scope.set(scope);
                inner.link_stage.set(stage);
            });
        }
    }
}

/// The cancel group of an operation submitted in the current cancel scope (0 when there
/// is none, or when a token may not stop the operation: `cancellable` false), or `None`
/// if the scope's token was cancelled: the operation then ends at once with `ECANCELED`.
#[cold]
#[inline(never)]
fn scope_group(inner: &Inner, cancellable: bool) -> Option<u32> {
    match inner.cancel_token() {
        Some(_) if !cancellable => Some(0),
        Some(token) if token.is_cancelled() => None,
        Some(token) => Some(token.group_on(&inner.driver)),
        None => Some(0),
    }
}

/// Has `waker` woken when the current cancel scope's token (if any) is cancelled.
#[cold]
#[inline(never)]
fn wake_on_scope_cancel(inner: &Inner, waker: &std::task::Waker) {
    if let Some(token) = inner.cancel_token() {
        token.wake_on_cancel(waker);
    }
}

/// For [`poll_readable`] waiting (`Pending`) in a cancel scope: `Ready` if the scope's
/// token was cancelled (the operation goes on, and its submission under the cancelled
/// token ends it), else `Pending`, with `waker` woken when the token is cancelled.
#[cold]
#[inline(never)]
fn readable_in_scope(inner: &Inner, waker: &std::task::Waker) -> std::task::Poll<()> {
    if inner.linking() {
        // A link's receive is submitted now, to be staged; the backend keeps it waiting
        // for readiness once its chain lets it start.
        return std::task::Poll::Ready(());
    }
    match inner.cancel_token() {
        Some(token) if token.is_cancelled() => std::task::Poll::Ready(()),
        Some(token) => {
            token.wake_on_cancel(waker);
            std::task::Poll::Pending
        }
        None => std::task::Poll::Pending,
    }
}

/// Whether the operation being polled was cancelled by its
/// [`CancelToken`](crate::cancel::CancelToken), for a future about to wait with nothing
/// of its own in the kernel (a read waiting for a stream's multishot receive or for a
/// retained operation): `true` means end now with `ECANCELED`; otherwise `waker` is woken
/// when the token is cancelled. False outside a bound future or a runtime.
pub(crate) fn cancel_requested(waker: &std::task::Waker) -> bool {
    try_with(|inner| match inner.cancel_token() {
        Some(token) if token.is_cancelled() => true,
        Some(token) => {
            token.wake_on_cancel(waker);
            false
        }
        None => false,
    })
    .unwrap_or(false)
}

/// The `ECANCELED` error an operation ends with when its token was cancelled.
pub(crate) fn cancelled() -> std::io::Error {
    std::io::Error::from_raw_os_error(c::ECANCELED)
}

/// Makes `token` the current runtime's cancel scope until the guard drops (which restores
/// the enclosing one): operations polled meanwhile belong to it.
pub(crate) fn enter_cancel_scope(token: &Rc<Token>) -> CancelScope<'_> {
    let prev = try_with(|inner| {
        let prev = inner.cancel_scope.get();
        // A link's tag stays: an operation bound to a token inside a link is still staged.
        let tag = prev.addr() & super::LINK_TAG;
        inner
            .cancel_scope
            .set(Rc::as_ptr(token).map_addr(|a| a | tag));
        prev
    });
    CancelScope {
        prev,
        _token: std::marker::PhantomData,
    }
}

/// The guard of [`enter_cancel_scope`].
pub(crate) struct CancelScope<'a> {
    /// The enclosing scope, or `None` outside a runtime (nothing was entered).
    prev: Option<*const Token>,
    /// The scope's token must outlive the guard: the runtime points at it meanwhile.
    _token: std::marker::PhantomData<&'a Token>,
}

impl Drop for CancelScope<'_> {
    fn drop(&mut self) {
        if let Some(prev) = self.prev {
            try_with(|inner| inner.cancel_scope.set(prev));
        }
    }
}

/// Whether descriptor `fd` (open file `id`) may have something to read, on the current
/// runtime ([`Driver::poll_readable`]).
#[track_caller]
#[inline]
pub(crate) fn poll_readable(
    fd: crate::platform::RawFd,
    id: u64,
    waker: &std::task::Waker,
) -> std::task::Poll<()> {
    with(
        "coring IO used outside a coring runtime; await it inside Runtime::block_on or a \
         task spawned on one",
        |inner| {
            let polled = inner.driver.borrow_mut().poll_readable(fd, id, waker);
            if polled.is_pending() && inner.in_cancel_scope() {
                // Cancelled while waiting: go on to the operation, whose submission under
                // the cancelled token ends it.
                return readable_in_scope(inner, waker);
            }
            polled
        },
    )
}

/// The current runtime's driver (for owners of multishot operations, which poll it
/// directly rather than through an `Op`).
#[track_caller]
pub(crate) fn driver() -> Rc<RefCell<Driver>> {
    with(
        "coring IO used outside a coring runtime; await it inside Runtime::block_on or a \
         task spawned on one",
        |inner| inner.driver.clone(),
    )
}

/// Marks a runtime as running on this thread until dropped.
pub(crate) struct Entered {
    prev: *const Inner,
}

impl Entered {
    /// Enters `inner`; `nested_ok` allows entering while another runtime is current (used
    /// by shutdown paths), otherwise nesting panics.
    #[track_caller]
    pub(crate) fn new(inner: &Rc<Inner>, nested_ok: bool) -> Entered {
        let prev = CURRENT.with(Cell::get);
        if !prev.is_null() && !nested_ok {
            panic!(
                "Runtime::block_on called from inside a coring runtime: a thread runs one event \
                 loop at a time. Inside async code, .await the future (or coring::spawn it) \
                 instead of blocking on it"
            );
        }
        CURRENT.with(|c| c.set(Rc::as_ptr(inner)));
        Entered { prev }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}
