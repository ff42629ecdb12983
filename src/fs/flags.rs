//! The small types storage calls take: [`AllocateMode`], [`SyncRangeFlags`], [`Advice`],
//! [`RenameFlags`]. Each turns into Linux's flag values (`platform::fsabi`), which
//! io_uring takes as they are and the other platforms translate.

use std::ops::{BitOr, BitOrAssign};

use crate::platform::fsabi;

/// What [`File::allocate_with`](super::File::allocate_with) does with a range
/// (`fallocate(2)`'s mode).
///
/// Linux has every mode (a file system without one answers `Unsupported`, EOPNOTSUPP).
/// FreeBSD and Apple platforms have [`Extend`](Self::Extend) only; Windows has them all,
/// with its own calls (see each mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AllocateMode {
    /// Allocates the range and grows the file to its end if it ends before (mode 0, what
    /// [`File::allocate`](super::File::allocate) does); new bytes read as zeros.
    #[default]
    Extend,
    /// Allocates the range without changing the file's size (`FALLOC_FL_KEEP_SIZE`):
    /// space reserved past the end for appends to come. Windows: the file's allocation
    /// size (`FileAllocationInfo`), raised to the range's end if below.
    KeepSize,
    /// Deallocates the range (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`): it reads as
    /// zeros, its blocks are freed and the size does not change. Windows:
    /// `FSCTL_SET_SPARSE` on the file, then `FSCTL_SET_ZERO_DATA` (which frees the
    /// range's clusters of a sparse file).
    PunchHole,
    /// Makes the range read as zeros, allocated (`FALLOC_FL_ZERO_RANGE`), and grows the
    /// file to the range's end if it ends before. Windows: `FSCTL_SET_ZERO_DATA` (without
    /// making the file sparse, so the range stays allocated unless the file already was
    /// sparse), then the growth as [`Extend`](Self::Extend).
    ZeroRange,
    /// As [`ZeroRange`](Self::ZeroRange), without changing the file's size
    /// (`FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE`).
    ZeroRangeKeepSize,
}

impl AllocateMode {
    /// The `fallocate(2)` mode bits.
    pub(crate) fn bits(self) -> i32 {
        match self {
            AllocateMode::Extend => 0,
            AllocateMode::KeepSize => fsabi::FALLOC_FL_KEEP_SIZE,
            AllocateMode::PunchHole => fsabi::FALLOC_FL_PUNCH_HOLE | fsabi::FALLOC_FL_KEEP_SIZE,
            AllocateMode::ZeroRange => fsabi::FALLOC_FL_ZERO_RANGE,
            AllocateMode::ZeroRangeKeepSize => {
                fsabi::FALLOC_FL_ZERO_RANGE | fsabi::FALLOC_FL_KEEP_SIZE
            }
        }
    }
}

/// What [`File::sync_range`](super::File::sync_range) does: Linux's `sync_file_range(2)`
/// flags, combined with `|`.
///
/// The usual combinations: [`WRITE`](Self::WRITE) alone starts writeback of the range
/// and returns (to keep the page cache from piling up dirty pages);
/// [`WRITE_AND_WAIT`](Self::WRITE_AND_WAIT) writes the range back and waits for it.
/// Neither makes the data durable (no metadata, no drive cache flush): that takes
/// [`File::sync_data`](super::File::sync_data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SyncRangeFlags(u32);

impl SyncRangeFlags {
    /// No flag: nothing happens (as on Linux).
    pub const NONE: SyncRangeFlags = SyncRangeFlags(0);
    /// Wait for the writeback of pages of the range that is already under way
    /// (`SYNC_FILE_RANGE_WAIT_BEFORE`).
    pub const WAIT_BEFORE: SyncRangeFlags = SyncRangeFlags(fsabi::SYNC_FILE_RANGE_WAIT_BEFORE);
    /// Start writeback of the range's dirty pages (`SYNC_FILE_RANGE_WRITE`).
    pub const WRITE: SyncRangeFlags = SyncRangeFlags(fsabi::SYNC_FILE_RANGE_WRITE);
    /// Wait for the range's writeback to finish (`SYNC_FILE_RANGE_WAIT_AFTER`).
    pub const WAIT_AFTER: SyncRangeFlags = SyncRangeFlags(fsabi::SYNC_FILE_RANGE_WAIT_AFTER);
    /// All three: write the range back and wait for it.
    pub const WRITE_AND_WAIT: SyncRangeFlags = SyncRangeFlags(
        fsabi::SYNC_FILE_RANGE_WAIT_BEFORE
            | fsabi::SYNC_FILE_RANGE_WRITE
            | fsabi::SYNC_FILE_RANGE_WAIT_AFTER,
    );

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: SyncRangeFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn bits(self) -> u32 {
        self.0
    }
}

impl BitOr for SyncRangeFlags {
    type Output = SyncRangeFlags;

    fn bitor(self, rhs: SyncRangeFlags) -> SyncRangeFlags {
        SyncRangeFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for SyncRangeFlags {
    fn bitor_assign(&mut self, rhs: SyncRangeFlags) {
        self.0 |= rhs.0;
    }
}

/// How a range of a file will be accessed, for [`File::advise`](super::File::advise)
/// (`posix_fadvise(2)`'s advice). A hint: the kernel may ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Advice {
    /// No particular pattern (`POSIX_FADV_NORMAL`): the default read-ahead.
    #[default]
    Normal,
    /// Read from start to end (`POSIX_FADV_SEQUENTIAL`): more read-ahead.
    Sequential,
    /// Read in no order (`POSIX_FADV_RANDOM`): no read-ahead.
    Random,
    /// Needed soon (`POSIX_FADV_WILLNEED`): Linux starts reading it into the page cache.
    WillNeed,
    /// Not needed soon (`POSIX_FADV_DONTNEED`): Linux drops its clean cached pages.
    DontNeed,
    /// Read once (`POSIX_FADV_NOREUSE`).
    NoReuse,
}

impl Advice {
    pub(crate) fn bits(self) -> i32 {
        match self {
            Advice::Normal => fsabi::POSIX_FADV_NORMAL,
            Advice::Sequential => fsabi::POSIX_FADV_SEQUENTIAL,
            Advice::Random => fsabi::POSIX_FADV_RANDOM,
            Advice::WillNeed => fsabi::POSIX_FADV_WILLNEED,
            Advice::DontNeed => fsabi::POSIX_FADV_DONTNEED,
            Advice::NoReuse => fsabi::POSIX_FADV_NOREUSE,
        }
    }
}

/// How [`rename_with`](super::rename_with) treats an existing target (`renameat2(2)`'s
/// flags). The default is a plain rename, which replaces the target.
///
/// ```
/// use coring::fs::RenameFlags;
///
/// let flags = RenameFlags { no_replace: true, ..RenameFlags::default() };
/// # let _ = flags;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RenameFlags {
    /// Fail with `AlreadyExists` (EEXIST) if the target exists, instead of replacing it
    /// (`RENAME_NOREPLACE`), atomically.
    pub no_replace: bool,
    /// Swap the two paths atomically; both must exist (`RENAME_EXCHANGE`).
    pub exchange: bool,
}

impl RenameFlags {
    pub(crate) fn bits(self) -> u32 {
        (if self.no_replace {
            fsabi::RENAME_NOREPLACE
        } else {
            0
        }) | (if self.exchange {
            fsabi::RENAME_EXCHANGE
        } else {
            0
        })
    }
}
