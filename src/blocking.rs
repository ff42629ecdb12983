//! Blocking work off the cores: [`spawn_blocking`] on a bounded pool of threads (the
//! fallback crate's [`BlockingPool`]) that a runtime, or every core of a
//! [`Pool`](crate::Pool), shares.
//!
//! The pool is bounded twice: at most `threads` run at once, and at most `threads +
//! queue` jobs are accepted (running or waiting). A job beyond that is refused at once
//! with a `WouldBlock` error, never queued without bound: the caller decides whether to
//! retry later, shed the request or do it another way.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coring_fallback::BlockingPool;

use crate::pool::{Abort, SpawnHandle};
use crate::runtime::context;
use crate::sync::oneshot;
use crate::task::JoinError;

/// How long an idle blocking thread waits for work before it exits.
const IDLE: Duration = Duration::from_secs(10);

/// The blocking pool of a runtime (or of a whole [`Pool`](crate::Pool)), with its bound.
pub(crate) struct Blocking {
    pool: BlockingPool,
    /// Jobs accepted and not finished (running or queued).
    outstanding: Arc<AtomicUsize>,
    threads: usize,
    queue: usize,
}

impl fmt::Debug for Blocking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocking")
            .field("threads", &self.threads)
            .field("queue", &self.queue)
            .field("outstanding", &self.outstanding.load(Ordering::Relaxed))
            .finish()
    }
}

/// Gives the job's place back when it finishes, panics or is dropped unrun.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Blocking {
    /// A pool of at most `threads` threads accepting at most `threads + queue` jobs.
    pub(crate) fn new(threads: usize, queue: usize) -> Blocking {
        let threads = threads.max(1);
        Blocking {
            pool: BlockingPool::new(threads, IDLE),
            outstanding: Arc::new(AtomicUsize::new(0)),
            threads,
            queue,
        }
    }

    fn spawn<F, T>(&self, f: F) -> io::Result<SpawnHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let limit = self.threads + self.queue;
        let taken = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "spawn_blocking: the blocking pool is saturated ({} threads busy and {} \
                     jobs queued); retry later or shed the work, or raise \
                     Builder::blocking_threads / Builder::blocking_queue",
                    self.threads, self.queue
                ),
            ));
        }
        let slot = Slot(self.outstanding.clone());
        let (tx, rx) = oneshot::channel();
        let abort = Abort::new();
        let remote = abort.clone();
        self.pool.spawn(move || {
            let out = if remote.is_aborted() {
                Err(JoinError::cancelled())
            } else {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(JoinError::panic)
            };
            // The place is free before the caller learns the result, so a caller that
            // awaited it can spawn again at once.
            drop(slot);
            let _ = tx.send(out);
        })?;
        Ok(SpawnHandle::new(rx, abort))
    }
}

/// Runs the blocking function `f` on the runtime's bounded blocking pool (shared by every
/// core of a [`Pool`](crate::Pool)) and returns a handle to await its result from the
/// calling task: the core keeps running its other tasks meanwhile, and is woken through
/// its cross-thread wakeup when `f` returns. A panic in `f` is the handle's
/// [`JoinError`]. [`SpawnHandle::abort`] skips `f` if it has not started yet.
///
/// At most [`Builder::blocking_threads`](crate::Builder::blocking_threads) run at once
/// (default 16), and at most
/// [`Builder::blocking_queue`](crate::Builder::blocking_queue) more wait (default 256).
///
/// # Errors
///
/// `WouldBlock` when that many jobs are already running or waiting (the pool is
/// saturated: retry later or shed the work), or the error of starting a thread when none
/// could be started.
///
/// # Panics
///
/// Outside a coring runtime.
///
/// ```
/// coring::start(async {
///     let h = coring::spawn_blocking(|| std::fs::metadata(".").is_ok()).unwrap();
///     assert!(h.await.unwrap());
/// });
/// ```
#[track_caller]
pub fn spawn_blocking<F, T>(f: F) -> io::Result<SpawnHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let blocking = context::with(
        "coring::spawn_blocking called outside a coring runtime; call it from a task or \
         inside Runtime::block_on",
        |inner| inner.blocking.clone(),
    );
    blocking.spawn(f)
}
