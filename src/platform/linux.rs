//! Linux: `statx`, `renameat2`, `accept4`, and socket flags set atomically at creation.

use std::io;
use std::os::fd::RawFd;

use super::{cvt, FileStat, Timestamp};

/// The buffer a stat operation fills: `struct statx`, which io_uring's STATX opcode and
/// `statx(2)` both write.
pub(crate) type Stat = libc::statx;

/// Stat flag: describe `dirfd` itself; the path is empty.
pub(crate) const STAT_EMPTY_PATH: i32 = libc::AT_EMPTY_PATH;

/// What every stat asks for: the basic fields and the birth time.
pub(crate) const STAT_MASK: u32 = libc::STATX_BASIC_STATS | libc::STATX_BTIME;

/// The option that lets listeners share a port, the kernel spreading connections among
/// them.
pub(crate) const SO_REUSEPORT: i32 = libc::SO_REUSEPORT;

/// `statx(dirfd, path, flags, mask, buf)`.
///
/// # Safety
///
/// `path` must point to a NUL-terminated string and `buf` must be valid for writes of one
/// [`Stat`], for the whole call.
pub(crate) unsafe fn stat(
    dirfd: RawFd,
    path: *const libc::c_char,
    flags: i32,
    mask: u32,
    buf: *mut Stat,
) -> io::Result<i32> {
    // SAFETY: path and buf are valid per this function's contract.
    cvt(unsafe { libc::statx(dirfd, path, flags, mask, buf) })
}

/// The fields of a filled [`Stat`]; times the kernel did not report (their bit missing
/// from `stx_mask`) are `None`.
pub(crate) fn file_stat(stx: &Stat) -> FileStat {
    let time = |bit: u32, ts: libc::statx_timestamp| {
        (stx.stx_mask & bit != 0).then_some(Timestamp {
            sec: ts.tv_sec,
            nsec: ts.tv_nsec,
        })
    };
    let mode = u32::from(stx.stx_mode);
    FileStat {
        size: stx.stx_size,
        kind: mode & libc::S_IFMT,
        perm: mode & 0o7777,
        ino: stx.stx_ino,
        nlink: u64::from(stx.stx_nlink),
        uid: stx.stx_uid,
        gid: stx.stx_gid,
        blksize: stx.stx_blksize,
        blocks: stx.stx_blocks,
        modified: time(libc::STATX_MTIME, stx.stx_mtime),
        accessed: time(libc::STATX_ATIME, stx.stx_atime),
        created: time(libc::STATX_BTIME, stx.stx_btime),
    }
}

/// `fallocate(fd, mode, offset, len)`.
pub(crate) fn fallocate(
    fd: RawFd,
    mode: i32,
    offset: libc::off_t,
    len: libc::off_t,
) -> io::Result<i32> {
    // SAFETY: no pointers; a bad descriptor or range is reported as an errno.
    cvt(unsafe { libc::fallocate(fd, mode, offset, len) })
}

/// `renameat2(olddirfd, oldpath, newdirfd, newpath, flags)`.
///
/// # Safety
///
/// Both paths must point to NUL-terminated strings for the whole call.
pub(crate) unsafe fn rename(
    olddirfd: RawFd,
    oldpath: *const libc::c_char,
    newdirfd: RawFd,
    newpath: *const libc::c_char,
    flags: u32,
) -> io::Result<i32> {
    // SAFETY: both paths are valid per this function's contract.
    cvt(unsafe { libc::renameat2(olddirfd, oldpath, newdirfd, newpath, flags) })
}

/// Linux socket addresses carry no length field: the length travels beside them.
pub(crate) fn set_sockaddr_len(_storage: &mut libc::sockaddr_storage, _len: libc::socklen_t) {}

/// A positional read that only succeeds if it needs no IO wait (the data is in the page
/// cache): `preadv2(..., RWF_NOWAIT)`. `None` when it would block, or when the file (a
/// pipe, a file system without RWF_NOWAIT) cannot answer that way.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes.
pub(crate) unsafe fn read_nowait(fd: RawFd, buf: *mut u8, len: u32, offset: u64) -> Option<i32> {
    let off = libc::off_t::try_from(offset).ok()?;
    let iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len as usize,
    };
    // SAFETY: one iovec over the caller's buffer, valid for `len` bytes.
    let n = unsafe { libc::preadv2(fd, &iov, 1, off, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Some(n as i32);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ESPIPE | libc::ENOSYS | libc::EINVAL)
        | None => None,
        Some(e) => Some(-e),
    }
}

/// Whether a stream receive on `fd` that returns fewer bytes than asked proves nothing more
/// is queued, so a readiness backend can wait for the next edge instead of trying again.
/// True for TCP (`SO_PROTOCOL`), whose receive stops short only at the urgent mark, which
/// epoll reports as `EPOLLPRI` (the caller stops trusting short reads once it sees one).
/// Not for Unix streams: a receive stops after a message that carried descriptors or
/// credentials with more queued behind it, and nothing tells the poller.
pub(crate) fn short_read_drains(fd: RawFd) -> bool {
    super::socket_option(fd, libc::SO_PROTOCOL).is_ok_and(|p| p == libc::IPPROTO_TCP)
}
