//! Low resource limits, each in a child process (this binary re-executed with a hidden
//! `--child` workload), since a lowered limit or a dropped capability cannot be undone:
//!
//! - `RLIMIT_NOFILE`: a sweep of soft limits just above the descriptors already open (the
//!   runtime may fail to build, operations may fail, but only with clean `io::Error`s:
//!   no panic, no hang), then a runtime under a limit of 64 that opens files until
//!   `EMFILE`, checks what still works while exhausted, frees some descriptors and checks
//!   that connections waiting in the accept queue meanwhile were not lost.
//! - `RLIMIT_MEMLOCK` (after dropping `CAP_IPC_LOCK`): with a limit of 0, `Auto` must fall
//!   back to the fallback backend and say why (issue 14 asks that the reason names
//!   memlock), forced io_uring must fail cleanly, and the fallback must work; with a small
//!   limit, forced io_uring must still serve streams (provided buffers that cannot be
//!   registered must degrade, not fail) and refuse registered buffers cleanly.
//!
//! The children print tagged report lines; the parent merges them into its own report.

use std::time::Duration;

use super::Ctx;
use crate::report::Report;

/// Runs both children and merges what they found.
pub fn run(ctx: &mut Ctx) {
    if !cfg!(target_os = "linux") {
        ctx.skip("all", "Linux only (/proc/self/fd, capabilities)");
        return;
    }
    for child in ["nofile", "memlock"] {
        crate::watchdog::stage(format!("rlimits: {child} child"));
        run_child(ctx, child);
    }
}

fn run_child(ctx: &mut Ctx, name: &str) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--child", name, "--backend", &ctx.backend.to_string()])
        .arg(format!("--seed={:#x}", ctx.seed))
        .env_remove("CORING_BACKEND");
    if ctx.skip_known {
        cmd.arg("--skip-known");
    }
    let fin = match crate::child::run_bounded(cmd, Duration::from_secs(90), crate::verbose()) {
        Ok(f) => f,
        Err(e) => {
            ctx.fail(name, None, format!("cannot start the child: {e}"));
            return;
        }
    };
    let report = Report::from_lines(&fin.stdout);
    let clean_exit = fin
        .status
        .is_some_and(|s| s.code() == Some(0) || s.code() == Some(1));
    ctx.check(
        &format!("{name}-child"),
        None,
        clean_exit && report.is_some(),
        || {
            format!(
                "the {name} child ended {} without finishing its report (a panic or a hang under \
             the limit); stderr: {}",
                fin.how(),
                fin.stderr_tail(8)
            )
        },
    );
    ctx.check(
        &format!("{name}-no-panic"),
        None,
        !fin.stderr.contains("torture: panic"),
        || format!("the {name} child panicked: {}", fin.stderr_tail(8)),
    );
    if let Some(r) = report {
        for (k, v) in r.figures {
            ctx.figure(&format!("{name}.{k}"), v);
        }
        for f in r.failures {
            ctx.report.failures.push(crate::report::Failure {
                check: format!("rlimits/{name}.{}", f.check),
                ..f
            });
        }
        ctx.report.checks += r.checks;
        ctx.report
            .skipped
            .extend(r.skipped.into_iter().map(|s| format!("rlimits/{name}.{s}")));
    }
}

/// Prints a child's report for the parent.
fn finish(r: &Report) -> i32 {
    print!("{}", r.to_lines());
    println!("@torture done");
    i32::from(!r.failures.is_empty())
}

/// `--child nofile`.
pub fn child_nofile(ctx: &Ctx) -> i32 {
    #[cfg(target_os = "linux")]
    {
        let mut r = Report::default();
        nofile::run(ctx, &mut r);
        finish(&r)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ctx;
        finish(&Report::default())
    }
}

/// `--child memlock`.
pub fn child_memlock(ctx: &Ctx) -> i32 {
    #[cfg(target_os = "linux")]
    {
        let mut r = Report::default();
        memlock::run(ctx, &mut r);
        finish(&r)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ctx;
        finish(&Report::default())
    }
}

#[cfg(target_os = "linux")]
mod nofile {
    use std::time::Duration;

    use coring::fs::File;
    use coring::net::{TcpListener, TcpStream, UdpSocket};
    use coring::time::timeout;

    use crate::report::Report;
    use crate::scenario::{catch, Ctx};
    use crate::sys;
    use crate::workload;

    /// Whether a smoke run's errors include a hang (an operation that did not finish) that
    /// the limit does not explain: an echo exchange whose server could not accept (no
    /// descriptor free for the connection) waits for ever by design of the smoke test.
    fn has_hang(t: &crate::workload::Tally) -> bool {
        let server_starved = t
            .server_errors
            .keys()
            .any(|e| e.starts_with("accept") && e.contains("os error 24"));
        t.errors
            .keys()
            .any(|e| e.contains("did not finish") && !(server_starved && e.starts_with("TcpEcho")))
    }

    /// The lowest limit that leaves exactly `free` descriptor numbers free (a new
    /// descriptor takes the lowest free number below the limit, so holes count).
    fn limit_leaving(free: u64) -> u64 {
        let mut limit = 0u64;
        let mut available = 0u64;
        loop {
            // SAFETY: F_GETFD only asks whether the number is an open descriptor.
            let open = unsafe { libc::fcntl(limit as libc::c_int, libc::F_GETFD) } != -1;
            if !open {
                if available == free {
                    return limit;
                }
                available += 1;
            }
            limit += 1;
        }
    }

    fn soft_limit(n: u64) -> std::io::Result<()> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write one rlimit in a live local.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = n.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    pub fn run(ctx: &Ctx, r: &mut Report) {
        let dir = sys::TempDir::new("nofile").expect("temp dir");
        let original = sys::raise_nofile().expect("RLIMIT_NOFILE");
        // The sweep: limits from "no descriptor free" upwards.
        let mut sweep = Vec::new();
        for extra in 0..=12u64 {
            let limit = limit_leaving(extra);
            soft_limit(limit).expect("lowering RLIMIT_NOFILE");
            let step = catch(|| match ctx.builder().build() {
                Err(e) => format!("+{extra}: build failed ({e})"),
                Ok(rt) => {
                    let t = rt.block_on(workload::smoke(
                        dir.0.clone(),
                        extra,
                        Duration::from_secs(3),
                    ));
                    drop(rt);
                    if has_hang(&t) {
                        format!("+{extra}: HANG {}", t.errors_line())
                    } else if t.actions == 0 {
                        format!("+{extra}: no server ({})", t.errors_line())
                    } else {
                        format!(
                            "+{extra}: {} of {} actions failed",
                            t.errors.values().sum::<u64>(),
                            t.actions
                        )
                    }
                }
            });
            soft_limit(original).expect("restoring RLIMIT_NOFILE");
            match step {
                Ok(s) => {
                    r.check("sweep-no-hang", None, !s.contains("HANG"), || s.clone());
                    sweep.push(s);
                }
                Err(p) => r.fail(
                    "sweep-no-panic",
                    None,
                    format!("+{extra} descriptors free: panicked: {p}"),
                ),
            }
        }
        r.figure("sweep", sweep.join(", "));
        exhaustion(ctx, r, &dir);
    }

    /// Under a limit of 64: exhaust, probe, free, recover.
    fn exhaustion(ctx: &Ctx, r: &mut Report, dir: &sys::TempDir) {
        let data = dir.path("data");
        std::fs::write(&data, vec![1u8; 4096]).expect("data file");
        let original = sys::raise_nofile().expect("RLIMIT_NOFILE");
        soft_limit(64).expect("RLIMIT_NOFILE 64");
        let out = catch(|| {
            let rt = ctx
                .builder()
                .build()
                .map_err(|e| format!("build under 64: {e}"))?;
            let res =
                rt.block_on(async { timeout(Duration::from_secs(60), exhaust(&data, dir)).await });
            drop(rt);
            res.map_err(|_| "the exhaustion steps hung for 60 s".to_string())
        });
        soft_limit(original).expect("restoring RLIMIT_NOFILE");
        match out {
            Err(p) => r.fail("exhaust-no-panic", None, format!("panicked: {p}")),
            Ok(Err(e)) => r.fail("exhaust", None, e),
            Ok(Ok(steps)) => {
                r.figure("exhaust", steps.summary());
                for (name, ok, msg) in steps.checks {
                    r.check(name, None, ok, || msg);
                }
            }
        }
    }

    #[derive(Default)]
    struct Steps {
        opened: usize,
        first_error: String,
        checks: Vec<(&'static str, bool, String)>,
    }

    impl Steps {
        fn summary(&self) -> String {
            format!("{} files opened before: {}", self.opened, self.first_error)
        }
        fn check(&mut self, name: &'static str, ok: bool, msg: String) {
            self.checks.push((name, ok, msg));
        }
    }

    fn emfile(e: &std::io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
    }

    async fn exhaust(data: &std::path::Path, dir: &sys::TempDir) -> Steps {
        let mut s = Steps::default();
        let listener = TcpListener::bind("127.0.0.1:0").expect("listener under 64");
        let addr = listener.local_addr().expect("addr");
        // Two connections wait in the accept queue through the exhaustion.
        let pending: Vec<_> = (0..2)
            .filter_map(|_| std::net::TcpStream::connect(addr).ok())
            .collect();
        let mut files = Vec::new();
        loop {
            match File::open(data).await {
                Ok(f) => files.push(f),
                Err(e) => {
                    s.first_error = format!("{e}");
                    s.check(
                        "open-error-clean",
                        emfile(&e),
                        format!("opening past the limit: {e} (expected EMFILE)"),
                    );
                    break;
                }
            }
            if files.len() > 1000 {
                s.check(
                    "open-error-clean",
                    false,
                    "1000 files opened under a limit of 64".into(),
                );
                break;
            }
        }
        s.opened = files.len();
        let bound = Duration::from_secs(5);
        match timeout(bound, TcpStream::connect(addr)).await {
            Ok(Err(e)) => s.check(
                "connect-exhausted",
                emfile(&e),
                format!("connect while exhausted: {e}"),
            ),
            Ok(Ok(_)) => s.check(
                "connect-exhausted",
                false,
                "connect succeeded with no descriptor free".into(),
            ),
            Err(_) => s.check(
                "connect-exhausted",
                false,
                "connect while exhausted hung 5 s".into(),
            ),
        }
        match UdpSocket::bind("127.0.0.1:0") {
            Err(e) => s.check(
                "udp-exhausted",
                emfile(&e),
                format!("UDP bind while exhausted: {e}"),
            ),
            Ok(_) => s.check(
                "udp-exhausted",
                false,
                "UDP bind succeeded with no descriptor free".into(),
            ),
        }
        match timeout(bound, listener.accept()).await {
            Ok(Err(e)) => s.check(
                "accept-exhausted",
                emfile(&e),
                format!("accept while exhausted: {e}"),
            ),
            Ok(Ok(_)) => s.check(
                "accept-exhausted",
                false,
                "accept succeeded with no descriptor free".into(),
            ),
            Err(_) => s.check(
                "accept-exhausted",
                false,
                "accept with a connection queued and no descriptor free neither failed nor \
                 returned within 5 s"
                    .into(),
            ),
        }
        let stat = timeout(bound, coring::fs::metadata(data)).await;
        s.check(
            "statx-exhausted",
            matches!(stat, Ok(Ok(_))),
            format!("statx while exhausted: {stat:?}"),
        );
        let read = timeout(bound, files[0].read_at(Vec::with_capacity(16), 0)).await;
        s.check(
            "read-exhausted",
            matches!(read, Ok((Ok(16), _))),
            format!(
                "reading an open file while exhausted: {:?}",
                read.map(|(r, _)| r)
            ),
        );
        // Free some descriptors: the queued connections must still be there.
        files.truncate(files.len().saturating_sub(16));
        let mut accepted = 0;
        for _ in 0..pending.len() {
            if let Ok(Ok(_)) = timeout(bound, listener.accept()).await {
                accepted += 1;
            }
        }
        s.check(
            "accept-recovers",
            accepted == pending.len(),
            format!(
                "{accepted} of {} connections queued during the exhaustion were accepted after \
                 descriptors were freed",
                pending.len()
            ),
        );
        drop(files);
        let t = workload::smoke(dir.0.clone(), 99, Duration::from_secs(10)).await;
        s.check(
            "smoke-after",
            t.errors.is_empty(),
            format!("after recovering: {}", t.errors_line()),
        );
        s
    }
}

#[cfg(target_os = "linux")]
mod memlock {
    use std::io;
    use std::time::Duration;

    use coring::buf::FixedBufPool;
    use coring::{BackendKind, Builder};

    use crate::report::Report;
    use crate::scenario::{catch, Ctx};
    use crate::sys;
    use crate::workload;

    /// Sets the soft `RLIMIT_MEMLOCK` (the one enforced); the hard limit stays, since
    /// raising it again needs CAP_SYS_RESOURCE, which containers often lack.
    fn set_memlock(bytes: u64) -> io::Result<()> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write one rlimit in a live local.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            lim.rlim_cur = bytes.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Removes CAP_IPC_LOCK from this process's effective and permitted sets, so that
    /// locked and pinned memory is charged to `RLIMIT_MEMLOCK` even for root.
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

    pub fn run(ctx: &Ctx, r: &mut Report) {
        let dir = sys::TempDir::new("memlock").expect("temp dir");
        if let Err(e) = drop_ipc_lock() {
            r.fail("setup", None, format!("dropping CAP_IPC_LOCK: {e}"));
            return;
        }
        set_memlock(0).expect("RLIMIT_MEMLOCK 0");
        let zero = catch(|| {
            let auto = Builder::new().backend(BackendKind::Auto).build();
            let forced = Builder::new().backend(ctx.backend).build();
            (auto, forced)
        });
        let (auto, forced) = match zero {
            Ok(x) => x,
            Err(p) => {
                r.fail(
                    "zero-no-panic",
                    None,
                    format!("building runtimes under memlock 0 panicked: {p}"),
                );
                return;
            }
        };
        match &auto {
            Err(e) => r.fail(
                "zero-auto-builds",
                None,
                format!("Auto under memlock 0: {e}"),
            ),
            Ok(rt) => {
                let reason = rt.fallback_reason().unwrap_or("(none)").to_string();
                r.figure("zero_auto", format!("{} ({reason})", rt.backend()));
                if ctx.backend == BackendKind::IoUring {
                    if rt.backend() == BackendKind::IoUring {
                        r.skip(
                            "zero-auto-falls-back",
                            "this kernel does not charge the ring to RLIMIT_MEMLOCK",
                        );
                    } else {
                        r.check(
                            "zero-auto-falls-back",
                            None,
                            rt.backend() == BackendKind::Fallback,
                            String::new,
                        );
                        let lower = reason.to_ascii_lowercase();
                        if ctx.skip_known {
                            r.skip(
                                "zero-reason-names-memlock",
                                "known (issue 14, \"Also\"; --skip-known)",
                            );
                        } else {
                            r.check("zero-reason-names-memlock", Some(10), lower.contains("memlock"), || {
                                format!("the fallback reason under RLIMIT_MEMLOCK=0 does not name memlock: {reason:?}")
                            });
                        }
                    }
                }
                let t = rt.block_on(workload::smoke(dir.0.clone(), 1, Duration::from_secs(10)));
                r.check("zero-auto-works", None, t.errors.is_empty(), || {
                    format!("the Auto runtime under memlock 0: {}", t.errors_line())
                });
            }
        }
        match (&forced, ctx.backend) {
            (Err(e), BackendKind::IoUring) => {
                r.figure("zero_forced_io_uring", format!("{:?}: {e}", e.kind()));
                r.check("zero-forced-clean-error", None, e.kind() == io::ErrorKind::OutOfMemory, || {
                    format!("forced io_uring under memlock 0 failed with {:?} ({e}), not OutOfMemory", e.kind())
                });
            }
            (Err(e), _) => r.fail(
                "zero-forced",
                None,
                format!("the fallback under memlock 0: {e}"),
            ),
            (Ok(rt), _) => {
                r.figure("zero_forced", rt.backend_description());
                let t = rt.block_on(workload::smoke(dir.0.clone(), 2, Duration::from_secs(10)));
                r.check("zero-forced-works", None, t.errors.is_empty(), || {
                    format!("{} under memlock 0: {}", rt.backend(), t.errors_line())
                });
            }
        }
        drop((auto, forced));
        if ctx.backend == BackendKind::IoUring {
            small_limit(r, &dir);
        }
    }

    /// io_uring under a 256 KiB limit: the ring fits, the 1 MiB of provided buffers for
    /// multishot receives and a 1 MiB registered pool do not.
    fn small_limit(r: &mut Report, dir: &sys::TempDir) {
        set_memlock(256 * 1024).expect("RLIMIT_MEMLOCK 256 KiB");
        let out = catch(|| {
            let rt = match Builder::new().backend(BackendKind::IoUring).build() {
                Ok(rt) => rt,
                Err(e) => return Err(format!("forced io_uring under 256 KiB: {e}")),
            };
            let t = rt.block_on(workload::smoke(dir.0.clone(), 3, Duration::from_secs(10)));
            let reg = rt.block_on(async {
                let pool = FixedBufPool::new(16, 64 * 1024);
                pool.register()
            });
            Ok((t, reg))
        });
        match out {
            Err(p) => r.fail("small-no-panic", None, format!("panicked: {p}")),
            Ok(Err(e)) => r.skip("small", &e),
            Ok(Ok((t, reg))) => {
                r.check("small-streams-work", None, t.errors.is_empty(), || {
                    format!("io_uring under memlock 256 KiB: {}", t.errors_line())
                });
                r.figure("small_register_1MiB", format!("{reg:?}"));
                r.check(
                    "small-register-clean",
                    None,
                    reg.as_ref()
                        .err()
                        .is_none_or(|e| e.kind() == io::ErrorKind::OutOfMemory),
                    || format!("registering 1 MiB under 256 KiB: {reg:?}"),
                );
            }
        }
    }
}
