//! What FreeBSD and the Apple platforms share: `struct stat` from `fstatat`/`fstat`,
//! `renameat` (flags through each platform's own call), `fallocate` of mode 0 only, no
//! `openat2`, and socket addresses with a length byte.

use std::io;
use std::os::fd::RawFd;

use super::{cvt, preallocate, rename_flags, FileStat, Timestamp, SECTOR_SIZE_IOCTL};
use crate::fs::DioAlignment;

/// The buffer a stat operation fills.
pub(crate) type Stat = libc::stat;

/// Stat flag: describe `dirfd` itself (the path is empty), served by `fstat(2)`.
///
/// Not a kernel flag: a bit outside every `AT_*` flag of FreeBSD and Darwin, consumed by
/// [`stat`] and never passed to the kernel. (FreeBSD 13 and later know `AT_EMPTY_PATH`,
/// Darwin does not; `fstat` works on both.)
pub(crate) const STAT_EMPTY_PATH: i32 = 1 << 30;

/// statx's field mask; `fstatat` has none and fills every field.
pub(crate) const STAT_MASK: u32 = 0;

/// `fstat(dirfd, buf)` when `flags` has [`STAT_EMPTY_PATH`], else
/// `fstatat(dirfd, path, flags, buf)`; `mask` is ignored (see [`STAT_MASK`]).
///
/// # Safety
///
/// `path` must point to a NUL-terminated string and `buf` must be valid for writes of one
/// [`Stat`], for the whole call.
pub(crate) unsafe fn stat(
    dirfd: RawFd,
    path: *const libc::c_char,
    flags: i32,
    _mask: u32,
    buf: *mut Stat,
) -> io::Result<i32> {
    if flags & STAT_EMPTY_PATH != 0 {
        // SAFETY: buf is valid for writes of one Stat per this function's contract.
        cvt(unsafe { libc::fstat(dirfd, buf) })
    } else {
        // SAFETY: path and buf are valid per this function's contract.
        cvt(unsafe { libc::fstatat(dirfd, path, buf, flags) })
    }
}

/// The fields of a filled [`Stat`]. The birth time is `None` where the file system has
/// none (FreeBSD then reports -1 seconds).
pub(crate) fn file_stat(st: &Stat) -> FileStat {
    let time = |sec: libc::time_t, nsec: libc::c_long| Timestamp {
        sec,
        nsec: u32::try_from(nsec).unwrap_or(0),
    };
    let created = time(st.st_birthtime, st.st_birthtime_nsec);
    FileStat {
        size: u64::try_from(st.st_size).unwrap_or(0),
        kind: st.st_mode & libc::S_IFMT,
        perm: u32::from(st.st_mode & 0o7777),
        ino: st.st_ino,
        // nlink_t is u16 on Darwin and u64 on FreeBSD.
        #[allow(clippy::useless_conversion)]
        nlink: u64::from(st.st_nlink),
        uid: st.st_uid,
        gid: st.st_gid,
        blksize: u32::try_from(st.st_blksize).unwrap_or(0),
        blocks: u64::try_from(st.st_blocks).unwrap_or(0),
        modified: Some(time(st.st_mtime, st.st_mtime_nsec)),
        accessed: Some(time(st.st_atime, st.st_atime_nsec)),
        created: (st.st_birthtime != -1).then_some(created),
    }
}

/// `fallocate(fd, mode, offset, len)` for mode 0 (allocate the range, growing the file if
/// it ends past it), the only mode these kernels have, through [`preallocate`]; any other
/// mode is `EOPNOTSUPP`.
pub(crate) fn fallocate(
    fd: RawFd,
    mode: i32,
    offset: libc::off_t,
    len: libc::off_t,
) -> io::Result<i32> {
    if mode != 0 {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    preallocate(fd, offset, len)
}

/// Why a `fallocate` mode cannot run here: any but mode 0 (these kernels have no
/// `fallocate` modes).
pub(crate) fn unsupported_allocate_mode(mode: i32) -> Option<&'static str> {
    (mode != 0).then_some(
        "this platform has no fallocate modes: only AllocateMode::Extend (space for the range, \
         growing the file) is supported",
    )
}

/// `renameat(olddirfd, oldpath, newdirfd, newpath)`, or with `flags` (Linux's
/// `RENAME_*`) the platform's own call ([`rename_flags`]).
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
    if flags != 0 {
        // SAFETY: forwarded from the caller.
        return unsafe { rename_flags(olddirfd, oldpath, newdirfd, newpath, flags) };
    }
    // SAFETY: both paths are valid per this function's contract.
    cvt(unsafe { libc::renameat(olddirfd, oldpath, newdirfd, newpath) })
}

/// Open flags of one directory on the way when a path is walked component by component
/// (`open_beneath`): a directory, not followed if it is a link, opened for reading (there
/// is no `O_PATH`, so the directory must be readable).
pub(crate) const OPEN_DIR_STEP: i32 = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// Whether an open with `flags` may create a file (`O_CREAT`).
pub(crate) fn open_creates(flags: i32) -> bool {
    flags & libc::O_CREAT != 0
}

/// `openat2`: none on these kernels (ENOSYS), so opening beneath a directory walks the
/// path one component at a time (`fs::OpenOptions::open_beneath`).
///
/// # Safety
///
/// No requirement: nothing is read.
pub(crate) unsafe fn openat2(
    _dirfd: RawFd,
    _path: *const libc::c_char,
    _how: *const super::OpenHow,
) -> io::Result<i32> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Sets the address's length byte (`sa_len`), which BSD socket addresses carry.
pub(crate) fn set_sockaddr_len(storage: &mut libc::sockaddr_storage, len: libc::socklen_t) {
    storage.ss_len = u8::try_from(len).unwrap_or(u8::MAX);
}

/// A positional read that only succeeds without waiting for IO. These kernels have no
/// `RWF_NOWAIT`, so reads always take the blocking pool: `None`.
///
/// # Safety
///
/// No requirement beyond the Linux version's (`buf` valid for `len` bytes); nothing is read.
pub(crate) unsafe fn read_nowait(
    _fd: RawFd,
    _buf: *mut u8,
    _len: u32,
    _offset: u64,
) -> Option<i32> {
    None
}

/// `recv(fd, buf, len, flags)` (-1 with errno set on error).
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes.
pub(crate) unsafe fn recv(fd: RawFd, buf: *mut libc::c_void, len: usize, flags: i32) -> isize {
    // SAFETY: forwarded from the caller.
    unsafe { libc::recv(fd, buf, len, flags) }
}

/// `send(fd, buf, len, flags)` (-1 with errno set on error).
///
/// # Safety
///
/// `buf` must be valid for reads of `len` bytes.
pub(crate) unsafe fn send(fd: RawFd, buf: *const libc::c_void, len: usize, flags: i32) -> isize {
    // SAFETY: forwarded from the caller.
    unsafe { libc::send(fd, buf, len, flags) }
}

/// `recvmsg(fd, msg, flags)` (-1 with errno set on error).
///
/// # Safety
///
/// `msg` must point to a valid header whose buffers are valid for the whole call.
pub(crate) unsafe fn recvmsg(fd: RawFd, msg: *mut libc::msghdr, flags: i32) -> isize {
    // SAFETY: forwarded from the caller.
    unsafe { libc::recvmsg(fd, msg, flags) }
}

/// `sendmsg(fd, msg, flags)` (-1 with errno set on error).
///
/// # Safety
///
/// `msg` must point to a valid header whose buffers are valid for the whole call.
pub(crate) unsafe fn sendmsg(fd: RawFd, msg: *const libc::msghdr, flags: i32) -> isize {
    // SAFETY: forwarded from the caller.
    unsafe { libc::sendmsg(fd, msg, flags) }
}

/// Whether a short stream receive proves the socket drained (see the Linux version). Never
/// here: a TCP receive stops short at the urgent mark too, and kqueue does not report
/// urgent data, so the readiness backend always tries again.
pub(crate) fn short_read_drains(_fd: RawFd) -> bool {
    false
}

/// The sector size of a disk device (the platform's [`SECTOR_SIZE_IOCTL`]: FreeBSD's
/// `DIOCGSECTORSIZE`, Apple's `DKIOCGETBLOCKSIZE`), `None` for anything else.
fn sector_size(fd: RawFd) -> Option<u32> {
    let mut size: u32 = 0;
    // SAFETY: both platforms' ioctl writes one 32-bit unsigned int (`u_int`, `uint32_t`)
    // into the live local it is given.
    let r = unsafe { libc::ioctl(fd, SECTOR_SIZE_IOCTL, &mut size) };
    (r == 0 && size > 0).then_some(size)
}

/// What direct IO on `fd` needs (see [`DioAlignment`]): a disk's sector size
/// ([`sector_size`], for a character device) for both, else `st_blksize`.
pub(crate) fn dio_alignment(fd: RawFd) -> io::Result<DioAlignment> {
    let mut st = super::empty_stat();
    // SAFETY: fstat writes one `struct stat` into a live local.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    if st.st_mode & libc::S_IFMT == libc::S_IFCHR {
        if let Some(size) = sector_size(fd) {
            return Ok(DioAlignment::new(size, size));
        }
    }
    Ok(DioAlignment::from_block_size(
        u64::try_from(st.st_blksize).unwrap_or(0),
    ))
}

/// `splice(2)` is Linux's: ENOSYS here (file-to-socket transfers use [`sendfile`](super::sendfile)).
pub(crate) fn splice(
    _fd_in: RawFd,
    _off_in: Option<libc::off_t>,
    _fd_out: RawFd,
    _len: usize,
) -> isize {
    // SAFETY: writes the calling thread's errno, which nothing else borrows.
    unsafe { *libc::__error() = libc::ENOSYS };
    -1
}
