//! Owned buffers for completion-based IO.
//!
//! An operation takes its buffer by value, hands the buffer's memory to the kernel,
//! and gives the buffer back with the result as a [`BufResult`]. The traits here
//! describe what the runtime needs from a buffer: a pointer that stays valid while the
//! buffer value is moved around, how many bytes are initialised, and how many fit.
//!
//! [`FixedBufPool`] holds buffers a runtime's io_uring can register once
//! ([`FixedBufPool::register`]), for
//! [`File::read_fixed_at`](crate::fs::File::read_fixed_at) and
//! [`write_fixed_at`](crate::fs::File::write_fixed_at).
//!
//! Direct IO ([`OpenOptions::direct`](crate::fs::OpenOptions::direct)) needs buffers at
//! aligned addresses: [`AlignedBuf`], or a pool made by [`FixedBufPool::with_alignment`].

mod aligned;
mod fixed;
mod slice;

pub use aligned::AlignedBuf;
pub use fixed::{FixedBuf, FixedBufPool, Next};
pub use slice::Slice;

use std::io;
use std::ops::{Bound, RangeBounds};

/// The result of an IO operation that took a buffer: the outcome and the buffer back.
///
/// The buffer is returned whether the operation succeeded or not, so no allocation is lost
/// on an error path.
pub type BufResult<T, B> = (io::Result<T>, B);

/// `?` for a [`BufResult`]: where the buffer is not needed after a failure.
///
/// ```no_run
/// use coring::buf::BufResultExt;
///
/// # async fn f(file: coring::fs::File) -> std::io::Result<()> {
/// let (n, buf) = file.read_at(Vec::with_capacity(4096), 0).await.into_result()?;
/// println!("{n} bytes: {:?}", &buf[..]);
/// # Ok(()) }
/// ```
pub trait BufResultExt<T, B> {
    /// The value and the buffer, or the error (the buffer is dropped with it).
    ///
    /// # Errors
    ///
    /// The operation's error.
    fn into_result(self) -> io::Result<(T, B)>;
}

impl<T, B> BufResultExt<T, B> for BufResult<T, B> {
    fn into_result(self) -> io::Result<(T, B)> {
        let (res, buf) = self;
        res.map(|v| (v, buf))
    }
}

/// A buffer whose initialised bytes can be handed to the kernel for writing out.
///
/// # Safety
///
/// An implementor promises that:
/// - [`stable_ptr`](IoBuf::stable_ptr) points to at least [`bytes_total`](IoBuf::bytes_total)
///   bytes of memory, of which the first [`bytes_init`](IoBuf::bytes_init) are initialised;
/// - that pointer stays valid and unchanged when the buffer value is moved (the memory lives
///   on the heap or is `'static`), and is not invalidated by anything but dropping the buffer
///   or calling a `&mut self` method on it;
/// - `bytes_init() <= bytes_total()`.
///
/// The runtime relies on this to let the kernel read the memory while the buffer value sits
/// in the driver's operation table.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an owned buffer coring can hand to the kernel",
    label = "pass an owned buffer here",
    note = "pass an owned buffer such as `Vec<u8>`, `Box<[u8]>`, `bytes::Bytes` or \
            `&'static [u8]`, or `buf.slice(..n)` of one: a borrow cannot outlive the kernel's \
            use of it (the buffer comes back with the result)"
)]
pub unsafe trait IoBuf: Unpin + 'static {
    /// A pointer to the start of the buffer's memory, stable across moves of `self`.
    fn stable_ptr(&self) -> *const u8;

    /// How many bytes, from the start, are initialised (for a `Vec<u8>`, its `len()`).
    fn bytes_init(&self) -> usize;

    /// How many bytes the buffer can hold (for a `Vec<u8>`, its `capacity()`).
    fn bytes_total(&self) -> usize;

    /// A view of part of this buffer, taking ownership of it.
    ///
    /// The range is in terms of [`bytes_total`](IoBuf::bytes_total), so a read into a
    /// `Vec::with_capacity(n).slice(..)` may fill the whole capacity.
    /// [`Slice::into_inner`] gives the buffer back.
    ///
    /// # Panics
    ///
    /// If the range is out of bounds of `bytes_total()` or its start is after its end;
    /// the message names the offending bounds.
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        let total = self.bytes_total();
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.checked_add(1).expect("slice start overflows usize"),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.checked_add(1).expect("slice end overflows usize"),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => total,
        };
        assert!(
            begin <= end && end <= total,
            "IoBuf::slice: range {begin}..{end} is out of bounds for a buffer of capacity {total}"
        );
        Slice::new(self, begin, end)
    }
}

/// A buffer the kernel can write into.
///
/// # Safety
///
/// Everything [`IoBuf`] promises, plus: [`stable_mut_ptr`](IoBufMut::stable_mut_ptr) is the
/// same address as `stable_ptr()`, writable for `bytes_total()` bytes, and
/// [`set_init`](IoBufMut::set_init) makes exactly the claimed bytes visible.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an owned buffer the kernel can read into",
    label = "pass an owned, writable buffer here",
    note = "pass an owned buffer such as `Vec::with_capacity(n)`, `bytes::BytesMut` or \
            `Box<[u8]>`, or `buf.slice(..n)` of one: a borrow cannot outlive the kernel's use \
            of it (the buffer comes back with the result)"
)]
pub unsafe trait IoBufMut: IoBuf {
    /// A writable pointer to the start of the buffer's memory, stable across moves.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Marks the first `pos` bytes as initialised, if that is more than is already marked.
    ///
    /// # Safety
    ///
    /// The caller promises the first `pos` bytes really are initialised and that
    /// `pos <= bytes_total()`.
    unsafe fn set_init(&mut self, pos: usize);

    /// Records that a read put `n` bytes at the start of the buffer, which now holds
    /// those bytes: a buffer whose length is its content (`Vec<u8>`, `BytesMut`,
    /// [`AlignedBuf`], [`FixedBuf`]) gets a length of exactly `n`, so bytes past `n` left
    /// from an earlier use are cut off and a loop that reuses the buffer without `clear()`
    /// never sends stale bytes on. The default, [`set_init(n)`](IoBufMut::set_init), is
    /// right for a buffer of fixed length (`Box<[u8]>`) and for a [`Slice`], whose
    /// underlying buffer's bytes past the slice stay.
    ///
    /// # Safety
    ///
    /// As for [`set_init`](IoBufMut::set_init): the first `n` bytes are initialised and
    /// `n <= bytes_total()`.
    unsafe fn set_filled(&mut self, n: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.set_init(n) }
    }
}

/// `IoBuf` for a type that derefs to `[u8]` at a stable address: initialised = `len()`,
/// total = `$total()` (`len` for a buffer of fixed size, `capacity` for a growable one).
/// The `SAFETY` argument for each type is given where the macro is used.
macro_rules! io_buf {
    ($total:ident: $($ty:ty),* $(,)?) => {$(
        // SAFETY: see the invocation: the memory does not move with the value, its first
        // `len()` bytes are initialised, and `len()` is at most the total.
        unsafe impl IoBuf for $ty {
            fn stable_ptr(&self) -> *const u8 {
                self.as_ptr()
            }
            fn bytes_init(&self) -> usize {
                self.len()
            }
            fn bytes_total(&self) -> usize {
                self.$total()
            }
        }
    )*};
}

// Box<[u8]>: a heap allocation, fully initialised. &'static [u8] / &'static str: static
// memory never moves or goes away. Bytes: reference-counted heap (or 'static) memory that
// does not move when the handle moves and is immutable while any handle exists.
io_buf!(len: Box<[u8]>, &'static [u8], &'static str, bytes::Bytes);

// Vec<u8>, BytesMut: the heap pointer does not change when the value moves (only a `&mut`
// method can reallocate), and len <= capacity.
io_buf!(capacity: Vec<u8>, bytes::BytesMut);

/// `IoBufMut` for a growable buffer (its `IoBuf` has total = `capacity()`): a read sets
/// `len` to the bytes the kernel wrote.
macro_rules! growable_buf {
    ($($ty:ty),* $(,)?) => {$(
        // SAFETY: the heap pointer does not change when the value moves, and the spare
        // capacity is writable through it.
        unsafe impl IoBufMut for $ty {
            fn stable_mut_ptr(&mut self) -> *mut u8 {
                self.as_mut_ptr()
            }
            unsafe fn set_init(&mut self, pos: usize) {
                if self.len() < pos {
                    // SAFETY: the caller promises pos <= capacity and the bytes are
                    // initialised.
                    unsafe { self.set_len(pos) };
                }
            }
            unsafe fn set_filled(&mut self, n: usize) {
                // SAFETY: the caller promises n <= capacity and the first n bytes are
                // initialised.
                unsafe { self.set_len(n) };
            }
        }
    )*};
}

growable_buf!(Vec<u8>, bytes::BytesMut);

// SAFETY: the whole boxed slice is initialised and writable; set_init has nothing to record.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

/// Records a read that got no bytes (end of file): the buffer now holds none.
pub(crate) fn set_empty<B: IoBufMut>(buf: &mut B) {
    // SAFETY: zero bytes are always initialised, and 0 <= bytes_total().
    unsafe { buf.set_filled(0) };
}

/// `InvalidInput` for a read (`call`) into a buffer with no room, which could only
/// return `Ok(0)`: a result that reads as end-of-file.
pub(crate) fn check_room(total: usize, call: &str) -> io::Result<()> {
    if total > 0 {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "coring: {call} into a buffer with no room (capacity 0) could only return 0 \
             bytes, which reads as end-of-file; pass a buffer with capacity, such as \
             `Vec::with_capacity(n)` (a read fills the capacity, not the length)"
        ),
    ))
}

/// Copies as much of `data` as fits into `buf` from byte `at` on (the bytes before it
/// were filled by this read already) and marks the buffer initialised up to the end of
/// the copy. Returns the bytes copied.
pub(crate) fn copy_out<B: IoBufMut>(data: &[u8], buf: &mut B, at: usize) -> usize {
    debug_assert!(at <= buf.bytes_total());
    let n = data.len().min(buf.bytes_total() - at);
    // SAFETY: buf is writable for bytes_total() >= at + n bytes at stable_mut_ptr(); data
    // is n readable bytes in the provided buffer, which cannot overlap the caller's buffer.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.stable_mut_ptr().add(at), n) };
    // SAFETY: the first `at` bytes were written by this read before, the next n just now;
    // at + n <= bytes_total().
    unsafe { buf.set_filled(at + n) };
    n
}
