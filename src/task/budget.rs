//! The per-poll budget of inline completions, and the share of it a task gets while other
//! tasks wait to run.
//!
//! An operation that completes during submission (a read the page cache answers, a send
//! with room in the socket) never returns `Pending`, so a task looping over such operations
//! would never give the thread back. Each poll therefore gets a budget of inline
//! completions; an operation that finds it spent makes its task yield (the task is woken at
//! once and polled again after the other ready tasks, with a new budget).
//!
//! How large the budget is decides the tail latency of every other task on the thread. A
//! task that yields goes to the back of the run queue and waits there while every task
//! ahead of it spends its own budget: with 32 tasks reading cached blocks and a budget of
//! 128 for everyone, one read in 128 waited for 31 × 128 others (about 3 ms at ~0.8 µs a
//! read) while the other 127 took under a microsecond. So the budget depends on what the
//! task did last time and on who else is waiting:
//!
//! - a task whose last poll ended on its budget ("hungry": it would have gone on) gets a
//!   slice of [`CONTENDED_ROUND`] shared with the tasks ready behind it, at least one
//!   completion: hungry tasks then take turns a few operations at a time, as a ring's
//!   round robin would serve them, and a yielded operation waits for about one round
//!   (about [`CONTENDED_ROUND`] operations, or one per ready task when there are more)
//!   instead of every other task's whole budget;
//! - every other poll gets [`INLINE_BUDGET`]: a task that completes a few operations inline
//!   and then waits for IO (an echo connection's receive and send) is never cut short, and
//!   a hungry task alone on its thread still amortises its yields over 128 operations.
//!
//! Nothing here reads a clock: the budget counts completions, so the hot path stays a few
//! loads and stores, and the scheduling is deterministic.

use std::cell::Cell;
use std::task::Waker;

/// Inline completions a poll may make when the task was not cut short last time, or when
/// nothing else is ready to run. Past them it yields: however an operation completes, the
/// loop gets to look at IO, timers and other tasks at least every 128 of them.
const INLINE_BUDGET: u32 = 128;

/// Inline completions a round of hungry tasks shares ([`slice`]): a hungry task's
/// yielded operation waits for about this many operations of the tasks ahead of it (or
/// one per ready task when there are more), so its latency is bounded by the round rather
/// than by the number of tasks times [`INLINE_BUDGET`]. 32 cached 4 KiB reads take ~30 µs
/// here, about what any fair order gives 32 concurrent readers (Little's law: 32 in flight
/// at ~1M reads/s); a smaller round would cost more yields for no lower mean latency.
const CONTENDED_ROUND: u32 = 32;

/// The inline completions of a poll of a hungry task (its last poll ended on its budget)
/// with `waiting` other tasks ready to run behind it: its share of [`CONTENDED_ROUND`],
/// at least one; all of [`INLINE_BUDGET`] when nothing else is ready.
#[inline]
fn hungry_slice(waiting: usize) -> u32 {
    if waiting == 0 {
        return INLINE_BUDGET;
    }
    // The round is shared by everyone ready, this task included (past the round's size,
    // everyone gets one).
    let ready = waiting.min(CONTENDED_ROUND as usize) as u32 + 1;
    (CONTENDED_ROUND / ready).max(1)
}

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
    /// `block_on`'s future): [`INLINE_BUDGET`], or if the task is `hungry` its
    /// [`hungry_slice`] given how many tasks are `waiting` (asked only then).
    #[inline(always)]
    pub(crate) fn start(&self, hungry: bool, waiting: impl FnOnce() -> usize, task: *const ()) {
        if hungry {
            let slice = hungry_slice(waiting());
            self.left.set(slice);
            self.room.set(INLINE_BUDGET - slice);
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
            self.cut.set(Cut::No);
            self.room.set(0);
        }
        cut
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
    fn a_hungry_task_shares_the_round_with_the_tasks_waiting() {
        assert_eq!(hungry_slice(0), INLINE_BUDGET);
        assert_eq!(hungry_slice(1), 16);
        assert_eq!(hungry_slice(7), 4);
        assert_eq!(hungry_slice(31), 1);
        assert_eq!(hungry_slice(1000), 1);
        assert_eq!(hungry_slice(usize::MAX), 1);
    }

    #[test]
    fn ordered_writes_get_what_the_slice_left_of_the_budget_for_that_poll_only() {
        let b = InlineBudget::new();
        b.start(true, || 7, std::ptr::null());
        assert_eq!(b.left(), 4);
        b.set_left(0);
        for _ in 0..INLINE_BUDGET - 4 {
            assert_eq!(b.take_room(), 1);
        }
        assert_eq!(b.take_room(), 0);
        assert_eq!(b.finish(true), Cut::No);
        b.start(
            false,
            || unreachable!("asked for the waiting tasks of a poll not hungry"),
            std::ptr::null(),
        );
        assert_eq!(b.left(), INLINE_BUDGET);
        b.set_left(0);
        assert_eq!(b.take_room(), 0, "room left over from a hungry poll");
    }

    #[test]
    fn a_yield_with_another_waker_wakes_it_and_finish_resets_the_cut() {
        let b = InlineBudget::new();
        b.start(false, || 0, std::ptr::null());
        b.yield_op(Waker::noop());
        assert_eq!(b.finish(false), Cut::Woken);
        b.start(true, || 0, std::ptr::null());
        assert_eq!(b.finish(true), Cut::No);
    }
}
