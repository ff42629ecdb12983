//! The runtime's pool of pipes for splicing files into sockets (io_uring's file-to-socket
//! path, `net::sendfile`): creating a pipe and sizing it costs three system calls and
//! closing it two, so a transfer borrows one here and gives it back when it is done.
//!
//! Only an empty pipe comes back: a transfer gives its pipe back only after every byte it
//! spliced in has been spliced out again. A transfer that fails, or whose future is
//! dropped mid-way (the kernel may still be moving bytes through it), drops its pipe
//! instead: the ends close once the last operation using them has completed, and no
//! later transfer can see stale bytes.

use std::io;

use crate::op::SharedFd;
use crate::platform;

/// How big each pipe is asked to be: 256 KiB, 64 page-sized slots. One transfer moves at
/// most this much per pair of splices, so a 1 MiB response costs four pairs instead of
/// sixteen with Linux's 64 KiB default. The pipe holds references to page-cache pages, not
/// copies; but Linux counts every pipe's slots against the user's `pipe-user-pages-soft`
/// (64 MiB by default) and shrinks new pipes to one page past it, so this stays well below
/// a size that a few hundred connections would exhaust.
const PIPE_SIZE: usize = 256 * 1024;

/// How many idle pipes a runtime keeps (each is two descriptors).
const IDLE_PIPES: usize = 64;

/// A pipe in blocking mode: file pages go in at `write`, out at `read`.
pub(crate) struct Pipe {
    pub(crate) read: SharedFd,
    pub(crate) write: SharedFd,
    /// Its capacity in bytes.
    pub(crate) cap: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let ([r, w], cap) = platform::pipe(PIPE_SIZE)?;
        Ok(Pipe {
            read: SharedFd::new(r),
            write: SharedFd::new(w),
            // A page at least: F_GETPIPE_SZ never reports less.
            cap: cap.max(4096),
        })
    }
}

/// Idle, empty pipes of one runtime.
#[derive(Default)]
pub(crate) struct PipePool {
    idle: Vec<Pipe>,
}

impl PipePool {
    /// An empty pipe: an idle one, or a new one.
    ///
    /// # Errors
    ///
    /// A new pipe could not be created (the descriptor limit).
    pub(crate) fn take(&mut self) -> io::Result<Pipe> {
        match self.idle.pop() {
            Some(p) => Ok(p),
            None => Pipe::new(),
        }
    }

    /// Takes back a pipe its borrower has emptied (closes it if enough are idle).
    pub(crate) fn give_back(&mut self, pipe: Pipe) {
        if self.idle.len() < IDLE_PIPES {
            self.idle.push(pipe);
        }
    }
}
