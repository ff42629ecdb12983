//! The flag values the file-system descriptions carry, on every platform: Linux's, because
//! io_uring's SQEs take them as they are. The other platforms' executors translate them
//! (or refuse what they cannot do); the op layer never uses a platform's own values.
//!
//! On Linux each value is checked against `libc` at compile time.

/// `fallocate(2)` mode: keep the file size (allocate past the end without growing it).
pub(crate) const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
/// `fallocate(2)` mode: deallocate the range (always with [`FALLOC_FL_KEEP_SIZE`]).
pub(crate) const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
/// `fallocate(2)` mode: make the range read as zeros, allocated.
pub(crate) const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

/// `sync_file_range(2)`: wait for writeback of the range already under way.
pub(crate) const SYNC_FILE_RANGE_WAIT_BEFORE: u32 = 1;
/// `sync_file_range(2)`: start writeback of the range's dirty pages.
pub(crate) const SYNC_FILE_RANGE_WRITE: u32 = 2;
/// `sync_file_range(2)`: wait for the range's writeback to finish.
pub(crate) const SYNC_FILE_RANGE_WAIT_AFTER: u32 = 4;

/// `posix_fadvise(2)` advice values (the same on Linux and FreeBSD).
pub(crate) const POSIX_FADV_NORMAL: i32 = 0;
pub(crate) const POSIX_FADV_RANDOM: i32 = 1;
pub(crate) const POSIX_FADV_SEQUENTIAL: i32 = 2;
pub(crate) const POSIX_FADV_WILLNEED: i32 = 3;
pub(crate) const POSIX_FADV_DONTNEED: i32 = 4;
pub(crate) const POSIX_FADV_NOREUSE: i32 = 5;

/// `renameat2(2)`: fail with EEXIST instead of replacing the target.
pub(crate) const RENAME_NOREPLACE: u32 = 1;
/// `renameat2(2)`: swap the two paths atomically (both must exist).
pub(crate) const RENAME_EXCHANGE: u32 = 2;

/// `openat2(2)` resolve flag: refuse magic links (`/proc/self/fd/N` and the like).
pub(crate) const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// `openat2(2)` resolve flag: never leave the directory `dirfd` names (EXDEV otherwise).
pub(crate) const RESOLVE_BENEATH: u64 = 0x08;

/// `struct open_how` of `openat2(2)` (and io_uring's OPENAT2, which reads the same struct).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpenHow {
    /// `open(2)` flags.
    pub(crate) flags: u64,
    /// Permission bits of a created file; must be 0 without `O_CREAT`.
    pub(crate) mode: u64,
    /// `RESOLVE_*` flags.
    pub(crate) resolve: u64,
}

#[cfg(target_os = "linux")]
const _: () = {
    assert!(FALLOC_FL_KEEP_SIZE == libc::FALLOC_FL_KEEP_SIZE);
    assert!(FALLOC_FL_PUNCH_HOLE == libc::FALLOC_FL_PUNCH_HOLE);
    assert!(FALLOC_FL_ZERO_RANGE == libc::FALLOC_FL_ZERO_RANGE);
    assert!(SYNC_FILE_RANGE_WAIT_BEFORE == libc::SYNC_FILE_RANGE_WAIT_BEFORE);
    assert!(SYNC_FILE_RANGE_WRITE == libc::SYNC_FILE_RANGE_WRITE);
    assert!(SYNC_FILE_RANGE_WAIT_AFTER == libc::SYNC_FILE_RANGE_WAIT_AFTER);
    assert!(POSIX_FADV_NORMAL == libc::POSIX_FADV_NORMAL);
    assert!(POSIX_FADV_RANDOM == libc::POSIX_FADV_RANDOM);
    assert!(POSIX_FADV_SEQUENTIAL == libc::POSIX_FADV_SEQUENTIAL);
    assert!(POSIX_FADV_WILLNEED == libc::POSIX_FADV_WILLNEED);
    assert!(POSIX_FADV_DONTNEED == libc::POSIX_FADV_DONTNEED);
    assert!(POSIX_FADV_NOREUSE == libc::POSIX_FADV_NOREUSE);
    assert!(RENAME_NOREPLACE == libc::RENAME_NOREPLACE);
    assert!(RENAME_EXCHANGE == libc::RENAME_EXCHANGE);
    assert!(RESOLVE_NO_MAGICLINKS == libc::RESOLVE_NO_MAGICLINKS);
    assert!(RESOLVE_BENEATH == libc::RESOLVE_BENEATH);
    assert!(std::mem::size_of::<OpenHow>() == std::mem::size_of::<libc::open_how>());
};

#[cfg(target_os = "freebsd")]
const _: () = {
    assert!(POSIX_FADV_NORMAL == libc::POSIX_FADV_NORMAL);
    assert!(POSIX_FADV_RANDOM == libc::POSIX_FADV_RANDOM);
    assert!(POSIX_FADV_SEQUENTIAL == libc::POSIX_FADV_SEQUENTIAL);
    assert!(POSIX_FADV_WILLNEED == libc::POSIX_FADV_WILLNEED);
    assert!(POSIX_FADV_DONTNEED == libc::POSIX_FADV_DONTNEED);
    assert!(POSIX_FADV_NOREUSE == libc::POSIX_FADV_NOREUSE);
};
