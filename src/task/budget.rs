//! The per-poll budget of inline completions, and the share of it a task gets while other
//! tasks wait to run.
//!
//! An operation that completes during submission (a read the page cache answers, a send
//! with room in the socket) never returns `Pending`, so a task looping over such operations
//! would never give the thread back. Each poll therefore gets a budget of inline
//! completions; an operation that finds it spent makes its task yield (the task goes back
//! to the run queue and is polled again after the other ready tasks, with a new budget).
//!
//! How large the budget is decides the latency of every other task's operations. A task
//! that yields goes to the back of the run queue and waits there while every task ahead of
//! it spends its own budget: with 32 tasks reading cached blocks and a budget of 128 for
//! everyone, one read in 128 waited for 31 × 128 others (3 to 5 ms at ~1 µs a read) while
//! the other 127 took a microsecond. The mean cannot change (Little's law: 32 reads in
//! flight at ~1M reads/s is ~32 µs each, whatever the order), only how it is spread. So
//! the budget depends on what the task did last time and on whether others wait:
//!
//! - a task whose last poll ended on its budget ("hungry": it would have gone on) gets
//!   [`CONTENDED_SLICE`] inline completions while other tasks are ready to run: hungry
//!   tasks then take turns one operation at a time, the order in which a ring would serve
//!   the same operations, and each operation waits for about one operation of each other
//!   ready task (~32 µs at 32 cached readers) instead of their whole budgets;
//! - every other poll gets [`INLINE_BUDGET`]: a task that completes a few operations inline
//!   and then waits for IO (an echo connection's receive and send) is never cut short, and
//!   a hungry task alone on its thread still amortises its yields over 128 operations.
//!
//! Ordered writes (stream sends, write shutdowns) never yield, since a later one could
//! overtake them; past a hungry task's slice they still complete inline up to the
//! [`INLINE_BUDGET`] of the poll (`room`), as they would in any other poll.
//!
//! Nothing here reads a clock: the budget counts completions, so the hot path stays a few
//! loads and stores (a poll that is neither hungry nor cut short costs a store and two
//! tests more than a flat budget did, which callgrind does not see on the echo path), and
//! the scheduling is deterministic.

use std::cell::Cell;
use std::task::Waker;

/// Inline completions a poll may make when the task was not cut short last time, or when
/// nothing else is ready to run. Past them it yields: however its operations complete, the
/// loop gets to look at IO, timers and other tasks at least every 128 of them.
const INLINE_BUDGET: u32 = 128;

/// Inline completions a hungry task (its last poll ended on its budget) may make in a poll
/// while other tasks are ready to run: one, so that such tasks interleave operation by
/// operation. More would let a few operations finish at once and make the next one wait
/// for that many operations of every other task: at 8 cached readers, a slice of 4 gave
/// a p99 of ~45 µs where a slice of 1 gives ~15 µs, for the same mean and, within this
/// machine's noise, the same reads per second (a yield costs a task poll, ~200
/// instructions, against a cached read's ~1 µs).
const CONTENDED_SLICE: u32 = 1;

/// How the poll under way was cut short by the budget, if it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// It was not: the task (or future) made no operation yield.
    No,
    /// An operation yielded and woke its waker, which is not the polled task's own (a
    /// combinator's, or `block_on`'s): the wake brings the task back.
    Woken,
    /// An operation yielded with the polled task's own waker, without waking it: the
    /// executor puts the task back in the run queue after the poll, which is what the
    /// wake would have done, for less (no reference counted for a waker, no trip through
    /// the thread-local context).
    Requeue,
}

/// The budget of the poll under way (a task's or `block_on`'s future), one per runtime.
///
/// Between polls, `cut` is [`Cut::No`] and `room` is 0: [`finish`](Self::finish) puts them
/// back after a poll that changed them, so a poll of a task that is not hungry and not cut
/// short writes neither.
#[derive(Debug)]
pub(crate) struct InlineBudget {
    /// Inline completions the poll under way may still make.
    left: Cell<u32>,
    /// Inline completions ordered writes (which never yield, see `context::submit`) may
    /// still make once `left` is spent: what a hungry task's slice leaves of
    /// [`INLINE_BUDGET`], so that its stream sends still complete during submission, as
    /// they would outside its slice, up to the budget every poll has.
    room: Cell<u32>,
    /// Whether (and how) an operation of the poll under way yielded because `left` was 0.
    cut: Cell<Cut>,
    /// The waker data of the task being polled ([`super::raw`]), null for `block_on`'s
    /// future: a yield with that waker is a [`Cut::Requeue`].
    polled: Cell<*const ()>,
}

impl InlineBudget {
    pub(crate) fn new() -> InlineBudget {
        InlineBudget {
            left: Cell::new(INLINE_BUDGET),
            room: Cell::new(0),
            cut: Cell::new(Cut::No),
            polled: Cell::new(std::ptr::null()),
        }
    }

    /// Opens the budget of a poll of the task whose waker data is `task` (null for
    /// `block_on`'s future): [`INLINE_BUDGET`], or [`CONTENDED_SLICE`] if the task is
    /// `hungry` and `others_ready` (asked only then) says other tasks wait to run.
    #[inline(always)]
    pub(crate) fn start(&self, hungry: bool, others_ready: impl FnOnce() -> bool, task: *const ()) {
        if hungry && others_ready() {
            self.left.set(CONTENDED_SLICE);
            self.room.set(INLINE_BUDGET - CONTENDED_SLICE);
        } else {
            self.left.set(INLINE_BUDGET);
        }
        self.polled.set(task);
    }

    /// Closes the budget of the poll opened by [`start`](Self::start) with `hungry`: how it
    /// was cut short (the polled task or future is hungry for its next poll unless
    /// [`Cut::No`]).
    #[inline(always)]
    pub(crate) fn finish(&self, hungry: bool) -> Cut {
        let cut = self.cut.get();
        if hungry || cut != Cut::No {
            self.reset();
        }
        cut
    }

    /// Puts `cut` and `room` back to what they are between polls.
    #[inline(always)]
    pub(crate) fn reset(&self) {
        self.cut.set(Cut::No);
        self.room.set(0);
    }

    /// Inline completions the poll may still make.
    #[inline(always)]
    pub(crate) fn left(&self) -> u32 {
        self.left.get()
    }

    /// Sets what [`left`](Self::left) returns (after an inline completion: one less).
    #[inline(always)]
    pub(crate) fn set_left(&self, left: u32) {
        self.left.set(left);
    }

    /// For an ordered write submitted with `left` spent: 1 if it may still complete inline
    /// (taken from `room`), else 0.
    #[cold]
    #[inline(never)]
    pub(crate) fn take_room(&self) -> u32 {
        let room = self.room.get();
        if room == 0 {
            return 0;
        }
        self.room.set(room - 1);
        1
    }

    /// An operation found the budget spent and yields (returns `Pending` without having
    /// started): has the task polled again after the other ready ones, through `waker`,
    /// or, when that is the polled task's own waker, by the executor after the poll.
    #[cold]
    #[inline(never)]
    pub(crate) fn yield_op(&self, waker: &Waker) {
        if super::raw::is_waker_of(waker, self.polled.get()) {
            self.cut.set(Cut::Requeue);
        } else {
            if self.cut.get() == Cut::No {
                self.cut.set(Cut::Woken);
            }
            waker.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hungry_task_gets_the_slice_only_while_others_are_ready() {
        let b = InlineBudget::new();
        b.start(true, || true, std::ptr::null());
        assert_eq!(b.left(), CONTENDED_SLICE);
        assert_eq!(b.finish(true), Cut::No);
        b.start(true, || false, std::ptr::null());
        assert_eq!(b.left(), INLINE_BUDGET);
        assert_eq!(b.finish(true), Cut::No);
        b.start(
            false,
            || unreachable!("asked whether others are ready for a poll not hungry"),
            std::ptr::null(),
        );
        assert_eq!(b.left(), INLINE_BUDGET);
        assert_eq!(b.finish(false), Cut::No);
    }

    #[test]
    fn ordered_writes_get_what_the_slice_left_of_the_budget_for_that_poll_only() {
        let b = InlineBudget::new();
        b.start(true, || true, std::ptr::null());
        b.set_left(0);
        for _ in 0..INLINE_BUDGET - CONTENDED_SLICE {
            assert_eq!(b.take_room(), 1);
        }
        assert_eq!(b.take_room(), 0);
        assert_eq!(b.finish(true), Cut::No);
        b.start(true, || true, std::ptr::null());
        assert_eq!(b.finish(true), Cut::No);
        b.start(false, || true, std::ptr::null());
        b.set_left(0);
        assert_eq!(b.take_room(), 0, "room left over from a hungry poll");
    }

    #[test]
    fn a_yield_with_another_waker_wakes_it_and_finish_resets_the_cut() {
        let b = InlineBudget::new();
        b.start(false, || true, std::ptr::null());
        b.yield_op(Waker::noop());
        assert_eq!(b.finish(false), Cut::Woken);
        b.start(true, || true, std::ptr::null());
        assert_eq!(b.finish(true), Cut::No);
    }
}
