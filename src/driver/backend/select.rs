//! Choosing and building the backend a runtime runs on: the one place that knows which
//! backends exist on which platform, and why a runtime runs on the fallback.

use std::io;

#[cfg(unix)]
use super::fallback::Fallback;
#[cfg(target_os = "linux")]
use super::uring;
use super::AnyBackend;
use crate::runtime::BackendKind;

/// What the builder asks of the backend.
#[derive(Debug, Clone)]
// The ring settings are read only where io_uring exists (Linux).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) struct BackendConfig {
    /// Submission queue entries (io_uring).
    pub(crate) entries: u32,
    /// Completion queue entries (io_uring; `None`: twice the submission queue).
    pub(crate) cq_entries: Option<u32>,
    /// SQPOLL with this idle time (io_uring).
    pub(crate) sqpoll_idle_ms: Option<u32>,
    /// Operations to run on the blocking pool as if io_uring lacked their opcode (test
    /// hook), by name.
    pub(crate) emulate_missing: Vec<String>,
    /// Provided buffers of multishot stream receives, (count, size); `None`: streams read
    /// single-shot.
    pub(crate) recv_buffers: Option<(u16, usize)>,
    /// Run direct file IO on a polled ring (io_uring; the mock plays one).
    pub(crate) iopoll: bool,
    /// File-to-socket transfers by linked splices (io_uring).
    pub(crate) splice_files: bool,
}

/// What a fallback chosen on request says about itself.
#[cfg(unix)]
const REQUESTED: &str = "fallback requested (Builder::backend or CORING_BACKEND)";

/// Builds the backend of kind `kind` and, when it is the fallback, says why.
///
/// # Errors
///
/// With io_uring forced, the kernel's error as is (errno intact), never a silent fallback;
/// `Unsupported` for a backend this platform (or build) does not have; the fallback's own
/// setup error.
pub(crate) fn build(
    kind: BackendKind,
    cfg: &BackendConfig,
) -> io::Result<(AnyBackend, Option<String>)> {
    match kind {
        BackendKind::Mock => mock(cfg),
        BackendKind::Fallback => fallback(),
        BackendKind::Iocp => iocp(),
        BackendKind::IoUring | BackendKind::Auto => platform(kind, cfg),
    }
}

#[cfg(unix)]
fn fallback() -> io::Result<(AnyBackend, Option<String>)> {
    Ok((
        AnyBackend::Fallback(Fallback::new()?),
        Some(REQUESTED.to_string()),
    ))
}

#[cfg(windows)]
fn fallback() -> io::Result<(AnyBackend, Option<String>)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "coring: the readiness fallback (epoll/kqueue) does not exist on Windows; use \
         BackendKind::Auto or BackendKind::Iocp",
    ))
}

#[cfg(windows)]
fn iocp() -> io::Result<(AnyBackend, Option<String>)> {
    Ok((AnyBackend::Iocp(super::iocp::Iocp::new()?), None))
}

#[cfg(not(windows))]
fn iocp() -> io::Result<(AnyBackend, Option<String>)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "coring: I/O completion ports (BackendKind::Iocp) exist only on Windows; use \
         BackendKind::Auto",
    ))
}

#[cfg(feature = "test-util")]
fn mock(cfg: &BackendConfig) -> io::Result<(AnyBackend, Option<String>)> {
    Ok((AnyBackend::Mock(super::mock::Mock::new(cfg.iopoll)), None))
}

#[cfg(not(feature = "test-util"))]
fn mock(_cfg: &BackendConfig) -> io::Result<(AnyBackend, Option<String>)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "coring: BackendKind::Mock is test support; enable coring's `test-util` feature \
         (as a dev-dependency) to use it",
    ))
}

/// io_uring, forced or automatic; with `Auto`, the fallback where the kernel does not let
/// io_uring serve (logged once per process).
#[cfg(target_os = "linux")]
fn platform(kind: BackendKind, cfg: &BackendConfig) -> io::Result<(AnyBackend, Option<String>)> {
    let ring_cfg = uring::UringConfig {
        entries: cfg.entries,
        cq_entries: cfg.cq_entries,
        sqpoll_idle_ms: cfg.sqpoll_idle_ms,
        emulate_missing: cfg.emulate_missing.clone(),
        recv_buffers: cfg
            .recv_buffers
            .map(|(count, size)| uring::RecvBuffers { count, size }),
        iopoll: cfg.iopoll,
        splice_files: cfg.splice_files,
    };
    match uring::Uring::new(&ring_cfg) {
        Ok(ring) => Ok((AnyBackend::Uring(ring), None)),
        Err(e) if kind == BackendKind::Auto && io_uring_unavailable(&e.error) => {
            let reason = format!(
                "io_uring unavailable ({}): {}{}",
                e.step,
                e.error,
                memlock_hint(&e.error)
            );
            log_fallback_once(&reason);
            Ok((AnyBackend::Fallback(Fallback::new()?), Some(reason)))
        }
        Err(e) => Err(e.error),
    }
}

/// Without io_uring (other Unix platforms), `Auto` is the fallback; asking for io_uring is
/// an error rather than a silent substitute.
#[cfg(all(unix, not(target_os = "linux")))]
fn platform(kind: BackendKind, _cfg: &BackendConfig) -> io::Result<(AnyBackend, Option<String>)> {
    const LINUX_ONLY: &str = "io_uring is only available on Linux";
    if kind == BackendKind::IoUring {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("coring: {LINUX_ONLY}; use BackendKind::Auto or BackendKind::Fallback"),
        ));
    }
    Ok((
        AnyBackend::Fallback(Fallback::new()?),
        Some(LINUX_ONLY.to_string()),
    ))
}

/// On Windows, `Auto` is IOCP; asking for io_uring is an error.
#[cfg(windows)]
fn platform(kind: BackendKind, _cfg: &BackendConfig) -> io::Result<(AnyBackend, Option<String>)> {
    if kind == BackendKind::IoUring {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "coring: io_uring is only available on Linux; on Windows use BackendKind::Auto \
             (I/O completion ports)",
        ));
    }
    iocp()
}

/// Errors that mean "io_uring cannot be used here", as opposed to a transient failure
/// (out of descriptors) that the fallback would hit too.
#[cfg(target_os = "linux")]
fn io_uring_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::ENOSYS | libc::EACCES | libc::ENOMEM | libc::EINVAL)
    ) || e.kind() == io::ErrorKind::Unsupported
}

/// For ENOMEM, which under a low `RLIMIT_MEMLOCK` is the kernel's way of saying "the
/// ring's memory would exceed the limit": the limit, and how to raise it.
#[cfg(target_os = "linux")]
fn memlock_hint(e: &io::Error) -> String {
    if e.raw_os_error() != Some(libc::ENOMEM) {
        return String::new();
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return String::new();
    }
    let limit = match lim.rlim_cur {
        libc::RLIM_INFINITY => "unlimited".to_string(),
        n => format!("{n} bytes"),
    };
    format!(
        "; RLIMIT_MEMLOCK is {limit}, and the ring's memory may count against it (raise it \
         with `ulimit -l`, or run with CAP_IPC_LOCK)"
    )
}

/// Says once per process, through the `log` crate (a warning), why the runtime fell back.
#[cfg(target_os = "linux")]
fn log_fallback_once(reason: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| log::warn!("coring: using the fallback backend: {reason}"));
}
