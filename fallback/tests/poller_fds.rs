//! Descriptor hygiene of the poller: close-on-exec, and nothing left open after drop.
//!
//! This file holds a single test so that no other test of the same binary opens
//! or closes descriptors while it counts them.

#![cfg(any(
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

use std::os::fd::AsRawFd;

use coring_fallback::Poller;

/// Counts this process's open descriptors where the OS lists them.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_fds() -> Option<usize> {
    Some(
        std::fs::read_dir("/proc/self/fd")
            .expect("list /proc/self/fd")
            .count(),
    )
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn open_fds() -> Option<usize> {
    None
}

#[test]
fn descriptors_are_cloexec_and_closed_on_drop() {
    let before = open_fds();
    let poller = Poller::new().expect("Poller::new");
    let waker = poller.waker();

    // SAFETY: F_GETFD takes no argument; the descriptor is open while `poller` lives.
    let flags = unsafe { libc::fcntl(poller.as_raw_fd(), libc::F_GETFD) };
    assert!(flags >= 0, "fcntl(F_GETFD) failed");
    assert!(
        flags & libc::FD_CLOEXEC != 0,
        "the poller's descriptor must be close-on-exec"
    );

    if let (Some(before), Some(during)) = (before, open_fds()) {
        assert!(during > before, "the poller opened no descriptor?");
    }
    drop(poller);
    // A waker holds no descriptor open once the poller is gone.
    waker.wake().expect("waking a dropped poller must succeed");
    assert_eq!(
        before,
        open_fds(),
        "dropping the poller must close all its descriptors"
    );
}
