//! TCP, UDP and Unix sockets (Unix-domain sockets on Unix platforms only).
//!
//! IO methods take `&self`, so one socket (for example in an `Rc`) can have a read and a
//! write in flight at the same time from two tasks; a stream's `split()` and
//! `into_split()` name the two sides ([`ReadHalf`], [`OwnedWriteHalf`]...).

mod accept;
mod incoming;
mod retained;
mod sendfile;
mod socket;
mod split;
mod stream;
mod tcp;
mod udp;
// Unix-domain sockets are a Unix facility (Windows' AF_UNIX has no datagrams, no
// descriptor passing and no socketpair; coring does not offer it).
#[cfg(unix)]
mod unix;

pub use incoming::Incoming;
pub use split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, WriteHalf};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
#[cfg(unix)]
pub use unix::{UnixListener, UnixStream};
