//! File-system operations: open, close, fsync, stat, unlink, rename, mkdir.

use crate::platform::c;
use std::ffi::CString;
use std::io;
use std::path::Path;

use crate::driver::op::Operation;
use crate::driver::{Completion, OpDesc};
use crate::op::SharedFd;
use crate::platform::{self, FileStat};

/// Converts a path for the kernel, refusing interior NUL bytes with a clear error.
pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path contains an interior NUL byte: {path:?}"),
        )
    })
}

/// `openat(AT_FDCWD, path, flags, mode)`; yields an owned descriptor.
pub(crate) struct Open {
    path: CString,
    flags: i32,
    mode: u32,
    /// Whether this attempt adds `O_NONBLOCK` (see [`Open::new`]).
    nonblocking: bool,
}

impl Open {
    /// An open that never waits for another process: it adds `O_NONBLOCK` (cleared on the
    /// new descriptor again unless `flags` has it), so opening a FIFO does not wait for its
    /// other end on any backend. (io_uring adds O_NONBLOCK to its own first attempt, but not
    /// when it retries in a worker, and the fallback's `open(2)` runs on a pool thread no
    /// cancel reaches; without this the same open waited or not by backend and path cache.)
    /// An attempt that fails with EAGAIN for that reason (a lease another process holds)
    /// is retried by the caller with [`Open::waiting`].
    pub(crate) fn new(path: CString, flags: i32, mode: u32) -> Open {
        Open {
            path,
            flags,
            mode,
            nonblocking: true,
        }
    }

    /// The same open without the added `O_NONBLOCK`: it waits as `open(2)` does (for a
    /// lease to be broken, bounded by the kernel's lease-break time).
    pub(crate) fn waiting(path: CString, flags: i32, mode: u32) -> Open {
        Open {
            nonblocking: false,
            ..Open::new(path, flags, mode)
        }
    }

    /// Whether `e`, from an attempt of [`Open::new`], means "would have waited": retry
    /// with [`Open::waiting`]. Not when the caller asked for `O_NONBLOCK` itself.
    pub(crate) fn would_wait(e: &io::Error, flags: i32) -> bool {
        flags & c::O_NONBLOCK == 0 && e.raw_os_error() == Some(c::EAGAIN)
    }

    fn added_nonblock(&self) -> bool {
        self.nonblocking && self.flags & c::O_NONBLOCK == 0
    }
}

impl Operation for Open {
    type Output = io::Result<SharedFd>;

    fn describe(&mut self) -> OpDesc {
        let nonblock = if self.nonblocking { c::O_NONBLOCK } else { 0 };
        OpDesc::OpenAt {
            dirfd: c::AT_FDCWD,
            path: self.path.as_ptr(),
            flags: self.flags | c::O_CLOEXEC | nonblock,
            mode: self.mode,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        // An orphaned open drops this SharedFd at once, closing the descriptor.
        let fd = SharedFd::new(c.result()? as i32);
        if self.added_nonblock() {
            // The descriptor's reads and writes block as the caller expects (coring's own IO
            // never depends on the flag); an O_PATH descriptor ignored it and is left alone.
            platform::set_nonblocking(fd.raw(), false)?;
        }
        Ok(fd)
    }
}

/// `close(fd)` of a descriptor nobody else holds any more.
pub(crate) struct Close {
    fd: i32,
}

impl Close {
    pub(crate) fn new(fd: i32) -> Close {
        Close { fd }
    }
}

impl Operation for Close {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Close { fd: self.fd }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}

/// `fsync` / `fdatasync`.
pub(crate) struct Fsync {
    fd: SharedFd,
    datasync: bool,
}

impl Fsync {
    pub(crate) fn new(fd: &SharedFd, datasync: bool) -> Fsync {
        Fsync {
            fd: fd.clone(),
            datasync,
        }
    }
}

impl Operation for Fsync {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Fsync {
            fd: self.fd.fd_ref(),
            datasync: self.datasync,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}

/// `fallocate(fd, mode, offset, len)`: space for a range of the file.
pub(crate) struct Fallocate {
    fd: SharedFd,
    mode: i32,
    offset: u64,
    len: u64,
}

impl Fallocate {
    pub(crate) fn new(fd: &SharedFd, mode: i32, offset: u64, len: u64) -> Fallocate {
        Fallocate {
            fd: fd.clone(),
            mode,
            offset,
            len,
        }
    }
}

impl Operation for Fallocate {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Fallocate {
            fd: self.fd.fd_ref(),
            mode: self.mode,
            offset: self.offset,
            len: self.len,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}

/// `statx` (Linux) or `fstatat`/`fstat` (elsewhere) of an open descriptor (empty path) or
/// of a path.
pub(crate) struct Statx {
    fd: Option<SharedFd>,
    path: CString,
    flags: i32,
    buf: Box<platform::Stat>,
}

impl Statx {
    /// Of the open file itself.
    pub(crate) fn fd(fd: &SharedFd) -> Statx {
        Statx {
            fd: Some(fd.clone()),
            path: CString::default(),
            flags: platform::STAT_EMPTY_PATH,
            buf: Box::new(platform::empty_stat()),
        }
    }

    /// Of a path; `follow` chooses whether a final symlink is followed.
    pub(crate) fn path(path: CString, follow: bool) -> Statx {
        Statx {
            fd: None,
            path,
            flags: if follow { 0 } else { c::AT_SYMLINK_NOFOLLOW },
            buf: Box::new(platform::empty_stat()),
        }
    }
}

impl Operation for Statx {
    type Output = io::Result<FileStat>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Statx {
            dirfd: self.fd.as_ref().map_or(c::AT_FDCWD, SharedFd::raw),
            path: self.path.as_ptr(),
            flags: self.flags,
            mask: platform::STAT_MASK,
            buf: &mut *self.buf,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(|_| platform::file_stat(&self.buf))
    }
}

/// `unlinkat(AT_FDCWD, path, flags)`: removes a file, or a directory with AT_REMOVEDIR.
pub(crate) struct Unlink {
    path: CString,
    flags: i32,
}

impl Unlink {
    pub(crate) fn new(path: CString, dir: bool) -> Unlink {
        Unlink {
            path,
            flags: if dir { c::AT_REMOVEDIR } else { 0 },
        }
    }
}

impl Operation for Unlink {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::UnlinkAt {
            dirfd: c::AT_FDCWD,
            path: self.path.as_ptr(),
            flags: self.flags,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, 0)` (`renameat` where there is no renameat2).
pub(crate) struct Rename {
    from: CString,
    to: CString,
}

impl Rename {
    pub(crate) fn new(from: CString, to: CString) -> Rename {
        Rename { from, to }
    }
}

impl Operation for Rename {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::RenameAt {
            olddirfd: c::AT_FDCWD,
            oldpath: self.from.as_ptr(),
            newdirfd: c::AT_FDCWD,
            newpath: self.to.as_ptr(),
            flags: 0,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}

/// `mkdirat(AT_FDCWD, path, mode)`.
pub(crate) struct Mkdir {
    path: CString,
    mode: u32,
}

impl Mkdir {
    pub(crate) fn new(path: CString, mode: u32) -> Mkdir {
        Mkdir { path, mode }
    }
}

impl Operation for Mkdir {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::MkdirAt {
            dirfd: c::AT_FDCWD,
            path: self.path.as_ptr(),
            mode: self.mode,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}
