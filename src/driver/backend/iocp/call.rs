//! One overlapped call: its heap block ([`Overlapped`]), starting it ([`start`]) and
//! reading its result ([`finish`]), with what an accept, a connect or a datagram receive
//! still has to do once it has finished ([`after`]).

use std::mem;
use std::ptr;
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_BROKEN_PIPE, ERROR_HANDLE_EOF, ERROR_IO_PENDING,
};
use windows_sys::Win32::Networking::WinSock::{
    self as ws, AcceptEx, GetAcceptExSockaddrs, WSAGetLastError, WSAGetOverlappedResult, WSAIoctl,
    WSARecv, WSARecvFrom, WSASend, WSASendTo, WSASocketW, SOCKADDR, SOCKADDR_STORAGE, SOCKET,
    WSABUF,
};
use windows_sys::Win32::Storage::FileSystem::{ReadFile, WriteFile};
use windows_sys::Win32::System::IO::{GetOverlappedResult, OVERLAPPED};

use crate::driver::OpDesc;
use crate::platform::windows::{handle, raw_from, socket_of};
use crate::platform::{c, RawFd};

/// Room `AcceptEx` needs for each address it writes.
const ACCEPT_ADDR_LEN: u32 = mem::size_of::<SOCKADDR_STORAGE>() as u32 + 16;

/// What a call needs beyond its OVERLAPPED, until its packet.
pub(super) enum Extra {
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
pub(super) struct Overlapped {
    /// First: the pointer a packet carries is this block's.
    pub(super) ov: OVERLAPPED,
    pub(super) key: usize,
    pub(super) fd: RawFd,
    /// `WSARecv`/`WSARecvFrom` flags, which the call may write.
    pub(super) flags: u32,
    /// A stream send counted in `SendOrder` until its packet.
    pub(super) ordered: bool,
    /// A send cancelled by a `shutdown(Both)` of its socket: it ends with a broken pipe.
    pub(super) aborted: bool,
    pub(super) extra: Extra,
}

impl Overlapped {
    /// A block for call `key` on `fd`.
    pub(super) fn new(key: usize, fd: RawFd) -> Box<Overlapped> {
        Box::new(Overlapped {
            // SAFETY: OVERLAPPED is plain integers and pointers; zero is its start state.
            ov: unsafe { mem::zeroed() },
            key,
            fd,
            flags: 0,
            ordered: false,
            aborted: false,
            extra: Extra::Socket,
        })
    }

    /// Whether the call has finished (`HasOverlappedIoCompleted`): its status is no longer
    /// `STATUS_PENDING`. The kernel writes it, so it is read as such.
    pub(super) fn finished(&self) -> bool {
        const STATUS_PENDING: usize = 0x103;
        // SAFETY: reads a field of a live block.
        unsafe { ptr::read_volatile(&self.ov.Internal) != STATUS_PENDING }
    }
}

/// How a call started.
pub(super) enum Started {
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

pub(super) fn last_error() -> i32 {
    // SAFETY: no arguments.
    unsafe { GetLastError() as i32 }
}

pub(super) fn wsa_error() -> i32 {
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

/// Which way a stream call moves bytes.
#[derive(Clone, Copy)]
enum Stream {
    Recv,
    Send,
}

/// Starts `WSARecv` or `WSASend` of one buffer on `s` in `op`. A receive's flags go in
/// the block's flags word, which the call may write back until the packet; a send's are
/// passed as they are.
///
/// # Safety
///
/// `buf` is valid for `len` bytes until the call's packet is reaped; `op` is the block that
/// stays alive (at a fixed address) until then.
unsafe fn stream_call(
    op: &mut Overlapped,
    way: Stream,
    s: SOCKET,
    buf: *mut u8,
    len: u32,
    flags: u32,
) -> Started {
    let ov: *mut OVERLAPPED = &mut op.ov;
    let b = WSABUF { len, buf };
    // SAFETY: Winsock copies the WSABUF before returning; the buffer (this function's
    // contract) and the block's flags word live until the packet.
    let r = unsafe {
        match way {
            Stream::Recv => {
                op.flags = flags;
                WSARecv(s, &b, 1, ptr::null_mut(), &mut op.flags, ov, None)
            }
            Stream::Send => WSASend(s, &b, 1, ptr::null_mut(), flags, ov, None),
        }
    };
    started(r == 0, wsa_error())
}

/// Starts the overlapped call of `desc` in `op`.
///
/// # Safety
///
/// The pointers in `desc` are valid until the call's packet is reaped; `op` is the
/// block that stays alive (at a fixed address) until then.
pub(super) unsafe fn start(op: &mut Overlapped, desc: &OpDesc) -> Started {
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
            // SAFETY: buf is valid for len bytes until the packet (the caller's contract).
            unsafe { stream_call(op, Stream::Recv, socket_of(fd.raw), buf, len, flags as u32) }
        }
        OpDesc::Send {
            fd,
            buf,
            len,
            flags,
            ..
        } => {
            let buf = buf.cast_mut();
            // SAFETY: as for the receive (a send only reads the buffer).
            unsafe { stream_call(op, Stream::Send, socket_of(fd.raw), buf, len, flags as u32) }
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
        OpDesc::SendMsg { fd, msg, flags, .. } => {
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
pub(super) unsafe fn finish(op: &mut Overlapped) -> i32 {
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
                // A send after the write side was shut down, or one a shutdown(Both)
                // aborted: a broken pipe, as EPIPE on Unix.
                (false, ws::WSAESHUTDOWN) => -(ERROR_BROKEN_PIPE as i32),
                (false, ws::WSA_OPERATION_ABORTED) if op.aborted => -(ERROR_BROKEN_PIPE as i32),
                // A datagram longer than the buffer: truncated, as recvmsg(2) does.
                (false, ws::WSAEMSGSIZE) if matches!(op.extra, Extra::RecvFrom { .. }) => {
                    bytes as i32
                }
                (false, e) => -e,
            }
        }
    };
    // SAFETY: the call finished with what the block kept for it.
    unsafe { after(op, res) }
}

/// What a finished call still has to do with its result: an accept's socket and
/// addresses, a connect's context, a datagram's address length.
///
/// # Safety
///
/// As [`finish`].
pub(super) unsafe fn after(op: &mut Overlapped, res: i32) -> i32 {
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
