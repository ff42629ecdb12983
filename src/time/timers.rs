//! The timer wheel of one runtime.
//!
//! A hierarchical hashed wheel: time is counted in ticks of [`TICK_NS`] (≈ 1 µs) from the
//! runtime's start, and [`LEVELS`] levels of 64 slots each cover 64 times the span of the
//! level below (level 0: one tick per slot; level 8: beyond 500 years). An entry sits in the
//! slot of the highest level at which its tick differs from the wheel's current tick, so
//! inserting and removing are O(1) (intrusive doubly-linked lists, indices into a slab).
//! When the wheel reaches the start of an occupied slot above level 0, that slot's entries
//! move down to where they now belong ("cascade"); each entry moves at most once per level.
//!
//! Deadlines are rounded up to the next tick, so a timer never fires early and at most one
//! tick late (plus however long the runtime was busy); the only exception is a deadline
//! more than ~584 years away, clamped to the wheel's reach. A deadline the wheel has
//! already passed fires at the next check. Entries belong to their `Sleep`:
//! firing unlinks an entry and hands its waker out, and the `Sleep` frees the entry when it
//! next looks (or is dropped), so an entry key is never reused while a `Sleep` holds it.

use std::cell::Cell;
use std::task::Waker;
use std::time::{Duration, Instant};

use slab::Slab;

/// Nanoseconds per tick (a power of two: ticks are nanoseconds shifted right).
const TICK_SHIFT: u32 = 10;
/// Length of a tick in nanoseconds.
pub(crate) const TICK_NS: u64 = 1 << TICK_SHIFT;
/// Bits of the tick each level covers (64 slots).
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Enough levels that `LEVELS * SLOT_BITS` bits of ticks (2^54 µs) outlast any program.
const LEVELS: usize = 9;
/// Ticks within one turn of the top level (2^54 ticks, about 584 years): a deadline past
/// the end of the current turn is clamped to it (the wheel's only approximation, for
/// deadlines centuries away).
const TOP_SPAN_MASK: u64 = (1 << (LEVELS as u32 * SLOT_BITS)) - 1;
/// End of a list.
const NIL: u32 = u32::MAX;

struct Entry {
    tick: u64,
    /// `Some` while armed (linked into a slot); taken when the entry fires.
    waker: Option<Waker>,
    prev: u32,
    next: u32,
    level: u8,
    slot: u8,
}

struct Level {
    /// Bit `s` set when slot `s` holds entries.
    occupied: u64,
    heads: [u32; SLOTS],
}

/// Pending deadlines of one runtime.
pub(crate) struct Timers {
    origin: Instant,
    /// The wheel's current tick: every entry due at or before it has fired.
    elapsed: u64,
    levels: Box<[Level; LEVELS]>,
    entries: Slab<Entry>,
    /// Armed entries.
    armed: usize,
    expired: Vec<Waker>,
    /// Where the wheel next needs to run ([`Timers::due`]): `Some` while valid, i.e. no
    /// entry has been linked or unlinked since it was computed. The runtime asks every
    /// turn, and a busy server turns many times between two changes of its timers.
    due: Cell<Option<Option<Instant>>>,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers::new(Instant::now())
    }
}

/// What [`Timers::poll_entry`] found.
#[derive(Debug)]
pub(crate) enum EntryState {
    /// Still waiting; the stored waker is the caller's. `replaced` is the waker it
    /// replaced, for the caller to drop once it no longer borrows the timers (a waker's
    /// drop may run code that reaches them).
    Armed { replaced: Option<Waker> },
    /// Fired; the entry is freed.
    Fired,
}

impl Timers {
    pub(crate) fn new(origin: Instant) -> Timers {
        Timers {
            origin,
            elapsed: 0,
            levels: Box::new(std::array::from_fn(|_| Level {
                occupied: 0,
                heads: [NIL; SLOTS],
            })),
            entries: Slab::new(),
            armed: 0,
            expired: Vec::new(),
            due: Cell::new(None),
        }
    }

    /// Nanoseconds from the wheel's origin to `t` (0 before it), saturating in u64 (584
    /// years). Plain u64 arithmetic: this runs for every sleep and every turn.
    fn nanos_since_origin(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.origin);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    /// The tick `t` falls in (rounded down: for "now").
    fn tick_floor(&self, t: Instant) -> u64 {
        self.nanos_since_origin(t) >> TICK_SHIFT
    }

    /// The first tick not before `t` (rounded up: for deadlines, which must not fire early).
    fn tick_ceil(&self, t: Instant) -> u64 {
        self.nanos_since_origin(t).div_ceil(TICK_NS)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        // Saturates at ~584 years, beyond which nothing is scheduled (TOP_SPAN_MASK).
        self.origin + Duration::from_nanos(tick.saturating_mul(TICK_NS))
    }

    /// Arms a new entry for `deadline`; returns its key. A deadline the wheel has already
    /// passed fires at the next [`take_expired`](Self::take_expired).
    pub(crate) fn insert(&mut self, deadline: Instant, waker: &Waker) -> usize {
        // The tick must differ from now only within the levels there are.
        let tick = self
            .tick_ceil(deadline)
            .clamp(self.elapsed, self.elapsed | TOP_SPAN_MASK);
        let key = self.entries.insert(Entry {
            tick,
            waker: Some(waker.clone()),
            prev: NIL,
            next: NIL,
            level: 0,
            slot: 0,
        });
        self.link(key);
        self.armed += 1;
        key
    }

    /// Whether entry `key` fired; if not, makes sure it will wake `waker`. A fired entry
    /// is freed (the key is no longer valid).
    pub(crate) fn poll_entry(&mut self, key: usize, waker: &Waker) -> EntryState {
        let e = &mut self.entries[key];
        match &mut e.waker {
            Some(w) if w.will_wake(waker) => EntryState::Armed { replaced: None },
            Some(w) => EntryState::Armed {
                replaced: Some(std::mem::replace(w, waker.clone())),
            },
            None => {
                self.entries.remove(key);
                EntryState::Fired
            }
        }
    }

    /// Frees entry `key`, disarming it if it has not fired; returns its waker if it was
    /// armed, for the caller to reuse or to drop once it no longer borrows the timers.
    #[must_use = "drop the waker outside the timers' borrow"]
    pub(crate) fn remove(&mut self, key: usize) -> Option<Waker> {
        if self.entries[key].waker.is_some() {
            self.unlink(key);
            self.armed -= 1;
        }
        self.entries.remove(key).waker
    }

    /// Puts an entry in the slot its tick belongs to, relative to `elapsed`.
    fn link(&mut self, key: usize) {
        self.due.set(None);
        let tick = self.entries[key].tick;
        // The highest bit in which the tick differs from now picks the level.
        let differing = (self.elapsed ^ tick) | (SLOTS as u64 - 1);
        let level = ((63 - differing.leading_zeros()) / SLOT_BITS) as usize;
        let slot = ((tick >> (level as u32 * SLOT_BITS)) as usize) & (SLOTS - 1);
        let lvl = &mut self.levels[level];
        let head = lvl.heads[slot];
        lvl.heads[slot] = key as u32;
        lvl.occupied |= 1 << slot;
        if head != NIL {
            self.entries[head as usize].prev = key as u32;
        }
        let e = &mut self.entries[key];
        (e.prev, e.next, e.level, e.slot) = (NIL, head, level as u8, slot as u8);
    }

    fn unlink(&mut self, key: usize) {
        self.due.set(None);
        let (prev, next, level, slot) = {
            let e = &self.entries[key];
            (e.prev, e.next, e.level as usize, e.slot as usize)
        };
        if prev == NIL {
            let lvl = &mut self.levels[level];
            lvl.heads[slot] = next;
            if next == NIL {
                lvl.occupied &= !(1 << slot);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// The next slot to process: `(level, slot, tick it starts at)`. Lower levels always
    /// come first: an entry lands in a higher level only if it is due after the end of
    /// the current span of every level below.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        for (level, lvl) in self.levels.iter().enumerate() {
            if lvl.occupied == 0 {
                continue;
            }
            let shift = level as u32 * SLOT_BITS;
            let now_slot = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            let slot = (lvl.occupied.rotate_right(now_slot as u32).trailing_zeros() as usize
                + now_slot)
                & (SLOTS - 1);
            // Never behind now: the wheel stops at the start of every occupied slot (see
            // `take_expired`), so it cannot pass one, and an entry is placed ahead of now.
            debug_assert!(slot >= now_slot, "timer wheel passed an occupied slot");
            let level_span = 1u64 << (shift + SLOT_BITS);
            let level_start = self.elapsed & !(level_span - 1);
            return Some((level, slot, level_start + ((slot as u64) << shift)));
        }
        None
    }

    /// How long until the wheel next needs to run, from `now` (zero if already due). For
    /// an entry in a coarse level, that is when it moves down a level, not its deadline.
    pub(crate) fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.due().map(|at| at.saturating_duration_since(now))
    }

    /// When the wheel next needs to run (the start of its next occupied slot), or `None`
    /// when no entry is armed; cached between changes of the wheel.
    fn due(&self) -> Option<Instant> {
        if let Some(due) = self.due.get() {
            return due;
        }
        let due = self
            .next_expiration()
            .map(|(_, _, tick)| self.instant_of(tick));
        self.due.set(Some(due));
        due
    }

    /// Whether [`take_expired`](Self::take_expired) at `now` has anything to do: an entry
    /// due, or a coarse slot to move down. Cheap (no clock arithmetic) while the wheel has
    /// not changed since the last call, which is most turns of a busy runtime.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.due().is_some_and(|at| at <= now)
    }

    /// Fires every entry due at `now` and returns their wakers, to be woken by the caller
    /// once it no longer borrows the timers.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<Waker> {
        let mut out = std::mem::take(&mut self.expired);
        if !self.is_due(now) {
            // Nothing to fire or move. The wheel's tick stays where it is: entries are
            // placed relative to it, which is correct for any tick not after now (one
            // placed in a slot that has begun since is due at once, and moves down then).
            return out;
        }
        let now_tick = self.tick_floor(now);
        while let Some((level, slot, start)) = self.next_expiration() {
            if start > now_tick {
                break;
            }
            self.elapsed = start;
            let lvl = &mut self.levels[level];
            let mut key = std::mem::replace(&mut lvl.heads[slot], NIL);
            lvl.occupied &= !(1 << slot);
            self.due.set(None);
            while key != NIL {
                let k = key as usize;
                key = self.entries[k].next;
                if self.entries[k].tick <= self.elapsed {
                    out.extend(self.entries[k].waker.take());
                    self.armed -= 1;
                } else {
                    self.link(k);
                }
            }
        }
        self.elapsed = self.elapsed.max(now_tick);
        out
    }

    /// Gives the vector from `take_expired` back for reuse.
    pub(crate) fn recycle(&mut self, mut v: Vec<Waker>) {
        v.clear();
        self.expired = v;
    }

    /// Armed entries.
    pub(crate) fn len(&self) -> usize {
        self.armed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(AtomicUsize);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(AtomicUsize::new(0)));
        (f.clone(), Waker::from(f))
    }

    /// Deterministic pseudo-random numbers (xorshift).
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    // Against a brute-force model: random deadlines over spans from microseconds to days,
    // random removals, time advancing in random steps; every entry fires exactly once, no
    // earlier than its deadline and no later than the first check at or after it.
    #[test]
    fn fires_exactly_at_or_after_the_deadline_like_a_model() {
        let origin = Instant::now();
        let mut t = Timers::new(origin);
        let mut seed = 0x2545_F491_4F6C_DD1D;
        let mut model: Vec<(usize, Instant, Arc<Flag>, bool)> = Vec::new();
        let mut now = origin;
        let mut fired_total = 0;
        for round in 0..4000 {
            for _ in 0..(rng(&mut seed) % 4) {
                let span = match rng(&mut seed) % 5 {
                    0 => rng(&mut seed) % 2_000,
                    1 => rng(&mut seed) % 200_000,
                    2 => rng(&mut seed) % 50_000_000,
                    3 => rng(&mut seed) % 20_000_000_000,
                    _ => rng(&mut seed) % 200_000_000_000_000,
                };
                let deadline = now + Duration::from_nanos(span);
                let (flag, w) = waker();
                let key = t.insert(deadline, &w);
                model.push((key, deadline, flag, true));
            }
            if round % 7 == 0 && !model.is_empty() {
                let i = (rng(&mut seed) as usize) % model.len();
                if model[i].3 && model[i].2 .0.load(Ordering::Relaxed) == 0 {
                    drop(t.remove(model[i].0));
                    model[i].3 = false;
                }
            }
            let step = match rng(&mut seed) % 4 {
                0 => rng(&mut seed) % 3_000,
                1 => rng(&mut seed) % 300_000,
                2 => rng(&mut seed) % 30_000_000,
                _ => rng(&mut seed) % 30_000_000_000,
            };
            now += Duration::from_nanos(step);
            // The cached next expiration matches the wheel, and says whether anything is
            // due: an entry whose rounded-up deadline has come must make it true.
            let fresh = t.next_expiration().map(|(_, _, tick)| t.instant_of(tick));
            assert_eq!(t.due(), fresh, "stale due cache");
            let any_due = model.iter().any(|m| {
                m.3 && m.2 .0.load(Ordering::Relaxed) == 0 && t.tick_ceil(m.1) <= t.tick_floor(now)
            });
            assert!(
                !any_due || t.is_due(now),
                "an entry is due but is_due says no"
            );
            // Half the turns check first, as the runtime does.
            if round % 2 == 0 || t.is_due(now) {
                for w in t.take_expired(now) {
                    w.wake();
                }
            }
            for (key, deadline, flag, live) in &mut model {
                let fired = flag.0.load(Ordering::Relaxed);
                assert!(fired <= 1, "fired twice");
                if !*live {
                    assert_eq!(fired, 0, "a removed entry fired");
                    continue;
                }
                // Due = deadline rounded up to the tick is not after now.
                let due = t.tick_ceil(*deadline) <= t.tick_floor(now);
                assert_eq!(fired == 1, due, "deadline {deadline:?} now {now:?}");
                if fired == 1 {
                    fired_total += 1;
                    assert!(matches!(
                        t.poll_entry(*key, &Waker::noop().clone()),
                        EntryState::Fired
                    ));
                    *live = false;
                }
            }
            model.retain(|m| m.3);
            assert_eq!(t.len(), model.len());
            if let Some(next) = t.next_timeout(now) {
                // Never later than the earliest pending deadline.
                let earliest = model.iter().map(|m| m.1).min().expect("entries pending");
                assert!(now + next <= earliest + Duration::from_nanos(TICK_NS));
            } else {
                assert!(model.is_empty());
            }
        }
        assert!(fired_total > 3000, "only {fired_total} entries fired");
    }

    #[test]
    fn past_deadlines_fire_at_the_next_check_and_far_ones_are_clamped() {
        let origin = Instant::now();
        let mut t = Timers::new(origin);
        let (f, w) = waker();
        let late = origin + Duration::from_millis(5);
        t.take_expired(late);
        // Already passed by the wheel: due at the next check.
        let key = t.insert(origin, &w);
        assert_eq!(t.next_timeout(late), Some(Duration::ZERO));
        t.take_expired(late).into_iter().for_each(Waker::wake);
        assert_eq!(f.0.load(Ordering::Relaxed), 1);
        assert!(matches!(t.poll_entry(key, &w), EntryState::Fired));
        // Rounded up to the end of its tick: never early.
        let soon = late + Duration::from_nanos(TICK_NS + 1);
        let key = t.insert(soon, &w);
        assert!(t.next_timeout(late).unwrap() > Duration::from_nanos(TICK_NS));
        assert!(t.take_expired(soon).is_empty());
        assert_eq!(
            t.take_expired(soon + Duration::from_nanos(TICK_NS)).len(),
            1
        );
        assert!(matches!(t.poll_entry(key, &w), EntryState::Fired));
        let key = t.insert(origin + Duration::from_secs(86400 * 365 * 1000), &w);
        assert!(t.next_timeout(origin).is_some());
        drop(t.remove(key));
        assert_eq!((t.len(), t.next_timeout(origin)), (0, None));
    }
}
