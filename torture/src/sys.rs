//! Process-level measurements and knobs: open descriptors, resident memory, resource
//! limits. `/proc` exists only on Linux; elsewhere the descriptor count comes from
//! `/dev/fd` and memory is not sampled.

use std::io;
use std::path::PathBuf;

/// Number of open descriptors of this process (`/proc/self/fd` on Linux, `/dev/fd`
/// elsewhere). The directory handle used to list it is counted too, the same every time.
pub fn fd_count() -> usize {
    let dir = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Number of open descriptors of process `pid` (Linux only: `None` elsewhere, or if the
/// process is gone).
pub fn fd_count_of(pid: u32) -> Option<usize> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// The descriptors of this process as `fd -> target`, for messages about leaks.
pub fn fd_targets() -> Vec<String> {
    if !cfg!(target_os = "linux") {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut v: Vec<(u32, String)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n: u32 = e.file_name().to_str()?.parse().ok()?;
            let t = std::fs::read_link(e.path()).unwrap_or_else(|_| PathBuf::from("?"));
            Some((n, t.display().to_string()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(n, t)| format!("{n}->{t}")).collect()
}

/// What differs between two [`fd_targets`] listings: descriptors only in `after`.
pub fn fd_diff(before: &[String], after: &[String]) -> String {
    let extra: Vec<&str> = after
        .iter()
        .filter(|a| !before.contains(a))
        .map(|s| s.as_str())
        .take(12)
        .collect();
    if extra.is_empty() {
        "(no listing)".to_string()
    } else {
        extra.join(", ")
    }
}

/// Resident set size of this process in KiB (Linux; `None` elsewhere).
pub fn rss_kib() -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()? / 1024)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (scenarios that open thousands of
/// sockets need it); returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads one rlimit from a live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // rlim_t is u64 on Linux and macOS, i64 on FreeBSD.
    #[allow(clippy::unnecessary_cast)]
    Ok(lim.rlim_cur as u64)
}

/// Sets `SO_LINGER` to zero seconds, so that closing the socket sends a reset (RST)
/// instead of a FIN.
pub fn set_linger_zero(fd: std::os::fd::RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a linger struct of the size passed, from a live local.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `coring-torture-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> io::Result<TempDir> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "coring-torture-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a FIFO at `path`.
pub fn mkfifo(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: mkfifo reads a NUL-terminated path from a live CString.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe as two `std::fs::File`s (read end, write end), both close-on-exec.
pub fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let (r, w) = std::io::pipe()?;
    Ok((
        std::fs::File::from(std::os::fd::OwnedFd::from(r)),
        std::fs::File::from(std::os::fd::OwnedFd::from(w)),
    ))
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: std::os::fd::RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor the caller keeps open.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes to a non-blocking `w` until it would block; returns the bytes written.
pub fn fill(mut w: impl io::Write) -> io::Result<usize> {
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut total = 0;
    loop {
        match w.write(&chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Human-readable KiB.
pub fn kib(k: u64) -> String {
    if k >= 10 * 1024 {
        format!("{:.1} MiB", k as f64 / 1024.0)
    } else {
        format!("{k} KiB")
    }
}
