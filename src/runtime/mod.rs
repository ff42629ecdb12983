//! The runtime: one thread, one backend, one event loop.

pub(crate) mod context;

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::driver::backend::select::{self, BackendConfig};
use crate::driver::iopoll::IopollStatus;
use crate::driver::{AnyBackend, Backend, Driver, Metrics, Wait};
use crate::task::budget::{Cut, InlineBudget};
use crate::task::{Executor, Shared};
use crate::time::Timers;

/// How many tasks run between two looks at IO completions and timers.
const TASK_BUDGET: usize = 256;

/// Which backend a runtime uses, or should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackendKind {
    /// Pick the best available: io_uring where it works (Linux), IOCP on Windows, else
    /// the fallback.
    #[default]
    Auto,
    /// io_uring; building the runtime fails if the kernel does not allow it, and always
    /// (with `Unsupported`) on platforms other than Linux.
    IoUring,
    /// The readiness (epoll/kqueue) backend with a blocking pool for files; building the
    /// runtime fails with `Unsupported` on Windows, which has no readiness interface for
    /// files and pipes (IOCP serves it).
    Fallback,
    /// Windows' I/O completion ports; building the runtime fails with `Unsupported`
    /// elsewhere.
    Iocp,
    /// Test support: operations complete when the test says so, through
    /// `Runtime::mock`. Never chosen by `Auto` or `CORING_BACKEND`; needs the `test-util`
    /// feature (building a runtime with it fails with `Unsupported` otherwise).
    #[doc(hidden)]
    Mock,
}

impl BackendKind {
    /// Parses `io_uring`, `fallback`, `iocp` or `auto` (the values of `CORING_BACKEND`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the accepted values.
    pub fn parse(s: &str) -> io::Result<BackendKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(BackendKind::Auto),
            "io_uring" | "iouring" | "uring" => Ok(BackendKind::IoUring),
            "fallback" | "epoll" | "kqueue" | "readiness" => Ok(BackendKind::Fallback),
            "iocp" => Ok(BackendKind::Iocp),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "unknown coring backend {other:?}; expected io_uring, fallback, iocp or auto"
                ),
            )),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Auto => "auto",
            BackendKind::IoUring => "io_uring",
            BackendKind::Fallback => "fallback",
            BackendKind::Iocp => "iocp",
            BackendKind::Mock => "mock",
        })
    }
}

/// Multishot receives' provided buffers by default (count, bytes): 256 let 256 streams
/// each hold one unread arrival before receives fall back to single-shot (ENOBUFS); 4 KiB,
/// one page, is as much as a typical TCP segment train delivers per wakeup (a larger
/// arrival takes several, and a bulk stream switches to direct reads). 1 MiB per runtime.
const DEFAULT_RECV_BUFFERS: (u16, usize) = (256, 4096);

/// The kernel's limit on submission queue entries (`IORING_MAX_ENTRIES`).
const MAX_SQ_ENTRIES: u32 = 32768;
/// The kernel's limit on completion queue entries (`IORING_MAX_CQ_ENTRIES`).
const MAX_CQ_ENTRIES: u32 = 2 * MAX_SQ_ENTRIES;

/// Configures and builds a [`Runtime`].
///
/// ```
/// let rt = coring::Builder::new().entries(64).build().unwrap();
/// rt.block_on(async { /* ... */ });
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    entries: u32,
    cq_entries: Option<u32>,
    sqpoll_idle_ms: Option<u32>,
    emulate_missing: Vec<String>,
    backend: BackendKind,
    shutdown_timeout: Duration,
    park_spin: Duration,
    /// Provided buffers of multishot stream receives: (count, size).
    recv_buffers: (u16, usize),
    /// Whether stream reads use multishot receives (io_uring).
    multishot_reads: bool,
    /// Whether direct file IO runs on a polled ring (io_uring's IORING_SETUP_IOPOLL).
    iopoll: bool,
    /// `send_file` by linked splices (io_uring).
    splice_files: bool,
    /// `spawn_blocking`'s bound: (threads, queued jobs).
    blocking: (usize, usize),
    /// A blocking pool shared with other runtimes (a [`Pool`](crate::Pool)'s cores).
    shared_blocking: Option<Arc<crate::blocking::Blocking>>,
    /// One operation in this many is timed for [`Metrics::op_latency`] (0: none).
    op_latency_sample: u32,
    /// Time parks and `block_on` for [`Metrics::time_parked`] and `time_running`.
    time_parks: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Default settings: 256 submission entries, automatic backend, 5 s shutdown deadline.
    pub fn new() -> Builder {
        Builder {
            entries: 256,
            cq_entries: None,
            sqpoll_idle_ms: None,
            emulate_missing: Vec::new(),
            backend: BackendKind::Auto,
            shutdown_timeout: Duration::from_secs(5),
            park_spin: Duration::ZERO,
            recv_buffers: DEFAULT_RECV_BUFFERS,
            multishot_reads: true,
            iopoll: false,
            splice_files: false,
            blocking: (16, 256),
            shared_blocking: None,
            op_latency_sample: crate::driver::metrics::DEFAULT_LATENCY_SAMPLE,
            time_parks: false,
        }
    }

    /// At most `n` threads run [`spawn_blocking`](crate::spawn_blocking) jobs at once
    /// (default 16; 0 counts as 1). A [`Pool`](crate::Pool)'s cores share one such pool.
    pub fn blocking_threads(mut self, n: usize) -> Builder {
        self.blocking.0 = n.max(1);
        self.shared_blocking = None;
        self
    }

    /// At most `n` [`spawn_blocking`](crate::spawn_blocking) jobs wait for a thread
    /// (default 256); a job beyond the running ones and these is refused with
    /// `WouldBlock`, never queued without bound.
    pub fn blocking_queue(mut self, n: usize) -> Builder {
        self.blocking.1 = n;
        self.shared_blocking = None;
        self
    }

    /// Makes every runtime built from (clones of) this builder share one blocking pool.
    pub(crate) fn share_blocking(mut self) -> Builder {
        let (threads, queue) = self.blocking;
        self.shared_blocking = Some(Arc::new(crate::blocking::Blocking::new(threads, queue)));
        self
    }

    /// Submission queue size, from 2 to 32768 (the kernel's limit), rounded up to a power
    /// of two by the kernel. Small rings work: a full queue is flushed and completions
    /// beyond the completion queue are kept by the kernel, so no operation is lost; they
    /// only cost more trips into the kernel. (One entry is too few: the runtime keeps a
    /// read of its wake-up eventfd queued.)
    ///
    /// # Panics
    ///
    /// If `n` is outside 2..=32768.
    pub fn entries(mut self, n: u32) -> Builder {
        assert!(
            (2..=MAX_SQ_ENTRIES).contains(&n),
            "Builder::entries: {n} is outside 2..={MAX_SQ_ENTRIES} (the runtime keeps one entry \
             for its wake-up read; the kernel allows at most {MAX_SQ_ENTRIES})"
        );
        self.entries = n;
        self
    }

    /// Completion queue size (default: twice the submission queue), at most 65536 and at
    /// least the submission queue's size (checked by [`build`](Self::build)).
    ///
    /// # Panics
    ///
    /// If `n` is above 65536.
    pub fn cq_entries(mut self, n: u32) -> Builder {
        assert!(
            n <= MAX_CQ_ENTRIES,
            "Builder::cq_entries: {n} is above the kernel's limit of {MAX_CQ_ENTRIES}"
        );
        self.cq_entries = Some(n);
        self
    }

    /// Uses a kernel thread that polls the submission queue (IORING_SETUP_SQPOLL), idling
    /// after `idle` without work. Trades a busy kernel thread for fewer syscalls.
    pub fn sqpoll(mut self, idle: Duration) -> Builder {
        self.sqpoll_idle_ms = Some(idle.as_millis().clamp(1, u32::MAX as u128) as u32);
        self
    }

    /// Test hook: treats these io_uring opcodes (by name, any case: "READ", "OPENAT", "STATX", ...
    /// as missing, so their operations take the per-opcode fallback (the blocking pool), as
    /// on a kernel that lacks them.
    #[doc(hidden)]
    #[cfg(feature = "test-util")]
    pub fn emulate_missing_opcodes(mut self, names: &[&str]) -> Builder {
        self.emulate_missing = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Chooses the backend (default [`BackendKind::Auto`]).
    pub fn backend(mut self, kind: BackendKind) -> Builder {
        self.backend = kind;
        self
    }

    /// How long dropping the runtime waits for the kernel to finish cancelled operations
    /// before leaking (never freeing) their buffers. Default 5 s; `Duration::MAX` waits
    /// as long as it takes.
    pub fn shutdown_timeout(mut self, d: Duration) -> Builder {
        self.shutdown_timeout = d;
        self
    }

    /// Before sleeping in the kernel, busy-wait up to `d` for a wake from another thread
    /// (default zero: never spin). A cross-core message that arrives within the spin costs
    /// no syscall and no thread wakeup on either side, which cuts cross-core round-trip
    /// latency by the wakeup cost (about 8 µs per hop on a 2-vCPU VM); the price is up to
    /// `d` of CPU each time the runtime goes idle. For latency-critical thread-per-core
    /// services; leave it off when idle CPU matters. At most 1 s (longer is clamped: a
    /// spin that long is a busy loop, not a latency trade).
    pub fn park_spin(mut self, d: Duration) -> Builder {
        self.park_spin = d.min(Duration::from_secs(1));
        self
    }

    /// Times one operation in `every` from submission to final completion, into a latency
    /// histogram per opcode ([`Metrics::op_latency`](crate::Metrics#structfield.op_latency)).
    /// Default 64: two clock reads per 64 operations, too cheap to measure (see the
    /// README's "Metrics"). 1 times every operation (two clock reads each, a few percent
    /// of a small request's cost); 0 times none.
    pub fn op_latency_sample(mut self, every: u32) -> Builder {
        self.op_latency_sample = every;
        self
    }

    /// Measures the time the runtime spends parked (asleep in the kernel) and running
    /// ([`Metrics::time_parked`](crate::Metrics#structfield.time_parked) and
    /// `time_running`; both stay zero without it). Off by default: it reads the clock
    /// before and after every park, which costs a request-response server that parks
    /// once per request about 8% more user-space instructions per request (see the
    /// README's "Metrics"); a busy server parks far less often.
    pub fn time_parks(mut self, on: bool) -> Builder {
        self.time_parks = on;
        self
    }

    /// The provided buffers multishot stream receives fill on io_uring (default 256 of
    /// 4 KiB: 1 MiB per runtime, allocated on the first stream read, shared by all its
    /// streams). With more streams
    /// holding unread data at once than `count`, receives run out of buffers (ENOBUFS) and
    /// those reads fall back to single-shot receives; a larger `size` lets one completion
    /// carry more of a burst (a bulk stream switches to direct reads anyway). No effect on
    /// the fallback backend.
    ///
    /// # Panics
    ///
    /// If `count` is not a power of two (the kernel requires one) or above 32768, if `size`
    /// is 0 or above 1 MiB, or if together they exceed 256 MiB.
    pub fn recv_buffers(mut self, count: u16, size: usize) -> Builder {
        assert!(
            count.is_power_of_two() && count <= 32768,
            "Builder::recv_buffers: count must be a power of two from 1 to 32768, not {count}"
        );
        assert!(
            (1..=1 << 20).contains(&size),
            "Builder::recv_buffers: size must be from 1 byte to 1 MiB, not {size}"
        );
        assert!(
            usize::from(count) * size <= 256 << 20,
            "Builder::recv_buffers: {count} buffers of {size} bytes exceed 256 MiB"
        );
        self.recv_buffers = (count, size);
        self
    }

    /// Whether stream reads on io_uring use multishot receives into provided buffers
    /// (default `true`; see [`Builder::recv_buffers`]). Off, every read is a single-shot
    /// receive straight into the caller's buffer, as on the fallback backend: no shared
    /// buffer memory and no copy, but a receive submitted per read and, on an empty
    /// socket, a poll armed per read.
    pub fn multishot_reads(mut self, on: bool) -> Builder {
        self.multishot_reads = on;
        self
    }

    /// Runs reads and writes of files opened for direct IO
    /// ([`OpenOptions::direct`](crate::fs::OpenOptions::direct)) on a second io_uring set
    /// up with IORING_SETUP_IOPOLL (default `false`), as glommio does: the kernel does not
    /// take an interrupt for their completions; the runtime polls the device for them.
    ///
    /// What it costs: while any polled operation is in flight, the runtime never sleeps in
    /// the kernel. Each turn of its loop makes one non-blocking `io_uring_enter` with
    /// GETEVENTS on the polled ring (which checks the device's completion queue once) and
    /// goes on running tasks, so its thread stays busy at 100% of a core until the last
    /// polled operation completes (then it sleeps as usual). That trade pays on NVMe
    /// devices with poll queues (`nvme.poll_queues`) at high IOPS, where interrupts and
    /// wakeups cost more than the polling; for occasional IO it is wasted CPU.
    ///
    /// Where the device has no poll queues (virtio and most cloud disks), or the file
    /// system cannot poll (tmpfs), the kernel refuses a polled operation with EOPNOTSUPP.
    /// coring then starts that operation again on the main ring (the caller never sees the
    /// refusal; on this project's VM, Linux 6.18 on virtio, the refusal of a polled read
    /// arrives 2 to 12 ms after submission), and runs the later IO of every direct file on
    /// that device on the main ring
    /// ([`File::is_polled`](crate::fs::File::is_polled)). Operations linked
    /// ([`link`](crate::link)) or under a kernel deadline stay on the main ring, and
    /// registered buffers are read as plain memory on the polled ring (the buffer tables
    /// are the main ring's).
    ///
    /// Never an error at build: where there is no polled ring (the readiness and IOCP
    /// backends, or a kernel that refuses to set one up), the runtime runs as without it
    /// and [`Runtime::iopoll_status`] says why.
    pub fn iopoll(mut self, on: bool) -> Builder {
        self.iopoll = on;
        self
    }

    /// How `send_file` moves a file to a socket on io_uring (other backends ignore this).
    ///
    /// Off (the default): `sendfile(2)` during submission when the chunk's first and last
    /// pages are in the page cache (`cachestat(2)`, Linux 6.5+), so it costs one system
    /// call and no thread, as nginx's `sendfile on`; a socket without room is waited for with
    /// IORING_OP_POLL_ADD. A chunk not cached (or any chunk on a kernel without
    /// `cachestat`) goes to the blocking pool, so the ring's thread does not wait for a
    /// device; only the first and last pages are checked, so a chunk cached at both ends
    /// with a gap between is read by the ring's thread.
    ///
    /// On: two linked IORING_OP_SPLICEs per chunk (file to pipe, pipe to socket) through
    /// a pipe the runtime pools, run entirely by the kernel. io_uring runs every splice on
    /// an io-wq worker thread, so each chunk costs two thread hops: measured more CPU per
    /// response than `sendfile` (see the README's "Zero-copy file serving").
    pub fn splice_files(mut self, on: bool) -> Builder {
        self.splice_files = on;
        self
    }

    /// Builds the runtime on the current thread.
    ///
    /// With [`BackendKind::Auto`], io_uring is set up, probed for the opcodes coring needs
    /// and proven with one round trip; if that fails with EPERM, ENOSYS, EACCES, ENOMEM or
    /// EINVAL, or a required feature is missing, the fallback backend is built instead and
    /// the reason is logged once (a `log` warning) and kept in [`Runtime::fallback_reason`].
    /// The `CORING_BACKEND` environment variable (`io_uring`, `fallback`, `iocp`, `auto`)
    /// overrides [`Builder::backend`]. On platforms other than Linux, `Auto` selects the
    /// fallback backend (kqueue) without a log line, and the reason is
    /// "io_uring is only available on Linux".
    ///
    /// # Errors
    ///
    /// When the backend cannot be set up: with io_uring forced, the kernel's error with its
    /// errno intact (EPERM when blocked by seccomp or `kernel.io_uring_disabled`, ENOSYS
    /// without io_uring, ENOMEM under a low memlock limit) or `Unsupported` naming a missing
    /// io_uring feature (or, off Linux, saying io_uring is only available on Linux);
    /// `InvalidInput` for a bad `CORING_BACKEND`.
    ///
    /// # Panics
    ///
    /// If [`cq_entries`](Self::cq_entries) is smaller than [`entries`](Self::entries) (both
    /// rounded up to powers of two, as the kernel does): a size error must not pass for
    /// "io_uring unavailable" and select the fallback.
    pub fn build(&self) -> io::Result<Runtime> {
        if let Some(cq) = self.cq_entries {
            let (sq, cq_rounded) = (self.entries.next_power_of_two(), cq.next_power_of_two());
            assert!(
                cq_rounded >= sq,
                "Builder::cq_entries: {cq} completion entries for {} submission entries; the \
                 completion queue must be at least as large",
                self.entries
            );
        }
        let (backend, fallback_reason) = self.select_backend()?;
        let shared = Arc::new(Shared::new(backend.unparker()));
        let mut driver = Driver::new(backend, self.op_latency_sample);
        driver.time_parks = self.time_parks;
        let inner = Rc::new(Inner {
            driver_id: {
                context::runtime_built(driver.id());
                driver.id()
            },
            budget: InlineBudget::new(),
            cancel_scope: std::cell::Cell::new(std::ptr::null()),
            link_stage: std::cell::Cell::new(std::ptr::null()),
            driver: Rc::new(RefCell::new(driver)),
            executor: Executor::new(),
            timers: Rc::new(RefCell::new(Timers::default())),
            shared,
            turns: std::cell::Cell::new(0),
            blocking: self.shared_blocking.clone().unwrap_or_else(|| {
                Arc::new(crate::blocking::Blocking::new(
                    self.blocking.0,
                    self.blocking.1,
                ))
            }),
            block_on_time: std::cell::Cell::new(Duration::ZERO),
            block_on_since: std::cell::Cell::new(None),
            time_parks: self.time_parks,
        });
        Ok(Runtime {
            inner,
            iopoll: self.iopoll,
            fallback_reason,
            park_spin: self.park_spin,
            shutdown_timeout: self.shutdown_timeout,
            _not_send: PhantomData,
        })
    }
}

impl Builder {
    /// The backend asked for: `CORING_BACKEND` overrides the builder, for operators and
    /// test runs.
    fn requested_backend(&self) -> io::Result<BackendKind> {
        match std::env::var("CORING_BACKEND") {
            Ok(v) => BackendKind::parse(&v)
                .map_err(|e| io::Error::new(e.kind(), format!("CORING_BACKEND: {e}"))),
            Err(_) => Ok(self.backend),
        }
    }

    /// Builds the backend and, when it is the fallback, says why.
    fn select_backend(&self) -> io::Result<(AnyBackend, Option<String>)> {
        // A test asking for the mock gets it, whatever the environment says.
        let kind = match self.backend {
            BackendKind::Mock => BackendKind::Mock,
            _ => self.requested_backend()?,
        };
        let cfg = BackendConfig {
            entries: self.entries,
            cq_entries: self.cq_entries,
            sqpoll_idle_ms: self.sqpoll_idle_ms,
            emulate_missing: self.emulate_missing.clone(),
            recv_buffers: self.multishot_reads.then_some(self.recv_buffers),
            iopoll: self.iopoll,
            splice_files: self.splice_files,
        };
        select::build(kind, &cfg)
    }
}

/// The bit of [`Inner::cancel_scope`] that says a link is staging operations (a token's
/// address is aligned, so its lowest bit is free).
pub(crate) const LINK_TAG: usize = 1;

/// Everything one runtime owns, reachable from the thread-local context.
pub(crate) struct Inner {
    pub(crate) driver: Rc<RefCell<Driver>>,
    /// The driver's [`Driver::id`], readable without borrowing it.
    pub(crate) driver_id: u64,
    /// The inline completions the task (or future) being polled may still make.
    pub(crate) budget: InlineBudget,
    /// The token of the innermost [`Cancellable`](crate::cancel::Cancellable) (or
    /// [`Deadline`](crate::time::Deadline)) being polled, or null
    /// ([`context::enter_cancel_scope`]); its lowest bit ([`LINK_TAG`]) is set while a
    /// [`link`](crate::link::link) stages operations ([`Inner::link_stage`]). Non-null
    /// means "a submission has out-of-line work to do": one load on the hot path.
    pub(crate) cancel_scope: std::cell::Cell<*const crate::cancel::Token>,
    /// The stage of the [`link`](crate::link::link) polling its futures for the first
    /// time, or null ([`context::enter_link`]).
    pub(crate) link_stage: std::cell::Cell<*const crate::link::Stage>,
    pub(crate) executor: Executor,
    pub(crate) timers: Rc<RefCell<Timers>>,
    pub(crate) shared: Arc<Shared>,
    turns: std::cell::Cell<u64>,
    /// Where [`spawn_blocking`](crate::spawn_blocking) runs its jobs.
    pub(crate) blocking: Arc<crate::blocking::Blocking>,
    /// Time spent in `block_on` calls that have returned.
    block_on_time: std::cell::Cell<Duration>,
    /// When the running `block_on` started (`None`: none runs).
    block_on_since: std::cell::Cell<Option<Instant>>,
    /// [`Builder::time_parks`]: whether `block_on` is timed.
    time_parks: bool,
}

impl Inner {
    /// A snapshot of this runtime's [`Metrics`].
    pub(crate) fn metrics(&self) -> Metrics {
        let mut m = self.driver.borrow().metrics();
        m.turns = self.turns.get();
        m.tasks_polled = self.executor.polls();
        let mut in_block_on = self.block_on_time.get();
        if let Some(since) = self.block_on_since.get() {
            in_block_on += since.elapsed();
        }
        m.time_running = in_block_on.saturating_sub(m.time_parked);
        m
    }

    /// Whether a bound future is being polled ([`Inner::cancel_token`] is `Some`): one
    /// load, for the hot paths that do the token's work out of line.
    #[inline(always)]
    pub(crate) fn in_cancel_scope(&self) -> bool {
        !self.cancel_scope.get().is_null()
    }

    /// Whether a [`link`](crate::link::link) is staging the operations its futures
    /// submit.
    #[inline]
    pub(crate) fn linking(&self) -> bool {
        self.cancel_scope.get().addr() & LINK_TAG != 0
    }

    /// The stage of the link polling its futures for the first time, if any.
    pub(crate) fn link_stage(&self) -> Option<&crate::link::Stage> {
        let p = self.link_stage.get();
        // SAFETY: `link_stage` is non-null only while a `LinkScope` guard lives, which
        // borrows the stage it points to (see `context::enter_link`); the reference is
        // used inside the guarded poll only.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The token of the innermost bound future being polled, if any.
    #[inline]
    pub(crate) fn cancel_token(&self) -> Option<&crate::cancel::Token> {
        let p = self.cancel_scope.get().map_addr(|a| a & !LINK_TAG);
        // SAFETY: `cancel_scope` is non-null only while a `CancelScope` guard lives, and
        // the guard borrows the `Rc<Token>` it points into (see
        // `context::enter_cancel_scope`); the reference does not outlive `&self`'s use in
        // the caller's closure, which runs inside the guarded poll.
        (!p.is_null()).then(|| unsafe { &*p })
    }
}

/// A single-threaded runtime: a task queue, timers and one io_uring, driven by
/// [`block_on`](Runtime::block_on) on the thread that built it.
///
/// It is `!Send`: the ring belongs to its thread. Dropping it cancels every task and
/// in-flight operation, waits (up to the shutdown timeout) for the kernel to finish with
/// their buffers, and leaks rather than frees anything the kernel still owns after that.
///
/// # fork
///
/// A child process created with `fork` (without `exec`) shares the parent's io_uring
/// instance: it must neither use nor drop a runtime, or anything registered with one
/// (files, buffer pools), that the parent created. Dropping such values in the child would
/// cancel operations and clear registered entries of the parent's ring. `exec` right after
/// `fork` (what `std::process::Command` does) is fine; build new runtimes in the child
/// otherwise.
pub struct Runtime {
    inner: Rc<Inner>,
    /// Whether [`Builder::iopoll`] asked for polled IO.
    iopoll: bool,
    fallback_reason: Option<String>,
    park_spin: Duration,
    shutdown_timeout: Duration,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("backend", &self.backend_description())
            .finish()
    }
}

/// Adds the time a `block_on` call runs to [`Inner::block_on_time`] (also when its future
/// panics out of it).
struct BlockOnTime<'a>(&'a Inner);

impl<'a> BlockOnTime<'a> {
    fn start(inner: &'a Inner) -> BlockOnTime<'a> {
        if inner.time_parks {
            inner.block_on_since.set(Some(Instant::now()));
        }
        BlockOnTime(inner)
    }
}

impl Drop for BlockOnTime<'_> {
    fn drop(&mut self) {
        if let Some(since) = self.0.block_on_since.take() {
            self.0
                .block_on_time
                .set(self.0.block_on_time.get() + since.elapsed());
        }
    }
}

/// Wakes the future passed to `block_on`.
struct MainWaker {
    woken: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let local = context::try_with(|inner| inner.shared.id == self.shared.id);
        if local != Some(true) {
            self.shared.notify();
        }
    }
}

impl Runtime {
    /// A runtime with default settings ([`Builder::new`]).
    ///
    /// # Errors
    ///
    /// See [`Builder::build`].
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// Runs `future` to completion on this thread, running spawned tasks and IO meanwhile.
    ///
    /// # Panics
    ///
    /// When called from inside a runtime (in async code, `.await` instead), and when the
    /// kernel reports an unrecoverable error for the ring (in-flight operations are then
    /// leaked, never freed).
    #[track_caller]
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _entered = context::Entered::new(&self.inner, false);
        let inner = &*self.inner;
        let _timed = BlockOnTime::start(inner);
        let main = Arc::new(MainWaker {
            woken: AtomicBool::new(true),
            shared: inner.shared.clone(),
        });
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        // Whether the future's last poll ended on its inline budget (as a task's would).
        let mut hungry = false;
        // A panic out of an earlier `block_on`'s future may have left its poll's budget
        // state behind.
        inner.budget.reset();
        loop {
            inner.turns.set(inner.turns.get() + 1);
            // Load before swap: the main future is usually not woken, and a swap is a
            // locked instruction even then.
            if main.woken.load(Ordering::Acquire) && main.woken.swap(false, Ordering::AcqRel) {
                inner
                    .budget
                    .start(hungry, || inner.executor.has_ready(), std::ptr::null());
                inner.executor.count_poll();
                let polled = future.as_mut().poll(&mut cx);
                hungry = inner.budget.finish(hungry) != Cut::No;
                if let Poll::Ready(v) = polled {
                    return v;
                }
            }
            inner
                .executor
                .run_ready(&inner.shared, TASK_BUDGET, &inner.budget);
            // Timers cost a clock read and a map lookup per turn; skip both when none wait.
            let now = (inner.timers.borrow().len() > 0).then(Instant::now);
            if let Some(now) = now {
                fire_timers(inner, now);
            }
            let mut idle = !inner.executor.has_ready() && !main.woken.load(Ordering::Acquire);
            let mut now = now;
            if idle && !self.park_spin.is_zero() {
                idle = !spin_for_wake(inner, &main.woken, self.park_spin);
                // The spin took time: the park must end at the next deadline, not that much
                // after it.
                now = now.map(|_| Instant::now());
            }
            // About to park: from here on a remote wake must unpark through the kernel;
            // one that came since the last look at the remote queue cancels the park.
            if idle && inner.shared.stop_spinning() {
                idle = false;
            }
            let wait = if idle {
                inner.executor.trim_cells();
                Wait::Park(now.and_then(|now| inner.timers.borrow().next_timeout(now)))
            } else {
                Wait::No
            };
            // Whether the turn (or anything since the last) left orphans to finish is read
            // under the turn's own borrow: most turns leave none, and then cost no call.
            let (turn, orphans) = {
                let mut driver = inner.driver.borrow_mut();
                let turn = driver.turn(wait);
                (turn, driver.has_orphans_to_finish())
            };
            if idle {
                // Awake again: remote wakes only need to set the flag until the next park.
                inner.shared.start_spinning();
            }
            if orphans {
                Driver::finish_orphans(&inner.driver);
            }
            if let Err(e) = turn {
                inner.driver.borrow_mut().leak_in_flight();
                panic!(
                    "coring: the {} failed and cannot continue: {e}",
                    self.backend_description()
                );
            }
        }
    }

    /// Which backend this runtime runs on.
    pub fn backend(&self) -> BackendKind {
        self.inner.driver.borrow().backend().kind()
    }

    /// Why this runtime runs on the fallback backend (`None` on io_uring and IOCP), e.g.
    /// `io_uring unavailable: Operation not permitted (os error 1)`.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// A human-readable description of the backend and its setup, e.g.
    /// `io_uring (256 sq / 512 cq entries, single_issuer+defer_taskrun)`.
    pub fn backend_description(&self) -> String {
        self.inner.driver.borrow().backend().describe()
    }

    /// A snapshot of the work done so far: loop turns, parks, kernel entries and their
    /// batch sizes, operations and their sampled latency, time parked and running. From
    /// inside the runtime, [`coring::metrics`](crate::metrics) gives the same.
    pub fn metrics(&self) -> Metrics {
        self.inner.metrics()
    }

    /// Whether direct file IO runs on a polled ring ([`Builder::iopoll`]), and if it was
    /// asked for but does not (or not for every file), why.
    ///
    /// ```
    /// use coring::IopollStatus;
    /// let rt = coring::Builder::new().iopoll(true).build().unwrap();
    /// match rt.iopoll_status() {
    ///     IopollStatus::Active => println!("direct IO is polled"),
    ///     IopollStatus::Unsupported { reason } => println!("not polled: {reason}"),
    ///     other => println!("{other}"),
    /// }
    /// ```
    pub fn iopoll_status(&self) -> IopollStatus {
        if !self.iopoll {
            return IopollStatus::Off;
        }
        let driver = self.inner.driver.borrow();
        match driver.backend().poll_route() {
            Some(route) => route.status(),
            None => IopollStatus::Unsupported {
                reason: format!(
                    "the {} backend has no polled IO (IORING_SETUP_IOPOLL is io_uring's); \
                     direct files use its ordinary path",
                    driver.backend().kind()
                ),
            },
        }
    }

    /// Operations the kernel currently owns (in flight or orphaned).
    pub fn ops_in_flight(&self) -> usize {
        self.inner.driver.borrow().in_flight()
    }

    /// Provided buffers (io_uring's buffer ring, used by stream reads) the kernel has filled
    /// and the runtime has not handed back yet: data received but not read, or waiting in
    /// a stream. Always 0 on the fallback backend.
    pub fn provided_buffers_in_use(&self) -> usize {
        self.inner.driver.borrow().backend().provided_in_use()
    }

    /// Spawned tasks that have not finished, whether polled yet or not.
    pub fn live_tasks(&self) -> usize {
        self.inner.executor.live()
    }

    /// Pending timers.
    pub fn pending_timers(&self) -> usize {
        self.inner.timers.borrow().len()
    }

    /// Test hook: makes the next `io_uring_enter` calls fail with these errnos before the
    /// kernel sees them, as a signal, a full kernel queue, or a broken ring would.
    #[doc(hidden)]
    #[cfg(feature = "test-util")]
    pub fn inject_enter_errors(&self, errnos: &[i32]) {
        self.inner.driver.borrow_mut().inject_enter_errors(errnos);
    }

    /// Test support: the handle of a runtime built with `BackendKind::Mock`, through which
    /// the test sees pending operations and completes them.
    ///
    /// # Panics
    ///
    /// On any other backend.
    #[doc(hidden)]
    #[cfg(feature = "test-util")]
    #[track_caller]
    pub fn mock(&self) -> crate::mock::MockHandle {
        match self.inner.driver.borrow().backend() {
            AnyBackend::Mock(m) => m.handle(),
            _ => panic!(
                "Runtime::mock: this runtime runs on {}; build it with \
                 Builder::new().backend(BackendKind::Mock)",
                self.backend_description()
            ),
        }
    }
}

/// Busy-waits up to `spin` for a wake from another thread (or of the main future) before
/// the loop parks in the kernel; returns whether one came. A wake that lands while we spin
/// skips the kernel round trip on both sides (no eventfd write, no wakeup).
fn spin_for_wake(inner: &Inner, main_woken: &AtomicBool, spin: Duration) -> bool {
    let shared = &inner.shared;
    shared.start_spinning();
    let end = Instant::now() + spin;
    let mut n = 0u32;
    loop {
        if shared.is_notified() || main_woken.load(Ordering::Acquire) {
            break;
        }
        n = n.wrapping_add(1);
        if n % 64 == 0 && Instant::now() >= end {
            break;
        }
        std::hint::spin_loop();
    }
    shared.stop_spinning() || main_woken.load(Ordering::Acquire)
}

fn fire_timers(inner: &Inner, now: Instant) {
    if !inner.timers.borrow().is_due(now) {
        return;
    }
    let expired = inner.timers.borrow_mut().take_expired(now);
    if expired.is_empty() {
        inner.timers.borrow_mut().recycle(expired);
        return;
    }
    let mut expired = expired;
    for w in expired.drain(..) {
        w.wake();
    }
    inner.timers.borrow_mut().recycle(expired);
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Drop every task's future on this thread, with this runtime current so that
        // dropped operations become orphans of this driver.
        let _entered = context::Entered::new(&self.inner, true);
        self.inner.executor.shutdown(&self.inner.shared);
        self.inner
            .driver
            .borrow_mut()
            .shutdown(self.shutdown_timeout);
        Driver::finish_orphans(&self.inner.driver);
        context::runtime_dropped(self.inner.driver_id);
    }
}

/// A snapshot of the current runtime's [`Metrics`], from inside it (a task, or the future
/// given to [`Runtime::block_on`]); the same as [`Runtime::metrics`]. On a
/// [`Pool`](crate::Pool) core, that core's own.
///
/// ```
/// coring::start(async {
///     coring::nop().await.unwrap();
///     let m = coring::metrics();
///     assert!(m.ops_completed >= 1 && m.tasks_polled >= 1);
///     println!("{} enters, {:?} parked", m.enters, m.time_parked);
/// });
/// ```
///
/// # Panics
///
/// Outside a coring runtime, with a message saying so.
#[track_caller]
pub fn metrics() -> Metrics {
    context::with(
        "coring::metrics called outside a coring runtime; call it from a task or from inside \
         Runtime::block_on, or use Runtime::metrics on the runtime itself",
        |inner| inner.metrics(),
    )
}

/// Builds a default [`Runtime`] and runs `future` on it.
///
/// # Panics
///
/// If the runtime cannot be built (the message carries the reason), or as
/// [`Runtime::block_on`] does.
///
/// ```
/// coring::start(async {
///     println!("hello from coring");
/// });
/// ```
#[track_caller]
pub fn start<F: Future>(future: F) -> F::Output {
    let rt = Runtime::new().unwrap_or_else(|e| panic!("coring::start: {e}"));
    rt.block_on(future)
}
