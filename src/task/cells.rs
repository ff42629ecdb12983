//! Memory for task cells, recycled per runtime.
//!
//! Spawning a task needs one allocation (the cell holding its header and future). With a
//! general-purpose allocator that allocation and its free were about 45% of the
//! instructions of a spawn + await of a no-op task (glibc malloc, measured with
//! callgrind), so each runtime keeps the cells its own tasks freed on a free list per size
//! class and hands them out again on the next spawn.
//!
//! Every cell, cached or not, is one allocation of the global allocator with the rounded
//! layout of [`cell_layout`], so a cell may be freed wherever its last reference goes: to
//! this cache on the owning thread, straight to the allocator anywhere else (a waker
//! dropped on another thread after its runtime is gone).
//!
//! The cache never holds more cells than were live at once (every cached cell was a live
//! task's), and each time the runtime is about to park for IO it returns up to
//! [`TRIM_BATCH`] cells to the allocator until at most [`KEEP_BYTES`] stay cached, so a
//! burst of spawns does not pin its memory for the life of an idle runtime.

use std::alloc::{self, Layout};
use std::ptr::{self, NonNull};

/// Size granularity and minimum alignment of a cell.
const GRAIN: usize = 16;
/// Cells larger than this (or aligned beyond [`GRAIN`]) are not cached.
const MAX_CACHED: usize = 2048;
/// Number of size classes: `GRAIN`, `2 * GRAIN`, ..., `MAX_CACHED`.
const CLASSES: usize = MAX_CACHED / GRAIN;
/// What a trim leaves cached.
pub(crate) const KEEP_BYTES: usize = 256 * 1024;
/// Most cells one trim frees, so that the trim before a park stays short (≈ 50 µs).
pub(crate) const TRIM_BATCH: usize = 1024;

/// The layout every cell of a type with layout `l` is allocated and freed with: the size
/// rounded up to a multiple of the alignment, which is at least [`GRAIN`].
pub(crate) const fn cell_layout(l: Layout) -> Layout {
    let align = if l.align() > GRAIN { l.align() } else { GRAIN };
    let size = l.size().div_ceil(align) * align;
    match Layout::from_size_align(size, align) {
        Ok(l) => l,
        Err(_) => panic!("task future too large to allocate"),
    }
}

/// A free cell: its first bytes link to the next free cell of the same class.
struct Free {
    next: *mut Free,
}

/// One runtime's cached cells.
pub(crate) struct CellCache {
    heads: [*mut Free; CLASSES],
    cached_bytes: usize,
}

impl CellCache {
    pub(crate) fn new() -> CellCache {
        CellCache {
            heads: [ptr::null_mut(); CLASSES],
            cached_bytes: 0,
        }
    }

    /// The size class of a layout made by [`cell_layout`], if it is cached.
    fn class(layout: Layout) -> Option<usize> {
        (layout.align() == GRAIN && layout.size() <= MAX_CACHED).then(|| layout.size() / GRAIN - 1)
    }

    /// Memory for one cell of `layout` (from [`cell_layout`]).
    pub(crate) fn alloc(&mut self, layout: Layout) -> NonNull<u8> {
        debug_assert_eq!(layout, cell_layout(layout));
        if let Some(c) = Self::class(layout) {
            if let Some(free) = NonNull::new(self.heads[c]) {
                // SAFETY: cells on the list are unused allocations of this class, whose
                // first bytes were written as a `Free` when they were cached.
                self.heads[c] = unsafe { free.as_ref().next };
                self.cached_bytes -= layout.size();
                return free.cast();
            }
        }
        // SAFETY: layout has a non-zero size (a cell holds at least a task header).
        let p = unsafe { alloc::alloc(layout) };
        NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout))
    }

    /// Takes back a cell whose contents were already dropped.
    ///
    /// # Safety
    ///
    /// `p` was allocated by the global allocator with `layout` (as [`alloc`](Self::alloc)
    /// does) and nothing uses it any more.
    pub(crate) unsafe fn free(&mut self, p: NonNull<u8>, layout: Layout) {
        match Self::class(layout) {
            Some(c) => {
                let free = p.cast::<Free>();
                // SAFETY: the cell is unused, at least GRAIN bytes and GRAIN-aligned, so
                // it can hold a `Free`.
                unsafe {
                    free.as_ptr().write(Free {
                        next: self.heads[c],
                    })
                };
                self.heads[c] = free.as_ptr();
                self.cached_bytes += layout.size();
            }
            // SAFETY: per the contract, allocated with this layout and unused.
            None => unsafe { alloc::dealloc(p.as_ptr(), layout) },
        }
    }

    /// Bytes held on the free lists.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }

    /// Returns up to `max_cells` cached cells to the allocator while more than `keep`
    /// bytes are cached, largest classes first.
    pub(crate) fn trim(&mut self, keep: usize, max_cells: usize) {
        let mut budget = max_cells;
        for c in (0..CLASSES).rev() {
            let size = (c + 1) * GRAIN;
            while self.cached_bytes > keep && budget > 0 {
                let Some(free) = NonNull::new(self.heads[c]) else {
                    break;
                };
                // SAFETY: a cached cell of class c (see `alloc`).
                self.heads[c] = unsafe { free.as_ref().next };
                self.cached_bytes -= size;
                budget -= 1;
                // SAFETY: cached cells of class c were allocated with this layout.
                unsafe {
                    alloc::dealloc(
                        free.as_ptr().cast(),
                        Layout::from_size_align_unchecked(size, GRAIN),
                    )
                };
            }
        }
    }
}

impl Drop for CellCache {
    fn drop(&mut self) {
        self.trim(0, usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_up_to_the_grain() {
        assert_eq!(cell_layout(Layout::new::<u8>()).size(), 16);
        assert_eq!(cell_layout(Layout::new::<[u64; 3]>()).size(), 32);
        let big = cell_layout(Layout::from_size_align(100, 64).unwrap());
        assert_eq!((big.size(), big.align()), (128, 64));
    }

    #[test]
    fn cells_are_reused_and_trimmed() {
        let mut cache = CellCache::new();
        let l = cell_layout(Layout::new::<[u64; 10]>());
        let cells: Vec<_> = (0..100).map(|_| cache.alloc(l)).collect();
        let first = cells[0];
        for &c in cells.iter().rev() {
            // SAFETY: allocated above with `l`, unused.
            unsafe { cache.free(c, l) };
        }
        assert_eq!(cache.cached_bytes(), 100 * l.size());
        // LIFO: the last freed comes back first.
        assert_eq!(cache.alloc(l), first);
        cache.trim(10 * l.size(), 50);
        assert_eq!(cache.cached_bytes(), 49 * l.size());
        cache.trim(10 * l.size(), usize::MAX);
        assert_eq!(cache.cached_bytes(), 10 * l.size());
        // SAFETY: `first` came from the cache above and is unused.
        unsafe { cache.free(first, l) };
        // Too large or over-aligned cells bypass the cache.
        let huge = cell_layout(Layout::from_size_align(4096, 16).unwrap());
        let p = cache.alloc(huge);
        // SAFETY: allocated with `huge`, unused.
        unsafe { cache.free(p, huge) };
        assert_eq!(cache.cached_bytes(), 11 * l.size());
    }
}
