//! Buffers that account for their own drops: every buffer lent to an operation must be
//! dropped exactly once (never twice, never while the kernel may still use it, and, unless
//! its future was `mem::forget`ed or the runtime leaked it on purpose, eventually).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use coring::buf::{IoBuf, IoBufMut};

const LIVE: u8 = 1;
const DROPPED: u8 = 2;

/// Every [`CountedBuf`] made since the last [`Ledger::reset`]: its state and a tag naming
/// the operation it was made for (so a leak report says which kind leaked).
#[derive(Default)]
struct Book {
    /// `(state, tag)` by buffer id.
    states: Vec<(u8, u8)>,
    /// Drops of a buffer already dropped (or of an unknown id).
    double: u64,
}

static BOOK: Mutex<Book> = Mutex::new(Book {
    states: Vec::new(),
    double: 0,
});

fn book() -> std::sync::MutexGuard<'static, Book> {
    BOOK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The counts a check compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Buffers made.
    pub created: u64,
    /// Buffers dropped (once each).
    pub dropped: u64,
    /// Buffers not dropped yet.
    pub live: u64,
    /// Drops of a buffer that was already dropped.
    pub double: u64,
}

/// The global buffer ledger.
pub struct Ledger;

impl Ledger {
    /// Forgets every buffer made so far (a new scenario phase starts counting at zero).
    pub fn reset() {
        let mut b = book();
        b.states.clear();
        b.double = 0;
    }

    /// The counts now.
    pub fn tally() -> Tally {
        let b = book();
        let created = b.states.len() as u64;
        let dropped = b.states.iter().filter(|s| s.0 == DROPPED).count() as u64;
        Tally {
            created,
            dropped,
            live: created - dropped,
            double: b.double,
        }
    }

    /// Live buffers counted by tag, as `(tag, count)`.
    pub fn live_by_tag() -> Vec<(u8, u64)> {
        let b = book();
        let mut counts = [0u64; 256];
        for s in b.states.iter().filter(|s| s.0 == LIVE) {
            counts[usize::from(s.1)] += 1;
        }
        counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(t, &n)| (t as u8, n))
            .collect()
    }

    /// Whether buffer `id` was dropped.
    pub fn is_dropped(id: u32) -> bool {
        book()
            .states
            .get(id as usize)
            .is_some_and(|s| s.0 == DROPPED)
    }
}

/// A `Vec<u8>` buffer that records its drop in the [`Ledger`].
pub struct CountedBuf {
    vec: Vec<u8>,
    id: u32,
}

impl CountedBuf {
    /// An empty buffer of `cap` bytes for an operation tagged `tag`.
    pub fn with_capacity(cap: usize, tag: u8) -> CountedBuf {
        CountedBuf::from_vec(Vec::with_capacity(cap), tag)
    }

    /// A buffer holding `data` (to write), tagged `tag`.
    pub fn from_vec(vec: Vec<u8>, tag: u8) -> CountedBuf {
        let mut b = book();
        let id = b.states.len() as u32;
        b.states.push((LIVE, tag));
        CountedBuf { vec, id }
    }

    /// This buffer's id in the ledger.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The initialised bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.vec
    }
}

impl Drop for CountedBuf {
    fn drop(&mut self) {
        let mut b = book();
        match b.states.get_mut(self.id as usize) {
            Some(s) if s.0 == LIVE => s.0 = DROPPED,
            _ => b.double += 1,
        }
    }
}

// SAFETY: delegates to the inner Vec, whose heap memory does not move when the
// CountedBuf moves; bytes_init <= bytes_total as for the Vec.
unsafe impl IoBuf for CountedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.vec.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.vec.len()
    }
    fn bytes_total(&self) -> usize {
        self.vec.capacity()
    }
}

// SAFETY: delegates to the inner Vec (same pointer, writable for its capacity).
unsafe impl IoBufMut for CountedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.vec.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: forwarded from the caller, who promises the first `pos` bytes are
        // initialised and `pos <= bytes_total()`.
        unsafe { IoBufMut::set_init(&mut self.vec, pos) }
    }
}

/// Whether a [`PanicBuf`] panics when dropped (set only while a check wants it).
static PANIC_ON_DROP: AtomicBool = AtomicBool::new(false);

/// A buffer whose `Drop` panics while [`PanicBuf::arm`] is in force: a hostile user type.
/// The runtime must contain the panic (as it contains a task's) and go on finishing the
/// other operations of the batch.
pub struct PanicBuf {
    vec: Vec<u8>,
}

impl PanicBuf {
    /// An empty buffer of `cap` bytes.
    pub fn with_capacity(cap: usize) -> PanicBuf {
        PanicBuf {
            vec: Vec::with_capacity(cap),
        }
    }

    /// Makes every `PanicBuf` drop panic (`true`) or not.
    pub fn arm(on: bool) {
        PANIC_ON_DROP.store(on, Ordering::SeqCst);
    }
}

impl Drop for PanicBuf {
    fn drop(&mut self) {
        if PANIC_ON_DROP.load(Ordering::SeqCst) && !std::thread::panicking() {
            panic!("coring-torture: PanicBuf dropped (a user Drop that panics, on purpose)");
        }
    }
}

// SAFETY: delegates to the inner Vec, as for CountedBuf.
unsafe impl IoBuf for PanicBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.vec.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.vec.len()
    }
    fn bytes_total(&self) -> usize {
        self.vec.capacity()
    }
}

// SAFETY: delegates to the inner Vec, as for CountedBuf.
unsafe impl IoBufMut for PanicBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.vec.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { IoBufMut::set_init(&mut self.vec, pos) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_counts_exactly() {
        Ledger::reset();
        let a = CountedBuf::with_capacity(8, 1);
        let b = CountedBuf::from_vec(vec![1, 2], 2);
        assert_eq!(Ledger::tally().live, 2);
        let id = a.id();
        drop(a);
        assert!(Ledger::is_dropped(id));
        assert_eq!(Ledger::live_by_tag(), vec![(2, 1)]);
        drop(b);
        let t = Ledger::tally();
        assert_eq!((t.created, t.dropped, t.live, t.double), (2, 2, 0, 0));
    }
}
