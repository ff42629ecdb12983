//! io_uring blocked by seccomp: `BackendKind::Auto` must select the fallback backend, say
//! why, and the fallback must then do real work (TCP echo on loopback, a file round trip).
//! Forcing `BackendKind::IoUring` where io_uring is blocked must be an error.
//!
//! A seccomp filter cannot be removed once installed, so each scenario runs in a child
//! process: the parent test re-executes this test binary with `CORING_SECCOMP_CHILD` set,
//! running only [`child_entry_point`], which installs the filter in the child and checks
//! the runtime there. Without that variable `child_entry_point` returns at once, so a plain
//! `cargo test` passes through it harmlessly and the parent never installs a filter.
// Linux only: seccomp and prctl are Linux interfaces, and io_uring, which the filters
// block, exists only there; the filters match x86_64 and aarch64 audit arches.
#![cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

mod common;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use common::child::ChildOutput;
use common::TempDir;
use coring::fs::File;
use coring::net::{TcpListener, TcpStream};
use coring::{BackendKind, Builder, Runtime};

/// Selects the child mode: `eperm`, `enosys` or `enter-only`.
const CHILD_ENV: &str = "CORING_SECCOMP_CHILD";
/// The name of the child-mode test, as libtest knows it.
const CHILD_TEST: &str = "child_entry_point";

/// Prefixes of the lines the child prints for the parent.
const OUT_REASON: &str = "coring-seccomp-child: fallback reason: ";
const OUT_FORCED: &str = "coring-seccomp-child: forced io_uring error: ";
const OUT_BACKEND: &str = "coring-seccomp-child: backend: ";
const OUT_NOTE: &str = "coring-seccomp-child: note: ";
const OUT_OK: &str = "coring-seccomp-child: ok";

/// `AUDIT_ARCH_*` of this target (`EM_*` | `__AUDIT_ARCH_64BIT` | `__AUDIT_ARCH_LE`);
/// not exported by the `libc` crate.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000; // AUDIT_ARCH_AARCH64

const NR_SETUP: libc::c_long = libc::SYS_io_uring_setup;
const NR_ENTER: libc::c_long = libc::SYS_io_uring_enter;
const NR_REGISTER: libc::c_long = libc::SYS_io_uring_register;

/// Prints every log record on stderr, as an application's logger would.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("[{}] {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

/// What the child's filter blocks, and with which errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// setup, enter and register fail with EPERM (a container's default profile).
    Eperm,
    /// setup, enter and register fail with ENOSYS (as if the kernel had no io_uring).
    Enosys,
    /// Only enter fails, with EPERM: setup works, the runtime's round trip must not.
    EnterOnly,
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "eperm" => Mode::Eperm,
            "enosys" => Mode::Enosys,
            "enter-only" => Mode::EnterOnly,
            other => panic!("{CHILD_ENV}={other:?}: expected eperm, enosys or enter-only"),
        }
    }

    fn errno(self) -> i32 {
        match self {
            Mode::Eperm | Mode::EnterOnly => libc::EPERM,
            Mode::Enosys => libc::ENOSYS,
        }
    }

    fn blocked(self) -> &'static [libc::c_long] {
        match self {
            Mode::Eperm | Mode::Enosys => &[NR_SETUP, NR_ENTER, NR_REGISTER],
            Mode::EnterOnly => &[NR_ENTER],
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------------

/// Runs [`child_entry_point`] in a child process in `mode` and prints its notes.
fn run_child(mode: &str) -> ChildOutput {
    let out = common::child::run_child(CHILD_ENV, mode, CHILD_TEST, OUT_OK);
    for note in out.stdout.lines().filter(|l| l.contains(OUT_NOTE)) {
        eprintln!("{note}");
    }
    out
}

/// The checks every mode shares: Auto fell back for the filter's errno, said so in
/// `fallback_reason` and logged it once (the child's logger prints on stderr), and forcing
/// io_uring failed with that errno.
fn check_fell_back(out: &ChildOutput, errno: i32) {
    let os_error = format!("(os error {errno})");

    let reason = out.value(OUT_REASON);
    eprintln!("fallback reason: {reason}");
    assert!(
        reason.starts_with("io_uring unavailable (") && reason.contains(&os_error),
        "fallback reason {reason:?} does not name {os_error}\n{out}"
    );
    // Builder::build documents that the reason is logged once (the child built one Auto
    // runtime; the forced io_uring build must not log a fallback).
    assert_eq!(
        out.stderr.lines().filter(|l| l.contains(reason)).count(),
        1,
        "expected the fallback reason {reason:?} logged exactly once on stderr\n{out}"
    );

    let forced = out.value(OUT_FORCED);
    eprintln!("forced io_uring error: {forced}");
    assert!(
        forced.contains(&os_error),
        "forcing io_uring failed with {forced:?}, which does not name {os_error}\n{out}"
    );

    let backend = out.value(OUT_BACKEND);
    assert!(
        backend.starts_with("fallback"),
        "backend description {backend:?}\n{out}"
    );
}

// (1) setup, enter and register fail with EPERM.
#[test]
fn seccomp_eperm_selects_fallback_and_serves_io() {
    let out = run_child("eperm");
    check_fell_back(&out, libc::EPERM);
}

// (2) setup, enter and register fail with ENOSYS.
#[test]
fn seccomp_enosys_selects_fallback_and_serves_io() {
    let out = run_child("enosys");
    check_fell_back(&out, libc::ENOSYS);
}

// (3) Only enter fails (EPERM): setup and the opcode probe succeed, the NOP round trip
// does not, and Auto must still fall back.
#[test]
fn seccomp_enter_only_fails_round_trip_and_selects_fallback() {
    let out = run_child("enter-only");
    check_fell_back(&out, libc::EPERM);
    let reason = out.value(OUT_REASON);
    assert!(
        reason.contains("(first round trip)"),
        "the reason should name the failed step: {reason:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------------

/// Runs one seccomp scenario when `CORING_SECCOMP_CHILD` is set (by the parent tests
/// above); does nothing otherwise.
#[test]
fn child_entry_point() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mode = Mode::parse(&mode);
    assert!(
        std::env::var_os("CORING_BACKEND").is_none(),
        "the child must run with CORING_BACKEND unset"
    );
    // The library's messages go through `log`: this logger prints them on stderr, where
    // the parent counts the fallback reason.
    log::set_logger(&StderrLogger).expect("the child installs the only logger");
    log::set_max_level(log::LevelFilter::Info);
    common::with_watchdog("seccomp child", || child_main(mode));
    println!("{OUT_OK}");
}

fn child_main(mode: Mode) {
    // Whether this kernel lets us use io_uring at all, before we block it.
    let host_has_io_uring = raw_io_uring_setup().is_ok();
    if !host_has_io_uring {
        println!("{OUT_NOTE}io_uring is unavailable on this host even without the filter");
    }

    install_filter(mode);
    check_filter_is_effective(mode, host_has_io_uring);

    // (4) Forcing io_uring where it is blocked is an error, not a silent fallback.
    match Builder::new().backend(BackendKind::IoUring).build() {
        Ok(rt) => panic!(
            "forcing io_uring under a seccomp filter ({mode:?}) built {}",
            rt.backend_description()
        ),
        Err(e) => {
            let expected = if mode.errno() == libc::EPERM {
                io::ErrorKind::PermissionDenied
            } else {
                io::ErrorKind::Unsupported
            };
            assert_eq!(e.kind(), expected, "forced io_uring error: {e}");
            println!("{OUT_FORCED}{e}");
        }
    }

    // Auto falls back and says why.
    let rt = Runtime::new().expect("Auto must build the fallback when io_uring is blocked");
    assert_eq!(rt.backend(), BackendKind::Fallback);
    let reason = rt
        .fallback_reason()
        .expect("a fallback runtime must say why")
        .to_string();
    let os_error = format!("(os error {})", mode.errno());
    assert!(
        reason.contains(&os_error),
        "reason {reason:?} should name {os_error}"
    );
    println!("{OUT_REASON}{reason}");
    println!("{OUT_BACKEND}{}", rt.backend_description());

    // ... and then does real work.
    common::block_on_bounded(&rt, async {
        tcp_echo().await;
        file_round_trip().await;
    });
    let m = rt.metrics();
    assert!(
        m.ops_submitted > 0 && m.ops_completed == m.ops_submitted,
        "{m:?}"
    );
    assert_eq!(rt.ops_in_flight(), 0);
    drop(rt);

    // The filter is still in place: nothing above quietly lifted it.
    check_filter_is_effective(mode, host_has_io_uring);
}

/// A test pattern that is not all one byte.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// An echo of 64 KiB over loopback TCP: accept and echo in a spawned task.
async fn tcp_echo() {
    const LEN: usize = 64 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let server = coring::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (res, buf) = stream.read_exact(Vec::with_capacity(LEN)).await;
        res.expect("server read_exact");
        let (res, _) = stream.write_all(buf).await;
        res.expect("server write_all");
    });
    let client = TcpStream::connect(addr).await.expect("connect");
    let payload = pattern(LEN, 7);
    let (res, payload) = client.write_all(payload).await;
    res.expect("client write_all");
    let (res, echoed) = client.read_exact(Vec::with_capacity(LEN)).await;
    res.expect("client read_exact");
    assert!(echoed == payload, "the echo differs from what was sent");
    server.await.expect("echo task");
}

/// Create, write, sync, close, reopen, read back, compare, remove.
async fn file_round_trip() {
    const LEN: usize = 128 * 1024 + 17;
    let dir = TempDir::new("seccomp");
    let path = dir.path("round-trip");
    let data = pattern(LEN, 3);

    let file = File::create(&path).await.expect("create");
    let (res, data) = file.write_all_at(data, 0).await;
    res.expect("write_all_at");
    file.sync_all().await.expect("sync_all");
    file.close().await.expect("close after writing");

    let file = File::open(&path).await.expect("open");
    let (res, back) = file.read_exact_at(Vec::with_capacity(LEN), 0).await;
    res.expect("read_exact_at");
    assert!(
        back == data,
        "the file's contents differ from what was written"
    );
    let (res, _) = file.read_at(Vec::with_capacity(16), LEN as u64).await;
    assert_eq!(
        res.expect("read_at the end"),
        0,
        "the file is longer than written"
    );
    file.close().await.expect("close after reading");

    coring::fs::remove_file(&path).await.expect("remove_file");
    assert!(!path.exists(), "{} still exists", path.display());
}

// ---------------------------------------------------------------------------------------
// The filter
// ---------------------------------------------------------------------------------------

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// A classic BPF program: for this architecture, the `blocked` syscalls return
/// `SECCOMP_RET_ERRNO | errno`; everything else (and every other architecture) is allowed.
fn filter_program(blocked: &[libc::c_long], errno: i32) -> Vec<libc::sock_filter> {
    let n = u8::try_from(blocked.len()).expect("a short list");
    let arch_offset = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
    let nr_offset = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
    let ld_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;

    // Jump offsets count from the next instruction. Layout:
    //   0      ld arch
    //   1      jeq AUDIT_ARCH ? next : ALLOW
    //   2      ld nr
    //   3+i    jeq blocked[i] ? DENY : next        (i < n)
    //   3+n    ALLOW
    //   4+n    DENY
    let mut prog = vec![
        stmt(ld_abs, arch_offset),
        jump(jeq, AUDIT_ARCH, 0, n + 1),
        stmt(ld_abs, nr_offset),
    ];
    for (i, &nr) in blocked.iter().enumerate() {
        let nr = u32::try_from(nr).expect("syscall number");
        prog.push(jump(jeq, nr, n - i as u8, 0));
    }
    prog.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(
        ret,
        libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA),
    ));
    prog
}

/// Installs the filter for this thread and every thread it creates from now on (the
/// runtime is built on this thread; the fallback's blocking pool is spawned by it).
/// NO_NEW_PRIVS makes this possible without CAP_SYS_ADMIN.
fn install_filter(mode: Mode) {
    let mut prog = filter_program(mode.blocked(), mode.errno());
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).expect("a short program"),
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and affects only this
    // process's future execve calls.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_NO_NEW_PRIVS: {}", io::Error::last_os_error());
    // SAFETY: `fprog` points to `prog`, a valid program of `fprog.len` instructions, and
    // both outlive the call (the kernel copies the program).
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    assert_eq!(rc, 0, "PR_SET_SECCOMP: {}", io::Error::last_os_error());
}

/// `io_uring_setup(1, &params)` straight to the kernel; the ring is closed on drop.
fn raw_io_uring_setup() -> io::Result<OwnedFd> {
    // struct io_uring_params: 120 bytes, zeroed means no flags.
    let mut params = [0u32; 30];
    // SAFETY: the kernel reads and writes at most sizeof(struct io_uring_params) = 120
    // bytes at the pointer, which is exactly `params`, alive for the call.
    let fd = unsafe { libc::syscall(NR_SETUP, 1 as libc::c_uint, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: io_uring_setup returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `io_uring_enter(-1, 0, 0, 0, NULL, 0)`: EBADF from the kernel, or the filter's errno.
fn raw_io_uring_enter_bad_fd() -> io::Error {
    // SAFETY: an invalid descriptor and a null argument: the kernel touches no memory.
    let rc = unsafe {
        libc::syscall(
            NR_ENTER,
            -1 as libc::c_int,
            0 as libc::c_uint,
            0 as libc::c_uint,
            0 as libc::c_uint,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
        )
    };
    assert_eq!(rc, -1, "io_uring_enter on fd -1 succeeded");
    io::Error::last_os_error()
}

/// `io_uring_register(-1, 0, NULL, 0)`: EBADF or EINVAL from the kernel, or the filter's.
fn raw_io_uring_register_bad_fd() -> io::Error {
    // SAFETY: an invalid descriptor and a null argument: the kernel touches no memory.
    let rc = unsafe {
        libc::syscall(
            NR_REGISTER,
            -1 as libc::c_int,
            0 as libc::c_uint,
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_uint,
        )
    };
    assert_eq!(rc, -1, "io_uring_register on fd -1 succeeded");
    io::Error::last_os_error()
}

/// Proves the filter does exactly what the mode says, straight against the kernel.
fn check_filter_is_effective(mode: Mode, host_has_io_uring: bool) {
    let errno = mode.errno();
    let blocked = |nr| mode.blocked().contains(&nr);

    match raw_io_uring_setup() {
        Err(e) if blocked(NR_SETUP) => assert_eq!(e.raw_os_error(), Some(errno), "setup: {e}"),
        Err(e) => assert!(
            !host_has_io_uring,
            "io_uring_setup should pass the {mode:?} filter: {e}"
        ),
        Ok(_) => assert!(!blocked(NR_SETUP), "io_uring_setup passed the filter"),
    }

    // Allowed calls are only checked where the kernel would let them through at all.
    let e = raw_io_uring_enter_bad_fd();
    if blocked(NR_ENTER) {
        assert_eq!(e.raw_os_error(), Some(errno), "enter: {e}");
    } else if host_has_io_uring {
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "enter: {e}");
    }

    let e = raw_io_uring_register_bad_fd();
    if blocked(NR_REGISTER) {
        assert_eq!(e.raw_os_error(), Some(errno), "register: {e}");
    } else if host_has_io_uring {
        assert_ne!(e.raw_os_error(), Some(errno), "register: {e}");
    }
}
