//! The ring's registered-file and registered-buffer tables (see [`crate::driver::fixed`]).
//!
//! Both tables are sparse: created empty, lazily, at the first registration of their kind
//! (IORING_REGISTER_FILES2 / BUFFERS2 with IORING_RSRC_REGISTER_SPARSE), then filled and
//! cleared entry by entry (IORING_REGISTER_FILES_UPDATE / BUFFERS_UPDATE). Free entries are
//! kept as a sorted list of ranges: a file takes one entry, a buffer pool one per buffer,
//! consecutive.
//!
//! The registry is shared (`Rc`) by the backend and by every registration, and talks to
//! the kernel through the ring's descriptor with `io_uring_register(2)` itself rather than
//! through the ring object: a registration is released from `Drop` (a file's last
//! reference, a pool's last buffer), which can run anywhere, including inside the driver
//! while it finishes orphaned operations, where the ring cannot be borrowed. The backend's
//! `Drop` detaches the registry before the ring's descriptor closes; registrations that
//! outlive the ring then release nothing (the kernel cleared the tables with the ring).

use std::cell::{Cell, RefCell};
use std::io;
use std::num::NonZeroU32;
use std::ops::Range;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::driver::fixed::{Fixed, Registration, Table, Tables};

/// Entries of the registered-file table, at most (the kernel also caps it at the
/// `RLIMIT_NOFILE` soft limit).
const FILE_ENTRIES: u32 = 4096;
/// The kernel's limit on registered buffers per ring (IORING_MAX_REG_BUFFERS).
const MAX_BUFFERS: u32 = 1 << 14;
/// The kernel's limit on the size of one registered buffer.
const MAX_BUFFER_LEN: usize = 1 << 30;

// io_uring_register(2) opcodes and flags (include/uapi/linux/io_uring.h).
const IORING_REGISTER_FILES: u32 = 2;
const IORING_REGISTER_FILES_UPDATE: u32 = 6;
const IORING_REGISTER_FILES2: u32 = 13;
const IORING_REGISTER_BUFFERS2: u32 = 15;
const IORING_REGISTER_BUFFERS_UPDATE: u32 = 16;
const IORING_RSRC_REGISTER_SPARSE: u32 = 1;

/// `struct io_uring_rsrc_register`.
#[repr(C)]
#[derive(Default)]
struct RsrcRegister {
    nr: u32,
    flags: u32,
    resv2: u64,
    data: u64,
    tags: u64,
}

/// `struct io_uring_files_update`.
#[repr(C)]
struct FilesUpdate {
    offset: u32,
    resv: u32,
    fds: u64,
}

/// `struct io_uring_rsrc_update2`.
#[repr(C)]
#[derive(Default)]
struct RsrcUpdate2 {
    offset: u32,
    resv: u32,
    data: u64,
    tags: u64,
    nr: u32,
    resv2: u32,
}

/// Ring ids: never reused in a process, so a registration cannot be mistaken for an entry
/// of a later ring.
static NEXT_RING: AtomicU32 = AtomicU32::new(1);

/// One table's free entries.
#[derive(Debug, Default)]
struct Entries {
    /// Entries the kernel table has; 0 until it is created.
    size: u32,
    /// Free ranges, sorted and never adjacent.
    free: Vec<Range<u32>>,
}

impl Entries {
    fn created(size: u32) -> Entries {
        Entries {
            size,
            #[allow(clippy::single_range_in_vec_init)] // one free range: the whole table
            free: vec![0..size],
        }
    }

    /// The first of `n` consecutive free entries (first fit), taken.
    fn take(&mut self, n: u32) -> Option<u32> {
        let i = self.free.iter().position(|r| r.len() >= n as usize)?;
        let first = self.free[i].start;
        self.free[i].start += n;
        if self.free[i].is_empty() {
            self.free.remove(i);
        }
        Some(first)
    }

    /// Makes `first..first + n` free again, merging with neighbouring ranges.
    fn put(&mut self, first: u32, n: u32) {
        let end = first + n;
        let i = self.free.partition_point(|r| r.start < first);
        let joins_prev = i > 0 && self.free[i - 1].end == first;
        let joins_next = i < self.free.len() && self.free[i].start == end;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.free[i - 1].end = self.free[i].end;
                self.free.remove(i);
            }
            (true, false) => self.free[i - 1].end = end,
            (false, true) => self.free[i].start = first,
            (false, false) => self.free.insert(i, first..end),
        }
    }

    /// Free entries.
    #[cfg(test)]
    fn available(&self) -> u32 {
        self.free.iter().map(|r| r.len() as u32).sum()
    }
}

/// A ring's registered-file and registered-buffer tables.
pub(crate) struct Registry {
    id: NonZeroU32,
    /// The ring's descriptor; -1 once the ring is gone.
    ring: Cell<RawFd>,
    files: RefCell<Entries>,
    buffers: RefCell<Entries>,
}

impl Registry {
    pub(crate) fn new(ring: RawFd) -> Rc<Registry> {
        // 32 bits keep `Fixed` (and so every operation's descriptor) small; a process that
        // creates four billion rings stops here rather than reuse an id.
        let id = NEXT_RING
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .unwrap_or_else(|_| panic!("coring: more than 2^32 io_uring rings in one process"));
        Rc::new(Registry {
            id: NonZeroU32::new(id).expect("coring: ring ids start at 1"),
            ring: Cell::new(ring),
            files: RefCell::default(),
            buffers: RefCell::default(),
        })
    }

    /// This ring's id, as registrations in it carry it.
    pub(crate) fn id(&self) -> NonZeroU32 {
        self.id
    }

    /// The ring is about to close its descriptor: from now on releases touch no kernel.
    pub(crate) fn detach(&self) {
        self.ring.set(-1);
    }

    /// Puts `fd` into a free entry of the file table (created on first use).
    ///
    /// # Errors
    ///
    /// The kernel's, from creating the table or filling the entry; `QuotaExceeded` when
    /// every entry is taken.
    pub(crate) fn register_file(self: &Rc<Self>, fd: RawFd) -> io::Result<Registration> {
        let first = self.take(Table::Files, 1)?;
        let filled = self.update_files(first, &[fd]);
        self.registration(Table::Files, first, 1, filled)
    }

    /// Puts these buffers into consecutive free entries of the buffer table (created on
    /// first use).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for more than [`MAX_BUFFERS`] buffers or one larger than
    /// [`MAX_BUFFER_LEN`]; `Unsupported` on kernels without sparse buffer tables (before
    /// 5.19); the kernel's error (ENOMEM when the pages exceed `RLIMIT_MEMLOCK`) from
    /// filling the entries; `QuotaExceeded` when the table has no room left.
    pub(crate) fn register_buffers(
        self: &Rc<Self>,
        bufs: &[libc::iovec],
    ) -> io::Result<Registration> {
        let n = u32::try_from(bufs.len())
            .ok()
            .filter(|&n| n > 0 && n <= MAX_BUFFERS)
            .ok_or_else(|| {
                invalid(format!(
                    "{} buffers: a ring registers between 1 and {MAX_BUFFERS}",
                    bufs.len()
                ))
            })?;
        if bufs.iter().any(|b| b.iov_len > MAX_BUFFER_LEN) {
            return Err(invalid(format!(
                "a registered buffer holds at most {MAX_BUFFER_LEN} bytes"
            )));
        }
        let first = self.take(Table::Buffers, n)?;
        let filled = self.update_buffers(first, bufs);
        self.registration(Table::Buffers, first, n, filled)
    }

    /// The registration of entries just filled, or, if filling failed, the entries given
    /// back and the error.
    fn registration(
        self: &Rc<Self>,
        table: Table,
        first: u32,
        n: u32,
        filled: io::Result<()>,
    ) -> io::Result<Registration> {
        match filled {
            Ok(()) => {
                let fixed = Fixed {
                    ring: self.id,
                    index: first,
                };
                Ok(Registration::new(fixed, n, table, self.clone()))
            }
            Err(e) => {
                self.entries(table).borrow_mut().put(first, n);
                Err(e)
            }
        }
    }

    fn entries(&self, table: Table) -> &RefCell<Entries> {
        match table {
            Table::Files => &self.files,
            Table::Buffers => &self.buffers,
        }
    }

    /// Takes `n` consecutive entries of `table`, creating the table first if need be.
    fn take(&self, table: Table, n: u32) -> io::Result<u32> {
        let mut entries = self.entries(table).borrow_mut();
        if entries.size == 0 {
            *entries = Entries::created(self.create(table, n)?);
        }
        entries.take(n).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::QuotaExceeded,
                format!(
                    "the ring's registered-{} table is full ({} entries; {n} more wanted)",
                    match table {
                        Table::Files => "file",
                        Table::Buffers => "buffer",
                    },
                    entries.size
                ),
            )
        })
    }

    /// Creates the empty (sparse) `table`, with room for at least `need` entries if the
    /// kernel allows; returns its size.
    fn create(&self, table: Table, need: u32) -> io::Result<u32> {
        match table {
            Table::Files => {
                let size = FILE_ENTRIES.min(nofile_limit()).max(need);
                let arg = RsrcRegister {
                    nr: size,
                    flags: IORING_RSRC_REGISTER_SPARSE,
                    ..RsrcRegister::default()
                };
                // SAFETY: arg is a live io_uring_rsrc_register with no data pointers (a
                // sparse table), and nr_args is its size as FILES2 expects.
                let r = unsafe { self.register(IORING_REGISTER_FILES2, sized(&arg)) };
                match r {
                    // Kernels before 5.19 lack the sparse flag but take a table of -1
                    // entries, which is the same thing.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        let empty = vec![-1 as RawFd; size as usize];
                        // SAFETY: FILES reads nr_args descriptors from the array, which
                        // holds exactly that many.
                        unsafe {
                            self.register(
                                IORING_REGISTER_FILES,
                                (empty.as_ptr().cast(), empty.len() as u32),
                            )
                        }?;
                    }
                    r => {
                        r?;
                    }
                }
                Ok(size)
            }
            Table::Buffers => {
                // Sparse, so the full size costs the kernel only a table of pointers
                // (128 KiB), and later pools never find it too small.
                let size = MAX_BUFFERS;
                let arg = RsrcRegister {
                    nr: size,
                    flags: IORING_RSRC_REGISTER_SPARSE,
                    ..RsrcRegister::default()
                };
                // SAFETY: as for the file table: a sparse io_uring_rsrc_register.
                let r = unsafe { self.register(IORING_REGISTER_BUFFERS2, sized(&arg)) };
                r.map_err(|e| match e.raw_os_error() {
                    Some(libc::EINVAL) => io::Error::new(
                        io::ErrorKind::Unsupported,
                        "registered buffers need a sparse buffer table (Linux 5.19 or later); \
                         fixed reads and writes still work, as plain ones",
                    ),
                    _ => e,
                })?;
                Ok(size)
            }
        }
    }

    /// Sets file entries `first..` to `fds` (-1 clears an entry).
    fn update_files(&self, first: u32, fds: &[RawFd]) -> io::Result<()> {
        let arg = FilesUpdate {
            offset: first,
            resv: 0,
            fds: fds.as_ptr() as u64,
        };
        // SAFETY: FILES_UPDATE reads nr_args descriptors from arg.fds, which points to
        // fds.len() live descriptors (or -1) for the whole call.
        let n = unsafe {
            self.register(
                IORING_REGISTER_FILES_UPDATE,
                ((&arg as *const FilesUpdate).cast(), fds.len() as u32),
            )
        }?;
        partial(n, fds.len())
    }

    /// Sets buffer entries `first..` to `bufs` (an empty iovec clears an entry). All or
    /// nothing: if the kernel fills only some, those are cleared again and the error of the
    /// first it could not fill is returned (ENOMEM when the pages exceed `RLIMIT_MEMLOCK`).
    fn update_buffers(&self, first: u32, bufs: &[libc::iovec]) -> io::Result<()> {
        let n = self.update_buffers_raw(first, bufs)?;
        if n as usize == bufs.len() {
            return Ok(());
        }
        // The kernel stops at the first entry it cannot fill and reports only the count
        // filled so far; filling that entry alone gives its error.
        let (err, filled) = match self.update_buffers_raw(first + n, &bufs[n as usize..][..1]) {
            Err(e) => (e, n),
            Ok(_) => (
                io::Error::other(format!(
                    "io_uring filled {n} of {} registered buffer entries",
                    bufs.len()
                )),
                n + 1,
            ),
        };
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        if let Err(e) = self.update_buffers_raw(first, &vec![empty; filled as usize]) {
            // The entries stay pinned; the caller must not hand them out again.
            log_release_failure("buffer", &e);
            return Err(io::Error::new(
                err.kind(),
                format!("{err} (and clearing the entries filled before failed: {e})"),
            ));
        }
        Err(err)
    }

    /// One BUFFERS_UPDATE call; returns how many entries the kernel filled.
    fn update_buffers_raw(&self, first: u32, bufs: &[libc::iovec]) -> io::Result<u32> {
        let arg = RsrcUpdate2 {
            offset: first,
            data: bufs.as_ptr() as u64,
            nr: bufs.len() as u32,
            ..RsrcUpdate2::default()
        };
        // SAFETY: BUFFERS_UPDATE reads arg.nr iovecs from arg.data, which points to
        // bufs.len() live iovecs for the whole call (no tags); the memory they describe
        // stays allocated while registered (the pool frees it only after clearing them).
        unsafe { self.register(IORING_REGISTER_BUFFERS_UPDATE, sized(&arg)) }
    }

    /// `io_uring_register(ring, opcode, arg, nr_args)`, retrying EINTR.
    ///
    /// # Safety
    ///
    /// `arg` must point to what `opcode` reads, described by `nr_args` as that opcode
    /// defines it, valid for the whole call.
    unsafe fn register(&self, opcode: u32, (arg, nr_args): (*const u8, u32)) -> io::Result<u32> {
        let ring = self.ring.get();
        if ring < 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the ring is gone",
            ));
        }
        loop {
            // SAFETY: the ring descriptor is open (detach() runs before it closes), and
            // arg is valid per this function's contract.
            let r =
                unsafe { libc::syscall(libc::SYS_io_uring_register, ring, opcode, arg, nr_args) };
            if r >= 0 {
                return Ok(r as u32);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

impl Tables for Registry {
    fn clear(&self, table: Table, first: u32, count: u32) {
        if self.is_live() {
            let cleared = match table {
                // One entry per file in practice: cleared without an allocation.
                Table::Files => {
                    (first..first + count).try_for_each(|i| self.update_files(i, &[-1]))
                }
                Table::Buffers => {
                    let empty = libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    };
                    self.update_buffers(first, &vec![empty; count as usize])
                }
            };
            if let Err(e) = cleared {
                // Called from Drop, with nowhere to return it to. The kernel may still hold
                // the entries, so they are never handed out again (a buffer's memory is
                // safe to free regardless: no operation can name it any more).
                log_release_failure(
                    match table {
                        Table::Files => "file",
                        Table::Buffers => "buffer",
                    },
                    &e,
                );
                return;
            }
        }
        self.entries(table).borrow_mut().put(first, count);
    }

    fn is_live(&self) -> bool {
        self.ring.get() >= 0
    }
}

/// Says once per process (a `log` warning) that a registered entry could not be cleared: a file
/// then stays open in the ring (a socket sends no FIN, a pipe shows no end-of-file) until
/// the runtime is dropped, and the entry is never reused.
fn log_release_failure(what: &str, e: &io::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::warn!(
            "coring: could not clear a registered {what} entry of the ring ({e}); it stays \
             registered until the runtime is dropped"
        )
    });
}

/// A register argument passed as one struct, whose size is `nr_args`.
fn sized<T>(arg: &T) -> (*const u8, u32) {
    ((arg as *const T).cast(), std::mem::size_of::<T>() as u32)
}

/// An update call's count of entries updated, which must be all of them.
fn partial(n: u32, want: usize) -> io::Result<()> {
    if n as usize == want {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "io_uring updated {n} of {want} registered entries"
        )))
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The soft `RLIMIT_NOFILE`, which caps a registered-file table.
fn nofile_limit() -> u32 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return FILE_ENTRIES;
    }
    lim.rlim_cur.min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::Entries;

    #[test]
    fn entries_are_taken_first_fit_and_merged_back() {
        let mut e = Entries::created(10);
        assert_eq!(e.take(3), Some(0));
        assert_eq!(e.take(3), Some(3));
        assert_eq!(e.take(5), None);
        assert_eq!(e.take(4), Some(6));
        assert_eq!(e.take(1), None);
        e.put(3, 3);
        assert_eq!(e.take(1), Some(3));
        e.put(0, 3);
        e.put(6, 4);
        assert_eq!(e.free, vec![0..3, 4..10]);
        e.put(3, 1);
        assert_eq!(e.free, vec![0..10]);
        assert_eq!(e.available(), 10);
        assert_eq!(e.take(10), Some(0));
        assert!(e.free.is_empty());
    }
}
