use crate::platform::RawFd;
use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::driver::desc::{FdRef, OpDesc};
use crate::driver::fixed::FixedCell;
use crate::driver::op::Op;
use crate::driver::Backend;
use crate::op::fs::Close;

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A file descriptor shared by its owner (a `File`, a socket) and the operations using it.
///
/// Every in-flight operation holds a clone, so the descriptor is not closed (and its number
/// not reused) while the kernel may still act on it, even after the owner is dropped. For
/// the same reason a slot in a ring's registered-file table, if the descriptor has one, is
/// released only when the last clone goes, and before the descriptor is closed (the table
/// holds its own reference to the open file, which would otherwise keep it open).
#[derive(Clone)]
pub(crate) struct SharedFd {
    inner: Rc<Inner>,
}

struct Inner {
    fd: RawFd,
    /// Unique for the process's lifetime: tells this open file apart from a later one that
    /// reuses the descriptor number.
    id: u64,
    /// Set once the descriptor was handed to an asynchronous close.
    closed: Cell<bool>,
    /// The task waiting in `close()` for the other holders to go away.
    closer: Cell<Option<Waker>>,
    /// The slot this descriptor holds in a ring's registered-file table, if any.
    fixed: FixedCell,
    /// The descriptor is a file opened for direct IO (see `FdRef::direct`).
    direct: Cell<bool>,
    /// The device of the file system holding a direct file (`FdRef::dev`; 0: unknown).
    dev: Cell<u64>,
    /// Ordered writes (a stream's sends and shutdown(Write)) in flight: the identity of
    /// the runtime they run on (`context::driver_id`) and how many. Each runtime keeps its
    /// own sends in order; one on another runtime could overtake them.
    writes: Cell<(u64, u32)>,
}

impl SharedFd {
    /// Takes ownership of `fd`.
    pub(crate) fn new(fd: RawFd) -> SharedFd {
        SharedFd {
            inner: Rc::new(Inner {
                fd,
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                closed: Cell::new(false),
                closer: Cell::new(None),
                fixed: FixedCell::default(),
                direct: Cell::new(false),
                dev: Cell::new(0),
                writes: Cell::new((0, 0)),
            }),
        }
    }

    /// Fails if ordered writes of this descriptor are in flight on a runtime other than the
    /// current one: a write issued here could overtake them. (The current runtime is looked
    /// up only when some are in flight.) Writes counted on a runtime that has been dropped
    /// since are not in flight any more (it cancelled or leaked them, and none of them can
    /// complete now): they are forgotten, whether their futures were dropped, leaked with
    /// the runtime, or `mem::forget`ed.
    #[inline]
    pub(crate) fn check_write_order(&self) -> io::Result<()> {
        use crate::runtime::context;
        match self.inner.writes.get() {
            (owner, n) if n > 0 && owner != context::driver_id() => self.writes_elsewhere(owner),
            _ => Ok(()),
        }
    }

    /// [`SharedFd::check_write_order`] when ordered writes are counted on runtime `owner`,
    /// not the current one: out of line, as writes are rarely in flight anywhere else.
    #[cold]
    #[inline(never)]
    fn writes_elsewhere(&self, owner: u64) -> io::Result<()> {
        if !crate::runtime::context::runtime_alive(owner) {
            self.inner.writes.set((0, 0));
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "this stream has writes in flight on another runtime: finish them there \
             before writing or shutting down its write side here (they would be \
             overtaken)",
        ))
    }

    /// For an operation of this descriptor described by `desc` that went in flight on
    /// `driver`: counts it among the ordered writes in flight if it is one
    /// ([`OpDesc::is_ordered_write`]); `true` then, and the operation calls
    /// [`SharedFd::write_done`] when it completes (its final completion, whatever happened
    /// to its future).
    pub(crate) fn write_in_flight(&self, desc: &OpDesc, driver: u64) -> bool {
        if !desc.is_ordered_write() {
            return false;
        }
        let (_, n) = self.inner.writes.get();
        self.inner.writes.set((driver, n + 1));
        true
    }

    /// An ordered write counted by [`SharedFd::write_in_flight`] completed.
    pub(crate) fn write_done(&self) {
        let (owner, n) = self.inner.writes.get();
        self.inner.writes.set((owner, n.saturating_sub(1)));
    }

    /// The raw descriptor number.
    pub(crate) fn raw(&self) -> RawFd {
        self.inner.fd
    }

    /// The descriptor as an operation names it: the raw number and the registered slot,
    /// if any (which only the ring that owns it uses).
    #[inline]
    pub(crate) fn fd_ref(&self) -> FdRef {
        FdRef {
            raw: self.inner.fd,
            id: self.inner.id,
            fixed: self.inner.fixed.get(),
            direct: self.inner.direct.get(),
            dev: self.inner.dev.get(),
        }
    }

    /// Records that the descriptor is a file opened for direct IO, whose reads the page
    /// cache never answers.
    pub(crate) fn set_direct(&self) {
        self.inner.direct.set(true);
        self.inner
            .dev
            .set(crate::platform::device_of(self.inner.fd));
    }

    /// Whether the descriptor is a file opened for direct IO.
    #[inline]
    pub(crate) fn is_direct(&self) -> bool {
        self.inner.direct.get()
    }

    /// Registers the descriptor with the current runtime's ring; see `File::register`.
    pub(crate) fn register(&self, what: &str) -> io::Result<()> {
        let fd = self.inner.fd;
        self.inner
            .fixed
            .register(what, &|backend| backend.register_file(fd))
    }

    /// Releases the registered slot, if no operation is using the descriptor.
    /// `finished` holders are operations that have finished but still hold the descriptor
    /// (a retained accept or receive whose result waits to be handed on): the kernel no
    /// longer uses it for them, so they do not keep it busy.
    pub(crate) fn unregister(&self, what: &str, finished: usize) -> io::Result<()> {
        if Rc::strong_count(&self.inner) > 1 + finished {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "{what}: an operation still uses the descriptor (and may name its \
                     registered slot); unregister once it has finished"
                ),
            ));
        }
        self.inner.fixed.unregister();
        Ok(())
    }

    /// Whether operations submitted on the current runtime use a registered slot.
    pub(crate) fn is_registered(&self) -> bool {
        self.inner.fixed.is_registered_here()
    }

    /// This open file's identity (never reused, unlike its descriptor number).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Gives up ownership of the descriptor without closing it, if no operation holds it.
    pub(crate) fn into_raw(self) -> Result<RawFd, SharedFd> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the Rc is moved out exactly once.
        let inner = unsafe { std::ptr::read(&this.inner) };
        match Rc::try_unwrap(inner) {
            Ok(inner) => {
                inner.closed.set(true);
                Ok(inner.fd)
            }
            Err(inner) => Err(SharedFd { inner }),
        }
    }

    /// Closes the descriptor through the runtime, after every operation still holding it
    /// (for example an orphaned read being cancelled) has finished.
    pub(crate) async fn close(self) -> io::Result<()> {
        poll_fn(|cx| {
            if Rc::strong_count(&self.inner) == 1 {
                Poll::Ready(())
            } else {
                self.inner.closer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        // No operation can name the slot any more: clear it before the close, so that the
        // close really releases the open file.
        self.inner.fixed.unregister();
        self.inner.closed.set(true);
        Op::new(Close::new(self.inner.fd)).await
    }
}

impl Drop for SharedFd {
    fn drop(&mut self) {
        // The holder before the last one wakes a pending close().
        if Rc::strong_count(&self.inner) == 2 {
            if let Some(w) = self.inner.closer.take() {
                w.wake();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every holder is gone, so no operation names the slot: clear it first, so the
        // ring's reference to the open file does not outlive the descriptor (this also
        // runs when into_raw hands the descriptor on).
        self.fixed.unregister();
        if !self.closed.get() {
            // The error of a synchronous close in Drop has nowhere to go; close().await
            // reports it.
            // fd is owned by this value and no operation references it (all holders are
            // gone).
            crate::platform::close(self.fd);
        }
    }
}
