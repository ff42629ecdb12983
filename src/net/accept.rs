//! What TCP and Unix listeners share: accepts that a dropped future does not lose.

use std::cell::RefCell;
use std::collections::VecDeque;
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
/// select that picked another branch, a timeout) is kept, not cancelled, and a later
/// accept returns its connection first: the kernel never accepts a connection that coring
/// then closes unseen, however many accepts run at once. Each kept accept is waited for by
/// one call at a time (the driver keeps one waker per operation); a call that finds every
/// kept accept claimed submits its own. The listener cancels kept accepts only when
/// dropped (or converted or unregistered, keeping connections they got).
pub(crate) struct Acceptor {
    fd: SharedFd,
    kept: RefCell<VecDeque<Kept<Accept>>>,
}

/// Releases a kept accept's claim (by id) when the accept waiting for it ends or is
/// dropped.
struct Claim<'a>(&'a Acceptor, u64);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        for k in self.0.kept.borrow_mut().iter_mut() {
            k.release(self.1);
        }
    }
}

impl Acceptor {
    pub(crate) fn new(fd: SharedFd) -> Acceptor {
        Acceptor {
            fd,
            kept: RefCell::new(VecDeque::new()),
        }
    }

    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// The next connection: the oldest unclaimed kept accept's if there is one, else a
    /// new accept's.
    pub(crate) async fn accept(&self) -> Accepted {
        loop {
            let id = self.kept.borrow_mut().iter_mut().find_map(|k| k.claim());
            let Some(id) = id else {
                break;
            };
            let _claim = Claim(self, id);
            if let Some(res) = poll_fn(|cx| self.poll_kept(cx, id)).await {
                return res;
            }
            // Cancelled, or gone: try the next kept accept, if any.
        }
        KeepOnDrop {
            acceptor: self,
            op: Op::new(Accept::new(&self.fd)),
        }
        .await
    }

    /// Waits for kept accept `id`'s result; `None` if it is gone, or ended cancelled (by
    /// `quiesce`: nothing to hand on).
    fn poll_kept(&self, cx: &mut Context<'_>, id: u64) -> Poll<Option<Accepted>> {
        let mut kept = self.kept.borrow_mut();
        let Some(i) = kept.iter().position(|k| k.id() == id) else {
            return Poll::Ready(None);
        };
        let Ok(c) = std::task::ready!(kept[i].poll_here(cx)) else {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "this listener's accept runs on another runtime, which may accept a \
                 connection for it: accept there",
            ))));
        };
        let accept = kept.remove(i).expect("coring: kept accept").into_data();
        if c.res == -libc::ECANCELED {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(accept.complete(c)))
    }

    /// Cancels the kept accepts at once where the backend can; connections they got
    /// before the cancel stay for later accepts.
    pub(crate) fn quiesce(&self) {
        self.kept.borrow_mut().retain_mut(|k| match k.cancel_now() {
            // Cancelled (or failed): nothing to hand on.
            Some(c) if c.res < 0 => false,
            _ => true,
        });
    }

    /// Gives up the descriptor (see `socket_conversions!`): gives `self` back, state
    /// intact, while a kept accept holds a connection not returned yet (accept it first)
    /// or could not be cancelled at once (it is being cancelled; try again after the
    /// runtime has run).
    pub(crate) fn into_fd(self) -> Result<SharedFd, Acceptor> {
        self.quiesce();
        if !self.kept.borrow().is_empty() {
            return Err(self);
        }
        Ok(self.fd)
    }
}

/// An accept that, if its future is dropped after submission, leaves the operation to the
/// listener ([`Acceptor`]).
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
        if let Some(k) = Kept::detach(&mut self.op, |a| a) {
            self.acceptor.kept.borrow_mut().push_back(k);
        }
    }
}
