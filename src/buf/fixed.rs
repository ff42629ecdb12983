//! Registered ("fixed") buffers: a pool of equal buffers in one allocation, which a
//! runtime's io_uring can register once so that reads and writes skip pinning the pages on
//! every operation (IORING_OP_READ_FIXED / WRITE_FIXED).

use crate::platform::c;
use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

use super::{IoBuf, IoBufMut};
use crate::driver::fixed::{Fixed, FixedCell};
use crate::driver::Backend;

/// Alignment of a pool's memory: a page, so that buffers of page-multiple size suit
/// `O_DIRECT` too.
const ALIGN: usize = 4096;

/// A pool of `count` buffers of `size` bytes each, in one page-aligned, zeroed allocation,
/// which can be registered with the current runtime's io_uring
/// ([`register`](FixedBufPool::register)).
///
/// Take a buffer with [`try_take`](FixedBufPool::try_take) or
/// [`check_out`](FixedBufPool::check_out); pass it to
/// [`File::read_fixed_at`](crate::fs::File::read_fixed_at) or
/// [`write_fixed_at`](crate::fs::File::write_fixed_at) (or to any operation: a
/// [`FixedBuf`] is an ordinary [`IoBuf`]/[`IoBufMut`]); dropping it returns it to the pool.
///
/// ```
/// use coring::buf::FixedBufPool;
/// use coring::fs::File;
///
/// coring::start(async {
///     let pool = FixedBufPool::new(4, 4096);
///     pool.register()?; // a no-op on the fallback backend
///     let file = File::open("Cargo.toml").await?;
///     file.register()?;
///     let buf = pool.try_take().expect("a free buffer");
///     let (res, buf) = file.read_fixed_at(buf, 0).await;
///     assert_eq!(&buf[..res?.min(9)], b"[workspac");
///     drop(buf); // back in the pool
///     assert_eq!(pool.available(), 4);
///     Ok::<(), std::io::Error>(())
/// })
/// .unwrap();
/// ```
///
/// # Backends and runtimes
///
/// Registration is an optimisation that never changes what an operation does. A buffer
/// from a pool registered with this runtime's ring is read into with READ_FIXED; on the
/// fallback backend (where `register` succeeds and does nothing), on another runtime, or
/// before `register`, the same memory is read into with a plain read. The readiness
/// backend's page-cache fast path (`preadv2(RWF_NOWAIT)` during submission) serves fixed
/// reads like any other, on every backend.
///
/// # Lifetime of the memory
///
/// The pool handle may be dropped at any time, also while the runtime runs: the memory
/// lives until the handle *and* every buffer are gone, and an operation owns its buffer
/// until the kernel's final completion (a dropped future leaves it with the runtime until
/// then). When the last of them goes, the registration is cleared in the kernel first and
/// the memory freed after, so memory the kernel could still write is never freed. A
/// runtime dropped first takes its ring's registrations with it; a buffer whose operation
/// the kernel never finished (leaked at shutdown) keeps the whole allocation alive.
///
/// The pool is `!Send`: registrations belong to a ring, and a ring to its thread. Cloning
/// the handle is cheap and shares the pool.
#[derive(Clone)]
pub struct FixedBufPool {
    inner: Rc<Pool>,
}

struct Pool {
    mem: NonNull<u8>,
    layout: Layout,
    count: usize,
    size: usize,
    /// Bytes from the start of one buffer to the next (`size`, rounded up to the
    /// alignment [`FixedBufPool::with_alignment`] asked for).
    stride: usize,
    /// Indices of the buffers in the pool, the next one handed out last. Empty whenever a
    /// [`Next`] waits: a buffer given back goes to the oldest waiter instead.
    free: std::cell::RefCell<Vec<u32>>,
    /// Checkouts waiting for a buffer ([`FixedBufPool::next`]), oldest first; entries
    /// whose future was dropped stay until a release passes them.
    waiters: std::cell::RefCell<std::collections::VecDeque<Rc<Waiter>>>,
    /// The pool's entries in a ring's registered-buffer table, one per buffer, in order.
    fixed: FixedCell,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Every buffer is back (each holds the pool), so no operation names the entries:
        // clear them in the kernel, then free the memory it had registered.
        self.fixed.unregister();
        // SAFETY: mem was allocated in FixedBufPool::build with exactly this layout, and
        // nothing refers to it any more (no buffer is out, the registration is gone).
        unsafe { alloc::dealloc(self.mem.as_ptr(), self.layout) };
    }
}

impl fmt::Debug for FixedBufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBufPool")
            .field("count", &self.inner.count)
            .field("size", &self.inner.size)
            .field("available", &self.available())
            .field("registered", &self.inner.fixed.get().is_some())
            .finish()
    }
}

impl FixedBufPool {
    /// Allocates `count` zeroed buffers of `size` bytes each, not yet registered, one
    /// after the other in one page-aligned allocation (buffer `i` starts `i * size` bytes
    /// in). For direct IO, whose buffers must start at aligned addresses whatever their
    /// size, see [`with_alignment`](FixedBufPool::with_alignment).
    ///
    /// A ring registers at most 16384 buffers (across all pools) of at most 1 GiB each;
    /// a larger pool works, unregistered ([`register`](FixedBufPool::register) says why).
    ///
    /// # Panics
    ///
    /// If `count` or `size` is zero, `count` exceeds `u32::MAX`, or `count * size`
    /// overflows what one allocation can hold.
    pub fn new(count: usize, size: usize) -> FixedBufPool {
        FixedBufPool::build("new", count, size, size, ALIGN)
    }

    /// Like [`new`](FixedBufPool::new), but every buffer starts at a multiple of `align`
    /// (each takes `size` rounded up to `align` of the allocation): buffers that suit
    /// direct IO, whose memory alignment
    /// [`File::dio_alignment`](crate::fs::File::dio_alignment) reports. `buf_size()` is
    /// still `size`.
    ///
    /// ```
    /// use coring::buf::FixedBufPool;
    ///
    /// let pool = FixedBufPool::with_alignment(4, 1000, 512);
    /// let buf = pool.check_out(3).unwrap();
    /// assert_eq!(buf.as_ptr() as usize % 512, 0);
    /// assert_eq!(buf.capacity(), 1000);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`new`](FixedBufPool::new), and if `align` is not a power of two.
    pub fn with_alignment(count: usize, size: usize, align: usize) -> FixedBufPool {
        assert!(
            align.is_power_of_two(),
            "FixedBufPool::with_alignment: alignment {align} is not a power of two"
        );
        let stride = size.checked_next_multiple_of(align).unwrap_or_else(|| {
            panic!("FixedBufPool::with_alignment: {size} bytes rounded up to {align} overflow")
        });
        FixedBufPool::build("with_alignment", count, size, stride, align.max(ALIGN))
    }

    /// `count` buffers of `size` bytes, `stride` bytes apart, in one allocation aligned to
    /// `align`; `what` names the constructor in panic messages.
    fn build(what: &str, count: usize, size: usize, stride: usize, align: usize) -> FixedBufPool {
        assert!(
            count > 0 && size > 0,
            "FixedBufPool::{what}: count ({count}) and size ({size}) must both be positive"
        );
        let n = u32::try_from(count).unwrap_or_else(|_| {
            panic!("FixedBufPool::{what}: {count} buffers; at most u32::MAX fit in one pool")
        });
        let layout = count
            .checked_mul(stride)
            .and_then(|total| Layout::from_size_align(total, align).ok())
            .unwrap_or_else(|| {
                panic!(
                    "FixedBufPool::{what}: {count} buffers of {size} bytes overflow one \
                     allocation"
                )
            });
        // SAFETY: the layout has a non-zero size (count and stride >= size are positive).
        let mem = unsafe { alloc::alloc_zeroed(layout) };
        let mem = NonNull::new(mem).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        FixedBufPool {
            inner: Rc::new(Pool {
                mem,
                layout,
                count,
                size,
                stride,
                free: std::cell::RefCell::new((0..n).rev().collect()),
                waiters: std::cell::RefCell::default(),
                fixed: FixedCell::default(),
            }),
        }
    }

    /// Registers the pool's buffers with the current runtime's io_uring
    /// (`io_uring_register(2)`: one entry per buffer, consecutive, in the ring's sparse
    /// registered-buffer table, created on first use), so that fixed reads and writes on
    /// this runtime name them by index. Calling it again on the same runtime does nothing;
    /// on the fallback backend it succeeds and does nothing. Several pools can be
    /// registered with one runtime.
    ///
    /// # Errors
    ///
    /// - `AlreadyExists` while the pool is registered with another runtime that still
    ///   exists (a registration belongs to one ring);
    /// - `InvalidInput` for a pool a ring cannot register (more than 16384 buffers, or
    ///   buffers over 1 GiB);
    /// - `QuotaExceeded` when the runtime's buffer table has no room left for the pool;
    /// - `Unsupported` on kernels without sparse buffer tables (before Linux 5.19);
    /// - the kernel's error, typically ENOMEM (`OutOfMemory`) when the pinned pages would
    ///   exceed `RLIMIT_MEMLOCK`.
    ///
    /// After an error the pool works as before, unregistered.
    ///
    /// # Panics
    ///
    /// Outside a runtime (call it inside `Runtime::block_on` or a task).
    pub fn register(&self) -> io::Result<()> {
        let pool = &*self.inner;
        pool.fixed.register("this FixedBufPool", &|backend| {
            let iovecs: Vec<c::iovec> = (0..pool.count)
                .map(|i| c::iovec {
                    iov_base: pool.buf_ptr(i).cast(),
                    iov_len: pool.size,
                })
                .collect();
            backend.register_buffers(&iovecs)
        })
    }

    /// Whether the pool is registered with the ring of the runtime running on this thread,
    /// so that fixed operations submitted now use its table entries. Always `false` on the
    /// fallback backend and outside a runtime.
    pub fn is_registered(&self) -> bool {
        self.inner.fixed.is_registered_here()
    }

    /// Takes any buffer from the pool; `None` if every buffer is out (nothing waits).
    ///
    /// The buffer starts empty (`len() == 0`) with `capacity() == size`.
    pub fn try_take(&self) -> Option<FixedBuf> {
        let index = self.inner.free.borrow_mut().pop()?;
        Some(self.buf(index))
    }

    /// Takes buffer `index` (`0..count`); `None` if it is out, or no such buffer exists.
    pub fn check_out(&self, index: usize) -> Option<FixedBuf> {
        let mut free = self.inner.free.borrow_mut();
        let at = free.iter().position(|&i| i as usize == index)?;
        let index = free.swap_remove(at);
        drop(free);
        Some(self.buf(index))
    }

    /// Waits for a free buffer and takes it: at once if one is free, else when one is
    /// given back. Waiters are served in the order they started waiting (first come, first
    /// served), and each buffer given back wakes exactly one of them, handing it that
    /// buffer (no other checkout, not even [`try_take`](FixedBufPool::try_take), can take
    /// it meanwhile): a natural limit on how much IO is in flight at once. Dropping the
    /// future gives up its place (or, if it was handed a buffer and not polled since,
    /// passes the buffer on).
    ///
    /// ```
    /// use coring::buf::FixedBufPool;
    ///
    /// coring::start(async {
    ///     let pool = FixedBufPool::new(1, 64);
    ///     let first = pool.next().await;
    ///     let waiting = coring::spawn({
    ///         let pool = pool.clone();
    ///         async move { pool.next().await.index() }
    ///     });
    ///     drop(first); // goes to the waiting task
    ///     assert_eq!(waiting.await.unwrap(), 0);
    /// });
    /// ```
    pub fn next(&self) -> Next {
        Next {
            pool: self.clone(),
            waiter: None,
        }
    }

    /// Waiting checkouts (see [`next`](FixedBufPool::next)).
    pub fn waiting(&self) -> usize {
        self.inner
            .waiters
            .borrow()
            .iter()
            .filter(|w| matches!(*w.state.borrow(), WaitState::Waiting(_)))
            .count()
    }

    fn buf(&self, index: u32) -> FixedBuf {
        FixedBuf {
            pool: self.inner.clone(),
            index,
            len: 0,
        }
    }

    /// Buffers in the pool now (not taken, or given back: a buffer owned by an operation
    /// in flight, even one whose future was dropped, is not back until it completes).
    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    /// How many buffers the pool has.
    pub fn count(&self) -> usize {
        self.inner.count
    }

    /// The size of each buffer in bytes.
    pub fn buf_size(&self) -> usize {
        self.inner.size
    }
}

/// A checkout waiting in a pool's queue, as the pool and the [`Next`] future share it.
struct Waiter {
    state: std::cell::RefCell<WaitState>,
}

enum WaitState {
    /// In the queue; the waker of the task that last polled.
    Waiting(Option<std::task::Waker>),
    /// Handed this buffer by a release; the future takes it when polled.
    Granted(u32),
    /// Done: the future took its buffer, or was dropped.
    Done,
}

/// The future of [`FixedBufPool::next`]: a buffer of the pool, once one is free (see
/// there).
#[must_use = "futures do nothing unless awaited"]
pub struct Next {
    pool: FixedBufPool,
    /// Its place in the queue, once it had to wait.
    waiter: Option<Rc<Waiter>>,
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("waiting", &self.waiter.is_some())
            .finish()
    }
}

impl std::future::Future for Next {
    type Output = FixedBuf;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<FixedBuf> {
        use std::task::Poll;
        let this = &mut *self;
        let Some(waiter) = &this.waiter else {
            // No one waits when a buffer is free (releases hand buffers to waiters first).
            if let Some(index) = this.pool.inner.free.borrow_mut().pop() {
                return Poll::Ready(this.pool.buf(index));
            }
            let waiter = Rc::new(Waiter {
                state: std::cell::RefCell::new(WaitState::Waiting(Some(cx.waker().clone()))),
            });
            this.pool
                .inner
                .waiters
                .borrow_mut()
                .push_back(waiter.clone());
            this.waiter = Some(waiter);
            return Poll::Pending;
        };
        let mut st = waiter.state.borrow_mut();
        match &mut *st {
            WaitState::Granted(index) => {
                let index = *index;
                *st = WaitState::Done;
                drop(st);
                this.waiter = None;
                Poll::Ready(this.pool.buf(index))
            }
            WaitState::Waiting(w) => {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            WaitState::Done => panic!("coring: FixedBufPool::next polled after completion"),
        }
    }
}

impl Drop for Next {
    fn drop(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        let granted = match std::mem::replace(&mut *waiter.state.borrow_mut(), WaitState::Done) {
            WaitState::Granted(index) => Some(index),
            WaitState::Waiting(_) | WaitState::Done => None,
        };
        // Handed a buffer it never took: it goes to the next waiter (or the pool).
        if let Some(index) = granted {
            self.pool.inner.release(index);
        }
    }
}

impl Pool {
    /// Gives buffer `index` back: to the oldest waiting checkout (waking exactly that one),
    /// else to the free list.
    fn release(&self, index: u32) {
        loop {
            let Some(waiter) = self.waiters.borrow_mut().pop_front() else {
                self.free.borrow_mut().push(index);
                return;
            };
            let prev = std::mem::replace(&mut *waiter.state.borrow_mut(), WaitState::Done);
            match prev {
                WaitState::Waiting(waker) => {
                    *waiter.state.borrow_mut() = WaitState::Granted(index);
                    if let Some(w) = waker {
                        w.wake();
                    }
                    return;
                }
                // Dropped while waiting: skip it.
                WaitState::Granted(_) | WaitState::Done => {}
            }
        }
    }

    fn buf_ptr(&self, index: usize) -> *mut u8 {
        debug_assert!(index < self.count);
        // SAFETY: index < count, so the buffer lies within the count * stride allocation.
        unsafe { self.mem.as_ptr().add(index * self.stride) }
    }
}

/// One buffer of a [`FixedBufPool`]: `capacity()` bytes of the pool's memory, of which the
/// first `len()` are the buffer's contents (the rest holds whatever was there: zeroes, or
/// an earlier user's data). Dropping it gives it back to the pool.
///
/// It is an [`IoBuf`]/[`IoBufMut`] like a `Vec<u8>` with fixed capacity: reads fill it from
/// the start and grow `len()` to cover what they read; writes send its first `len()` bytes.
/// It dereferences to those bytes.
pub struct FixedBuf {
    pool: Rc<Pool>,
    index: u32,
    len: usize,
}

impl FixedBuf {
    /// The buffer's index in its pool.
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// Bytes of content.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no content.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's size: its pool's `buf_size()`.
    pub fn capacity(&self) -> usize {
        self.pool.size
    }

    /// Empties the buffer (before reading into it again, as with a reused `Vec`).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Sets the content length. Safe because the pool's memory is always initialised
    /// (zeroed at allocation); the bytes exposed are whatever was last written there.
    ///
    /// # Panics
    ///
    /// If `len > capacity()`.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "FixedBuf::set_len: {len} is beyond the buffer's capacity of {}",
            self.capacity()
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
            .filter(|&end| end <= self.capacity())
            .unwrap_or_else(|| {
                panic!(
                    "FixedBuf::extend_from_slice: {} more bytes do not fit ({} of {} used)",
                    data.len(),
                    self.len,
                    self.capacity()
                )
            });
        let start = self.len;
        self.full_mut()[start..end].copy_from_slice(data);
        self.len = end;
    }

    /// The buffer's entry in a ring's registered-buffer table, if its pool is registered.
    pub(crate) fn fixed(&self) -> Option<Fixed> {
        self.pool.fixed.get().map(|first| Fixed {
            index: first.index + self.index,
            ..first
        })
    }

    /// The buffer's whole capacity.
    fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: index < count, so the buffer's range lies within the pool's allocation;
        // every byte was initialised (zeroed) at allocation, and no other FixedBuf shares
        // the range (an index is handed out once until it is given back).
        unsafe { std::slice::from_raw_parts_mut(self.pool.buf_ptr(self.index()), self.capacity()) }
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        self.pool.release(self.index);
    }
}

impl fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBuf")
            .field("index", &self.index)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Deref for FixedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the first len bytes of this buffer's range of the pool are initialised
        // (everything is) and owned by this buffer; len <= capacity.
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), self.len) }
    }
}

impl DerefMut for FixedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.full_mut()[..len]
    }
}

// SAFETY: the pointer is into the pool's heap allocation, which does not move with the
// buffer and outlives it (the buffer holds the pool); len <= capacity always.
unsafe impl IoBuf for FixedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.pool.buf_ptr(self.index())
    }

    fn bytes_init(&self) -> usize {
        self.len
    }

    fn bytes_total(&self) -> usize {
        self.pool.size
    }
}

// SAFETY: as for IoBuf; the whole capacity is writable memory owned by this buffer, and
// set_init only grows len (set_filled sets it), to at most the capacity (the caller's
// promise).
unsafe impl IoBufMut for FixedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.pool.buf_ptr(self.index())
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
