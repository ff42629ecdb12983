//! What the TCP and Unix socket types share beyond stream IO (`stream.rs`): each is a thin
//! wrapper around the one value that owns its descriptor ([`FdOwner`]: an [`Acceptor`]
//! for a listener, a [`Stream`] for a stream), and a listener is bound and listening
//! before it is wrapped ([`listen`]).

use std::io;

use super::accept::Acceptor;
use super::stream::Stream;
use crate::op::net::RawAddr;
use crate::op::SharedFd;
use crate::platform;

/// The value that owns a socket type's descriptor and the operations in flight on it.
pub(crate) trait FdOwner: Sized {
    fn new(fd: SharedFd) -> Self;

    fn fd(&self) -> &SharedFd;

    /// Lets go of the operations holding the descriptor where it can, before it is
    /// unregistered or given up; returns how many of those still holding it have finished
    /// (their results wait to be handed on; the kernel no longer uses the descriptor).
    fn quiesce(&self) -> usize;

    /// Gives up the descriptor; gives `self` back, state intact, while an operation (or
    /// what one got and nobody has taken yet) still needs it.
    fn into_fd(self) -> Result<SharedFd, Self>;
}

/// A listener's owner: quiescing cancels its retained accepts (see [`Acceptor`]).
impl FdOwner for Acceptor {
    fn new(fd: SharedFd) -> Acceptor {
        Acceptor::new(fd)
    }
    fn fd(&self) -> &SharedFd {
        Acceptor::fd(self)
    }
    fn quiesce(&self) -> usize {
        Acceptor::quiesce(self)
    }
    fn into_fd(self) -> Result<SharedFd, Acceptor> {
        Acceptor::into_fd(self)
    }
}

/// A stream's owner: quiescing disarms its receives (see [`Stream::disarm`]).
impl FdOwner for Stream {
    fn new(fd: SharedFd) -> Stream {
        Stream::new(fd)
    }
    fn fd(&self) -> &SharedFd {
        &self.fd
    }
    fn quiesce(&self) -> usize {
        self.disarm()
    }
    fn into_fd(self) -> Result<SharedFd, Stream> {
        Stream::into_fd(self)
    }
}

/// Implements, for a socket type whose only field `$field` is its [`FdOwner`], the four
/// methods `socket_conversions!` builds on: `from_shared`, `quiesce`, `shared` and
/// `into_shared`.
macro_rules! wraps_fd_owner {
    ($ty:ident, $field:ident) => {
        impl $ty {
            fn from_shared(fd: $crate::op::SharedFd) -> $ty {
                $ty {
                    $field: $crate::net::socket::FdOwner::new(fd),
                }
            }
            fn quiesce(&self) -> usize {
                $crate::net::socket::FdOwner::quiesce(&self.$field)
            }
            fn shared(&self) -> &$crate::op::SharedFd {
                $crate::net::socket::FdOwner::fd(&self.$field)
            }
            fn into_shared(self) -> Result<$crate::op::SharedFd, $ty> {
                $crate::net::socket::FdOwner::into_fd(self.$field).map_err(|$field| $ty { $field })
            }
        }
    };
}

pub(crate) use wraps_fd_owner;

/// Binds `fd` to `addr` and listens, with a backlog of 1024.
pub(crate) fn listen(fd: &SharedFd, addr: &RawAddr) -> io::Result<()> {
    platform::bind_listen(fd.raw(), addr.as_ptr(), addr.len)
}
