//! A backend driven by the test: operations stay pending until the test completes them,
//! in any order, with any result, after writing any bytes into a read's buffer.
//!
//! This is where lifecycle edge cases are proven without depending on kernel timing: a
//! completion arriving long after its future was dropped, a cancel racing the real
//! result, short and zero-length reads and writes, results larger than the buffer, submit
//! failures, and multishot receives (with provided buffers the test fills) that end with
//! data, with -ENOBUFS, with an error, or after the driver's backpressure cancel. The
//! driver, the op layer and the user API above it are the production code; only the kernel
//! is replaced. With `Builder::iopoll(true)` the mock also plays a polled ring: direct
//! reads and writes are routed by the same `driver::iopoll` code as on io_uring
//! ([`MockOp::polled`]), so a test decides whether the "device" polls (completes them) or
//! refuses (completes them with `-EOPNOTSUPP`, after which the mock holds the operation
//! again as a main-ring one, as io_uring restarts it there). Reach it with `Builder::backend(BackendKind::Mock)` and
//! [`Runtime::mock`](crate::Runtime::mock) (both hidden from the docs: test support, not
//! API), with the `test-util` feature.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Enqueued, Push, Unpark, Wait};
use crate::driver::iopoll::{PollRoute, Reaped};
use crate::driver::{Completion, OpDesc, CQE_BUFFER_SHIFT, CQE_F_BUFFER, CQE_F_MORE, CQE_F_NOTIF};

/// One operation the mock backend holds, as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockOp {
    /// The driver's key for the operation: what [`MockHandle::complete`] takes.
    pub key: usize,
    /// The operation's kind, its name as the driver gives it: `"read"`, `"write"`,
    /// `"recv"`, `"send"`, `"accept"`, `"openat"`, `"recv_multi"`, ...
    pub kind: &'static str,
    /// Bytes the operation may transfer (the buffer's length), 0 for others.
    pub len: u32,
    /// The driver asked to cancel it (its future was dropped, or a timeout fired).
    pub cancel_requested: bool,
    /// It was routed to the polled ring (`Builder::iopoll`).
    pub polled: bool,
}

struct Pending {
    desc: OpDesc,
    cancel_requested: bool,
    polled: bool,
}

#[derive(Default)]
struct State {
    pending: BTreeMap<usize, Pending>,
    ready: VecDeque<(usize, Completion)>,
    push_errors: VecDeque<i32>,
    provided: Option<Rc<Provided>>,
    /// Listeners accept with one multishot operation (kind `"accept_multi"`).
    multishot_accept: bool,
}

/// The mock's provided buffers, for multishot receives: `count` buffers of `size` bytes in
/// one allocation, which the test fills (as the kernel would) and the driver reads and
/// hands back.
struct Provided {
    mem: NonNull<u8>,
    size: usize,
    /// Per buffer: filled by the "kernel" and not yet handed back.
    in_use: RefCell<Vec<bool>>,
}

impl Provided {
    fn new(count: u16, size: usize) -> Provided {
        assert!(
            count > 0 && size > 0,
            "mock: provided buffers need a count and a size"
        );
        let layout = std::alloc::Layout::array::<u8>(size * count as usize).expect("layout");
        // SAFETY: non-zero size, checked above.
        let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Provided {
            mem,
            size,
            in_use: RefCell::new(vec![false; count as usize]),
        }
    }

    fn buf(&self, bid: u16) -> *mut u8 {
        assert!(
            (bid as usize) < self.in_use.borrow().len(),
            "mock: no buffer {bid}"
        );
        // SAFETY: bid < count, so the offset stays inside the allocation.
        unsafe { self.mem.as_ptr().add(bid as usize * self.size) }
    }
}

impl Drop for Provided {
    fn drop(&mut self) {
        let count = self.in_use.borrow().len();
        let layout = std::alloc::Layout::array::<u8>(self.size * count).expect("layout");
        // SAFETY: allocated in `new` with this layout; the last Rc is gone, so no slice
        // handed out by `provided_buf` (borrowing the backend that held an Rc) is alive.
        unsafe { std::alloc::dealloc(self.mem.as_ptr(), layout) };
    }
}

/// The test's handle on a mock runtime's backend. `!Send`, like the runtime.
#[derive(Clone)]
pub struct MockHandle {
    state: Rc<RefCell<State>>,
}

impl fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHandle")
            .field("pending", &self.pending())
            .finish()
    }
}

impl MockHandle {
    /// Every operation submitted and not yet completed, in key order.
    pub fn pending(&self) -> Vec<MockOp> {
        self.state
            .borrow()
            .pending
            .iter()
            .map(|(&key, p)| MockOp {
                key,
                kind: p.desc.name(),
                len: len(&p.desc),
                cancel_requested: p.cancel_requested,
                polled: p.polled,
            })
            .collect()
    }

    /// The one pending operation of `kind`.
    ///
    /// # Panics
    ///
    /// If there is none or more than one, naming what is pending.
    #[track_caller]
    pub fn only(&self, kind: &str) -> MockOp {
        let all = self.pending();
        let mut of_kind = all.iter().filter(|op| op.kind == kind);
        match (of_kind.next(), of_kind.next()) {
            (Some(op), None) => op.clone(),
            _ => panic!("mock: expected exactly one pending {kind:?} operation, have {all:?}"),
        }
    }

    /// Writes `data` (at most the operation's length) into the buffer of pending read or
    /// receive `key`, as the kernel would before completing it; returns the bytes written.
    /// Only what a later [`complete`](Self::complete) reports counts as initialised.
    ///
    /// # Panics
    ///
    /// If `key` is not a pending read or receive into one buffer.
    #[track_caller]
    pub fn fill(&self, key: usize, data: &[u8]) -> usize {
        let st = self.state.borrow();
        let p = st
            .pending
            .get(&key)
            .unwrap_or_else(|| panic!("mock: no pending operation {key}"));
        let (buf, cap) = match p.desc {
            OpDesc::Read { buf, len, .. } | OpDesc::Recv { buf, len, .. } => (buf, len),
            other => panic!("mock: fill needs a read or receive, operation {key} is {other:?}"),
        };
        let n = data.len().min(cap as usize);
        // SAFETY: the operation is pending, so the driver keeps its owner (and the buffer
        // its description points to, valid for `len` bytes) alive; n <= len.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, n) };
        n
    }

    /// The bytes pending write or send `key` would transfer (its whole buffer).
    ///
    /// # Panics
    ///
    /// If `key` is not a pending write or send from one buffer.
    #[track_caller]
    pub fn written(&self, key: usize) -> Vec<u8> {
        let st = self.state.borrow();
        let p = st
            .pending
            .get(&key)
            .unwrap_or_else(|| panic!("mock: no pending operation {key}"));
        match p.desc {
            OpDesc::Write { buf, len, .. } | OpDesc::Send { buf, len, .. } => {
                // SAFETY: pending, so the buffer is alive and len bytes long (see fill).
                unsafe { std::slice::from_raw_parts(buf, len as usize) }.to_vec()
            }
            other => panic!("mock: written needs a write or send, operation {key} is {other:?}"),
        }
    }

    /// Completes pending operation `key` with `res` (a byte count or other result, or
    /// `-errno`), delivered at the runtime's next turn.
    ///
    /// # Panics
    ///
    /// If `key` is not pending (each operation completes once).
    #[track_caller]
    pub fn complete(&self, key: usize, res: i32) {
        let mut st = self.state.borrow_mut();
        if st.pending.remove(&key).is_none() {
            panic!("mock: operation {key} is not pending (completed twice?)");
        }
        st.ready.push_back((key, Completion { res, flags: 0 }));
    }

    /// Posts a completion of pending operation `key` that is not its last (it carries
    /// `CQE_F_MORE`): a zero-copy send's result (`res`, the bytes sent), whose notification
    /// [`notify`](Self::notify) posts later, or an accepted connection of a multishot
    /// accept (`res`, its descriptor, which the runtime then owns). The operation stays
    /// pending.
    ///
    /// # Panics
    ///
    /// If `key` is not pending.
    #[track_caller]
    pub fn complete_more(&self, key: usize, res: i32) {
        let mut st = self.state.borrow_mut();
        assert!(
            st.pending.contains_key(&key),
            "mock: operation {key} is not pending"
        );
        st.ready.push_back((
            key,
            Completion {
                res,
                flags: CQE_F_MORE,
            },
        ));
    }

    /// Posts the final completion of pending zero-copy send `key`: its notification
    /// (`CQE_F_NOTIF`), which says the kernel no longer references the buffer.
    ///
    /// # Panics
    ///
    /// If `key` is not pending.
    #[track_caller]
    pub fn notify(&self, key: usize) {
        let mut st = self.state.borrow_mut();
        if st.pending.remove(&key).is_none() {
            panic!("mock: operation {key} is not pending (notified twice?)");
        }
        st.ready.push_back((
            key,
            Completion {
                res: 0,
                flags: CQE_F_NOTIF,
            },
        ));
    }

    /// Gives the backend `count` provided buffers of `size` bytes: stream reads then use
    /// multishot receives (kind `"recv_multi"`), fed with [`deliver`](Self::deliver).
    /// Call before the first read.
    ///
    /// # Panics
    ///
    /// When called twice (the backend keeps the first set of buffers).
    #[track_caller]
    pub fn enable_multishot(&self, count: u16, size: usize) {
        let mut st = self.state.borrow_mut();
        assert!(
            st.provided.is_none(),
            "mock: enable_multishot called twice; call it once, before the first read"
        );
        st.provided = Some(Rc::new(Provided::new(count, size)));
    }

    /// Delivers an arrival to pending multishot receive `key`: `data` goes into a free
    /// provided buffer (whose id is returned), and the completion names it; with `more`
    /// the receive stays pending, without it this is its final completion.
    ///
    /// # Panics
    ///
    /// Without provided buffers, with none free, with `data` longer than one, or if `key`
    /// is not pending.
    #[track_caller]
    pub fn deliver(&self, key: usize, data: &[u8], more: bool) -> u16 {
        let mut st = self.state.borrow_mut();
        assert!(
            st.pending.contains_key(&key),
            "mock: operation {key} is not pending"
        );
        let provided = st
            .provided
            .clone()
            .expect("mock: deliver needs enable_multishot first");
        assert!(
            data.len() <= provided.size,
            "mock: arrival larger than a buffer"
        );
        let bid = {
            let mut in_use = provided.in_use.borrow_mut();
            let bid = in_use
                .iter()
                .position(|u| !u)
                .expect("mock: every provided buffer is in use (complete with -ENOBUFS)");
            in_use[bid] = true;
            bid as u16
        };
        // SAFETY: the buffer was free, so neither the driver nor a stream reads it now;
        // data fits (checked above); the allocation lives while `provided` does.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), provided.buf(bid), data.len()) };
        if !more {
            st.pending.remove(&key);
        }
        let mut flags = CQE_F_BUFFER | (u32::from(bid) << CQE_BUFFER_SHIFT);
        if more {
            flags |= CQE_F_MORE;
        }
        st.ready.push_back((
            key,
            Completion {
                res: data.len() as i32,
                flags,
            },
        ));
        bid
    }

    /// Makes listeners accept with one multishot operation (kind `"accept_multi"`), whose
    /// connections the test posts with [`complete_more`](Self::complete_more).
    pub fn enable_multishot_accept(&self) {
        self.state.borrow_mut().multishot_accept = true;
    }

    /// Provided buffers delivered and not yet handed back by the driver.
    pub fn provided_in_use(&self) -> usize {
        self.state
            .borrow()
            .provided
            .as_ref()
            .map_or(0, |p| p.in_use.borrow().iter().filter(|u| **u).count())
    }

    /// Makes the next `n` submissions fail with `errno`, as if the kernel refused them.
    pub fn fail_next_pushes(&self, n: usize, errno: i32) {
        self.state
            .borrow_mut()
            .push_errors
            .extend(std::iter::repeat_n(errno, n));
    }
}

/// The backend half of the mock.
pub(crate) struct Mock {
    state: Rc<RefCell<State>>,
    /// The provided buffers, once a stream asked for multishot receives.
    provided: Option<Rc<Provided>>,
    /// The routing to the mock's polled ring, with `Builder::iopoll(true)`.
    route: Option<PollRoute>,
}

/// Nothing to wake: the mock never sleeps in the kernel.
struct NoUnpark;

impl Unpark for NoUnpark {
    fn unpark(&self) {}
}

impl Mock {
    pub(crate) fn new(iopoll: bool) -> Mock {
        Mock {
            state: Rc::default(),
            provided: None,
            route: iopoll.then(PollRoute::active),
        }
    }

    pub(crate) fn handle(&self) -> MockHandle {
        MockHandle {
            state: self.state.clone(),
        }
    }
}

impl Backend for Mock {
    /// Nothing completes during submission: every operation waits for the test.
    fn push(
        &mut self,
        key: usize,
        desc: &OpDesc,
        _inline: bool,
        _waker: &std::task::Waker,
    ) -> io::Result<Push> {
        let mut st = self.state.borrow_mut();
        if let Some(errno) = st.push_errors.pop_front() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let polled = self.route.as_ref().is_some_and(|r| r.takes(desc));
        if polled {
            if let Some(r) = &mut self.route {
                r.started(key, desc);
            }
        }
        st.pending.insert(
            key,
            Pending {
                desc: *desc,
                cancel_requested: false,
                polled,
            },
        );
        Ok(Push::Queued)
    }

    /// Records the request; the test decides how the operation ends (`-ECANCELED`, or
    /// its real result if the "kernel" finished it first).
    fn cancel(&mut self, key: usize) -> io::Result<Enqueued> {
        if let Some(r) = &mut self.route {
            r.cancel(key);
        }
        if let Some(p) = self.state.borrow_mut().pending.get_mut(&key) {
            p.cancel_requested = true;
        }
        Ok(Enqueued::Yes)
    }

    /// Never sleeps in the kernel. With nothing to report and no timer to wait for, the
    /// test awaits an operation it never completes: an error (fatal for the runtime)
    /// says so instead of spinning until the test's watchdog fires.
    fn enter(&mut self, wait: Wait) -> io::Result<usize> {
        let st = self.state.borrow();
        match wait {
            Wait::Park(_) if !st.ready.is_empty() => Ok(0),
            Wait::Park(Some(d)) => {
                drop(st);
                // A timer is due: let time pass as a kernel wait would.
                std::thread::sleep(d.min(Duration::from_millis(50)));
                Ok(0)
            }
            Wait::Park(None) => Err(io::Error::other(format!(
                "mock backend: the runtime would sleep forever: nothing to complete and no \
                 timer; pending operations: {:?}",
                st.pending.keys().collect::<Vec<_>>()
            ))),
            Wait::No => Ok(0),
        }
    }

    fn reap(&mut self, mut sink: impl FnMut(usize, Completion)) {
        // Taken out first: finishing an orphan may submit (a cancel, a close).
        let ready = std::mem::take(&mut self.state.borrow_mut().ready);
        for (key, c) in ready {
            match &mut self.route {
                Some(r) if r.has(key) => match r.completed(key, c) {
                    Reaped::Deliver(c) => sink(key, c),
                    // Held again, as a main-ring operation, for the test to complete.
                    Reaped::Reroute(desc) => {
                        self.state.borrow_mut().pending.insert(
                            key,
                            Pending {
                                desc,
                                cancel_requested: false,
                                polled: false,
                            },
                        );
                    }
                },
                _ => sink(key, c),
            }
        }
    }

    fn poll_route(&self) -> Option<&PollRoute> {
        self.route.as_ref()
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        Arc::new(NoUnpark)
    }

    fn describe(&self) -> String {
        "mock (operations complete when the test says so)".to_string()
    }

    /// Multishot receives once the test gave the backend provided buffers.
    fn multishot_recv(&mut self) -> bool {
        if self.provided.is_none() {
            self.provided = self.state.borrow().provided.clone();
        }
        self.provided.is_some()
    }

    fn provided_buf_size(&self) -> usize {
        self.provided.as_ref().map_or(0, |p| p.size)
    }

    /// Multishot accepts once the test asked for them.
    fn multishot_accept(&mut self) -> bool {
        self.state.borrow().multishot_accept
    }

    fn provided_buf(&self, bid: u16, len: usize) -> &[u8] {
        let p = self
            .provided
            .as_ref()
            .expect("coring: a completion named a provided buffer but the mock has none");
        assert!(
            len <= p.size,
            "mock: {len} bytes asked of a {}-byte buffer",
            p.size
        );
        assert!(
            p.in_use.borrow()[bid as usize],
            "mock: buffer {bid} read while not in use"
        );
        // SAFETY: buffer bid is in use (a completion named it and it was not handed back),
        // so the test does not write it; len <= size; the allocation lives as long as
        // self holds its Rc.
        unsafe { std::slice::from_raw_parts(p.buf(bid), len) }
    }

    fn recycle_buf(&mut self, bid: u16) {
        if let Some(p) = &self.provided {
            let mut in_use = p.in_use.borrow_mut();
            assert!(in_use[bid as usize], "mock: buffer {bid} handed back twice");
            in_use[bid as usize] = false;
        }
    }

    fn provided_in_use(&self) -> usize {
        self.provided
            .as_ref()
            .map_or(0, |p| p.in_use.borrow().iter().filter(|u| **u).count())
    }
}

fn len(desc: &OpDesc) -> u32 {
    match *desc {
        OpDesc::Read { len, .. }
        | OpDesc::Write { len, .. }
        | OpDesc::Recv { len, .. }
        | OpDesc::Send { len, .. }
        | OpDesc::Splice { len, .. }
        | OpDesc::SendFile { len, .. } => len,
        _ => 0,
    }
}
