//! Windows' I/O completion ports: the completion-based backend of Windows.
//!
//! One port per runtime. [`Iocp::push`] starts an overlapped call (`ReadFile`/`WriteFile`
//! at the description's offset, `WSARecv`/`WSASend`, `WSARecvFrom`/`WSASendTo`, `AcceptEx`,
//! `ConnectEx`) with an OVERLAPPED that lives in a heap block ([`Overlapped`]) keyed by the
//! driver's key; the port reports the call's one completion packet, which
//! [`Iocp::reap`] turns back into that key. What Windows has no overlapped form for (opens,
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
//! that succeeds at once posts no packet and completes during the push. A handle already
//! bound to another runtime's port is refused: a socket's operations end with
//! `ERROR_INVALID_PARAMETER` (`InvalidInput`), what `CreateIoCompletionPort` says, even
//! after that runtime is dropped (the binding outlives the port). Each runtime's sockets
//! are its own on Windows; hand a socket to another runtime before doing IO on it. A file
//! the port cannot take (bound elsewhere, or opened for synchronous IO, as std opens
//! files) has its reads and writes run on the blocking pool instead.
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
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_BROKEN_PIPE, ERROR_HANDLE_EOF, ERROR_INVALID_PARAMETER,
    ERROR_IO_PENDING, HANDLE, INVALID_HANDLE_VALUE, WAIT_TIMEOUT,
};
use windows_sys::Win32::Networking::WinSock::{
    self as ws, AcceptEx, GetAcceptExSockaddrs, WSAGetLastError, WSAGetOverlappedResult, WSAIoctl,
    WSARecv, WSARecvFrom, WSASend, WSASendTo, WSASocketW, SOCKADDR, SOCKADDR_STORAGE, SOCKET,
    WSABUF,
};
use windows_sys::Win32::Storage::FileSystem::{
    ReadFile, SetFileCompletionNotificationModes, WriteFile,
};
use windows_sys::Win32::System::WindowsProgramming::{
    FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, FILE_SKIP_SET_EVENT_ON_HANDLE,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, CreateIoCompletionPort, GetOverlappedResult, GetQueuedCompletionStatusEx,
    PostQueuedCompletionStatus, OVERLAPPED, OVERLAPPED_ENTRY,
};

use super::{Backend, Enqueued, Push, Unpark, Wait};
use crate::driver::dense::DenseMap;
use crate::driver::desc::FdRef;
use crate::driver::offload::{Offload, POOL_THREADS};
use crate::driver::{Completion, OpDesc};
use crate::platform::close;
use crate::platform::windows::{handle, raw_from, socket_of};
use crate::platform::{c, RawFd};

/// Completion packets taken from the port per wait.
const ENTRIES: usize = 256;
/// The completion key of the packets that only wake the runtime.
const WAKE_KEY: usize = usize::MAX;
/// Room `AcceptEx` needs for each address it writes.
const ACCEPT_ADDR_LEN: u32 = mem::size_of::<SOCKADDR_STORAGE>() as u32 + 16;

/// A completion port, closed when the runtime and every unparker are gone.
struct Port(HANDLE);

// SAFETY: a port handle may be used from any thread (PostQueuedCompletionStatus is how
// other threads reach a port).
unsafe impl Send for Port {}
// SAFETY: as above; the handle is never changed.
unsafe impl Sync for Port {}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port is ours and nothing names it after the last reference.
        unsafe { CloseHandle(self.0) };
    }
}

/// Wakes a parked runtime by posting a packet without an OVERLAPPED; at most one is queued
/// at a time.
struct PortWake {
    port: Arc<Port>,
    posted: AtomicBool,
}

impl Unpark for PortWake {
    fn unpark(&self) {
        if !self.posted.swap(true, Ordering::SeqCst) {
            // SAFETY: posts a packet with no OVERLAPPED to a live port.
            unsafe { PostQueuedCompletionStatus(self.port.0, 0, WAKE_KEY, ptr::null()) };
        }
    }
}

/// What a call needs beyond its OVERLAPPED, until its packet.
enum Extra {
    /// A file read or write: results come from `GetOverlappedResult`; a read's EOF is 0.
    File { read: bool },
    /// A socket call: results come from `WSAGetOverlappedResult`.
    Socket,
    /// An accept: the socket `AcceptEx` fills and the addresses it writes, and where the
    /// description wants the peer's address.
    Accept {
        listener: SOCKET,
        socket: SOCKET,
        buf: Box<[u8; 2 * ACCEPT_ADDR_LEN as usize]>,
        addr: *mut c::sockaddr,
        addrlen: *mut c::socklen_t,
    },
    /// A connect: the socket's context is updated once it is connected.
    Connect,
    /// A datagram receive: the address length `WSARecvFrom` writes, copied to the header.
    RecvFrom {
        msg: *mut c::msghdr,
        fromlen: i32,
        bufs: Vec<WSABUF>,
    },
    /// A datagram send: its buffers, as Winsock takes them.
    SendTo { bufs: Vec<WSABUF> },
}

/// The heap block of one overlapped call (see the module docs).
#[repr(C)]
struct Overlapped {
    /// First: the pointer a packet carries is this block's.
    ov: OVERLAPPED,
    key: usize,
    fd: RawFd,
    /// `WSARecv`/`WSARecvFrom` flags, which the call may write.
    flags: u32,
    extra: Extra,
}

/// How a call started.
enum Started {
    /// In the kernel: a packet will come.
    Pending,
    /// Succeeded at once: a packet comes only if the handle does not skip them.
    Done,
    /// Failed at once with this error code: no packet.
    Failed(i32),
}

/// What an overlapped call returned, as [`Started`]; `ok` is its success value, `code` the
/// error it leaves (read at once).
fn started(ok: bool, code: i32) -> Started {
    if ok {
        Started::Done
    } else if code == ERROR_IO_PENDING as i32 || code == ws::WSA_IO_PENDING {
        Started::Pending
    } else {
        Started::Failed(code)
    }
}

fn last_error() -> i32 {
    // SAFETY: no arguments.
    unsafe { GetLastError() as i32 }
}

fn wsa_error() -> i32 {
    // SAFETY: no arguments.
    unsafe { WSAGetLastError() }
}

/// `ConnectEx`, looked up once per process.
fn connect_ex(s: SOCKET) -> Option<ws::LPFN_CONNECTEX> {
    static CONNECT_EX: OnceLock<usize> = OnceLock::new();
    let f = *CONNECT_EX.get_or_init(|| {
        let guid = ws::WSAID_CONNECTEX;
        let mut f: usize = 0;
        let mut n = 0u32;
        // SAFETY: asks for one function pointer into a live usize, by a live GUID.
        let r = unsafe {
            WSAIoctl(
                s,
                ws::SIO_GET_EXTENSION_FUNCTION_POINTER,
                (&guid as *const windows_sys::core::GUID).cast(),
                mem::size_of_val(&guid) as u32,
                (&mut f as *mut usize).cast(),
                mem::size_of::<usize>() as u32,
                &mut n,
                ptr::null_mut(),
                None,
            )
        };
        if r == 0 {
            f
        } else {
            0
        }
    });
    // SAFETY: a non-zero value is the ConnectEx pointer Winsock gave, of this type.
    (f != 0).then(|| unsafe { mem::transmute::<usize, ws::LPFN_CONNECTEX>(f) })
}

/// Binds `s` to the unspecified address of `family` if it is not bound (`ConnectEx` needs
/// a bound socket).
fn bind_any(s: SOCKET, family: u16) -> Result<(), i32> {
    // SAFETY: plain integers; all-zeroes is the unspecified address, port 0.
    let mut any: SOCKADDR_STORAGE = unsafe { mem::zeroed() };
    any.ss_family = family;
    let len = if family == ws::AF_INET6 {
        mem::size_of::<ws::SOCKADDR_IN6>()
    } else {
        mem::size_of::<ws::SOCKADDR_IN>()
    };
    // SAFETY: binds to a live address of `len` bytes.
    if unsafe { ws::bind(s, (&any as *const SOCKADDR_STORAGE).cast(), len as i32) } == 0 {
        return Ok(());
    }
    match wsa_error() {
        // Bound already (by the caller, or a connect retried).
        ws::WSAEINVAL => Ok(()),
        e => Err(e),
    }
}

/// How the port runs IO on a handle.
#[derive(Debug, Clone, Copy)]
enum Binding {
    /// Bound to this port; `skip`: a call that succeeds at once posts no packet.
    Port { skip: bool },
    /// A file the port cannot take: opened for synchronous IO (a std file adopted with
    /// `File::from_std`), or bound to another runtime's port. Its reads and writes run on
    /// the blocking pool, each waiting on its own event (the pool's `rw_at`).
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
    offload: Offload,
}

impl Iocp {
    pub(crate) fn new() -> io::Result<Iocp> {
        crate::platform::windows::winsock_init()?;
        // SAFETY: creates a new port (no file handle, no existing port).
        let h = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, ptr::null_mut(), 0, 1) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        let port = Arc::new(Port(h));
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
        })
    }

    /// Binds `fd` to this port if it is not yet (see the module docs) and says how its IO
    /// runs; `file`: a file read or write, which can run on the pool where the port
    /// cannot take the handle.
    fn attach(&mut self, fd: FdRef, file: bool) -> io::Result<Binding> {
        let known = self.attached.get(&fd.raw).copied();
        if let Some((id, binding)) = known {
            if id == fd.id {
                return Ok(binding);
            }
        }
        let h = handle(fd.raw);
        // SAFETY: binds a handle the operation holds open to our live port.
        if unsafe { CreateIoCompletionPort(h, self.port.0, 0, 0) }.is_null() {
            let e = last_error();
            let binding = match (e == ERROR_INVALID_PARAMETER as i32, known, file) {
                // The same handle under a new owner (given up and adopted again): bound
                // here already.
                (true, Some((_, Binding::Port { skip })), _) => Binding::Port { skip },
                (true, _, true) => Binding::Pool,
                // A socket bound to another runtime's port (the operation's error travels
                // as a code: ERROR_INVALID_PARAMETER, an `InvalidInput`).
                _ => return Err(io::Error::from_raw_os_error(e)),
            };
            self.attached.insert(fd.raw, (fd.id, binding));
            return Ok(binding);
        }
        // SAFETY: sets notification modes of the handle we just bound.
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

    /// Starts the overlapped call of `desc` in `op`.
    ///
    /// # Safety
    ///
    /// The pointers in `desc` are valid until the call's packet is reaped; `op` is the
    /// block that stays alive (at a fixed address) until then.
    unsafe fn start(&mut self, op: &mut Overlapped, desc: &OpDesc) -> Started {
        let ov: *mut OVERLAPPED = &mut op.ov;
        match *desc {
            OpDesc::Read {
                fd,
                buf,
                len,
                offset,
                ..
            } => {
                set_offset(&mut op.ov, offset);
                op.extra = Extra::File { read: true };
                // SAFETY: buf is valid for len bytes until the packet (the caller's
                // contract); ov is the block's.
                let ok = unsafe { ReadFile(handle(fd.raw), buf, len, ptr::null_mut(), ov) };
                started(ok != 0, last_error())
            }
            OpDesc::Write {
                fd,
                buf,
                len,
                offset,
                ..
            } => {
                set_offset(&mut op.ov, offset);
                op.extra = Extra::File { read: false };
                // SAFETY: as for the read.
                let ok = unsafe { WriteFile(handle(fd.raw), buf, len, ptr::null_mut(), ov) };
                started(ok != 0, last_error())
            }
            OpDesc::Recv {
                fd,
                buf,
                len,
                flags,
                ..
            } => {
                op.flags = flags as u32;
                let b = WSABUF { len, buf };
                // SAFETY: Winsock copies the WSABUF before returning; the buffer and the
                // flags word live until the packet.
                let r = unsafe {
                    WSARecv(
                        socket_of(fd.raw),
                        &b,
                        1,
                        ptr::null_mut(),
                        &mut op.flags,
                        ov,
                        None,
                    )
                };
                started(r == 0, wsa_error())
            }
            OpDesc::Send {
                fd,
                buf,
                len,
                flags,
                ..
            } => {
                let b = WSABUF {
                    len,
                    buf: buf.cast_mut(),
                };
                // SAFETY: as for the receive.
                let r = unsafe {
                    WSASend(
                        socket_of(fd.raw),
                        &b,
                        1,
                        ptr::null_mut(),
                        flags as u32,
                        ov,
                        None,
                    )
                };
                started(r == 0, wsa_error())
            }
            OpDesc::RecvMsg { fd, msg, flags } => {
                op.flags = flags;
                // SAFETY: msg is the op's header, valid until the packet.
                let m = unsafe { &*msg };
                op.extra = Extra::RecvFrom {
                    msg,
                    fromlen: m.msg_namelen,
                    // SAFETY: the header's iovecs are valid until the packet.
                    bufs: unsafe { wsabufs(m) },
                };
                let Extra::RecvFrom { fromlen, bufs, .. } = &mut op.extra else {
                    unreachable!()
                };
                // SAFETY: buffers, address and its length word live until the packet.
                let r = unsafe {
                    WSARecvFrom(
                        socket_of(fd.raw),
                        bufs.as_ptr(),
                        bufs.len() as u32,
                        ptr::null_mut(),
                        &mut op.flags,
                        m.msg_name.cast(),
                        fromlen,
                        ov,
                        None,
                    )
                };
                started(r == 0, wsa_error())
            }
            OpDesc::SendMsg { fd, msg, flags } => {
                // SAFETY: msg is the op's header, valid until the packet.
                let m = unsafe { &*msg };
                op.extra = Extra::SendTo {
                    // SAFETY: the header's iovecs are valid until the packet.
                    bufs: unsafe { wsabufs(m) },
                };
                let Extra::SendTo { bufs } = &op.extra else {
                    unreachable!()
                };
                // SAFETY: buffers and address live until the packet.
                let r = unsafe {
                    WSASendTo(
                        socket_of(fd.raw),
                        bufs.as_ptr(),
                        bufs.len() as u32,
                        ptr::null_mut(),
                        flags,
                        m.msg_name.cast_const().cast(),
                        m.msg_namelen,
                        ov,
                        None,
                    )
                };
                started(r == 0, wsa_error())
            }
            OpDesc::Accept { fd, addr, addrlen } => {
                let listener = socket_of(fd.raw);
                // The new socket takes the listener's address family.
                // SAFETY: plain integers; all-zeroes is valid.
                let mut local: SOCKADDR_STORAGE = unsafe { mem::zeroed() };
                let mut len = mem::size_of::<SOCKADDR_STORAGE>() as i32;
                // SAFETY: writes at most `len` bytes into a live local.
                if unsafe {
                    ws::getsockname(
                        listener,
                        (&mut local as *mut SOCKADDR_STORAGE).cast(),
                        &mut len,
                    )
                } != 0
                {
                    return Started::Failed(wsa_error());
                }
                // SAFETY: creates a socket; no pointers.
                let socket = unsafe {
                    WSASocketW(
                        i32::from(local.ss_family),
                        ws::SOCK_STREAM,
                        ws::IPPROTO_TCP,
                        ptr::null(),
                        0,
                        ws::WSA_FLAG_OVERLAPPED | ws::WSA_FLAG_NO_HANDLE_INHERIT,
                    )
                };
                if socket == ws::INVALID_SOCKET {
                    return Started::Failed(wsa_error());
                }
                op.extra = Extra::Accept {
                    listener,
                    socket,
                    buf: Box::new([0; 2 * ACCEPT_ADDR_LEN as usize]),
                    addr,
                    addrlen,
                };
                let Extra::Accept { buf, .. } = &mut op.extra else {
                    unreachable!()
                };
                let mut n = 0u32;
                // SAFETY: the address buffer lives in the block until the packet.
                let ok = unsafe {
                    AcceptEx(
                        listener,
                        socket,
                        buf.as_mut_ptr().cast(),
                        0,
                        ACCEPT_ADDR_LEN,
                        ACCEPT_ADDR_LEN,
                        &mut n,
                        ov,
                    )
                };
                let s = started(ok != 0, wsa_error());
                if let Started::Failed(_) = s {
                    // SAFETY: the new socket is ours and named nowhere else.
                    unsafe { ws::closesocket(socket) };
                    op.extra = Extra::Socket;
                }
                s
            }
            OpDesc::Connect { fd, addr, addrlen } => {
                let s = socket_of(fd.raw);
                // SAFETY: addr points to the op's address, valid until the packet.
                let family = unsafe { (*addr).sa_family };
                if let Err(e) = bind_any(s, family) {
                    return Started::Failed(e);
                }
                let Some(Some(connect)) = connect_ex(s) else {
                    return Started::Failed(ws::WSAEOPNOTSUPP);
                };
                op.extra = Extra::Connect;
                let mut n = 0u32;
                // SAFETY: the address lives until the packet; no data is sent.
                let ok = unsafe { connect(s, addr, addrlen, ptr::null(), 0, &mut n, ov) };
                started(ok != 0, wsa_error())
            }
            // Everything else completes during the push (see `push`).
            _ => Started::Failed(c::EOPNOTSUPP),
        }
    }

    /// The result of a call whose packet came, or that succeeded at once.
    ///
    /// # Safety
    ///
    /// The call has finished (its packet was reaped, or it succeeded at once).
    unsafe fn finish(&mut self, op: &mut Overlapped) -> i32 {
        let mut bytes = 0u32;
        let res = match op.extra {
            Extra::File { read } => {
                // SAFETY: the call finished; no wait.
                if unsafe { GetOverlappedResult(handle(op.fd), &op.ov, &mut bytes, 0) } != 0 {
                    bytes as i32
                } else {
                    match last_error() {
                        e if read
                            && (e == ERROR_HANDLE_EOF as i32 || e == ERROR_BROKEN_PIPE as i32) =>
                        {
                            0
                        }
                        e => -e,
                    }
                }
            }
            _ => {
                let mut flags = 0u32;
                // SAFETY: the call finished; no wait.
                let ok = unsafe {
                    WSAGetOverlappedResult(socket_of(op.fd), &op.ov, &mut bytes, 0, &mut flags)
                } != 0;
                match (ok, wsa_error()) {
                    (true, _) => bytes as i32,
                    // A datagram longer than the buffer: truncated, as recvmsg(2) does.
                    (false, ws::WSAEMSGSIZE) if matches!(op.extra, Extra::RecvFrom { .. }) => {
                        bytes as i32
                    }
                    (false, e) => -e,
                }
            }
        };
        // SAFETY: the call finished with what the block kept for it.
        unsafe { self.after(op, res) }
    }

    /// What a finished call still has to do with its result: an accept's socket and
    /// addresses, a connect's context, a datagram's address length.
    ///
    /// # Safety
    ///
    /// As [`Iocp::finish`].
    unsafe fn after(&mut self, op: &mut Overlapped, res: i32) -> i32 {
        match &mut op.extra {
            Extra::Accept {
                listener,
                socket,
                buf,
                addr,
                addrlen,
            } => {
                let socket = mem::replace(socket, ws::INVALID_SOCKET);
                if res < 0 {
                    // SAFETY: the socket is ours; the failed accept does not hold it.
                    unsafe { ws::closesocket(socket) };
                    return res;
                }
                // SAFETY: passes the listener's SOCKET by pointer and size, as documented.
                unsafe {
                    ws::setsockopt(
                        socket,
                        ws::SOL_SOCKET,
                        ws::SO_UPDATE_ACCEPT_CONTEXT,
                        (listener as *const SOCKET).cast(),
                        mem::size_of::<SOCKET>() as i32,
                    )
                };
                if !addr.is_null() {
                    let (mut local, mut remote) = (ptr::null_mut::<SOCKADDR>(), ptr::null_mut());
                    let (mut llen, mut rlen) = (0i32, 0i32);
                    // SAFETY: parses the buffer AcceptEx filled, with the sizes it was given.
                    unsafe {
                        GetAcceptExSockaddrs(
                            buf.as_ptr().cast(),
                            0,
                            ACCEPT_ADDR_LEN,
                            ACCEPT_ADDR_LEN,
                            &mut local,
                            &mut llen,
                            &mut remote,
                            &mut rlen,
                        )
                    };
                    if !remote.is_null() {
                        // SAFETY: addr has room for *addrlen bytes (the description's
                        // contract); remote points to rlen bytes inside buf.
                        unsafe {
                            let n = rlen.min(**addrlen).max(0) as usize;
                            ptr::copy_nonoverlapping(remote.cast::<u8>(), addr.cast::<u8>(), n);
                            **addrlen = rlen;
                        }
                    }
                }
                match raw_from(socket as isize) {
                    Ok(fd) => fd,
                    Err(_) => {
                        // SAFETY: ours, and named nowhere else.
                        unsafe { ws::closesocket(socket) };
                        -c::EIO
                    }
                }
            }
            Extra::Connect if res >= 0 => {
                // SAFETY: no option value.
                unsafe {
                    ws::setsockopt(
                        socket_of(op.fd),
                        ws::SOL_SOCKET,
                        ws::SO_UPDATE_CONNECT_CONTEXT,
                        ptr::null(),
                        0,
                    )
                };
                0
            }
            Extra::RecvFrom { msg, fromlen, .. } if res >= 0 => {
                // SAFETY: the header is the op's, valid until the completion is handed on.
                unsafe { (**msg).msg_namelen = *fromlen };
                res
            }
            _ => res,
        }
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
}

/// An offset as the OVERLAPPED carries it.
fn set_offset(ov: &mut OVERLAPPED, offset: u64) {
    ov.Anonymous.Anonymous.Offset = offset as u32;
    ov.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
}

/// The iovecs of a header as Winsock buffers.
///
/// # Safety
///
/// `m.msg_iov` points to `m.msg_iovlen` valid iovecs.
unsafe fn wsabufs(m: &c::msghdr) -> Vec<WSABUF> {
    // SAFETY: per the caller.
    let iov = unsafe { std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen) };
    iov.iter()
        .map(|v| WSABUF {
            len: u32::try_from(v.iov_len).unwrap_or(u32::MAX),
            buf: v.iov_base.cast(),
        })
        .collect()
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
                OpDesc::Shutdown { fd, how } => {
                    // SAFETY: no pointers.
                    let r = unsafe { ws::shutdown(socket_of(fd.raw), how) };
                    let res = if r == 0 { 0 } else { -wsa_error() };
                    self.now(key, res, inline)
                }
                OpDesc::Close { fd } => {
                    self.attached.remove(&fd);
                    let res = close(fd);
                    self.now(key, res, inline)
                }
                OpDesc::RecvMulti { .. } => {
                    unreachable!("coring: a multishot receive reached the IOCP backend")
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
        let mut op = Box::new(Overlapped {
            // SAFETY: OVERLAPPED is plain integers and pointers; zero is its start state.
            ov: unsafe { mem::zeroed() },
            key,
            fd: fd.raw,
            flags: 0,
            extra: Extra::Socket,
        });
        // SAFETY: the description's memory stays valid until the packet (the driver's
        // contract); the block is kept in `ops` until then, and its heap address does not
        // change when the box moves.
        match unsafe { self.start(&mut op, desc) } {
            Started::Pending => {
                self.ops.insert(key, op);
                Ok(Push::Queued)
            }
            Started::Done if !skip => {
                self.ops.insert(key, op);
                Ok(Push::Queued)
            }
            Started::Done => {
                // SAFETY: the call succeeded at once and posts no packet.
                let res = unsafe { self.finish(&mut op) };
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
                let res = unsafe { self.after(&mut op, full.min(i32::MAX as u64) as i32) };
                Ok(self.now(key, res, inline))
            }
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
            // A pool job runs to its end; anything else completed during its push.
            None => self.offload.cancel(key),
        }
        Ok(Enqueued::Yes)
    }

    fn enter(&mut self, wait: Wait) -> io::Result<()> {
        let have = !self.ready.is_empty() || self.offload.has_completions();
        let timeout = match wait {
            _ if have => 0,
            // Nothing can have arrived: no call is in the kernel, and a pool job's end
            // is seen through `has_completions` (its wake packet is taken by a later wait).
            Wait::No if self.ops.is_empty() => return Ok(()),
            Wait::No => 0,
            Wait::Park(None) => u32::MAX, // INFINITE
            Wait::Park(Some(d)) => millis_up(d),
        };
        let mut n = 0u32;
        // SAFETY: fills at most entries.len() live entries.
        let ok = unsafe {
            GetQueuedCompletionStatusEx(
                self.port.0,
                self.entries.as_mut_ptr(),
                self.entries.len() as u32,
                &mut n,
                timeout,
                0,
            )
        };
        if ok == 0 {
            let e = last_error();
            if e != WAIT_TIMEOUT as i32 {
                return Err(io::Error::from_raw_os_error(e));
            }
            n = 0;
        }
        self.filled = n as usize;
        Ok(())
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
            // SAFETY: every packet with an OVERLAPPED is one of our blocks (the first
            // field is the OVERLAPPED), alive in `ops` until removed below.
            let key = unsafe { (*e.lpOverlapped.cast::<Overlapped>()).key };
            let Some(mut op) = self.ops.remove(key) else {
                debug_assert!(false, "coring: a completion packet for unknown key {key}");
                continue;
            };
            // SAFETY: the packet came: the call has finished.
            let res = unsafe { self.finish(&mut op) };
            sink(key, Completion { res, flags: 0 });
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
        for op in self.ops.drain() {
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
