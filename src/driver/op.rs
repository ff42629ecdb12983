//! `Op<T>`: the future every IO call awaits.
//!
//! Lifecycle: `Unsubmitted -> InFlight(key) -> Done`. While in flight, the operation's data
//! (fd handle, buffer, path, address) is referenced by the kernel through the pointers in
//! its [`OpDesc`]; those pointers target heap memory owned by the data, so moving the data
//! into the driver's table on drop keeps them valid. Drop never frees early: an in-flight
//! operation is handed to the driver as an orphan and a cancel is submitted.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{Completion, Driver, OpDesc, Orphan, Submitted};
use crate::runtime::context;
use std::cell::RefCell;

/// One operation: describes itself once, and turns its completion into a result.
///
/// Implementors keep every byte the kernel touches (buffers, paths, socket addresses,
/// iovec arrays, statx results) in heap memory they own, so the value can be moved while
/// the operation is in flight.
pub(crate) trait Operation: 'static {
    /// What awaiting the operation yields.
    type Output;

    /// The backend-neutral description; called once, at submission.
    fn describe(&mut self) -> OpDesc;

    /// Builds the output from the final completion. Also used for orphans, whose output is
    /// dropped at once (closing an fd the kernel opened for nobody, releasing a buffer).
    fn complete(self, c: Completion) -> Self::Output;
}

impl<T: Operation> Orphan for T {
    fn finish(self: Box<Self>, c: Completion) {
        drop((*self).complete(c));
    }
}

enum State {
    Unsubmitted,
    InFlight(usize),
    Done,
}

/// The future of one operation.
pub(crate) struct Op<T: Operation> {
    state: State,
    data: Option<T>,
    driver: Option<Rc<RefCell<Driver>>>,
}

impl<T: Operation> Op<T> {
    /// An operation that will be submitted on first poll, on the current runtime.
    pub(crate) fn new(data: T) -> Op<T> {
        Op {
            state: State::Unsubmitted,
            data: Some(data),
            driver: None,
        }
    }
}

impl<T: Operation> Op<T> {
    /// Takes a submitted operation (in flight, or completed but not collected) out of this
    /// future, which then drops without orphaning it. The caller owns the key, the data
    /// and the duty this future had: collect the final completion with
    /// [`Driver::poll_op`], or hand the data to [`Driver::orphan`], before dropping it.
    pub(crate) fn detach(&mut self) -> Option<(usize, T, Rc<RefCell<Driver>>)> {
        let State::InFlight(key) = self.state else {
            return None;
        };
        let (Some(data), Some(driver)) = (self.data.take(), self.driver.take()) else {
            return None;
        };
        self.state = State::Done;
        Some((key, data, driver))
    }
}

// Op holds no self-references: the kernel only sees heap memory owned by `data`.
impl<T: Operation> Unpin for Op<T> {}

impl<T: Operation> Future for Op<T> {
    type Output = T::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        let this = self.get_mut();
        match this.state {
            State::Unsubmitted => {
                let data = this.data.as_mut().expect("coring: operation without data");
                let desc = data.describe();
                let (submitted, driver) = context::submit(&desc, cx.waker());
                match submitted {
                    Ok(Submitted::InFlight(key)) => {
                        this.state = State::InFlight(key);
                        this.driver = driver;
                        Poll::Pending
                    }
                    Ok(Submitted::Done(c)) => {
                        this.state = State::Done;
                        let data = this.data.take().expect("coring: operation without data");
                        Poll::Ready(data.complete(c))
                    }
                    Err(e) => {
                        // Nothing reached the kernel: complete with the error through the
                        // same path a kernel error takes.
                        this.state = State::Done;
                        let errno = e.raw_os_error().unwrap_or(libc::EIO);
                        let data = this.data.take().expect("coring: operation without data");
                        Poll::Ready(data.complete(Completion::error(errno)))
                    }
                }
            }
            State::InFlight(key) => {
                let driver = this
                    .driver
                    .as_ref()
                    .expect("coring: in-flight op without driver");
                let c = match driver.borrow_mut().poll_op(key, cx) {
                    Poll::Ready(c) => c,
                    Poll::Pending => return Poll::Pending,
                };
                this.state = State::Done;
                let data = this.data.take().expect("coring: operation without data");
                Poll::Ready(data.complete(c))
            }
            State::Done => panic!("coring: operation future polled after completion"),
        }
    }
}

impl<T: Operation> Drop for Op<T> {
    fn drop(&mut self) {
        let State::InFlight(key) = self.state else {
            return;
        };
        let (Some(driver), Some(data)) = (self.driver.take(), self.data.take()) else {
            return;
        };
        let mut data = Some(data);
        let finished = driver.borrow_mut().orphan(key, || {
            Box::new(data.take().expect("coring: orphan data taken once"))
        });
        if let (Some(c), Some(data)) = (finished, data) {
            // The completion had already arrived: finish it now, outside the driver borrow
            // (dropping the output may close an fd or run user Drop code).
            drop(data.complete(c));
        }
    }
}
