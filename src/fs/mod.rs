//! Files and file-system operations, all through the runtime's backend.
//!
//! Every method takes `&self`, so one `File` (for example in an `Rc`) can have many
//! operations in flight at once.

mod beneath;
mod dir;
mod direct;
mod flags;
mod metadata;

pub use dir::{read_dir, DirEntry, ReadDir};
pub use direct::DioAlignment;
pub use flags::{Advice, AllocateMode, RenameFlags, SyncRangeFlags};
pub use metadata::{FileType, Metadata};

use crate::platform::{self, c};
use std::cell::OnceCell;
use std::fmt;
use std::io;
#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::buf::{BufResult, FixedBuf, IoBuf, IoBufMut};
use crate::driver::op::Op;
use crate::op::fs::{
    cstring, Fadvise, Fallocate, Fsync, Ftruncate, Link, Mkdir, Open, ReadLink, Rename, Statx,
    Symlink, SyncFileRange, Unlink,
};
use crate::op::rw::{Read, Readv, Write, Writev};
use crate::op::{self, SharedFd};

/// An open file.
///
/// Dropping it closes the descriptor synchronously once no operation uses it any more;
/// [`close`](File::close) closes it through the runtime and reports the error.
///
/// [`register`](File::register) gives the file a slot in the runtime's io_uring file
/// table, after which its operations on that runtime skip the kernel's per-operation file
/// lookup; with a [`FixedBufPool`](crate::buf::FixedBufPool),
/// [`read_fixed_at`](File::read_fixed_at) and [`write_fixed_at`](File::write_fixed_at)
/// skip pinning the buffer's pages too.
///
/// A file opened for direct IO ([`OpenOptions::direct`]) checks every read and write
/// against its [`DioAlignment`] before submitting it (see [`File::is_direct`]).
///
/// `!Send` and `!Sync`: it belongs to the runtime it is used on. To hand it to another
/// thread, take the std file out with [`into_std`](File::into_std), send that, and adopt
/// it there with [`from_std`](File::from_std).
pub struct File {
    fd: SharedFd,
    /// What direct IO on the file needs, once asked (at open for a direct file).
    dio: OnceCell<DioAlignment>,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("fd", &self.fd.raw())
            .field("direct", &self.fd.is_direct())
            .finish()
    }
}

impl File {
    /// The descriptor, for operations of other types that read the file
    /// (`TcpStream::send_file`).
    // Windows copies the file with `read_at` instead.
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn shared(&self) -> &SharedFd {
        &self.fd
    }

    /// A file of a descriptor coring opened, whose mode it knows.
    fn new(fd: SharedFd) -> File {
        File {
            fd,
            dio: OnceCell::new(),
        }
    }

    /// A file of a descriptor opened elsewhere: asks whether it was opened for direct IO
    /// (`O_DIRECT` among its status flags; not on Apple platforms or Windows, which cannot
    /// tell cheaply).
    fn adopt(fd: SharedFd) -> File {
        if platform::is_direct(fd.raw()) {
            fd.set_direct();
        }
        File::new(fd)
    }

    /// Readies a file opened with the direct flag: Apple's `F_NOCACHE`, the mark that turns
    /// on the checks, and the alignment, fetched now so that an error shows at the open.
    fn make_direct(&self) -> io::Result<()> {
        platform::set_direct(self.fd.raw())?;
        self.fd.set_direct();
        self.dio_alignment().map(drop)
    }

    /// Whether the file was opened for direct IO: by [`OpenOptions::direct`], by
    /// [`OpenOptions::custom_flags`] with `O_DIRECT`, or, for a file made from a descriptor
    /// opened elsewhere (`from_std`, `from_raw_fd`), with `O_DIRECT` among its status flags
    /// (Linux and FreeBSD only: Apple's `F_NOCACHE` and Windows' `FILE_FLAG_NO_BUFFERING`
    /// on a handle opened elsewhere go unnoticed, and the system's own checks apply).
    ///
    /// The reads and writes of a direct file (`read_at`, `write_at`, their `exact`/`all`,
    /// vectored and fixed forms) check the buffer's address, the offset and the length
    /// against [`dio_alignment`](File::dio_alignment) before they are submitted, and fail
    /// with `InvalidInput` naming the rule and what broke it, on every backend. A read of
    /// a direct file is never served from the page cache during submission: it goes to
    /// the backend's queue (io_uring's ring, the blocking pool, or IOCP).
    pub fn is_direct(&self) -> bool {
        self.fd.is_direct()
    }

    /// Whether this file's reads and writes go to the current runtime's polled ring
    /// ([`Builder::iopoll`](crate::Builder::iopoll)): the file is direct, the runtime has
    /// a polled ring ([`Runtime::iopoll_status`](crate::Runtime::iopoll_status) is not
    /// `Off`, and not `Unsupported` for want of a ring), and the kernel has not refused
    /// polled IO on this file's device (or, where its device is unknown, for this file).
    /// It turns `false` after such a refusal (the device has no poll queues, or its file
    /// system cannot poll), which coring handled by running the operation on the main
    /// ring; the IO of every direct file on that device stays there. `false` outside a
    /// runtime.
    pub fn is_polled(&self) -> bool {
        use crate::driver::Backend;
        let fd = self.fd.fd_ref();
        crate::runtime::context::try_with(|rt| {
            rt.driver
                .borrow()
                .backend()
                .poll_route()
                .is_some_and(|r| r.is_polled(&fd))
        })
        .unwrap_or(false)
    }

    /// What direct IO on this file needs: the alignment of buffer addresses and the unit
    /// of offsets and lengths. See [`DioAlignment`] for where each platform's figure comes
    /// from and what is assumed where the system says nothing. Asked once, then
    /// remembered (a direct file asks when it is opened); works for any file, direct or not,
    /// so code can size its buffers before opening a file for direct IO.
    ///
    /// It asks the system directly, on the calling thread: a metadata call on an open
    /// descriptor, which needs no IO (on Linux with `AT_STATX_DONT_SYNC`, so not even a
    /// network file system's server).
    ///
    /// # Errors
    ///
    /// The system's, from `statx`/`fstat` (EBADF for a closed descriptor). Missing
    /// information is not an error: the fallbacks of [`DioAlignment`] apply.
    ///
    /// ```
    /// use coring::buf::AlignedBuf;
    /// use coring::fs::File;
    ///
    /// coring::start(async {
    ///     let file = File::open("Cargo.toml").await?;
    ///     let align = file.dio_alignment()?;
    ///     assert!(align.memory().is_power_of_two() && align.offset().is_power_of_two());
    ///     let buf = AlignedBuf::new(align.offset(), align.memory());
    ///     let (res, buf) = file.read_at(buf, 0).await;
    ///     assert!(res? > 0 && buf.starts_with(b"[workspace]"));
    ///     Ok::<(), std::io::Error>(())
    /// })
    /// .unwrap();
    /// ```
    pub fn dio_alignment(&self) -> io::Result<DioAlignment> {
        if let Some(a) = self.dio.get() {
            return Ok(*a);
        }
        let a = platform::dio_alignment(self.fd.raw())?;
        Ok(*self.dio.get_or_init(|| a))
    }

    /// For a direct file, checks one transfer of `len` bytes at `buf` and file offset
    /// `pos` against its alignment; nothing for any other file.
    #[inline]
    fn check_direct(&self, buf: *const u8, len: usize, pos: u64) -> io::Result<()> {
        if !self.fd.is_direct() {
            return Ok(());
        }
        self.dio_alignment()?.check(buf, len, pos)
    }

    /// For a direct file, checks a vectored transfer at `pos` of `parts` (each buffer's
    /// address and length); nothing for any other file.
    fn check_direct_parts(
        &self,
        pos: u64,
        parts: impl Iterator<Item = (*const u8, usize)>,
    ) -> io::Result<()> {
        if !self.fd.is_direct() {
            return Ok(());
        }
        let align = self.dio_alignment()?;
        align.check_pos(pos)?;
        parts
            .enumerate()
            .try_for_each(|(i, (buf, len))| align.check_part(Some(i), buf, len))
    }

    /// Opens a file for reading (a FIFO without waiting for a writer: see
    /// [`OpenOptions::open`]).
    ///
    /// # Errors
    ///
    /// As `open(2)`: `NotFound`, `PermissionDenied`, ...; `InvalidInput` for a path with an
    /// interior NUL byte.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path).await
    }

    /// Opens a file for writing, creating it or truncating it.
    ///
    /// # Errors
    ///
    /// As [`File::open`].
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
    }

    /// Reads into the buffer, from its start, at file offset `pos`; returns how many bytes
    /// were read (0 at or past the end of the file) and the buffer, which now holds
    /// exactly those `n` bytes (a `Vec`'s length is set to `n`, whatever it was before).
    /// May read less than the buffer's capacity.
    ///
    /// To append to a `Vec` that already holds data, pass `vec.slice(vec.len()..)`.
    ///
    /// # Errors
    ///
    /// As `pread(2)`; `InvalidInput` (EINVAL) for `pos > i64::MAX`, and before submission
    /// for a buffer with no capacity (its `Ok(0)` would read as end-of-file); on a direct
    /// file, `InvalidInput` before submission for a buffer address, capacity or offset
    /// that breaks its [`DioAlignment`] (see [`File::is_direct`]).
    pub async fn read_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        let checked = crate::buf::check_room(buf.bytes_total(), "read_at")
            .and_then(|()| self.check_direct(buf.stable_ptr(), buf.bytes_total(), pos));
        if let Err(e) = checked {
            return (Err(e), buf);
        }
        Op::new(Read::new(&self.fd, buf, pos)).await
    }

    /// Reads until the buffer's whole capacity is filled.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the file ends first (the bytes read so far are initialised in
    /// the returned buffer). On a direct file, `InvalidInput` as for
    /// [`read_at`](File::read_at), for the whole buffer before the first read; a direct
    /// read that stops short at an unaligned length has met the end of the file, which
    /// is `UnexpectedEof` too.
    pub async fn read_exact_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        if let Err(e) = self.check_direct(buf.stable_ptr(), buf.bytes_total(), pos) {
            return (Err(e), buf);
        }
        op::read_exact(buf, |slice, done| async move {
            let pos = pos + done as u64;
            // Only the end of the file stops a direct read at an unaligned length: what
            // is left cannot be read directly, and there is nothing to read anyway.
            if self.fd.is_direct()
                && self
                    .check_direct(slice.stable_ptr(), slice.bytes_total(), pos)
                    .is_err()
            {
                return (Ok(0), slice);
            }
            self.read_at(slice, pos).await
        })
        .await
    }

    /// Writes the buffer's initialised bytes at file offset `pos`; returns how many were
    /// written (possibly fewer).
    ///
    /// # Errors
    ///
    /// As `pwrite(2)`; `InvalidInput` (EINVAL) for `pos > i64::MAX`; on a direct file,
    /// `InvalidInput` before submission for a buffer address, length (`bytes_init()`) or
    /// offset that breaks its [`DioAlignment`] (see [`File::is_direct`]).
    pub async fn write_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        if let Err(e) = self.check_direct(buf.stable_ptr(), buf.bytes_init(), pos) {
            return (Err(e), buf);
        }
        Op::new(Write::new(&self.fd, buf, pos)).await
    }

    /// Writes all of the buffer's initialised bytes at `pos`, looping over short writes.
    ///
    /// # Errors
    ///
    /// `WriteZero` if the file accepts no more bytes; on a direct file, `InvalidInput` as
    /// for [`write_at`](File::write_at).
    pub async fn write_all_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        op::write_all(buf, |slice, done| self.write_at(slice, pos + done as u64)).await
    }

    /// Writes the buffer's initialised bytes at `pos`, then flushes them (`fdatasync` with
    /// `datasync`, else `fsync`), as one [`link`](crate::link::link)ed chain: the flush
    /// starts only after the write has written every byte, and both go to the kernel in
    /// one trip on io_uring.
    ///
    /// Returns the write's result with the buffer, and the flush's result, which is
    /// `ECANCELED` ([`is_cancelled`](crate::cancel::is_cancelled)) when the write failed
    /// or was short: the flush did not run. [`write_all_at_then_sync`](File::write_all_at_then_sync)
    /// finishes a short write before flushing.
    ///
    /// # Example
    ///
    /// ```
    /// use coring::fs::File;
    ///
    /// coring::start(async {
    ///     let path = std::env::temp_dir().join(format!("coring-wts-doc-{}", std::process::id()));
    ///     let file = File::create(&path).await?;
    ///     let ((written, _buf), synced) = file.write_at_then_sync(b"record".to_vec(), 0, true).await;
    ///     assert_eq!(written?, 6);
    ///     synced?;
    ///     file.close().await?;
    ///     std::fs::remove_file(&path)
    /// })
    /// .unwrap();
    /// ```
    pub async fn write_at_then_sync<B: IoBuf>(
        &self,
        buf: B,
        pos: u64,
        datasync: bool,
    ) -> (BufResult<usize, B>, io::Result<()>) {
        crate::link::link(self.write_at(buf, pos), self.sync(datasync)).await
    }

    /// Writes all of the buffer's initialised bytes at `pos`, then flushes them
    /// (`fdatasync` with `datasync`, else `fsync`): the durable append of a log. Each
    /// write is [`link`](crate::link::link)ed to a flush, so the common case (every byte
    /// written at once) is one trip to the kernel on io_uring; after a short write (whose
    /// flush does not run) the rest is written the same way.
    ///
    /// # Errors
    ///
    /// The write's error (the flush did not run), `WriteZero` if the file accepts no more
    /// bytes, or the flush's error.
    pub async fn write_all_at_then_sync<B: IoBuf>(
        &self,
        buf: B,
        pos: u64,
        datasync: bool,
    ) -> BufResult<(), B> {
        let total = buf.bytes_init();
        if total == 0 {
            return (self.sync(datasync).await, buf);
        }
        // Each write linked to a flush; a short write's flush is cancelled and the rest
        // goes with the next one, so the last flush is the one that counts.
        let synced = std::cell::Cell::new(Ok(()));
        let (res, buf) = crate::op::write_all(buf, |slice, done| {
            let synced = &synced;
            async move {
                let write = self.write_at(slice, pos + done as u64);
                let (written, flushed) = crate::link::link(write, self.sync(datasync)).await;
                synced.set(flushed);
                written
            }
        })
        .await;
        (res.and_then(|()| synced.replace(Ok(()))), buf)
    }

    /// Reads into several buffers in order with one operation (`preadv`).
    ///
    /// # Errors
    ///
    /// As `preadv(2)`; `InvalidInput` (EINVAL) for more than 1024 buffers, and for
    /// buffers with no capacity in all; on a direct
    /// file, `InvalidInput` before submission if the offset or any buffer's address or
    /// capacity breaks its [`DioAlignment`] (the message names the buffer by index).
    pub async fn readv_at<B: IoBufMut>(&self, bufs: Vec<B>, pos: u64) -> BufResult<usize, Vec<B>> {
        let parts = bufs.iter().map(|b| (b.stable_ptr(), b.bytes_total()));
        let room = bufs.iter().map(IoBuf::bytes_total).sum();
        let checked = crate::buf::check_room(room, "readv_at")
            .and_then(|()| self.check_direct_parts(pos, parts));
        if let Err(e) = checked {
            return (Err(e), bufs);
        }
        Op::new(Readv::new(&self.fd, bufs, pos)).await
    }

    /// Writes several buffers' initialised bytes in order with one operation (`pwritev`).
    ///
    /// # Errors
    ///
    /// As `pwritev(2)`; on a direct file, `InvalidInput` before submission if the offset
    /// or any buffer's address or length breaks its [`DioAlignment`].
    pub async fn writev_at<B: IoBuf>(&self, bufs: Vec<B>, pos: u64) -> BufResult<usize, Vec<B>> {
        let parts = bufs.iter().map(|b| (b.stable_ptr(), b.bytes_init()));
        if let Err(e) = self.check_direct_parts(pos, parts) {
            return (Err(e), bufs);
        }
        Op::new(Writev::new(&self.fd, bufs, pos)).await
    }

    /// Reads into a buffer of a [`FixedBufPool`](crate::buf::FixedBufPool) at file offset
    /// `pos`, like [`read_at`](File::read_at): returns how many bytes were read (0 at or
    /// past the end of the file) and the buffer, whose `len()` now covers them.
    ///
    /// If the buffer's pool is registered with this runtime's io_uring, the kernel reads
    /// into it by index (IORING_OP_READ_FIXED); otherwise (fallback backend, unregistered
    /// pool, another runtime) this is a plain read into the same memory. Page-cache hits
    /// may complete during submission on every backend, as for `read_at`.
    ///
    /// The operation owns the buffer until the kernel is done with it: if this future is
    /// dropped while the read is in flight, the buffer returns to its pool only after the
    /// read's final completion.
    ///
    /// # Errors
    ///
    /// As `pread(2)`; `InvalidInput` (EINVAL) for `pos > i64::MAX`; on a direct file, as
    /// for [`read_at`](File::read_at) (a pool made by
    /// [`FixedBufPool::with_alignment`](crate::buf::FixedBufPool::with_alignment) has
    /// aligned buffers).
    pub async fn read_fixed_at(&self, buf: FixedBuf, pos: u64) -> BufResult<usize, FixedBuf> {
        if let Err(e) = self.check_direct(buf.stable_ptr(), buf.bytes_total(), pos) {
            return (Err(e), buf);
        }
        Op::new(Read::fixed(&self.fd, buf, pos)).await
    }

    /// Writes a [`FixedBufPool`](crate::buf::FixedBufPool) buffer's content (`len()` bytes)
    /// at file offset `pos`, like [`write_at`](File::write_at); returns how many bytes were
    /// written (possibly fewer) and the buffer. IORING_OP_WRITE_FIXED when the pool is
    /// registered with this runtime's io_uring, a plain write otherwise.
    ///
    /// # Errors
    ///
    /// As `pwrite(2)`; `InvalidInput` (EINVAL) for `pos > i64::MAX`; on a direct file, as
    /// for [`write_at`](File::write_at).
    pub async fn write_fixed_at(&self, buf: FixedBuf, pos: u64) -> BufResult<usize, FixedBuf> {
        if let Err(e) = self.check_direct(buf.stable_ptr(), buf.bytes_init(), pos) {
            return (Err(e), buf);
        }
        Op::new(Write::fixed(&self.fd, buf, pos)).await
    }

    /// Registers the file with the current runtime's io_uring: gives it a slot in the
    /// ring's registered-file table (a sparse table created on first use, with room for
    /// up to 4096 files, fewer under a lower `RLIMIT_NOFILE`). From then on every operation
    /// on the file submitted on this runtime names the slot (IOSQE_FIXED_FILE) instead of
    /// the descriptor, which spares the kernel a file lookup and reference count per
    /// operation. Calling it again on the same runtime does nothing.
    ///
    /// On the fallback backend it succeeds and does nothing, so code need not care which
    /// backend runs it. On another runtime (another thread's, or a second one on this
    /// thread) operations use the plain descriptor: a slot is only ever used with the ring
    /// that owns it. The slot is released when the file is closed or dropped (after the
    /// last operation using it has finished, and before the descriptor is closed), or by
    /// [`unregister`](File::unregister).
    ///
    /// # Errors
    ///
    /// - `AlreadyExists` while the file is registered with another runtime that still
    ///   exists;
    /// - `QuotaExceeded` when every slot of the table is taken;
    /// - the kernel's error from creating the table or filling the slot (EMFILE when
    ///   `RLIMIT_NOFILE` is 0, EBADF for a descriptor that is not open).
    ///
    /// # Panics
    ///
    /// Outside a runtime (call it inside `Runtime::block_on` or a task).
    ///
    /// ```
    /// use coring::fs::File;
    ///
    /// coring::start(async {
    ///     let file = File::open("Cargo.toml").await?;
    ///     file.register()?;
    ///     // true on io_uring, false on the fallback backend: the code is the same.
    ///     let _fixed = file.is_registered();
    ///     let (res, _buf) = file.read_at(Vec::with_capacity(64), 0).await;
    ///     res?;
    ///     file.close().await // releases the slot, then closes the descriptor
    /// })
    /// .unwrap();
    /// ```
    pub fn register(&self) -> io::Result<()> {
        self.fd.register("this File")
    }

    /// Releases the file's registered slot now (it is released on close anyway); does
    /// nothing if the file is not registered.
    ///
    /// # Errors
    ///
    /// `ResourceBusy` while an operation (for example a cancelled read the kernel has not
    /// finished) still uses the file: it may name the slot, so the slot must not be given
    /// to another file yet.
    pub fn unregister(&self) -> io::Result<()> {
        self.fd.unregister("File::unregister", 0)
    }

    /// Whether operations on the file submitted now, on the runtime running on this
    /// thread, use a registered slot: `false` on the fallback backend, outside a runtime,
    /// and on any runtime but the one the file was registered with.
    pub fn is_registered(&self) -> bool {
        self.fd.is_registered()
    }

    /// Flushes data and metadata to the device (`fsync`; `F_FULLFSYNC` on Apple platforms).
    pub async fn sync_all(&self) -> io::Result<()> {
        self.sync(false).await
    }

    /// `fdatasync` with `datasync`, else `fsync`.
    fn sync(&self, datasync: bool) -> Op<Fsync> {
        Op::new(Fsync::new(&self.fd, datasync))
    }

    /// Flushes data, and only the metadata needed to read it back (`fdatasync`; on Apple
    /// platforms, which lack it, `F_FULLFSYNC`).
    pub async fn sync_data(&self) -> io::Result<()> {
        Op::new(Fsync::new(&self.fd, true)).await
    }

    /// Allocates disk space for `len` bytes from `offset` (`fallocate(2)` with mode 0), so
    /// that later writes there do not fail for lack of space; the file grows to
    /// `offset + len` if that is past its end, and bytes it did not have read as zeros.
    ///
    /// On FreeBSD this is `posix_fallocate`; on Apple platforms `F_PREALLOCATE` up to the
    /// range's end followed by `ftruncate`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (EINVAL) for `len == 0` or an `offset` or `len` above `i64::MAX`;
    /// `FileTooLarge` (EFBIG) past the file system's limit; `StorageFull` (ENOSPC); EBADF
    /// if the file is not open for writing; `Unsupported` (EOPNOTSUPP) where the file
    /// system cannot preallocate.
    pub async fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        Op::new(Fallocate::new(&self.fd, 0, offset, len)).await
    }

    /// `fallocate(2)` with a mode: allocates, deallocates or zeroes `len` bytes from
    /// `offset`, as [`AllocateMode`] says. `allocate_with(o, l, AllocateMode::Extend)` is
    /// [`allocate(o, l)`](File::allocate).
    ///
    /// On io_uring this is IORING_OP_FALLOCATE (the blocking pool where the kernel lacks
    /// it); elsewhere a pool thread runs it.
    ///
    /// ```
    /// use coring::fs::{AllocateMode, File, OpenOptions};
    ///
    /// coring::start(async {
    ///     let path = std::env::temp_dir().join(format!("coring-doc-punch-{}", std::process::id()));
    ///     let f = OpenOptions::new().read(true).write(true).create(true).open(&path).await?;
    ///     f.write_all_at(vec![7u8; 8192], 0).await.0?;
    ///     // Free the first 4 KiB: it reads as zeros, the size stays 8192.
    ///     match f.allocate_with(0, 4096, AllocateMode::PunchHole).await {
    ///         Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {} // platform or file system
    ///         r => r?,
    ///     }
    ///     assert_eq!(f.metadata().await?.len(), 8192);
    ///     f.close().await?;
    ///     coring::fs::remove_file(&path).await
    /// })
    /// .unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`allocate`](File::allocate); `Unsupported` with a message for a mode the
    /// platform lacks (FreeBSD and Apple platforms have only [`AllocateMode::Extend`]),
    /// and `Unsupported` (EOPNOTSUPP) for one the file system lacks.
    pub async fn allocate_with(&self, offset: u64, len: u64, mode: AllocateMode) -> io::Result<()> {
        let bits = mode.bits();
        if let Some(why) = platform::unsupported_allocate_mode(bits) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("File::allocate_with({mode:?}): {why}"),
            ));
        }
        Op::new(Fallocate::new(&self.fd, bits, offset, len)).await
    }

    /// Sets the file's size to `len` bytes (`ftruncate(2)`): cut short, or grown with
    /// bytes that read as zeros (without allocating them; see
    /// [`allocate`](File::allocate) for that).
    ///
    /// io_uring runs it as IORING_OP_FTRUNCATE (Linux 6.9 and later; the blocking pool on
    /// older kernels); elsewhere a pool thread runs `ftruncate`, and on Windows
    /// `SetFileInformationByHandle(FileEndOfFileInfo)`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (EINVAL) for `len > i64::MAX`, and on Linux for a file not open for
    /// writing or not a regular file (a directory); on Windows `PermissionDenied` for a
    /// file open only for reading; `FileTooLarge` (EFBIG) past the file system's limit.
    pub async fn set_len(&self, len: u64) -> io::Result<()> {
        Op::new(Ftruncate::new(&self.fd, len)).await
    }

    /// Writes back a range of the file's dirty pages, or waits for that, as `flags` says
    /// (`sync_file_range(2)`); `len == 0` means "to the end of the file". Not a durability
    /// guarantee (no metadata, no drive cache flush): for that, [`sync_data`](File::sync_data).
    ///
    /// io_uring runs it as IORING_OP_SYNC_FILE_RANGE (a range longer than 4 GiB, which the
    /// SQE cannot express, on the blocking pool); the readiness backend on a pool thread.
    ///
    /// Other platforms have no such call. There, empty flags do nothing (as on Linux), and
    /// any other flags write the **whole** file's data back and wait for it, which is
    /// more, and slower, than asked: `fdatasync` on FreeBSD, `fsync(2)` on Apple platforms
    /// (not `F_FULLFSYNC`), `FlushFileBuffers` on Windows (which needs a file open for
    /// writing: `PermissionDenied` otherwise).
    ///
    /// # Errors
    ///
    /// `InvalidInput` (EINVAL) when `offset + len` exceeds `i64::MAX` (on every platform);
    /// on Linux ESPIPE for a pipe, and EBADF/EINVAL as `sync_file_range(2)` gives them.
    pub async fn sync_range(&self, offset: u64, len: u64, flags: SyncRangeFlags) -> io::Result<()> {
        Op::new(SyncFileRange::new(&self.fd, offset, len, flags.bits())).await
    }

    /// Tells the kernel how `len` bytes from `offset` will be accessed (`posix_fadvise(2)`);
    /// `len == 0` means "to the end of the file". A hint: it changes no data.
    ///
    /// io_uring runs it as IORING_OP_FADVISE (a range longer than 4 GiB on the blocking
    /// pool); the readiness backend on a pool thread. Apple platforms have no
    /// `posix_fadvise` and Windows no equivalent: there it does nothing and succeeds.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (EINVAL) for `offset` or `len` above `i64::MAX`; on Linux and
    /// FreeBSD ESPIPE for a pipe, EBADF for a file that is not open.
    pub async fn advise(&self, offset: u64, len: u64, advice: Advice) -> io::Result<()> {
        Op::new(Fadvise::new(&self.fd, offset, len, advice.bits())).await
    }

    /// The file's metadata (`statx` on the open descriptor; `fstat` where there is no statx).
    pub async fn metadata(&self) -> io::Result<Metadata> {
        Op::new(Statx::fd(&self.fd)).await.map(Metadata::from_stat)
    }

    /// Closes the file through the runtime, reporting the kernel's verdict.
    ///
    /// Waits first for operations still holding the descriptor (for example a cancelled
    /// read the kernel has not released yet).
    pub async fn close(self) -> io::Result<()> {
        self.fd.close().await
    }

    /// Wraps a standard library file (see [`File::is_direct`] for one opened with
    /// `O_DIRECT`).
    pub fn from_std(file: std::fs::File) -> File {
        File::adopt(SharedFd::new(crate::platform::FromRaw::into_raw(file)))
    }

    /// Converts into a standard library file.
    ///
    /// # Errors
    ///
    /// Gives `self` back if an operation (for example one being cancelled) still uses the
    /// descriptor. On Windows, where coring opens disk files for overlapped IO and std
    /// reads them synchronously, the std file is the same file opened again through the
    /// handle (`ReOpenFile`, with the widest access the handle allows; its file position
    /// starts at 0).
    pub fn into_std(self) -> Result<std::fs::File, File> {
        let File { fd, dio } = self;
        match fd.into_raw() {
            Ok(fd) => {
                let fd = crate::platform::file_for_std(fd);
                // SAFETY: the descriptor is ours alone (into_raw), and std takes it over.
                Ok(unsafe { <std::fs::File as crate::platform::FromRaw>::from_raw(fd) })
            }
            Err(fd) => Err(File { fd, dio }),
        }
    }
}

impl From<std::fs::File> for File {
    fn from(file: std::fs::File) -> File {
        File::from_std(file)
    }
}

#[cfg(unix)]
impl From<OwnedFd> for File {
    fn from(fd: OwnedFd) -> File {
        File::adopt(SharedFd::new(fd.into_raw_fd()))
    }
}

#[cfg(unix)]
impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

#[cfg(unix)]
impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor stays open for as long as `self` is borrowed.
        unsafe { BorrowedFd::borrow_raw(self.fd.raw()) }
    }
}

#[cfg(unix)]
impl FromRawFd for File {
    /// # Safety
    ///
    /// `fd` must be an open descriptor that the caller owns and gives up.
    unsafe fn from_raw_fd(fd: RawFd) -> File {
        File::adopt(SharedFd::new(fd))
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsRawHandle for File {
    fn as_raw_handle(&self) -> std::os::windows::io::RawHandle {
        crate::platform::windows::handle(self.fd.raw())
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsHandle for File {
    fn as_handle(&self) -> std::os::windows::io::BorrowedHandle<'_> {
        // SAFETY: the handle stays open for as long as `self` is borrowed.
        unsafe {
            std::os::windows::io::BorrowedHandle::borrow_raw(crate::platform::windows::handle(
                self.fd.raw(),
            ))
        }
    }
}

#[cfg(windows)]
impl std::os::windows::io::FromRawHandle for File {
    /// # Safety
    ///
    /// `handle` must be an open file handle that the caller owns and gives up.
    unsafe fn from_raw_handle(handle: std::os::windows::io::RawHandle) -> File {
        // Handle values fit 32 bits (see `platform::windows`).
        File::adopt(SharedFd::new(handle as isize as i32))
    }
}

#[cfg(windows)]
impl From<std::os::windows::io::OwnedHandle> for File {
    fn from(handle: std::os::windows::io::OwnedHandle) -> File {
        File::from_std(std::fs::File::from(handle))
    }
}

/// Options for opening a file, as [`std::fs::OpenOptions`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    direct: bool,
    custom_flags: i32,
    mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// All options off, mode 0o666 (before the umask).
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            direct: false,
            custom_flags: 0,
            mode: 0o666,
        }
    }

    /// Open for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }

    /// Open for appending (implies writing; positional writes still append on Linux).
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }

    /// Truncate an existing file to length 0 (needs write access).
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }

    /// Create the file if it does not exist (needs write or append access).
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }

    /// Create the file, failing with `AlreadyExists` if it exists.
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }

    /// Open for direct IO: reads and writes move between the device and the caller's
    /// buffer without the page cache. `O_DIRECT` on Linux and FreeBSD;
    /// `FILE_FLAG_NO_BUFFERING` on Windows; Apple platforms have no `O_DIRECT`, so the
    /// file is opened normally and `fcntl(F_NOCACHE, 1)` turns caching off for it.
    ///
    /// Direct IO needs aligned buffers, offsets and lengths ([`File::dio_alignment`],
    /// fetched at the open): use [`AlignedBuf`](crate::buf::AlignedBuf) or
    /// [`FixedBufPool::with_alignment`](crate::buf::FixedBufPool::with_alignment). coring
    /// checks every read and write of the file before submitting it and fails a misaligned
    /// one with `InvalidInput` naming the rule and the culprit (see [`File::is_direct`]),
    /// on every platform, rather than leaving it to the kernel's bare EINVAL (or to
    /// Darwin, which would not object).
    ///
    /// It does not imply write-through (`O_SYNC`, `FILE_FLAG_WRITE_THROUGH`): a completed
    /// write may sit in the device's volatile cache until
    /// [`sync_data`](File::sync_data).
    ///
    /// ```no_run
    /// use coring::buf::AlignedBuf;
    /// use coring::fs::OpenOptions;
    ///
    /// coring::start(async {
    ///     let file = OpenOptions::new().read(true).write(true).create(true).direct(true)
    ///         .open("/var/tmp/data.bin").await?;
    ///     let align = file.dio_alignment()?;
    ///     let mut buf = AlignedBuf::zeroed(align.offset(), align.memory());
    ///     buf[..5].copy_from_slice(b"hello");
    ///     let (res, _buf) = file.write_all_at(buf, 0).await;
    ///     res?;
    ///     file.sync_data().await
    /// })
    /// .unwrap();
    /// ```
    pub fn direct(&mut self, on: bool) -> &mut Self {
        self.direct = on;
        self
    }

    /// Extra `open(2)` flags; access-mode bits are ignored. `O_DIRECT` here is the same as
    /// [`direct(true)`](Self::direct).
    pub fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.custom_flags = flags;
        self
    }

    /// Permission bits for a newly created file (default 0o666, before the umask).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    fn flags(&self) -> io::Result<i32> {
        let access = match (self.read, self.write, self.append) {
            (true, false, false) => c::O_RDONLY,
            (false, true, false) => c::O_WRONLY,
            (true, true, false) => c::O_RDWR,
            (false, _, true) => c::O_WRONLY | c::O_APPEND,
            (true, _, true) => c::O_RDWR | c::O_APPEND,
            (false, false, false) => {
                return Err(invalid(
                    "OpenOptions: set at least one of read, write or append",
                ))
            }
        };
        let writable = self.write || self.append;
        if (self.truncate || self.create || self.create_new) && !writable {
            return Err(invalid(
                "OpenOptions: truncate, create and create_new need write or append access",
            ));
        }
        if self.truncate && self.append {
            return Err(invalid(
                "OpenOptions: truncate and append contradict each other",
            ));
        }
        let creation = if self.create_new {
            c::O_CREAT | c::O_EXCL
        } else {
            (if self.create { c::O_CREAT } else { 0 })
                | (if self.truncate { c::O_TRUNC } else { 0 })
        };
        let direct = if self.direct { platform::O_DIRECT } else { 0 };
        Ok(access | creation | direct | (self.custom_flags & !c::O_ACCMODE))
    }

    /// Whether the open asks for direct IO, by [`direct`](Self::direct) or by `O_DIRECT`
    /// among the flags.
    fn is_direct(&self, flags: i32) -> bool {
        self.direct || (platform::O_DIRECT != 0 && flags & platform::O_DIRECT != 0)
    }

    /// Opens `path` with these options.
    ///
    /// Opening a FIFO does not wait for its other end: the open runs with `O_NONBLOCK`
    /// (cleared on the new descriptor again unless [`custom_flags`](Self::custom_flags)
    /// asked for it), so opening a FIFO for reading succeeds at once (reads then see end of
    /// file until a writer opens it), and for writing without a reader fails with ENXIO,
    /// on every backend (as `open(2)` with `O_NONBLOCK` does). A device that acts on
    /// `O_NONBLOCK` at open (a serial line not waiting for carrier) opens that way too. An
    /// open that would have to wait for a lease another process holds on the file is
    /// tried again without `O_NONBLOCK` and waits, as `open(2)` does.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for contradictory options or a path with a NUL byte; otherwise as
    /// `open(2)` (ENXIO for a FIFO opened for writing with no reader; EINVAL, which is
    /// `InvalidInput`, for direct IO on a file system that cannot do it, such as tmpfs
    /// before Linux 6.6).
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let flags = self.flags()?;
        let path = cstring(path.as_ref())?;
        let fd = op::fs::open(|| Open::new(path.clone(), flags, self.mode)).await?;
        let file = File::new(fd);
        if self.is_direct(flags) {
            file.make_direct()?;
        }
        Ok(file)
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Reads a whole file into a `Vec` (as `std::fs::read`): sized from its metadata, read
/// until end of file (so a file that grows or shrinks meanwhile is read as it is).
///
/// # Errors
///
/// As [`File::open`] and [`File::read_at`].
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let file = File::open(path).await?;
    let size = file.metadata().await.map_or(0, |m| m.len());
    // Room for the whole file and one byte more, so a file of the size metadata said
    // ends in one read past it.
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(usize::MAX / 2) + 1);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(8 * 1024));
        }
        let at = buf.len();
        let (res, b) = file.read_at(buf.slice(at..), at as u64).await;
        buf = b.into_inner();
        if res? == 0 {
            break;
        }
    }
    file.close().await?;
    Ok(buf)
}

/// Reads a whole file into a `String` (as `std::fs::read_to_string`).
///
/// # Errors
///
/// As [`read`], and `InvalidData` if the file is not UTF-8.
pub async fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    String::from_utf8(read(path).await?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("coring::fs::read_to_string: the file is not UTF-8: {e}"),
        )
    })
}

/// Writes `contents` as the whole of a file, creating it or truncating it (as
/// `std::fs::write`); the buffer comes back.
///
/// # Errors
///
/// As [`File::create`] and [`File::write_all_at`].
pub async fn write<B: IoBuf>(path: impl AsRef<Path>, contents: B) -> BufResult<(), B> {
    let file = match File::create(path).await {
        Ok(f) => f,
        Err(e) => return (Err(e), contents),
    };
    let (res, contents) = file.write_all_at(contents, 0).await;
    let closed = file.close().await;
    (res.and(closed), contents)
}

/// Copies the content of file `from` to `to` (created or truncated), and its permission
/// bits, as `std::fs::copy`; returns the bytes copied. Through one 1 MiB buffer.
///
/// # Errors
///
/// As opening, reading and writing the two files.
pub async fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<u64> {
    let src = File::open(from).await?;
    let meta = src.metadata().await?;
    let dst = File::create(to.as_ref()).await?;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut pos = 0u64;
    loop {
        let (res, b) = src.read_at(buf, pos).await;
        let n = res?;
        if n == 0 {
            break;
        }
        let (res, b) = dst.write_all_at(b, pos).await;
        res?;
        pos += n as u64;
        buf = b;
    }
    // A metadata call, not IO: done in place (std has no owned-buffer form of it).
    std::fs::set_permissions(to.as_ref(), meta.permissions())?;
    src.close().await?;
    dst.close().await?;
    Ok(pos)
}

/// Removes a file (`unlinkat`).
pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    Op::new(Unlink::new(cstring(path.as_ref())?, false)).await
}

/// Removes an empty directory (`unlinkat` with `AT_REMOVEDIR`).
pub async fn remove_dir(path: impl AsRef<Path>) -> io::Result<()> {
    Op::new(Unlink::new(cstring(path.as_ref())?, true)).await
}

/// Creates a directory with mode 0o777 (before the umask).
pub async fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    Op::new(Mkdir::new(cstring(path.as_ref())?, 0o777)).await
}

/// Renames `from` to `to`, replacing `to` if it exists (`renameat`).
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    let from = cstring(from.as_ref())?;
    let to = cstring(to.as_ref())?;
    Op::new(Rename::new(from, to, 0)).await
}

/// Renames `from` to `to` with [`RenameFlags`] (`renameat2(2)`): without replacing an
/// existing `to` (`no_replace`), or swapping the two (`exchange`), atomically.
///
/// io_uring runs it as IORING_OP_RENAMEAT with the flags; the readiness backend as
/// `renameat2` on a pool thread. Apple platforms use `renameatx_np` (`RENAME_EXCL`,
/// `RENAME_SWAP`); Windows `MoveFileExW` without `MOVEFILE_REPLACE_EXISTING` for
/// `no_replace`, and has no exchange; FreeBSD has neither.
///
/// # Errors
///
/// `AlreadyExists` (EEXIST; Windows `ERROR_ALREADY_EXISTS`) when `no_replace` finds `to`;
/// `NotFound` when `exchange` misses either path; `InvalidInput` when both flags are set;
/// `Unsupported` with a message for a flag the platform lacks (FreeBSD: both; Windows:
/// `exchange`), and EINVAL where the file system lacks it (Linux).
pub async fn rename_with(
    from: impl AsRef<Path>,
    to: impl AsRef<Path>,
    flags: RenameFlags,
) -> io::Result<()> {
    if flags.no_replace && flags.exchange {
        return Err(invalid(
            "rename_with: no_replace and exchange exclude each other (an exchange never \
             replaces)",
        ));
    }
    if let Some(why) = platform::unsupported_rename_flags(flags.bits()) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("rename_with({flags:?}): {why}"),
        ));
    }
    let from = cstring(from.as_ref())?;
    let to = cstring(to.as_ref())?;
    Op::new(Rename::new(from, to, flags.bits())).await
}

/// Creates `link`, a symbolic link whose content is `target` (`symlinkat(2)`); `target`
/// need not exist, and a relative one is resolved from `link`'s directory when the link
/// is followed.
///
/// io_uring runs it as IORING_OP_SYMLINKAT (5.15; the blocking pool before); elsewhere a
/// pool thread. On Windows (`CreateSymbolicLinkW`) the link is a directory link if
/// `target` names an existing directory, else a file link; creating one needs the
/// symbolic-link privilege or developer mode.
///
/// # Errors
///
/// `AlreadyExists` if `link` exists; `NotFound` if its directory does not;
/// `PermissionDenied` without the right (Windows: without the privilege).
pub async fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    let target = cstring(target.as_ref())?;
    let link = cstring(link.as_ref())?;
    Op::new(Symlink::new(target, link)).await
}

/// Creates `dst`, a new name (hard link) for the file `src` (`linkat(2)`; a symbolic link
/// `src` is linked itself, not followed).
///
/// io_uring runs it as IORING_OP_LINKAT (5.15; the blocking pool before); elsewhere a
/// pool thread (`CreateHardLinkW` on Windows).
///
/// # Errors
///
/// `AlreadyExists` if `dst` exists; `NotFound` if `src` does not; EPERM for a directory
/// `src`; EXDEV across file systems.
pub async fn hard_link(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> io::Result<()> {
    let src = cstring(src.as_ref())?;
    let dst = cstring(dst.as_ref())?;
    Op::new(Link::new(src, dst)).await
}

/// The content of the symbolic link `path` (`readlinkat(2)`), not resolved any further.
///
/// io_uring has no readlink opcode: every backend runs it on the blocking pool (Windows:
/// std's `read_link`, which also reads junctions).
///
/// # Errors
///
/// `InvalidInput` (EINVAL) if `path` is not a symbolic link; `NotFound` if it does not
/// exist.
pub async fn read_link(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    let path = cstring(path.as_ref())?;
    // Most links are short; a result that fills the buffer may have been cut short, so
    // the call is repeated with twice the room.
    let mut capacity = 256;
    loop {
        let buf = Op::new(ReadLink::new(path.clone(), capacity)).await?;
        if buf.len() < capacity {
            return Ok(path_from_bytes(buf));
        }
        capacity = capacity
            .checked_mul(2)
            .filter(|&c| c <= u32::MAX as usize)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "read_link: the link's content does not fit 4 GiB",
                )
            })?;
    }
}

/// A path from the bytes a `readlink` wrote (Unix: any bytes).
#[cfg(unix)]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

/// A path from the bytes the Windows executor wrote: the whole of an `OsStr`'s encoded
/// bytes (WTF-8), never a part of them (a cut-short result is discarded).
#[cfg(windows)]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    // SAFETY: the executor copied `OsStr::as_encoded_bytes` of std's `read_link` result in
    // full, in this same binary.
    PathBuf::from(unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(bytes) })
}

/// Metadata of a path, following symlinks (`statx`, or `fstatat` where there is none).
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    let path = cstring(path.as_ref())?;
    Op::new(Statx::path(path, true))
        .await
        .map(Metadata::from_stat)
}

/// Metadata of a path, not following a final symlink.
pub async fn symlink_metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    let path = cstring(path.as_ref())?;
    Op::new(Statx::path(path, false))
        .await
        .map(Metadata::from_stat)
}

#[cfg(feature = "fault-injection")]
impl crate::fault::sealed::Sealed for File {}

#[cfg(feature = "fault-injection")]
impl crate::fault::FaultTarget for File {
    fn fault_id(&self) -> u64 {
        self.fd.id()
    }
}
