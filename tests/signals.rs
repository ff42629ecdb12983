//! Signals without SA_RESTART never reach the user as `Interrupted` (issue 14, defect 5).
//! A test file of its own: the handler it installs makes every interruptible syscall of the
//! process return EINTR, which other tests need not put up with.
//!
//! Linux only: the open that waits is one blocked on a file lease (`F_SETLEASE`), and the
//! storm targets each thread with `tgkill`; neither exists on the BSDs or macOS. Both
//! backends run it on Linux.
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TempDir;
use coring::fs::OpenOptions;

static DELIVERED: AtomicU64 = AtomicU64::new(0);

extern "C" fn count(_: libc::c_int) {
    DELIVERED.fetch_add(1, Ordering::Relaxed);
}

/// Installs a counting SIGUSR1 handler without SA_RESTART (interrupted calls fail with
/// EINTR instead of being restarted by the kernel).
fn install_handler() {
    // SAFETY: a zeroed sigaction with a handler that only touches an atomic is valid;
    // sigemptyset initialises the mask it points to.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = count as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        // A lease break notifies the holder with SIGIO, whose default action ends the
        // process.
        libc::signal(libc::SIGIO, libc::SIG_IGN);
    }
}

/// Sends SIGUSR1 to every thread of the process but the caller's, about every 200 µs,
/// until `stop`.
fn storm(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // SAFETY: plain syscalls without pointers.
        let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
        while !stop.load(Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let tid: libc::pid_t = match entry.file_name().to_string_lossy().parse() {
                    Ok(t) => t,
                    Err(_) => continue,
                };
                if tid != me {
                    // SAFETY: tgkill with a valid signal; a thread gone since is ESRCH.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    })
}

// An open for writing of a file another descriptor holds a read lease on waits (on a pool
// thread on the fallback, an io_uring worker otherwise) until the lease is broken or
// released; signals hit it meanwhile. It must complete once the lease goes, not fail with
// `Interrupted`.
coring_test!(blocking_opens_survive_signals, |builder| {
    use std::os::fd::AsRawFd;
    install_handler();
    let rt = builder.build().unwrap();
    let dir = TempDir::new("signals");
    let path = dir.path("leased");
    std::fs::write(&path, b"leased").unwrap();
    let lease = std::fs::File::open(&path).unwrap();
    // SAFETY: F_SETLEASE on a descriptor we own; no pointers.
    if unsafe { libc::fcntl(lease.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
        eprintln!(
            "skipped: F_SETLEASE: {} (leases disabled or not permitted here)",
            std::io::Error::last_os_error()
        );
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let signals = storm(stop.clone());
    let before = DELIVERED.load(Ordering::Relaxed);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        // SAFETY: as above.
        unsafe { libc::fcntl(lease.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        drop(lease);
    });
    common::block_on_bounded(&rt, async {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .expect("an interrupted open is retried, not returned");
        drop(file);
    });
    releaser.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    signals.join().unwrap();
    assert!(
        DELIVERED.load(Ordering::Relaxed) > before,
        "no signal was delivered: the test proved nothing"
    );
});
