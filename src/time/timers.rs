use std::collections::BTreeMap;
use std::task::Waker;
use std::time::{Duration, Instant};

/// Pending deadlines of one runtime, earliest first.
///
/// Keys are `(deadline, id)` with a unique id, so equal deadlines coexist and a sleep can
/// find (update, remove) its own entry in O(log n).
#[derive(Default)]
pub(crate) struct Timers {
    map: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    expired: Vec<Waker>,
}

impl Timers {
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.map.insert((deadline, id), waker);
        id
    }

    /// Refreshes the waker of a pending entry; false if the entry already fired.
    pub(crate) fn update(&mut self, deadline: Instant, id: u64, waker: &Waker) -> bool {
        match self.map.get_mut(&(deadline, id)) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&mut self, deadline: Instant, id: u64) {
        self.map.remove(&(deadline, id));
    }

    /// How long until the earliest deadline, from `now` (zero if already due).
    pub(crate) fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.map
            .first_key_value()
            .map(|((d, _), _)| d.saturating_duration_since(now))
    }

    /// Removes every entry due at `now` and returns their wakers, to be woken by the
    /// caller once it no longer borrows the timers.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<Waker> {
        let mut out = std::mem::take(&mut self.expired);
        while let Some(entry) = self.map.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
        }
        out
    }

    /// Gives the vector from `take_expired` back for reuse.
    pub(crate) fn recycle(&mut self, mut v: Vec<Waker>) {
        v.clear();
        self.expired = v;
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
