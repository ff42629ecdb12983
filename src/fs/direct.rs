//! Direct IO: what a file opened with [`OpenOptions::direct`](super::OpenOptions::direct)
//! asks of every read and write, and the check coring makes before submitting one.
//!
//! The kernel refuses a misaligned direct transfer with a bare EINVAL (Linux, FreeBSD's
//! devices) or `ERROR_INVALID_PARAMETER` (Windows), which names neither the rule nor the
//! culprit. coring checks the buffer's address, the file offset and the length against the
//! file's [`DioAlignment`] first, on every backend, and fails with an `InvalidInput` error
//! that says both.

use std::fmt;
use std::io;

/// What direct IO on a file needs: buffers at addresses that are multiples of
/// [`memory`](DioAlignment::memory), and file offsets and lengths that are multiples of
/// [`offset`](DioAlignment::offset). Both are powers of two.
///
/// [`File::dio_alignment`](super::File::dio_alignment) reports it. Where it comes from:
///
/// - **Linux**: `statx(STATX_DIOALIGN)` (`stx_dio_mem_align`, `stx_dio_offset_align`;
///   Linux 6.1 and later, on file systems that report it: ext4, XFS, f2fs, and block
///   devices from 6.11). Where the field is absent: for a block device the logical block
///   size (`BLKSSZGET`) for both; for anything else the file's `st_blksize` for both (the
///   file system's block size, a multiple of the device's logical block size, so a strict
///   but safe answer), or 4096 if that is not a power of two from 512 to 64 KiB.
/// - **FreeBSD**: a disk's sector size (`DIOCGSECTORSIZE`) for both, else `st_blksize` as
///   on Linux. **Apple platforms** have no `O_DIRECT` (coring sets `F_NOCACHE` instead,
///   which has no alignment rules of its own): `st_blksize` as above, which coring enforces
///   so that code tried there keeps the rules Linux and Windows impose.
/// - **Windows** (`FILE_FLAG_NO_BUFFERING`): the volume's logical sector size
///   (`GetFileInformationByHandleEx(FileStorageInfo)`) for both, as its documentation
///   asks; 4096 where the call fails (Wine does not implement it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DioAlignment {
    memory: u32,
    offset: u32,
}

/// The alignment assumed where the system reports none.
const DEFAULT_ALIGN: u32 = 4096;

impl DioAlignment {
    /// From what the system reported, each rounded up to a power of two (they are one on
    /// every system coring knows) and at least 1.
    pub(crate) fn new(memory: u32, offset: u32) -> DioAlignment {
        let pow2 = |n: u32| n.max(1).checked_next_power_of_two().unwrap_or(1 << 31);
        DioAlignment {
            memory: pow2(memory),
            offset: pow2(offset),
        }
    }

    /// Both from a block size (`st_blksize`): itself if it is a power of two from 512 to
    /// 64 KiB, else 4096.
    // Read by the Unix platforms.
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn from_block_size(blksize: u64) -> DioAlignment {
        let size = match u32::try_from(blksize) {
            Ok(b) if b.is_power_of_two() && (512..=65536).contains(&b) => b,
            _ => DEFAULT_ALIGN,
        };
        DioAlignment::new(size, size)
    }

    /// Both 4096: what is assumed where the system says nothing.
    // Read by Windows.
    #[cfg_attr(unix, allow(dead_code))]
    pub(crate) fn fallback() -> DioAlignment {
        DioAlignment::new(DEFAULT_ALIGN, DEFAULT_ALIGN)
    }

    /// The alignment, in bytes, of the address of every buffer a direct transfer reads
    /// into or writes from.
    pub fn memory(&self) -> usize {
        self.memory as usize
    }

    /// What every file offset and every transfer length must be a multiple of, in bytes.
    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    /// Whether `buf`, a memory address, suits a direct transfer.
    pub fn is_memory_aligned(&self, buf: *const u8) -> bool {
        (buf as usize) % self.memory() == 0
    }

    /// Checks one transfer of `len` bytes at address `buf` and file offset `pos`.
    pub(crate) fn check(&self, buf: *const u8, len: usize, pos: u64) -> io::Result<()> {
        self.check_pos(pos)?;
        self.check_part(None, buf, len)
    }

    /// Checks a file offset.
    pub(crate) fn check_pos(&self, pos: u64) -> io::Result<()> {
        if pos % u64::from(self.offset) != 0 {
            return Err(self.refuse(Culprit::Offset(pos)));
        }
        Ok(())
    }

    /// Checks one buffer of `len` bytes at `buf`; `index` is its place in a vectored call.
    /// An empty buffer's address does not matter (an empty `Vec`'s pointer is dangling).
    pub(crate) fn check_part(
        &self,
        index: Option<usize>,
        buf: *const u8,
        len: usize,
    ) -> io::Result<()> {
        if len % self.offset() != 0 {
            return Err(self.refuse(Culprit::Length(index, len)));
        }
        if len > 0 && !self.is_memory_aligned(buf) {
            return Err(self.refuse(Culprit::Address(index, buf as usize)));
        }
        Ok(())
    }

    #[cold]
    fn refuse(&self, culprit: Culprit) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "direct IO needs offsets and lengths that are multiples of {} and memory \
                 aligned to {}: {culprit} is not",
                self.offset, self.memory
            ),
        )
    }
}

/// What a direct transfer got wrong, for the error message.
enum Culprit {
    Offset(u64),
    Length(Option<usize>, usize),
    Address(Option<usize>, usize),
}

impl fmt::Display for Culprit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buffer = |f: &mut fmt::Formatter<'_>, index: &Option<usize>| match index {
            Some(i) => write!(f, "buffer {i}'s"),
            None => write!(f, "buffer"),
        };
        match self {
            Culprit::Offset(pos) => write!(f, "offset {pos}"),
            Culprit::Length(index, len) => {
                buffer(f, index)?;
                write!(f, " length {len}")
            }
            Culprit::Address(index, addr) => {
                buffer(f, index)?;
                write!(f, " address {addr:#x}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DioAlignment;

    #[test]
    fn values_are_powers_of_two() {
        let a = DioAlignment::new(0, 3000);
        assert_eq!((a.memory(), a.offset()), (1, 4096));
        let b = DioAlignment::from_block_size(1 << 20);
        assert_eq!((b.memory(), b.offset()), (4096, 4096));
        let c = DioAlignment::from_block_size(512);
        assert_eq!((c.memory(), c.offset()), (512, 512));
    }

    #[test]
    fn messages_name_the_rule_and_the_culprit() {
        let a = DioAlignment::new(512, 4096);
        let e = a.check(4096 as *const u8, 4096, 100).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "direct IO needs offsets and lengths that are multiples of 4096 and memory \
             aligned to 512: offset 100 is not"
        );
        let e = a.check(4096 as *const u8, 100, 0).unwrap_err();
        assert!(e.to_string().ends_with("buffer length 100 is not"), "{e}");
        let e = a
            .check_part(Some(2), 0x1001 as *const u8, 4096)
            .unwrap_err();
        assert!(
            e.to_string().ends_with("buffer 2's address 0x1001 is not"),
            "{e}"
        );
        // An empty buffer's address is not looked at.
        a.check(std::ptr::dangling::<u8>(), 0, 8192).unwrap();
    }
}
