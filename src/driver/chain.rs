//! Chains and deadlines: operations the kernel orders or times, and the driver's emulation
//! of both where it cannot.
//!
//! A chain ([`crate::link::link`]) is two operations: the second starts only once the
//! first has completed with its full result (no error; a read or write of every byte it
//! asked for), and otherwise ends with `ECANCELED` without starting, as io_uring's
//! IOSQE_IO_LINK does. The link stages both operations ([`Driver::stage`]: a slot in the
//! table, nothing in the backend) while it polls their futures, then hands them over in
//! one call ([`Driver::submit_chain`]): a backend that links natively queues both at once
//! ([`Backend::push_linked`](super::Backend::push_linked)); otherwise the driver pushes
//! the first and holds the second back here until the first's final completion decides
//! whether it goes to the backend or ends with `ECANCELED`.
//!
//! Either way the rest of the driver sees ordinary operations: each has its slot, waker,
//! cancel group and orphan rules. A held operation has nothing in the backend, so a cancel
//! ends it at once ([`Driver::cancel_held`]) and an orphaned one is finished (its buffer
//! released) without waiting for any kernel.
//!
//! A deadline ([`crate::time::deadline_for`]) is an operation pushed with a kernel-side
//! timeout where the backend has one ([`Driver::submit_timed`], io_uring's
//! IORING_OP_LINK_TIMEOUT); elsewhere it is pushed as usual and the deadline's timer
//! cancels it.

use std::io;
use std::task::Waker;
use std::time::Instant;

use super::{Backend, Completion, Driver, Linked, OpDesc, Push, Slot, Submitted};
use crate::platform::c;

/// An operation in the table that has not reached the backend.
#[derive(Clone, Copy)]
pub(super) struct Held {
    key: usize,
    desc: OpDesc,
    until: Until,
}

/// What a held operation waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Staged by a link being polled, which pushes it with its chain.
    Chained,
    /// The final completion of operation `key`, the chain member before it: pushed if
    /// that completion is full (at least `want` bytes, where the operation transfers a
    /// known amount), else ended with `ECANCELED`.
    After { key: usize, want: Option<u64> },
    /// Room in the submission queue, which was full when it was to be pushed.
    Room,
}

/// What became of a chain member the next one waits for.
enum Outcome {
    /// Still in flight (or held).
    Running,
    /// Its final completion.
    Done(Completion),
    /// Its slot is gone: its owner collected a completion the chain never saw, or it was
    /// an orphan that ended. Only a failed or cancelled first operation gets there (a
    /// link drops both its futures together, and a completion is looked at by the reap
    /// that brings it), so what waits behind it does not start.
    Gone,
}

/// The byte count that makes operation `desc`'s result full, where a short one breaks a
/// chain (io_uring fails a linked read or write that transfers less than asked; for any
/// other operation, a non-negative result is full).
fn full_len(desc: &OpDesc) -> Option<u64> {
    match *desc {
        OpDesc::Read { len, .. } | OpDesc::Write { len, .. } => Some(u64::from(len)),
        OpDesc::Readv { iov, iovcnt, .. } | OpDesc::Writev { iov, iovcnt, .. } => {
            if iov.is_null() || iovcnt == 0 {
                return Some(0);
            }
            // SAFETY: the operation is staged, so its owner (which keeps the iovec array,
            // `iovcnt` entries long, on the heap) is alive in the caller's future.
            let iovs = unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) };
            Some(iovs.iter().map(|v| v.iov_len as u64).sum())
        }
        _ => None,
    }
}

/// The errno an operation that could not be pushed ends with.
fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(c::EIO)
}

impl Driver {
    /// Puts an operation in the table without pushing it: a member of the chain a link is
    /// building, pushed by [`Driver::submit_chain`]. Its future sees an ordinary in-flight
    /// operation under the returned key.
    pub(crate) fn stage(&mut self, desc: &OpDesc, waker: &Waker, group: u32) -> usize {
        let key = self.ops.insert(Slot::in_flight(Some(waker.clone()), group));
        self.held.push(Held {
            key,
            desc: *desc,
            until: Until::Chained,
        });
        key
    }

    /// Pushes staged operation `first` and, if given, staged operation `second` linked
    /// behind it: natively where the backend links them (both queued together, after
    /// making room if the queue lacks it: a full queue never splits a chain), else with
    /// `second` held until `first` completes. A member a cancel ended meanwhile is not
    /// pushed.
    pub(crate) fn submit_chain(&mut self, first: usize, second: Option<usize>) {
        let a = self.take_chained(first);
        let b = second.and_then(|k| self.take_chained(k));
        let Some(a) = a else {
            // The first was cancelled: nothing may start behind it.
            if let (Some(second), Some(_)) = (second, b) {
                self.finish_unpushed(second, Completion::error(c::ECANCELED));
            }
            return;
        };
        let (Some(second), Some(b)) = (second, b) else {
            self.push_unpushed(first, a);
            return;
        };
        loop {
            let failed = match self.backend.push_linked((first, &a), (second, &b)) {
                Ok(Linked::Queued) => {
                    self.metrics.ops_submitted += 2;
                    self.metrics.ops_linked += 2;
                    return;
                }
                Ok(Linked::Full) => match self.make_room() {
                    Ok(()) => continue,
                    Err(e) => e,
                },
                Ok(Linked::Unsupported) => break,
                Err(e) => e,
            };
            // Nothing of the chain reached the kernel.
            self.finish_unpushed(first, Completion::error(errno(&failed)));
            self.finish_unpushed(second, Completion::error(c::ECANCELED));
            return;
        }
        // Emulated: the second waits here for the first's final completion.
        self.held.push(Held {
            key: second,
            desc: b,
            until: Until::After {
                key: first,
                want: full_len(&a),
            },
        });
        self.push_unpushed(first, a);
        // The first may have ended during its push (an error), without a reap to see it.
        self.advance_chains();
    }

    /// Pushes `desc` with a deadline the kernel keeps, where the backend can; otherwise
    /// as [`Driver::submit`] (the caller's timer then keeps the deadline).
    ///
    /// # Errors
    ///
    /// As [`Driver::submit`].
    pub(crate) fn submit_timed(
        &mut self,
        desc: &OpDesc,
        waker: &Waker,
        inline: bool,
        group: u32,
        deadline: Instant,
    ) -> io::Result<Submitted> {
        loop {
            let key = self.ops.vacant_key();
            match self.backend.push_timed(key, desc, deadline)? {
                Linked::Queued => {
                    let slot = self.ops.insert(Slot::in_flight(Some(waker.clone()), group));
                    debug_assert_eq!(slot, key, "coring: the slab gave another key");
                    self.metrics.ops_submitted += 1;
                    self.metrics.ops_linked += 1;
                    return Ok(Submitted::InFlight(key));
                }
                Linked::Full => self.make_room()?,
                Linked::Unsupported => return self.submit(desc, waker, inline, group),
            }
        }
    }

    /// Ends held operation `key` with `ECANCELED` (it never reached the kernel), and what
    /// waits behind it likewise; false if `key` is not held.
    pub(super) fn cancel_held(&mut self, key: usize) -> bool {
        let Some(i) = self.held.iter().position(|h| h.key == key) else {
            return false;
        };
        self.held.remove(i);
        self.finish_unpushed(key, Completion::error(c::ECANCELED));
        while let Some(j) = self
            .held
            .iter()
            .position(|h| matches!(h.until, Until::After { key: k, .. } if k == key))
        {
            let next = self.held.remove(j).key;
            self.finish_unpushed(next, Completion::error(c::ECANCELED));
        }
        true
    }

    /// After a reap (or an operation that ended without one): pushes the held operations
    /// whose predecessor completed in full, ends those whose predecessor did not with
    /// `ECANCELED`, and pushes again those that found the queue full.
    pub(super) fn advance_chains(&mut self) {
        // Worked on as a taken list: a push may hold an operation again (queue full),
        // which must wait for the next reap rather than be retried in this loop.
        let mut held = std::mem::take(&mut self.held);
        let mut i = 0;
        while i < held.len() {
            let h = held[i];
            let pushed = match h.until {
                Until::Chained => None,
                Until::Room => Some(true),
                Until::After { key, want } => match self.outcome(key) {
                    Outcome::Running => None,
                    Outcome::Done(c) => Some(c.res >= 0 && want.is_none_or(|w| c.res as u64 >= w)),
                    Outcome::Gone => Some(false),
                },
            };
            match pushed {
                None => i += 1,
                Some(full) => {
                    held.remove(i);
                    if full {
                        self.push_unpushed(h.key, h.desc);
                    } else {
                        self.finish_unpushed(h.key, Completion::error(c::ECANCELED));
                    }
                }
            }
        }
        // Held again during the loop (queue full): after the older ones.
        held.append(&mut self.held);
        self.held = held;
    }

    /// What became of operation `key`, which a held operation waits for.
    fn outcome(&self, key: usize) -> Outcome {
        if self.held.iter().any(|h| h.key == key) {
            return Outcome::Running;
        }
        match self.ops.get(key) {
            Some(Slot::Finished { last, .. }) => Outcome::Done(*last),
            Some(_) => Outcome::Running,
            None => Outcome::Gone,
        }
    }

    /// Takes staged operation `key` out of the held list (`None`: a cancel ended it).
    fn take_chained(&mut self, key: usize) -> Option<OpDesc> {
        let i = self
            .held
            .iter()
            .position(|h| h.key == key && h.until == Until::Chained)?;
        Some(self.held.remove(i).desc)
    }

    /// Pushes operation `key`, which the driver held: in flight from now on, or ended
    /// with the error that stopped it, or held again until a reap makes room.
    fn push_unpushed(&mut self, key: usize, desc: OpDesc) {
        match self.backend.push_held(key, &desc) {
            Ok(Push::Queued) => self.metrics.ops_submitted += 1,
            Ok(Push::Completed(c)) => {
                self.metrics.ops_submitted += 1;
                self.metrics.ops_completed += 1;
                self.finish_unpushed(key, c);
            }
            Ok(Push::Full | Push::NotReady) => self.held.push(Held {
                key,
                desc,
                until: Until::Room,
            }),
            Err(e) => self.finish_unpushed(key, Completion::error(errno(&e))),
        }
    }

    /// Ends operation `key`, which is not in the backend, with `c`: its owner collects it
    /// like any final completion; an orphan is finished with it after the turn (its
    /// buffer released).
    fn finish_unpushed(&mut self, key: usize, c: Completion) {
        match self.ops.get_mut(key) {
            Some(slot @ Slot::InFlight { .. }) => {
                let Slot::InFlight { waker, queued, .. } = slot else {
                    unreachable!()
                };
                let waker = waker.take();
                let queued = std::mem::take(queued);
                *slot = Slot::Finished {
                    queued,
                    last: c,
                    seq: self.finished_seq,
                };
                self.finished_seq += 1;
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Some(Slot::Orphaned(_)) => {
                if let Slot::Orphaned(data) = self.ops.remove(key) {
                    self.finished.push((data, c));
                }
            }
            _ => {}
        }
    }
}
