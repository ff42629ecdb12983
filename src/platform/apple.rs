//! Apple platforms: no `accept4`, no `SOCK_CLOEXEC`/`SOCK_NONBLOCK` and no `fdatasync`, so
//! descriptor flags are set with `fcntl` right after the call, SIGPIPE is turned off per
//! socket (`SO_NOSIGPIPE`), and both syncs use `F_FULLFSYNC`.
//!
//! Setting close-on-exec after the call leaves a window in which a `fork` + `exec` on
//! another thread inherits the descriptor; the standard library has the same window here.

use std::io;
use std::os::fd::RawFd;

use super::cvt;

/// Flags of every send: none; [`prepare`] sets `SO_NOSIGPIPE` on every socket instead.
pub(crate) const SEND_FLAGS: i32 = 0;

/// The option that lets listeners share a port. Darwin has no balancing variant: the
/// listeners share the port, but connections are not spread among them.
pub(crate) const SO_REUSEPORT: i32 = libc::SO_REUSEPORT;

/// `fcntl(fd, F_FULLFSYNC)` for both kinds of sync: plain `fsync` on Darwin does not ask
/// the drive to flush its cache, so only this makes the data durable (as `std` does).
pub(crate) fn fsync(fd: RawFd, _datasync: bool) -> io::Result<i32> {
    // SAFETY: F_FULLFSYNC takes no argument; a bad fd is reported as EBADF.
    cvt(unsafe { libc::fcntl(fd, libc::F_FULLFSYNC) })
}

/// Allocates `offset..offset + len` (mode 0 of [`fallocate`](super::fallocate), the only
/// one): Darwin has no `fallocate`, so `F_PREALLOCATE` reserves the blocks from the end of
/// the file up to the range's end, then `ftruncate` grows the file to it.
pub(crate) fn preallocate(fd: RawFd, offset: libc::off_t, len: libc::off_t) -> io::Result<i32> {
    if len <= 0 || offset < 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let end = offset
        .checked_add(len)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into st.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it initialised st.
    let size = unsafe { st.assume_init() }.st_size;
    if end <= size {
        return Ok(0);
    }
    let mut store = libc::fstore_t {
        fst_flags: libc::F_ALLOCATEALL,
        fst_posmode: libc::F_PEOFPOSMODE,
        fst_offset: 0,
        fst_length: end - size,
        fst_bytesalloc: 0,
    };
    // SAFETY: F_PREALLOCATE reads and updates the fstore_t it is given, which lives for
    // the whole call.
    cvt(unsafe { libc::fcntl(fd, libc::F_PREALLOCATE, &mut store as *mut libc::fstore_t) })?;
    // SAFETY: no pointers.
    cvt(unsafe { libc::ftruncate(fd, end) })
}

/// `accept(fd, addr, addrlen)`, then the new socket is made close-on-exec, non-blocking
/// and SIGPIPE-free; yields the new descriptor (closed again if that fails).
///
/// # Safety
///
/// `addr` must be valid for writes of `*addrlen` bytes and `addrlen` for reads and writes,
/// for the whole call.
pub(crate) unsafe fn accept(
    fd: RawFd,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
) -> io::Result<RawFd> {
    // SAFETY: addr and addrlen are valid per this function's contract.
    let new = cvt(unsafe { libc::accept(fd, addr, addrlen) })?;
    prepare_or_close(new)
}

/// A new close-on-exec, non-blocking, SIGPIPE-free socket of `domain` and `ty`.
pub(crate) fn socket(domain: i32, ty: i32) -> io::Result<RawFd> {
    // SAFETY: socket() takes no pointers.
    let fd = cvt(unsafe { libc::socket(domain, ty, 0) })?;
    prepare_or_close(fd)
}

/// A connected pair of close-on-exec, non-blocking, SIGPIPE-free sockets.
pub(crate) fn socketpair(domain: i32, ty: i32) -> io::Result<[RawFd; 2]> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    cvt(unsafe { libc::socketpair(domain, ty, 0, fds.as_mut_ptr()) })?;
    if let Err(e) = prepare(fds[0]).and_then(|()| prepare(fds[1])) {
        close(fds[0]);
        close(fds[1]);
        return Err(e);
    }
    Ok(fds)
}

/// [`prepare`]s a descriptor this module just created, closing it if that fails.
fn prepare_or_close(fd: RawFd) -> io::Result<RawFd> {
    match prepare(fd) {
        Ok(()) => Ok(fd),
        Err(e) => {
            close(fd);
            Err(e)
        }
    }
}

/// Sets FD_CLOEXEC, O_NONBLOCK and SO_NOSIGPIPE on a new socket.
fn prepare(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments only, on a descriptor this module owns.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: as above.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    let on: libc::c_int = 1;
    // SAFETY: passes a pointer to a live c_int and its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Closes a descriptor this module created and nobody else has seen.
fn close(fd: RawFd) {
    // SAFETY: fd is owned here and not used afterwards; the error has nowhere to go (the
    // caller reports the error that made it give up the descriptor).
    unsafe { libc::close(fd) };
}

/// The open flag of direct IO: Darwin has none; [`set_direct`] sets `F_NOCACHE` instead.
pub(crate) const O_DIRECT: i32 = 0;

/// Turns the page cache off for `fd` (`fcntl(F_NOCACHE, 1)`), Darwin's form of direct IO.
pub(crate) fn set_direct(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_NOCACHE takes an int argument; no pointers.
    cvt(unsafe { libc::fcntl(fd, libc::F_NOCACHE, 1) }).map(drop)
}

/// Whether `fd` was opened for direct IO: Darwin cannot tell (`F_NOCACHE` cannot be read
/// back), so `false`.
pub(crate) fn is_direct(_fd: RawFd) -> bool {
    false
}

/// The ioctl `bsd::sector_size` asks a disk device: `DKIOCGETBLOCKSIZE`
/// (`_IOR('d', 24, uint32_t)` in `<sys/disk.h>`, which the libc crate does not carry).
pub(super) const SECTOR_SIZE_IOCTL: libc::c_ulong = 0x4004_6418;

/// Renames with Linux's `RENAME_*` flags through `renameatx_np`: `RENAME_NOREPLACE` is
/// `RENAME_EXCL`, `RENAME_EXCHANGE` is `RENAME_SWAP`.
///
/// # Safety
///
/// Both paths must point to NUL-terminated strings for the whole call.
pub(crate) unsafe fn rename_flags(
    olddirfd: RawFd,
    oldpath: *const libc::c_char,
    newdirfd: RawFd,
    newpath: *const libc::c_char,
    flags: u32,
) -> io::Result<i32> {
    use super::fsabi::{RENAME_EXCHANGE, RENAME_NOREPLACE};
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut native = 0;
    if flags & RENAME_NOREPLACE != 0 {
        native |= libc::RENAME_EXCL;
    }
    if flags & RENAME_EXCHANGE != 0 {
        native |= libc::RENAME_SWAP;
    }
    // SAFETY: both paths are valid per this function's contract.
    cvt(unsafe { libc::renameatx_np(olddirfd, oldpath, newdirfd, newpath, native) })
}

/// Why rename flags cannot run here: never (`renameatx_np` has both).
pub(crate) fn unsupported_rename_flags(_flags: u32) -> Option<&'static str> {
    None
}

/// `sync_file_range` where there is none: flags 0 do nothing (as on Linux); any other
/// flags write the whole file back and wait with plain `fsync(2)` (not `F_FULLFSYNC`:
/// `sync_file_range` does not flush the drive's cache either), more than was asked.
pub(crate) fn sync_file_range(
    fd: RawFd,
    _offset: libc::off_t,
    _len: libc::off_t,
    flags: u32,
) -> io::Result<i32> {
    if flags == 0 {
        return Ok(0);
    }
    // SAFETY: no pointers; a bad descriptor is reported as EBADF.
    cvt(unsafe { libc::fsync(fd) })
}

/// `posix_fadvise`: Darwin has none; advice is a hint, so it is accepted and ignored.
pub(crate) fn fadvise(
    _fd: RawFd,
    _offset: libc::off_t,
    _len: libc::off_t,
    _advice: i32,
) -> io::Result<i32> {
    Ok(0)
}

/// Darwin's `sendfile(file, sock, offset, &len, NULL, 0)`: up to `len` bytes of `file` from
/// `offset` to the socket. On a non-blocking socket it fails with EAGAIN after sending
/// part: that part is the result (only EAGAIN with nothing sent is "not ready"). `len` 0
/// would mean "to the end of the file": 0 is returned without a call.
pub(crate) fn sendfile(sock: RawFd, file: RawFd, offset: libc::off_t, len: usize) -> isize {
    if len == 0 {
        return 0;
    }
    let mut sent = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
    // SAFETY: no header/trailer vector; `sent` is a live local the call reads and writes.
    let r = unsafe { libc::sendfile(file, sock, offset, &mut sent, std::ptr::null_mut(), 0) };
    if r == 0 || (sent > 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)) {
        return sent as isize;
    }
    -1
}
