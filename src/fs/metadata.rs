use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

/// Metadata of a file, from `statx`.
#[derive(Clone, Copy)]
pub struct Metadata {
    stx: libc::statx,
}

impl Metadata {
    pub(crate) fn from_statx(stx: libc::statx) -> Metadata {
        Metadata { stx }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.stx.stx_size
    }

    /// Whether the size is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind of file.
    pub fn file_type(&self) -> FileType {
        FileType(u32::from(self.stx.stx_mode) & libc::S_IFMT)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type().is_dir()
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type().is_file()
    }

    /// Whether this is a symbolic link (only from [`symlink_metadata`](super::symlink_metadata)).
    pub fn is_symlink(&self) -> bool {
        self.file_type().is_symlink()
    }

    /// Permission bits.
    pub fn permissions(&self) -> std::fs::Permissions {
        std::fs::Permissions::from_mode(u32::from(self.stx.stx_mode) & 0o7777)
    }

    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.stx.stx_ino
    }

    /// Number of hard links.
    pub fn nlink(&self) -> u32 {
        self.stx.stx_nlink
    }

    /// Owner's user id.
    pub fn uid(&self) -> u32 {
        self.stx.stx_uid
    }

    /// Owner's group id.
    pub fn gid(&self) -> u32 {
        self.stx.stx_gid
    }

    /// Preferred IO block size.
    pub fn blksize(&self) -> u32 {
        self.stx.stx_blksize
    }

    /// Allocated 512-byte blocks.
    pub fn blocks(&self) -> u64 {
        self.stx.stx_blocks
    }

    /// Last modification time.
    pub fn modified(&self) -> io::Result<SystemTime> {
        self.time(libc::STATX_MTIME, self.stx.stx_mtime, "modification")
    }

    /// Last access time.
    pub fn accessed(&self) -> io::Result<SystemTime> {
        self.time(libc::STATX_ATIME, self.stx.stx_atime, "access")
    }

    /// Creation (birth) time, where the file system records it.
    ///
    /// # Errors
    ///
    /// `Unsupported` when the file system does not report it.
    pub fn created(&self) -> io::Result<SystemTime> {
        self.time(libc::STATX_BTIME, self.stx.stx_btime, "creation")
    }

    fn time(&self, bit: u32, ts: libc::statx_timestamp, what: &str) -> io::Result<SystemTime> {
        if self.stx.stx_mask & bit == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the file system does not report a {what} time for this file"),
            ));
        }
        let nanos = Duration::new(ts.tv_sec.unsigned_abs(), ts.tv_nsec);
        Ok(if ts.tv_sec >= 0 {
            SystemTime::UNIX_EPOCH + nanos
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(ts.tv_sec.unsigned_abs())
                + Duration::from_nanos(u64::from(ts.tv_nsec))
        })
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("file_type", &self.file_type())
            .field("len", &self.len())
            .field("permissions", &self.permissions())
            .field("modified", &self.modified().ok())
            .finish_non_exhaustive()
    }
}

/// The kind of a file.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileType(u32);

impl FileType {
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.0 == libc::S_IFDIR
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.0 == libc::S_IFREG
    }
    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.0 == libc::S_IFLNK
    }
    /// A named pipe.
    pub fn is_fifo(&self) -> bool {
        self.0 == libc::S_IFIFO
    }
    /// A Unix socket.
    pub fn is_socket(&self) -> bool {
        self.0 == libc::S_IFSOCK
    }
    /// A block device.
    pub fn is_block_device(&self) -> bool {
        self.0 == libc::S_IFBLK
    }
    /// A character device.
    pub fn is_char_device(&self) -> bool {
        self.0 == libc::S_IFCHR
    }
}

impl fmt::Debug for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::S_IFDIR => "dir",
            libc::S_IFREG => "file",
            libc::S_IFLNK => "symlink",
            libc::S_IFIFO => "fifo",
            libc::S_IFSOCK => "socket",
            libc::S_IFBLK => "block_device",
            libc::S_IFCHR => "char_device",
            _ => "unknown",
        };
        write!(f, "FileType({name})")
    }
}
