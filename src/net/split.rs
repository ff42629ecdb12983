//! A stream split into a read half and a write half, borrowed or owned.
//!
//! Every IO method of a stream takes `&self`, so a read and a write can be in flight at
//! once without splitting: two tasks can share one stream through an `Rc`. The halves say
//! which side each task owns (a tokio user looks for `split`), and the owned halves can
//! be moved into two tasks and put back together with
//! [`OwnedReadHalf::reunite`]. Splitting costs nothing but the `Rc` of the owned form.

use std::rc::Rc;

use super::stream::Stream;
use crate::buf::{BufResult, IoBuf, IoBufMut};

/// The read side of a borrowed stream, from `split()` on
/// [`TcpStream`](super::TcpStream) or `UnixStream`.
pub struct ReadHalf<'a> {
    stream: &'a Stream,
}

/// The write side of a borrowed stream, from `split()`.
pub struct WriteHalf<'a> {
    stream: &'a Stream,
}

/// The read side of a stream split by `into_split()`; `!Send`, like the stream.
pub struct OwnedReadHalf<S> {
    stream: Rc<S>,
    inner: fn(&S) -> &Stream,
}

/// The write side of a stream split by `into_split()`. Dropping it does not shut the
/// connection down (that needs an operation, which a drop cannot await): call
/// [`shutdown`](OwnedWriteHalf::shutdown) for a graceful end, or let both halves go.
pub struct OwnedWriteHalf<S> {
    stream: Rc<S>,
    inner: fn(&S) -> &Stream,
}

pub(crate) fn split(stream: &Stream) -> (ReadHalf<'_>, WriteHalf<'_>) {
    (ReadHalf { stream }, WriteHalf { stream })
}

pub(crate) fn into_split<S>(
    stream: S,
    inner: fn(&S) -> &Stream,
) -> (OwnedReadHalf<S>, OwnedWriteHalf<S>) {
    let stream = Rc::new(stream);
    (
        OwnedReadHalf {
            stream: stream.clone(),
            inner,
        },
        OwnedWriteHalf { stream, inner },
    )
}

/// The halves given to [`OwnedReadHalf::reunite`] came from different streams; both are
/// handed back.
pub struct ReuniteError<S>(pub OwnedReadHalf<S>, pub OwnedWriteHalf<S>);

impl<S> std::fmt::Debug for ReuniteError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReuniteError(..)")
    }
}

impl<S> std::fmt::Display for ReuniteError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tried to reunite halves of two different streams")
    }
}

impl<S> std::error::Error for ReuniteError<S> {}

/// The read methods, on a half that reaches its stream through `$get`.
macro_rules! read_methods {
    () => {
        /// As the stream's `read`: receives into the start of the buffer, which comes back
        /// holding exactly the bytes received; `Ok(0)` when the peer closed its side.
        pub fn read<B: IoBufMut>(
            &self,
            buf: B,
        ) -> impl std::future::Future<Output = BufResult<usize, B>> + '_ {
            self.stream().read(buf)
        }

        /// As the stream's `read_exact`: receives until the buffer's capacity is full.
        pub fn read_exact<B: IoBufMut>(
            &self,
            buf: B,
        ) -> impl std::future::Future<Output = BufResult<(), B>> + '_ {
            self.stream().read_exact(buf)
        }
    };
}

/// The write methods, on a half that reaches its stream through `stream()`.
macro_rules! write_methods {
    () => {
        /// As the stream's `write`: sends the buffer's bytes, possibly fewer.
        pub fn write<B: IoBuf>(
            &self,
            buf: B,
        ) -> impl std::future::Future<Output = BufResult<usize, B>> + '_ {
            self.stream().write(buf)
        }

        /// As the stream's `write_all`: sends all of the buffer's bytes.
        pub fn write_all<B: IoBuf>(
            &self,
            buf: B,
        ) -> impl std::future::Future<Output = BufResult<(), B>> + '_ {
            self.stream().write_all(buf)
        }

        /// Shuts the write side down after the sends issued before it (the peer reads
        /// end-of-file); the read half keeps reading.
        pub async fn shutdown(&self) -> std::io::Result<()> {
            self.stream().shutdown(std::net::Shutdown::Write).await
        }
    };
}

impl ReadHalf<'_> {
    fn stream(&self) -> &Stream {
        self.stream
    }
    read_methods!();
}

impl WriteHalf<'_> {
    fn stream(&self) -> &Stream {
        self.stream
    }
    write_methods!();
}

impl<S> OwnedReadHalf<S> {
    fn stream(&self) -> &Stream {
        (self.inner)(&self.stream)
    }
    read_methods!();

    /// Puts the stream back together from its two halves.
    ///
    /// # Errors
    ///
    /// [`ReuniteError`] (with both halves) if they came from different streams.
    pub fn reunite(self, write: OwnedWriteHalf<S>) -> Result<S, ReuniteError<S>> {
        if !Rc::ptr_eq(&self.stream, &write.stream) {
            return Err(ReuniteError(self, write));
        }
        drop(write);
        match Rc::try_unwrap(self.stream) {
            Ok(stream) => Ok(stream),
            Err(_) => unreachable!("a stream's Rc is held by its two halves only"),
        }
    }
}

impl<S> OwnedWriteHalf<S> {
    fn stream(&self) -> &Stream {
        (self.inner)(&self.stream)
    }
    write_methods!();
}

/// The stream, for what the halves do not offer (its addresses, options).
impl<S> AsRef<S> for OwnedReadHalf<S> {
    fn as_ref(&self) -> &S {
        &self.stream
    }
}

/// The stream, for what the halves do not offer (its addresses, options).
impl<S> AsRef<S> for OwnedWriteHalf<S> {
    fn as_ref(&self) -> &S {
        &self.stream
    }
}
