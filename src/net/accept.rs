//! What TCP and Unix listeners share: accepts that a dropped future does not lose.

use std::io;

use super::kept::{Got, KeptQueue};
use crate::driver::op::{Op, Operation};
use crate::op::net::{Accept, RawAddr};
use crate::op::SharedFd;

/// What an accept yields: the connection and its peer's address.
type Accepted = io::Result<(SharedFd, Box<RawAddr>)>;

/// A listening socket's accepts. An accept whose future is dropped after submission (a
/// select that picked another branch, a timeout) is kept, not cancelled, and a later
/// accept returns its connection first ([`KeptQueue`]): the kernel never accepts a
/// connection that coring then closes unseen, however many accepts run at once.
pub(crate) struct Acceptor {
    fd: SharedFd,
    kept: KeptQueue<Accept>,
}

impl Acceptor {
    pub(crate) fn new(fd: SharedFd) -> Acceptor {
        Acceptor {
            fd,
            kept: KeptQueue::new(
                "this listener's accept runs on another runtime, which may accept a \
                 connection for it: accept there",
            ),
        }
    }

    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// The next connection: the first a kept accept got, else this call's own accept's
    /// (see [`KeptQueue`]).
    pub(crate) async fn accept(&self) -> Accepted {
        match self.kept.call(Op::new(Accept::new(&self.fd)), |a| a).await {
            Got::Own(accept, c) | Got::Kept(accept, c, _) => accept.complete(c),
            Got::Elsewhere(e, _) => Err(e),
        }
    }

    /// Cancels the kept accepts at once where the backend can; connections they got
    /// before the cancel stay for later accepts.
    pub(crate) fn quiesce(&self) {
        self.kept.quiesce();
    }

    /// Gives up the descriptor (see `socket_conversions!`): gives `self` back, state
    /// intact, while a kept accept holds a connection not returned yet (accept it first)
    /// or could not be cancelled at once (it is being cancelled; try again after the
    /// runtime has run).
    pub(crate) fn into_fd(self) -> Result<SharedFd, Acceptor> {
        if !self.kept.settle() {
            return Err(self);
        }
        Ok(self.fd)
    }
}
