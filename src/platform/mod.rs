//! The few system calls and C types that differ between the Unix kernels coring runs on,
//! behind one set of names and signatures.
//!
//! The op layer, the driver's syscall executor (`driver/syscall.rs`) and the user types call
//! only what this module exports; each platform module below provides every item of the
//! list with the same signature, so the code that calls them needs no `cfg` (the one other
//! platform decision, which backends exist, is made in `driver::backend::select`, with
//! `cfg` at module boundaries):
//!
//! | item | Linux (`linux.rs`) | FreeBSD (`freebsd.rs`) | Apple (`apple.rs`) |
//! |------|--------------------|------------------------|--------------------|
//! | [`Stat`], [`stat`], [`file_stat`] | `struct statx`, `statx(2)` (io_uring STATX writes the same struct) | `struct stat`, `fstatat(2)` / `fstat(2)` (`bsd.rs`) | as FreeBSD |
//! | [`rename`] | `renameat2(2)` | `renameat(2)` (no flags) (`bsd.rs`) | as FreeBSD |
//! | [`fsync`] | `fsync(2)` / `fdatasync(2)` | `fsync(2)` / `fdatasync(2)` | `fcntl(F_FULLFSYNC)` |
//! | [`accept`], [`socket`], [`socketpair`] | `SOCK_CLOEXEC \| SOCK_NONBLOCK`, atomically | as Linux | `fcntl` after the call, plus `SO_NOSIGPIPE` |
//! | [`SEND_FLAGS`] | `MSG_NOSIGNAL` | `MSG_NOSIGNAL` | none (`SO_NOSIGPIPE` is set on every socket) |
//! | [`set_sockaddr_len`] | nothing (no length field) | `sa_len` (`bsd.rs`) | as FreeBSD |
//! | [`read_nowait`] (a read served from the page cache without waiting) | `preadv2(RWF_NOWAIT)` | none (`None`: reads go to the pool) | as FreeBSD |
//! | [`short_read_drains`] (a short stream receive proves the socket empty) | TCP sockets (`SO_PROTOCOL`) | never (kqueue reports no urgent data) (`bsd.rs`) | as FreeBSD |
//! | [`SO_REUSEPORT`] (listeners sharing a port, connections spread among them) | `SO_REUSEPORT` | `SO_REUSEPORT_LB` | `SO_REUSEPORT` (shares, does not spread) |
//! | [`recv`], [`send`], [`recvmsg`], [`sendmsg`] (and [`read_nowait`]'s `preadv2`) | raw `syscall(2)`: glibc's wrappers are cancellation points, which cost ~30 instructions a call in a multi-threaded process | the libc functions (`bsd.rs`) | as FreeBSD |
//! | [`fallocate`] | `fallocate(2)` | mode 0 only (`bsd.rs`), by `posix_fallocate(2)` | mode 0 only (`bsd.rs`), by `F_PREALLOCATE` + `ftruncate` |
//! | [`O_DIRECT`], [`set_direct`], [`is_direct`] (direct IO) | `O_DIRECT` | `O_DIRECT` | no flag (0): `fcntl(F_NOCACHE)` after the open; cannot be read back |
//! | [`dio_alignment`] | `statx(STATX_DIOALIGN)`, else `BLKSSZGET` for a block device, else `st_blksize` | a disk's `DIOCGSECTORSIZE`, else `st_blksize` (`bsd.rs`) | a disk's `DKIOCGETBLOCKSIZE`, else `st_blksize` (`bsd.rs`) |
//! | [`unsupported_allocate_mode`], [`unsupported_rename_flags`] (the user API's message for what cannot run) | none | modes other than 0; any rename flag | modes other than 0 |
//! | [`sync_file_range`] | `sync_file_range(2)` | `fdatasync(2)` of the whole file (flags 0: nothing) | `fsync(2)` of the whole file (flags 0: nothing) |
//! | [`fadvise`] | `posix_fadvise(2)` | `posix_fadvise(2)` | nothing (no such call; advice is a hint) |
//! | [`rename`] with flags | `renameat2(2)` | EOPNOTSUPP | `renameatx_np(2)` (`RENAME_EXCL`, `RENAME_SWAP`) |
//! | [`openat2`] | `openat2(2)` (raw syscall) | ENOSYS (`bsd.rs`): `open_beneath` walks the path | as FreeBSD |
//!
//! Two modules serve every platform, Windows included: `fsabi.rs`, the flag values file
//! descriptions carry (Linux's, which io_uring takes as they are), and `dir.rs`, reading
//! a directory on the blocking pool through std's `ReadDir`.
//!
//! Where Linux and FreeBSD agree (socket calls with atomic flags, `MSG_NOSIGNAL`, `fsync`),
//! one module, `sockflags.rs`, serves both.
//!
//! Every wrapper returns `Ok(syscall result)` or the `io::Error` of `errno`, so callers do
//! not depend on a platform's errno conventions either.

pub(crate) mod dir;
pub(crate) mod fsabi;
pub(crate) use fsabi::OpenHow;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix::cvt;
#[cfg(unix)]
pub(crate) use unix::{
    bind_listen, c, close, device_of, empty_stat, file_for_std, ip_from_raw, ip_to_raw,
    prepare_listener, set_nodelay, set_nonblocking, FromRaw, RawFd,
};
// Read by the fallback backend's readiness checks (Unix only).
#[cfg(unix)]
pub(crate) use unix::socket_option;

#[cfg(windows)]
pub(crate) mod windows;
#[cfg(windows)]
pub(crate) use windows::{
    bind_listen, c, close, device_of, dio_alignment, empty_stat, file_for_std, file_stat,
    ip_from_raw, ip_to_raw, is_direct, open_creates, prepare_listener, set_direct, set_nodelay,
    set_nonblocking, socket, unsupported_allocate_mode, unsupported_rename_flags, FromRaw, RawFd,
    Stat, OPEN_DIR_STEP, O_DIRECT, SEND_FLAGS, STAT_EMPTY_PATH, STAT_MASK,
};

#[cfg(target_os = "linux")]
pub(crate) mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{
    cached, dio_alignment, fadvise, fallocate, file_stat, is_direct, open_creates, openat2, pipe,
    read_nowait, recv, recvmsg, rename, send, sendfile, sendmsg, set_direct, set_sockaddr_len,
    short_read_drains, splice, stat, sync_file_range, unsupported_allocate_mode,
    unsupported_rename_flags, Stat, OPEN_DIR_STEP, O_DIRECT, SO_REUSEPORT, STAT_EMPTY_PATH,
    STAT_MASK,
};

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
mod sockflags;
#[cfg(target_os = "linux")]
pub(crate) use sockflags::SOCKET_FLAGS;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub(crate) use sockflags::{accept, fsync, socket, socketpair, SEND_FLAGS};

#[cfg(any(target_os = "freebsd", target_vendor = "apple"))]
mod bsd;
#[cfg(any(target_os = "freebsd", target_vendor = "apple"))]
pub(crate) use bsd::{
    dio_alignment, fallocate, file_stat, open_creates, openat2, read_nowait, recv, recvmsg, rename,
    send, sendmsg, set_sockaddr_len, short_read_drains, splice, stat, unsupported_allocate_mode,
    Stat, OPEN_DIR_STEP, STAT_EMPTY_PATH, STAT_MASK,
};

#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "freebsd")]
pub(crate) use freebsd::{
    fadvise, is_direct, sendfile, set_direct, sync_file_range, unsupported_rename_flags, O_DIRECT,
    SO_REUSEPORT,
};
#[cfg(target_os = "freebsd")]
use freebsd::{preallocate, rename_flags, SECTOR_SIZE_IOCTL};

#[cfg(target_vendor = "apple")]
mod apple;
#[cfg(target_vendor = "apple")]
pub(crate) use apple::{
    accept, fadvise, fsync, is_direct, sendfile, set_direct, socket, socketpair, sync_file_range,
    unsupported_rename_flags, O_DIRECT, SEND_FLAGS, SO_REUSEPORT,
};
#[cfg(target_vendor = "apple")]
use apple::{preallocate, rename_flags, SECTOR_SIZE_IOCTL};

#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_vendor = "apple",
    windows
)))]
compile_error!(
    "coring runs on Linux (io_uring or epoll), FreeBSD and Apple platforms (kqueue) and \
     Windows (IOCP); src/platform/ has no module for this target yet"
);

/// What a stat call reports, in the same shape on every platform; `fs::Metadata` wraps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub(crate) size: u64,
    /// The file-type bits of the mode (`mode & S_IFMT`).
    pub(crate) kind: c::mode_t,
    /// The permission bits of the mode (`mode & 0o7777`).
    pub(crate) perm: u32,
    pub(crate) ino: u64,
    pub(crate) nlink: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) blksize: u32,
    pub(crate) blocks: u64,
    /// `None` where the file system does not report the time.
    pub(crate) modified: Option<Timestamp>,
    pub(crate) accessed: Option<Timestamp>,
    pub(crate) created: Option<Timestamp>,
}

/// Seconds and nanoseconds since the Unix epoch (seconds may be negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp {
    pub(crate) sec: i64,
    pub(crate) nsec: u32,
}
