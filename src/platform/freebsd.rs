//! FreeBSD-only choices (its socket calls are shared with Linux in `sockflags.rs`).

use std::io;
use std::os::fd::RawFd;

/// Allocates `offset..offset + len` (mode 0 of [`fallocate`](super::fallocate), the only
/// one): `posix_fallocate(fd, offset, len)`, as FreeBSD has no `fallocate`.
pub(crate) fn preallocate(fd: RawFd, offset: libc::off_t, len: libc::off_t) -> io::Result<i32> {
    // SAFETY: no pointers; posix_fallocate returns the error number instead of setting
    // errno.
    match unsafe { libc::posix_fallocate(fd, offset, len) } {
        0 => Ok(0),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// The option that lets listeners share a port, the kernel spreading connections among
/// them: FreeBSD's plain SO_REUSEPORT shares without spreading (the last listener gets
/// them all); SO_REUSEPORT_LB (FreeBSD 12 and later) balances.
pub(crate) const SO_REUSEPORT: i32 = libc::SO_REUSEPORT_LB;

/// The open flag of direct IO.
pub(crate) const O_DIRECT: i32 = libc::O_DIRECT;

/// Readies a descriptor opened with [`O_DIRECT`] for direct IO: nothing more on FreeBSD.
pub(crate) fn set_direct(_fd: RawFd) -> io::Result<()> {
    Ok(())
}

/// Whether `fd` was opened for direct IO (`O_DIRECT` among its status flags).
pub(crate) fn is_direct(fd: RawFd) -> bool {
    // SAFETY: F_GETFL takes no argument; a bad descriptor is reported as -1.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_DIRECT != 0
}

/// The ioctl `bsd::sector_size` asks a disk device: `DIOCGSECTORSIZE`
/// (`_IOR('d', 128, u_int)` in `<sys/disk.h>`, which the libc crate does not carry).
pub(super) const SECTOR_SIZE_IOCTL: libc::c_ulong = 0x4004_6480;

/// Renames with Linux's `RENAME_*` flags: FreeBSD has no such call (EOPNOTSUPP; the user
/// API refuses the flags first, see [`unsupported_rename_flags`]).
///
/// # Safety
///
/// No requirement: nothing is read.
pub(crate) unsafe fn rename_flags(
    _olddirfd: RawFd,
    _oldpath: *const libc::c_char,
    _newdirfd: RawFd,
    _newpath: *const libc::c_char,
    _flags: u32,
) -> io::Result<i32> {
    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// Why rename flags cannot run here: FreeBSD has no `renameat2` or equivalent.
pub(crate) fn unsupported_rename_flags(flags: u32) -> Option<&'static str> {
    (flags != 0).then_some(
        "FreeBSD has no renameat2: RenameFlags (no_replace, exchange) are unsupported; \
         a plain rename replaces the target",
    )
}

/// `sync_file_range` where there is none: flags 0 do nothing (as on Linux); any other
/// flags write the whole file's data back and wait (`fdatasync`), more than was asked.
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
    super::cvt(unsafe { libc::fdatasync(fd) })
}

/// `posix_fadvise(fd, offset, len, advice)` (FreeBSD's advice values are Linux's).
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

/// FreeBSD's `sendfile(file, sock, offset, len, NULL, &sent, 0)`: up to `len` bytes of
/// `file` from `offset` to the socket. On a non-blocking socket it fails with EAGAIN
/// after sending part: that part is the result (only EAGAIN with nothing sent is "not
/// ready"). `len` 0 would mean "to the end of the file": 0 is returned without a call.
pub(crate) fn sendfile(sock: RawFd, file: RawFd, offset: libc::off_t, len: usize) -> isize {
    if len == 0 {
        return 0;
    }
    let mut sent: libc::off_t = 0;
    // SAFETY: no header/trailer vector; `sent` is a live local the call writes.
    let r = unsafe { libc::sendfile(file, sock, offset, len, std::ptr::null_mut(), &mut sent, 0) };
    if r == 0 || (sent > 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)) {
        return sent as isize;
    }
    -1
}
