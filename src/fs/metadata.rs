use crate::platform::c;
use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use crate::platform::{FileStat, Timestamp};

/// Metadata of a file, from `statx` on Linux and `fstatat`/`fstat` elsewhere.
#[derive(Clone, Copy)]
pub struct Metadata {
    st: FileStat,
}

impl Metadata {
    pub(crate) fn from_stat(st: FileStat) -> Metadata {
        Metadata { st }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.st.size
    }

    /// Whether the size is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind of file.
    pub fn file_type(&self) -> FileType {
        FileType(self.st.kind)
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
        permissions(self.st.perm)
    }

    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.st.ino
    }

    /// Number of hard links (saturating at `u32::MAX`).
    pub fn nlink(&self) -> u32 {
        u32::try_from(self.st.nlink).unwrap_or(u32::MAX)
    }

    /// Owner's user id.
    pub fn uid(&self) -> u32 {
        self.st.uid
    }

    /// Owner's group id.
    pub fn gid(&self) -> u32 {
        self.st.gid
    }

    /// Preferred IO block size.
    pub fn blksize(&self) -> u32 {
        self.st.blksize
    }

    /// Allocated 512-byte blocks.
    pub fn blocks(&self) -> u64 {
        self.st.blocks
    }

    /// Last modification time.
    pub fn modified(&self) -> io::Result<SystemTime> {
        time(self.st.modified, "modification")
    }

    /// Last access time.
    pub fn accessed(&self) -> io::Result<SystemTime> {
        time(self.st.accessed, "access")
    }

    /// Creation (birth) time, where the file system records it.
    ///
    /// # Errors
    ///
    /// `Unsupported` when the file system does not report it.
    pub fn created(&self) -> io::Result<SystemTime> {
        time(self.st.created, "creation")
    }
}

fn time(ts: Option<Timestamp>, what: &str) -> io::Result<SystemTime> {
    let Some(ts) = ts else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the file system does not report a {what} time for this file"),
        ));
    };
    let nanos = Duration::new(ts.sec.unsigned_abs(), ts.nsec);
    Ok(if ts.sec >= 0 {
        SystemTime::UNIX_EPOCH + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(ts.sec.unsigned_abs())
            + Duration::from_nanos(u64::from(ts.nsec))
    })
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
pub struct FileType(c::mode_t);

/// The kinds of file, each with its predicate, its mode bits and its name in `Debug`.
macro_rules! file_kinds {
    ($($(#[$doc:meta])* $is:ident: $mode:path => $name:literal,)*) => {
        impl FileType {
            $(
                $(#[$doc])*
                pub fn $is(&self) -> bool {
                    self.0 == $mode
                }
            )*
        }

        impl fmt::Debug for FileType {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let name = match self.0 {
                    $($mode => $name,)*
                    _ => "unknown",
                };
                write!(f, "FileType({name})")
            }
        }
    };
}

file_kinds! {
    /// A directory.
    is_dir: c::S_IFDIR => "dir",
    /// A regular file.
    is_file: c::S_IFREG => "file",
    /// A symbolic link.
    is_symlink: c::S_IFLNK => "symlink",
    /// A named pipe.
    is_fifo: c::S_IFIFO => "fifo",
    /// A Unix socket.
    is_socket: c::S_IFSOCK => "socket",
    /// A block device.
    is_block_device: c::S_IFBLK => "block_device",
    /// A character device.
    is_char_device: c::S_IFCHR => "char_device",
}

impl FileType {
    /// The kind std reports for a directory entry.
    pub(crate) fn from_std(ft: std::fs::FileType) -> FileType {
        FileType(if ft.is_symlink() {
            c::S_IFLNK
        } else if ft.is_dir() {
            c::S_IFDIR
        } else if ft.is_file() {
            c::S_IFREG
        } else {
            special_kind(ft)
        })
    }
}

/// The kind of a file that is neither a directory, a regular file nor a symlink.
#[cfg(unix)]
fn special_kind(ft: std::fs::FileType) -> c::mode_t {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        c::S_IFIFO
    } else if ft.is_socket() {
        c::S_IFSOCK
    } else if ft.is_block_device() {
        c::S_IFBLK
    } else if ft.is_char_device() {
        c::S_IFCHR
    } else {
        0
    }
}

/// The kind of a file that is neither a directory, a regular file nor a symlink: none
/// that Windows' directory entries tell apart.
#[cfg(windows)]
fn special_kind(_ft: std::fs::FileType) -> c::mode_t {
    0
}

/// Permissions from mode bits.
#[cfg(unix)]
fn permissions(mode: u32) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(mode)
}

/// Permissions from mode bits: Windows keeps only "read-only" (no write bit set). std has
/// no constructor for them, so a value is taken once from an existing file's metadata (the
/// running executable's, which always exists) and adjusted.
#[cfg(windows)]
fn permissions(mode: u32) -> std::fs::Permissions {
    static BASE: std::sync::OnceLock<std::fs::Permissions> = std::sync::OnceLock::new();
    let mut p = BASE
        .get_or_init(|| {
            std::env::current_exe()
                .and_then(std::fs::metadata)
                .or_else(|_| std::fs::metadata(std::env::temp_dir()))
                .map(|m| m.permissions())
                .expect("coring: neither the executable nor the temporary directory can be stat'ed")
        })
        .clone();
    p.set_readonly(mode & 0o222 == 0);
    p
}
