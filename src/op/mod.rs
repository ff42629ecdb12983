//! The op layer: one struct per operation. Each owns its resources (fd handle, buffer,
//! path, address), describes itself once as an [`OpDesc`](crate::driver::OpDesc) and turns
//! the completion into its output. Nothing here knows which backend runs it.

pub(crate) mod fd;
pub(crate) mod fs;
pub(crate) mod net;
pub(crate) mod rw;
// Unix: Windows copies files to sockets through user space.
#[cfg(unix)]
pub(crate) mod sendfile;

use std::future::Future;
use std::io;

use crate::buf::{BufResult, IoBuf, IoBufMut, Slice};

pub(crate) use fd::SharedFd;

/// The largest length one read or write asks for (the kernel's own cap, MAX_RW_COUNT);
/// longer buffers are served by short transfers, which every caller must handle anyway.
pub(crate) const MAX_RW: usize = 0x7fff_f000;

/// Clamps a buffer length to what one operation transfers.
#[inline]
pub(crate) fn rw_len(len: usize) -> u32 {
    len.min(MAX_RW) as u32
}

/// Checks a byte count reported by the kernel against the buffer it filled.
#[inline]
pub(crate) fn checked_len(n: u32, cap: usize) -> io::Result<usize> {
    let n = n as usize;
    if n > cap {
        return Err(len_beyond_buffer(n, cap));
    }
    Ok(n)
}

#[cold]
fn len_beyond_buffer(n: usize, cap: usize) -> io::Error {
    io::Error::other(format!(
        "kernel reported {n} bytes transferred into a buffer of {cap}"
    ))
}

/// Fills the whole buffer by repeated reads: `read(slice, done)` reads into the unfilled
/// part, where `done` is the number of bytes already read. Stops with `UnexpectedEof` if a
/// read returns 0 first; retries `Interrupted`.
pub(crate) async fn read_exact<B, F, Fut>(buf: B, mut read: F) -> BufResult<(), B>
where
    B: IoBufMut,
    F: FnMut(Slice<B>, usize) -> Fut,
    Fut: Future<Output = BufResult<usize, Slice<B>>>,
{
    let total = buf.bytes_total();
    let mut done = 0;
    let mut buf = buf;
    while done < total {
        let (res, slice) = read(buf.slice(done..), done).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                return (
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("end of file after {done} of {total} bytes"),
                    )),
                    buf,
                )
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// Writes the buffer's initialised bytes by repeated writes: `write(slice, done)` writes
/// the unwritten part. Stops with `WriteZero` if a write accepts nothing; retries
/// `Interrupted`.
pub(crate) async fn write_all<B, F, Fut>(buf: B, mut write: F) -> BufResult<(), B>
where
    B: IoBuf,
    F: FnMut(Slice<B>, usize) -> Fut,
    Fut: Future<Output = BufResult<usize, Slice<B>>>,
{
    let total = buf.bytes_init();
    let mut done = 0;
    let mut buf = buf;
    while done < total {
        let (res, slice) = write(buf.slice(done..total), done).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                return (
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("write accepted 0 bytes after {done} of {total}"),
                    )),
                    buf,
                )
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}
