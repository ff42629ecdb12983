//! What the code `#[coring::main]` and `#[coring::test]` generate calls. Not API: hidden
//! from the docs and free to change with the macros (which come from the same release).
//!
//! The attributes refuse what they cannot run, at compile time (each block below must
//! fail to compile): a backend name that does not exist, an unknown option, a function
//! that is not `async`, a function with parameters.
//!
//! ```compile_fail
//! #[coring::test(backend = "uring")]
//! async fn t() {}
//! ```
//!
//! ```compile_fail
//! #[coring::main(workers = 4)]
//! async fn main() {}
//! ```
//!
//! ```compile_fail
//! #[coring::main]
//! fn main() {}
//! ```
//!
//! ```compile_fail
//! #[coring::test]
//! async fn t(x: u32) {}
//! ```
//!
//! And accept what they can (this block must compile):
//!
//! ```
//! #[coring::main(backend = "auto", entries = 64)]
//! async fn main() {}
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use crate::{BackendKind, Builder};

/// What a `#[coring::test]` function may return: `()`, or a `Result` whose error fails
/// the test.
pub trait TestResult {
    /// `Err` with the failure's description.
    fn into_failure(self) -> Result<(), String>;
}

impl TestResult for () {
    fn into_failure(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Debug> TestResult for Result<(), E> {
    fn into_failure(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// The backends a test runs on when its attribute names none: `CORING_BACKEND` when it
/// names one, else every backend of the platform.
pub fn test_backends() -> Vec<BackendKind> {
    if let Ok(v) = std::env::var("CORING_BACKEND") {
        match BackendKind::parse(&v) {
            Ok(BackendKind::Auto) => {}
            Ok(kind) => return vec![kind],
            Err(e) => panic!("coring::test: {e}"),
        }
    }
    if cfg!(target_os = "linux") {
        vec![BackendKind::IoUring, BackendKind::Fallback]
    } else if cfg!(windows) {
        vec![BackendKind::Iocp]
    } else {
        vec![BackendKind::Fallback]
    }
}

/// Runs test `name`'s `body` once per backend (`only`, or [`test_backends`]), each on a
/// new runtime built from `builder`; with a `timeout`, a run that takes longer aborts the
/// process with a message naming the test and the backend.
///
/// # Panics
///
/// When the body panics or returns an error (naming the backend), when the backend the
/// attribute names cannot start here, or when no backend can.
#[track_caller]
pub fn run_test<F, Fut>(
    name: &str,
    builder: Builder,
    only: Option<BackendKind>,
    timeout: Option<Duration>,
    body: F,
) where
    F: Fn() -> Fut,
    Fut: Future,
    Fut::Output: TestResult,
{
    let kinds = only.map_or_else(test_backends, |k| vec![k]);
    let mut ran = 0;
    let mut skipped = Vec::new();
    for kind in kinds {
        let rt = match builder.clone().backend(kind).build() {
            Ok(rt) => rt,
            // io_uring may be blocked (seccomp, sysctl) where the test runs: the test runs
            // on the other backends, unless its attribute asked for io_uring.
            Err(e) if only.is_none() && kind == BackendKind::IoUring => {
                skipped.push(format!("{kind:?}: {e}"));
                continue;
            }
            Err(e) => panic!("coring::test `{name}`: could not start the {kind:?} runtime: {e}"),
        };
        let _watchdog = timeout.map(|t| Watchdog::start(name, kind, t));
        let failed = FailureNote { name, kind };
        if let Err(msg) = rt.block_on(body()).into_failure() {
            panic!("coring::test `{name}` failed on the {kind:?} backend: {msg}");
        }
        drop(failed);
        ran += 1;
    }
    assert!(
        ran > 0,
        "coring::test `{name}`: no backend could start here ({})",
        skipped.join("; ")
    );
}

/// Says which backend a test was running on when it panicked.
struct FailureNote<'a> {
    name: &'a str,
    kind: BackendKind,
}

impl Drop for FailureNote<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "coring::test `{}` panicked on the {:?} backend",
                self.name, self.kind
            );
        }
    }
}

/// Aborts the process if not dropped within its time: a hung test must fail, not stall
/// the suite (a thread cannot be interrupted, so the whole test binary stops).
struct Watchdog {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(name: &str, kind: BackendKind, timeout: Duration) -> Watchdog {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(timeout) {
                eprintln!(
                    "coring::test `{name}` did not finish within {timeout:?} on the {kind:?} \
                     backend; aborting the test process"
                );
                std::process::abort();
            }
        });
        Watchdog {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The backend of the runtime the caller runs on (for tests of the attributes).
///
/// # Panics
///
/// Outside a coring runtime.
pub fn current_backend() -> BackendKind {
    crate::runtime::context::try_with(|inner| inner.driver.borrow().backend().kind())
        .expect("coring: current_backend called outside a coring runtime")
}

/// What `#[coring::main(pool = N)]` runs: a pool of `cores` cores whose runtimes are
/// built from `builder`, with `body` (given the pool's handle) on core 0; returns its
/// output once it finished, after shutting the pool down.
///
/// # Panics
///
/// If the pool cannot start (with the reason), or with `body`'s own panic, resumed here.
pub fn run_on_pool<F, Fut>(cores: usize, builder: Builder, body: F) -> Fut::Output
where
    F: FnOnce(crate::PoolHandle) -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let pool = crate::Pool::builder()
        .cores(cores)
        .runtime(builder)
        .build()
        .unwrap_or_else(|e| panic!("coring::main: could not start a pool of {cores} cores: {e}"));
    let handle = pool.handle();
    let for_body = handle.clone();
    let mut main = handle.spawn_on(0, move || body(for_body));
    // No timeout: `main` runs as long as the program does. (A year per wait, looped: an
    // `Instant` a century ahead could overflow.)
    let out = loop {
        match main.wait(Duration::from_secs(365 * 24 * 3600)) {
            Ok(v) => break v,
            Err(crate::sync::WaitError::Timeout) => continue,
            Err(crate::sync::WaitError::Panicked(p)) => std::panic::resume_unwind(p),
            Err(e) => panic!("coring::main: the main task on core 0 ended without a result: {e}"),
        }
    };
    if let Err(e) = pool.shutdown() {
        log::warn!("coring::main: pool shutdown: {e}");
    }
    out
}
