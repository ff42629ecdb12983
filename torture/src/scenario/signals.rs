//! A signal storm: a no-op handler installed without `SA_RESTART`, and a thread sending
//! that signal to every other thread of the process (runtime cores, blocking-pool
//! threads, io_uring workers, the main thread) hundreds of times a second, while a
//! two-core pool runs the mixed workload. Every interrupted system call must be retried
//! inside the runtime: no `Interrupted` error may reach the user.
//!
//! One more waiter rides along: opens that wait for a lease break (a read lease held on the
//! file, released after a moment), which on the fallback backend run on blocking-pool
//! threads (issue 14 defect 5: their EINTR escapes).
//!
//! Linux only (`/proc/self/task`, `tgkill`, leases); elsewhere the scenario is skipped.

use super::Ctx;

/// Runs the scenario (skipped off Linux).
pub fn run(ctx: &mut Ctx) {
    #[cfg(target_os = "linux")]
    linux::run(ctx);
    #[cfg(not(target_os = "linux"))]
    ctx.skip("all", "Linux only (/proc/self/task, tgkill, leases)");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use coring::fs::OpenOptions;
    use coring::Pool;

    use super::Ctx;
    use crate::sys;
    use crate::watchdog::stage;
    use crate::workload::{self, Plan, Tally};

    static DELIVERED: AtomicU64 = AtomicU64::new(0);

    extern "C" fn on_signal(_sig: libc::c_int) {
        // Async-signal-safe: one atomic add.
        DELIVERED.fetch_add(1, Ordering::Relaxed);
    }

    /// Installs the counting no-op handler for `sig`, without `SA_RESTART`.
    fn install(sig: libc::c_int) -> std::io::Result<()> {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; sigemptyset
        // and sigaction only read and write the live local; the handler is an extern "C"
        // fn doing one atomic add, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The thread ids of this process.
    fn threads() -> Vec<libc::pid_t> {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn gettid() -> libc::pid_t {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
    }

    /// Sends SIGUSR1 to every other thread, over and over, until `stop`; returns
    /// (signals sent, rounds).
    fn storm(stop: Arc<AtomicBool>, pause: Duration) -> std::thread::JoinHandle<(u64, u64)> {
        std::thread::Builder::new()
            .name("signal-storm".into())
            .spawn(move || {
                let me = gettid();
                // SAFETY: getpid has no preconditions.
                let pid = unsafe { libc::getpid() };
                let (mut sent, mut rounds) = (0u64, 0u64);
                while !stop.load(Ordering::SeqCst) {
                    for tid in threads() {
                        if tid == me {
                            continue;
                        }
                        // SAFETY: tgkill sends a signal whose handler is installed; a
                        // thread that exited meanwhile gives ESRCH, nothing else happens.
                        let rc =
                            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
                        if rc == 0 {
                            sent += 1;
                        }
                    }
                    rounds += 1;
                    std::thread::sleep(pause);
                }
                (sent, rounds)
            })
            .expect("spawning the signal storm")
    }

    /// What the lease-break opens did.
    #[derive(Debug, Default)]
    struct Leases {
        opens: u64,
        interrupted: u64,
        errors: Vec<String>,
        skipped: Option<String>,
    }

    /// Takes a read lease on `path` from a std descriptor; `Err` says why not.
    fn take_lease(path: &Path) -> Result<std::fs::File, String> {
        let f = std::fs::File::open(path).map_err(|e| format!("open: {e}"))?;
        // SAFETY: fcntl F_SETLEASE on a descriptor we own.
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
            return Err(format!(
                "F_SETLEASE: {} (leases disabled or not permitted here)",
                std::io::Error::last_os_error()
            ));
        }
        Ok(f)
    }

    /// `n` opens for writing, each of which must wait for a read lease to be broken; a
    /// thread releases the lease after 30 ms, while the storm goes on.
    async fn lease_opens(path: PathBuf, n: u32) -> Leases {
        let mut out = Leases::default();
        for _ in 0..n {
            let lease = match take_lease(&path) {
                Ok(f) => f,
                Err(why) => {
                    out.skipped = Some(why);
                    return out;
                }
            };
            let releaser = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                // SAFETY: fcntl F_SETLEASE on a descriptor we own.
                unsafe { libc::fcntl(lease.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
                drop(lease);
            });
            match OpenOptions::new().write(true).open(&path).await {
                Ok(f) => {
                    out.opens += 1;
                    drop(f);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.interrupted += 1,
                Err(e) => out.errors.push(e.to_string()),
            }
            let _ = releaser.join();
        }
        out
    }

    pub fn run(ctx: &mut Ctx) {
        for sig in [libc::SIGUSR1, libc::SIGIO] {
            if let Err(e) = install(sig) {
                ctx.fail("setup", None, format!("sigaction({sig}): {e}"));
                return;
            }
        }
        let dir = sys::TempDir::new("signals").expect("temp dir");
        let lease_file = dir.path("leased");
        std::fs::write(&lease_file, b"leased").expect("lease file");
        let secs = ctx.pick(5, 60);
        let cores = 2;
        let pool = match Pool::builder()
            .cores(cores)
            .pin(false)
            .backend(ctx.backend)
            .build()
        {
            Ok(p) => p,
            Err(e) => {
                ctx.fail(
                    "setup",
                    None,
                    format!("building a {}-core pool: {e}", cores),
                );
                return;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let delivered_before = DELIVERED.load(Ordering::SeqCst);
        let stormer = storm(stop.clone(), Duration::from_micros(300));
        stage(format!(
            "signals: {secs} s of mixed IO on {cores} cores under a signal storm"
        ));
        let until = Instant::now() + Duration::from_secs(secs);
        let mut handles = Vec::new();
        for core in 0..cores {
            let plan = Plan {
                clients: 8,
                until,
                cancel: 0.0,
                dir: dir.0.clone(),
                seed: ctx.rng.next_u64(),
            };
            handles.push(pool.spawn_on(core, move || workload::run(plan)));
        }
        let lease_path = lease_file.clone();
        let lease_n = ctx.pick(40, 400);
        let mut leases = pool.spawn_on(0, move || lease_opens(lease_path, lease_n));
        let bound = Duration::from_secs(secs + 90);
        let mut tally = Tally::default();
        let mut joined = true;
        for mut h in handles {
            match super::super::catch(|| h.wait(bound)) {
                Ok(Ok(t)) => tally.merge(t),
                Ok(Err(e)) => {
                    joined = false;
                    ctx.fail("workload", None, format!("a core's workload failed: {e}"));
                }
                Err(p) => {
                    joined = false;
                    ctx.fail("workload", None, format!("waiting for a core: {p}"));
                }
            }
        }
        let leases = super::super::catch(|| leases.wait(bound));
        // The pool shuts down under the storm too.
        stage("signals: shutting the pool down");
        let shutdown = pool.shutdown();
        stop.store(true, Ordering::SeqCst);
        let (sent, rounds) = stormer.join().unwrap_or((0, 0));
        let delivered = DELIVERED.load(Ordering::SeqCst) - delivered_before;
        ctx.figure("storm_secs", secs);
        ctx.figure("signals_sent", sent);
        ctx.figure("signals_delivered", delivered);
        ctx.figure("storm_rounds", rounds);
        ctx.figure(
            "signal_rate_hz",
            format!("{:.0}", delivered as f64 / secs as f64),
        );
        ctx.figure("ops", tally.actions);
        ctx.figure("bytes_verified", tally.bytes_verified);
        ctx.figure("connections", tally.connections);
        ctx.figure("files", tally.files);
        ctx.check("delivered", None, delivered > 0, || {
            "no signal was delivered: the storm did not run".to_string()
        });
        ctx.check("no-interrupted", None, tally.interrupted == 0, || {
            format!(
                "{} operations returned Interrupted to the user: {}",
                tally.interrupted,
                tally.errors_line()
            )
        });
        ctx.check("no-errors", None, tally.errors.is_empty(), || {
            format!(
                "operations failed under the signal storm: {}",
                tally.errors_line()
            )
        });
        ctx.check("data", None, tally.corrupt.is_empty(), || {
            tally.corrupt.join("; ")
        });
        ctx.check(
            "server-errors",
            None,
            tally.server_errors.is_empty(),
            || format!("echo server errors: {:?}", tally.server_errors),
        );
        ctx.check("pool-shutdown", None, joined && shutdown.is_ok(), || {
            format!("pool shutdown: {shutdown:?}")
        });
        match leases {
            Ok(Ok(l)) => {
                if let Some(why) = &l.skipped {
                    ctx.skip("lease-open", why);
                } else {
                    ctx.figure("lease_opens", format!("{} of {lease_n}", l.opens));
                    if ctx.wants_known("lease-open-eintr", 5) {
                        ctx.check("lease-open-eintr", Some(5), l.interrupted == 0, || {
                            format!(
                                "{} of {lease_n} opens waiting for a lease break returned \
                                 Interrupted",
                                l.interrupted
                            )
                        });
                    }
                    ctx.check("lease-open-errors", None, l.errors.is_empty(), || {
                        format!("lease-break opens failed: {}", l.errors.join("; "))
                    });
                }
            }
            Ok(Err(e)) => ctx.fail("lease-open", None, format!("the lease task failed: {e}")),
            Err(p) => ctx.fail(
                "lease-open",
                None,
                format!("waiting for the lease task: {p}"),
            ),
        }
    }
}
