//! The raw io_uring echo server: the loop a careful programmer would write by hand on the
//! `io-uring` crate, the practical limit for an io_uring echo server. One ring set up as
//! coring sets up its own ([`super::ring`]), an accept SQE re-armed after each connection,
//! and per connection a recv into its own [`SERVER_BUF`]-byte buffer, a send of exactly the
//! bytes received (again for the rest after a short send), then the recv re-armed. Each
//! loop turn is one `submit_and_wait(1)`: it submits the SQEs queued while reaping the
//! previous turn's CQEs, all of them. A timeout SQE wakes the loop at the edges of the
//! measured window, where it samples as every echo server does.

use std::io;
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::ptr;
use std::time::Instant;

use io_uring::{opcode, squeue, types, CompletionQueue, SubmissionQueue, Submitter};

use super::ring;
use crate::echo::pair::Handshake;
use crate::echo::server::{Ready, ServerReport, ServerSample, ServerStats, DRAIN, SERVER_BUF};
use crate::load::Timeline;

/// Ring size: coring's default (`Builder::entries`), or more when more connections
/// could have an operation queued at once.
const MIN_ENTRIES: usize = 256;

// `user_data` is `connection index << KIND_BITS | kind`.
const KIND_BITS: u32 = 8;
const KIND_MASK: u64 = (1 << KIND_BITS) - 1;
const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const TIMER: u64 = 4;
/// Cancellations at shutdown.
const CANCEL: u64 = 5;

fn token(conn: usize, kind: u64) -> u64 {
    (conn as u64) << KIND_BITS | kind
}

fn entries(conns: usize) -> u32 {
    // One op per connection, plus the accept, the timer and a cancellation or two.
    (conns + 4).next_power_of_two().max(MIN_ENTRIES) as u32
}

/// The raw echo server thread's body: a server for [`crate::echo::pair::run_pair`].
///
/// # Errors
///
/// Setup failures, a run abandoned before it started, and a failed `io_uring_enter`; what
/// goes wrong on a connection is in the report's errors.
#[inline(never)] // a symbol for profiles
pub fn server(conns: usize, hs: Handshake) -> Result<ServerReport, String> {
    let setup = || -> io::Result<_> {
        let (ring, setup) = ring(entries(conns))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        // As coring's listener, which is created non-blocking.
        listener.set_nonblocking(true)?;
        let ready = Ready {
            addr: listener.local_addr()?,
            backend: None,
            description: format!("raw io_uring ({})", setup.name()),
        };
        Ok(((ring, listener), ready))
    };
    let ((mut ring, listener), tl) = hs.start(setup().map_err(|e| format!("server setup: {e}")))?;
    let stats = ServerStats::default();
    let (submitter, sq, mut cq) = ring.split();
    let mut echo = Echo {
        submitter,
        sq,
        listener: listener.as_raw_fd(),
        conns: ManuallyDrop::new(Vec::with_capacity(conns)),
        timespec: Box::new(types::Timespec::new()),
        in_flight: 0,
        accepting: false,
        timer: false,
        stats: &stats,
    };
    let res = echo.serve(&mut cq, conns, tl);
    let idle = echo.shutdown(&mut cq);
    if idle {
        // Nothing is in flight: the kernel holds no pointer into the buffers any more.
        drop(ManuallyDrop::into_inner(echo.conns));
    }
    // Otherwise the connections (buffers and sockets) are leaked rather than freed
    // while the kernel may still write into them.
    let edges = res.map_err(|e| format!("raw io_uring loop: {e}"))?;
    Ok(stats.report(edges, conns))
}

/// One accepted connection.
struct Conn {
    /// `None` once closed.
    stream: Option<TcpStream>,
    fd: RawFd,
    /// A heap block of its own: it does not move when the `Vec` of connections grows.
    buf: Box<[u8]>,
    /// Bytes the last recv returned, and how many of them have been sent back.
    len: usize,
    sent: usize,
    /// The kind (RECV or SEND) of the operation in flight on this connection, or 0.
    op: u64,
}

/// Where the loop is in the run's schedule.
// One per server loop, moved once per phase change: its size costs nothing, and boxing
// the samples would cost an allocation at each change.
#[allow(clippy::large_enum_variant)]
enum Phase {
    Warmup,
    Measure {
        start: ServerSample,
    },
    Drain {
        start: ServerSample,
        end: ServerSample,
        until: Instant,
    },
}

struct Echo<'a> {
    submitter: Submitter<'a>,
    sq: SubmissionQueue<'a>,
    listener: RawFd,
    /// Freed only once nothing is in flight (see `server`).
    conns: ManuallyDrop<Vec<Conn>>,
    /// The timeout's duration, read by the kernel when the SQE is submitted.
    timespec: Box<types::Timespec>,
    /// SQEs queued or submitted whose CQE has not been reaped yet.
    in_flight: usize,
    accepting: bool,
    timer: bool,
    stats: &'a ServerStats,
}

impl Echo<'_> {
    /// Queues `entry`; it is submitted with the next loop turn's `submit_and_wait`.
    ///
    /// # Safety
    ///
    /// Whatever `entry` points to must stay valid (and, for a buffer, untouched by
    /// Rust) until its CQE is reaped.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // The ring is sized so this never loops (see `entries`); if it were full,
        // submitting makes room.
        // SAFETY: the caller's contract.
        while unsafe { self.sq.push(&entry) }.is_err() {
            self.sq.sync();
            self.submitter.submit()?;
            self.sq.sync();
        }
        self.in_flight += 1;
        Ok(())
    }

    fn accept(&mut self) -> io::Result<()> {
        let entry = opcode::Accept::new(types::Fd(self.listener), ptr::null_mut(), ptr::null_mut())
            // As coring accepts.
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(token(0, ACCEPT));
        // SAFETY: no peer address is asked for, so the SQE carries no pointer; the
        // listener outlives the ring's use of it (it is dropped after `server` returns).
        unsafe { self.push(entry) }?;
        self.accepting = true;
        Ok(())
    }

    fn recv(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        let entry = opcode::Recv::new(types::Fd(c.fd), c.buf.as_mut_ptr(), c.buf.len() as u32)
            .build()
            .user_data(token(i, RECV));
        c.op = RECV;
        // SAFETY: `c.buf` is a heap block of its own, which nothing reads, writes, moves
        // or frees until this recv's CQE is reaped: a connection has one operation in
        // flight at a time, and the connections are freed only once nothing is in flight
        // (leaked otherwise). The socket stays open until then as well.
        unsafe { self.push(entry) }
    }

    fn send(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        let rest = &c.buf[c.sent..c.len];
        let entry = opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
            // As coring sends.
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(token(i, SEND));
        c.op = SEND;
        // SAFETY: as for `recv`: `c.buf` is neither written, moved nor freed until this
        // send's CQE is reaped.
        unsafe { self.push(entry) }
    }

    fn arm_timer(&mut self, deadline: Instant) -> io::Result<()> {
        // At most one timeout is queued at a time, so no queued SQE points to the old
        // value.
        *self.timespec = deadline.saturating_duration_since(Instant::now()).into();
        let entry = opcode::Timeout::new(&*self.timespec)
            .build()
            .user_data(token(0, TIMER));
        // SAFETY: the kernel copies the timespec when it takes the SQE; the box lives,
        // unmoved, as long as the ring's use of it, and is rewritten only once this
        // timeout has completed.
        unsafe { self.push(entry) }?;
        self.timer = true;
        Ok(())
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.op = 0;
        // Dropping the stream closes the socket.
        c.stream = None;
        self.stats.close();
    }

    fn fail(&mut self, i: usize, res: i32) {
        self.stats.error(format!(
            "server connection: {}",
            io::Error::from_raw_os_error(-res)
        ));
        self.close(i);
    }

    /// Echoes until the schedule's end, then until every connection has closed or
    /// `DRAIN` has passed; returns the samples at the edges of the measured window.
    fn serve(
        &mut self,
        cq: &mut CompletionQueue<'_>,
        conns: usize,
        tl: Timeline,
    ) -> io::Result<(ServerSample, ServerSample)> {
        self.accept()?;
        self.arm_timer(tl.warm_end)?;
        let mut accepted = 0;
        let mut phase = Phase::Warmup;
        loop {
            // Submits the SQEs the previous turn queued and waits for one CQE.
            self.sq.sync();
            match self.submitter.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            cq.sync();
            for cqe in &mut *cq {
                self.in_flight -= 1;
                let (i, kind) = (
                    (cqe.user_data() >> KIND_BITS) as usize,
                    cqe.user_data() & KIND_MASK,
                );
                let res = cqe.result();
                match kind {
                    ACCEPT => {
                        self.accepting = false;
                        if res >= 0 {
                            accepted += 1;
                            self.accepted(res)?;
                            if accepted < conns {
                                self.accept()?;
                            }
                        } else if matches!(-res, libc::EAGAIN | libc::EINTR) {
                            self.accept()?;
                        } else {
                            self.stats
                                .error(format!("accept: {}", io::Error::from_raw_os_error(-res)));
                        }
                    }
                    RECV => {
                        self.conns[i].op = 0;
                        match res {
                            0 => self.close(i),
                            n if n > 0 => {
                                let c = &mut self.conns[i];
                                (c.len, c.sent) = (n as usize, 0);
                                self.send(i)?;
                            }
                            e if matches!(-e, libc::EAGAIN | libc::EINTR) => self.recv(i)?,
                            e => self.fail(i, e),
                        }
                    }
                    SEND => {
                        self.conns[i].op = 0;
                        match res {
                            n if n > 0 => {
                                let c = &mut self.conns[i];
                                c.sent += n as usize;
                                if c.sent < c.len {
                                    self.send(i)?;
                                } else {
                                    self.stats.echoed(c.len);
                                    self.recv(i)?;
                                }
                            }
                            e if matches!(-e, libc::EAGAIN | libc::EINTR) => self.send(i)?,
                            // A send of 0 bytes out of more: as `write_all`, an error.
                            0 => self.fail(i, -libc::EPIPE),
                            e => self.fail(i, e),
                        }
                    }
                    TIMER => {
                        self.timer = false;
                        phase = self.tick(phase, tl)?;
                    }
                    _ => {}
                }
            }
            cq.sync();
            if let Phase::Drain { start, end, until } = &phase {
                let closed = self.stats.closed();
                if closed >= conns || Instant::now() >= *until {
                    return Ok((start.clone(), end.clone()));
                }
            }
        }
    }

    /// A newly accepted socket: set up as coring's echo does it, then its first recv.
    fn accepted(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: `fd` was just returned by accept, is open, and is owned by nothing else.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        self.conns.push(Conn {
            stream: Some(stream),
            fd,
            buf: vec![0u8; SERVER_BUF].into_boxed_slice(),
            len: 0,
            sent: 0,
            op: 0,
        });
        let i = self.conns.len() - 1;
        let nodelay = self.conns[i].stream.as_ref().map(|s| s.set_nodelay(true));
        if let Some(Err(e)) = nodelay {
            self.stats.error(format!("server connection: {e}"));
            self.close(i);
            return Ok(());
        }
        self.recv(i)
    }

    /// The timer fired: samples at the edges of the measured window, then drains.
    fn tick(&mut self, phase: Phase, tl: Timeline) -> io::Result<Phase> {
        let now = Instant::now();
        let next = match phase {
            Phase::Warmup if now >= tl.warm_end => Phase::Measure {
                start: ServerSample::now(self.stats, None),
            },
            Phase::Measure { start } if now >= tl.end => Phase::Drain {
                start,
                end: ServerSample::now(self.stats, None),
                until: now + DRAIN,
            },
            other => other,
        };
        match next {
            Phase::Warmup => self.arm_timer(tl.warm_end)?,
            Phase::Measure { .. } => self.arm_timer(tl.end)?,
            Phase::Drain { until, .. } if now < until => self.arm_timer(until)?,
            Phase::Drain { .. } => {}
        }
        Ok(next)
    }

    /// Cancels whatever is still in flight and reaps every outstanding CQE; returns
    /// whether nothing is left in flight (so the buffers may be freed).
    fn shutdown(&mut self, cq: &mut CompletionQueue<'_>) -> bool {
        let mut targets: Vec<u64> = (self.conns.iter().enumerate())
            .filter(|(_, c)| c.op != 0)
            .map(|(i, c)| token(i, c.op))
            .collect();
        if self.accepting {
            targets.push(token(0, ACCEPT));
        }
        for target in targets {
            let entry = opcode::AsyncCancel::new(target)
                .build()
                .user_data(token(0, CANCEL));
            // SAFETY: a cancellation carries no pointer.
            if unsafe { self.push(entry) }.is_err() {
                return false;
            }
        }
        if self.timer {
            let entry = opcode::TimeoutRemove::new(token(0, TIMER))
                .build()
                .user_data(token(0, CANCEL));
            // SAFETY: a timeout removal carries no pointer.
            if unsafe { self.push(entry) }.is_err() {
                return false;
            }
        }
        while self.in_flight > 0 {
            self.sq.sync();
            match self.submitter.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(_) => return false,
            }
            cq.sync();
            // Everything is being torn down: results do not matter, only that they came.
            self.in_flight -= cq.by_ref().count();
            cq.sync();
        }
        true
    }
}
