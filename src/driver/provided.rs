//! A stream's multishot receive into the backend's provided buffers: arming it, copying
//! its arrivals into a reader's buffer in order, handing the buffers back, cancelling it,
//! and giving it to the driver as an orphan when the stream goes.
//!
//! The stream above decides *when* a read takes this path (see `net/stream.rs`); this is
//! the driver's side of it, the only code outside the driver's table that names provided
//! buffers.

use crate::platform::c;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::desc::FdRef;
use super::op::IntoOrphan;
use super::{Backend, Driver, OpDesc, Submitted};
use crate::buf::{copy_out, IoBufMut};
use crate::runtime::context;

/// What a read on the multishot path ended with.
pub(crate) enum ProvidedRead {
    /// Bytes copied into the caller's buffer (0: end of file).
    Read(io::Result<usize>),
    /// Nothing is held any more and no receive is armed: receive into the caller's buffer
    /// directly (no provided buffer was left, the receive was cancelled, or it would have
    /// to be armed on another runtime's driver).
    Direct,
}

/// Where a stream's multishot receive, and what it holds, lives.
pub(crate) enum Location {
    /// No receive is armed and nothing is held.
    Idle,
    /// On the current thread's runtime.
    Here,
    /// On another runtime, which has finished the receive (for instance cancelled it when
    /// dropped): what it got can be read from here, in order, through that driver.
    FinishedElsewhere(Rc<RefCell<Driver>>),
    /// On another runtime, still running: data it holds must be read there.
    RunningElsewhere,
}

/// A stream's multishot receive and the arrival it is partly through. `H` keeps the
/// receive's descriptor open while the kernel uses it: the driver takes it as the orphan's
/// data if the stream goes first.
pub(crate) struct ProvidedRecv<H: IntoOrphan> {
    /// The driver the receive runs on; set while `armed` or `partial` is.
    driver: Option<Rc<RefCell<Driver>>>,
    /// The armed receive's key, and what keeps its descriptor open.
    armed: Option<(usize, H)>,
    /// An arrival partly copied out: provided buffer id, next byte, end.
    partial: Option<(u16, usize, usize)>,
    /// The peer closed its side: reads return 0 from now on.
    eof: bool,
    /// The size of the provided buffers the receive fills (read from the backend when one
    /// is armed; fixed for a runtime's life).
    buf_size: usize,
    /// Whether the current read's first arrival filled a whole provided buffer; `None` if
    /// the read began with data left from an earlier arrival.
    first_full: Option<bool>,
}

impl<H: IntoOrphan> Default for ProvidedRecv<H> {
    fn default() -> Self {
        ProvidedRecv {
            driver: None,
            armed: None,
            partial: None,
            eof: false,
            buf_size: 0,
            first_full: None,
        }
    }
}

impl<H: IntoOrphan> ProvidedRecv<H> {
    /// Whether the receive is neither armed nor holding data.
    pub(crate) fn is_idle(&self) -> bool {
        self.armed.is_none() && self.partial.is_none()
    }

    /// The size of the provided buffers the last armed receive filled (0 before any).
    pub(crate) fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Where the receive lives, seen from the runtime whose driver is `current`.
    pub(crate) fn location(&self, current: &Rc<RefCell<Driver>>) -> Location {
        let Some(d) = &self.driver else {
            return Location::Idle;
        };
        if Rc::ptr_eq(d, current) {
            return Location::Here;
        }
        let finished = self
            .armed
            .as_ref()
            .is_none_or(|&(k, _)| d.borrow().is_finished(k));
        if finished {
            Location::FinishedElsewhere(d.clone())
        } else {
            Location::RunningElsewhere
        }
    }

    /// Starts a read on this path: the next arrival it takes decides [`Self::first_full`].
    pub(crate) fn begin_read(&mut self) {
        self.first_full = None;
    }

    /// Whether the read's first arrival filled a whole provided buffer (`None` if the read
    /// began with data left from an earlier arrival); asked once, after the read.
    pub(crate) fn take_first_full(&mut self) -> Option<bool> {
        self.first_full.take()
    }

    /// Reads into `buf` on the multishot path, through `driver` (the current runtime's, or
    /// another's that finished the receive, see [`Location::FinishedElsewhere`]): takes
    /// every arrival already queued that fits, oldest first, then returns without waiting
    /// for more once it has some; arms the receive on `fd` (kept open by `hold()`) if none
    /// is armed. What does not fit stays for the next read.
    pub(crate) fn poll_read<B: IoBufMut>(
        &mut self,
        cx: &mut Context<'_>,
        driver: &Rc<RefCell<Driver>>,
        fd: FdRef,
        hold: impl FnOnce() -> H,
        buf: &mut B,
    ) -> Poll<ProvidedRead> {
        // Bytes this poll has put into `buf`.
        let mut filled = 0;
        let mut hold = Some(hold);
        loop {
            if let Some((bid, start, end)) = self.partial {
                let mut d = driver.borrow_mut();
                let n = copy_out(&d.backend().provided_buf(bid, end)[start..], buf, filled);
                filled += n;
                if start + n < end {
                    // `buf` is full.
                    self.partial = Some((bid, start + n, end));
                    return Poll::Ready(ProvidedRead::Read(Ok(filled)));
                }
                self.partial = None;
                d.backend_mut().recycle_buf(bid);
            }
            if filled > 0 {
                let more = filled < buf.bytes_total()
                    && self
                        .armed
                        .as_ref()
                        .is_some_and(|&(key, _)| driver.borrow().next_is_data(key));
                if !more {
                    self.settle();
                    return Poll::Ready(ProvidedRead::Read(Ok(filled)));
                }
            }
            if self.eof {
                crate::buf::set_empty(buf);
                return Poll::Ready(ProvidedRead::Read(Ok(0)));
            }
            let key = match &self.armed {
                Some((key, _)) => *key,
                // A read started under a cancelled token arms nothing (nothing was queued
                // for it: `filled` is 0).
                None if context::cancel_requested(cx.waker()) => {
                    return Poll::Ready(ProvidedRead::Read(Err(context::cancelled())));
                }
                None => match self.arm(cx.waker(), driver, fd, &mut hold) {
                    Some(key) => key,
                    None => return Poll::Ready(ProvidedRead::Direct),
                },
            };
            let polled = driver.borrow_mut().poll_op(key, cx);
            let Poll::Ready(c) = polled else {
                // Only the runtime that armed the receive turns its driver: awaited
                // anywhere else (a read future moved to another runtime), it would never
                // complete.
                assert!(
                    context::is_current_driver(driver),
                    "coring: an IO operation started on one coring runtime is awaited \
                     outside it (on another runtime, or none); await it on the runtime \
                     that started it"
                );
                // The read's cancel token: the receive is the stream's and goes on; the
                // read ends with what it has (nothing: `filled` is 0 when the queue is
                // empty, as the loop above only continues while data is queued).
                if context::cancel_requested(cx.waker()) {
                    return Poll::Ready(ProvidedRead::Read(Err(context::cancelled())));
                }
                return Poll::Pending;
            };
            if !c.more() {
                // That was the final completion: the key is dead.
                self.armed = None;
            }
            match c.res {
                n if n > 0 => {
                    let Some(bid) = c.buffer() else {
                        return Poll::Ready(ProvidedRead::Read(Err(io::Error::other(
                            "coring: a multishot receive reported data without a buffer",
                        ))));
                    };
                    let n = n as usize;
                    self.partial = Some((bid, 0, n));
                    if filled == 0 {
                        self.first_full = Some(n == self.buf_size);
                    }
                }
                res => {
                    if let Some(bid) = c.buffer() {
                        driver.borrow_mut().backend_mut().recycle_buf(bid);
                    }
                    match -res {
                        0 => self.eof = true,
                        // Out of provided buffers, or cancelled: by the driver's cap on
                        // unread arrivals, by a switch to direct reads, or by
                        // `cancel_now` (a stream giving up its descriptor). Every arrival
                        // queued before this final completion was collected above, in
                        // order, so nothing is lost: this read receives directly, and a
                        // later read arms again.
                        c::ENOBUFS | c::ECANCELED if !c.more() => {
                            self.settle();
                            return Poll::Ready(ProvidedRead::Direct);
                        }
                        errno => {
                            return Poll::Ready(ProvidedRead::Read(Err(
                                io::Error::from_raw_os_error(errno),
                            )));
                        }
                    }
                }
            }
        }
    }

    /// Arms the receive on `driver` if it is the current runtime's and its backend has
    /// provided buffers; its key, or `None`: read directly.
    fn arm(
        &mut self,
        waker: &Waker,
        driver: &Rc<RefCell<Driver>>,
        fd: FdRef,
        hold: &mut Option<impl FnOnce() -> H>,
    ) -> Option<usize> {
        // Never on another runtime's driver (a finished receive read from here): this
        // read receives directly, on this runtime.
        if !context::is_current_driver(driver) {
            return None;
        }
        let mut d = driver.borrow_mut();
        if !d.backend_mut().multishot_recv() {
            return None;
        }
        // Group 0: the receive is the stream's, not the read's, so no read's cancel token
        // reaches it.
        match d.submit(&OpDesc::RecvMulti { fd }, waker, false, 0) {
            Ok(Submitted::InFlight(key)) => {
                let hold = hold.take().expect("coring: a read arms its receive once");
                self.armed = Some((key, hold()));
                self.buf_size = d.backend().provided_buf_size();
                self.driver = Some(driver.clone());
                Some(key)
            }
            // Not accepted (or, impossibly, finished at once): read single-shot.
            Ok(Submitted::Completed(_) | Submitted::NotReady) | Err(_) => None,
        }
    }

    /// Cancels the armed receive without waiting, for a switch to direct reads: the reads
    /// that follow collect its queued arrivals and its final completion as usual.
    pub(crate) fn cancel_for_bulk(&mut self) {
        if let (Some((key, _)), Some(d)) = (&self.armed, &self.driver) {
            d.borrow_mut().cancel_for_bulk(*key);
        }
    }

    /// Cancels the armed receive at once where the backend can, so that it no longer uses
    /// the descriptor; data it received stays for reads. Best effort: a receive that
    /// cannot be cancelled synchronously, or that has data queued, stays (cancelled) until
    /// reads drain it.
    pub(crate) fn cancel_now(&mut self) {
        let (Some(&(key, _)), Some(driver)) = (self.armed.as_ref(), self.driver.clone()) else {
            return;
        };
        let mut d = driver.borrow_mut();
        if !d.cancel_now(key) || d.has_queued_data(key) {
            return;
        }
        // Only non-data completions are left: collect them, the final one last.
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(c) = d.poll_op(key, &mut cx) {
            if let Some(bid) = c.buffer() {
                d.backend_mut().recycle_buf(bid);
            }
            if !c.more() {
                self.armed = None;
                break;
            }
        }
        drop(d);
        self.settle();
    }

    /// Drops the driver handle once nothing needs it, so an idle stream does not keep a
    /// finished runtime's ring alive.
    pub(crate) fn settle(&mut self) {
        if self.is_idle() {
            self.driver = None;
        }
    }
}

impl<H: IntoOrphan> Drop for ProvidedRecv<H> {
    /// Hands the held buffer back and cancels the armed receive: at once where the backend
    /// can (io_uring's synchronous cancel), so that the descriptor `H` keeps open closes now
    /// rather than when the loop next turns (a server that drops a connection and then
    /// blocks its thread still gives the peer its end of file); else the driver keeps it as
    /// an orphan until the final completion, recycling every buffer it names.
    fn drop(&mut self) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        // The driver is never borrowed while user code runs; if it were, leaking the
        // buffer and the receive is the safe choice (both stay the kernel's or ours).
        let Ok(mut d) = driver.try_borrow_mut() else {
            std::mem::forget(self.armed.take());
            return;
        };
        if let Some((bid, _, _)) = self.partial.take() {
            d.backend_mut().recycle_buf(bid);
        }
        if let Some((key, hold)) = self.armed.take() {
            d.cancel_now(key);
            let mut hold = Some(hold);
            // Finished: the completions' buffers are recycled, and `hold` (or the orphan
            // made of it) is dropped below, outside the driver's borrow.
            let finished = d.orphan(key, || {
                hold.take()
                    .expect("coring: orphan data taken once")
                    .into_orphan()
            });
            drop(d);
            drop(hold);
            if let Some((c, Some(orphan))) = finished {
                orphan.finish(c);
            }
        }
    }
}
