use super::{IoBuf, IoBufMut};

/// A range of an owned buffer, itself usable as a buffer.
///
/// Made by [`IoBuf::slice`]. Reads into a slice write into the range of the underlying
/// buffer and mark bytes initialised there; [`into_inner`](Slice::into_inner) returns the
/// whole buffer.
///
/// The range is clamped to the underlying buffer's current capacity whenever the slice is
/// used: if [`get_mut`](Slice::get_mut) shrank the buffer (`shrink_to_fit`, a `Vec`
/// replaced by a smaller one), the slice covers only what is left of its range, so no
/// operation can reach past the buffer's memory.
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

    /// The underlying buffer, mutably borrowed. Shrinking it shrinks the slice's usable
    /// range with it (see [`Slice`]).
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.buf
    }

    /// The range's start and end, clamped to the underlying buffer's capacity now.
    fn bounds(&self) -> (usize, usize) {
        let total = self.buf.bytes_total();
        let end = self.end.min(total);
        (self.begin.min(end), end)
    }

    /// Gives the whole underlying buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

// SAFETY: the pointer is the underlying buffer's stable pointer plus the clamped start,
// and the clamped range lies within 0..=bytes_total() of the underlying buffer now, so
// everything the slice reports stays in bounds even after `get_mut` shrank the buffer.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        let (begin, _) = self.bounds();
        // SAFETY: begin <= bytes_total(), so the offset stays within (or one past) the
        // allocation.
        unsafe { self.buf.stable_ptr().add(begin) }
    }
    fn bytes_init(&self) -> usize {
        let (begin, end) = self.bounds();
        self.buf.bytes_init().clamp(begin, end) - begin
    }
    fn bytes_total(&self) -> usize {
        let (begin, end) = self.bounds();
        end - begin
    }
}

// SAFETY: as for IoBuf; set_init translates the slice-relative position into the
// underlying buffer and only ever grows its initialised prefix.
unsafe impl<B: IoBufMut> IoBufMut for Slice<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        let (begin, _) = self.bounds();
        // SAFETY: begin <= bytes_total(), so the offset stays within the allocation.
        unsafe { self.buf.stable_mut_ptr().add(begin) }
    }
    unsafe fn set_init(&mut self, pos: usize) {
        let (begin, _) = self.bounds();
        // The underlying buffer's initialised part is a prefix, so it can only grow to cover
        // this slice if it already reaches the slice's start; otherwise the bytes between
        // would become visible uninitialised.
        if self.buf.bytes_init() >= begin {
            // SAFETY: pos <= self.bytes_total() = end - begin (clamped), so begin + pos <=
            // end <= total; the caller promises the slice's first pos bytes are initialised
            // and the prefix up to begin already is.
            unsafe { self.buf.set_init(begin + pos) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{IoBuf, IoBufMut};

    #[test]
    fn a_slice_of_a_shrunk_buffer_covers_only_what_is_left() {
        let mut v = Vec::with_capacity(100);
        v.extend_from_slice(&[1u8; 10]);
        let mut s = v.slice(20..80);
        assert_eq!((s.bytes_total(), s.bytes_init()), (60, 0));
        // Shrink below the slice's end: capacity becomes 10..=len-ish (at least 30 here).
        s.get_mut().resize(30, 2);
        s.get_mut().shrink_to_fit();
        let cap = s.get_ref().capacity();
        assert!((30..80).contains(&cap), "capacity {cap}");
        assert_eq!(s.bytes_total(), cap - 20);
        assert_eq!(s.bytes_init(), 10);
        // SAFETY: bytes_total() <= the buffer's capacity past the clamped start.
        unsafe { s.set_init(s.bytes_total()) };
        assert_eq!(s.get_ref().len(), cap);
        // Shrink below the slice's start: nothing is left, and the pointer stays at the
        // end of the allocation (one past it at most).
        s.get_mut().truncate(5);
        s.get_mut().shrink_to_fit();
        assert_eq!((s.bytes_total(), s.bytes_init()), (0, 0));
        let end = s.get_ref().as_ptr() as usize + s.get_ref().capacity();
        assert!(s.stable_mut_ptr() as usize <= end);
    }
}
