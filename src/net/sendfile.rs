//! Sending a file's bytes on a stream socket without copying them through user space
//! (`send_file` on [`TcpStream`](super::TcpStream) and [`UnixStream`](super::UnixStream)).
//!
//! Three routes, one loop each, chosen by what the runtime's backend does:
//!
//! - **`sendfile(2)`** (Linux's, FreeBSD's or Darwin's): the readiness backend (epoll,
//!   kqueue) runs it when the socket is writable, as any send; io_uring (by default) runs
//!   it during submission when the chunk's pages are cached, else on the blocking pool
//!   (`Uring::push`). On io_uring a socket without room completes it with EAGAIN: the loop
//!   then waits for writability (IORING_OP_POLL_ADD) and sends again.
//! - **splice** (io_uring with `Builder::splice_files`, `Backend::splices`): the file's
//!   pages go into a pipe and from the pipe to the socket, two IORING_OP_SPLICEs linked in
//!   one submission (the kernel starts the second only when the first moved all it was
//!   asked). The pipe is borrowed from the runtime's pool (`driver::pipes`) and given back
//!   only empty. io_uring runs splices on its worker threads, where a socket without room
//!   fails the splice with EAGAIN instead of waiting: the loop then waits for writability
//!   (IORING_OP_POLL_ADD) and splices what the pipe holds again. Each splice asks for at
//!   most what the pipe can hold, minus the part of the first page before the offset, so a
//!   full pipe never cuts a chain short except at the end of the file.
//! - **Windows**: a copy through a 64 KiB buffer (`read_at`, then `write_all`); IOCP's
//!   `TransmitFile` is not wired up.
//!
//! Cancelling: a dropped transfer cancels its operations. A splice transfer's pipe is never
//! reused (the kernel may still move bytes into or out of it until the cancellations
//! complete): it is closed once they have. How many bytes reached the socket is then unknown, as for a
//! dropped `write_all`.

use std::io;

use super::stream::Stream;
use crate::fs::File;
#[cfg(unix)]
use crate::op::SharedFd;

/// The most one operation is asked to move (the kernel's cap on one transfer, page
/// aligned).
#[cfg(unix)]
const MAX_CHUNK: u64 = crate::op::MAX_RW as u64;

/// Sends up to `len` bytes of `file` from `offset` on `stream`; see
/// `stream_io!`'s `send_file` for the contract.
pub(crate) async fn send_file(
    stream: &Stream,
    file: &File,
    offset: u64,
    len: u64,
) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    if offset > i64::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("send_file offset {offset} is beyond the largest file offset"),
        ));
    }
    stream.fd.check_write_order()?;
    // Never past the largest offset: the kernel's `loff_t` is signed.
    let len = len.min(i64::MAX as u64 - offset);
    #[cfg(unix)]
    return route(&stream.fd, file.shared(), offset, len).await;
    #[cfg(windows)]
    return copy(stream, file, offset, len).await;
}

#[cfg(target_os = "linux")]
async fn route(sock: &SharedFd, file: &SharedFd, offset: u64, len: u64) -> io::Result<u64> {
    use crate::driver::Backend;
    let driver = crate::runtime::context::driver();
    let splices = driver.borrow().backend().splices();
    if !splices {
        return by_sendfile(sock, file, offset, len).await;
    }
    let pipe = driver.borrow_mut().pipes.take()?;
    let (res, pipe) = by_splice(sock, file, offset, len, pipe).await;
    if let Some(pipe) = pipe {
        driver.borrow_mut().pipes.give_back(pipe);
    }
    res
}

#[cfg(all(unix, not(target_os = "linux")))]
async fn route(sock: &SharedFd, file: &SharedFd, offset: u64, len: u64) -> io::Result<u64> {
    by_sendfile(sock, file, offset, len).await
}

/// `sendfile` until `len` bytes are sent or the file ends.
#[cfg(unix)]
async fn by_sendfile(sock: &SharedFd, file: &SharedFd, offset: u64, len: u64) -> io::Result<u64> {
    use crate::driver::op::Op;
    use crate::op::sendfile::SendFile;
    let mut sent = 0;
    while sent < len {
        let want = (len - sent).min(MAX_CHUNK) as u32;
        match Op::new(SendFile::new(sock, file, offset + sent, want)).await {
            Ok(0) => break,
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // io_uring runs sendfile without waiting: no room in the socket.
            #[cfg(target_os = "linux")]
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => writable(sock).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Splices through `pipe` until `len` bytes are sent or the file ends; gives the pipe back
/// if it is empty and sound (see the module docs).
#[cfg(target_os = "linux")]
async fn by_splice(
    sock: &SharedFd,
    file: &SharedFd,
    offset: u64,
    len: u64,
    pipe: crate::driver::pipes::Pipe,
) -> (io::Result<u64>, Option<crate::driver::pipes::Pipe>) {
    let mut sent = 0u64;
    // Bytes in the pipe, spliced from the file and not yet to the socket.
    let mut held = 0usize;
    let mut end_of_file = false;
    let mut wait = false;
    while held > 0 || (sent < len && !end_of_file) {
        let step = if held > 0 {
            drain(sock, &pipe, held, &mut wait).await
        } else {
            let at = offset + sent;
            // A pipe slot holds one page: an offset inside a page wastes the first
            // slot's head.
            let room = pipe.cap - (at % 4096) as usize;
            let want = (len - sent).min(room as u64).min(MAX_CHUNK) as u32;
            fill_and_drain(sock, file, &pipe, at, want, &mut wait).await
        };
        match step {
            Ok(Step { filled, drained }) => {
                if filled == Some(0) {
                    end_of_file = true;
                }
                // More out of the pipe than went in would mean bytes of another transfer.
                let Some(left) = (held + filled.unwrap_or(0)).checked_sub(drained) else {
                    let e = io::Error::other("splice moved more out of the pipe than went in");
                    return (Err(e), None);
                };
                held = left;
                sent += drained as u64;
            }
            // The pipe may hold bytes nobody will send: it is closed, not reused.
            Err(e) => return (Err(e), None),
        }
    }
    (Ok(sent), Some(pipe))
}

/// What one step moved: into the pipe from the file (if it read the file) and out of it to
/// the socket.
#[cfg(target_os = "linux")]
struct Step {
    filled: Option<usize>,
    drained: usize,
}

/// Splices `want` bytes of the file at `at` into the (empty) pipe and, linked behind it,
/// the same count from the pipe to the socket.
#[cfg(target_os = "linux")]
async fn fill_and_drain(
    sock: &SharedFd,
    file: &SharedFd,
    pipe: &crate::driver::pipes::Pipe,
    at: u64,
    want: u32,
    wait: &mut bool,
) -> io::Result<Step> {
    use crate::driver::op::Op;
    use crate::op::sendfile::Splice;
    if std::mem::take(wait) {
        writable(sock).await?;
    }
    let (filled, drained) = crate::link::link(
        Op::new(Splice::file_to_pipe(file, at, &pipe.write, want)),
        Op::new(Splice::pipe_to_socket(&pipe.read, sock, want)),
    )
    .await;
    // A failed file splice moved nothing (the second then never started).
    let filled = filled?;
    let drained = match drained {
        Ok(n) => n,
        // Not started: the file splice came up short (the end of the file), or a
        // cancellation; the next step sends what the pipe holds (or is cancelled too).
        Err(e) if crate::cancel::is_cancelled(&e) => 0,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            *wait = true;
            0
        }
        Err(e) => return Err(e),
    };
    Ok(Step {
        filled: Some(filled),
        drained,
    })
}

/// Splices what the pipe holds (`held` bytes) to the socket, waiting for room first if the
/// last splice found none.
#[cfg(target_os = "linux")]
async fn drain(
    sock: &SharedFd,
    pipe: &crate::driver::pipes::Pipe,
    held: usize,
    wait: &mut bool,
) -> io::Result<Step> {
    use crate::driver::op::Op;
    use crate::op::sendfile::Splice;
    if std::mem::take(wait) {
        writable(sock).await?;
    }
    let want = held.min(MAX_CHUNK as usize) as u32;
    let drained = match Op::new(Splice::pipe_to_socket(&pipe.read, sock, want)).await {
        Ok(0) => {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "splice from the pipe to the socket moved nothing",
            ))
        }
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            *wait = true;
            0
        }
        Err(e) => return Err(e),
    };
    Ok(Step {
        filled: None,
        drained,
    })
}

/// Waits until the socket has room.
#[cfg(target_os = "linux")]
async fn writable(sock: &SharedFd) -> io::Result<()> {
    crate::driver::op::Op::new(crate::op::sendfile::PollWritable::new(sock)).await
}

/// Windows: reads the file into a buffer and sends it, until `len` bytes are sent or the
/// file ends.
#[cfg(windows)]
async fn copy(stream: &Stream, file: &File, offset: u64, len: u64) -> io::Result<u64> {
    use crate::buf::IoBuf;
    /// The buffer of a copy.
    const CHUNK: u64 = 64 * 1024;
    let mut buf = Vec::with_capacity(len.min(CHUNK) as usize);
    let mut sent = 0;
    while sent < len {
        buf.clear();
        let want = (len - sent).min(CHUNK) as usize;
        let (res, slice) = file.read_at(buf.slice(..want), offset + sent).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        res?;
        sent += buf.len() as u64;
    }
    Ok(sent)
}
