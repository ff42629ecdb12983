//! Registering buffers past `RLIMIT_MEMLOCK`: the kernel pins (and accounts) the first
//! buffers of an update, fails on the next one, and reports only how many it filled. The
//! runtime must unpin those again and report the real error (ENOMEM), or the pinned pages
//! stay charged to the limit and the next, smaller pool cannot register.
//!
//! The limit is only enforced without CAP_IPC_LOCK, and a capability dropped or a limit
//! lowered cannot be restored, so the scenario runs in a child process (see
//! `common::child`). Linux only, io_uring only: registered buffers are an io_uring
//! feature (on the fallback backend registering does nothing).
#![cfg(target_os = "linux")]

mod common;

use std::io;

use coring::buf::FixedBufPool;
use coring::{BackendKind, Builder};

const CHILD_ENV: &str = "CORING_MEMLOCK_CHILD";
const CHILD_TEST: &str = "child_entry_point";
const OUT_FIRST: &str = "coring-memlock-child: first pool: ";
const OUT_SECOND: &str = "coring-memlock-child: second pool: ";
const OUT_SKIP: &str = "coring-memlock-child: skipped: ";
const OUT_OK: &str = "coring-memlock-child: ok";

/// The limit the child sets, and the pools it registers: the first needs twice the limit,
/// the second half of it (so it fits only if the first left nothing pinned).
const LIMIT: u64 = 64 * 1024;
const BUF: usize = 16 * 1024;

#[test]
fn partly_failed_buffer_registration_unpins_what_it_pinned() {
    let out = common::child::run_child(CHILD_ENV, "run", CHILD_TEST, OUT_OK);
    if let Some(line) = out.stdout.lines().find(|l| l.contains(OUT_SKIP)) {
        eprintln!("{line}");
        return;
    }
    let first = out.value(OUT_FIRST);
    assert!(
        first.contains("OutOfMemory") && first.contains("os error 12"),
        "registering past the limit should fail with ENOMEM, got {first:?}\n{out}"
    );
    assert_eq!(
        out.value(OUT_SECOND),
        "registered",
        "a pool within the limit failed after the failed one: its pinned pages were not \
         released\n{out}"
    );
}

/// Runs the scenario when `CORING_MEMLOCK_CHILD` is set (by the test above); does
/// nothing otherwise.
#[test]
fn child_entry_point() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    common::with_watchdog("memlock child", child_main);
    println!("{OUT_OK}");
}

fn child_main() {
    drop_ipc_lock().expect("dropping CAP_IPC_LOCK");
    let lim = libc::rlimit {
        rlim_cur: LIMIT,
        rlim_max: LIMIT,
    };
    // SAFETY: setrlimit reads one rlimit from a live local.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
    // The ring's own memory fits under this limit. (Under a limit of 0, io_uring_setup
    // itself fails with ENOMEM on Linux 6.18: forced io_uring reports OutOfMemory, and
    // `Auto` falls back with a reason naming RLIMIT_MEMLOCK; coring-torture's `rlimits`
    // scenario checks both.)
    let rt = match Builder::new().backend(BackendKind::IoUring).build() {
        Ok(rt) => rt,
        Err(e) => {
            println!("{OUT_SKIP}io_uring unavailable: {e}");
            return;
        }
    };
    rt.block_on(async {
        let big = FixedBufPool::new(2 * LIMIT as usize / BUF, BUF);
        match big.register() {
            Ok(()) => println!("{OUT_SKIP}the kernel registered past RLIMIT_MEMLOCK"),
            Err(e) => {
                println!("{OUT_FIRST}{:?} {e}", e.kind());
                assert!(!big.is_registered());
                let small = FixedBufPool::new(LIMIT as usize / BUF / 2, BUF);
                match small.register() {
                    Ok(()) => println!("{OUT_SECOND}registered"),
                    Err(e) => println!("{OUT_SECOND}{e}"),
                }
            }
        }
    });
}

/// Removes CAP_IPC_LOCK from this process's effective and permitted sets (a no-op when
/// it does not have it), so that registered buffers are charged to `RLIMIT_MEMLOCK`.
fn drop_ipc_lock() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two Data structs (version 3) and reads the header; both live.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset reads the header and two Data structs, all live.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const ZERO_ENV: &str = "CORING_MEMLOCK_ZERO_CHILD";
const ZERO_TEST: &str = "zero_child_entry_point";
const OUT_REASON: &str = "coring-memlock-child: reason: ";

// Under RLIMIT_MEMLOCK 0, io_uring_setup fails with ENOMEM on this kernel: `Auto` falls back,
// and the reason it gives names the limit (issue 14), so the user knows what to raise.
#[test]
fn auto_under_memlock_zero_says_it_is_the_limit() {
    let out = common::child::run_child(ZERO_ENV, "run", ZERO_TEST, OUT_OK);
    if let Some(line) = out.stdout.lines().find(|l| l.contains(OUT_SKIP)) {
        eprintln!("{line}");
        return;
    }
    let reason = out.value(OUT_REASON);
    assert!(
        reason.contains("RLIMIT_MEMLOCK is 0 bytes"),
        "the fallback reason should name the limit, got {reason:?}\n{out}"
    );
}

/// Runs the memlock-0 scenario when `CORING_MEMLOCK_ZERO_CHILD` is set.
#[test]
fn zero_child_entry_point() {
    if std::env::var_os(ZERO_ENV).is_none() {
        return;
    }
    common::with_watchdog("memlock zero child", || {
        drop_ipc_lock().expect("dropping CAP_IPC_LOCK");
        let lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads one rlimit from a live local.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
        assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
        let rt = Builder::new().build().expect("Auto builds a runtime");
        match rt.fallback_reason() {
            Some(reason) => println!("{OUT_REASON}{reason}"),
            None => println!("{OUT_SKIP}io_uring works under RLIMIT_MEMLOCK 0 here"),
        }
        rt.block_on(async { coring::nop().await.unwrap() });
    });
    println!("{OUT_OK}");
}
