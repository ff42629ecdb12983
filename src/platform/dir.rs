//! Reading a directory on the blocking pool, the same way on every platform: the standard
//! library's `ReadDir` (`opendir`/`readdir`, which is `getdents64` under glibc, on Unix;
//! `FindFirstFileExW`/`FindNextFileW` on Windows). No kernel has an asynchronous
//! directory read (io_uring has no getdents opcode), so a read-directory description
//! always runs on a pool thread, a batch of entries at a time.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

/// One entry, as the pool thread read it: its name and its type (which may have needed an
/// `lstat`, where the directory does not record types, done on the pool thread too).
#[derive(Debug)]
pub(crate) struct RawDirEntry {
    pub(crate) name: OsString,
    pub(crate) file_type: io::Result<std::fs::FileType>,
    /// The inode number (0 on Windows, where entries carry none).
    pub(crate) ino: u64,
}

/// An open directory stream and the entries of the last batch. Owned by the operation
/// that reads the next batch while that operation is in flight, and by the user's
/// `ReadDir` between batches: one thread at a time.
#[derive(Debug)]
pub(crate) struct DirCursor {
    /// The directory, opened by the first batch.
    path: PathBuf,
    iter: Option<std::fs::ReadDir>,
    /// Set once the stream ended (or failed): later batches are empty.
    done: bool,
    /// An error met after some entries of a batch: the next batch reports it.
    pending: Option<io::Error>,
    /// The entries the last batch read.
    pub(crate) entries: Vec<RawDirEntry>,
    /// The error the last batch ended with, whole (the completion carries only its code).
    pub(crate) error: Option<io::Error>,
}

impl DirCursor {
    /// A cursor over `path`, not opened yet.
    pub(crate) fn new(path: PathBuf) -> DirCursor {
        DirCursor {
            path,
            iter: None,
            done: false,
            pending: None,
            entries: Vec::new(),
            error: None,
        }
    }

    /// Opens the directory if it is not open yet, then reads up to `max` entries into
    /// `entries` (which it clears first; `.` and `..` are skipped). Returns how many it
    /// read (0 at the end), or `-code` of the error, which is kept whole in `error`.
    /// Blocks: runs on a pool thread.
    pub(crate) fn fill(&mut self, max: u32) -> i32 {
        self.entries.clear();
        self.error = None;
        if let Some(e) = self.pending.take() {
            return self.fail(e);
        }
        if self.done {
            return 0;
        }
        let iter = match &mut self.iter {
            Some(iter) => iter,
            None => match std::fs::read_dir(&self.path) {
                Ok(iter) => self.iter.insert(iter),
                Err(e) => return self.fail(e),
            },
        };
        while self.entries.len() < max as usize {
            match iter.next() {
                Some(Ok(entry)) => self.entries.push(RawDirEntry {
                    name: entry.file_name(),
                    file_type: entry.file_type(),
                    ino: ino(&entry),
                }),
                Some(Err(e)) => {
                    if self.entries.is_empty() {
                        return self.fail(e);
                    }
                    // Report what was read; the error comes with the next batch. A
                    // stream that failed once is not read again (std's iterator would
                    // repeat the error or skip ahead).
                    self.iter = None;
                    self.done = true;
                    self.pending = Some(e);
                    break;
                }
                None => {
                    self.done = true;
                    self.iter = None;
                    break;
                }
            }
        }
        self.entries.len() as i32
    }

    fn fail(&mut self, e: io::Error) -> i32 {
        self.done = true;
        self.iter = None;
        let code = e.raw_os_error().filter(|&c| c > 0).unwrap_or(super::c::EIO);
        self.error = Some(e);
        -code
    }
}

#[cfg(unix)]
fn ino(entry: &std::fs::DirEntry) -> u64 {
    use std::os::unix::fs::DirEntryExt;
    entry.ino()
}

#[cfg(windows)]
fn ino(_entry: &std::fs::DirEntry) -> u64 {
    0
}
