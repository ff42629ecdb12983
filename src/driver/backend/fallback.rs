//! The fallback backend: io_uring-shaped completions on a readiness poller (epoll/kqueue)
//! plus a blocking thread pool, for machines where io_uring is missing or blocked.
//!
//! Socket operations are tried at once, non-blocking. On EAGAIN, most wait in a per-socket,
//! per-direction FIFO until the poller reports readiness, then are retried (so a stream's
//! writes take effect in issue order, and a dropped datagram receive or accept that was
//! submitted is retained by its socket with whatever it gets). A stream receive is not
//! submitted at all (`Push::NotReady`): the task's waker waits for the socket's next
//! readable edge and the task submits it again then, so a read that has to wait costs no
//! slot, no emulated completion and no second trip through the driver, and a read dropped
//! meanwhile leaves nothing behind (there is nothing it could have received). Everything that may
//! block (regular files, path operations, fsync) runs on the blocking pool. Every result is
//! queued as a completion and reported by `reap`, exactly like a CQE (or returned at once,
//! `Push::Completed`), so the driver's lifecycle (wakers, orphans, cancel, shutdown) is the
//! same code.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use coring_fallback::{Events, Poller, PollerWaker};

use super::{Backend, Enqueued, Push, Unpark, Wait};
use crate::driver::cached_read::CachedReads;
use crate::driver::dense::DenseMap;
use crate::driver::desc::{Interest, SocketTarget, Target};
use crate::driver::offload::{Offload, POOL_THREADS};
use crate::driver::syscall::{self, Outcome};
use crate::driver::{Completion, OpDesc};
use crate::platform;

/// How this backend runs a description.
enum Route {
    /// Runs at once (no syscall, or one that never blocks); reported by the next reap.
    Now,
    /// A socket operation: tried non-blocking, and on EAGAIN queued behind the socket's
    /// readiness, then tried again.
    Socket(SocketTarget),
    /// May block (regular files, path lookups, fsync): runs on the blocking pool, unless
    /// it is a read the page cache answers during submission.
    Pool,
}

/// Chooses how this backend runs `desc`, from what it acts on.
#[inline]
fn route(desc: &OpDesc) -> Route {
    match desc.target() {
        Target::Socket(t) => Route::Socket(t),
        Target::File { .. } | Target::Blocking => Route::Pool,
        // RecvMulti never reaches a backend without provided buffers; if it did, it would
        // fail at once (see `syscall::execute`).
        Target::Immediate => Route::Now,
    }
}

/// What this backend knows of one descriptor number: the open file registered with the
/// poller under it and its readiness, and what waits for it to become ready.
#[derive(Default)]
struct PerFd {
    /// Set once the descriptor waited for readiness (registered with the poller).
    state: Option<FdState>,
    /// Tasks whose stream receive found the socket empty: woken, oldest first, on its next
    /// readable edge (after the parked reads); each then submits its receive again. A task
    /// appears once.
    readers: Readers,
    /// Datagram receives and accepts waiting for readability, oldest first.
    read: VecDeque<(usize, OpDesc)>,
    /// Sends, connects and ordered shutdowns waiting for room, oldest first (the order a
    /// stream's writes take effect in).
    write: VecDeque<(usize, OpDesc)>,
}

/// Tasks waiting for a descriptor to become readable, oldest first, each once. Nearly
/// always one (a stream is read by one task at a time): it is kept inline, and the vector
/// is touched only when there are more.
#[derive(Default)]
struct Readers {
    first: Option<Waker>,
    /// Non-empty only while `first` is set.
    rest: Vec<Waker>,
}

impl Readers {
    /// Adds `waker` unless its task waits already; whether it was added.
    #[inline]
    fn add(&mut self, waker: &Waker) -> bool {
        match &self.first {
            None => {
                self.first = Some(waker.clone());
                true
            }
            Some(w) if w.will_wake(waker) => false,
            Some(_) if self.rest.iter().any(|w| w.will_wake(waker)) => false,
            Some(_) => {
                self.rest.push(waker.clone());
                true
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Wakes every waiting task, oldest first; how many there were.
    fn wake_all(&mut self) -> usize {
        let Some(first) = self.first.take() else {
            return 0;
        };
        first.wake();
        if self.rest.is_empty() {
            return 1;
        }
        let n = 1 + self.rest.len();
        // Drained in place: the vector keeps its capacity for this descriptor's next wait.
        for waker in self.rest.drain(..) {
            waker.wake();
        }
        n
    }
}

impl PerFd {
    fn queue(&mut self, dir: Interest) -> &mut VecDeque<(usize, OpDesc)> {
        match dir {
            Interest::Read => &mut self.read,
            Interest::Write => &mut self.write,
        }
    }

    /// The registered state, if it is open file `id`'s (not a closed file's that had the
    /// same number).
    fn known(&mut self, id: u64) -> Option<&mut FdState> {
        self.state.as_mut().filter(|s| s.id == id)
    }
}

/// A registered open file and what the poller last said about it.
struct FdState {
    id: u64,
    readable: bool,
    writable: bool,
    /// The peer closed its side, or the socket has an error: that state never sends
    /// another edge, so the direction stays "ready" from then on (reads return 0 or the
    /// error at once).
    read_closed: bool,
    write_closed: bool,
    /// A stream receive shorter than asked proves the socket empty (`syscall::outcome`): a
    /// TCP socket on Linux, until the poller reports urgent data (the receive stops short
    /// at its mark), then never again.
    reads_drain: bool,
}

impl FdState {
    fn ready(&self, dir: Interest) -> bool {
        match dir {
            Interest::Read => self.readable,
            Interest::Write => self.writable,
        }
    }

    fn set_ready(&mut self, dir: Interest, on: bool) {
        match dir {
            Interest::Read => self.readable = on || self.read_closed,
            Interest::Write => self.writable = on || self.write_closed,
        }
    }
}

/// What [`Fallback::attempt`] did with a socket operation.
enum Attempt {
    /// It ran and did not have to wait: the syscall's result.
    Ran(i32),
    /// It has to wait; `watched`: the descriptor is registered and marked unready.
    Wait { watched: bool },
}

struct WakerUnpark(PollerWaker);

impl Unpark for WakerUnpark {
    fn unpark(&self) {
        // A failed wake means the poller is gone, and with it the runtime.
        let _ = self.0.wake();
    }
}

/// The fallback backend.
pub(crate) struct Fallback {
    poller: Poller,
    events: Events,
    unparker: Arc<WakerUnpark>,
    /// Everything that may block runs here.
    offload: Offload,
    /// Serves page-cache reads during submission instead of the pool.
    cached: CachedReads,
    /// Turns since the poller was last asked, while completions were queued anyway.
    unpolled_turns: u32,
    /// Completions produced on this thread, reported at the next reap.
    ready: Vec<(usize, Completion)>,
    /// Per descriptor number: which open file (by `SharedFd` id) it was registered for, its
    /// readiness as far as we know, and what waits for it.
    fds: DenseMap<PerFd>,
    /// Where each parked operation waits, for cancel.
    parked: DenseMap<(RawFd, Interest)>,
    /// Wakers in all `Waiters::readers` lists.
    readers: usize,
}

impl Fallback {
    pub(crate) fn new() -> io::Result<Fallback> {
        let poller = Poller::new()?;
        let unparker = Arc::new(WakerUnpark(poller.waker()));
        Ok(Fallback {
            poller,
            events: Events::with_capacity(256),
            offload: Offload::new(unparker.clone()),
            cached: CachedReads::default(),
            unpolled_turns: 0,
            unparker,
            ready: Vec::new(),
            fds: DenseMap::default(),
            parked: DenseMap::default(),
            readers: 0,
        })
    }

    /// Whether anything waits for the poller: parked operations or tasks waiting to read.
    fn waiting(&self) -> bool {
        !self.parked.is_empty() || self.readers > 0
    }

    /// Runs an operation that never blocks (or needs nothing); its completion goes with
    /// the next reap. A shutdown of the write side issued while sends of its socket wait
    /// for room waits behind them, in their queue (it would fail them), as on io_uring.
    fn push_now(&mut self, key: usize, desc: &OpDesc) {
        if let OpDesc::Shutdown { fd, .. } = *desc {
            let fd = fd.raw;
            let behind = self
                .fds
                .get(fd as usize)
                .is_some_and(|w| !w.write.is_empty());
            if behind && desc.is_ordered_write() {
                self.park(key, fd, Interest::Write, *desc);
                return;
            }
        }
        // SAFETY: the driver keeps the op's memory alive until its completion is reaped,
        // which happens after this call.
        let res = unsafe { syscall::execute(desc) };
        self.ready.push((key, Completion { res, flags: 0 }));
    }

    /// Runs a socket op now, or has it wait for the socket's readiness: a stream receive
    /// as a waker ([`Push::NotReady`]), anything else in the socket's queue for its
    /// direction (FIFO, so a stream's sends take effect in issue order). One that ran
    /// completes at once if `inline` allows, else with the next reap.
    fn push_socket(
        &mut self,
        key: usize,
        desc: &OpDesc,
        t: SocketTarget,
        inline: bool,
        waker: &Waker,
    ) -> Push {
        let watched = match self.attempt(desc, t) {
            Attempt::Ran(res) if inline => return Push::Completed(Completion { res, flags: 0 }),
            Attempt::Ran(res) => {
                self.ready.push((key, Completion { res, flags: 0 }));
                return Push::Queued;
            }
            Attempt::Wait { watched } => watched,
        };
        if !watched {
            if let Err(e) = self.watch(t.fd, t.id, t.interest) {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                self.ready.push((key, Completion::error(errno)));
                return Push::Queued;
            }
        }
        if let OpDesc::Recv { stream: true, .. } = desc {
            // Nothing to keep: submitted later, it reads what is there then, as it would
            // have now (a datagram receive or an accept is parked instead, so that one
            // whose call is dropped is retained by its socket with what it gets).
            self.wait_readable(t.fd, waker);
            return Push::NotReady;
        }
        self.park(key, t.fd, t.interest, *desc);
        Push::Queued
    }

    /// Has `waker` woken on `fd`'s next readable edge (once, however often its task asks).
    fn wait_readable(&mut self, fd: RawFd, waker: &Waker) {
        if self.fds.get_or_default(fd as usize).readers.add(waker) {
            self.readers += 1;
        }
    }

    /// Queues op `key` on `fd` behind the ones already waiting in direction `dir`.
    fn park(&mut self, key: usize, fd: RawFd, dir: Interest, desc: OpDesc) {
        self.fds
            .get_or_default(fd as usize)
            .queue(dir)
            .push_back((key, desc));
        self.parked.insert(key, (fd, dir));
    }

    /// Runs a socket op's syscall now, if no op is parked before it on its descriptor in
    /// that direction and the descriptor is not known to be unready: `Ran` with its
    /// result, unless it would block. Else `Wait`, saying whether the descriptor is watched
    /// and marked unready already (after a blocked attempt it is: registered on its first
    /// wait), so the op waits without a second syscall or lookup.
    #[inline(always)]
    fn attempt(&mut self, desc: &OpDesc, t: SocketTarget) -> Attempt {
        let SocketTarget {
            fd,
            id,
            interest: dir,
        } = t;
        // What the poller last told us about this open file: after an EAGAIN (or a short
        // send) it is not ready until an edge says so, and trying again would only cost a
        // syscall that fails.
        let (queue_empty, known) = match self.fds.get_mut(fd as usize) {
            Some(e) => (e.queue(dir).is_empty(), e.known(id)),
            None => (true, None),
        };
        let unready = known.as_ref().is_some_and(|s| !s.ready(dir));
        if !queue_empty || unready {
            return Attempt::Wait { watched: unready };
        }
        // SAFETY: the driver keeps the op's memory alive until its completion is reaped
        // (or, for an inline completion, for the whole submission call).
        let res = unsafe { syscall::execute(desc) };
        match known {
            Some(s) => match syscall::outcome(desc, res, s.reads_drain) {
                Outcome::Wait => {
                    s.set_ready(dir, false);
                    return Attempt::Wait { watched: true };
                }
                Outcome::Drained => s.set_ready(dir, false),
                Outcome::Ready => {}
            },
            // First wait of this open file: register it (a registration error is reported
            // by the push that follows, which tries again).
            None if syscall::would_block(desc, res) => {
                let watched = self.watch(fd, id, dir).is_ok();
                return Attempt::Wait { watched };
            }
            None => {}
        }
        Attempt::Ran(res)
    }

    /// Makes sure the poller watches `fd` (open file `id`) and marks it unready in `dir`,
    /// before an op waits for it; an edge that arrived since the last attempt is reported
    /// by the registration itself (or was already queued). Registration lasts as long as
    /// the open file, so it happens once per file: the id tells a new file apart from a
    /// closed one that had the same number (closing removed that one from the poller).
    fn watch(&mut self, fd: RawFd, id: u64, dir: Interest) -> io::Result<()> {
        if let Some(s) = self.fds.get_mut(fd as usize).and_then(|e| e.known(id)) {
            s.set_ready(dir, false);
            return Ok(());
        }
        if let Err(e) = self.poller.register(fd, fd as usize) {
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        // Tasks still listed for a closed file that had this number: their operations
        // went with it; wake them rather than keep them forever.
        self.wake_readers(fd);
        let mut s = FdState {
            id,
            readable: true,
            writable: true,
            read_closed: false,
            write_closed: false,
            reads_drain: platform::short_read_drains(fd),
        };
        s.set_ready(dir, false);
        self.fds.get_or_default(fd as usize).state = Some(s);
        Ok(())
    }

    /// Runs the shutdowns at the head of `fd`'s write queue (they waited for the sends
    /// before them, and need no readiness themselves), after the op before them left it.
    fn run_leading_shutdowns(&mut self, fd: RawFd) {
        let Some(w) = self.fds.get_mut(fd as usize) else {
            return;
        };
        while let Some(&(key, desc @ OpDesc::Shutdown { .. })) = w.write.front() {
            w.write.pop_front();
            self.parked.remove(key);
            // SAFETY: a shutdown carries no pointers.
            let res = unsafe { syscall::execute(&desc) };
            self.ready.push((key, Completion { res, flags: 0 }));
        }
    }

    /// Wakes the tasks waiting to read `fd`, oldest first.
    fn wake_readers(&mut self, fd: RawFd) {
        let Some(w) = self.fds.get_mut(fd as usize) else {
            return;
        };
        self.readers -= w.readers.wake_all();
    }

    /// The fd is ready in `dir`: run its parked operations in order until one would block
    /// again.
    fn retry(&mut self, fd: RawFd, dir: Interest) {
        let Some(w) = self.fds.get_mut(fd as usize) else {
            return;
        };
        let PerFd {
            state, read, write, ..
        } = w;
        let q = match dir {
            Interest::Read => read,
            Interest::Write => write,
        };
        while let Some(&(key, desc)) = q.front() {
            // SAFETY: the driver keeps the op's memory alive until its completion is reaped.
            let res = unsafe { syscall::resume(&desc) };
            let reads_drain = state.as_ref().is_some_and(|s| s.reads_drain);
            let outcome = syscall::outcome(&desc, res, reads_drain);
            if outcome != Outcome::Ready {
                if let Some(s) = state.as_mut() {
                    s.set_ready(dir, false);
                }
            }
            if outcome == Outcome::Wait {
                break;
            }
            q.pop_front();
            self.parked.remove(key);
            self.ready.push((key, Completion { res, flags: 0 }));
        }
        // The emptied queues stay, keeping their capacity for this descriptor's next wait.
    }
}

impl Backend for Fallback {
    fn push(&mut self, key: usize, desc: &OpDesc, inline: bool, waker: &Waker) -> io::Result<Push> {
        Ok(match route(desc) {
            Route::Socket(t) => self.push_socket(key, desc, t, inline, waker),
            Route::Now => {
                self.push_now(key, desc);
                Push::Queued
            }
            Route::Pool => {
                let cached = if inline {
                    // SAFETY: the op owning desc's memory is alive for the whole
                    // submission call.
                    unsafe { self.cached.try_complete(desc) }
                } else {
                    None
                };
                match cached {
                    Some(c) => Push::Completed(c),
                    None => {
                        self.offload.spawn(key, *desc);
                        Push::Queued
                    }
                }
            }
        })
    }

    /// As `push`, except that a stream receive which has to wait is parked in its socket's
    /// read queue (retried on the next readable edge, as a datagram receive is) rather than
    /// left to its task: no task will submit it again.
    fn push_held(&mut self, key: usize, desc: &OpDesc) -> io::Result<Push> {
        let (Route::Socket(t), OpDesc::Recv { stream: true, .. }) = (route(desc), desc) else {
            return self.push(key, desc, false, Waker::noop());
        };
        match self.attempt(desc, t) {
            Attempt::Ran(res) => self.ready.push((key, Completion { res, flags: 0 })),
            Attempt::Wait { watched } => {
                let unwatched = if watched {
                    None
                } else {
                    self.watch(t.fd, t.id, t.interest).err()
                };
                match unwatched {
                    Some(e) => {
                        let errno = e.raw_os_error().unwrap_or(libc::EIO);
                        self.ready.push((key, Completion::error(errno)));
                    }
                    None => self.park(key, t.fd, t.interest, *desc),
                }
            }
        }
        Ok(Push::Queued)
    }

    fn cancel(&mut self, key: usize) -> io::Result<Enqueued> {
        if let Some((fd, dir)) = self.parked.remove(key) {
            if let Some(w) = self.fds.get_mut(fd as usize) {
                w.queue(dir).retain(|(k, _)| *k != key);
            }
            self.ready.push((key, Completion::error(libc::ECANCELED)));
            self.run_leading_shutdowns(fd);
        }
        // Ops run at submission are already done (and a receive waiting for readiness was
        // never submitted). A pool job waiting for its descriptor (a pipe
        // read) stops with ECANCELED; any other runs to its end. Either way its result is
        // then delivered to the orphan, which releases the op's resources.
        self.offload.cancel(key);
        Ok(Enqueued::Yes)
    }

    fn enter(&mut self, wait: Wait) -> io::Result<usize> {
        let have_completions = !self.ready.is_empty() || self.offload.has_completions();
        let timeout = match wait {
            // Completions are queued already: report them without asking the kernel, but
            // still look at readiness every few turns so sockets are not starved.
            _ if have_completions => {
                self.unpolled_turns += 1;
                if !self.waiting() || self.unpolled_turns < 61 {
                    return Ok(0);
                }
                Some(Duration::ZERO)
            }
            Wait::No if !self.waiting() => return Ok(0),
            Wait::No => Some(Duration::ZERO),
            Wait::Park(t) => t,
        };
        self.unpolled_turns = 0;
        self.poller.wait(&mut self.events, timeout)?;
        let batch = self.events.len();
        // By index: retrying an fd's waiters needs `self` while the events stay put.
        for i in 0..self.events.len() {
            let Some(e) = self.events.get(i) else { break };
            let fd = e.token() as RawFd;
            let error = e.is_error();
            // Urgent data is pending (TCP): short reads no longer prove the socket empty.
            let urgent = e.is_priority();
            let read_closed = e.is_read_closed() || error;
            let write_closed = e.is_write_closed() || error;
            let readable = e.is_readable() || read_closed || urgent;
            let writable = e.is_writable() || write_closed;
            let Some(w) = self.fds.get_mut(fd as usize) else {
                continue;
            };
            if let Some(s) = w.state.as_mut() {
                s.reads_drain &= !urgent;
                s.read_closed |= read_closed;
                s.write_closed |= write_closed;
                s.readable |= readable;
                s.writable |= writable;
            }
            // What waits on the descriptor, looked at once: on most edges (a stream's
            // readable edge, with writability reported beside it) only readers wait.
            let (reads, readers, writes) = (
                readable && !w.read.is_empty(),
                readable && !w.readers.is_empty(),
                writable && !w.write.is_empty(),
            );
            if reads {
                self.retry(fd, Interest::Read);
            }
            // Tasks waiting to read go after the parked reads, and only if those left
            // the socket readable.
            if readers && self.fds.get(fd as usize).is_some_and(|w| w.read.is_empty()) {
                self.wake_readers(fd);
            }
            if writes {
                self.retry(fd, Interest::Write);
            }
        }
        Ok(batch)
    }

    fn reap(&mut self, mut sink: impl FnMut(usize, Completion)) {
        if !self.ready.is_empty() {
            for (key, c) in self.ready.drain(..) {
                sink(key, c);
            }
        }
        self.offload.drain(sink);
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        self.unparker.clone()
    }

    fn describe(&self) -> String {
        format!(
            "fallback ({} + blocking pool of up to {POOL_THREADS} threads)",
            if cfg!(target_os = "linux") {
                "epoll"
            } else {
                "kqueue"
            }
        )
    }

    fn offloaded(&self) -> u64 {
        self.offload.spawned()
    }

    #[inline]
    fn poll_readable(&mut self, fd: RawFd, id: u64, waker: &Waker) -> Poll<()> {
        let Some(e) = self.fds.get_mut(fd as usize) else {
            return Poll::Ready(());
        };
        let empty = e.known(id).is_some_and(|s| !s.ready(Interest::Read));
        if !empty || !e.read.is_empty() {
            return Poll::Ready(());
        }
        if e.readers.add(waker) {
            self.readers += 1;
        }
        Poll::Pending
    }

    /// A socket op waiting for readiness is cancelled at once (its `-ECANCELED` is queued
    /// for the reap that follows); anything else has no synchronous cancel here: a pool
    /// job finishes on its thread (at once if it was waiting for a pipe), and an op run at
    /// submission is done. The driver then cancels asynchronously.
    fn cancel_sync(&mut self, key: usize) -> io::Result<()> {
        if self.parked.get(key).is_none() {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        self.cancel(key).map(drop)
    }
}
