//! The io_uring backend: ring setup and probe, `OpDesc -> SQE`, submit and reap, the
//! ring's registered-file and registered-buffer tables (`fixed.rs`), its provided-buffer
//! ring (`bufring.rs`), the order of a stream's sends (`send_order.rs`), and the second,
//! polled ring of direct file IO (IORING_SETUP_IOPOLL, `Builder::iopoll`: its routing and
//! refusals are `driver::iopoll`'s; its completions go to the same sink, keyed the same,
//! as the main ring's).

mod bufring;
pub(crate) use bufring::RecvBuffers;
mod fixed;
mod send_order;

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use self::send_order::SendOrder;
use super::{classify_enter_error, Backend, Enqueued, Linked, Push, Unpark, Wait};
use crate::driver::cached_read::CachedReads;
use crate::driver::desc::{FdRef, Interest};
use crate::driver::fixed::{Fixed, Registration};
use crate::driver::iopoll::{PollRoute, Reaped};
use crate::driver::offload::Offload;
use crate::driver::syscall;
use crate::driver::{Completion, OpDesc};
use crate::platform::SOCKET_FLAGS;

/// Longest sleep while the wakeup read could not be armed (a full submission queue).
const MAX_UNARMED_SLEEP: std::time::Duration = std::time::Duration::from_millis(1);

/// IORING_ENTER_GETEVENTS (the io-uring crate does not export its raw value).
const ENTER_GETEVENTS: u32 = 1;

/// `user_data` of the setup round trip.
const PROBE_TOKEN: u64 = u64::MAX - 2;

/// `user_data` of cancel requests; their completions carry no information we need.
const CANCEL_TOKEN: u64 = u64::MAX;
/// `user_data` of the internal eventfd read that lets other threads wake the ring.
const WAKE_TOKEN: u64 = u64::MAX - 1;
/// `user_data` of the IORING_OP_LINK_TIMEOUT entries that keep operations' deadlines; their
/// completions (`-ETIME` if the deadline came first) carry nothing the driver needs: the
/// operation's own completion says whether it was cancelled.
const LINK_TIMEOUT_TOKEN: u64 = u64::MAX - 3;

/// Ring setup options, from the [`crate::Builder`].
#[derive(Debug, Clone)]
pub(crate) struct UringConfig {
    pub(crate) entries: u32,
    pub(crate) cq_entries: Option<u32>,
    pub(crate) sqpoll_idle_ms: Option<u32>,
    /// Operations to treat as if the kernel lacked their opcode (test hook for the
    /// per-opcode fallback), by name, in any case ("READ", "statx", ...: see
    /// `OpDesc::name`).
    pub(crate) emulate_missing: Vec<String>,
    /// The provided buffers of multishot stream receives; `None`: streams read
    /// single-shot.
    pub(crate) recv_buffers: Option<RecvBuffers>,
    /// Set up a second ring with IORING_SETUP_IOPOLL for direct reads and writes.
    pub(crate) iopoll: bool,
    /// File-to-socket transfers by linked splices (`Builder::splice_files`).
    pub(crate) splice_files: bool,
}

/// The io_uring backend.
pub(crate) struct Uring {
    ring: IoUring,
    /// The kernel's count of completions dropped for want of room in the completion queue
    /// (`cq.koverflow`), as read at the last reap.
    cq_overflow: u32,
    /// Setup flags that took effect, for diagnostics ("single_issuer+defer_taskrun", ...).
    setup: &'static str,
    wake: Arc<EventFd>,
    /// Destination of the internal eventfd read. Leaked on purpose (8 bytes per runtime):
    /// the kernel may still complete that read while the ring is being torn down.
    wake_buf: &'static mut u64,
    wake_armed: bool,
    /// Runs operations whose opcode the kernel lacks.
    offload: Offload,
    /// Serves page-cache reads during submission.
    cached: CachedReads,
    /// Runs socket sends that need not wait during submission, and keeps each stream's
    /// sends and shutdown in order (deferring those that must wait their turn).
    sends: SendOrder,
    /// Completions made without the ring (shutdowns, cancelled deferred sends), for the
    /// next reap.
    completed_here: Vec<(usize, Completion)>,
    /// Descriptors whose next deferred send found the submission queue full.
    blocked_on_full_sq: Vec<RawFd>,
    /// Bit `n` set: the kernel lacks opcode `n` (its probe says so); operations whose SQE
    /// has it go to `offload`.
    missing: u128,
    /// Names of operations sent to `offload` as if their opcode were missing (test hook),
    /// lower case.
    hidden: Vec<String>,
    /// The registered-file and registered-buffer tables.
    registry: Rc<fixed::Registry>,
    /// The provided-buffer ring of multishot receives, set up on first use.
    bufring: Option<bufring::BufRing>,
    /// Its shape, from the configuration (`None`: multishot receives are off).
    recv_buffers: Option<RecvBuffers>,
    /// Multishot receives are unavailable (old kernel, or the buffer ring could not be
    /// registered): streams read single-shot.
    no_multishot: bool,
    /// `multishot[key]`: operation `key` is a multishot receive still in flight (its final
    /// completion not reaped yet). Indexed by the driver's dense slab keys.
    multishot: Vec<bool>,
    /// How many of those there are: while any is in flight, the kernel may write into the
    /// buffer ring, so its memory must not be freed.
    multishot_live: usize,
    /// The durations of queued link timeouts (`push_timed`): the kernel reads each when it
    /// takes the entry from the submission queue, so they are kept until the queue has
    /// been seen empty after an enter. Boxed: an entry names its duration's address,
    /// which must not move when the vector grows.
    #[allow(clippy::vec_box)]
    timespecs: Vec<Box<types::Timespec>>,
    /// The polled ring (IORING_SETUP_IOPOLL), if asked for and set up.
    polled: Option<IoUring>,
    /// What goes to it, and what its refusals mean; `None` if not asked for.
    route: Option<PollRoute>,
    /// Operations the polled ring refused, to be started on the main ring, whose
    /// submission queue was full: retried by the next enter (which does not sleep
    /// meanwhile).
    rerouting: Vec<(usize, OpDesc)>,
    /// File-to-socket transfers by linked splices rather than `sendfile` (see `splices`).
    splice_files: bool,
    /// The kernel cannot say which pages are cached (no `cachestat`): every `sendfile`
    /// runs on the pool.
    no_cachestat: bool,
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Runs before the ring's descriptor closes (fields drop after this): registrations
        // that outlive the ring must not call io_uring_register on a closed (or reused)
        // descriptor number.
        self.registry.detach();
        // Entries the kernel has not taken yet may still name them (an SQPOLL thread
        // reads the queue on its own): a few bytes each, leaked rather than freed.
        std::mem::forget(std::mem::take(&mut self.timespecs));
        if let Some(br) = self.bufring.take() {
            // Free the buffer memory only when no receive can write into it: none in flight
            // and the ring unregistered. Otherwise leak it (1 MiB), as the driver leaks any
            // memory the kernel may still own.
            if self.multishot_live == 0
                && self
                    .ring
                    .submitter()
                    .unregister_buf_ring(bufring::BUF_GROUP)
                    .is_ok()
            {
                drop(br);
            } else {
                std::mem::forget(br);
            }
        }
    }
}

/// Why a ring could not be set up: the step that failed and the error, as the kernel (or
/// the feature check) reported it, with its errno intact.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub(crate) step: &'static str,
    pub(crate) error: io::Error,
}

/// Reports why the kernel's io_uring cannot serve this runtime.
fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("io_uring {what}"))
}

impl Uring {
    /// Sets up a ring, probes opcodes and arms the cross-thread wakeup.
    ///
    /// # Errors
    ///
    /// The `io_uring_setup` error as is (EPERM under seccomp or `kernel.io_uring_disabled`,
    /// ENOSYS without io_uring, ENOMEM under a low memlock limit), or `Unsupported` when a
    /// feature this runtime needs is missing.
    pub(crate) fn new(cfg: &UringConfig) -> Result<Uring, SetupError> {
        Self::try_new(cfg).map_err(|(step, error)| SetupError { step, error })
    }

    fn try_new(cfg: &UringConfig) -> Result<Uring, (&'static str, io::Error)> {
        let at = |step: &'static str| move |e: io::Error| (step, e);
        let (ring, setup) = Self::setup(cfg).map_err(at("io_uring_setup"))?;
        Self::check_features(&ring).map_err(at("feature check"))?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(at("opcode probe"))?;
        for (code, name) in CORE_OPCODES {
            if !probe.is_supported(*code) {
                return Err((
                    "opcode probe",
                    unsupported(&format!("lacks the {name} opcode")),
                ));
            }
        }
        // Every opcode the kernel does not know: an operation finds out whether its own SQE
        // can go to the ring from this, whatever the operation is.
        let missing = (0..128u8)
            .filter(|&code| !probe.is_supported(code))
            .fold(0u128, |m, code| m | 1u128 << code);
        let wake = Arc::new(EventFd::new().map_err(at("eventfd"))?);
        let registry = fixed::Registry::new(ring.as_raw_fd());
        let (polled, route) = if cfg.iopoll {
            match Self::setup_polled(cfg.entries) {
                Ok(p) => (Some(p), Some(PollRoute::active())),
                Err(e) => (
                    None,
                    Some(PollRoute::unavailable(format!(
                        "the polled ring (IORING_SETUP_IOPOLL) could not be set up: {e}"
                    ))),
                ),
            }
        } else {
            (None, None)
        };
        let mut uring = Uring {
            registry,
            ring,
            setup,
            cq_overflow: 0,
            offload: Offload::new(wake.clone()),
            cached: CachedReads::default(),
            sends: SendOrder::default(),
            completed_here: Vec::new(),
            blocked_on_full_sq: Vec::new(),
            missing,
            hidden: cfg
                .emulate_missing
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            wake,
            wake_buf: Box::leak(Box::new(0)),
            wake_armed: false,
            bufring: None,
            recv_buffers: cfg.recv_buffers,
            no_multishot: cfg.recv_buffers.is_none(),
            multishot: Vec::new(),
            multishot_live: 0,
            timespecs: Vec::new(),
            polled,
            route,
            rerouting: Vec::new(),
            splice_files: cfg.splice_files,
            no_cachestat: false,
        };
        if !uring.arm_wake() {
            return Err((
                "wakeup read",
                unsupported("submission queue is full right after setup"),
            ));
        }
        uring.round_trip().map_err(at("first round trip"))?;
        Ok(uring)
    }

    fn check_features(ring: &IoUring) -> io::Result<()> {
        if !ring.params().is_feature_ext_arg() {
            return Err(unsupported(
                "lacks IORING_FEAT_EXT_ARG (needs Linux 5.11 or later) for timed waits",
            ));
        }
        if !ring.params().is_feature_nodrop() {
            return Err(unsupported(
                "lacks IORING_FEAT_NODROP (needs Linux 5.5 or later); completions could be lost",
            ));
        }
        Ok(())
    }

    /// Tries the fastest setup the kernel accepts, falling back to plainer ones.
    fn setup(cfg: &UringConfig) -> io::Result<(IoUring, &'static str)> {
        type Flavour = (&'static str, fn(&mut io_uring::Builder));
        let flavours: [Flavour; 3] = [
            ("single_issuer+defer_taskrun", |b| {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag()
                    .setup_submit_all();
            }),
            ("coop_taskrun", |b| {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }),
            ("plain", |_| {}),
        ];
        let mut last = None;
        for (name, apply) in flavours {
            let mut b = IoUring::builder();
            b.dontfork();
            if let Some(cq) = cfg.cq_entries {
                b.setup_cqsize(cq);
            }
            if let Some(idle) = cfg.sqpoll_idle_ms {
                b.setup_sqpoll(idle);
            } else {
                apply(&mut b);
            }
            match b.build(cfg.entries) {
                Ok(ring) => {
                    return Ok((
                        ring,
                        if cfg.sqpoll_idle_ms.is_some() {
                            "sqpoll"
                        } else {
                            name
                        },
                    ));
                }
                // EINVAL: a flag this kernel does not know; try a plainer setup. Anything
                // else (EPERM, ENOSYS, ENOMEM) is about io_uring as a whole.
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL) && cfg.sqpoll_idle_ms.is_none() =>
                {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
    }

    /// The polled ring: IORING_SETUP_IOPOLL, nothing else (it takes only reads, writes and
    /// NOPs, and is entered only by this thread).
    fn setup_polled(entries: u32) -> io::Result<IoUring> {
        let mut b = IoUring::builder();
        b.dontfork().setup_iopoll();
        b.build(entries)
    }

    /// Starts `desc` on the polled ring, which the route chose for it.
    fn push_polled(&mut self, key: usize, desc: &OpDesc) -> Push {
        let entry = self.translate(desc, false);
        let (Some(polled), Some(entry)) = (&mut self.polled, entry) else {
            unreachable!(
                "coring: the route chose the polled ring for {}",
                desc.name()
            );
        };
        let entry = entry.user_data(key as u64);
        // SAFETY: the driver keeps the operation that owns every pointer in `desc` alive
        // until the completion tagged `key` has been reaped (driver contract, point 1);
        // the polled ring's completions are reaped by `reap` like the main ring's, and a
        // refused one's description goes to the main ring, still owned the same way.
        match unsafe { polled.submission().push(&entry) } {
            Ok(()) => {
                if let Some(route) = &mut self.route {
                    route.started(key, desc);
                }
                Push::Queued
            }
            Err(_) => Push::Full,
        }
    }

    /// Hands queued polled operations to the kernel and checks the device once for their
    /// completions (an enter with GETEVENTS and min_complete 0 never sleeps on a polled
    /// ring). Returns whether any are in flight.
    fn poll_polled(&mut self) -> io::Result<bool> {
        let Some(polled) = &mut self.polled else {
            return Ok(false);
        };
        let live = self.route.as_ref().map_or(0, PollRoute::live);
        let mut sq = polled.submission();
        sq.sync();
        let queued = !sq.is_empty();
        drop(sq);
        if live == 0 && !queued {
            return Ok(false);
        }
        // On an IOPOLL ring, `submit` always carries GETEVENTS (min_complete 0).
        match polled.submit() {
            Ok(_) => Ok(true),
            Err(e) => Err(classify_enter_error(e)),
        }
    }

    /// Cancels operation `key` if the polled ring refused it and it waits for room in the
    /// main ring's queue (never submitted there): it completes with ECANCELED at the next
    /// reap.
    fn cancel_rerouting(&mut self, key: usize) -> bool {
        let Some(i) = self.rerouting.iter().position(|(k, _)| *k == key) else {
            return false;
        };
        self.rerouting.swap_remove(i);
        self.completed_here
            .push((key, Completion::error(libc::ECANCELED)));
        true
    }

    /// Starts the operations the polled ring refused on the main ring, as long as there is
    /// room; what finds the queue full waits for the next enter.
    fn reroute(&mut self, mut sink: impl FnMut(usize, Completion)) {
        for (key, desc) in std::mem::take(&mut self.rerouting) {
            match self.submit_op(key, &desc) {
                Ok(Enqueued::Yes) => {}
                Ok(Enqueued::QueueFull) => self.rerouting.push((key, desc)),
                Err(e) => sink(
                    key,
                    Completion::error(e.raw_os_error().unwrap_or(libc::EIO)),
                ),
            }
        }
    }

    /// Proves the ring works end to end: one NOP submitted and reaped. Catches seccomp
    /// filters that allow `io_uring_setup` but block `io_uring_enter`.
    fn round_trip(&mut self) -> io::Result<()> {
        let nop = opcode::Nop::new().build().user_data(PROBE_TOKEN);
        // SAFETY: a NOP carries no pointers.
        if let Enqueued::QueueFull = unsafe { self.push_entry(&nop) } {
            return Err(unsupported("submission queue is full right after setup"));
        }
        for _ in 0..100 {
            match self.ring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                // A signal or a momentarily busy kernel: try again.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e),
            }
            let mut cq = self.ring.completion();
            cq.sync();
            if cq.any(|cqe| cqe.user_data() == PROBE_TOKEN) {
                return Ok(());
            }
        }
        Err(unsupported("did not complete a NOP round trip"))
    }

    /// Cancels operation `key` if it is deferred (never submitted): it completes with
    /// ECANCELED at the next reap, and what waited behind it may go.
    fn cancel_deferred(&mut self, key: usize) -> bool {
        let Some(fd) = self.sends.undefer(key) else {
            return false;
        };
        self.completed_here
            .push((key, Completion::error(libc::ECANCELED)));
        self.submit_next_in_turn(fd);
        true
    }

    /// Whether the test hook sends operation `name` to the pool as if its opcode were
    /// missing.
    #[inline]
    fn hides(&self, name: &str) -> bool {
        !self.hidden.is_empty() && self.hidden.iter().any(|h| h == name)
    }

    /// Whether the kernel has `code` (its probe says so).
    fn has(&self, code: u8) -> bool {
        self.missing & (1u128 << code) == 0
    }

    /// The index of a registered entry, if it is in this ring's tables.
    fn own(&self, fixed: Option<Fixed>) -> Option<u32> {
        fixed
            .filter(|f| f.ring == self.registry.id())
            .map(|f| f.index)
    }

    /// Queues the read on the wakeup eventfd; returns whether it was queued (a full queue
    /// leaves it for the next reap, which retries).
    fn arm_wake(&mut self) -> bool {
        let entry = opcode::Read::new(
            types::Fd(self.wake.0.as_raw_fd()),
            (self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(WAKE_TOKEN);
        // SAFETY: `wake_buf` is leaked ('static) and the eventfd is kept open by the Arc
        // in `self.wake` for as long as the ring exists.
        self.wake_armed = matches!(unsafe { self.push_entry(&entry) }, Enqueued::Yes);
        self.wake_armed
    }

    /// # Safety
    ///
    /// Every pointer in `entry` must stay valid until its completion is reaped.
    unsafe fn push_entry(&mut self, entry: &squeue::Entry) -> Enqueued {
        let mut sq = self.ring.submission();
        // SAFETY: forwarded from the caller.
        match unsafe { sq.push(entry) } {
            Ok(()) => Enqueued::Yes,
            Err(_) => Enqueued::QueueFull,
        }
    }

    /// Passes the polled ring's completions on (through the route: a refused operation
    /// goes to the main ring instead, see `driver::iopoll`).
    fn reap_polled(&mut self, sink: &mut impl FnMut(usize, Completion)) {
        let (Some(polled), Some(route)) = (&mut self.polled, &mut self.route) else {
            return;
        };
        {
            let mut cq = polled.completion();
            cq.sync();
            for cqe in &mut cq {
                let key = cqe.user_data() as usize;
                let c = Completion {
                    res: cqe.result(),
                    flags: cqe.flags(),
                };
                match route.completed(key, c) {
                    Reaped::Deliver(c) => sink(key, c),
                    Reaped::Reroute(desc) => self.rerouting.push((key, desc)),
                }
            }
        }
        if !self.rerouting.is_empty() {
            self.reroute(&mut *sink);
        }
    }

    /// Runs `shutdown(2)` for operation `key` (it never blocks; the ring would run it on a
    /// worker thread, after sends issued behind it); its completion comes with the next
    /// reap.
    fn shutdown_now(&mut self, key: usize, desc: &OpDesc) {
        // SAFETY: a shutdown carries no pointers.
        let res = unsafe { syscall::execute(desc) };
        self.completed_here
            .push((key, Completion { res, flags: 0 }));
    }

    /// Whether `len` bytes of file `fd` from `offset` are in the page cache (both ends of
    /// the range, see `platform::cached`), so that a `sendfile` of them does not wait for
    /// the device (false where the kernel cannot tell).
    fn is_cached(&mut self, fd: RawFd, offset: u64, len: u32) -> bool {
        if self.no_cachestat {
            return false;
        }
        match crate::platform::cached(fd, offset, u64::from(len)) {
            Some(cached) => cached,
            None => {
                self.no_cachestat = true;
                false
            }
        }
    }

    /// Runs `sendfile(2)` for operation `key` now, without waiting: the ring has no
    /// opcode for it, its pages are cached (`is_cached`), and on a non-blocking socket
    /// the call never waits for the peer. A socket without room completes it with
    /// -EAGAIN; its caller then waits with [`OpDesc::Poll`] and tries again.
    fn sendfile_now(&mut self, key: usize, desc: &OpDesc, inline: bool) -> Push {
        // SAFETY: a sendfile description carries descriptors and numbers, no pointers.
        let res = unsafe { syscall::execute(desc) };
        let c = Completion { res, flags: 0 };
        if inline {
            return Push::Completed(c);
        }
        self.completed_here.push((key, c));
        Push::Queued
    }

    /// Submits the deferred operations of `fd` that are free to go: shutdowns run at once,
    /// and the first send goes to the ring (the ones after it wait for its completion).
    fn submit_next_in_turn(&mut self, fd: RawFd) {
        while let Some((key, desc)) = self.sends.next_in_turn(fd) {
            if let OpDesc::Shutdown { .. } = desc {
                self.shutdown_now(key, &desc);
                continue;
            }
            let mut pushed = self.submit_op(key, &desc);
            if let Ok(Enqueued::QueueFull) = pushed {
                // Hand the queued entries to the kernel to make room, then try once more.
                let _ = self.ring.submit();
                pushed = self.submit_op(key, &desc);
            }
            match pushed {
                Ok(Enqueued::Yes) => {}
                Ok(Enqueued::QueueFull) => {
                    // Retried by the next enter, which does not sleep long meanwhile.
                    self.sends.put_back(key, desc);
                    self.blocked_on_full_sq.push(fd);
                    return;
                }
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    self.completed_here.push((key, Completion::error(errno)));
                }
            }
        }
    }

    /// Whether the ring runs `desc`, translated to `entry`, as that one entry, so that the
    /// kernel can order or time it: not an operation the kernel lacks (it runs on the
    /// pool), nor a stream's ordered write (kept in issue order outside the ring, see
    /// `send_order.rs`), a shutdown (run at once) or a multishot receive or accept (the
    /// stream's, the listener's).
    fn runs_in_ring(&self, desc: &OpDesc, entry: &squeue::Entry) -> bool {
        !matches!(
            desc,
            OpDesc::Shutdown { .. } | OpDesc::RecvMulti { .. } | OpDesc::AcceptMulti { .. }
        ) && !desc.is_ordered_write()
            && self.missing & (1u128 << entry.get_opcode()) == 0
            && !self.hides(desc.name())
    }

    /// Frees the durations of link timeouts once the kernel has taken every queued entry
    /// (it copies a timeout's duration when it takes the entry).
    fn release_timespecs(&mut self) {
        let mut sq = self.ring.submission();
        sq.sync();
        if sq.is_empty() {
            drop(sq);
            self.timespecs.clear();
        }
    }

    /// Puts `desc` in the ring (or on the pool when the kernel lacks its opcode, or io_uring
    /// has none for it).
    fn submit_op(&mut self, key: usize, desc: &OpDesc) -> io::Result<Enqueued> {
        let entry = self.sqe(desc).map(|e| e.user_data(key as u64));
        let entry = match entry {
            Some(e)
                if self.missing & (1u128 << e.get_opcode()) == 0 && !self.hides(desc.name()) =>
            {
                e
            }
            _ => {
                // The kernel lacks this opcode (or io_uring has none): run the same description
                // as a syscall on the blocking pool; its completion comes back through `reap`
                // like a CQE.
                self.offload.spawn(key, *desc);
                self.sends.submitted(key, desc);
                return Ok(Enqueued::Yes);
            }
        };
        if let OpDesc::RecvMulti { .. } = desc {
            if self.bufring.is_none() {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
        }
        // SAFETY: the driver keeps the operation that owns every pointer in `desc` alive
        // until the completion tagged `key` has been reaped (driver contract, point 1);
        // a multishot receive writes only into the buffer ring, which lives as long as
        // the ring (or is leaked, see `Drop`).
        let pushed = unsafe { self.push_entry(&entry) };
        if let Enqueued::Yes = pushed {
            self.sends.submitted(key, desc);
        }
        if let (Enqueued::Yes, OpDesc::RecvMulti { .. }) = (&pushed, desc) {
            if self.multishot.len() <= key {
                self.multishot.resize(key + 1, false);
            }
            self.multishot[key] = true;
            self.multishot_live += 1;
        }
        Ok(pushed)
    }

    /// Translates a description into an SQE: the only place that knows opcodes, and the
    /// only one that uses registered entries (those of this ring; any other is named by
    /// its plain descriptor or memory).
    ///
    /// `None`: io_uring has no opcode for the description (`readlinkat`, reading a
    /// directory), or its SQE cannot express it (a `sync_file_range` or `fadvise` range
    /// longer than the SQE's 32-bit length field): it runs on the blocking pool, as when
    /// the kernel lacks the opcode.
    fn sqe(&self, desc: &OpDesc) -> Option<squeue::Entry> {
        self.translate(desc, true)
    }

    /// [`Uring::sqe`], for the main ring (`tables`: registered entries of this ring are
    /// used) or for the polled ring (which has no tables: every descriptor and buffer is
    /// named plainly).
    fn translate(&self, desc: &OpDesc, tables: bool) -> Option<squeue::Entry> {
        let own = |fixed: Option<Fixed>| if tables { self.own(fixed) } else { None };
        let mut sqe_flags = squeue::Flags::empty();
        // A descriptor as the SQE names it: its registered slot (with IOSQE_FIXED_FILE)
        // where it has one in this ring, else the raw number.
        let mut fd = |f: FdRef| match own(f.fixed) {
            Some(slot) => {
                sqe_flags |= squeue::Flags::FIXED_FILE;
                types::Fd(slot as RawFd)
            }
            None => types::Fd(f.raw),
        };
        let entry = match *desc {
            OpDesc::Nop => opcode::Nop::new().build(),
            OpDesc::Read {
                fd: f,
                buf,
                len,
                offset,
                buf_index,
            } => match own(buf_index) {
                // Table size <= MAX_BUFFERS (2^14), so the index fits the SQE's u16.
                Some(i) => opcode::ReadFixed::new(fd(f), buf, len, i as u16)
                    .offset(offset)
                    .build(),
                None => opcode::Read::new(fd(f), buf, len).offset(offset).build(),
            },
            OpDesc::Write {
                fd: f,
                buf,
                len,
                offset,
                buf_index,
            } => match own(buf_index) {
                Some(i) => opcode::WriteFixed::new(fd(f), buf, len, i as u16)
                    .offset(offset)
                    .build(),
                None => opcode::Write::new(fd(f), buf, len).offset(offset).build(),
            },
            OpDesc::Readv {
                fd: f,
                iov,
                iovcnt,
                offset,
            } => opcode::Readv::new(fd(f), iov, iovcnt)
                .offset(offset)
                .build(),
            OpDesc::Writev {
                fd: f,
                iov,
                iovcnt,
                offset,
            } => opcode::Writev::new(fd(f), iov, iovcnt)
                .offset(offset)
                .build(),
            OpDesc::Fsync { fd: f, datasync } => {
                let sync = if datasync {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                opcode::Fsync::new(fd(f)).flags(sync).build()
            }
            OpDesc::Fallocate {
                fd: f,
                mode,
                offset,
                len,
            } => opcode::Fallocate::new(fd(f), len)
                .offset(offset)
                .mode(mode)
                .build(),
            OpDesc::Ftruncate { fd: f, len } => opcode::Ftruncate::new(fd(f), len).build(),
            OpDesc::SyncFileRange {
                fd: f,
                offset,
                len,
                flags,
            } => opcode::SyncFileRange::new(fd(f), u32::try_from(len).ok()?)
                .offset(offset)
                .flags(flags)
                .build(),
            // Older kernels read the length from the SQE's 32-bit `len` field only (and
            // refuse a non-zero `addr`, from which newer ones take a 64-bit length): a
            // longer range goes to the pool.
            OpDesc::Fadvise {
                fd: f,
                offset,
                len,
                advice,
            } => opcode::Fadvise::new(fd(f), i64::from(u32::try_from(len).ok()?), advice)
                .offset(offset)
                .build(),
            OpDesc::OpenAt {
                dirfd,
                path,
                flags,
                mode,
            } => opcode::OpenAt::new(types::Fd(dirfd), path)
                .flags(flags)
                .mode(mode)
                .build(),
            // OpenHow is `struct open_how`, as io-uring's `types::OpenHow` (transparent).
            OpDesc::OpenAt2 { dirfd, path, how } => {
                opcode::OpenAt2::new(types::Fd(dirfd), path, how.cast::<types::OpenHow>()).build()
            }
            OpDesc::Close { fd: raw } => opcode::Close::new(types::Fd(raw)).build(),
            OpDesc::Statx {
                dirfd,
                path,
                flags,
                mask,
                buf,
            } => opcode::Statx::new(types::Fd(dirfd), path, buf.cast::<types::statx>())
                .flags(flags)
                .mask(mask)
                .build(),
            OpDesc::UnlinkAt { dirfd, path, flags } => {
                opcode::UnlinkAt::new(types::Fd(dirfd), path)
                    .flags(flags)
                    .build()
            }
            OpDesc::RenameAt {
                olddirfd,
                oldpath,
                newdirfd,
                newpath,
                flags,
            } => opcode::RenameAt::new(types::Fd(olddirfd), oldpath, types::Fd(newdirfd), newpath)
                .flags(flags)
                .build(),
            OpDesc::MkdirAt { dirfd, path, mode } => opcode::MkDirAt::new(types::Fd(dirfd), path)
                .mode(mode)
                .build(),
            OpDesc::SymlinkAt {
                target,
                newdirfd,
                linkpath,
            } => opcode::SymlinkAt::new(types::Fd(newdirfd), target, linkpath).build(),
            OpDesc::LinkAt {
                olddirfd,
                oldpath,
                newdirfd,
                newpath,
                flags,
            } => opcode::LinkAt::new(types::Fd(olddirfd), oldpath, types::Fd(newdirfd), newpath)
                .flags(flags)
                .build(),
            OpDesc::ReadLinkAt { .. } | OpDesc::ReadDir { .. } => return None,
            OpDesc::Accept {
                fd: f,
                addr,
                addrlen,
                ..
            } => opcode::Accept::new(fd(f), addr, addrlen)
                .flags(SOCKET_FLAGS)
                .build(),
            OpDesc::Connect {
                fd: f,
                addr,
                addrlen,
                ..
            } => opcode::Connect::new(fd(f), addr, addrlen).build(),
            OpDesc::Recv {
                fd: f,
                buf,
                len,
                flags: msg_flags,
                buf_index,
                ..
            } => match self.own(buf_index) {
                // A socket reads like a file: READ_FIXED takes the registered buffer (the
                // offset means nothing to a socket). Only without receive flags, which a
                // read cannot pass.
                Some(i) if msg_flags == 0 => opcode::ReadFixed::new(fd(f), buf, len, i as u16)
                    .offset(0)
                    .build(),
                _ => opcode::Recv::new(fd(f), buf, len).flags(msg_flags).build(),
            },
            OpDesc::RecvMulti { fd: f, .. } => {
                opcode::RecvMulti::new(fd(f), bufring::BUF_GROUP).build()
            }
            // A zero-copy send where the kernel has the opcode (Linux 6.0), else the plain
            // send the description also is.
            OpDesc::Send {
                fd: f,
                buf,
                len,
                flags: msg_flags,
                zerocopy: true,
                buf_index,
                ..
            } if self.has(opcode::SendZc::CODE) => opcode::SendZc::new(fd(f), buf, len)
                .flags(msg_flags)
                .buf_index(self.own(buf_index).map(|i| i as u16))
                .build(),
            OpDesc::Send {
                fd: f,
                buf,
                len,
                flags: msg_flags,
                ..
            } => opcode::Send::new(fd(f), buf, len).flags(msg_flags).build(),
            OpDesc::RecvMsg {
                fd: f,
                msg,
                flags: msg_flags,
                ..
            } => opcode::RecvMsg::new(fd(f), msg).flags(msg_flags).build(),
            OpDesc::SendMsg {
                fd: f,
                msg,
                flags: msg_flags,
                zerocopy: true,
                ..
            } if self.has(opcode::SendMsgZc::CODE) => {
                opcode::SendMsgZc::new(fd(f), msg).flags(msg_flags).build()
            }
            OpDesc::SendMsg {
                fd: f,
                msg,
                flags: msg_flags,
                ..
            } => opcode::SendMsg::new(fd(f), msg).flags(msg_flags).build(),
            OpDesc::AcceptMulti { fd: f } => {
                opcode::AcceptMulti::new(fd(f)).flags(SOCKET_FLAGS).build()
            }
            // Not submitted by `push` (it runs shutdown(2) itself, see `shutdown_now`); the
            // translation stays for completeness of the one description -> SQE mapping.
            OpDesc::Shutdown { fd: f, how } => opcode::Shutdown::new(fd(f), how).build(),
            // The input is named in the SQE's own field: a registered one with
            // SPLICE_F_FD_IN_FIXED (the crate sets it for `Fixed`), not IOSQE_FIXED_FILE,
            // which is the output's. No offset is -1 (a pipe).
            OpDesc::Splice {
                fd_in,
                off_in,
                fd_out,
                len,
            } => {
                let off_in = off_in.map_or(-1, |o| o as i64);
                let out = fd(fd_out);
                match self.own(fd_in.fixed) {
                    Some(slot) => opcode::Splice::new(types::Fixed(slot), off_in, out, -1, len)
                        .flags(libc::SPLICE_F_MOVE)
                        .build(),
                    None => opcode::Splice::new(types::Fd(fd_in.raw), off_in, out, -1, len)
                        .flags(libc::SPLICE_F_MOVE)
                        .build(),
                }
            }
            // No opcode: the ring splices through a pipe (`Backend::splices`); where it
            // cannot, this runs on the pool, waiting for the socket there.
            OpDesc::SendFile { .. } => return None,
            OpDesc::Poll { fd: f, interest } => {
                let events = match interest {
                    Interest::Read => libc::POLLIN,
                    Interest::Write => libc::POLLOUT,
                };
                opcode::PollAdd::new(fd(f), events as u32).build()
            }
        };
        Some(entry.flags(sqe_flags))
    }
}

impl Backend for Uring {
    fn push(
        &mut self,
        key: usize,
        desc: &OpDesc,
        inline: bool,
        _waker: &std::task::Waker,
    ) -> io::Result<Push> {
        if let Some(route) = &self.route {
            if route.takes(desc) && !self.hides(desc.name()) {
                return Ok(self.push_polled(key, desc));
            }
        }
        if inline {
            // SAFETY: the op owning desc's memory is alive for the whole submission call.
            let done = unsafe {
                match desc {
                    OpDesc::Read { .. } => self.cached.try_complete(desc),
                    _ => self.sends.try_complete(desc),
                }
            };
            if let Some(c) = done {
                return Ok(Push::Completed(c));
            }
        }
        if let OpDesc::SendFile {
            file, offset, len, ..
        } = *desc
        {
            if self.is_cached(file.raw, offset, len) {
                return Ok(self.sendfile_now(key, desc, inline));
            }
            // Reading the file may wait for the device: on the pool, which also waits
            // for the socket there (`submit_op` finds no opcode for it).
        }
        // A stream send or shutdown behind an earlier one of its socket waits its turn.
        if self.sends.defer(key, desc) {
            return Ok(Push::Queued);
        }
        if let OpDesc::Shutdown { .. } = desc {
            self.shutdown_now(key, desc);
            return Ok(Push::Queued);
        }
        Ok(match self.submit_op(key, desc)? {
            Enqueued::Yes => Push::Queued,
            Enqueued::QueueFull => Push::Full,
        })
    }

    /// Queues both entries back to back, the first with IOSQE_IO_LINK, if the ring runs
    /// both itself and has room for both.
    fn push_linked(
        &mut self,
        first: (usize, &OpDesc),
        second: (usize, &OpDesc),
    ) -> io::Result<Linked> {
        // An operation io_uring has no entry for runs on the pool: emulated then.
        let (Some(a), Some(b)) = (self.sqe(first.1), self.sqe(second.1)) else {
            return Ok(Linked::Unsupported);
        };
        let a = a.user_data(first.0 as u64).flags(squeue::Flags::IO_LINK);
        let b = b.user_data(second.0 as u64);
        if !self.runs_in_ring(first.1, &a) || !self.runs_in_ring(second.1, &b) {
            return Ok(Linked::Unsupported);
        }
        let mut sq = self.ring.submission();
        // SAFETY: the driver keeps both operations, which own every pointer in their
        // descriptions, alive until their completions are reaped (driver contract,
        // point 1). push_multiple queues both or neither.
        Ok(match unsafe { sq.push_multiple(&[a, b]) } {
            Ok(()) => Linked::Queued,
            Err(_) => Linked::Full,
        })
    }

    /// Queues the operation with IOSQE_IO_LINK and an IORING_OP_LINK_TIMEOUT behind it
    /// (relative to now), if the ring runs the operation itself and has room for both.
    fn push_timed(
        &mut self,
        key: usize,
        desc: &OpDesc,
        deadline: std::time::Instant,
    ) -> io::Result<Linked> {
        let Some(op) = self.sqe(desc) else {
            return Ok(Linked::Unsupported);
        };
        let op = op.user_data(key as u64).flags(squeue::Flags::IO_LINK);
        if !self.runs_in_ring(desc, &op) {
            return Ok(Linked::Unsupported);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ts = Box::new(types::Timespec::from(left));
        let timeout = opcode::LinkTimeout::new(&*ts)
            .build()
            .user_data(LINK_TIMEOUT_TOKEN);
        let mut sq = self.ring.submission();
        // SAFETY: as in `push_linked` for the operation; the timeout's duration lives on
        // the heap in `timespecs` until the kernel has taken the entry (`enter`).
        let pushed = unsafe { sq.push_multiple(&[op, timeout]) };
        drop(sq);
        Ok(match pushed {
            Ok(()) => {
                self.timespecs.push(ts);
                Linked::Queued
            }
            Err(_) => Linked::Full,
        })
    }

    fn cancel(&mut self, key: usize) -> io::Result<Enqueued> {
        // On the polled ring: recorded only (see `driver::iopoll`); it completes on its
        // own within the device's latency.
        if self.route.as_mut().is_some_and(|r| r.cancel(key)) {
            return Ok(Enqueued::Yes);
        }
        if self.cancel_deferred(key) || (!self.rerouting.is_empty() && self.cancel_rerouting(key)) {
            return Ok(Enqueued::Yes);
        }
        // An operation the kernel lacks runs on the pool: stop its wait, if it waits.
        self.offload.cancel(key);
        let entry = opcode::AsyncCancel::new(key as u64)
            .build()
            .user_data(CANCEL_TOKEN);
        // SAFETY: a cancel request carries no pointers.
        Ok(unsafe { self.push_entry(&entry) })
    }

    fn enter(&mut self, mut wait: Wait) -> io::Result<usize> {
        for fd in std::mem::take(&mut self.blocked_on_full_sq) {
            self.submit_next_in_turn(fd);
        }
        if self.offload.has_completions() || !self.completed_here.is_empty() {
            // Results are waiting outside the ring: do not sleep on it.
            wait = Wait::No;
        }
        if self.polled.is_some() {
            if !self.rerouting.is_empty() {
                let mut failed = Vec::new();
                self.reroute(|key, c| failed.push((key, c)));
                self.completed_here.extend(failed);
            }
            // Polled completions appear only when the ring is polled: with any in flight
            // (or refused ones still waiting for room), poll instead of sleeping.
            if self.poll_polled()? || !self.rerouting.is_empty() || !self.completed_here.is_empty()
            {
                wait = Wait::No;
            }
        }
        if !self.blocked_on_full_sq.is_empty() {
            // A deferred send still finds no room in the queue (the kernel has not taken the
            // entries yet, e.g. SQPOLL): come back soon rather than sleep past it.
            if let Wait::Park(t) = wait {
                wait = Wait::Park(Some(
                    t.map_or(MAX_UNARMED_SLEEP, |t| t.min(MAX_UNARMED_SLEEP)),
                ));
            }
        }
        if let Wait::Park(t) = wait {
            if !self.wake_armed && !self.arm_wake() {
                // Without the eventfd read armed, a wake from another thread could not end
                // the sleep: sleep briefly instead, and arm it on the next reap.
                wait = Wait::Park(Some(
                    t.map_or(MAX_UNARMED_SLEEP, |t| t.min(MAX_UNARMED_SLEEP)),
                ));
            }
        }
        if let Wait::No = wait {
            let mut sq = self.ring.submission();
            sq.sync();
            if sq.is_empty() && !sq.cq_overflow() && !sq.taskrun() {
                return Ok(0);
            }
        }
        let submitter = self.ring.submitter();
        let res = match wait {
            Wait::No => submitter.submit(),
            Wait::Park(None) => submitter.submit_and_wait(1),
            Wait::Park(Some(d)) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(1, &args)
            }
        };
        if !self.timespecs.is_empty() {
            self.release_timespecs();
        }
        match res {
            Ok(submitted) => Ok(submitted),
            // The wait timed out. The kernel answers ETIME only when the entry submitted
            // nothing (a count of submitted entries takes precedence over the wait's error).
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(0),
            Err(e) => Err(classify_enter_error(e)),
        }
    }

    fn reap(&mut self, mut sink: impl FnMut(usize, Completion)) {
        let mut rearm = false;
        // Descriptors whose submitted send finished with a deferred one behind it.
        let mut freed: Vec<RawFd> = Vec::new();
        {
            let mut cq = self.ring.completion();
            cq.sync();
            self.cq_overflow = cq.overflow();
            for cqe in &mut cq {
                match cqe.user_data() {
                    CANCEL_TOKEN | PROBE_TOKEN | LINK_TIMEOUT_TOKEN => {}
                    WAKE_TOKEN => {
                        self.wake_armed = false;
                        rearm = true;
                    }
                    key => {
                        let key = key as usize;
                        let flags = cqe.flags();
                        if let (Some(br), Some(bid)) =
                            (&mut self.bufring, cqueue::buffer_select(flags))
                        {
                            br.taken(bid);
                        }
                        if !cqueue::more(flags) && self.multishot.get(key) == Some(&true) {
                            self.multishot[key] = false;
                            self.multishot_live -= 1;
                        }
                        // A send is done with its socket at its first completion: a
                        // zero-copy send's notification (its final completion) only says
                        // the kernel let go of the buffer, so the next send of the stream
                        // need not wait for it. (A no-op for anything but a tracked send.)
                        if !cqueue::notif(flags) && (!cqueue::more(flags) || zc_sent(flags)) {
                            if let Some(fd) = self.sends.finished(key) {
                                freed.push(fd);
                            }
                        }
                        sink(
                            key,
                            Completion {
                                res: cqe.result(),
                                flags,
                            },
                        )
                    }
                }
            }
        }
        if self.polled.is_some() {
            self.reap_polled(&mut sink);
        }
        let sends = &mut self.sends;
        self.offload.drain(&mut |key, c| {
            if let Some(fd) = sends.finished(key) {
                freed.push(fd);
            }
            sink(key, c);
        });
        for fd in freed {
            self.submit_next_in_turn(fd);
        }
        for (key, c) in std::mem::take(&mut self.completed_here) {
            sink(key, c);
        }
        if rearm || !self.wake_armed {
            // A full queue leaves it unarmed (wake_armed stays false) and the next reap
            // tries again; meanwhile remote wakes still land in the eventfd counter.
            self.arm_wake();
        }
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        self.wake.clone()
    }

    /// A description of the ring for diagnostics.
    fn describe(&self) -> String {
        let p = self.ring.params();
        format!(
            "io_uring ({} sq / {} cq entries, {}{})",
            p.sq_entries(),
            p.cq_entries(),
            self.setup,
            if self.polled.is_some() {
                ", iopoll ring"
            } else {
                ""
            }
        )
    }

    /// Operations run on the blocking pool because their opcode is missing.
    fn offloaded(&self) -> u64 {
        self.offload.spawned()
    }

    fn cq_overflow(&self) -> u64 {
        u64::from(self.cq_overflow)
    }

    /// Cancels operation `key` before returning: a deferred one at once; otherwise first hands
    /// every queued submission to the kernel (a request still in the queue cannot be
    /// found), then IORING_REGISTER_SYNC_CANCEL, then an enter with GETEVENTS so that
    /// deferred task work posts the final completion.
    ///
    /// # Errors
    ///
    /// If the queue could not be emptied or the kernel refused; the caller then cancels
    /// asynchronously.
    fn cancel_sync(&mut self, key: usize) -> io::Result<()> {
        if self.cancel_deferred(key) || (!self.rerouting.is_empty() && self.cancel_rerouting(key)) {
            return Ok(());
        }
        if self.route.as_ref().is_some_and(|r| r.has(key)) {
            // On the polled ring, which has no cancel: it completes on its own (see
            // `driver::iopoll`), so the driver waits for it asynchronously.
            return Err(io::Error::from_raw_os_error(libc::EINPROGRESS));
        }
        if self.offload.has(key) {
            // Not in the ring (the kernel lacks its opcode): the ring would answer ENOENT,
            // "finished". Stop the pool job's wait instead; it completes with ECANCELED
            // through a later reap, so this cancel is not synchronous.
            self.offload.cancel(key);
            return Err(io::Error::from_raw_os_error(libc::EINPROGRESS));
        }
        // A request still in the submission queue cannot be found: hand the queue to the
        // kernel first (only if it holds anything: this runs on every drop of a stream
        // with an armed receive).
        let mut sq = self.ring.submission();
        sq.sync();
        let queued = !sq.is_empty();
        drop(sq);
        if queued {
            self.ring.submit()?;
            let mut sq = self.ring.submission();
            sq.sync();
            if !sq.is_empty() {
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
        }
        let timeout = types::Timespec::new().sec(1);
        match self
            .ring
            .submitter()
            .register_sync_cancel(Some(timeout), types::CancelBuilder::user_data(key as u64))
        {
            Ok(()) => {}
            // Already finished: its final completion is in the queue or being posted.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        // SAFETY: an enter with no submissions and no argument; GETEVENTS with
        // min_complete 0 runs pending task work and returns without waiting.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(0, 0, ENTER_GETEVENTS, None)?
        };
        Ok(())
    }

    /// This ring's id, which registrations in its tables carry.
    fn ring_id(&self) -> Option<NonZeroU32> {
        Some(self.registry.id())
    }

    /// Puts `fd` into the ring's registered-file table.
    ///
    /// # Errors
    ///
    /// See [`fixed::Registry::register_file`].
    fn register_file(&self, fd: RawFd) -> io::Result<Option<Registration>> {
        self.registry.register_file(fd).map(Some)
    }

    /// Puts buffers into the ring's registered-buffer table.
    ///
    /// # Errors
    ///
    /// See [`fixed::Registry::register_buffers`].
    fn register_buffers(&self, bufs: &[libc::iovec]) -> io::Result<Option<Registration>> {
        self.registry.register_buffers(bufs).map(Some)
    }

    /// Whether streams may use multishot receives; sets up the buffer ring on first call.
    ///
    /// Multishot receive with a buffer ring dates from Linux 6.0; we require a feature bit
    /// that proves a later kernel (IORING_FEAT_RECVSEND_BUNDLE, 6.10) rather than guess
    /// from the version string, and RECV not being hidden by the test hook.
    fn multishot_recv(&mut self) -> bool {
        if self.bufring.is_some() {
            return true;
        }
        if self.no_multishot {
            return false;
        }
        let recv_missing = self.missing & (1u128 << opcode::RecvMulti::CODE) != 0
            || self.hides("recv")
            || self.hides("recv_multi");
        if recv_missing || !self.ring.params().is_feature_recvsend_bundle() {
            self.no_multishot = true;
            return false;
        }
        let Some(shape) = self.recv_buffers else {
            self.no_multishot = true;
            return false;
        };
        match bufring::BufRing::new(&self.ring, shape) {
            Ok(br) => {
                self.bufring = Some(br);
                true
            }
            Err(_) => {
                self.no_multishot = true;
                false
            }
        }
    }

    /// Whether listeners may use multishot accepts: IORING_ACCEPT_MULTISHOT dates from
    /// Linux 5.19; as for multishot receives, a feature bit proves a later kernel
    /// (IORING_FEAT_RECVSEND_BUNDLE, 6.10) rather than a guess from the version string, and
    /// the test hook may hide it ("accept" or "accept_multi").
    fn multishot_accept(&mut self) -> bool {
        self.has(opcode::AcceptMulti::CODE)
            && !self.hides("accept")
            && !self.hides("accept_multi")
            && self.ring.params().is_feature_recvsend_bundle()
    }

    /// The size of each provided buffer.
    fn provided_buf_size(&self) -> usize {
        self.bufring.as_ref().map_or(0, |b| b.buf_size())
    }

    /// The first `len` bytes of provided buffer `bid`.
    fn provided_buf(&self, bid: u16, len: usize) -> &[u8] {
        self.bufring
            .as_ref()
            .expect("coring: a completion named a provided buffer but no buffer ring exists")
            .data(bid, len)
    }

    /// Hands provided buffer `bid` back to the kernel.
    fn recycle_buf(&mut self, bid: u16) {
        if let Some(br) = &mut self.bufring {
            br.recycle(bid);
        }
    }

    /// Provided buffers filled and not yet recycled.
    fn provided_in_use(&self) -> usize {
        self.bufring.as_ref().map_or(0, |b| b.in_use())
    }

    /// The routing of direct IO to the polled ring, if asked for.
    fn poll_route(&self) -> Option<&PollRoute> {
        self.route.as_ref()
    }

    /// Whether files go to sockets by splice ([`crate::Builder::splice_files`]), and the
    /// ring runs both IORING_OP_SPLICE and IORING_OP_POLL_ADD (and the test hook hides
    /// neither).
    fn splices(&self) -> bool {
        let code = |c: u8| self.missing & (1u128 << c) == 0;
        self.splice_files
            && code(opcode::Splice::CODE)
            && code(opcode::PollAdd::CODE)
            && !self.hides("splice")
            && !self.hides("poll_add")
    }
}

/// Whether a completion is a zero-copy send's result with its notification to follow
/// (CQE_F_MORE without a provided buffer: a multishot receive's always names one; a
/// multishot accept is no tracked send, for which `SendOrder::finished` does nothing).
fn zc_sent(flags: u32) -> bool {
    cqueue::more(flags) && cqueue::buffer_select(flags).is_none()
}

/// Opcodes the ring itself needs (wakeups, cancellation, the setup round trip).
const CORE_OPCODES: &[(u8, &str)] = &[
    (opcode::Nop::CODE, "NOP"),
    (opcode::Read::CODE, "READ"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

/// The eventfd other threads write to wake a parked ring.
struct EventFd(OwnedFd);

impl EventFd {
    fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by eventfd and is owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl Unpark for EventFd {
    fn unpark(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. EAGAIN (counter
        // saturated) means a wakeup is already pending, which is all we need.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}
