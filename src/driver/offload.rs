//! Running descriptions on the blocking pool and reporting them as completions: used by the
//! fallback backend for everything readiness cannot serve, and by the io_uring backend for
//! opcodes the kernel lacks.

#[cfg(unix)]
use std::io::Write;
#[cfg(unix)]
use std::os::fd::AsRawFd;
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coring_fallback::BlockingPool;

use super::dense::DenseMap;
use super::syscall;
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
struct FinishedJobs {
    list: Mutex<Vec<(usize, Completion)>>,
    any: AtomicBool,
}

impl FinishedJobs {
    fn push(&self, key: usize, c: Completion) {
        lock(&self.list).push((key, c));
        self.any.store(true, Ordering::Release);
    }
}

/// A pool job's cancellation, for the jobs that wait for a descriptor (IO on a pipe, socket
/// operations): they wait in `poll(2)` on the descriptor and on a wake socket that
/// [`JobCancel::cancel`] writes to. Jobs that only run one system call (a regular file's
/// read, an open) cannot be interrupted and simply finish.
#[derive(Default)]
pub(crate) struct JobCancel {
    state: Mutex<CancelState>,
}

#[derive(Default)]
struct CancelState {
    cancelled: bool,
    /// Created by the first wait (most jobs never wait): the end cancel writes to, and the
    /// end the wait polls. (On Windows no job waits for a descriptor: files and paths only.)
    #[cfg(unix)]
    wake: Option<(UnixStream, UnixStream)>,
}

impl JobCancel {
    /// Ends the job's wait (now or when it starts one) with ECANCELED.
    fn cancel(&self) {
        let mut s = lock(&self.state);
        // Set once; the wake byte is written by the first cancel only.
        #[cfg_attr(windows, allow(unused_variables))]
        let already = std::mem::replace(&mut s.cancelled, true);
        #[cfg(unix)]
        if let (false, Some((tx, _))) = (already, &s.wake) {
            // One byte into an empty socket buffer cannot block; if it failed, the socket
            // is broken and the poll below reports that end as ready (hang-up) anyway.
            let _ = (&*tx).write(&[1]);
        }
    }

    #[cfg(unix)]
    /// Waits until `fd` reports `events` (or an error or hang-up, which the retried call
    /// then reports), or the job is cancelled: `Err(ECANCELED)`. `Err(errno)` too if the
    /// wait itself fails.
    pub(crate) fn wait(&self, fd: libc::c_int, events: libc::c_short) -> Result<(), i32> {
        let wake = {
            let mut s = lock(&self.state);
            if s.wake.is_none() {
                // Without descriptors to spare (EMFILE), the wait below looks at the flag
                // every 100 ms instead: the job's own call must not fail for it.
                s.wake = UnixStream::pair().ok();
            }
            // The pair lives as long as `self`, which the job holds while it waits.
            s.wake.as_ref().map(|(_, rx)| rx.as_raw_fd())
        };
        let mut fds = [
            libc::pollfd {
                fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let (nfds, timeout_ms) = if wake.is_some() { (2, -1) } else { (1, 100) };
        loop {
            // Set before the wake byte is written (both under the lock), so a cancel is
            // seen here either before the poll or through the wake socket during it.
            if lock(&self.state).cancelled {
                return Err(libc::ECANCELED);
            }
            // SAFETY: polls the first `nfds` (<= 2) live pollfds of the array.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
            if r > 0 {
                break;
            }
            if r < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => {}
                    e => return Err(e.unwrap_or(libc::EIO)),
                }
            }
        }
        if lock(&self.state).cancelled {
            return Err(libc::ECANCELED);
        }
        Ok(())
    }
}

/// A blocking pool whose results come back as completions.
pub(crate) struct Offload {
    pool: BlockingPool,
    done: Arc<FinishedJobs>,
    unparker: Arc<dyn Unpark>,
    spawned: u64,
    /// Each running job's cancellation, by key, until its completion is drained.
    cancels: DenseMap<Arc<JobCancel>>,
}

impl Offload {
    /// Results are announced through `unparker`, so a parked backend wakes up for them.
    pub(crate) fn new(unparker: Arc<dyn Unpark>) -> Offload {
        Offload {
            pool: BlockingPool::new(POOL_THREADS, POOL_IDLE),
            done: Arc::new(FinishedJobs::default()),
            unparker,
            spawned: 0,
            cancels: DenseMap::default(),
        }
    }

    /// Runs `desc` on the pool; its completion is reported by a later [`Offload::drain`].
    /// If no thread can be started, the completion carries the error at once.
    pub(crate) fn spawn(&mut self, key: usize, desc: OpDesc) {
        let job = SendDesc(desc);
        let done = self.done.clone();
        let unparker = self.unparker.clone();
        let cancel = Arc::new(JobCancel::default());
        self.cancels.insert(key, cancel.clone());
        self.spawned += 1;
        let spawned = self.pool.spawn(move || {
            let job = job;
            // SAFETY: the driver keeps the op's memory alive until this completion has been
            // pushed and reaped (SendDesc's invariant).
            let res = unsafe { syscall::execute_blocking(&job.0, &cancel) };
            done.push(key, Completion { res, flags: 0 });
            unparker.unpark();
        });
        if let Err(e) = spawned {
            let errno = e.raw_os_error().unwrap_or(crate::platform::c::EAGAIN);
            self.done.push(key, Completion::error(errno));
        }
    }

    /// Whether job `key` is ours and its completion not drained yet.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn has(&self, key: usize) -> bool {
        self.cancels.get(key).is_some()
    }

    /// Asks job `key`, if it is one of ours and still running, to stop waiting: a job
    /// waiting for its descriptor completes with ECANCELED; any other runs to its end.
    pub(crate) fn cancel(&mut self, key: usize) {
        if let Some(c) = self.cancels.get(key) {
            c.cancel();
        }
    }

    /// Whether finished jobs wait to be reaped.
    pub(crate) fn has_completions(&self) -> bool {
        self.done.any.load(Ordering::Acquire)
    }

    /// Reports every finished job.
    pub(crate) fn drain(&mut self, mut sink: impl FnMut(usize, Completion)) {
        // Cleared before taking the list: a job finishing in between sets it again, so
        // nothing is left unannounced. A plain load first: this runs every turn, and the
        // flag is almost always clear (a swap is a locked instruction even then).
        if !self.done.any.load(Ordering::Acquire) || !self.done.any.swap(false, Ordering::AcqRel) {
            return;
        }
        let done = std::mem::take(&mut *lock(&self.done.list));
        for (key, c) in done {
            self.cancels.remove(key);
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
