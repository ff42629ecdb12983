use super::{IoBuf, IoBufMut};

/// A range of an owned buffer, itself usable as a buffer.
///
/// Made by [`IoBuf::slice`]. Reads into a slice write into the range of the underlying
/// buffer and mark bytes initialised there; [`into_inner`](Slice::into_inner) returns the
/// whole buffer.
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B: IoBuf> Slice<B> {
    pub(crate) fn new(buf: B, begin: usize, end: usize) -> Self {
        debug_assert!(begin <= end && end <= buf.bytes_total());
        Slice { buf, begin, end }
    }

    /// Offset of the slice's start in the underlying buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }

    /// Offset just past the slice's end in the underlying buffer.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The underlying buffer, borrowed.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }

    /// The underlying buffer, mutably borrowed.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.buf
    }

    /// Gives the whole underlying buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

// SAFETY: the pointer is the underlying buffer's stable pointer plus `begin`, and
// begin <= end <= bytes_total() of the underlying buffer, so the range stays in bounds.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        // SAFETY: begin <= bytes_total(), so the offset stays within (or one past) the allocation.
        unsafe { self.buf.stable_ptr().add(self.begin) }
    }
    fn bytes_init(&self) -> usize {
        self.buf
            .bytes_init()
            .saturating_sub(self.begin)
            .min(self.end - self.begin)
    }
    fn bytes_total(&self) -> usize {
        self.end - self.begin
    }
}

// SAFETY: as for IoBuf; set_init translates the slice-relative position into the
// underlying buffer and only ever grows its initialised prefix.
unsafe impl<B: IoBufMut> IoBufMut for Slice<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: begin <= bytes_total(), so the offset stays within the allocation.
        unsafe { self.buf.stable_mut_ptr().add(self.begin) }
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // The underlying buffer's initialised part is a prefix, so it can only grow to cover
        // this slice if it already reaches the slice's start; otherwise the bytes between
        // would become visible uninitialised.
        if self.buf.bytes_init() >= self.begin {
            // SAFETY: pos <= self.bytes_total() = end - begin, so begin + pos <= end <=
            // total; the caller promises the slice's first pos bytes are initialised and
            // the prefix up to begin already is.
            unsafe { self.buf.set_init(self.begin + pos) };
        }
    }
}
