use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::raw::JoinRef;

/// Why a task produced no output.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    /// The payload sits behind a mutex only to make `JoinError` `Sync` (a payload is
    /// `Send` but not always `Sync`): it is locked once, by `into_panic`. The message is
    /// read out when the error is made.
    Panic {
        payload: std::sync::Mutex<Box<dyn Any + Send + 'static>>,
        message: Option<String>,
    },
}

impl JoinError {
    pub(crate) fn cancelled() -> JoinError {
        JoinError {
            repr: Repr::Cancelled,
        }
    }

    pub(crate) fn panic(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        let message = payload
            .downcast_ref::<&'static str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        JoinError {
            repr: Repr::Panic {
                payload: std::sync::Mutex::new(payload),
                message,
            },
        }
    }

    /// The task was aborted, or dropped when its runtime shut down.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic { .. })
    }

    /// The panic payload, to resume the panic with [`std::panic::resume_unwind`].
    ///
    /// # Panics
    ///
    /// If the task was cancelled rather than panicking; check [`is_panic`](Self::is_panic).
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self.repr {
            Repr::Panic { payload, .. } => payload
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            Repr::Cancelled => panic!("JoinError::into_panic called on a cancelled task's error"),
        }
    }

    /// The panic's message, when its payload was a string (as `panic!` makes it).
    pub fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panic { message, .. } => message.as_deref(),
            Repr::Cancelled => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.repr, self.panic_message()) {
            (Repr::Cancelled, _) => f.write_str("task was cancelled"),
            (Repr::Panic { .. }, Some(msg)) => write!(f, "task panicked: {msg}"),
            (Repr::Panic { .. }, None) => f.write_str("task panicked"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("JoinError::Cancelled"),
            Repr::Panic { .. } => write!(f, "JoinError::Panic({:?})", self.panic_message()),
        }
    }
}

impl std::error::Error for JoinError {}

/// A task's failure as an IO error, for `?` in functions returning `io::Result`: kind
/// `Interrupted` for a cancelled task, `Other` for a panic; the message says which (with
/// the panic's message), and [`get_ref`](std::io::Error::get_ref) gives the `JoinError`.
impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> std::io::Error {
        let kind = if e.is_cancelled() {
            std::io::ErrorKind::Interrupted
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(kind, e)
    }
}

/// An owned permission to await a spawned task's output.
///
/// Awaiting it yields `Ok(output)`, or a [`JoinError`] if the task panicked or was
/// aborted. Dropping it detaches the task, which keeps running. It is `!Send`: the task
/// lives on this thread.
#[must_use = "dropping a JoinHandle detaches the task; await it or call abort()"]
pub struct JoinHandle<T> {
    task: JoinRef<T>,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: JoinRef<T>) -> JoinHandle<T> {
        JoinHandle { task }
    }

    /// Cancels the task: its future is dropped the next time the runtime gets control,
    /// and awaiting this handle yields a cancelled [`JoinError`] unless the task had
    /// already finished.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the task has finished (completed, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.task.poll_join(cx)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        self.task.detach();
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_error_is_send_sync_and_an_io_error() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<JoinError>();
        // What anyhow and `io::Error::other` need.
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(JoinError::cancelled());
        assert_eq!(boxed.to_string(), "task was cancelled");

        let e: std::io::Error = JoinError::cancelled().into();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
        let e: std::io::Error = JoinError::panic(Box::new("boom")).into();
        assert_eq!(e.kind(), std::io::ErrorKind::Other);
        assert_eq!(e.to_string(), "task panicked: boom");
        let inner = e.get_ref().unwrap().downcast_ref::<JoinError>().unwrap();
        assert!(inner.is_panic());
    }

    #[test]
    fn panic_payload_and_message_survive() {
        let e = JoinError::panic(Box::new(String::from("owned message")));
        assert_eq!(e.panic_message(), Some("owned message"));
        assert_eq!(
            format!("{e:?}"),
            "JoinError::Panic(Some(\"owned message\"))"
        );
        let payload = e.into_panic();
        assert_eq!(payload.downcast_ref::<String>().unwrap(), "owned message");
        let e = JoinError::panic(Box::new(17u32));
        assert_eq!(e.panic_message(), None);
        assert_eq!(e.to_string(), "task panicked");
        assert_eq!(*e.into_panic().downcast::<u32>().unwrap(), 17);
    }
}
