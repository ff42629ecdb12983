//! Windows: handles and sockets as `RawFd`, the C names the shared code uses (`c`), and the
//! socket and file helpers, on Win32 and Winsock.
//!
//! # Handles as `RawFd`
//!
//! The shared code names every open file and socket by an `i32`, as on Unix. On Windows
//! that number is the handle (`HANDLE`) or socket (`SOCKET`) value: Windows keeps kernel
//! handle values within 32 bits so that 32- and 64-bit processes can share them, and
//! sign-extending one back gives the original value ([`handle`], [`socket_of`]). A value
//! that would not fit (never seen) is refused with an error when it enters coring
//! ([`raw_from`]).
//!
//! # Error codes
//!
//! Completions carry `-code`, where `code` is a Win32 (or Winsock) error: the value
//! `io::Error::from_raw_os_error` expects on Windows, so messages and `ErrorKind`s are the
//! system's. The `E*` names in [`c`] are the Win32 codes for what the shared code means by
//! them (`ECANCELED` is `ERROR_OPERATION_ABORTED`, what `CancelIoEx` ends an operation
//! with).
//!
//! # Open flags, `AT_*`, `S_IF*`
//!
//! The descriptions the shared code builds carry Unix open flags and file-type bits; [`c`]
//! gives them Linux's values, and the Windows executor (`driver/syscall_windows.rs`)
//! translates them into `CreateFileW` arguments. Paths are resolved from the current
//! directory ([`c::AT_FDCWD`]); opens also from a directory handle (a relative
//! `NtCreateFile`, for `open_beneath`).

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Networking::WinSock;

use super::FileStat;
use crate::fs::DioAlignment;

/// An open handle or socket, by its value (see the module docs).
pub(crate) type RawFd = i32;

/// The handle `fd` names.
#[inline]
pub(crate) fn handle(fd: RawFd) -> HANDLE {
    fd as isize as HANDLE
}

/// The socket `fd` names.
#[inline]
pub(crate) fn socket_of(fd: RawFd) -> WinSock::SOCKET {
    fd as isize as usize
}

/// The `RawFd` of a handle or socket value, if it fits (see the module docs).
pub(crate) fn raw_from(value: isize) -> io::Result<RawFd> {
    RawFd::try_from(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("handle value {value:#x} does not fit in 32 bits; coring cannot name it"),
        )
    })
}

/// The C names the shared code uses, with Windows values (see the module docs).
#[allow(non_camel_case_types)]
pub(crate) mod c {
    use windows_sys::Win32::Foundation as f;
    use windows_sys::Win32::Networking::WinSock as ws;

    pub(crate) use libc::{c_char, c_int, c_void};

    /// An address length, as Winsock takes it.
    pub(crate) type socklen_t = i32;
    /// File-type and permission bits (Unix meaning).
    pub(crate) type mode_t = u32;
    pub(crate) type sockaddr_storage = ws::SOCKADDR_STORAGE;
    pub(crate) type sockaddr = ws::SOCKADDR;

    /// One buffer of a vectored operation (the same shape as Unix's `iovec`).
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct iovec {
        pub(crate) iov_base: *mut c_void,
        pub(crate) iov_len: usize,
    }

    /// An addressed datagram operation, shaped like Unix's `msghdr`: the IOCP backend
    /// turns it into `WSASendTo`/`WSARecvFrom` arguments.
    #[repr(C)]
    #[derive(Debug)]
    pub(crate) struct msghdr {
        pub(crate) msg_name: *mut c_void,
        pub(crate) msg_namelen: socklen_t,
        pub(crate) msg_iov: *mut iovec,
        pub(crate) msg_iovlen: usize,
        pub(crate) msg_flags: c_int,
    }

    // Errors: the Win32 codes for what the shared code means (see the module docs).
    pub(crate) const ECANCELED: i32 = f::ERROR_OPERATION_ABORTED as i32;
    pub(crate) const EINVAL: i32 = f::ERROR_INVALID_PARAMETER as i32;
    pub(crate) const EIO: i32 = f::ERROR_IO_DEVICE as i32;
    pub(crate) const ENOSPC: i32 = f::ERROR_DISK_FULL as i32;
    pub(crate) const EAGAIN: i32 = ws::WSAEWOULDBLOCK;
    pub(crate) const EINTR: i32 = ws::WSAEINTR;
    pub(crate) const ENOBUFS: i32 = ws::WSAENOBUFS;
    pub(crate) const EOPNOTSUPP: i32 = f::ERROR_NOT_SUPPORTED as i32;
    pub(crate) const EBUSY: i32 = f::ERROR_BUSY as i32;
    pub(crate) const EPIPE: i32 = f::ERROR_BROKEN_PIPE as i32;
    /// The call does not exist here (`openat2`).
    pub(crate) const ENOSYS: i32 = f::ERROR_CALL_NOT_IMPLEMENTED as i32;
    /// A path leads outside where it must stay.
    pub(crate) const EXDEV: i32 = f::ERROR_NOT_SAME_DEVICE as i32;
    /// A link (reparse point) where none may be followed (`O_NOFOLLOW`).
    pub(crate) const ELOOP: i32 = f::ERROR_CANT_RESOLVE_FILENAME as i32;
    /// Not a directory where one is needed (`O_DIRECTORY`).
    pub(crate) const ENOTDIR: i32 = f::ERROR_DIRECTORY as i32;

    // Open flags, with Linux's values (translated by the executor).
    pub(crate) const O_RDONLY: i32 = 0;
    pub(crate) const O_WRONLY: i32 = 1;
    pub(crate) const O_RDWR: i32 = 2;
    pub(crate) const O_ACCMODE: i32 = 3;
    pub(crate) const O_CREAT: i32 = 0o100;
    pub(crate) const O_EXCL: i32 = 0o200;
    pub(crate) const O_TRUNC: i32 = 0o1000;
    pub(crate) const O_APPEND: i32 = 0o2000;
    pub(crate) const O_NONBLOCK: i32 = 0o4000;
    pub(crate) const O_CLOEXEC: i32 = 0o2000000;
    /// Direct IO: `FILE_FLAG_NO_BUFFERING` (write-through is not implied). Linux's x86
    /// value, which no other flag here shares.
    pub(crate) const O_DIRECT: i32 = 0o40000;
    /// Refuse a final reparse point (symbolic link, junction) instead of following it.
    pub(crate) const O_NOFOLLOW: i32 = 0o400000;
    /// Open only a directory.
    pub(crate) const O_DIRECTORY: i32 = 0o200000;

    /// The current directory, the only directory paths are resolved against.
    pub(crate) const AT_FDCWD: i32 = -100;
    pub(crate) const AT_SYMLINK_NOFOLLOW: i32 = 0x100;
    pub(crate) const AT_REMOVEDIR: i32 = 0x200;

    // File types, with Unix's values.
    pub(crate) const S_IFDIR: mode_t = 0o040000;
    pub(crate) const S_IFREG: mode_t = 0o100000;
    pub(crate) const S_IFLNK: mode_t = 0o120000;
    pub(crate) const S_IFIFO: mode_t = 0o010000;
    pub(crate) const S_IFSOCK: mode_t = 0o140000;
    pub(crate) const S_IFBLK: mode_t = 0o060000;
    pub(crate) const S_IFCHR: mode_t = 0o020000;

    pub(crate) const SHUT_RD: i32 = ws::SD_RECEIVE;
    pub(crate) const SHUT_WR: i32 = ws::SD_SEND;
    pub(crate) const SHUT_RDWR: i32 = ws::SD_BOTH;

    pub(crate) const AF_INET: i32 = ws::AF_INET as i32;
    pub(crate) const AF_INET6: i32 = ws::AF_INET6 as i32;
    pub(crate) const SOCK_STREAM: i32 = ws::SOCK_STREAM;
}

/// A std type built from a handle or socket it takes over, named the same on every
/// platform.
pub(crate) trait FromRaw {
    /// # Safety
    ///
    /// `fd` must be open and owned by nobody else.
    unsafe fn from_raw(fd: RawFd) -> Self;
    /// Gives the handle up.
    ///
    /// # Errors
    ///
    /// Its value does not fit a `RawFd` (it is closed then).
    fn into_raw(self) -> RawFd;
}

macro_rules! from_raw_socket {
    ($($ty:ty),*) => {$(
        impl FromRaw for $ty {
            unsafe fn from_raw(fd: RawFd) -> $ty {
                use std::os::windows::io::FromRawSocket;
                // SAFETY: forwarded from the caller.
                unsafe { <$ty>::from_raw_socket(socket_of(fd) as u64) }
            }
            fn into_raw(self) -> RawFd {
                use std::os::windows::io::IntoRawSocket;
                // Socket values fit (see the module docs); truncation keeps the value.
                self.into_raw_socket() as isize as RawFd
            }
        }
    )*};
}
from_raw_socket!(
    std::net::TcpStream,
    std::net::TcpListener,
    std::net::UdpSocket
);

impl FromRaw for std::fs::File {
    unsafe fn from_raw(fd: RawFd) -> std::fs::File {
        use std::os::windows::io::FromRawHandle;
        // SAFETY: forwarded from the caller.
        unsafe { std::fs::File::from_raw_handle(handle(fd)) }
    }
    fn into_raw(self) -> RawFd {
        use std::os::windows::io::IntoRawHandle;
        self.into_raw_handle() as isize as RawFd
    }
}

/// Flags of every send: Windows raises no signal on a closed peer.
pub(crate) const SEND_FLAGS: i32 = 0;

/// A stat description's buffer: the executor fills the portable form directly.
pub(crate) type Stat = FileStat;
/// `flags` bit of a stat description that asks about `dirfd` itself.
pub(crate) const STAT_EMPTY_PATH: i32 = 1 << 30;
/// Unused on Windows (everything is always reported).
pub(crate) const STAT_MASK: u32 = 0;

/// A stat buffer for the executor to fill.
pub(crate) fn empty_stat() -> Stat {
    FileStat {
        size: 0,
        kind: 0,
        perm: 0,
        ino: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        blksize: 0,
        blocks: 0,
        modified: None,
        accessed: None,
        created: None,
    }
}

/// The portable form of a filled stat buffer.
pub(crate) fn file_stat(st: &Stat) -> FileStat {
    *st
}

/// The open flag of direct IO (`FILE_FLAG_NO_BUFFERING`, see [`c::O_DIRECT`]).
pub(crate) const O_DIRECT: i32 = c::O_DIRECT;

/// Readies a handle opened with [`O_DIRECT`] for direct IO: nothing more on Windows.
pub(crate) fn set_direct(_fd: RawFd) -> io::Result<()> {
    Ok(())
}

/// The device of the file system that holds `fd`: 0 (unknown) on Windows, which has no
/// polled IO for it to matter to (see `driver::iopoll`).
pub(crate) fn device_of(_fd: RawFd) -> u64 {
    0
}

/// Whether `fd` was opened for direct IO. Not asked on Windows (it would take
/// `NtQueryInformationFile`): `false`, so a `File` made from a handle opened without
/// buffering elsewhere is not checked by coring (Windows still refuses misaligned IO).
pub(crate) fn is_direct(_fd: RawFd) -> bool {
    false
}

/// What unbuffered IO on `fd` needs: the volume's logical sector size for both buffer
/// addresses and offsets/lengths (`GetFileInformationByHandleEx(FileStorageInfo)`), or
/// 4096 where the call fails (Wine does not implement the class).
pub(crate) fn dio_alignment(fd: RawFd) -> io::Result<DioAlignment> {
    use windows_sys::Win32::Storage::FileSystem::{
        FileStorageInfo, GetFileInformationByHandleEx, FILE_STORAGE_INFO,
    };
    // SAFETY: plain integers; all-zeroes is valid.
    let mut info: FILE_STORAGE_INFO = unsafe { mem::zeroed() };
    // SAFETY: info is a live local of the class it names, passed with its size.
    let ok = unsafe {
        GetFileInformationByHandleEx(
            handle(fd),
            FileStorageInfo,
            (&mut info as *mut FILE_STORAGE_INFO).cast(),
            mem::size_of::<FILE_STORAGE_INFO>() as u32,
        )
    };
    let sector = info.LogicalBytesPerSector;
    if ok == 0 || sector == 0 {
        return Ok(DioAlignment::fallback());
    }
    Ok(DioAlignment::new(sector, sector))
}

/// Open flags of one directory on the way when a path is walked component by component
/// (`open_beneath`: Windows has no `openat2`): a directory, for reading, not a reparse
/// point.
pub(crate) const OPEN_DIR_STEP: i32 = c::O_RDONLY | c::O_DIRECTORY | c::O_NOFOLLOW;

/// Whether an open with `flags` may create a file (`O_CREAT`).
pub(crate) fn open_creates(flags: i32) -> bool {
    flags & c::O_CREAT != 0
}

/// Why a `fallocate` mode cannot run here: never (the executor maps every mode onto
/// Windows' calls).
pub(crate) fn unsupported_allocate_mode(_mode: i32) -> Option<&'static str> {
    None
}

/// Why rename flags cannot run here: Windows can refuse to replace (`MoveFileExW` without
/// `MOVEFILE_REPLACE_EXISTING`) but not exchange two paths.
pub(crate) fn unsupported_rename_flags(flags: u32) -> Option<&'static str> {
    (flags & super::fsabi::RENAME_EXCHANGE != 0).then_some(
        "Windows has no atomic exchange of two paths: RenameFlags::exchange is unsupported \
         (no_replace is)",
    )
}

/// Overlapped IO never blocks the runtime whatever a handle's mode, so coring leaves the
/// mode as it is.
pub(crate) fn set_nonblocking(_fd: RawFd, _on: bool) -> io::Result<()> {
    Ok(())
}

/// The last Winsock error.
pub(crate) fn wsa_error() -> io::Error {
    // SAFETY: no arguments.
    io::Error::from_raw_os_error(unsafe { WinSock::WSAGetLastError() })
}

/// A new overlapped, non-inheritable socket of `domain` and `ty`.
pub(crate) fn socket(domain: i32, ty: i32) -> io::Result<RawFd> {
    let socket =
        socket2::Socket::new(socket2::Domain::from(domain), socket2::Type::from(ty), None)?;
    use std::os::windows::io::IntoRawSocket;
    let raw = socket.into_raw_socket() as usize as isize;
    raw_from(raw).inspect_err(|_| {
        // SAFETY: the socket was ours and is not named anywhere else.
        unsafe { WinSock::closesocket(raw as usize) };
    })
}

/// Writes the Winsock form of an IP socket address into `storage`; returns its length.
pub(crate) fn ip_to_raw(addr: &SocketAddr, storage: &mut c::sockaddr_storage) -> c::socklen_t {
    let p = storage as *mut c::sockaddr_storage;
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: SOCKADDR_STORAGE is large and aligned enough for SOCKADDR_IN.
            let sin = unsafe { &mut *p.cast::<WinSock::SOCKADDR_IN>() };
            sin.sin_family = WinSock::AF_INET;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = WinSock::IN_ADDR {
                S_un: WinSock::IN_ADDR_0 {
                    S_addr: u32::from_ne_bytes(a.ip().octets()),
                },
            };
            mem::size_of::<WinSock::SOCKADDR_IN>() as c::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: SOCKADDR_STORAGE is large and aligned enough for SOCKADDR_IN6.
            let sin6 = unsafe { &mut *p.cast::<WinSock::SOCKADDR_IN6>() };
            sin6.sin6_family = WinSock::AF_INET6;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = WinSock::IN6_ADDR {
                u: WinSock::IN6_ADDR_0 {
                    Byte: a.ip().octets(),
                },
            };
            sin6.Anonymous = WinSock::SOCKADDR_IN6_0 {
                sin6_scope_id: a.scope_id(),
            };
            mem::size_of::<WinSock::SOCKADDR_IN6>() as c::socklen_t
        }
    }
}

/// Reads an IP socket address back from its Winsock form.
pub(crate) fn ip_from_raw(storage: &c::sockaddr_storage) -> io::Result<SocketAddr> {
    let p = storage as *const c::sockaddr_storage;
    match storage.ss_family {
        WinSock::AF_INET => {
            // SAFETY: the family says the storage holds a SOCKADDR_IN.
            let sin = unsafe { &*p.cast::<WinSock::SOCKADDR_IN>() };
            // SAFETY: every view of the IN_ADDR union is plain bytes.
            let ip = Ipv4Addr::from(unsafe { sin.sin_addr.S_un.S_addr }.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        WinSock::AF_INET6 => {
            // SAFETY: the family says the storage holds a SOCKADDR_IN6.
            let sin6 = unsafe { &*p.cast::<WinSock::SOCKADDR_IN6>() };
            // SAFETY: every view of these unions is plain integers.
            let (bytes, scope) = unsafe { (sin6.sin6_addr.u.Byte, sin6.Anonymous.sin6_scope_id) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(bytes),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                scope,
            )))
        }
        family => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected address family {family} for an IP socket"),
        )),
    }
}

/// Readies a TCP socket for listening. Windows has no `SO_REUSEPORT` (its `SO_REUSEADDR`
/// lets another socket steal the port, so coring sets neither): `reuseport` is refused.
pub(crate) fn prepare_listener(_fd: RawFd, reuseport: bool) -> io::Result<()> {
    if reuseport {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Windows has no SO_REUSEPORT: listeners cannot share a port; accept on one \
             listener and hand connections to other cores instead",
        ));
    }
    Ok(())
}

/// Sets or clears `TCP_NODELAY`.
pub(crate) fn set_nodelay(fd: RawFd, on: bool) -> io::Result<()> {
    let value = i32::from(on);
    // SAFETY: passes a pointer to a live i32 and its size.
    let r = unsafe {
        WinSock::setsockopt(
            socket_of(fd),
            WinSock::IPPROTO_TCP,
            WinSock::TCP_NODELAY,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as i32,
        )
    };
    if r != 0 {
        return Err(wsa_error());
    }
    Ok(())
}

/// Binds `fd` to the `len` bytes of address at `addr` and listens, with a backlog of 1024.
pub(crate) fn bind_listen(
    fd: RawFd,
    addr: *const c::sockaddr,
    len: c::socklen_t,
) -> io::Result<()> {
    // SAFETY: the caller passes a valid address of `len` bytes.
    if unsafe { WinSock::bind(socket_of(fd), addr, len) } != 0 {
        return Err(wsa_error());
    }
    // SAFETY: listen on a socket the caller owns; no pointers.
    if unsafe { WinSock::listen(socket_of(fd), 1024) } != 0 {
        return Err(wsa_error());
    }
    Ok(())
}

/// A handle to the same file for std, which does synchronous IO. coring opens disk files
/// for overlapped IO, where std's reads without an offset fail, and Windows cannot switch
/// an open handle's mode: a disk file is opened again through the handle (`ReOpenFile`)
/// with the widest access the handle allows among read+write, read, read+append, append,
/// write, and `fd` is closed. Anything else (a pipe, whose reopening would connect anew;
/// a disk file the reopen fails for) is handed over as it is: std waits for its pending
/// calls itself.
pub(crate) fn file_for_std(fd: RawFd) -> RawFd {
    use windows_sys::Win32::Foundation::{GENERIC_READ, GENERIC_WRITE, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::Storage::FileSystem::{
        GetFileType, ReOpenFile, FILE_APPEND_DATA, FILE_FLAG_BACKUP_SEMANTICS, FILE_GENERIC_READ,
        FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_TYPE_DISK, SYNCHRONIZE,
    };
    // SAFETY: no pointers.
    if unsafe { GetFileType(handle(fd)) } != FILE_TYPE_DISK {
        return fd;
    }
    let accesses = [
        GENERIC_READ | GENERIC_WRITE,
        GENERIC_READ,
        FILE_GENERIC_READ | FILE_APPEND_DATA,
        FILE_APPEND_DATA | SYNCHRONIZE,
        GENERIC_WRITE,
    ];
    for access in accesses {
        // SAFETY: reopens a live handle we own; no pointers.
        let h = unsafe {
            ReOpenFile(
                handle(fd),
                access,
                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                FILE_FLAG_BACKUP_SEMANTICS,
            )
        };
        if h == INVALID_HANDLE_VALUE {
            continue;
        }
        match raw_from(h as isize) {
            Ok(new) => {
                close(fd);
                return new;
            }
            Err(_) => {
                // SAFETY: the new handle is ours and named nowhere else.
                unsafe { windows_sys::Win32::Foundation::CloseHandle(h) };
                return fd;
            }
        }
    }
    fd
}

/// Starts Winsock for the process once (closing a handle asks Winsock first whether it is
/// a socket, which needs it even where no socket was ever made). Never undone: the process
/// may use sockets until it exits.
pub(crate) fn winsock_init() -> io::Result<()> {
    static INIT: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    let r = *INIT.get_or_init(|| {
        // SAFETY: plain integers and byte arrays; all-zeroes is valid for the output.
        let mut data: WinSock::WSADATA = unsafe { mem::zeroed() };
        // SAFETY: asks for Winsock 2.2 into a live local.
        unsafe { WinSock::WSAStartup(0x202, &mut data) }
    });
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Closes `fd`, a socket or any other handle: `closesocket` first, `CloseHandle` if it is
/// not a socket. Returns 0 or `-code`.
pub(crate) fn close(fd: RawFd) -> i32 {
    // SAFETY: the caller owns `fd` and names it nowhere after this call.
    if unsafe { WinSock::closesocket(socket_of(fd)) } == 0 {
        return 0;
    }
    // SAFETY: no arguments.
    let e = unsafe { WinSock::WSAGetLastError() };
    if e != WinSock::WSAENOTSOCK && e != WinSock::WSANOTINITIALISED {
        return -e;
    }
    // SAFETY: as above; not a socket, so a plain handle.
    if unsafe { windows_sys::Win32::Foundation::CloseHandle(handle(fd)) } != 0 {
        return 0;
    }
    -(io::Error::last_os_error().raw_os_error().unwrap_or(c::EIO))
}
