//! What TCP and Unix listeners share: accepts that a dropped future does not lose, and
//! (where the backend has it) one multishot accept per busy listener.

use crate::platform::c;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::retained::{next_watcher_id, Outcome, RetainedOps, Watchers};
use crate::driver::op::{IntoOrphan, Op, Operation};
use crate::driver::{Backend, Completion, Driver, OpDesc, Orphan, Submitted};
use crate::op::net::{Accept, RawAddr};
use crate::op::SharedFd;
use crate::runtime::context;

/// What an accept yields: the connection and its peer's address (`None`: not known; a
/// multishot accept does not report it, ask the connection).
type Accepted = io::Result<(SharedFd, Option<Box<RawAddr>>)>;

/// A listening socket's accepts.
///
/// **Multishot.** Where the backend runs multishot accepts (io_uring,
/// `Backend::multishot_accept`), the first accept arms one IORING_OP_ACCEPT with
/// IORING_ACCEPT_MULTISHOT for the listener: the kernel then accepts connection after
/// connection with that one submission, each reported by a completion that waits in the
/// operation's slot (or, once collected, in [`MultiAccept::ready`]) until an accept takes
/// it. A busy listener so costs one SQE, not one per connection. At most
/// `MULTISHOT_QUEUE_CAP` connections wait there: reaching it cancels the multishot accept
/// (further connections stay in the kernel's backlog) and a later accept arms it again.
/// A dropped accept future loses nothing (the connection waits for the next accept), and
/// dropping the listener cancels the operation and closes every connection it accepted
/// that no accept took, also those the kernel reports after the drop.
///
/// **Single-shot** (the other backends, and a listener whose single-shot accepts are still
/// retained): an accept whose future is dropped after submission (a select that picked
/// another branch, a timeout) is retained, not cancelled, and a later accept returns its
/// connection first ([`RetainedOps`]): the kernel never accepts a connection that coring
/// then closes unseen, however many accepts run at once.
pub(crate) struct Acceptor {
    fd: SharedFd,
    retained: RetainedOps<Accept>,
    /// Boxed: a listener stays small (and its conversions' `Err(self)` too).
    multi: Box<RefCell<MultiAccept>>,
}

/// A listener's multishot accept and the connections it got.
struct MultiAccept {
    /// The armed operation: the driver it runs on and its key.
    armed: Option<(Rc<RefCell<Driver>>, usize)>,
    /// Connections collected from the operation, not yet returned, oldest first.
    ready: VecDeque<SharedFd>,
    /// An error the operation ended with, for the next accept to report.
    failed: Option<io::Error>,
    /// The runtime (`context::driver_id`) found without multishot accepts; 0: none.
    single_shot_runtime: u64,
    /// The accepts waiting, and the waker that wakes them all (the driver keeps one waker
    /// per operation; every waiting accept must hear of a connection).
    watchers: Arc<Watchers>,
    wake_all: Waker,
}

impl Default for MultiAccept {
    fn default() -> Self {
        let watchers = Arc::new(Watchers::default());
        MultiAccept {
            armed: None,
            ready: VecDeque::new(),
            failed: None,
            single_shot_runtime: 0,
            wake_all: Waker::from(watchers.clone()),
            watchers,
        }
    }
}

/// What a multishot accept owns once its listener is gone: the listening descriptor, kept
/// open until the final completion. Every connection the kernel reports meanwhile (and
/// the final completion, if it carries one) is closed at once: nobody will accept it.
pub(crate) struct AcceptMultiOrphan {
    // Owned, never read: keeps the listener open until the final completion.
    #[allow(dead_code)]
    fd: SharedFd,
}

impl AcceptMultiOrphan {
    /// Closes the connection a completion carries, if it carries one.
    fn close(c: Completion) {
        if c.res >= 0 {
            crate::platform::close(c.res);
        }
    }
}

impl Orphan for AcceptMultiOrphan {
    fn finish(self: Box<Self>, c: Completion) {
        AcceptMultiOrphan::close(c);
    }

    fn progress(&mut self, c: Completion) {
        AcceptMultiOrphan::close(c);
    }
}

impl IntoOrphan for AcceptMultiOrphan {
    fn into_orphan(self) -> Box<dyn Orphan> {
        Box::new(self)
    }
}

/// Unregisters an accept call from the multishot accept's watchers when it ends.
struct Watching<'a>(&'a RefCell<MultiAccept>, u64);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        if let Ok(m) = self.0.try_borrow() {
            m.watchers.unwatch(self.1);
        }
    }
}

/// The error of an accept while the listener's multishot accept runs on another runtime.
fn elsewhere() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "this listener's accept runs on another runtime, which may accept a connection \
         for it: accept there",
    )
}

impl MultiAccept {
    /// Takes every completion of the armed operation already reported, in order: a
    /// connection goes to `ready`, a final error to `failed` (cancellation, which the
    /// driver's cap or the listener asked for, is no error); polls it with the waker that
    /// wakes every waiting accept.
    fn collect(&mut self) {
        let Some((driver, key)) = self.armed.clone() else {
            return;
        };
        let mut cx = Context::from_waker(&self.wake_all);
        let mut d = driver.borrow_mut();
        while let Poll::Ready(c) = d.poll_op(key, &mut cx) {
            if c.res >= 0 {
                self.ready.push_back(SharedFd::new(c.res));
            } else if c.res != -c::ECANCELED {
                self.failed = Some(io::Error::from_raw_os_error(-c.res));
            }
            if !c.more() {
                self.armed = None;
                break;
            }
        }
    }

    /// Cancels the armed operation at once where the backend can and collects what it
    /// got; whether it is over (else it is being cancelled: collect later).
    fn cancel_now(&mut self) -> bool {
        let Some((driver, key)) = self.armed.clone() else {
            return true;
        };
        driver.borrow_mut().cancel_now(key);
        self.collect();
        self.armed.is_none()
    }
}

impl Acceptor {
    pub(crate) fn new(fd: SharedFd) -> Acceptor {
        Acceptor {
            fd,
            retained: RetainedOps::new(
                "this listener's accept runs on another runtime, which may accept a \
                 connection for it: accept there",
            ),
            multi: Box::default(),
        }
    }

    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// The next connection: from the multishot accept where there is one (see
    /// [`Acceptor`]), else the first a retained accept got, else this call's own accept's
    /// (see [`RetainedOps`]).
    pub(crate) async fn accept(&self) -> Accepted {
        let watching = Watching(&self.multi, next_watcher_id());
        let multi = poll_fn(|cx| self.poll_multi(cx, watching.1)).await;
        drop(watching);
        if let Some(res) = multi {
            return res.map(|fd| (fd, None));
        }
        match self
            .retained
            .call(Op::new(Accept::new(&self.fd)), |a| a)
            .await
        {
            Outcome::Own(accept, c) | Outcome::Retained(accept, c, _) => {
                accept.complete(c).map(|(fd, addr)| (fd, Some(addr)))
            }
            Outcome::Elsewhere(e, _) => Err(e),
        }
    }

    /// The multishot side of an accept, as watcher `id`: a connection it got (or its
    /// error), `Pending` while it runs, or `None`: accept single-shot (the runtime has no
    /// multishot accepts, or single-shot accepts of the listener are retained).
    fn poll_multi(&self, cx: &mut Context<'_>, id: u64) -> Poll<Option<io::Result<SharedFd>>> {
        let mut m = self.multi.borrow_mut();
        m.watchers.watch(id, cx.waker());
        loop {
            if let Some(fd) = m.ready.pop_front() {
                return Poll::Ready(Some(Ok(fd)));
            }
            if let Some(e) = m.failed.take() {
                return Poll::Ready(Some(Err(e)));
            }
            let Some((driver, key)) = m.armed.clone() else {
                break;
            };
            if !context::is_current_driver(&driver) && !driver.borrow().is_finished(key) {
                return Poll::Ready(Some(Err(elsewhere())));
            }
            m.collect();
            if m.ready.is_empty() && m.failed.is_none() && m.armed.is_some() {
                if context::cancel_requested(cx.waker()) {
                    return Poll::Ready(Some(Err(context::cancelled())));
                }
                return Poll::Pending;
            }
        }
        // Nothing armed: arm, unless this runtime cannot or retained single-shot accepts
        // come first.
        if m.single_shot_runtime == context::driver_id() || !self.retained.is_empty() {
            return Poll::Ready(None);
        }
        if context::cancel_requested(cx.waker()) {
            return Poll::Ready(Some(Err(context::cancelled())));
        }
        let driver = context::driver();
        let mut d = driver.borrow_mut();
        if !d.backend_mut().multishot_accept() {
            drop(d);
            m.single_shot_runtime = context::driver_id();
            return Poll::Ready(None);
        }
        // Group 0: the operation is the listener's, not this accept's; no call's cancel
        // token reaches it.
        let desc = OpDesc::AcceptMulti {
            fd: self.fd.fd_ref(),
        };
        match d.submit(&desc, &m.wake_all, false, 0) {
            Ok(Submitted::InFlight(key)) => {
                drop(d);
                m.armed = Some((driver.clone(), key));
                Poll::Pending
            }
            // Not accepted: single-shot on this runtime from now on.
            Ok(Submitted::Completed(_) | Submitted::NotReady) | Err(_) => {
                drop(d);
                m.single_shot_runtime = context::driver_id();
                Poll::Ready(None)
            }
        }
    }

    /// Cancels the multishot accept and the retained accepts at once where the backend
    /// can; connections they got before the cancel stay for later accepts. Returns how
    /// many finished operations still hold the descriptor (not for the kernel).
    pub(crate) fn quiesce(&self) -> usize {
        self.multi.borrow_mut().cancel_now();
        self.retained.quiesce()
    }

    /// Gives up the descriptor (see `socket_conversions!`): gives `self` back, state
    /// intact, while an accept holds a connection not returned yet (accept it first) or
    /// could not be cancelled at once (it is being cancelled; try again after the
    /// runtime has run).
    pub(crate) fn into_fd(self) -> Result<SharedFd, Acceptor> {
        let idle = {
            let mut m = self.multi.borrow_mut();
            m.cancel_now() && m.ready.is_empty()
        };
        if !idle || !self.retained.settle() {
            return Err(self);
        }
        Ok(self.fd.clone())
    }
}

impl Drop for Acceptor {
    /// Closes the connections accepted and not taken, and cancels the multishot accept: at
    /// once where the backend can, else the driver keeps it as an orphan that closes what
    /// the kernel still reports.
    fn drop(&mut self) {
        let m = self.multi.get_mut();
        m.ready.clear();
        let Some((driver, key)) = m.armed.take() else {
            return;
        };
        // The driver is never borrowed while user code runs; if it were, leaking the
        // operation (and the listener it holds open) is the safe choice.
        let Ok(mut d) = driver.try_borrow_mut() else {
            std::mem::forget(self.fd.clone());
            return;
        };
        d.cancel_now(key);
        let hold = AcceptMultiOrphan {
            fd: self.fd.clone(),
        };
        let mut hold = Some(hold);
        let finished = d.orphan(key, || {
            hold.take()
                .expect("coring: orphan data taken once")
                .into_orphan()
        });
        drop(d);
        match finished {
            Some((c, Some(orphan))) => orphan.finish(c),
            Some((c, None)) => AcceptMultiOrphan::close(c),
            None => {}
        }
    }
}
