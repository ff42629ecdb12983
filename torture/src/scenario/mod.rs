//! The scenarios, each a function of a [`Ctx`] (backend, seed, profile) that records
//! figures and checks in the context's [`Report`].

pub mod channels;
pub mod proxy;
pub mod reset;
pub mod rlimits;
pub mod rtdrop;
pub mod signals;
pub mod soak;
pub mod storm;

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use coring::{BackendKind, Builder, Runtime};

use crate::report::Report;
use crate::rng::Rng;

/// One scenario: a name for the command line, a line of help, its time bound per
/// profile, and its body.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// The watchdog's bound for (short, long) runs; the short profile's scenarios take a
    /// few seconds each, the bound leaves room for a loaded machine and ASan.
    pub bound: (Duration, Duration),
    pub run: fn(&mut Ctx),
}

/// Every scenario, in the order a full run takes them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "storm",
        about: "cancellation storm: >= 50,000 ops of every kind dropped at random points; \
                buffer drops exact, fds back to baseline; channels; forgotten claims; \
                panicking drops",
        bound: (Duration::from_secs(120), Duration::from_secs(1800)),
        run: storm::run,
    },
    Scenario {
        name: "runtime-drop",
        about: "runtimes dropped with thousands of ops in flight and shutdown_timeout(0): \
                leaks bounded, never freed early; streams and futures reused afterwards",
        bound: (Duration::from_secs(120), Duration::from_secs(900)),
        run: rtdrop::run,
    },
    Scenario {
        name: "signals",
        about: "signal storm without SA_RESTART on every thread during mixed IO: no \
                Interrupted reaches the user",
        bound: (Duration::from_secs(120), Duration::from_secs(900)),
        run: signals::run,
    },
    Scenario {
        name: "rlimits",
        about: "children under low RLIMIT_NOFILE and RLIMIT_MEMLOCK: clean io::Errors, no \
                panic or hang; Auto falls back under memlock 0 and says why",
        bound: (Duration::from_secs(120), Duration::from_secs(600)),
        run: rlimits::run,
    },
    Scenario {
        name: "reset",
        about: "2,000 connections reset at once (some mid-write): the server keeps serving, \
                its descriptors come back",
        bound: (Duration::from_secs(120), Duration::from_secs(900)),
        run: reset::run,
    },
    Scenario {
        name: "soak",
        about: "churn soak: connections, file write/fsync/verify, random cancels; RSS and fd \
                counts sampled, unbounded growth fails",
        bound: (Duration::from_secs(120), Duration::from_secs(1800)),
        run: soak::run,
    },
    Scenario {
        name: "proxy",
        about: "fault proxy (split, delay, stall, reset) in front of examples/file_server and \
                examples/echo_server: byte-exact survivors, servers keep serving, no fd leak",
        bound: (Duration::from_secs(180), Duration::from_secs(1800)),
        run: proxy::run,
    },
];

/// Hidden child workloads (`coring-torture --child NAME ...`), run in a process of their
/// own because they change process state that cannot be undone (resource limits).
pub const CHILDREN: &[(&str, ChildWorkload)] = &[
    ("nofile", rlimits::child_nofile),
    ("memlock", rlimits::child_memlock),
];

/// A hidden child workload: returns the process's exit status.
pub type ChildWorkload = fn(&Ctx) -> i32;

/// The scenario named `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Everything a scenario run knows and records.
pub struct Ctx {
    pub scenario: &'static str,
    pub backend: BackendKind,
    /// The seed of this scenario on this backend (see [`crate::rng::derive`]).
    pub seed: u64,
    pub long: bool,
    /// Leave out checks that exercise an issue 14 defect (`--skip-known`).
    pub skip_known: bool,
    pub rng: Rng,
    pub report: Report,
}

impl Ctx {
    /// A context for `scenario` on `backend`.
    pub fn new(
        scenario: &'static str,
        backend: BackendKind,
        run_seed: u64,
        long: bool,
        skip_known: bool,
    ) -> Ctx {
        let seed = crate::rng::derive(run_seed, scenario, &backend.to_string());
        Ctx {
            scenario,
            backend,
            seed,
            long,
            skip_known,
            rng: Rng::new(seed),
            report: Report::default(),
        }
    }

    /// A builder forced to this run's backend.
    pub fn builder(&self) -> Builder {
        Builder::new().backend(self.backend)
    }

    /// A runtime on this run's backend.
    ///
    /// # Panics
    ///
    /// If it cannot be built (the scenario cannot run at all then).
    pub fn runtime(&self) -> Runtime {
        self.builder()
            .build()
            .unwrap_or_else(|e| panic!("building a {} runtime: {e}", self.backend))
    }

    /// `short` in the short profile, `long` with `--long`.
    pub fn pick<T>(&self, short: T, long: T) -> T {
        if self.long {
            long
        } else {
            short
        }
    }

    /// Records check `name` of this scenario (see [`Report::check`]).
    pub fn check(
        &mut self,
        name: &str,
        defect: Option<u8>,
        ok: bool,
        message: impl FnOnce() -> String,
    ) {
        let name = format!("{}/{name}", self.scenario);
        self.report.check(&name, defect, ok, message);
    }

    /// Records a failure of check `name` of this scenario.
    pub fn fail(&mut self, name: &str, defect: Option<u8>, message: impl Into<String>) {
        let name = format!("{}/{name}", self.scenario);
        self.report.checks += 1;
        self.report.fail(&name, defect, message);
    }

    /// Records a figure.
    pub fn figure(&mut self, key: &str, value: impl ToString) {
        self.report.figure(key, value);
    }

    /// Whether checks of known defect `n` run (not with `--skip-known`); records the skip.
    pub fn wants_known(&mut self, check: &str, n: u8) -> bool {
        if self.skip_known {
            let name = format!("{}/{check}", self.scenario);
            self.report
                .skip(&name, &format!("issue 14 defect {n} (--skip-known)"));
            false
        } else {
            true
        }
    }

    /// Records that check `name` was skipped and why.
    pub fn skip(&mut self, name: &str, why: &str) {
        let name = format!("{}/{name}", self.scenario);
        self.report.skip(&name, why);
    }
}

/// The message of a panic payload.
pub fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs `f`, turning a panic into `Err(message)`.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

/// Runs `fut` on `rt`, giving up (`None`) after `bound`: a scenario step that hangs
/// becomes a failed check, not a stuck process.
pub fn block_on_bounded<F: Future>(rt: &Runtime, bound: Duration, fut: F) -> Option<F::Output> {
    rt.block_on(async { coring::time::timeout(bound, fut).await.ok() })
}

/// Waits (yielding to the runtime) until `cond` holds or `bound` passes; whether it held.
pub async fn eventually(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        coring::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `f` once, without a runtime wake-up in between (submits an operation).
pub async fn poll_once<F: Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

/// The backends a run covers: `both` is io_uring then fallback (io_uring only on Linux).
pub fn backends(spec: &str) -> Result<Vec<BackendKind>, String> {
    match spec {
        "both" | "all" => Ok(if cfg!(target_os = "linux") {
            vec![BackendKind::IoUring, BackendKind::Fallback]
        } else {
            vec![BackendKind::Fallback]
        }),
        other => match BackendKind::parse(other) {
            Ok(BackendKind::Auto) | Err(_) => Err(format!(
                "--backend takes io_uring, fallback or both, not '{other}'"
            )),
            Ok(k) => Ok(vec![k]),
        },
    }
}
