//! What TCP and Unix listeners share: accepts that a dropped future does not lose.

use std::io;

use super::retained::{Outcome, RetainedOps};
use crate::driver::op::{Op, Operation};
use crate::op::net::{Accept, RawAddr};
use crate::op::SharedFd;

/// What an accept yields: the connection and its peer's address.
type Accepted = io::Result<(SharedFd, Box<RawAddr>)>;

/// A listening socket's accepts. An accept whose future is dropped after submission (a
/// select that picked another branch, a timeout) is retained, not cancelled, and a later
/// accept returns its connection first ([`RetainedOps`]): the kernel never accepts a
/// connection that coring then closes unseen, however many accepts run at once.
pub(crate) struct Acceptor {
    fd: SharedFd,
    retained: RetainedOps<Accept>,
}

impl Acceptor {
    pub(crate) fn new(fd: SharedFd) -> Acceptor {
        Acceptor {
            fd,
            retained: RetainedOps::new(
                "this listener's accept runs on another runtime, which may accept a \
                 connection for it: accept there",
            ),
        }
    }

    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// The next connection: the first a retained accept got, else this call's own accept's
    /// (see [`RetainedOps`]).
    pub(crate) async fn accept(&self) -> Accepted {
        match self
            .retained
            .call(Op::new(Accept::new(&self.fd)), |a| a)
            .await
        {
            Outcome::Own(accept, c) | Outcome::Retained(accept, c, _) => accept.complete(c),
            Outcome::Elsewhere(e, _) => Err(e),
        }
    }

    /// Cancels the retained accepts at once where the backend can; connections they got
    /// before the cancel stay for later accepts.
    pub(crate) fn quiesce(&self) -> usize {
        self.retained.quiesce()
    }

    /// Gives up the descriptor (see `socket_conversions!`): gives `self` back, state
    /// intact, while a retained accept holds a connection not returned yet (accept it first)
    /// or could not be cancelled at once (it is being cancelled; try again after the
    /// runtime has run).
    pub(crate) fn into_fd(self) -> Result<SharedFd, Acceptor> {
        if !self.retained.settle() {
            return Err(self);
        }
        Ok(self.fd)
    }
}
