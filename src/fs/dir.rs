//! Reading a directory: [`read_dir`], a batch of entries at a time ([`ReadDir::next_batch`])
//! or one by one ([`ReadDir::next_entry`], or as a [`Stream`]).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;

use super::{FileType, Metadata};
use crate::driver::op::Op;
use crate::op::fs::{cstring, ReadDirBatch};
use crate::platform::dir::{DirCursor, RawDirEntry};

/// How many entries one batch reads at most: one pool round trip per this many entries.
const BATCH: u32 = 256;

/// Opens the directory `path` for reading its entries (`.` and `..` are left out).
///
/// No kernel reads directories asynchronously (io_uring has no getdents opcode), so every
/// backend reads them on the blocking pool, [`ReadDir::next_batch`]'s worth (256 entries)
/// per pool round trip, through std's `ReadDir` (`readdir`, which is `getdents64` on
/// Linux; `FindFirstFileExW`/`FindNextFileW` on Windows). The first batch is read here,
/// so a path that cannot be read fails at once. Entry types come with the entries (where
/// the file system does not record them, the pool thread asks with `lstat`).
///
/// ```
/// coring::start(async {
///     let mut dir = coring::fs::read_dir(".").await?;
///     while let Some(entry) = dir.next_entry().await? {
///         let _ = (entry.file_name(), entry.file_type()?.is_dir());
///     }
///     Ok::<_, std::io::Error>(())
/// })
/// .unwrap();
/// ```
///
/// # Errors
///
/// `NotFound`; `PermissionDenied`; ENOTDIR (Windows: `ERROR_DIRECTORY`) for a path that is
/// not a directory; `InvalidInput` for a path with an interior NUL byte.
pub async fn read_dir(path: impl AsRef<Path>) -> io::Result<ReadDir> {
    let path = path.as_ref();
    // The same refusal of NUL bytes as every other path call.
    cstring(path)?;
    let mut dir = ReadDir {
        path: path.to_path_buf(),
        cursor: Some(Box::new(DirCursor::new(path.to_path_buf()))),
        batch: None,
        buffered: VecDeque::new(),
        done: false,
    };
    let first = poll_fn(|cx| dir.poll_batch(cx)).await?;
    dir.buffered.extend(first);
    Ok(dir)
}

/// The entries of a directory, from [`read_dir`].
///
/// A batch in flight belongs to the `ReadDir`, not to the future that awaits it: a
/// dropped [`next_batch`](ReadDir::next_batch) or [`next_entry`](ReadDir::next_entry)
/// future loses nothing, and the next call collects that batch. After an error, or the
/// end, there are no more entries.
pub struct ReadDir {
    path: PathBuf,
    /// The directory stream, here between batches (`None` while a batch owns it).
    cursor: Option<Box<DirCursor>>,
    /// The batch being read.
    batch: Option<Op<ReadDirBatch>>,
    /// Entries read but not handed out yet.
    buffered: VecDeque<DirEntry>,
    /// The stream ended, or failed.
    done: bool,
}

impl fmt::Debug for ReadDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadDir")
            .field("path", &self.path)
            .field("buffered", &self.buffered.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ReadDir {
    /// The next entries: those read but not handed out yet, else up to 256 read now in one
    /// pool round trip. Empty at the end of the directory.
    ///
    /// # Errors
    ///
    /// As `readdir(3)` (EIO, ...): the directory cannot be read any further.
    pub async fn next_batch(&mut self) -> io::Result<Vec<DirEntry>> {
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        poll_fn(|cx| self.poll_batch(cx)).await
    }

    /// The next entry, `None` at the end of the directory.
    ///
    /// # Errors
    ///
    /// As [`next_batch`](ReadDir::next_batch).
    pub async fn next_entry(&mut self) -> io::Result<Option<DirEntry>> {
        poll_fn(|cx| self.poll_entry(cx)).await
    }

    fn poll_entry(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<DirEntry>>> {
        loop {
            if let Some(entry) = self.buffered.pop_front() {
                return Poll::Ready(Ok(Some(entry)));
            }
            let batch = ready!(self.poll_batch(cx))?;
            if batch.is_empty() {
                return Poll::Ready(Ok(None));
            }
            self.buffered.extend(batch);
        }
    }

    /// Polls the batch in flight, starting one first if there is none; an empty batch at
    /// the end.
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<DirEntry>>> {
        let batch = match &mut self.batch {
            Some(batch) => batch,
            None if self.done => return Poll::Ready(Ok(Vec::new())),
            None => {
                let cursor = self
                    .cursor
                    .take()
                    .expect("coring: ReadDir lost its cursor; this is a bug in coring");
                self.batch.insert(Op::new(ReadDirBatch::new(cursor, BATCH)))
            }
        };
        let (res, mut cursor) = ready!(Pin::new(batch).poll(cx));
        self.batch = None;
        let raw = std::mem::take(&mut cursor.entries);
        self.cursor = Some(cursor);
        Poll::Ready(match res {
            Ok(0) => {
                self.done = true;
                Ok(Vec::new())
            }
            Ok(_) => Ok(raw
                .into_iter()
                .map(|e| DirEntry::new(&self.path, e))
                .collect()),
            Err(e) => {
                self.done = true;
                Err(e)
            }
        })
    }
}

impl Stream for ReadDir {
    type Item = io::Result<DirEntry>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_entry(cx).map(io::Result::transpose)
    }
}

/// One entry of a directory, from [`ReadDir`].
pub struct DirEntry {
    path: PathBuf,
    /// The type, or why it could not be read (the entry vanished before an `lstat`).
    file_type: Result<FileType, (io::ErrorKind, String)>,
    ino: u64,
}

impl DirEntry {
    fn new(dir: &Path, raw: RawDirEntry) -> DirEntry {
        DirEntry {
            path: dir.join(&raw.name),
            file_type: raw
                .file_type
                .map(FileType::from_std)
                .map_err(|e| (e.kind(), e.to_string())),
            ino: raw.ino,
        }
    }

    /// The entry's path: the directory's path as given to [`read_dir`], joined with
    /// [`file_name`](DirEntry::file_name).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry's name in its directory.
    pub fn file_name(&self) -> &OsStr {
        self.path
            .file_name()
            .expect("coring: a directory entry's path ends in its name")
    }

    /// The entry's type (a symbolic link is reported as one, not followed).
    ///
    /// # Errors
    ///
    /// Where the directory does not record types and the entry could not be examined
    /// when it was read (it was removed meanwhile).
    pub fn file_type(&self) -> io::Result<FileType> {
        self.file_type.clone().map_err(|(kind, msg)| {
            io::Error::new(
                kind,
                format!("the type of {:?} could not be read: {msg}", self.path),
            )
        })
    }

    /// The entry's inode number (0 on Windows, whose entries carry none).
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The entry's metadata, not following a symbolic link
    /// ([`symlink_metadata`](super::symlink_metadata) of [`path`](DirEntry::path)).
    ///
    /// # Errors
    ///
    /// As [`symlink_metadata`](super::symlink_metadata).
    pub async fn metadata(&self) -> io::Result<Metadata> {
        super::symlink_metadata(&self.path).await
    }
}

impl fmt::Debug for DirEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirEntry")
            .field("path", &self.path)
            .field("file_type", &self.file_type.as_ref().ok())
            .finish_non_exhaustive()
    }
}
