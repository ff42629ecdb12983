//! Tasks: spawning `!Send` futures on the current thread, joining and aborting them.

pub(crate) mod budget;
mod cells;
mod join;
mod raw;

pub use join::{JoinError, JoinHandle};
pub(crate) use raw::{drop_quietly, Executor, Shared};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::runtime::context;

/// Spawns a future onto the current thread's runtime and returns a handle to await its
/// output.
///
/// The future need not be `Send`: it runs on this thread only. It starts running the next
/// time the runtime's loop gets control (when the caller awaits or yields). Dropping the
/// [`JoinHandle`] detaches the task; it keeps running.
///
/// # Panics
///
/// When called outside a coring runtime, with a message saying so. Call it from inside
/// [`Runtime::block_on`](crate::Runtime::block_on) or from a task.
///
/// # Example
///
/// ```
/// coring::start(async {
///     let handle = coring::spawn(async { 40 + 2 });
///     assert_eq!(handle.await.unwrap(), 42);
/// });
/// ```
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    context::with(
        "coring::spawn called outside a coring runtime; call it from inside \
         Runtime::block_on or from a task",
        |inner| inner.executor.spawn(&inner.shared, future),
    )
}

/// Yields to the runtime once: other ready tasks and IO completions get a turn before the
/// caller continues.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// Future returned by [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
