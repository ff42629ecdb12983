//! Windows' I/O completion ports: the completion-based backend of Windows.
//!
//! One port per runtime (`port.rs`). [`Iocp::push`] starts an overlapped call
//! (`ReadFile`/`WriteFile` at the description's offset, `WSARecv`/`WSASend`,
//! `WSARecvFrom`/`WSASendTo`, `AcceptEx`, `ConnectEx`; `call.rs`) with an OVERLAPPED that
//! lives in a heap block (`call::Overlapped`) keyed by the driver's key; the port reports
//! the call's one completion packet, which [`Iocp::reap`] turns back into that key. A
//! `shutdown(Write)` waits behind the stream sends of its socket (`order.rs`). What Windows has no overlapped form for (opens,
//! path calls, `FlushFileBuffers`, stat, vectored file IO) runs on the blocking pool
//! (`driver/syscall_windows.rs`); a shutdown, a close and a no-op complete at once.
//!
//! # Lifetimes
//!
//! The OVERLAPPED, and everything the call was given (buffers, address and length words,
//! the socket an accept fills), stay alive until the packet is reaped: the heap block is
//! freed only after it, and the driver keeps the operation's own memory until it hands the
//! completion over (its orphan rules, as for an io_uring SQE). [`Iocp::cancel`] is
//! `CancelIoEx` on that OVERLAPPED: best effort, the packet still comes (with
//! `ERROR_OPERATION_ABORTED`, which is `c::ECANCELED`, or the real result). A runtime
//! dropped with calls still in the kernel leaks their blocks rather than free memory the
//! kernel may write.
//!
//! # Handles and ports
//!
//! Windows binds a handle to one completion port, for good, the first time coring does IO
//! on it ([`Iocp::attach`]); `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` is set then, so a call
//! that succeeds at once posts no packet and completes during the push. A socket already
//! bound to another runtime's port is refused: its operations end with
//! `ERROR_INVALID_PARAMETER` (`InvalidInput`), what `CreateIoCompletionPort` says, also
//! after that runtime is dropped (the binding outlives the port). Each runtime's sockets
//! are its own on Windows: hand a socket to another runtime before doing IO on it. (Windows
//! 8.1 can move a handle, `FileReplaceCompletionInformation`, but Wine 8, which CI runs,
//! answers STATUS_NOT_IMPLEMENTED, so coring does not rely on it.) A file the port cannot
//! take (bound elsewhere, or opened for synchronous IO, as std opens files) has its reads
//! and writes run on the blocking pool instead.
//!
//! # Results
//!
//! A completion's `res` is the byte count (the new socket, for an accept), or `-code` with
//! the Win32/Winsock error as `GetOverlappedResult`/`WSAGetOverlappedResult` report it. A
//! read at or past the end of a file, or of a pipe whose writer left, is 0 bytes, as on
//! Unix (Wine completes such a read with `STATUS_END_OF_FILE` after pending it; Windows
//! may fail it at once: both are 0). A datagram longer than the buffer is truncated and
//! reported as the bytes received, as `recvmsg(2)` does.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{ERROR_INVALID_PARAMETER, WAIT_TIMEOUT};
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::Storage::FileSystem::SetFileCompletionNotificationModes;
use windows_sys::Win32::System::WindowsProgramming::{
    FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, FILE_SKIP_SET_EVENT_ON_HANDLE,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, CreateIoCompletionPort, GetQueuedCompletionStatusEx, OVERLAPPED_ENTRY,
};

use super::{Backend, Enqueued, Push, Unpark, Wait};
use crate::driver::dense::DenseMap;
use crate::driver::desc::FdRef;
use crate::driver::offload::{Offload, POOL_THREADS};
use crate::driver::{Completion, OpDesc};
use crate::platform::windows::{handle, socket_of};
use crate::platform::{c, close, RawFd};
use call::{Extra, Overlapped, Started};
use order::SendOrder;
use port::{Port, PortWake};

mod call;
mod order;
mod port;

/// Completion packets taken from the port per wait.
const ENTRIES: usize = 256;
/// How long a synchronous cancel waits for the kernel to let go of a call.
const CANCEL_SYNC_WAIT: Duration = Duration::from_millis(50);

/// How the port runs IO on a handle.
#[derive(Debug, Clone, Copy)]
enum Binding {
    /// Bound to this port; `skip`: a call that succeeds at once posts no packet.
    Port { skip: bool },
    /// A file the port cannot take: opened for synchronous IO (a std file adopted with
    /// `File::from_std`), or bound to another port where Windows cannot move it. Its reads
    /// and writes run on the blocking pool, each waiting on its own event (the pool's
    /// `rw_at`).
    Pool,
}

/// The completion-port backend (see the module docs).
pub(crate) struct Iocp {
    port: Arc<Port>,
    wake: Arc<PortWake>,
    /// Calls in the kernel, by key.
    ops: DenseMap<Box<Overlapped>>,
    /// Completions decided during a push that may not complete inline.
    ready: Vec<(usize, Completion)>,
    entries: Vec<OVERLAPPED_ENTRY>,
    /// Entries filled by the last wait.
    filled: usize,
    /// Handles seen by this port: descriptor number -> (open-file identity, how its IO
    /// runs).
    attached: HashMap<RawFd, (u64, Binding)>,
    /// Stream sends in the kernel and the shutdowns held behind them.
    order: SendOrder,
    /// Blocks of calls a synchronous cancel finished, by address, until their packets.
    consumed: HashMap<usize, Box<Overlapped>>,
    offload: Offload,
}

impl Iocp {
    pub(crate) fn new() -> io::Result<Iocp> {
        crate::platform::windows::winsock_init()?;
        let port = Port::new()?;
        let wake = Arc::new(PortWake {
            port: port.clone(),
            posted: AtomicBool::new(false),
        });
        Ok(Iocp {
            offload: Offload::new(wake.clone()),
            port,
            wake,
            ops: DenseMap::default(),
            ready: Vec::new(),
            // SAFETY: OVERLAPPED_ENTRY is plain integers and pointers.
            entries: vec![unsafe { mem::zeroed() }; ENTRIES],
            filled: 0,
            attached: HashMap::new(),
            order: SendOrder::default(),
            consumed: HashMap::new(),
        })
    }

    /// Binds `fd` to this port if it is not yet (see the module docs) and says how its IO
    /// runs; `file`: a file read or write, which can run on the pool where the port
    /// cannot take the handle.
    fn attach(&mut self, fd: FdRef, file: bool) -> io::Result<Binding> {
        if let Some(&(id, binding)) = self.attached.get(&fd.raw) {
            if id == fd.id {
                return Ok(binding);
            }
        }
        let known = self.attached.get(&fd.raw).map(|&(_, binding)| binding);
        let h = handle(fd.raw);
        // SAFETY: binds a handle the operation holds open to our live port.
        if unsafe { CreateIoCompletionPort(h, self.port.handle, 0, 0) }.is_null() {
            let e = call::last_error();
            // ERROR_INVALID_PARAMETER: bound to a port already, or not overlapped.
            let binding = match (e == ERROR_INVALID_PARAMETER as i32, known, file) {
                // The same handle under a new owner (given up and adopted again): bound
                // here already.
                (true, Some(binding @ Binding::Port { .. }), _) => binding,
                (true, _, true) => Binding::Pool,
                // A socket bound to another runtime's port (the operation's error travels
                // as a code: InvalidInput).
                _ => return Err(io::Error::from_raw_os_error(e)),
            };
            self.attached.insert(fd.raw, (fd.id, binding));
            return Ok(binding);
        }
        // SAFETY: sets notification modes of the handle just bound to our port.
        let skip = unsafe {
            SetFileCompletionNotificationModes(
                h,
                (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE) as u8,
            )
        } != 0;
        let binding = Binding::Port { skip };
        self.attached.insert(fd.raw, (fd.id, binding));
        Ok(binding)
    }

    /// A completion decided during the push.
    fn now(&mut self, key: usize, res: i32, inline: bool) -> Push {
        let c = Completion { res, flags: 0 };
        if inline {
            Push::Completed(c)
        } else {
            self.ready.push((key, c));
            Push::Queued
        }
    }

    /// A shutdown: `Write` waits behind the socket's stream sends; `Both` aborts them
    /// first (they end with a broken pipe), as it does a blocked writer on Unix.
    fn shutdown(&mut self, key: usize, fd: RawFd, how: i32, inline: bool) -> Push {
        if how == c::SHUT_WR && self.order.hold(fd, key, how) {
            return Push::Queued;
        }
        if how == c::SHUT_RDWR {
            for &send in self.order.sends(fd) {
                if let Some(op) = self.ops.get_mut(send) {
                    op.aborted = true;
                    // SAFETY: names the call's own OVERLAPPED on its handle.
                    unsafe { CancelIoEx(handle(op.fd), &op.ov) };
                }
            }
        }
        let res = run_shutdown(fd, how);
        self.now(key, res, inline)
    }
}

/// `shutdown(2)` of `fd` now; 0 or `-code`.
fn run_shutdown(fd: RawFd, how: i32) -> i32 {
    // SAFETY: no pointers.
    if unsafe { ws::shutdown(socket_of(fd), how) } == 0 {
        0
    } else {
        -call::wsa_error()
    }
}

/// The descriptor a description starts an overlapped call on, if it is one.
fn overlapped_fd(desc: &OpDesc) -> Option<FdRef> {
    match *desc {
        OpDesc::Read { fd, .. }
        | OpDesc::Write { fd, .. }
        | OpDesc::Recv { fd, .. }
        | OpDesc::Send { fd, .. }
        | OpDesc::RecvMsg { fd, .. }
        | OpDesc::SendMsg { fd, .. }
        | OpDesc::Accept { fd, .. }
        | OpDesc::Connect { fd, .. } => Some(fd),
        _ => None,
    }
}

impl Backend for Iocp {
    fn push(
        &mut self,
        key: usize,
        desc: &OpDesc,
        inline: bool,
        _waker: &std::task::Waker,
    ) -> io::Result<Push> {
        let Some(fd) = overlapped_fd(desc) else {
            return Ok(match *desc {
                OpDesc::Nop => self.now(key, 0, inline),
                OpDesc::Shutdown { fd, how } => self.shutdown(key, fd.raw, how, inline),
                OpDesc::Close { fd } => {
                    self.attached.remove(&fd);
                    let res = close(fd);
                    self.now(key, res, inline)
                }
                OpDesc::RecvMulti { .. } | OpDesc::AcceptMulti { .. } => {
                    unreachable!("coring: a multishot operation reached the IOCP backend")
                }
                _ => {
                    self.offload.spawn(key, *desc);
                    Push::Queued
                }
            });
        };
        let file = matches!(desc, OpDesc::Read { .. } | OpDesc::Write { .. });
        let skip = match self.attach(fd, file)? {
            Binding::Port { skip } => skip,
            Binding::Pool => {
                self.offload.spawn(key, *desc);
                return Ok(Push::Queued);
            }
        };
        // A stream send issued after a shutdown of the write side that waits behind
        // earlier sends: a broken pipe, as if the shutdown had run.
        if desc.is_ordered_write() && self.order.write_shut(fd.raw) {
            return Ok(self.now(key, -c::EPIPE, inline));
        }
        let mut op = Overlapped::new(key, fd.raw);
        // SAFETY: the description's memory stays valid until the packet (the driver's
        // contract); the block is kept in `ops` until then, and its heap address does not
        // change when the box moves.
        let started = unsafe { call::start(&mut op, desc) };
        // A packet comes for a call in the kernel, and for one that succeeded at once on
        // a handle that does not skip them.
        let packet = match started {
            Started::Pending => true,
            Started::Done => !skip,
            Started::Failed(_) => false,
        };
        if packet {
            if desc.is_ordered_write() {
                op.ordered = true;
                self.order.send_started(fd.raw, key);
            }
            self.ops.insert(key, op);
            return Ok(Push::Queued);
        }
        match started {
            Started::Pending => unreachable!("a call in the kernel has a packet"),
            Started::Done => {
                // SAFETY: the call succeeded at once and posts no packet.
                let res = unsafe { call::finish(&mut op) };
                Ok(self.now(key, res, inline))
            }
            // A datagram longer than the buffer, received at once: the buffers are full and
            // no packet follows (seen on Wine; libuv relies on the same on Windows). It is
            // truncated, as recvmsg(2) does.
            Started::Failed(ws::WSAEMSGSIZE) if matches!(op.extra, Extra::RecvFrom { .. }) => {
                let Extra::RecvFrom { bufs, .. } = &op.extra else {
                    unreachable!()
                };
                let full: u64 = bufs.iter().map(|b| u64::from(b.len)).sum();
                // SAFETY: the call has finished (at once, without a packet).
                let res = unsafe { call::after(&mut op, full.min(i32::MAX as u64) as i32) };
                Ok(self.now(key, res, inline))
            }
            // A send after the write side was shut down: a broken pipe, as EPIPE on Unix.
            Started::Failed(ws::WSAESHUTDOWN) => Ok(self.now(key, -c::EPIPE, inline)),
            Started::Failed(code) => Ok(self.now(key, -code, inline)),
        }
    }

    fn cancel(&mut self, key: usize) -> io::Result<Enqueued> {
        match self.ops.get(key) {
            Some(op) => {
                // Best effort: ERROR_NOT_FOUND means the packet is on its way already.
                // SAFETY: names the call's own OVERLAPPED on the handle it runs on.
                unsafe { CancelIoEx(handle(op.fd), &op.ov) };
            }
            // A held shutdown never reached the kernel.
            None if self.order.unhold(key) => {
                self.ready.push((key, Completion::error(c::ECANCELED)));
            }
            // A pool job runs to its end; anything else completed during its push.
            None => self.offload.cancel(key),
        }
        Ok(Enqueued::Yes)
    }

    /// A held shutdown is taken out at once; a call in the kernel is cancelled and waited
    /// for, briefly (the kernel lets go of a cancelled socket call at once): its packet
    /// then waits in the port for the next reap.
    fn cancel_sync(&mut self, key: usize) -> io::Result<()> {
        if self.order.unhold(key) {
            self.ready.push((key, Completion::error(c::ECANCELED)));
            return Ok(());
        }
        let Some(op) = self.ops.get(key) else {
            return Err(io::Error::from_raw_os_error(c::EOPNOTSUPP));
        };
        // SAFETY: names the call's own OVERLAPPED on the handle it runs on.
        unsafe { CancelIoEx(handle(op.fd), &op.ov) };
        let deadline = Instant::now() + CANCEL_SYNC_WAIT;
        while !op.finished() {
            if Instant::now() >= deadline {
                return Err(io::Error::from_raw_os_error(c::EOPNOTSUPP));
            }
            std::thread::yield_now();
        }
        // The call has finished: its result is final, and is reported by the next reap.
        // Its packet still comes; the block waits for it in `consumed`.
        let mut op = self.ops.remove(key).expect("looked up above");
        // SAFETY: the call has finished.
        let res = unsafe { call::finish(&mut op) };
        self.ready.push((key, Completion { res, flags: 0 }));
        if op.ordered {
            for (held, how) in self.order.send_done(op.fd, key) {
                let res = run_shutdown(op.fd, how);
                self.ready.push((held, Completion { res, flags: 0 }));
            }
        }
        self.consumed.insert(&*op as *const Overlapped as usize, op);
        Ok(())
    }

    fn enter(&mut self, wait: Wait) -> io::Result<usize> {
        let have = !self.ready.is_empty() || self.offload.has_completions();
        let timeout = match wait {
            _ if have => 0,
            // Nothing can have arrived: no call is in the kernel, and a pool job's end
            // is seen through `has_completions` (its wake packet is taken by a later wait).
            Wait::No if self.ops.is_empty() => return Ok(0),
            Wait::No => 0,
            Wait::Park(None) => u32::MAX, // INFINITE
            Wait::Park(Some(d)) => millis_up(d),
        };
        let mut n = 0u32;
        // SAFETY: fills at most entries.len() live entries.
        let ok = unsafe {
            GetQueuedCompletionStatusEx(
                self.port.handle,
                self.entries.as_mut_ptr(),
                self.entries.len() as u32,
                &mut n,
                timeout,
                0,
            )
        };
        if ok == 0 {
            let e = call::last_error();
            if e != WAIT_TIMEOUT as i32 {
                return Err(io::Error::from_raw_os_error(e));
            }
            n = 0;
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    fn reap(&mut self, mut sink: impl FnMut(usize, Completion)) {
        for i in 0..mem::take(&mut self.filled) {
            let e = self.entries[i];
            if e.lpOverlapped.is_null() {
                // A wake: the next unpark posts again. (Work announced before it is seen
                // by the loop turn that follows this reap.)
                self.wake.posted.store(false, Ordering::SeqCst);
                continue;
            }
            // The packet of a call whose result a synchronous cancel took already: its
            // block can go now.
            if !self.consumed.is_empty()
                && self.consumed.remove(&(e.lpOverlapped as usize)).is_some()
            {
                continue;
            }
            // SAFETY: every packet with an OVERLAPPED is one of our blocks (the first field
            // is the OVERLAPPED), alive in `ops` until removed below.
            let key = unsafe { (*e.lpOverlapped.cast::<Overlapped>()).key };
            let Some(mut op) = self.ops.remove(key) else {
                debug_assert!(false, "coring: a completion packet for unknown key {key}");
                continue;
            };
            // SAFETY: the packet came: the call has finished.
            let res = unsafe { call::finish(&mut op) };
            sink(key, Completion { res, flags: 0 });
            if op.ordered {
                for (held, how) in self.order.send_done(op.fd, key) {
                    let res = run_shutdown(op.fd, how);
                    sink(held, Completion { res, flags: 0 });
                }
            }
        }
        for (key, c) in self.ready.drain(..) {
            sink(key, c);
        }
        self.offload.drain(sink);
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        self.wake.clone()
    }

    fn describe(&self) -> String {
        format!("iocp (completion port + blocking pool of up to {POOL_THREADS} threads)")
    }

    fn offloaded(&self) -> u64 {
        self.offload.spawned()
    }
}

impl Drop for Iocp {
    fn drop(&mut self) {
        // Calls still in the kernel may write their blocks until their packets, which
        // nobody will reap now: cancel them and leak the blocks (the driver leaks their
        // buffers alike).
        for op in self
            .ops
            .drain()
            .chain(self.consumed.drain().map(|(_, op)| op))
        {
            // SAFETY: names the call's own OVERLAPPED on its handle.
            unsafe { CancelIoEx(handle(op.fd), &op.ov) };
            // An accept's socket goes with the block: the kernel may still fill it.
            mem::forget(op);
        }
    }
}

/// A duration in whole milliseconds, rounded up (a wait never ends before its deadline),
/// below INFINITE.
fn millis_up(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(u128::from(u32::MAX - 1)) as u32
}
