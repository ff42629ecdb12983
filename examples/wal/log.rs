//! An append-only log with group commit, on coring.
//!
//! Records are framed as `[len: u32 LE][crc32: u32 LE][payload]`, where the checksum
//! covers the length and the payload and `len` is never 0 (a zero header marks the end).
//! Many tasks call [`Log::append`]; one committer task takes every record queued while the
//! previous batch was being made durable, writes them as one buffer at the log's end and
//! calls `sync_data`, the write linked to the sync (`File::write_all_at_then_sync`); each
//! append resolves only once its batch is durable, with the record's offset, or with the
//! batch's error. A failed write or sync fails its batch's
//! appends with that error and every later one too (the log is failed: after an error
//! from `fsync` the kernel may have dropped the dirty pages, so nothing written since the
//! last good sync can be trusted; reopen to recover). An append that returned `Ok` is in
//! the log after any crash; one that returned an error may or may not be (as with any
//! write whose outcome is unknown), never torn.
//!
//! [`Log::open`] recovers: it scans from the start, keeps every intact record, and cuts the
//! file at the first torn or corrupt one (a crash mid-batch leaves at most the last batch
//! torn). Nothing after a bad record is kept, even if it looks intact: a record is only
//! trusted if every record before it is.
//!
//! Space ahead of the end is reserved a segment at a time ([`Prealloc`]; by default
//! `File::allocate`, fallocate), in a task of its own once the batches have used half of
//! the current segment, so that they seldom wait for it. Recovery reads the zero tail of
//! reserved space as the end (a zero length is never a record) and cuts it with any torn
//! record, so that no stale bytes are ever left past the end; the next batch reserves
//! again.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::Path;
use std::rc::Rc;

use coring::fs::{File, OpenOptions};
use coring::sync::local::{oneshot_channel, OneshotSender};

/// Size of a record's header: length and checksum.
pub const HEADER: usize = 8;
/// The largest payload a record may carry.
pub const MAX_RECORD: usize = 16 << 20;

/// How the log reserves space ahead of its end, a segment at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prealloc {
    /// Nothing reserved: every batch grows the file, so each `fdatasync` also writes the
    /// new size and block allocation (a journal commit on ext4).
    None,
    /// `File::allocate` (fallocate) each segment: space is reserved and the size set, so
    /// a batch allocates no blocks and grows nothing (on ext4 the blocks stay "unwritten"
    /// until written, so a batch's `fdatasync` still commits their conversion). The
    /// default: measured better than `None` at 256 appenders in two runs and within noise
    /// of it in a third and at fewer appenders (README, "Write-ahead log benchmark").
    #[default]
    Allocate,
    /// Each segment written with zeros and `fsync`ed before batches go into it: a batch's
    /// `fdatasync` then writes its data pages and no metadata, but every byte of the log
    /// is written twice; measured worse than `Allocate` with 4 KiB records.
    Zeroed,
}

impl Prealloc {
    /// The name the bench and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Prealloc::None => "none",
            Prealloc::Allocate => "allocate",
            Prealloc::Zeroed => "zeroed",
        }
    }

    /// The variant called `name` (as [`Prealloc::name`] gives it).
    pub fn parse(name: &str) -> Option<Prealloc> {
        [Prealloc::None, Prealloc::Allocate, Prealloc::Zeroed]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// How [`Log::open_with`] sets the log up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How space ahead of the end is reserved.
    pub prealloc: Prealloc,
    /// Bytes reserved at a time (rounded up to whole 4 KiB pages).
    pub segment: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prealloc: Prealloc::default(),
            segment: 4 << 20,
        }
    }
}

/// What [`Log::open`] found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Intact records kept, in order: (offset, payload).
    pub records: Vec<(u64, Vec<u8>)>,
    /// Bytes cut from the end: a torn or corrupt tail, and the zeros of reserved space.
    pub truncated: u64,
    /// How many of the bytes cut were the trailing zeros of reserved space (the rest, if
    /// any, was a torn or corrupt record).
    pub zeros: u64,
}

impl Recovery {
    /// Whether a torn or corrupt tail was cut (not just reserved zeros).
    pub fn torn(&self) -> bool {
        self.truncated > self.zeros
    }
}

/// One queued append: its framed bytes and where its outcome goes.
struct Pending {
    framed: Vec<u8>,
    done: OneshotSender<io::Result<u64>>,
}

struct Inner {
    file: File,
    opts: Options,
    /// How space is reserved: `opts.prealloc`, until the file system refuses to allocate.
    prealloc: Cell<Prealloc>,
    /// Where the next batch goes: the end of the last durable batch.
    end: Cell<u64>,
    /// The end of the space reserved (as [`Options::prealloc`] says).
    reserved: Cell<u64>,
    /// The reservation of the next segment, running ahead of the batches while they
    /// still fit in the current one, and the end it reserves up to.
    ahead: RefCell<Option<(u64, coring::task::JoinHandle<io::Result<()>>)>>,
    queue: RefCell<Vec<Pending>>,
    /// The committer, when it waits for work.
    idle: RefCell<Option<std::task::Waker>>,
    closed: Cell<bool>,
    /// The error that failed the log, if one did.
    failed: RefCell<Option<(io::ErrorKind, String)>>,
    /// Batches committed and records in them (for reports).
    batches: Cell<u64>,
    records: Cell<u64>,
}

/// An append-only log with group commit (see the module docs). `!Send`: one core's.
#[derive(Clone)]
pub struct Log {
    inner: Rc<Inner>,
}

/// `[len][crc][payload]` for `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn checksum(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The intact records at the start of `data` and where they end.
pub fn scan(data: &[u8]) -> (Vec<(u64, Vec<u8>)>, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= HEADER {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap());
        let n = len as usize;
        if len == 0 || n > MAX_RECORD || data.len() - at - HEADER < n {
            break;
        }
        let payload = &data[at + HEADER..at + HEADER + n];
        if checksum(len, payload) != crc {
            break;
        }
        records.push((at as u64, payload.to_vec()));
        at += HEADER + n;
    }
    (records, at as u64)
}

impl Log {
    /// Opens (creating if missing) the log at `path` with the default [`Options`],
    /// recovers it, and starts its committer on the current runtime.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<(Log, Recovery)> {
        Log::open_with(path, Options::default()).await
    }

    /// [`Log::open`] with `opts`.
    pub async fn open_with(path: impl AsRef<Path>, opts: Options) -> io::Result<(Log, Recovery)> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(path)
            .await?;
        let size = file.metadata().await?.len();
        let (res, data) = file
            .read_exact_at(Vec::with_capacity(size as usize), 0)
            .await;
        res?;
        let (records, end) = scan(&data);
        let truncated = size - end;
        let zeros = data[end as usize..]
            .iter()
            .rev()
            .take_while(|&&b| b == 0)
            .count() as u64;
        if truncated > 0 {
            // Cut the torn tail and any reserved zeros, so that nothing after the end is
            // ever read as a record: a batch written later at the end could otherwise be
            // followed by a stale intact-looking record of a batch that never became
            // durable.
            let std_file = std::fs::OpenOptions::new().write(true).open(path)?;
            std_file.set_len(end)?;
            std_file.sync_all()?;
        }
        let inner = Rc::new(Inner {
            file,
            opts,
            prealloc: Cell::new(opts.prealloc),
            end: Cell::new(end),
            reserved: Cell::new(end),
            ahead: RefCell::new(None),
            queue: RefCell::new(Vec::new()),
            idle: RefCell::new(None),
            closed: Cell::new(false),
            failed: RefCell::new(None),
            batches: Cell::new(0),
            records: Cell::new(0),
        });
        let log = Log { inner };
        drop(coring::spawn(log.clone().commit_loop()));
        Ok((
            log,
            Recovery {
                records,
                truncated,
                zeros,
            },
        ))
    }

    /// Appends `payload`; resolves once the record is durable (written and
    /// `sync_data`ed), with its offset, or with the error of the batch it was in.
    pub async fn append(&self, payload: &[u8]) -> io::Result<u64> {
        if payload.is_empty() || payload.len() > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a record carries 1 to {MAX_RECORD} bytes, not {}",
                    payload.len()
                ),
            ));
        }
        if let Some(e) = self.failed() {
            return Err(e);
        }
        if self.inner.closed.get() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the log is closed",
            ));
        }
        let (done, outcome) = oneshot_channel();
        self.inner.queue.borrow_mut().push(Pending {
            framed: frame(payload),
            done,
        });
        if let Some(w) = self.inner.idle.borrow_mut().take() {
            w.wake();
        }
        outcome.await.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the log is closed",
            ))
        })
    }

    /// The error that failed the log, as a fresh `io::Error`.
    fn failed(&self) -> Option<io::Error> {
        self.inner.failed.borrow().as_ref().map(|(kind, msg)| {
            io::Error::new(
                *kind,
                format!("the log failed earlier ({msg}); reopen it to recover"),
            )
        })
    }

    /// The log's file (for fault injection in tests: `coring::fault::inject(log.file(), ..)`).
    pub fn file(&self) -> &File {
        &self.inner.file
    }

    /// Batches committed so far, and the records in them.
    pub fn stats(&self) -> (u64, u64) {
        (self.inner.batches.get(), self.inner.records.get())
    }

    /// Stops the committer once the queue is empty; later appends fail.
    pub fn close(&self) {
        self.inner.closed.set(true);
        if let Some(w) = self.inner.idle.borrow_mut().take() {
            w.wake();
        }
    }

    /// Takes every queued record, writes them as one buffer at the end, syncs, and tells
    /// each append its outcome; waits when there is nothing to do.
    async fn commit_loop(self) {
        loop {
            let batch = std::future::poll_fn(|cx| {
                let mut q = self.inner.queue.borrow_mut();
                if !q.is_empty() {
                    return std::task::Poll::Ready(Some(std::mem::take(&mut *q)));
                }
                if self.inner.closed.get() {
                    return std::task::Poll::Ready(None);
                }
                *self.inner.idle.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            })
            .await;
            let Some(batch) = batch else { return };
            if let Some(e) = self.failed() {
                for p in batch {
                    let _ = p.done.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
                continue;
            }
            let total: usize = batch.iter().map(|p| p.framed.len()).sum();
            let mut buf = Vec::with_capacity(total);
            for p in &batch {
                buf.extend_from_slice(&p.framed);
            }
            let start = self.inner.end.get();
            let outcome = match self.reserve(start + total as u64).await {
                Ok(()) => self.write_and_sync(buf, start).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    self.inner.end.set(start + total as u64);
                    self.reserve_ahead();
                    self.inner.batches.set(self.inner.batches.get() + 1);
                    self.inner
                        .records
                        .set(self.inner.records.get() + batch.len() as u64);
                    let mut at = start;
                    for p in batch {
                        let _ = p.done.send(Ok(at));
                        at += p.framed.len() as u64;
                    }
                }
                Err(e) => {
                    *self.inner.failed.borrow_mut() = Some((e.kind(), e.to_string()));
                    for p in batch {
                        let _ = p.done.send(Err(io::Error::new(
                            e.kind(),
                            format!("log batch failed: {e}"),
                        )));
                    }
                }
            }
        }
    }

    /// The segment size, in whole pages.
    fn segment(&self) -> u64 {
        self.inner.opts.segment.max(1).next_multiple_of(4096)
    }

    /// Makes sure space up to `upto` is reserved before a batch is written there: waits
    /// for the reservation running ahead, if there is one, and reserves at once (a whole
    /// segment past `upto`) if that is not enough. An error fails the batch.
    async fn reserve(&self, upto: u64) -> io::Result<()> {
        if self.inner.prealloc.get() == Prealloc::None || upto <= self.inner.reserved.get() {
            return Ok(());
        }
        let ahead = self.inner.ahead.borrow_mut().take();
        if let Some((end, running)) = ahead {
            running
                .await
                .map_err(|e| io::Error::other(format!("the reservation task failed: {e:?}")))??;
            self.inner.reserved.set(end);
            if upto <= end {
                return Ok(());
            }
        }
        let from = self.inner.reserved.get();
        let segment = self.segment();
        let to = (upto + segment).next_multiple_of(segment);
        self.fill(from, to).await?;
        self.inner.reserved.set(to);
        Ok(())
    }

    /// Once less than half a segment of reserved space is left past the end, starts
    /// reserving the next segment in a task of its own, so that batches do not wait for it.
    /// Its outcome is taken by the first batch that needs the space ([`Log::reserve`]).
    fn reserve_ahead(&self) {
        let segment = self.segment();
        let (end, reserved) = (self.inner.end.get(), self.inner.reserved.get());
        if self.inner.prealloc.get() == Prealloc::None
            || self.inner.ahead.borrow().is_some()
            || reserved.saturating_sub(end) >= segment / 2
        {
            return;
        }
        let (log, to) = (self.clone(), reserved + segment);
        let running = coring::spawn(async move { log.fill(reserved, to).await });
        *self.inner.ahead.borrow_mut() = Some((to, running));
    }

    /// Reserves `from..to` as [`Options::prealloc`] says. A file system that cannot
    /// allocate (EOPNOTSUPP; ZFS answers EINVAL) turns reservation off for this log, rather
    /// than failing it: the batches then grow the file, as with [`Prealloc::None`].
    async fn fill(&self, from: u64, to: u64) -> io::Result<()> {
        let file = &self.inner.file;
        match self.inner.prealloc.get() {
            Prealloc::None => Ok(()),
            Prealloc::Allocate => match file.allocate(from, to - from).await {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Unsupported | io::ErrorKind::InvalidInput
                    ) =>
                {
                    self.inner.prealloc.set(Prealloc::None);
                    Ok(())
                }
                r => r,
            },
            Prealloc::Zeroed => {
                let (res, _) = file
                    .write_all_at(vec![0u8; (to - from) as usize], from)
                    .await;
                res?;
                // The size and the blocks, durably: the batches' fdatasync need not.
                file.sync_all().await
            }
        }
    }

    /// Writes the batch at `at` and `fdatasync`s it, the write linked to the sync (one
    /// trip into the kernel on io_uring; the sync runs only once every byte is written).
    async fn write_and_sync(&self, buf: Vec<u8>, at: u64) -> io::Result<()> {
        let (res, _) = self.inner.file.write_all_at_then_sync(buf, at, true).await;
        res
    }
}

/// The payload `wal run` writes as record `seq` of appender `a`: the appender and the
/// sequence number, then `size - 12` bytes derived from both (at least 12 bytes in all), so
/// a checker can tell the right record from any other.
pub fn payload(a: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(12));
    p.extend_from_slice(&a.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    let mut x = (u64::from(a) << 32) ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    while p.len() < size.max(12) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p
}
