//! A small, bounded pool of threads for blocking work.
//!
//! Threads are created lazily, one per job that finds no idle thread, up to
//! `max_threads`; an idle thread exits after `idle_timeout` without work. All
//! bookkeeping sits behind one mutex: jobs are rare and long (a file system
//! call), so contention is not the cost that matters.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// A queued unit of blocking work.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The name of every pool thread.
const THREAD_NAME: &str = "coring-blocking";

/// A bounded pool of lazily created threads for work that readiness cannot
/// serve: regular file IO, `open`, `statx`, `fsync`, `rename`, ...
///
/// - [`spawn`](Self::spawn) queues a job. If no thread is idle and fewer than
///   `max_threads` are alive, it starts one; otherwise the job waits in a FIFO
///   queue for the next free thread. At most `max_threads` threads are ever
///   alive at once.
/// - A thread with nothing to do for `idle_timeout` exits.
/// - A job that panics is caught inside its thread: the thread survives and
///   keeps serving, the panic is not reported (the default panic hook still
///   prints it). A job reports its own result, typically over a channel.
/// - Dropping the pool does not block: the threads are detached, finish every
///   job already queued, then exit.
///
/// # Example
///
/// ```
/// use coring_fallback::BlockingPool;
/// use std::sync::mpsc;
/// use std::time::Duration;
///
/// let pool = BlockingPool::new(4, Duration::from_secs(10));
/// let (tx, rx) = mpsc::channel();
/// pool.spawn(move || {
///     let meta = std::fs::metadata(".");
///     tx.send(meta.is_ok()).expect("the caller waits for this result");
/// })?;
/// assert!(rx.recv_timeout(Duration::from_secs(5)).expect("the job ran"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct BlockingPool {
    shared: Arc<Shared>,
}

/// State shared by the pool handle and its threads.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool shuts down.
    work: Condvar,
    max_threads: usize,
    idle_timeout: Duration,
}

struct State {
    queue: VecDeque<(u64, Job)>,
    /// Identifies jobs so a failed `spawn` can take its own job back.
    next_id: u64,
    /// Threads alive or being started.
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// Set by `Drop`: threads exit once the queue is empty.
    shutdown: bool,
}

impl BlockingPool {
    /// Creates a pool of at most `max_threads` threads (0 counts as 1) whose
    /// idle threads exit after `idle_timeout`. No thread starts until the first
    /// [`spawn`](Self::spawn).
    pub fn new(max_threads: usize, idle_timeout: Duration) -> BlockingPool {
        BlockingPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    next_id: 0,
                    threads: 0,
                    idle: 0,
                    shutdown: false,
                }),
                work: Condvar::new(),
                max_threads: max_threads.max(1),
                idle_timeout,
            }),
        }
    }

    /// Queues `job` to run on a pool thread, starting a thread if none is idle
    /// and the pool is below `max_threads`.
    ///
    /// # Errors
    ///
    /// Returns the error of [`thread::Builder::spawn`] if a thread is needed,
    /// cannot be created, and no other pool thread is alive to run the job
    /// later. Every queued job, this one included, is then dropped without
    /// running, which drops its captures: a job's result channel disconnects,
    /// so no caller waits forever. When other threads are alive the job stays
    /// queued and `Ok` is returned.
    pub fn spawn<F>(&self, job: F) -> io::Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let (id, start_thread) = {
            let mut state = self.shared.lock();
            let id = state.next_id;
            state.next_id += 1;
            state.queue.push_back((id, Box::new(job)));
            // Each idle thread takes one queued job; start a thread only for a
            // job that no idle thread will take.
            let start_thread =
                state.queue.len() > state.idle && state.threads < self.shared.max_threads;
            if start_thread {
                state.threads += 1;
            }
            (id, start_thread)
        };
        self.shared.work.notify_one();
        if start_thread {
            self.start_thread(id)?;
        }
        Ok(())
    }

    /// Starts a thread already counted in `threads`. On failure it uncounts
    /// it and, if no thread is left to serve the queue, drops every queued job
    /// rather than strand it; the error is returned if job `id` was among them.
    fn start_thread(&self, id: u64) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || shared.work_loop());
        let err = match spawned {
            Ok(_detached) => return Ok(()),
            Err(err) => err,
        };
        let stranded = {
            let mut state = self.shared.lock();
            state.threads -= 1;
            if state.threads > 0 {
                // A live thread will get to the queued jobs.
                return Ok(());
            }
            std::mem::take(&mut state.queue)
        };
        let ours = stranded.iter().any(|(queued, _)| *queued == id);
        // Dropped outside the lock: a job's captures may run arbitrary code.
        drop(stranded);
        if ours {
            Err(err)
        } else {
            // A thread that has since exited already ran it.
            Ok(())
        }
    }

    /// How many pool threads are alive (or being started) right now.
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }

    /// The most threads this pool runs at once.
    pub fn max_threads(&self) -> usize {
        self.shared.max_threads
    }
}

impl Drop for BlockingPool {
    /// Tells the threads to exit once the queue is empty, without waiting for
    /// them: queued jobs still run.
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
    }
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("BlockingPool")
            .field("threads", &state.threads)
            .field("idle", &state.idle)
            .field("queued", &state.queue.len())
            .field("max_threads", &self.shared.max_threads)
            .field("idle_timeout", &self.shared.idle_timeout)
            .finish()
    }
}

impl Shared {
    /// Locks the state. Jobs run outside the lock and no code panics while
    /// holding it, so a poisoned lock still guards consistent state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Body of a pool thread: run queued jobs, wait while idle, exit after
    /// `idle_timeout` without work or when the pool is dropped and drained.
    fn work_loop(&self) {
        let mut state = self.lock();
        loop {
            if let Some((_, job)) = state.queue.pop_front() {
                drop(state);
                run(job);
                state = self.lock();
                continue;
            }
            if state.shutdown {
                break;
            }
            let timed_out;
            (state, timed_out) = self.wait_for_work(state);
            if timed_out && state.queue.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }

    /// Waits, counted as idle, until a job is queued, the pool shuts down or
    /// `idle_timeout` passes; returns whether it timed out.
    fn wait_for_work<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
    ) -> (MutexGuard<'a, State>, bool) {
        // A timeout too large for Instant means "wait forever".
        let deadline = Instant::now().checked_add(self.idle_timeout);
        state.idle += 1;
        let mut timed_out = false;
        while state.queue.is_empty() && !state.shutdown {
            match deadline {
                None => {
                    state = self
                        .work
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        timed_out = true;
                        break;
                    }
                    // Spurious wakeups loop back here and wait for what is left.
                    state = self
                        .work
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
        state.idle -= 1;
        (state, timed_out)
    }
}

/// Runs a job, containing its panic so the thread and its accounting survive.
fn run(job: Job) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(job)) {
        // Dropping a panic payload can itself panic; contain that too, and
        // leak the second payload rather than let it unwind out of the thread.
        if let Err(second) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(second);
        }
    }
}
