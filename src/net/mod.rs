//! TCP, UDP and Unix sockets.
//!
//! IO methods take `&self`, so one socket (for example in an `Rc`) can have a read and a
//! write in flight at the same time from two tasks.

mod accept;
mod retained;
mod socket;
mod stream;
mod tcp;
mod udp;
mod unix;

pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};
