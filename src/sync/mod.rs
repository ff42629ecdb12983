//! Channels between tasks, on one core or across cores.
//!
//! - [`mpsc`] and [`oneshot`] are `Send`: use them between cores (or with threads outside
//!   any runtime). A receiver blocked on core A is woken by a send from core B through A's
//!   runtime wakeup (an eventfd the ring watches, or the poller's waker): no polling.
//! - [`local`] has the same two channels for tasks of one core: no atomics, no locks, and
//!   `!Send` handles.
//!
//! Every channel reports a closed peer clearly: `recv` yields `None` (or
//! [`oneshot::RecvError`]) once all senders are gone, and `send` gives the value back in a
//! [`SendError`] once the receiver is gone.
//!
//! A `send` on a full bounded channel waits in line: each received value wakes one waiting
//! sender, the longest-waiting first. A waiting send holds one waker in the channel however
//! often it is polled, and dropping it (a lost `select!` branch, an elapsed `timeout`)
//! takes it out of line and passes on a wake it had not used.

mod chan;
pub mod local;
pub mod mpsc;
pub mod oneshot;
mod waiters;

use std::fmt;

pub use crate::pool::WaitError;

/// Panics with advice when a blocking wait (`what`) is called on a thread that runs a
/// coring runtime: a pool's core thread, or inside [`Runtime::block_on`](crate::Runtime::block_on).
/// Blocking there stalls every task of that runtime, and deadlocks when the value must
/// come from one of them.
#[track_caller]
pub(crate) fn forbid_blocking_on_runtime(what: &str) {
    let core = crate::pool::current_core();
    if core.is_some() || crate::runtime::context::try_with(|_| ()).is_some() {
        let place = match core {
            Some(c) => format!("core {c} of a coring Pool"),
            None => "a thread running a coring runtime (inside Runtime::block_on)".to_string(),
        };
        panic!(
            "{what} called on {place}: blocking this thread would stall every task of its \
             runtime, and never return if the value must come from one of them. In async \
             code, .await it instead (a SpawnHandle or oneshot::Receiver is a future, \
             mpsc::Receiver has recv().await); block only on plain threads"
        );
    }
}

/// The receiver is gone; the value that could not be sent is inside.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel closed: the receiver was dropped")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why [`try_send`](mpsc::Sender::try_send) did not send; the value is inside.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// The channel is at capacity.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Closed(v) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("channel full"),
            TrySendError::Closed(_) => f.write_str("channel closed: the receiver was dropped"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why [`try_recv`](mpsc::Receiver::try_recv) returned nothing.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TryRecvError {
    /// Nothing queued right now.
    Empty,
    /// Nothing queued and every sender is gone.
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("channel empty"),
            TryRecvError::Closed => f.write_str("channel closed: every sender was dropped"),
        }
    }
}

impl std::error::Error for TryRecvError {}
