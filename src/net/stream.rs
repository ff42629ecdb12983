//! What TCP and Unix streams share: socket creation, connect, read/write/shutdown, and
//! borrowing the descriptor as a std type for synchronous queries.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};

use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::driver::op::Op;
use crate::op::net::{Connect, RawAddr, Shutdown};
use crate::op::rw::{Recv, Send};
use crate::op::{self, SharedFd};
use crate::platform;

/// Creates a close-on-exec, non-blocking socket. Non-blocking mode is what every backend
/// needs (io_uring arms its own poll on EAGAIN; a readiness backend retries on it); for the
/// caller it changes nothing: every operation still completes only when done.
pub(crate) fn socket(domain: i32, ty: i32) -> io::Result<SharedFd> {
    platform::socket(domain, ty).map(SharedFd::new)
}

/// Runs `f` on a std view of `fd` without taking ownership of it.
pub(crate) fn with_std<S: FromRawFd, R>(fd: RawFd, f: impl FnOnce(&S) -> R) -> R {
    // SAFETY: fd is open for the duration of the call (the caller holds its owner), and
    // ManuallyDrop keeps the temporary std value from closing it.
    let s = ManuallyDrop::new(unsafe { S::from_raw_fd(fd) });
    f(&s)
}

/// Connects a new socket of `domain`/`ty` to `addr` through the runtime.
pub(crate) async fn connect(domain: i32, ty: i32, addr: RawAddr) -> io::Result<SharedFd> {
    let fd = socket(domain, ty)?;
    Op::new(Connect::new(&fd, addr)).await?;
    Ok(fd)
}

/// A connected stream socket.
pub(crate) struct Stream {
    pub(crate) fd: SharedFd,
}

impl Stream {
    pub(crate) async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        Op::new(Recv::new(&self.fd, buf, true)).await
    }

    pub(crate) async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        Op::new(Send::new(&self.fd, buf)).await
    }

    pub(crate) async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        op::write_all(buf, |slice, _| self.write(slice)).await
    }

    pub(crate) async fn read_exact<B: IoBufMut>(&self, buf: B) -> BufResult<(), B> {
        op::read_exact(buf, |slice, _| self.read(slice)).await
    }

    pub(crate) async fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        Op::new(Shutdown::new(&self.fd, how)).await
    }
}

/// Sets O_NONBLOCK on a descriptor adopted from elsewhere.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Implements the conversions every socket type shares, given its `fd` field and std twin,
/// and registration with the runtime's io_uring (as for `File`).
macro_rules! socket_conversions {
    ($ty:ident, $std:ty) => {
        impl $ty {
            /// Registers the socket with the current runtime's io_uring, exactly as
            /// [`File::register`](crate::fs::File::register) does for a file: its
            /// operations on this runtime then name a slot of the ring's file table
            /// instead of the descriptor. A no-op on the fallback backend; other runtimes
            /// use the descriptor; the slot is released when the socket is closed.
            ///
            /// # Errors
            ///
            /// As [`File::register`](crate::fs::File::register).
            ///
            /// # Panics
            ///
            /// Outside a runtime.
            pub fn register(&self) -> std::io::Result<()> {
                self.shared().register(concat!("this ", stringify!($ty)))
            }

            /// Releases the socket's registered slot now (see
            /// [`File::unregister`](crate::fs::File::unregister)).
            ///
            /// # Errors
            ///
            /// `ResourceBusy` while an operation still uses the socket.
            pub fn unregister(&self) -> std::io::Result<()> {
                self.shared()
                    .unregister(concat!(stringify!($ty), "::unregister"))
            }

            /// Whether operations submitted now, on this thread's runtime, use a
            /// registered slot (see [`File::is_registered`](crate::fs::File::is_registered)).
            pub fn is_registered(&self) -> bool {
                self.shared().is_registered()
            }

            /// Adopts a standard library socket (switching it to non-blocking mode).
            ///
            /// # Errors
            ///
            /// If the descriptor's flags cannot be changed.
            pub fn from_std(socket: $std) -> std::io::Result<$ty> {
                use std::os::fd::IntoRawFd;
                let fd = socket.into_raw_fd();
                let shared = $crate::op::SharedFd::new(fd);
                $crate::net::stream::set_nonblocking(fd)?;
                Ok(Self::from_shared(shared))
            }

            /// Converts into the standard library socket (left in non-blocking mode).
            ///
            /// # Errors
            ///
            /// Gives `self` back while an operation (for example one being cancelled) still
            /// uses the descriptor.
            pub fn into_std(self) -> Result<$std, $ty> {
                use std::os::fd::FromRawFd;
                match self.into_shared().into_raw() {
                    // SAFETY: into_raw gave us sole ownership of the descriptor.
                    Ok(fd) => Ok(unsafe { <$std>::from_raw_fd(fd) }),
                    Err(fd) => Err(Self::from_shared(fd)),
                }
            }
        }

        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.shared().raw()
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                // SAFETY: the descriptor stays open while `self` is borrowed.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(self.shared().raw()) }
            }
        }

        impl std::os::fd::FromRawFd for $ty {
            /// # Safety
            ///
            /// `fd` must be an open socket of the right kind that the caller owns and gives
            /// up; it should be in non-blocking mode.
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> $ty {
                Self::from_shared($crate::op::SharedFd::new(fd))
            }
        }

        impl std::os::fd::IntoRawFd for $ty {
            /// # Panics
            ///
            /// If an operation still uses the descriptor; finish or drop it first.
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                match self.into_shared().into_raw() {
                    Ok(fd) => fd,
                    Err(_) => panic!(concat!(
                        stringify!($ty),
                        "::into_raw_fd: an operation still uses the socket; let it finish first"
                    )),
                }
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("fd", &self.shared().raw())
                    .finish()
            }
        }
    };
}

pub(crate) use socket_conversions;
