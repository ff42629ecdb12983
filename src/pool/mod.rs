//! Thread-per-core: one pinned thread per selected CPU, each with its own [`Runtime`]
//! (its own ring, or fallback backend), and a way to start work on any of them.
//!
//! Tasks never migrate. [`Pool::spawn_on`] sends a `Send` closure to a core, where it
//! builds a `!Send` future that runs there; the result comes back through a handle that
//! any core, or a plain thread, can wait on. Work reaches a core through its mailbox: the
//! push wakes that core's runtime with its cross-thread wakeup (an eventfd the ring keeps
//! a read armed on, or the poller's waker on the fallback), so an idle core sleeps in the
//! kernel until then; no core ever polls another.
//!
//! [`Pool::handle`] gives a cloneable `Send + Sync` [`PoolHandle`] that does the same from
//! any thread or core, including calls that bring an output back ([`PoolHandle::submit_to`]);
//! [`Sharded`] keeps one instance of a service per core.

mod handle;
mod sharded;

use std::cell::Cell;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) use handle::Abort;
pub use handle::{Gather, PoolHandle, SpawnHandle, Submit, WaitError};
pub use sharded::Sharded;

use crate::runtime::{BackendKind, Builder};

thread_local! {
    /// The pool (its [`PoolShared::id`]) and index of the core this thread runs.
    static CURRENT_CORE: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

/// The index (in its [`Pool`]) of the core the calling thread runs, or `None` outside a
/// pool's core thread. With a [`PoolHandle`] it lets a task route work by key:
///
/// ```
/// # use std::time::Duration;
/// let pool = coring::Pool::builder().cores(1).pin(false).build().unwrap();
/// let handle = pool.handle();
/// let h = handle.clone();
/// let owner_of = move |key: u64| (key % h.cores() as u64) as usize;
/// let out = handle
///     .submit_to(0, move || async move {
///         let here = coring::current_core().unwrap();
///         let owner = owner_of(7);
///         if owner == here {
///             "served here".to_string()
///         } else {
///             format!("forward to core {owner}")
///         }
///     })
///     .wait(Duration::from_secs(5))
///     .unwrap();
/// assert_eq!(out, "served here");
/// assert_eq!(coring::current_core(), None);
/// pool.shutdown().unwrap();
/// ```
pub fn current_core() -> Option<usize> {
    CURRENT_CORE.with(Cell::get).map(|(_, i)| i)
}

/// The pool and core index of the calling thread, if it is a core thread.
fn current_pool_core() -> Option<(u64, usize)> {
    CURRENT_CORE.with(Cell::get)
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Work waiting to be started on one core.
struct Mailbox {
    state: Mutex<MailState>,
}

struct MailState {
    jobs: Vec<Job>,
    waker: Option<Waker>,
    closed: bool,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, MailState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job and wakes the core. A closed mailbox drops the job at once (its
    /// result channel then reports the task as cancelled).
    fn push(&self, job: Job) {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            // Its captures (a result sender) may run arbitrary code when dropped.
            drop(job);
            return;
        }
        st.jobs.push(job);
        let w = st.waker.take();
        drop(st);
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Closes the mailbox; pending jobs are dropped (their handles see cancellation).
    fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        let jobs = std::mem::take(&mut st.jobs);
        let w = st.waker.take();
        drop(st);
        drop(jobs);
        if let Some(w) = w {
            w.wake();
        }
    }

    /// The core's main future: starts every job it receives, until closed.
    async fn serve(&self) {
        let mut batch = Vec::new();
        loop {
            let closed = poll_fn(|cx| {
                let mut st = self.lock();
                if !st.jobs.is_empty() {
                    std::mem::swap(&mut batch, &mut st.jobs);
                    return Poll::Ready(false);
                }
                if st.closed {
                    return Poll::Ready(true);
                }
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            if closed {
                return;
            }
            for job in batch.drain(..) {
                job();
            }
        }
    }
}

/// Closes a core's mailbox when its thread ends, even by panic, so no handle waits forever.
struct CloseOnExit(Arc<Mailbox>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What a core reported once its runtime was up.
#[derive(Debug, Clone)]
pub struct CoreInfo {
    /// The core's index in the pool.
    pub index: usize,
    /// The CPU the thread is pinned to, if pinned.
    pub cpu: Option<usize>,
    /// The backend its runtime runs on.
    pub backend: BackendKind,
    /// The backend's description (`Runtime::backend_description`).
    pub backend_description: String,
}

/// What every handle of a pool shares: each core's mailbox and what it reported.
pub(crate) struct PoolShared {
    /// Tells this pool's core threads apart from other pools'.
    id: u64,
    cores: Vec<CoreSlot>,
    /// Set once the pool starts shutting down.
    closed: AtomicBool,
}

impl PoolShared {
    #[track_caller]
    fn slot(&self, index: usize) -> &CoreSlot {
        self.cores.get(index).unwrap_or_else(|| {
            panic!(
                "core {index} does not exist: this pool has cores 0..{}",
                self.cores.len()
            )
        })
    }

    #[track_caller]
    fn mailbox(&self, index: usize) -> &Mailbox {
        &self.slot(index).mailbox
    }

    /// Whether the calling thread is one of this pool's cores.
    fn on_own_core(&self) -> Option<usize> {
        current_pool_core().and_then(|(id, i)| (id == self.id).then_some(i))
    }

    /// Refuses new work on every core; each core stops once it sees its mailbox closed.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in &self.cores {
            slot.mailbox.close();
        }
    }
}

struct CoreSlot {
    info: CoreInfo,
    mailbox: Arc<Mailbox>,
}

/// A started core thread, as the owning [`Pool`] keeps it.
struct CoreThread {
    info: CoreInfo,
    mailbox: Arc<Mailbox>,
    thread: Option<thread::JoinHandle<()>>,
    /// Disconnects when the core thread has finished.
    exited: std_mpsc::Receiver<()>,
}

/// Which CPUs a pool uses.
#[derive(Debug, Clone)]
enum Cpus {
    All,
    Count(usize),
    List(Vec<usize>),
}

/// Configures a [`Pool`]; from [`Pool::builder`].
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    cpus: Cpus,
    pin: bool,
    runtime: Builder,
    shutdown_timeout: Duration,
}

impl PoolBuilder {
    /// Uses the first `n` CPUs the process may run on (default: all of them).
    ///
    /// # Panics
    ///
    /// If `n` is zero.
    pub fn cores(mut self, n: usize) -> PoolBuilder {
        assert!(n > 0, "PoolBuilder::cores: a pool needs at least one core");
        self.cpus = Cpus::Count(n);
        self
    }

    /// Uses exactly these CPU ids, one core thread each.
    ///
    /// # Panics
    ///
    /// If the list is empty.
    pub fn cpu_list(mut self, cpus: impl Into<Vec<usize>>) -> PoolBuilder {
        let cpus = cpus.into();
        assert!(!cpus.is_empty(), "PoolBuilder::cpu_list: the list is empty");
        self.cpus = Cpus::List(cpus);
        self
    }

    /// Pins each core thread to its CPU (default `true`, except on macOS, which cannot pin
    /// threads: building a pinned pool there fails with a clear error). Unpinned, the threads still
    /// own one runtime each but the OS may move them, and a CPU list may name CPUs the
    /// machine lacks (they are just labels then).
    pub fn pin(mut self, on: bool) -> PoolBuilder {
        self.pin = on;
        self
    }

    /// The settings of every core's runtime (entries, backend, ...).
    pub fn runtime(mut self, builder: Builder) -> PoolBuilder {
        self.runtime = builder;
        self
    }

    /// Shortcut for the backend of every core's runtime.
    pub fn backend(mut self, kind: BackendKind) -> PoolBuilder {
        self.runtime = self.runtime.backend(kind);
        self
    }

    /// How long [`Pool::shutdown`] waits for the core threads (default 10 s).
    pub fn shutdown_timeout(mut self, d: Duration) -> PoolBuilder {
        self.shutdown_timeout = d;
        self
    }

    /// Which CPUs to start on, checked against the ones the process may use.
    fn resolve(&self) -> io::Result<Vec<Option<usize>>> {
        let available: Vec<usize> = core_affinity::get_core_ids()
            .map(|ids| ids.into_iter().map(|c| c.id).collect())
            .unwrap_or_default();
        let wanted: Vec<usize> = match &self.cpus {
            Cpus::All if available.is_empty() => {
                vec![0; thread::available_parallelism().map_or(1, |n| n.get())]
            }
            Cpus::All => available.clone(),
            Cpus::Count(n) if available.is_empty() => vec![0; *n],
            Cpus::Count(n) => {
                if *n > available.len() && self.pin {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "asked for {n} pinned cores but this process may run on {} CPUs \
                             ({available:?}); ask for fewer, or use .pin(false)",
                            available.len()
                        ),
                    ));
                }
                (0..*n).map(|i| available[i % available.len()]).collect()
            }
            Cpus::List(l) => l.clone(),
        };
        if !self.pin {
            return Ok(wanted.into_iter().map(|_| None).collect());
        }
        if available.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "cannot read this process's CPU affinity to pin core threads; use .pin(false)",
            ));
        }
        for cpu in &wanted {
            if !available.contains(cpu) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "CPU {cpu} does not exist or is not allowed for this process \
                         (allowed: {available:?}); choose among them, or use .pin(false) to \
                         run unpinned"
                    ),
                ));
            }
        }
        Ok(wanted.into_iter().map(Some).collect())
    }

    /// Starts the core threads and waits until every runtime is up.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a CPU that does not exist (with the allowed list), an error from
    /// pinning, or a core's runtime failing to build (for example io_uring forced where it
    /// is unavailable). Cores already started are shut down first.
    pub fn build(self) -> io::Result<Pool> {
        static NEXT_POOL: AtomicU64 = AtomicU64::new(1);
        let cpus = self.resolve()?;
        let id = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
        // One blocking pool for `spawn_blocking`, shared by every core's runtime.
        let runtime = self.runtime.clone().share_blocking();
        let mut threads: Vec<CoreThread> = Vec::with_capacity(cpus.len());
        for (index, cpu) in cpus.into_iter().enumerate() {
            match start_core(id, index, cpu, runtime.clone()) {
                Ok(core) => threads.push(core),
                Err(e) => {
                    let mut partial = Pool::assemble(id, threads, self.shutdown_timeout);
                    let _ = partial.stop();
                    return Err(e);
                }
            }
        }
        Ok(Pool::assemble(id, threads, self.shutdown_timeout))
    }
}

/// Starts one core thread and waits for its runtime to come up.
fn start_core(
    pool: u64,
    index: usize,
    cpu: Option<usize>,
    builder: Builder,
) -> io::Result<CoreThread> {
    let mailbox = Arc::new(Mailbox {
        state: Mutex::new(MailState {
            jobs: Vec::new(),
            waker: None,
            closed: false,
        }),
    });
    let (ready_tx, ready_rx) = std_mpsc::channel::<io::Result<CoreInfo>>();
    let (exit_tx, exited) = std_mpsc::channel::<()>();
    let mb = mailbox.clone();
    let thread = thread::Builder::new()
        .name(format!("coring-core-{index}"))
        .spawn(move || {
            let _exit = exit_tx;
            let _close = CloseOnExit(mb.clone());
            if let Some(cpu) = cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    let _ = ready_tx.send(Err(io::Error::other(format!(
                        "could not pin core {index} to CPU {cpu}"
                    ))));
                    return;
                }
            }
            CURRENT_CORE.with(|c| c.set(Some((pool, index))));
            let rt = match builder.build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ =
                        ready_tx.send(Err(io::Error::new(e.kind(), format!("core {index}: {e}"))));
                    return;
                }
            };
            let info = CoreInfo {
                index,
                cpu,
                backend: rt.backend(),
                backend_description: rt.backend_description(),
            };
            let _ = ready_tx.send(Ok(info));
            rt.block_on(async {
                mb.serve().await;
                // The core's `Sharded` instances go while its runtime still runs (they
                // may hold its sockets and files).
                sharded::drop_local_instances();
            });
            // Dropping the runtime cancels the core's remaining tasks and operations,
            // bounded by its shutdown timeout.
            drop(rt);
        })?;
    let info = match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            mailbox.close();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("core {index} did not start within 30 s"),
            ));
        }
    };
    Ok(CoreThread {
        info,
        mailbox,
        thread: Some(thread),
        exited,
    })
}

/// A set of pinned core threads, each running its own [`Runtime`](crate::Runtime).
///
/// The `Pool` owns the threads (shutting down waits for them); [`Pool::handle`] gives a
/// cloneable `Send + Sync` [`PoolHandle`] to reach the cores from anywhere.
///
/// ```
/// let pool = coring::Pool::builder().cores(1).pin(false).build().unwrap();
/// let mut h = pool.spawn_on(0, || async { coring::current_core().unwrap() * 10 + 1 });
/// assert_eq!(h.wait(std::time::Duration::from_secs(5)).unwrap(), 1);
/// pool.shutdown().unwrap();
/// ```
pub struct Pool {
    handle: PoolHandle,
    threads: Vec<CoreThread>,
    shutdown_timeout: Duration,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field(
                "cores",
                &self.threads.iter().map(|c| &c.info).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Pool {
    /// A builder: all CPUs, pinned, default runtime settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            cpus: Cpus::All,
            // macOS has no way to pin a thread to a CPU; there the pool runs unpinned.
            pin: !cfg!(target_vendor = "apple"),
            runtime: Builder::new(),
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    fn assemble(id: u64, threads: Vec<CoreThread>, shutdown_timeout: Duration) -> Pool {
        let cores = threads
            .iter()
            .map(|t| CoreSlot {
                info: t.info.clone(),
                mailbox: t.mailbox.clone(),
            })
            .collect();
        Pool {
            handle: PoolHandle {
                shared: Arc::new(PoolShared {
                    id,
                    cores,
                    closed: AtomicBool::new(false),
                }),
            },
            threads,
            shutdown_timeout,
        }
    }

    /// A cloneable `Send + Sync` handle to this pool's cores, for plain threads and for
    /// tasks on any core. It does not keep the pool alive: after shutdown its work is
    /// refused with an error.
    pub fn handle(&self) -> PoolHandle {
        self.handle.clone()
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.threads.len()
    }

    /// What core `index` reported at start (CPU, backend).
    ///
    /// # Panics
    ///
    /// If `index >= self.cores()`.
    #[track_caller]
    pub fn core_info(&self, index: usize) -> &CoreInfo {
        &self.handle.shared.slot(index).info
    }

    /// Runs `f` on core `index`; see [`PoolHandle::spawn_on`].
    ///
    /// # Panics
    ///
    /// If `index >= self.cores()`.
    #[track_caller]
    pub fn spawn_on<F, Fut>(&self, index: usize, f: F) -> SpawnHandle<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.handle.spawn_on(index, f)
    }

    /// Runs `f` once on every core; one handle per core, in core order.
    pub fn broadcast<F, Fut>(&self, f: F) -> Vec<SpawnHandle<Fut::Output>>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let f = Arc::new(f);
        (0..self.cores())
            .map(|i| {
                let f = f.clone();
                self.spawn_on(i, move || f())
            })
            .collect()
    }

    /// Runs `f(core)` on every core and returns once every core's future finished (a
    /// ready barrier); see [`PoolHandle::run_on_all`].
    pub fn run_on_all<F, Fut>(&self, f: F) -> Gather<Fut::Output>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.handle.run_on_all(f)
    }

    /// Stops every core: each runtime cancels its tasks and in-flight operations (bounded
    /// by its shutdown timeout) and its thread exits; waits for the threads, at most the
    /// pool's shutdown timeout. Work in flight through any [`PoolHandle`] ends with a
    /// cancelled [`JoinError`](crate::task::JoinError) (or [`WaitError::Closed`]) for its
    /// caller, and work sent afterwards is refused the same way.
    ///
    /// Called on one of the pool's own core threads (a task dropping or shutting down the
    /// pool), it cannot wait for that thread, which is busy running the caller: it closes
    /// every core and returns at once, and the threads finish on their own.
    ///
    /// # Errors
    ///
    /// If a core thread panicked (its runtime failed) or did not stop in time; the message
    /// names the cores.
    pub fn shutdown(mut self) -> Result<(), PoolError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), PoolError> {
        self.handle.shared.close();
        if self.handle.shared.on_own_core().is_some() {
            // Waiting would be for this very thread (it only exits once this task
            // returns), and waiting for the other cores would stall this one: detach them
            // all. Each stops on its own, its mailbox closed.
            for core in &mut self.threads {
                drop(core.thread.take());
            }
            return Ok(());
        }
        // `None`: no deadline (a timeout too large to add to now, such as Duration::MAX).
        let deadline = Instant::now().checked_add(self.shutdown_timeout);
        let mut problems = Vec::new();
        for core in &mut self.threads {
            let Some(thread) = core.thread.take() else {
                continue;
            };
            let exited = match deadline {
                Some(d) => core
                    .exited
                    .recv_timeout(d.saturating_duration_since(Instant::now())),
                None => core
                    .exited
                    .recv()
                    .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
            };
            match exited {
                Err(std_mpsc::RecvTimeoutError::Disconnected) | Ok(()) => {
                    if let Err(p) = thread.join() {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "non-string panic".into());
                        // A payload whose drop panics must not abort the other cores' stop.
                        crate::task::drop_quietly(p);
                        problems.push(format!("core {} panicked: {msg}", core.info.index));
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => problems.push(format!(
                    "core {} did not stop within {:?}; its thread is left running",
                    core.info.index, self.shutdown_timeout
                )),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PoolError { problems })
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!("coring: pool shutdown: {e}");
        }
    }
}

/// What went wrong while shutting a [`Pool`] down.
#[derive(Debug, Clone)]
pub struct PoolError {
    problems: Vec<String>,
}

impl PoolError {
    /// One line per problem, naming the core.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

impl std::error::Error for PoolError {}
