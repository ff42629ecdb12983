//! Readiness poller and blocking pool behind coring's fallback backend.
//!
//! This crate knows nothing of coring's operations: it only reports readiness
//! and runs closures on a bounded thread pool. The fallback backend in the main
//! crate turns those two building blocks into io_uring-shaped completions.
//!
//! - [`Poller`] (Unix only): an edge-triggered readiness poller written directly
//!   on libc: epoll on Linux and Android, kqueue on the Apple platforms, FreeBSD,
//!   NetBSD, OpenBSD and DragonFly. Every descriptor is registered once, for both
//!   read and write interest, under a caller-chosen token. A cloneable
//!   [`PollerWaker`] interrupts a blocked [`Poller::wait`] from any thread.
//! - [`BlockingPool`] (every platform): a small pool of lazily spawned threads
//!   for the work readiness cannot serve (regular file IO, `open`, `statx`,
//!   `fsync`, `rename`, ...). Idle threads exit after a timeout.
//!
//! # Example
//!
//! ```
//! # #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos",
//! #           target_os = "freebsd"))]
//! # fn main() -> std::io::Result<()> {
//! use coring_fallback::{Events, Poller};
//! use std::time::Duration;
//!
//! let poller = Poller::new()?;
//! let waker = poller.waker();
//! std::thread::spawn(move || waker.wake().expect("wake the poller"));
//!
//! let mut events = Events::with_capacity(64);
//! // A wake from before or during the wait makes `wait` return; bound it anyway.
//! poller.wait(&mut events, Some(Duration::from_secs(5)))?;
//! assert!(events.woken(), "the wake did not reach the poller within 5 s");
//! # Ok(())
//! # }
//! # #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos",
//! #               target_os = "freebsd")))]
//! # fn main() {}
//! ```

#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_debug_implementations)]

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "tvos",
    target_os = "watchos",
    target_os = "visionos",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
))]
mod poller;
mod pool;

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "tvos",
    target_os = "watchos",
    target_os = "visionos",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
))]
pub use poller::{Event, Events, Iter, Poller, PollerWaker, WAKER_TOKEN};
pub use pool::BlockingPool;
