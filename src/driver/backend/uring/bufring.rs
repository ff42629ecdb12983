//! The ring's provided-buffer ring (IORING_REGISTER_PBUF_RING): one group of equal
//! buffers the kernel picks from when a receive with buffer selection (the stream's
//! multishot receive) gets data. A CQE names the buffer it filled (`flags >>
//! IORING_CQE_BUFFER_SHIFT`); the buffer is the driver's until the data has been copied out
//! and [`BufRing::recycle`] hands it back.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id of the ring (the only group this runtime registers).
pub(crate) const BUF_GROUP: u16 = 0;
/// Alignment of the ring's entry array (the kernel refuses one that is not page-aligned
/// with EINVAL) and of the buffer memory: the kernel's page size, which is 16 or 64 KiB on
/// some arm64 and ppc64 kernels, not always 4 KiB.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is a valid name.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}

/// How many provided buffers, of how many bytes (the limits are `Builder::recv_buffers`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecvBuffers {
    /// A power of two (the kernel requires one; the tail wraps by masking).
    pub(crate) count: u16,
    /// At least 1 byte; fits an entry's u32 length.
    pub(crate) size: usize,
}

impl RecvBuffers {
    fn entries_layout(self) -> Layout {
        Layout::from_size_align(
            usize::from(self.count) * std::mem::size_of::<BufRingEntry>(),
            page_size(),
        )
        .expect("coring: buffer ring layout")
    }

    fn bufs_layout(self) -> Layout {
        Layout::from_size_align(usize::from(self.count) * self.size, page_size())
            .expect("coring: provided buffer layout")
    }
}

/// The entry array and the buffer memory, both allocated here and registered once.
pub(crate) struct BufRing {
    shape: RecvBuffers,
    entries: NonNull<BufRingEntry>,
    bufs: NonNull<u8>,
    /// The tail as we last published it; the kernel's head trails it.
    tail: u16,
    /// Buffers the kernel has filled and handed to us (counted at reap) that have not been
    /// recycled yet.
    in_use: usize,
    /// Per buffer: filled by the kernel and not yet handed back. Guards against handing a
    /// buffer back twice, which would let the kernel fill it while a stream still reads it.
    held: Vec<u64>,
}

impl BufRing {
    /// Allocates the ring, fills it with every buffer and registers it with `ring`.
    ///
    /// # Errors
    ///
    /// The registration's error (EINVAL before Linux 5.19, ENOMEM, ...); the memory is
    /// freed then, since the kernel never saw it.
    pub(crate) fn new(ring: &IoUring, shape: RecvBuffers) -> io::Result<BufRing> {
        assert!(
            shape.count.is_power_of_two() && shape.size >= 1 && u32::try_from(shape.size).is_ok(),
            "coring: provided buffer shape {shape:?} out of range (checked by the Builder)"
        );
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1, checked).
        let entries = unsafe { alloc::alloc_zeroed(shape.entries_layout()) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let bufs = unsafe { alloc::alloc(shape.bufs_layout()) };
        let (Some(entries), Some(bufs)) = (NonNull::new(entries), NonNull::new(bufs)) else {
            alloc::handle_alloc_error(shape.bufs_layout());
        };
        let mut br = BufRing {
            shape,
            entries,
            bufs,
            tail: 0,
            in_use: 0,
            held: vec![0; usize::from(shape.count).div_ceil(64)],
        };
        for bid in 0..shape.count {
            br.write_entry(bid);
        }
        br.publish();
        // SAFETY: the entry array is page-aligned, holds `count` entries and stays
        // allocated until it is unregistered or the ring is gone (see `Uring::drop`, which
        // leaks it when unsure).
        let r = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                shape.count,
                BUF_GROUP,
                0,
            )
        };
        // On error `br` drops and frees the memory: the kernel never took it.
        r.map(|()| br)
    }

    /// The size of each buffer.
    pub(crate) fn buf_size(&self) -> usize {
        self.shape.size
    }

    /// Puts buffer `bid` at the tail slot (not yet visible to the kernel).
    fn write_entry(&mut self, bid: u16) {
        // count is a power of two, so the mask wraps the tail into the array.
        let idx = usize::from(self.tail & (self.shape.count - 1));
        // SAFETY: idx < count, the array's length; the slot is past the kernel's head (we
        // never publish more than `count` buffers), so the kernel does not read it.
        // Setting addr/len/bid leaves `resv` alone, which in entry 0 is the shared tail.
        let e = unsafe { &mut *self.entries.as_ptr().add(idx) };
        // SAFETY: bid < count, so the buffer lies inside the allocation.
        let addr = unsafe { self.bufs.as_ptr().add(usize::from(bid) * self.shape.size) };
        e.set_addr(addr as u64);
        // size fits the entry's u32 (checked in `new`).
        e.set_len(self.shape.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every written entry visible to the kernel: a release store of the tail, so
    /// the entries' contents are visible before the tail that covers them.
    fn publish(&self) {
        // SAFETY: entries points to the initialised first entry of the ring.
        let tail = unsafe { BufRingEntry::tail(self.entries.as_ptr()) }.cast_mut();
        // SAFETY: the tail is a u16 in memory we own, suitably aligned, that the kernel
        // only reads; AtomicU16 has the same layout as u16.
        unsafe { AtomicU16::from_ptr(tail) }.store(self.tail, Ordering::Release);
    }

    /// Counts a buffer the kernel filled and posted in a completion.
    pub(crate) fn taken(&mut self, bid: u16) {
        if bid < self.shape.count {
            self.held[bid as usize / 64] |= 1 << (bid % 64);
        }
        self.in_use += 1;
    }

    /// Hands buffer `bid` back to the kernel once its data has been copied out.
    pub(crate) fn recycle(&mut self, bid: u16) {
        debug_assert!(
            bid < self.shape.count,
            "coring: provided buffer id {bid} out of range"
        );
        if bid >= self.shape.count {
            return;
        }
        let bit = 1u64 << (bid % 64);
        let word = &mut self.held[bid as usize / 64];
        if *word & bit == 0 {
            // Handed back already (or never filled): publishing it again could give the
            // kernel a buffer some stream is reading. Refuse.
            debug_assert!(false, "coring: provided buffer {bid} handed back twice");
            return;
        }
        *word &= !bit;
        self.in_use -= 1;
        self.write_entry(bid);
        self.publish();
    }

    /// The first `len` bytes of buffer `bid`, as the kernel filled them.
    ///
    /// # Panics
    ///
    /// If `bid` or `len` is out of range (a broken completion).
    pub(crate) fn data(&self, bid: u16, len: usize) -> &[u8] {
        let RecvBuffers { count, size } = self.shape;
        assert!(
            bid < count && len <= size,
            "coring: provided buffer {bid} with {len} bytes is out of range"
        );
        // SAFETY: in range (checked); the kernel wrote these `len` bytes before posting the
        // completion naming `bid`, and does not touch the buffer again until it is recycled.
        unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().add(usize::from(bid) * size), len) }
    }

    /// Buffers filled by the kernel and not yet recycled.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // Only reached once the kernel cannot write here any more: the ring was
        // unregistered with no receive in flight (`Uring::drop` leaks it otherwise).
        // SAFETY: both blocks were allocated in `new` with these layouts.
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.shape.entries_layout());
            alloc::dealloc(self.bufs.as_ptr(), self.shape.bufs_layout());
        }
    }
}
