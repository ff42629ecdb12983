//! A listener's connections as a [`Stream`](futures_core::Stream).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The connections a listener accepts, as a never-ending
/// [`Stream`](futures_core::Stream) of `io::Result<(stream, peer address)>`: from
/// [`TcpListener::incoming`](super::TcpListener::incoming) or `UnixListener::incoming`.
///
/// An accept error is an item, not the end: the stream goes on accepting. Dropping it
/// between items loses nothing; dropping it while an accept is in flight is as
/// cancel-safe as dropping `accept()` (a connection the kernel accepted for it is
/// returned by the listener's next accept). Each accept allocates its future once.
pub struct Incoming<'a, T> {
    accept: Box<dyn FnMut() -> Accept<'a, T> + 'a>,
    pending: Option<Accept<'a, T>>,
}

type Accept<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + 'a>>;

impl<'a, T> Incoming<'a, T> {
    pub(crate) fn new<F, Fut>(mut accept: F) -> Incoming<'a, T>
    where
        F: FnMut() -> Fut + 'a,
        Fut: Future<Output = io::Result<T>> + 'a,
    {
        Incoming {
            accept: Box::new(move || Box::pin(accept()) as Accept<'a, T>),
            pending: None,
        }
    }
}

impl<T> futures_core::Stream for Incoming<'_, T> {
    type Item = io::Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<T>>> {
        let this = self.get_mut();
        let accept = this.pending.get_or_insert_with(|| (this.accept)());
        let out = std::task::ready!(accept.as_mut().poll(cx));
        this.pending = None;
        Poll::Ready(Some(out))
    }
}

impl<T> std::fmt::Debug for Incoming<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("accepting", &self.pending.is_some())
            .finish()
    }
}
