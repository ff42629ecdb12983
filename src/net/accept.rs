//! What TCP and Unix listeners share: accepts that a dropped future does not lose.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::driver::op::{Kept, Op, Operation};
use crate::op::net::{Accept, RawAddr};
use crate::op::SharedFd;

/// What an accept yields: the connection and its peer's address.
type Accepted = io::Result<(SharedFd, Box<RawAddr>)>;

/// A listening socket's accepts. An accept whose future is dropped after submission (a
/// select that picked another branch, a timeout) is kept, not cancelled, and the next
/// accept returns its connection first: the kernel never accepts a connection that coring
/// then closes unseen. The listener cancels a kept accept only when dropped (or converted
/// or unregistered, keeping a connection it got).
pub(crate) struct Acceptor {
    fd: SharedFd,
    kept: RefCell<Option<Kept<Accept>>>,
}

/// Releases the kept accept's claim when the accept that waits for it ends or is dropped.
struct Claim<'a>(&'a Acceptor);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.0.kept.borrow_mut().as_mut() {
            k.unclaim();
        }
    }
}

impl Acceptor {
    pub(crate) fn new(fd: SharedFd) -> Acceptor {
        Acceptor {
            fd,
            kept: RefCell::new(None),
        }
    }

    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// The next connection: the kept accept's if there is one (and no other accept waits
    /// for it), else a new accept's.
    pub(crate) async fn accept(&self) -> Accepted {
        let claimed = self.kept.borrow_mut().as_mut().is_some_and(|k| k.claim());
        if claimed {
            let _claim = Claim(self);
            if let Some(res) = poll_fn(|cx| self.poll_kept(cx)).await {
                return res;
            }
        }
        KeepOnDrop {
            acceptor: self,
            op: Op::new(Accept::new(&self.fd)),
        }
        .await
    }

    /// Waits for the kept accept's result; `None` if there is none, or it ended cancelled
    /// (by `quiesce`: nothing to hand on, a new accept follows).
    fn poll_kept(&self, cx: &mut Context<'_>) -> Poll<Option<Accepted>> {
        let mut kept = self.kept.borrow_mut();
        let Some(k) = kept.as_mut() else {
            return Poll::Ready(None);
        };
        let Ok(c) = std::task::ready!(k.poll_here(cx)) else {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "this listener's accept runs on another runtime, which may accept a \
                 connection for it: accept there",
            ))));
        };
        let accept = kept.take().expect("coring: kept accept").into_data();
        if c.res == -libc::ECANCELED {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(accept.complete(c)))
    }

    /// Cancels a kept accept at once where the backend can; a connection it got before
    /// the cancel stays for the next accept.
    pub(crate) fn quiesce(&self) {
        let mut kept = self.kept.borrow_mut();
        if let Some(c) = kept.as_mut().and_then(|k| k.cancel_now()) {
            if c.res < 0 {
                // Cancelled (or failed): nothing to hand on.
                *kept = None;
            }
        }
    }

    /// Gives up the descriptor (see `socket_conversions!`): gives `self` back, state
    /// intact, while a kept accept holds a connection not returned yet (accept it first)
    /// or could not be cancelled at once (it is being cancelled; try again after the
    /// runtime has run).
    pub(crate) fn into_fd(self) -> Result<SharedFd, Acceptor> {
        self.quiesce();
        if self.kept.borrow().is_some() {
            return Err(self);
        }
        Ok(self.fd)
    }
}

/// An accept that, if its future is dropped after submission, leaves the operation to the
/// listener ([`Acceptor`]). Only one is kept: a second dropped meanwhile (accepts racing
/// on one listener) is cancelled like any operation (a connection it got is closed).
struct KeepOnDrop<'a> {
    acceptor: &'a Acceptor,
    op: Op<Accept>,
}

impl Future for KeepOnDrop<'_> {
    type Output = Accepted;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.op).poll(cx)
    }
}

impl Drop for KeepOnDrop<'_> {
    fn drop(&mut self) {
        let mut kept = self.acceptor.kept.borrow_mut();
        if kept.is_none() {
            *kept = Kept::detach(&mut self.op, |a| a);
        }
    }
}
