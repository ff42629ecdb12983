//! Running a benchmark on its own pinned thread while this one keeps the progress line.

use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::progress::{wait_with_progress, Progress};

/// Runs `f` on a new thread pinned to the first CPU and waits for it, updating `progress`
/// from `counter`; gives up after `budget`.
///
/// # Errors
///
/// `f`'s error, a panic in `f`, or the budget running out (the thread is then left
/// behind).
pub fn on_pinned_thread<T: Send + 'static>(
    name: &str,
    progress: &mut Progress,
    end: Option<Instant>,
    counter: &Arc<AtomicU64>,
    budget: Duration,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let core = crate::sys::cpus().first().copied();
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            crate::sys::pin(core);
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
    let out = wait_with_progress(
        &rx,
        progress,
        end,
        counter,
        Instant::now() + budget,
        &format!("the {name} thread"),
    )
    .and_then(|r| r);
    if out.is_ok() {
        let _ = handle.join();
    }
    out
}
