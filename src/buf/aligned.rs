//! An owned buffer whose memory starts at a chosen alignment, for direct IO.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use super::{IoBuf, IoBufMut};

/// A buffer of fixed capacity whose memory starts at an address that is a multiple of a
/// chosen alignment: what direct IO needs ([`File::dio_alignment`] says how much). It is
/// an [`IoBuf`]/[`IoBufMut`] like a `Vec<u8>` that cannot grow: reads fill it from the
/// start and set `len()` to cover what they read, writes send its first `len()` bytes,
/// and it dereferences to those bytes.
///
/// The whole capacity is zeroed at allocation, so every byte is always initialised and
/// [`set_len`](AlignedBuf::set_len) is safe.
///
/// ```
/// use coring::buf::AlignedBuf;
///
/// let mut buf = AlignedBuf::new(8192, 4096);
/// assert_eq!(buf.as_ptr() as usize % 4096, 0);
/// buf.extend_from_slice(b"hello");
/// assert_eq!(&buf[..], b"hello");
/// buf.set_len(4096); // the rest is zeroes
/// assert_eq!(buf[4095], 0);
/// ```
///
/// [`File::dio_alignment`]: crate::fs::File::dio_alignment
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
    align: usize,
}

// SAFETY: the buffer owns its allocation exclusively (like a Box<[u8]>), so moving it to
// another thread, or sharing `&AlignedBuf` (which only reads), is sound.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above: `&self` methods only read.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer (`len() == 0`) with room for `capacity` zeroed bytes, starting at a
    /// multiple of `align`.
    ///
    /// # Panics
    ///
    /// If `align` is not a power of two, or `capacity` rounded up to `align` overflows
    /// what one allocation can hold (`isize::MAX`).
    pub fn new(capacity: usize, align: usize) -> AlignedBuf {
        assert!(
            align.is_power_of_two(),
            "AlignedBuf::new: alignment {align} is not a power of two"
        );
        let ptr = match Layout::from_size_align(capacity, align) {
            // An empty buffer allocates nothing: its pointer only needs the alignment.
            Ok(_) if capacity == 0 => {
                NonNull::new(std::ptr::without_provenance_mut(align)).expect("align > 0")
            }
            Ok(layout) => {
                // SAFETY: the layout has a non-zero size.
                let mem = unsafe { alloc::alloc_zeroed(layout) };
                NonNull::new(mem).unwrap_or_else(|| alloc::handle_alloc_error(layout))
            }
            Err(_) => panic!(
                "AlignedBuf::new: {capacity} bytes aligned to {align} overflow one allocation"
            ),
        };
        AlignedBuf {
            ptr,
            len: 0,
            cap: capacity,
            align,
        }
    }

    /// A full buffer of `len` zero bytes (`len() == capacity() == len`), starting at a
    /// multiple of `align`: ready to be read into, or filled and written.
    ///
    /// # Panics
    ///
    /// As [`AlignedBuf::new`].
    pub fn zeroed(len: usize, align: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::new(len, align);
        buf.len = len;
        buf
    }

    /// Bytes of content.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no content.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes the buffer holds at most.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The alignment of the buffer's start, as asked for.
    pub fn align(&self) -> usize {
        self.align
    }

    /// A pointer to the buffer's start (a multiple of [`align`](AlignedBuf::align)).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// A writable pointer to the buffer's start.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Empties the buffer (before reading into it again, as with a reused `Vec`).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Sets the content length. Safe because the whole capacity is always initialised
    /// (zeroed at allocation); the bytes exposed are whatever was last written there.
    ///
    /// # Panics
    ///
    /// If `len > capacity()`.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.cap,
            "AlignedBuf::set_len: {len} is beyond the buffer's capacity of {}",
            self.cap
        );
        self.len = len;
    }

    /// Appends `data` to the content.
    ///
    /// # Panics
    ///
    /// If it does not fit in the remaining capacity (the buffer cannot grow).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self
            .len
            .checked_add(data.len())
            .filter(|&end| end <= self.cap)
            .unwrap_or_else(|| {
                panic!(
                    "AlignedBuf::extend_from_slice: {} more bytes do not fit ({} of {} used)",
                    data.len(),
                    self.len,
                    self.cap
                )
            });
        let start = self.len;
        self.full_mut()[start..end].copy_from_slice(data);
        self.len = end;
    }

    /// The whole capacity.
    fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for cap bytes (allocated, or dangling with cap == 0), all
        // initialised (zeroed at allocation), and borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap == 0 {
            return;
        }
        // SAFETY: allocated in `new` with exactly this layout (which was valid then), and
        // freed once. An operation owns the buffer until the kernel's final completion, so
        // no IO still uses the memory.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, self.align),
            )
        };
    }
}

impl Clone for AlignedBuf {
    /// A new allocation of the same capacity and alignment, with the same content.
    fn clone(&self) -> AlignedBuf {
        let mut copy = AlignedBuf::new(self.cap, self.align);
        copy.extend_from_slice(self);
        copy
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.cap)
            .field("align", &self.align)
            .finish()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the first len bytes are initialised and owned by this buffer; len <= cap.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.full_mut()[..len]
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

// SAFETY: the pointer is to the buffer's own heap allocation (or a dangling pointer with
// capacity 0), which does not move with the value and lives until it is dropped; every
// byte of it is initialised, and len <= cap always.
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len
    }

    fn bytes_total(&self) -> usize {
        self.cap
    }
}

// SAFETY: as for IoBuf; the whole capacity is writable memory owned by this buffer, and
// set_init only grows len (set_filled sets it), to at most the capacity (the caller's
// promise).
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len {
            self.len = pos;
        }
    }

    unsafe fn set_filled(&mut self, n: usize) {
        self.len = n;
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedBuf;
    use crate::buf::{IoBuf, IoBufMut};

    #[test]
    fn memory_starts_at_the_alignment() {
        for align in [1, 8, 512, 4096, 65536] {
            for cap in [0, 1, 511, 4096, 100_000] {
                let buf = AlignedBuf::new(cap, align);
                assert_eq!(buf.as_ptr() as usize % align, 0, "cap {cap} align {align}");
                assert_eq!((buf.len(), buf.capacity(), buf.align()), (0, cap, align));
                assert!(buf.iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn behaves_like_a_vec_that_cannot_grow() {
        let mut buf = AlignedBuf::new(8, 16);
        buf.extend_from_slice(b"abc");
        assert_eq!(&buf[..], b"abc");
        assert_eq!((buf.bytes_init(), buf.bytes_total()), (3, 8));
        // SAFETY: every byte is initialised; 6 <= capacity.
        unsafe { buf.set_init(6) };
        assert_eq!(&buf[..], b"abc\0\0\0");
        // set_init never shrinks.
        // SAFETY: as above.
        unsafe { buf.set_init(2) };
        assert_eq!(buf.len(), 6);
        buf[0] = b'x';
        let copy = buf.clone();
        assert_eq!(&copy[..], b"xbc\0\0\0");
        assert_eq!(copy.as_ptr() as usize % 16, 0);
        buf.clear();
        assert!(buf.is_empty());
        let full = AlignedBuf::zeroed(4096, 4096);
        assert_eq!((full.len(), full.capacity()), (4096, 4096));
    }

    #[test]
    #[should_panic(expected = "is not a power of two")]
    fn alignment_must_be_a_power_of_two() {
        let _ = AlignedBuf::new(16, 3);
    }

    #[test]
    #[should_panic(expected = "do not fit")]
    fn overfilling_panics_with_a_message() {
        let mut buf = AlignedBuf::new(2, 2);
        buf.extend_from_slice(b"abc");
    }

    #[test]
    #[should_panic(expected = "overflow one allocation")]
    fn absurd_sizes_panic_with_a_message() {
        let _ = AlignedBuf::new(usize::MAX - 10, 4096);
    }
}
