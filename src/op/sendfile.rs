//! File-to-socket operations: `splice` (file to pipe, pipe to socket), `sendfile`, and the
//! readiness wait a splice needs on io_uring. The loops that combine them are
//! `net::sendfile`'s.

use std::io;

#[cfg(target_os = "linux")]
use crate::driver::desc::Interest;
use crate::driver::op::Operation;
use crate::driver::{Completion, OpDesc};
use crate::op::SharedFd;

#[cfg(target_os = "linux")]
/// `splice` of up to `len` bytes from `from` (a file read at `offset`, or a pipe when
/// `offset` is `None`) into `to` (a pipe, or a socket); yields the bytes moved.
pub(crate) struct Splice {
    from: SharedFd,
    offset: Option<u64>,
    to: SharedFd,
    len: u32,
}

#[cfg(target_os = "linux")]
impl Splice {
    /// Up to `len` bytes of `file` from `offset` into the pipe's write end.
    pub(crate) fn file_to_pipe(file: &SharedFd, offset: u64, pipe: &SharedFd, len: u32) -> Splice {
        Splice {
            from: file.clone(),
            offset: Some(offset),
            to: pipe.clone(),
            len,
        }
    }

    /// Up to `len` bytes from the pipe's read end to the socket.
    pub(crate) fn pipe_to_socket(pipe: &SharedFd, sock: &SharedFd, len: u32) -> Splice {
        Splice {
            from: pipe.clone(),
            offset: None,
            to: sock.clone(),
            len,
        }
    }
}

#[cfg(target_os = "linux")]
impl Operation for Splice {
    type Output = io::Result<usize>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Splice {
            fd_in: self.from.fd_ref(),
            off_in: self.offset,
            fd_out: self.to.fd_ref(),
            len: self.len,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        let n = c.result()?;
        crate::op::checked_len(n, self.len as usize)
    }
}

/// `sendfile` of up to `len` bytes of `file` from `offset` to `sock`; yields the bytes
/// sent (0 at or past the end of the file).
pub(crate) struct SendFile {
    sock: SharedFd,
    file: SharedFd,
    offset: u64,
    len: u32,
}

impl SendFile {
    pub(crate) fn new(sock: &SharedFd, file: &SharedFd, offset: u64, len: u32) -> SendFile {
        SendFile {
            sock: sock.clone(),
            file: file.clone(),
            offset,
            len,
        }
    }
}

impl Operation for SendFile {
    type Output = io::Result<usize>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::SendFile {
            sock: self.sock.fd_ref(),
            file: self.file.fd_ref(),
            offset: self.offset,
            len: self.len,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        let n = c.result()?;
        crate::op::checked_len(n, self.len as usize)
    }
}

/// Waits until a socket is writable.
#[cfg(target_os = "linux")]
pub(crate) struct PollWritable {
    fd: SharedFd,
}

#[cfg(target_os = "linux")]
impl PollWritable {
    pub(crate) fn new(fd: &SharedFd) -> PollWritable {
        PollWritable { fd: fd.clone() }
    }
}

#[cfg(target_os = "linux")]
impl Operation for PollWritable {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Poll {
            fd: self.fd.fd_ref(),
            interest: Interest::Write,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}
