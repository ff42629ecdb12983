//! Running descriptions on the blocking pool and reporting them as completions: used by the
//! fallback backend for everything readiness cannot serve, and by the io_uring backend for
//! opcodes the kernel lacks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coring_fallback::BlockingPool;

use super::sys;
use super::{Completion, OpDesc, Unpark};

/// Most threads one runtime's blocking pool runs at once.
pub(crate) const POOL_THREADS: usize = 16;
/// How long an idle pool thread lingers before exiting.
const POOL_IDLE: Duration = Duration::from_secs(10);

/// An operation description sent to a pool thread.
struct SendDesc(OpDesc);

// SAFETY: the pointers inside are only dereferenced by the pool job, while the driver keeps
// the memory they point to alive (until the job's completion is reaped); the job is the
// only user of that memory meanwhile.
unsafe impl Send for SendDesc {}

/// Finished jobs, and a flag that spares the event loop the lock when there are none.
#[derive(Default)]
struct Done {
    list: Mutex<Vec<(usize, Completion)>>,
    any: AtomicBool,
}

impl Done {
    fn push(&self, key: usize, c: Completion) {
        lock(&self.list).push((key, c));
        self.any.store(true, Ordering::Release);
    }
}

/// A blocking pool whose results come back as completions.
pub(crate) struct Offload {
    pool: BlockingPool,
    done: Arc<Done>,
    unparker: Arc<dyn Unpark>,
    spawned: u64,
}

impl Offload {
    /// Results are announced through `unparker`, so a parked backend wakes up for them.
    pub(crate) fn new(unparker: Arc<dyn Unpark>) -> Offload {
        Offload {
            pool: BlockingPool::new(POOL_THREADS, POOL_IDLE),
            done: Arc::new(Done::default()),
            unparker,
            spawned: 0,
        }
    }

    /// Runs `desc` on the pool; its completion is reported by a later [`Offload::drain`].
    /// If no thread can be started, the completion carries the error at once.
    pub(crate) fn spawn(&mut self, key: usize, desc: OpDesc) {
        let job = SendDesc(desc);
        let done = self.done.clone();
        let unparker = self.unparker.clone();
        self.spawned += 1;
        let spawned = self.pool.spawn(move || {
            let job = job;
            // SAFETY: the driver keeps the op's memory alive until this completion has been
            // pushed and reaped (SendDesc's invariant).
            let res = unsafe { sys::execute_blocking(&job.0) };
            done.push(key, Completion { res, flags: 0 });
            unparker.unpark();
        });
        if let Err(e) = spawned {
            let errno = e.raw_os_error().unwrap_or(libc::EAGAIN);
            self.done.push(key, Completion::error(errno));
        }
    }

    /// Whether finished jobs wait to be reaped.
    pub(crate) fn has_completions(&self) -> bool {
        self.done.any.load(Ordering::Acquire)
    }

    /// Reports every finished job.
    pub(crate) fn drain(&mut self, sink: &mut dyn FnMut(usize, Completion)) {
        // Cleared before taking the list: a job finishing in between sets it again, so
        // nothing is left unannounced. A plain load first: this runs every turn, and the
        // flag is almost always clear (a swap is a locked instruction even then).
        if !self.done.any.load(Ordering::Acquire) || !self.done.any.swap(false, Ordering::AcqRel) {
            return;
        }
        let done = std::mem::take(&mut *lock(&self.done.list));
        for (key, c) in done {
            sink(key, c);
        }
    }

    /// Operations handed to the pool so far.
    pub(crate) fn spawned(&self) -> u64 {
        self.spawned
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
