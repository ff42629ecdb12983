//! Benchmark threads: started pinned to a CPU, their result coming back on a channel.

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::progress::{wait_with_progress, Progress};

/// Starts `f` on a new thread named `name`, pinned to `core` (a warning on stderr if that
/// fails); its result comes through the returned receiver.
///
/// # Errors
///
/// When the thread cannot be started.
pub fn spawn_pinned<T: Send + 'static>(
    name: &str,
    core: Option<core_affinity::CoreId>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<(JoinHandle<()>, Receiver<T>), String> {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            crate::sys::pin_or_warn(core);
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
    Ok((handle, rx))
}

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
    let (handle, rx) = spawn_pinned(name, core, f)?;
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
