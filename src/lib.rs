//! # coring
//!
//! An io_uring-first, completion-based, thread-per-core async runtime.
//!
//! Each runtime is one thread with its own task queue, timers and io_uring. IO is
//! completion-based with owned buffers: an operation takes its buffer by value, the kernel
//! owns it while the operation runs, and the buffer comes back with the result:
//!
//! ```no_run
//! use coring::fs::File;
//!
//! #[coring::main]
//! async fn main() -> std::io::Result<()> {
//!     let file = File::open("/etc/hostname").await?;
//!     let (res, buf) = file.read_at(Vec::with_capacity(4096), 0).await;
//!     let n = res?;
//!     println!("{}", String::from_utf8_lossy(&buf[..n]));
//!     file.close().await
//! }
//! ```
//!
//! `#[coring::main]` builds a runtime (options: `backend = "io_uring"`, `entries = 1024`,
//! `pool = N` for a [`Pool`] of N cores, the function running on core 0)
//! and runs the function on it; `coring::start(future)` and [`Builder`] do the same
//! without the attribute. `#[coring::test]` runs an `async fn` test once per backend the
//! machine has (io_uring and the fallback on Linux), naming the backend when one fails:
//!
//! ```
//! #[coring::test(timeout = 30)]
//! async fn writes_then_reads() -> std::io::Result<()> {
//!     let path = std::env::temp_dir().join(format!("coring-doc-{}", std::process::id()));
//!     let file = coring::fs::File::create(&path).await?;
//!     let (res, _) = file.write_at(b"hello".to_vec(), 0).await;
//!     assert_eq!(res?, 5);
//!     coring::fs::remove_file(&path).await
//! }
//! # fn main() {}
//! ```
//!
//! Cancellation is safe: dropping a future whose operation is in flight hands the
//! operation (buffer, fd, path) to the runtime, which submits a cancel and frees nothing
//! until the kernel's completion arrives.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[doc(hidden)]
pub mod __macro_support;
mod blocking;
pub mod buf;
pub mod cancel;
#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
pub mod compat;
mod driver;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod fs;
pub mod io;
pub mod link;
#[cfg(feature = "macros")]
pub use coring_macros::{main, test};
pub mod net;
mod op;
mod platform;
mod pool;
mod runtime;
pub mod sync;
pub mod task;
pub mod time;

pub use driver::iopoll::IopollStatus;
pub use driver::{Histogram, Metrics, OpLatency};

/// Test support: a backend whose operations complete when the test says so. Not API: no
/// stability promise; see `Builder::backend(BackendKind::Mock)`. Needs the `test-util`
/// feature.
#[doc(hidden)]
#[cfg(feature = "test-util")]
pub mod mock {
    pub use crate::driver::backend::mock::{MockHandle, MockOp};
}
pub use blocking::spawn_blocking;
pub use pool::{
    current_core, CoreInfo, Gather, Pool, PoolBuilder, PoolError, PoolHandle, Sharded, SpawnHandle,
    Submit,
};
pub use runtime::{metrics, start, BackendKind, Builder, Runtime};
pub use task::{spawn, JoinHandle};

/// A round trip through the backend that does nothing (IORING_OP_NOP on io_uring).
///
/// Useful to measure the runtime's own per-operation cost and to exercise the submission
/// path (a full queue, many completions) without touching files or sockets.
pub async fn nop() -> std::io::Result<()> {
    driver::op::Op::new(op::rw::Nop).await
}

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
