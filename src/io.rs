//! Helpers for owned-buffer IO: copying between streams, a buffered reader with
//! line-oriented reads, and the traits they are written against.
//!
//! coring's reads and writes take their buffer by value and give it back
//! ([`BufResult`]); these helpers do the bookkeeping a tokio user gets from `AsyncReadExt`,
//! `copy` and `BufReader`:
//!
//! ```no_run
//! use coring::io::{copy_bidirectional, BufReader};
//! use coring::net::{TcpListener, TcpStream};
//!
//! # async fn f() -> std::io::Result<()> {
//! // A proxy: every byte each way, with half-closes passed on.
//! let listener = TcpListener::bind("127.0.0.1:8080")?;
//! let (client, _) = listener.accept().await?;
//! let upstream = TcpStream::connect("127.0.0.1:9090").await?;
//! let (up, down) = copy_bidirectional(&client, &upstream).await?;
//! println!("{up} bytes up, {down} down");
//!
//! // A line protocol.
//! let (conn, _) = listener.accept().await?;
//! let mut reader = BufReader::new(&conn);
//! let mut line = String::new();
//! while reader.read_line(&mut line).await? > 0 {
//!     print!("{line}");
//!     line.clear();
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;

use crate::buf::{BufResult, IoBuf, IoBufMut};

/// Something that reads into owned buffers: the streams and their read halves (and
/// references to them). [`copy`], [`copy_bidirectional`] and [`BufReader`] are written
/// against it.
pub trait OwnedRead {
    /// Reads into the start of `buf`, which comes back holding exactly the bytes read;
    /// `Ok(0)` at end of stream.
    fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>>;
}

/// Something that writes owned buffers: the streams and their write halves (and
/// references to them).
pub trait OwnedWrite {
    /// Writes all of `buf`'s bytes.
    fn write_all<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<(), B>>;

    /// Ends the write side after the writes before it (the peer reads end-of-file).
    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>>;
}

impl<T: OwnedRead + ?Sized> OwnedRead for &T {
    fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        (**self).read(buf)
    }
}

impl<T: OwnedWrite + ?Sized> OwnedWrite for &T {
    fn write_all<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<(), B>> {
        (**self).write_all(buf)
    }
    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>> {
        (**self).shutdown_write()
    }
}

/// `OwnedRead` and `OwnedWrite` for a stream type (or half) with the inherent methods.
macro_rules! owned_io {
    (read: $($ty:ty),*) => {$(
        impl OwnedRead for $ty {
            fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
                <$ty>::read(self, buf)
            }
        }
    )*};
    (write: $($ty:ty),*) => {$(
        impl OwnedWrite for $ty {
            fn write_all<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<(), B>> {
                <$ty>::write_all(self, buf)
            }
            fn shutdown_write(&self) -> impl Future<Output = io::Result<()>> {
                <$ty>::shutdown(self, std::net::Shutdown::Write)
            }
        }
    )*};
}

owned_io!(read: crate::net::TcpStream);
owned_io!(write: crate::net::TcpStream);
#[cfg(unix)]
owned_io!(read: crate::net::UnixStream);
#[cfg(unix)]
owned_io!(write: crate::net::UnixStream);

impl OwnedRead for crate::net::ReadHalf<'_> {
    fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        crate::net::ReadHalf::read(self, buf)
    }
}

impl<S> OwnedRead for crate::net::OwnedReadHalf<S> {
    fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        crate::net::OwnedReadHalf::read(self, buf)
    }
}

impl OwnedWrite for crate::net::WriteHalf<'_> {
    fn write_all<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<(), B>> {
        crate::net::WriteHalf::write_all(self, buf)
    }
    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>> {
        crate::net::WriteHalf::shutdown(self)
    }
}

impl<S> OwnedWrite for crate::net::OwnedWriteHalf<S> {
    fn write_all<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<(), B>> {
        crate::net::OwnedWriteHalf::write_all(self, buf)
    }
    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>> {
        crate::net::OwnedWriteHalf::shutdown(self)
    }
}

/// The buffer [`copy`] and [`copy_bidirectional`] move bytes through, per direction.
const COPY_BUF: usize = 64 * 1024;

/// Copies everything `reader` yields into `writer` until end of stream; returns the bytes
/// copied. Does not shut `writer` down (see [`copy_bidirectional`] for that). One 64 KiB
/// buffer, reused: each chunk is read into it and written out of it.
///
/// # Errors
///
/// The first read or write error; the bytes copied before it are not reported.
pub async fn copy<R: OwnedRead, W: OwnedWrite>(reader: &R, writer: &W) -> io::Result<u64> {
    let mut buf = Vec::with_capacity(COPY_BUF);
    let mut total = 0u64;
    loop {
        let (res, b) = reader.read(buf).await;
        let n = res?;
        if n == 0 {
            return Ok(total);
        }
        let (res, b) = writer.write_all(b).await;
        res?;
        total += n as u64;
        buf = b;
    }
}

/// Copies `a`'s bytes to `b` and `b`'s to `a` at the same time, until both directions
/// reach end of stream; when one side ends, the other side's write half is shut down
/// (a half-close passes through, as a proxy must). Returns the bytes copied a → b and
/// b → a.
///
/// # Errors
///
/// The first error of either direction (the other direction stops with it).
pub async fn copy_bidirectional<A, B>(a: &A, b: &B) -> io::Result<(u64, u64)>
where
    A: OwnedRead + OwnedWrite,
    B: OwnedRead + OwnedWrite,
{
    try_join(copy_then_shutdown(a, b), copy_then_shutdown(b, a)).await
}

/// One direction of [`copy_bidirectional`]: the copy, then the half-close.
async fn copy_then_shutdown<R: OwnedRead, W: OwnedWrite>(from: &R, to: &W) -> io::Result<u64> {
    let n = copy(from, to).await?;
    to.shutdown_write().await?;
    Ok(n)
}

/// Runs two fallible futures at once; the first error ends both.
async fn try_join<T, U>(
    x: impl Future<Output = io::Result<T>>,
    y: impl Future<Output = io::Result<U>>,
) -> io::Result<(T, U)> {
    let mut x = std::pin::pin!(x);
    let mut y = std::pin::pin!(y);
    let (mut xv, mut yv) = (None, None);
    std::future::poll_fn(|cx| {
        if xv.is_none() {
            if let std::task::Poll::Ready(r) = x.as_mut().poll(cx) {
                xv = Some(r?);
            }
        }
        if yv.is_none() {
            if let std::task::Poll::Ready(r) = y.as_mut().poll(cx) {
                yv = Some(r?);
            }
        }
        if xv.is_some() && yv.is_some() {
            return std::task::Poll::Ready(Ok((xv.take().unwrap(), yv.take().unwrap())));
        }
        std::task::Poll::Pending
    })
    .await
}

/// Reads from `R` through a buffer, for line-oriented and byte-delimited protocols.
///
/// Cancel-safe in what it keeps: a read dropped mid-flight loses no received bytes (the
/// stream keeps them for the next read); [`read_until`](BufReader::read_until) and
/// [`read_line`](BufReader::read_line) append as they go, so what a dropped call had
/// appended is in the caller's output.
pub struct BufReader<R> {
    inner: R,
    /// The bytes read but not consumed are `buf[pos..]`. Empty with no capacity while a
    /// fill is in flight (the read owns it), or after a fill was dropped.
    buf: Vec<u8>,
    pos: usize,
    capacity: usize,
}

impl<R: OwnedRead> BufReader<R> {
    /// A reader with an 8 KiB buffer.
    pub fn new(inner: R) -> BufReader<R> {
        BufReader::with_capacity(8 * 1024, inner)
    }

    /// A reader with a buffer of `capacity` bytes.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub fn with_capacity(capacity: usize, inner: R) -> BufReader<R> {
        assert!(
            capacity > 0,
            "coring::io::BufReader: capacity must be above 0"
        );
        BufReader {
            inner,
            buf: Vec::with_capacity(capacity),
            pos: 0,
            capacity,
        }
    }

    /// The bytes read from `R` but not consumed yet.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The reader and the bytes read from it but not consumed.
    pub fn into_parts(mut self) -> (R, Vec<u8>) {
        self.buf.drain(..self.pos);
        (self.inner, self.buf)
    }

    /// Makes bytes available in the buffer if none are; returns how many are (0 at end of
    /// stream).
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos < self.buf.len() {
            return Ok(self.buf.len() - self.pos);
        }
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() == 0 {
            buf = Vec::with_capacity(self.capacity);
        }
        let (res, buf) = self.inner.read(buf).await;
        self.buf = buf;
        self.pos = 0;
        match res {
            Ok(n) => Ok(n),
            Err(e) => {
                self.buf.clear();
                Err(e)
            }
        }
    }

    /// Appends bytes to `out` up to and including the first `byte` (or to the end of the
    /// stream); returns how many were appended (0 at end of stream).
    ///
    /// # Errors
    ///
    /// A read error; the bytes appended before it stay in `out`.
    pub async fn read_until(&mut self, byte: u8, out: &mut Vec<u8>) -> io::Result<usize> {
        let mut appended = 0;
        loop {
            if self.fill().await? == 0 {
                return Ok(appended);
            }
            let avail = &self.buf[self.pos..];
            let (take, done) = match avail.iter().position(|&b| b == byte) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            out.extend_from_slice(&avail[..take]);
            self.pos += take;
            appended += take;
            if done {
                return Ok(appended);
            }
        }
    }

    /// Appends the next line (up to and including `\n`, or to the end of the stream) to
    /// `out`; returns its length in bytes (0 at end of stream).
    ///
    /// # Errors
    ///
    /// A read error, or `InvalidData` if the line is not UTF-8 (then `out` is unchanged
    /// and the line is consumed).
    pub async fn read_line(&mut self, out: &mut String) -> io::Result<usize> {
        let mut line = Vec::new();
        let n = self.read_until(b'\n', &mut line).await?;
        match String::from_utf8(line) {
            Ok(s) => {
                out.push_str(&s);
                Ok(n)
            }
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("coring::io::BufReader::read_line: the line is not UTF-8: {e}"),
            )),
        }
    }

    /// Appends everything left in the stream to `out`; returns how many bytes.
    ///
    /// # Errors
    ///
    /// A read error; the bytes appended before it stay in `out`.
    pub async fn read_to_end(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        let mut appended = 0;
        loop {
            let n = self.fill().await?;
            if n == 0 {
                return Ok(appended);
            }
            out.extend_from_slice(&self.buf[self.pos..]);
            self.pos = self.buf.len();
            appended += n;
        }
    }

    /// Reads into `buf` (owned, as every coring read): buffered bytes first, else from
    /// the stream (directly when `buf` is at least as large as this reader's buffer).
    pub async fn read<B: IoBufMut>(&mut self, mut buf: B) -> BufResult<usize, B> {
        if self.pos == self.buf.len() && buf.bytes_total() >= self.capacity {
            return self.inner.read(buf).await;
        }
        if let Err(e) = crate::buf::check_room(buf.bytes_total(), "BufReader::read") {
            return (Err(e), buf);
        }
        match self.fill().await {
            Ok(0) => {
                crate::buf::set_empty(&mut buf);
                (Ok(0), buf)
            }
            Ok(_) => {
                let n = crate::buf::copy_out(&self.buf[self.pos..], &mut buf, 0);
                self.pos += n;
                (Ok(n), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }
}

impl<R> std::fmt::Debug for BufReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufReader")
            .field("buffered", &(self.buf.len() - self.pos))
            .field("capacity", &self.capacity)
            .finish()
    }
}
