//! TCP, UDP and Unix sockets (Unix-domain sockets on Unix platforms only).
//!
//! IO methods take `&self`, so one socket (for example in an `Rc`) can have a read and a
//! write in flight at the same time from two tasks; a stream's `split()` and
//! `into_split()` name the two sides ([`ReadHalf`], [`OwnedWriteHalf`]...).
//!
//! # Moving a socket to another core
//!
//! Sockets are `!Send`: each belongs to the runtime it was made or adopted on (its
//! operations, registered slot and retained receives are that runtime's). To hand a
//! connection to another thread (another core of a [`Pool`](crate::Pool), a worker
//! thread), take the std socket out with `into_std`, send it, and adopt it with `from_std`
//! on the runtime there. `into_std` gives the socket back (`Err`) while an operation of it
//! is still in flight or retained, so nothing the kernel received is left behind:
//!
//! ```
//! use coring::net::{TcpListener, TcpStream};
//!
//! coring::start(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let client = std::thread::spawn(move || std::net::TcpStream::connect(addr));
//!     let (conn, _) = listener.accept().await?;
//!     let std_conn = conn.into_std().map_err(|_| std::io::Error::other("busy"))?;
//!     let worker = std::thread::spawn(move || {
//!         // Another thread, its own runtime: the connection is adopted there.
//!         coring::start(async move {
//!             let conn = TcpStream::from_std(std_conn)?;
//!             let (res, _) = conn.write_all(b"hello from the worker".to_vec()).await;
//!             res
//!         })
//!     });
//!     worker.join().unwrap()?;
//!     drop(client.join().unwrap()?);
//!     Ok::<(), std::io::Error>(())
//! })
//! .unwrap();
//! ```

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
