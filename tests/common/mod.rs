//! Shared test harness: every integration test is written once and expanded per backend.
#![allow(dead_code)]

pub mod child;
pub mod example;

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use coring::{BackendKind, Builder, Runtime};

/// The backends every test runs on (io_uring exists only on Linux).
#[cfg(target_os = "linux")]
pub const BACKENDS: &[BackendKind] = &[BackendKind::IoUring, BackendKind::Fallback];
/// The backends every test runs on (io_uring exists only on Linux).
#[cfg(all(unix, not(target_os = "linux")))]
pub const BACKENDS: &[BackendKind] = &[BackendKind::Fallback];
/// The backends every test runs on (Windows has completion ports only).
#[cfg(windows)]
pub const BACKENDS: &[BackendKind] = &[BackendKind::Iocp];

/// How long one test may run before the watchdog fails it.
pub const TEST_BOUND: Duration = Duration::from_secs(60);

/// Expands `fn name() { ... }` bodies (with `rt` and `backend` in scope as a runtime
/// builder argument) into one `#[test]` per backend, each bounded by a watchdog. The
/// io_uring test exists only on Linux, the fallback one on Unix, the IOCP one on Windows.
///
/// ```ignore
/// coring_test!(reads_file, async {
///     ...
/// });
/// ```
#[macro_export]
macro_rules! coring_test {
    ($name:ident, |$builder:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[cfg(target_os = "linux")]
            #[test]
            fn io_uring() {
                $crate::common::with_watchdog(stringify!($name), || {
                    let $builder = coring::Builder::new().backend(coring::BackendKind::IoUring);
                    $body
                })
            }

            #[cfg(unix)]
            #[test]
            fn fallback() {
                $crate::common::with_watchdog(stringify!($name), || {
                    let $builder = coring::Builder::new().backend(coring::BackendKind::Fallback);
                    $body
                })
            }

            #[cfg(windows)]
            #[test]
            fn iocp() {
                $crate::common::with_watchdog(stringify!($name), || {
                    let $builder = coring::Builder::new().backend(coring::BackendKind::Iocp);
                    $body
                })
            }
        }
    };
    ($name:ident, $fut:expr) => {
        $crate::coring_test!($name, |builder| {
            let rt = builder.build().expect("runtime");
            $crate::common::block_on_bounded(&rt, $fut)
        });
    };
}

/// Runs `f` on this thread; if it has not returned within [`TEST_BOUND`], the process is
/// aborted with a message naming the test (a hung test must fail CI, not stall it).
pub fn with_watchdog<R>(name: &str, f: impl FnOnce() -> R) -> R {
    with_watchdog_for(name, TEST_BOUND, f)
}

/// [`with_watchdog`] with a bound of the test's own.
pub fn with_watchdog_for<R>(name: &str, bound: Duration, f: impl FnOnce() -> R) -> R {
    let (done, wait) = mpsc::channel::<()>();
    let name = name.to_string();
    let dog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(bound) {
            eprintln!("test {name} did not finish within {bound:?}: aborting");
            std::process::abort();
        }
    });
    let r = f();
    drop(done);
    dog.join().unwrap();
    r
}

/// Runs `fut` on `rt`, failing the test if it takes longer than 30 s.
pub fn block_on_bounded<F: Future>(rt: &Runtime, fut: F) -> F::Output {
    rt.block_on(async {
        coring::time::timeout(Duration::from_secs(30), fut)
            .await
            .expect("test body timed out after 30 s")
    })
}

/// Yields to the runtime until `cond` holds, failing after 5 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        coring::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A runtime for `kind` with default settings.
pub fn runtime(kind: BackendKind) -> Runtime {
    Builder::new().backend(kind).build().expect("runtime")
}

/// The error code an operation stopped by a cancel ends with: `ECANCELED`, or on Windows
/// `ERROR_OPERATION_ABORTED` (what `CancelIoEx` gives).
#[cfg(unix)]
pub const ECANCELED: i32 = libc::ECANCELED;
/// The error code an operation stopped by a cancel ends with: `ECANCELED`, or on Windows
/// `ERROR_OPERATION_ABORTED` (what `CancelIoEx` gives).
#[cfg(windows)]
pub const ECANCELED: i32 = 995;

/// The error code of an invalid argument: `EINVAL`, or on Windows
/// `ERROR_INVALID_PARAMETER`.
#[cfg(unix)]
pub const EINVAL: i32 = libc::EINVAL;
/// The error code of an invalid argument: `EINVAL`, or on Windows
/// `ERROR_INVALID_PARAMETER`.
#[cfg(windows)]
pub const EINVAL: i32 = 87;

/// Number of open handles of this process (`GetProcessHandleCount`).
#[cfg(windows)]
pub fn fd_count() -> usize {
    let mut n = 0u32;
    // SAFETY: writes one u32 into a live local, for the current process's pseudo-handle.
    let ok = unsafe {
        windows_sys::Win32::System::Threading::GetProcessHandleCount(
            windows_sys::Win32::System::Threading::GetCurrentProcess(),
            &mut n,
        )
    };
    assert!(ok != 0, "GetProcessHandleCount failed");
    n as usize
}

/// Number of open descriptors of this process (from `/proc/self/fd` on Linux, `/dev/fd`
/// elsewhere; on FreeBSD that lists every descriptor only with fdescfs mounted).
#[cfg(unix)]
pub fn fd_count() -> usize {
    let dir = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    std::fs::read_dir(dir).unwrap().count()
}

/// A unique scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "coring-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A buffer that records when it is dropped, to prove the runtime keeps buffers alive until
/// the kernel's completion.
pub struct DropFlagBuf {
    pub vec: Vec<u8>,
    pub dropped: std::rc::Rc<std::cell::Cell<bool>>,
}

impl DropFlagBuf {
    pub fn new(cap: usize) -> (DropFlagBuf, std::rc::Rc<std::cell::Cell<bool>>) {
        let flag = std::rc::Rc::new(std::cell::Cell::new(false));
        (
            DropFlagBuf {
                vec: Vec::with_capacity(cap),
                dropped: flag.clone(),
            },
            flag,
        )
    }
}

impl Drop for DropFlagBuf {
    fn drop(&mut self) {
        self.dropped.set(true);
    }
}

// SAFETY: delegates to the inner Vec, whose heap pointer is stable across moves.
unsafe impl coring::buf::IoBuf for DropFlagBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.vec.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.vec.len()
    }
    fn bytes_total(&self) -> usize {
        self.vec.capacity()
    }
}

// SAFETY: delegates to the inner Vec.
unsafe impl coring::buf::IoBufMut for DropFlagBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.vec.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { coring::buf::IoBufMut::set_init(&mut self.vec, pos) }
    }
}

/// Polls `f` exactly once (to submit an operation, then drop it at a chosen moment).
pub async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

/// Polls each of `futs` once, in order, and asserts that none finished (each operation is
/// now issued and waiting).
pub async fn poll_each_pending<F: std::future::Future + Unpin>(futs: &mut [F]) {
    for (i, f) in futs.iter_mut().enumerate() {
        assert!(
            poll_once(f).await.is_pending(),
            "future {i} finished in its first poll"
        );
    }
}

/// A pipe on Windows, (read end, write end): a named pipe, since anonymous pipes cannot do
/// overlapped IO, which the IOCP backend needs. Both ends are overlapped (std's blocking
/// calls wait for an overlapped handle's IO themselves).
#[cfg(windows)]
pub fn win_pipe() -> (std::fs::File, std::fs::File) {
    use std::os::windows::ffi::OsStrExt;
    use std::os::windows::fs::OpenOptionsExt;
    use std::os::windows::io::FromRawHandle;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const PIPE_ACCESS_INBOUND: u32 = 0x1;
    const FILE_FLAG_FIRST_PIPE_INSTANCE: u32 = 0x0008_0000;
    const FILE_FLAG_OVERLAPPED: u32 = 0x4000_0000;
    const PIPE_REJECT_REMOTE_CLIENTS: u32 = 0x8;
    #[link(name = "kernel32")]
    extern "system" {
        fn CreateNamedPipeW(
            name: *const u16,
            open_mode: u32,
            pipe_mode: u32,
            max_instances: u32,
            out_size: u32,
            in_size: u32,
            timeout: u32,
            security: *const std::ffi::c_void,
        ) -> *mut std::ffi::c_void;
    }
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        r"\\.\pipe\coring-test-pipe-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let wide: Vec<u16> = std::ffi::OsStr::new(&name)
        .encode_wide()
        .chain(Some(0))
        .collect();
    // SAFETY: a NUL-terminated UTF-16 name; no security attributes.
    let h = unsafe {
        CreateNamedPipeW(
            wide.as_ptr(),
            PIPE_ACCESS_INBOUND | FILE_FLAG_FIRST_PIPE_INSTANCE | FILE_FLAG_OVERLAPPED,
            PIPE_REJECT_REMOTE_CLIENTS,
            1,
            4096,
            4096,
            0,
            std::ptr::null(),
        )
    };
    assert_ne!(
        h as isize,
        -1,
        "CreateNamedPipeW: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the handle was just created and is owned by nobody else.
    let rd = unsafe { std::fs::File::from_raw_handle(h) };
    let wr = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(FILE_FLAG_OVERLAPPED)
        .open(&name)
        .unwrap();
    (rd, wr)
}
