//! What every Unix platform shares: the C names (`c`, which is `libc` itself), descriptors
//! as `RawFd`, and the socket helpers whose calls agree across Unix kernels.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

pub(crate) use libc as c;
pub(crate) use std::os::fd::RawFd;

use super::{set_sockaddr_len, Stat};

/// A stat buffer for the kernel to fill.
pub(crate) fn empty_stat() -> Stat {
    // SAFETY: Stat (struct statx or struct stat) is a plain C struct of integers, for
    // which all-zeroes is valid.
    unsafe { mem::zeroed() }
}

/// A std type built from a descriptor it takes over (`FromRawFd`), named the same on every
/// platform (Windows builds sockets and files from handles).
pub(crate) trait FromRaw {
    /// # Safety
    ///
    /// `fd` must be open and owned by nobody else.
    unsafe fn from_raw(fd: RawFd) -> Self;
    /// Gives the descriptor up.
    fn into_raw(self) -> RawFd;
}

impl<T: std::os::fd::FromRawFd + std::os::fd::IntoRawFd> FromRaw for T {
    unsafe fn from_raw(fd: RawFd) -> T {
        // SAFETY: forwarded from the caller.
        unsafe { T::from_raw_fd(fd) }
    }
    fn into_raw(self) -> RawFd {
        self.into_raw_fd()
    }
}

/// Sets or clears `O_NONBLOCK` on `fd`, reading the flags first and changing nothing if
/// they already agree (so a descriptor that ignores the flag and refuses F_SETFL, such as
/// an O_PATH one, is left alone).
pub(crate) fn set_nonblocking(fd: libc::c_int, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; no pointers involved.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let want = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if want != flags {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, want) })?;
    }
    Ok(())
}

/// An `int` socket option of `fd` (`getsockopt(fd, SOL_SOCKET, name)`).
pub(crate) fn socket_option(fd: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are live locals; len holds value's size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    cvt(r).map(|_| value)
}

/// A C-style return value (`-1` and `errno` on failure) as a `Result`.
pub(super) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Writes the kernel form of an IP socket address into `storage`; returns its length.
pub(crate) fn ip_to_raw(addr: &SocketAddr, storage: &mut c::sockaddr_storage) -> c::socklen_t {
    let p = storage as *mut c::sockaddr_storage;
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *p.cast::<c::sockaddr_in>() };
            sin.sin_family = c::AF_INET as c::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = c::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            mem::size_of::<c::sockaddr_in>() as c::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *p.cast::<c::sockaddr_in6>() };
            sin6.sin6_family = c::AF_INET6 as c::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = c::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<c::sockaddr_in6>() as c::socklen_t
        }
    };
    set_sockaddr_len(storage, len);
    len
}

/// Reads an IP socket address back from its kernel form.
pub(crate) fn ip_from_raw(storage: &c::sockaddr_storage) -> io::Result<SocketAddr> {
    let p = storage as *const c::sockaddr_storage;
    match storage.ss_family as i32 {
        c::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*p.cast::<c::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        c::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*p.cast::<c::sockaddr_in6>() };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        family => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected address family {family} for an IP socket"),
        )),
    }
}

/// Sets an `int` socket option.
fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live i32 and its size.
    cvt(unsafe {
        c::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as c::socklen_t,
        )
    })
    .map(drop)
}

/// Readies a TCP socket for listening: `SO_REUSEADDR` (a restarted server binds at once),
/// and with `reuseport` `SO_REUSEPORT` (`SO_REUSEPORT_LB` on FreeBSD, see
/// [`super::SO_REUSEPORT`]).
pub(crate) fn prepare_listener(fd: RawFd, reuseport: bool) -> io::Result<()> {
    setsockopt_int(fd, c::SOL_SOCKET, c::SO_REUSEADDR, 1)?;
    if reuseport {
        setsockopt_int(fd, c::SOL_SOCKET, super::SO_REUSEPORT, 1)?;
    }
    Ok(())
}

/// Sets or clears `TCP_NODELAY`.
pub(crate) fn set_nodelay(fd: RawFd, on: bool) -> io::Result<()> {
    setsockopt_int(fd, c::IPPROTO_TCP, c::TCP_NODELAY, i32::from(on))
}

/// Binds `fd` to the `len` bytes of address at `addr` and listens, with a backlog of 1024.
pub(crate) fn bind_listen(
    fd: RawFd,
    addr: *const c::sockaddr,
    len: c::socklen_t,
) -> io::Result<()> {
    // SAFETY: the caller passes a valid sockaddr of `len` bytes.
    cvt(unsafe { c::bind(fd, addr, len) })?;
    // SAFETY: listen on a socket the caller owns; no pointers.
    cvt(unsafe { c::listen(fd, 1024) })?;
    Ok(())
}

/// Closes `fd` at once (a descriptor nobody else names any more). Returns 0 or `-errno`.
pub(crate) fn close(fd: RawFd) -> i32 {
    // SAFETY: the caller owns `fd` and names it nowhere after this call.
    if unsafe { c::close(fd) } == 0 {
        0
    } else {
        -io::Error::last_os_error().raw_os_error().unwrap_or(c::EIO)
    }
}

/// A descriptor std can use: this one.
pub(crate) fn file_for_std(fd: RawFd) -> RawFd {
    fd
}

/// The device (`st_dev`) of the file system that holds `fd`, or 0 if `fstat` fails: what a
/// polled ring's refusal applies to (see `driver::iopoll`).
pub(crate) fn device_of(fd: RawFd) -> u64 {
    let mut st = mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `stat` into the live local; a bad descriptor is reported as
    // -1 without writing.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: fstat succeeded, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    // `dev_t` is u64 on Linux and FreeBSD, i32 on Apple platforms.
    #[allow(clippy::unnecessary_cast)]
    let dev = st.st_dev as u64;
    dev
}
