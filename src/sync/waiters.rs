//! The senders waiting for room in a bounded channel: every mpsc channel's queue
//! ([`super::chan::Bounded`]) keeps one, inside the channel's lock or `RefCell`.
//!
//! Every pending `send` future owns at most one slot, named by the key it keeps: a re-poll
//! replaces the waker in that slot (or keeps it when it `will_wake` the same task), and the
//! future gives the slot back when it completes or is dropped. So the list holds at most
//! one waker per live send future, however often a future is polled or cancelled.
//!
//! # Wake policy: one sender per freed place, passed on when cancelled
//!
//! A receive frees one place in the queue, so it wakes one waiting sender (the
//! longest-waiting), not all of them: waking all would make every sender but one find the
//! queue full again and re-register, for each value received. The woken slot stays with
//! its future, marked woken, until the future is polled or dropped:
//!
//! - polled with room: it sends and gives the slot back;
//! - polled without room (another sender took the place first): it waits again, at the
//!   head of the line, since its turn came;
//! - dropped: it passes the wake on to the next waiting sender, so a cancelled send
//!   (a lost `select!` branch, an elapsed `timeout`) never strands the others.
//!
//! That keeps this invariant, under the channel's lock: while any sender is waiting, there
//! are at least as many woken senders as free places. A sender waits only when it saw no
//! free place (under the same lock as the receive that would free one, so no wake-up is
//! lost between its look and its registration); each receive adds one free place and one
//! woken sender; a woken sender leaves the woken set only by taking a place, finding none,
//! or handing its wake to a waiting sender.

use std::task::Waker;

/// No slot: the end of a list.
const NIL: usize = usize::MAX;

enum SlotState {
    /// On the free list.
    Free,
    /// In the line of waiting senders, with the waker of its future's task.
    Waiting(Waker),
    /// Taken out of the line by a wake; its future has not been polled since.
    Woken,
}

struct Slot {
    state: SlotState,
    /// Previous slot in the line of waiting senders (only while `Waiting`).
    prev: usize,
    /// Next slot in the line of waiting senders, or in the free list.
    next: usize,
}

/// A slab of sender slots with an intrusive FIFO line through the waiting ones.
pub(super) struct Waiters {
    slots: Vec<Slot>,
    free: usize,
    head: usize,
    tail: usize,
}

impl Waiters {
    pub(super) const fn new() -> Self {
        Waiters {
            slots: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
        }
    }

    /// Registers `waker` for the send future owning `key` (a fresh slot if it owns none),
    /// which found the queue full.
    pub(super) fn wait(&mut self, key: &mut Option<usize>, waker: &Waker) {
        let Some(k) = *key else {
            let k = self.alloc(waker.clone());
            self.link_back(k);
            *key = Some(k);
            return;
        };
        match &mut self.slots[k].state {
            SlotState::Waiting(w) => {
                if !w.will_wake(waker) {
                    w.clone_from(waker);
                }
            }
            state @ SlotState::Woken => {
                *state = SlotState::Waiting(waker.clone());
                // Its turn came and another sender took the place: it is next again.
                self.link_front(k);
            }
            SlotState::Free => unreachable!("send future holds a freed waiter slot"),
        }
    }

    /// Gives back the slot of a send future that completed (it sent, or found the channel
    /// closed): a wake it had is used up.
    pub(super) fn finish(&mut self, key: usize) {
        if let SlotState::Waiting(_) = self.slots[key].state {
            self.unlink(key);
        }
        self.free_slot(key);
    }

    /// Gives back the slot of a send future dropped before completing; if it had been
    /// woken, the wake passes to the next waiting sender, whose waker is returned to be
    /// woken once the lock is released.
    pub(super) fn cancel(&mut self, key: usize) -> Option<Waker> {
        let woken = matches!(self.slots[key].state, SlotState::Woken);
        self.finish(key);
        if woken {
            self.wake_one()
        } else {
            None
        }
    }

    /// Takes the longest-waiting sender out of the line (marking it woken) and returns its
    /// waker, to be woken once the lock is released.
    pub(super) fn wake_one(&mut self) -> Option<Waker> {
        let k = self.head;
        if k == NIL {
            return None;
        }
        self.unlink(k);
        match std::mem::replace(&mut self.slots[k].state, SlotState::Woken) {
            SlotState::Waiting(w) => Some(w),
            _ => unreachable!("a slot in the line of waiting senders is not waiting"),
        }
    }

    /// Takes every waiting sender out of the line (the receiver is gone: each will find the
    /// channel closed) and returns their wakers, to be woken once the lock is released.
    pub(super) fn wake_all(&mut self) -> Vec<Waker> {
        let mut wakers = Vec::new();
        while let Some(w) = self.wake_one() {
            wakers.push(w);
        }
        wakers
    }

    fn alloc(&mut self, waker: Waker) -> usize {
        let slot = Slot {
            state: SlotState::Waiting(waker),
            prev: NIL,
            next: NIL,
        };
        if self.free == NIL {
            self.slots.push(slot);
            return self.slots.len() - 1;
        }
        let k = self.free;
        self.free = self.slots[k].next;
        self.slots[k] = slot;
        k
    }

    fn free_slot(&mut self, k: usize) {
        self.slots[k] = Slot {
            state: SlotState::Free,
            prev: NIL,
            next: self.free,
        };
        self.free = k;
    }

    fn link_back(&mut self, k: usize) {
        self.slots[k].prev = self.tail;
        self.slots[k].next = NIL;
        match self.tail {
            NIL => self.head = k,
            t => self.slots[t].next = k,
        }
        self.tail = k;
    }

    fn link_front(&mut self, k: usize) {
        self.slots[k].prev = NIL;
        self.slots[k].next = self.head;
        match self.head {
            NIL => self.tail = k,
            h => self.slots[h].prev = k,
        }
        self.head = k;
    }

    fn unlink(&mut self, k: usize) {
        let (prev, next) = (self.slots[k].prev, self.slots[k].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n].prev = prev,
        }
        self.slots[k].prev = NIL;
        self.slots[k].next = NIL;
    }
}

/// Wakes the sender a receive or a cancel took from the line, if any; call it with the
/// channel's lock released, as a waker may run code that uses the channel.
#[inline]
pub(super) fn wake(sender: Option<Waker>) {
    if let Some(w) = sender {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    /// Each test waker is its own Arc allocation, so `will_wake` tells them apart.
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn line_is_fifo_and_cancel_passes_a_wake_on() {
        let wakers: Vec<Waker> = (0..4).map(|_| Waker::from(Arc::new(Noop))).collect();
        let mut ws = Waiters::new();
        let mut keys = [None; 4];
        for (key, w) in keys.iter_mut().zip(&wakers) {
            ws.wait(key, w);
        }
        // Re-polls keep one slot each.
        ws.wait(&mut keys[2], &wakers[2]);
        assert_eq!(ws.slots.len(), 4);
        let first = ws.wake_one().unwrap();
        assert!(first.will_wake(&wakers[0]));
        // Cancelling a waiting sender wakes nobody; cancelling the woken one wakes the next.
        assert!(ws.cancel(keys[1].take().unwrap()).is_none());
        let passed = ws.cancel(keys[0].take().unwrap()).unwrap();
        assert!(passed.will_wake(&wakers[2]));
        // Woken but beaten to the place: back at the head of the line.
        ws.wait(&mut keys[2], &wakers[2]);
        assert!(ws.wake_one().unwrap().will_wake(&wakers[2]));
        ws.finish(keys[2].take().unwrap());
        assert!(ws.wake_one().unwrap().will_wake(&wakers[3]));
        assert!(ws.wake_one().is_none());
        ws.finish(keys[3].take().unwrap());
        // Freed slots are reused.
        ws.wait(&mut keys[0], &wakers[0]);
        assert_eq!(ws.slots.len(), 4);
        assert_eq!(ws.wake_all().len(), 1);
    }
}
