//! Linux: `statx`, `renameat2`, `openat2`, `sync_file_range`, `accept4`, and socket flags
//! set atomically at creation.

use std::io;
use std::os::fd::RawFd;

use super::{cvt, FileStat, OpenHow, Timestamp};
use crate::fs::DioAlignment;

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

/// Why a `fallocate` mode cannot run here: never on Linux (a file system that lacks the
/// mode says so itself, with EOPNOTSUPP).
pub(crate) fn unsupported_allocate_mode(_mode: i32) -> Option<&'static str> {
    None
}

/// `sync_file_range(fd, offset, len, flags)`.
pub(crate) fn sync_file_range(
    fd: RawFd,
    offset: libc::off_t,
    len: libc::off_t,
    flags: u32,
) -> io::Result<i32> {
    // SAFETY: no pointers; a bad descriptor, range or flag is reported as an errno.
    cvt(unsafe { libc::sync_file_range(fd, offset, len, flags) })
}

/// `posix_fadvise(fd, offset, len, advice)`.
pub(crate) fn fadvise(
    fd: RawFd,
    offset: libc::off_t,
    len: libc::off_t,
    advice: i32,
) -> io::Result<i32> {
    // SAFETY: no pointers; posix_fadvise returns the error number instead of setting
    // errno.
    match unsafe { libc::posix_fadvise(fd, offset, len, advice) } {
        0 => Ok(0),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// `openat2(dirfd, path, how, sizeof how)`, as a raw system call (glibc has no wrapper);
/// ENOSYS before Linux 5.6, and where a seccomp filter blocks the call with EPERM (as
/// container profiles older than the call do), so the caller takes its fallback either
/// way.
///
/// # Safety
///
/// `path` must point to a NUL-terminated string and `how` to an [`OpenHow`], for the whole
/// call.
pub(crate) unsafe fn openat2(
    dirfd: RawFd,
    path: *const libc::c_char,
    how: *const OpenHow,
) -> io::Result<i32> {
    // SAFETY: path and how are valid per this function's contract; the size passed is
    // that of the struct `how` points to (the kernel's `struct open_how`, see fsabi).
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path,
            how,
            std::mem::size_of::<OpenHow>(),
        )
    };
    match cvt(r as libc::c_int) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && openat2_blocked() => {
            Err(io::Error::from_raw_os_error(libc::ENOSYS))
        }
        r => r,
    }
}

/// Whether a seccomp filter blocks `openat2` (an EPERM from it may be the open's own:
/// `O_NOATIME` on another user's file). Probed once, with a call the kernel itself
/// refuses with EINVAL (a `struct open_how` of size 0).
fn openat2_blocked() -> bool {
    static BLOCKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BLOCKED.get_or_init(|| {
        let none = std::ptr::null::<OpenHow>();
        // SAFETY: a size of 0 makes the kernel refuse the call before it reads `how` or
        // the path (both valid anyway: a static empty string and null).
        let r = unsafe { libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, c"".as_ptr(), none, 0) };
        r < 0
            && matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM | libc::ENOSYS)
            )
    })
}

/// Open flags of one directory on the way when a path is walked component by component
/// (`open_beneath` without `openat2`): a directory, not followed if it is a link, opened
/// only as a place in the tree (`O_PATH`: no read permission needed).
pub(crate) const OPEN_DIR_STEP: i32 = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// Whether an open with `flags` may create a file, so `openat2` takes a mode with it:
/// `O_CREAT`, or `O_TMPFILE`.
pub(crate) fn open_creates(flags: i32) -> bool {
    flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE
}

/// Why `renameat2` flags cannot run here: never on Linux (a file system that lacks them
/// answers EINVAL itself).
pub(crate) fn unsupported_rename_flags(_flags: u32) -> Option<&'static str> {
    None
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

// The socket calls of the readiness backend and of io_uring's sends during submission, as
// raw system calls. glibc's wrappers are cancellation points: in a multi-threaded process
// (the blocking pool's threads) each one brackets the call with
// `__pthread_{enable,disable}_asynccancel`, about 30 instructions that buy nothing here
// (coring never cancels threads). The raw call returns -1 and sets errno like the wrapper.

/// `recv(fd, buf, len, flags)`, returning what the syscall returns (-1 with errno set on
/// error).
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes.
#[inline]
pub(crate) unsafe fn recv(fd: RawFd, buf: *mut libc::c_void, len: usize, flags: i32) -> isize {
    let (addr, addrlen) = (
        std::ptr::null_mut::<libc::sockaddr>(),
        std::ptr::null_mut::<libc::socklen_t>(),
    );
    // SAFETY: recvfrom with no address writes at most `len` bytes to `buf`, valid per this
    // function's contract.
    unsafe { libc::syscall(libc::SYS_recvfrom, fd, buf, len, flags, addr, addrlen) as isize }
}

/// `send(fd, buf, len, flags)` (-1 with errno set on error).
///
/// # Safety
///
/// `buf` must be valid for reads of `len` bytes.
#[inline]
pub(crate) unsafe fn send(fd: RawFd, buf: *const libc::c_void, len: usize, flags: i32) -> isize {
    let (addr, addrlen) = (std::ptr::null::<libc::sockaddr>(), 0 as libc::socklen_t);
    // SAFETY: sendto with no address reads at most `len` bytes from `buf`, valid per this
    // function's contract.
    unsafe { libc::syscall(libc::SYS_sendto, fd, buf, len, flags, addr, addrlen) as isize }
}

/// `recvmsg(fd, msg, flags)` (-1 with errno set on error).
///
/// # Safety
///
/// `msg` must point to a valid header whose buffers are valid for the whole call.
#[inline]
pub(crate) unsafe fn recvmsg(fd: RawFd, msg: *mut libc::msghdr, flags: i32) -> isize {
    // SAFETY: forwarded from the caller.
    unsafe { libc::syscall(libc::SYS_recvmsg, fd, msg, flags) as isize }
}

/// `sendmsg(fd, msg, flags)` (-1 with errno set on error).
///
/// # Safety
///
/// `msg` must point to a valid header whose buffers are valid for the whole call.
#[inline]
pub(crate) unsafe fn sendmsg(fd: RawFd, msg: *const libc::msghdr, flags: i32) -> isize {
    // SAFETY: forwarded from the caller.
    unsafe { libc::syscall(libc::SYS_sendmsg, fd, msg, flags) as isize }
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
    // The raw system call (see `recv`), with the offset split as the kernel's
    // `pos_from_hilo` takes it: the low word, then the bits above it (none on 64-bit).
    let lo = off as libc::c_ulong;
    let hi = ((off as u64 as u128) >> libc::c_ulong::BITS) as libc::c_ulong;
    let (iov, count) = (&iov as *const libc::iovec, 1 as libc::c_int);
    // SAFETY: one iovec over the caller's buffer, valid for `len` bytes.
    let n = unsafe {
        libc::syscall(libc::SYS_preadv2, fd, iov, count, lo, hi, libc::RWF_NOWAIT) as isize
    };
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

/// The open flag of direct IO.
pub(crate) const O_DIRECT: i32 = libc::O_DIRECT;

/// Readies a descriptor opened with [`O_DIRECT`] for direct IO: nothing more on Linux.
pub(crate) fn set_direct(_fd: RawFd) -> io::Result<()> {
    Ok(())
}

/// Whether `fd` was opened for direct IO (`O_DIRECT` among its status flags).
pub(crate) fn is_direct(fd: RawFd) -> bool {
    // SAFETY: F_GETFL takes no argument; a bad descriptor is reported as -1.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_DIRECT != 0
}

/// What direct IO on `fd` needs (see [`DioAlignment`] for the sources and fallbacks):
/// `statx(STATX_DIOALIGN)`, else a block device's logical block size (`BLKSSZGET`), else
/// `st_blksize`. `AT_STATX_DONT_SYNC`: nothing asked here needs a network file system's
/// server.
pub(crate) fn dio_alignment(fd: RawFd) -> io::Result<DioAlignment> {
    let mut stx = super::empty_stat();
    let flags = libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC;
    let mask = libc::STATX_TYPE | libc::STATX_DIOALIGN;
    // SAFETY: the path is an empty NUL-terminated string and stx a live statx buffer.
    cvt(unsafe { libc::statx(fd, c"".as_ptr(), flags, mask, &mut stx) })?;
    // A file system that knows the field but cannot do direct IO on this file reports 0s.
    if stx.stx_mask & libc::STATX_DIOALIGN != 0
        && stx.stx_dio_mem_align != 0
        && stx.stx_dio_offset_align != 0
    {
        return Ok(DioAlignment::new(
            stx.stx_dio_mem_align,
            stx.stx_dio_offset_align,
        ));
    }
    if u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFBLK {
        let mut size: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one int into the live local it is given.
        if unsafe { libc::ioctl(fd, libc::BLKSSZGET, &mut size) } == 0 && size > 0 {
            return Ok(DioAlignment::new(size as u32, size as u32));
        }
    }
    Ok(DioAlignment::from_block_size(u64::from(stx.stx_blksize)))
}

/// `splice(fd_in, off_in, fd_out, NULL, len, SPLICE_F_MOVE)` (-1 with errno set on error);
/// a pipe-to-socket splice (`off_in` is `None`) adds SPLICE_F_NONBLOCK, so that an empty
/// pipe fails with EAGAIN instead of blocking.
pub(crate) fn splice(
    fd_in: RawFd,
    off_in: Option<libc::off_t>,
    fd_out: RawFd,
    len: usize,
) -> isize {
    let mut off = off_in.unwrap_or(0);
    let (off_ptr, flags) = match off_in {
        Some(_) => (&mut off as *mut libc::off_t, libc::SPLICE_F_MOVE),
        None => (
            std::ptr::null_mut(),
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        ),
    };
    // SAFETY: the offset pointer is null or points to a live local; the call reads and
    // writes no other memory of ours.
    unsafe { libc::splice(fd_in, off_ptr, fd_out, std::ptr::null_mut(), len, flags) }
}

/// `sendfile(sock, file, &offset, len)`: up to `len` bytes of `file` from `offset` to the
/// socket (-1 with errno set on error; the file's own position is not used).
pub(crate) fn sendfile(sock: RawFd, file: RawFd, offset: libc::off_t, len: usize) -> isize {
    let mut off = offset;
    // SAFETY: the offset pointer points to a live local.
    unsafe { libc::sendfile(sock, file, &mut off, len) }
}

/// A close-on-exec pipe in blocking mode, `[read end, write end]`, whose capacity is raised
/// towards `want` bytes (as far as `fs.pipe-max-size` and the user's pipe quota allow);
/// returns the ends and the capacity it has.
///
/// # Errors
///
/// `pipe2` failed (the descriptor limit).
pub(crate) fn pipe(want: usize) -> io::Result<([RawFd; 2], usize)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fcntl on a descriptor we just created; no pointers. A refusal (EPERM over
    // the quota, EBUSY) leaves the default size, which F_GETPIPE_SZ reports.
    let cap = unsafe {
        libc::fcntl(fds[1], libc::F_SETPIPE_SZ, want as libc::c_int);
        libc::fcntl(fds[1], libc::F_GETPIPE_SZ)
    };
    Ok((fds, usize::try_from(cap).unwrap_or(0)))
}

/// Whether the first and the last page of `fd` in `offset..offset + len` are in the page
/// cache (`cachestat(2)`, Linux 6.5+; 451 in the unified syscall table); `None` where the
/// kernel cannot say (an older kernel, another architecture's table). A range past the
/// end of the file has no pages: it is reported as not cached.
///
/// Two pages rather than the whole range: `cachestat` visits every page it is given
/// (measured: about 11 µs for 1 MiB, a tenth of sending it), and the page cache fills
/// and empties a file's pages together (readahead brings a sequential read's pages in
/// order; reclaim takes the least recently used, which a file read front to back ages
/// alike). A range cached at both ends but not in between makes `sendfile` read the gap
/// from the device on the calling thread.
pub(crate) fn cached(fd: RawFd, offset: u64, len: u64) -> Option<bool> {
    if len == 0 {
        return Some(true);
    }
    let last = (offset + len - 1) & !4095;
    if !page_cached(fd, offset & !4095)? {
        return Some(false);
    }
    if last > offset {
        return page_cached(fd, last);
    }
    Some(true)
}

/// Whether the page of `fd` at `offset` (page aligned) is in the page cache; `None` where
/// the kernel cannot say.
fn page_cached(fd: RawFd, offset: u64) -> Option<bool> {
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    {
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct CacheStat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        const SYS_CACHESTAT: libc::c_long = 451;
        let range = Range {
            off: offset,
            len: 4096,
        };
        let mut st = CacheStat::default();
        // SAFETY: the kernel reads one Range and writes one CacheStat, both live locals of
        // the layout cachestat(2) defines.
        let r = unsafe { libc::syscall(SYS_CACHESTAT, fd, &range, &mut st, 0) };
        if r != 0 {
            return None;
        }
        Some(st.nr_cache > 0)
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )))]
    {
        let _ = (fd, offset);
        None
    }
}
