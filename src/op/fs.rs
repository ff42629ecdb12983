//! File-system operations: open (`openat`, `openat2`), close, fsync, fallocate, ftruncate,
//! sync_file_range, fadvise, stat, unlink, rename, mkdir, symlink, link, readlink, and
//! reading a directory.

use crate::platform::c;
use std::ffi::CString;
use std::io;
use std::path::Path;

use crate::driver::op::{Op, Operation};
use crate::driver::{Completion, OpDesc};
use crate::op::{checked_len, SharedFd};
use crate::platform::dir::DirCursor;
use crate::platform::{self, FileStat, OpenHow};

/// Converts a path for the kernel, refusing interior NUL bytes with a clear error.
pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path contains an interior NUL byte: {path:?}"),
        )
    })
}

/// `openat(dirfd, path, flags, mode)` (`dirfd`: the current directory unless [`Open::at`]
/// names one), or `openat2` with [`Open::resolve`]; yields an owned descriptor.
pub(crate) struct Open {
    /// The directory a relative path starts from; `None`: the current directory. Held so
    /// that it stays open while the kernel resolves the path.
    dir: Option<SharedFd>,
    path: CString,
    flags: i32,
    mode: u32,
    /// Whether this attempt adds `O_NONBLOCK` (see [`Open::new`]).
    nonblocking: bool,
    /// `openat2`'s arguments, which the kernel reads from memory (hence boxed: its address
    /// must not change while the open is in flight); `None`: `openat`.
    how: Option<Box<OpenHow>>,
}

impl Open {
    /// An open that never waits for another process: it adds `O_NONBLOCK` (cleared on the
    /// new descriptor again unless `flags` has it), so opening a FIFO does not wait for its
    /// other end on any backend. (io_uring adds O_NONBLOCK to its own first attempt, but not
    /// when it retries in a worker, and the fallback's `open(2)` runs on a pool thread no
    /// cancel reaches; without this the same open waited or not by backend and path cache.)
    /// An attempt that fails with EAGAIN for that reason (a lease another process holds)
    /// is retried by the caller with [`Open::waiting`] ([`open`] does both).
    pub(crate) fn new(path: CString, flags: i32, mode: u32) -> Open {
        Open {
            dir: None,
            path,
            flags,
            mode,
            nonblocking: true,
            how: None,
        }
    }

    /// The same open without the added `O_NONBLOCK`: it waits as `open(2)` does (for a
    /// lease to be broken, bounded by the kernel's lease-break time).
    pub(crate) fn waiting(mut self) -> Open {
        self.nonblocking = false;
        self
    }

    /// Resolves a relative path from the directory `dir` instead of the current one.
    pub(crate) fn at(mut self, dir: &SharedFd) -> Open {
        self.dir = Some(dir.clone());
        self
    }

    /// Opens with `openat2` and these `RESOLVE_*` flags (see [`platform::fsabi`]).
    pub(crate) fn resolve(mut self, resolve: u64) -> Open {
        self.how = Some(Box::new(OpenHow {
            resolve,
            ..OpenHow::default()
        }));
        self
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
        let flags = self.flags | c::O_CLOEXEC | nonblock;
        let dirfd = self.dir.as_ref().map_or(c::AT_FDCWD, SharedFd::raw);
        match &mut self.how {
            None => OpDesc::OpenAt {
                dirfd,
                path: self.path.as_ptr(),
                flags,
                mode: self.mode,
            },
            Some(how) => {
                // openat2 refuses a mode for an open that creates nothing, and unknown
                // flag bits (the i32 is widened without its sign: no flag sets bit 31).
                how.flags = u64::from(flags as u32);
                how.mode = if platform::open_creates(flags) {
                    u64::from(self.mode)
                } else {
                    0
                };
                OpDesc::OpenAt2 {
                    dirfd,
                    path: self.path.as_ptr(),
                    how: &**how,
                }
            }
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

/// Runs the open `make` builds, and if it fails because it would have waited (see
/// [`Open::new`]), the same open again, [`waiting`](Open::waiting).
pub(crate) async fn open(make: impl Fn() -> Open) -> io::Result<SharedFd> {
    let first = make();
    let flags = first.flags;
    match Op::new(first).await {
        Err(e) if Open::would_wait(&e, flags) => Op::new(make().waiting()).await,
        r => r,
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

/// `ftruncate(fd, len)`: sets the file's size.
pub(crate) struct Ftruncate {
    fd: SharedFd,
    len: u64,
}

impl Ftruncate {
    pub(crate) fn new(fd: &SharedFd, len: u64) -> Ftruncate {
        Ftruncate {
            fd: fd.clone(),
            len,
        }
    }
}

impl Operation for Ftruncate {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Ftruncate {
            fd: self.fd.fd_ref(),
            len: self.len,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}

/// `sync_file_range(fd, offset, len, flags)`: writeback of a range (see
/// [`platform::sync_file_range`] where there is none).
pub(crate) struct SyncFileRange {
    fd: SharedFd,
    offset: u64,
    len: u64,
    flags: u32,
}

impl SyncFileRange {
    pub(crate) fn new(fd: &SharedFd, offset: u64, len: u64, flags: u32) -> SyncFileRange {
        SyncFileRange {
            fd: fd.clone(),
            offset,
            len,
            flags,
        }
    }
}

impl Operation for SyncFileRange {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::SyncFileRange {
            fd: self.fd.fd_ref(),
            offset: self.offset,
            len: self.len,
            flags: self.flags,
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}

/// `posix_fadvise(fd, offset, len, advice)`: an access-pattern hint.
pub(crate) struct Fadvise {
    fd: SharedFd,
    offset: u64,
    len: u64,
    advice: i32,
}

impl Fadvise {
    pub(crate) fn new(fd: &SharedFd, offset: u64, len: u64, advice: i32) -> Fadvise {
        Fadvise {
            fd: fd.clone(),
            offset,
            len,
            advice,
        }
    }
}

impl Operation for Fadvise {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::Fadvise {
            fd: self.fd.fd_ref(),
            offset: self.offset,
            len: self.len,
            advice: self.advice,
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

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)` (`renameat` where there is no
/// renameat2 and `flags` is 0).
pub(crate) struct Rename {
    from: CString,
    to: CString,
    /// Linux's `RENAME_*` flags.
    flags: u32,
}

impl Rename {
    pub(crate) fn new(from: CString, to: CString, flags: u32) -> Rename {
        Rename { from, to, flags }
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
            flags: self.flags,
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

/// `symlinkat(target, AT_FDCWD, link)`: creates `link`, a symbolic link to `target`.
pub(crate) struct Symlink {
    target: CString,
    link: CString,
}

impl Symlink {
    pub(crate) fn new(target: CString, link: CString) -> Symlink {
        Symlink { target, link }
    }
}

impl Operation for Symlink {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::SymlinkAt {
            target: self.target.as_ptr(),
            newdirfd: c::AT_FDCWD,
            linkpath: self.link.as_ptr(),
        }
    }

    fn complete(self, c: Completion) -> Self::Output {
        c.result().map(drop)
    }
}

/// `linkat(AT_FDCWD, from, AT_FDCWD, to, 0)`: a new name `to` for the file `from` (a
/// final symlink in `from` is not followed, as `link(2)` on Linux).
pub(crate) struct Link {
    from: CString,
    to: CString,
}

impl Link {
    pub(crate) fn new(from: CString, to: CString) -> Link {
        Link { from, to }
    }
}

impl Operation for Link {
    type Output = io::Result<()>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::LinkAt {
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

/// `readlinkat(AT_FDCWD, path, buf, capacity)`: a symbolic link's content, into a buffer
/// the caller sized; yields the buffer with its length set to the bytes read. A result
/// that fills the whole capacity may have been cut short: the caller tries again with a
/// larger buffer.
pub(crate) struct ReadLink {
    path: CString,
    buf: Vec<u8>,
}

impl ReadLink {
    pub(crate) fn new(path: CString, capacity: usize) -> ReadLink {
        ReadLink {
            path,
            buf: Vec::with_capacity(capacity),
        }
    }
}

impl Operation for ReadLink {
    type Output = io::Result<Vec<u8>>;

    fn describe(&mut self) -> OpDesc {
        OpDesc::ReadLinkAt {
            dirfd: c::AT_FDCWD,
            path: self.path.as_ptr(),
            buf: self.buf.as_mut_ptr(),
            len: u32::try_from(self.buf.capacity()).unwrap_or(u32::MAX),
        }
    }

    fn complete(mut self, c: Completion) -> Self::Output {
        let n = checked_len(c.result()?, self.buf.capacity())?;
        // SAFETY: the kernel wrote n bytes into the buffer, n <= capacity (checked).
        unsafe { self.buf.set_len(n) };
        Ok(self.buf)
    }
}

/// The next batch of a directory's entries, read on the blocking pool through the cursor
/// it owns meanwhile; yields the cursor back, with the batch (or the error) in it.
pub(crate) struct ReadDirBatch {
    cursor: Box<DirCursor>,
    max: u32,
}

impl ReadDirBatch {
    pub(crate) fn new(cursor: Box<DirCursor>, max: u32) -> ReadDirBatch {
        ReadDirBatch { cursor, max }
    }
}

impl Operation for ReadDirBatch {
    /// How many entries the batch has (0 at the end), and the cursor.
    type Output = (io::Result<usize>, Box<DirCursor>);

    fn describe(&mut self) -> OpDesc {
        OpDesc::ReadDir {
            dir: &mut *self.cursor,
            max: self.max,
        }
    }

    fn complete(mut self, c: Completion) -> Self::Output {
        let res = match c.result() {
            // The pool thread filled at most `max` entries.
            Ok(_) => Ok(self.cursor.entries.len()),
            // The whole error where the pool thread kept it; else the completion's (a
            // cancelled batch never ran).
            Err(e) => Err(self.cursor.error.take().unwrap_or(e)),
        };
        (res, self.cursor)
    }
}
