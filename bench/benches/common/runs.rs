//! What the comparison benches (`vs_tokio`, `stream`) share: interleaved runs with
//! medians and paired ratios, table formatting, and thread CPU / run-queue wait clocks.
//! Included with `#[path]`, so each bench uses only part of it.
#![allow(dead_code)]

use std::fmt;
use std::io;
use std::time::Duration;

use coring::BackendKind;

/// Every run's result, by contender and round: `by[contender][round]` (`None` where the
/// run failed).
pub struct Runs<C, R> {
    contenders: Vec<C>,
    by: Vec<Vec<Option<R>>>,
    /// Some run failed (its error was printed).
    pub failed: bool,
}

impl<C: Copy + PartialEq + fmt::Display, R: fmt::Display> Runs<C, R> {
    /// Runs each contender `reps` times, interleaved: one run of each per round, the order
    /// rotating every round so no contender always runs first. Prints each run's result.
    pub fn interleave(
        reps: usize,
        contenders: &[C],
        mut run: impl FnMut(C) -> Result<R, String>,
    ) -> Self {
        let mut by: Vec<Vec<Option<R>>> = contenders.iter().map(|_| Vec::new()).collect();
        let mut failed = false;
        for rep in 0..reps {
            for i in 0..contenders.len() {
                let idx = (i + rep) % contenders.len();
                let c = contenders[idx];
                let r = match run(c) {
                    Ok(r) => {
                        println!("  run {}/{reps}  {c:<26} {r}", rep + 1);
                        Some(r)
                    }
                    Err(e) => {
                        eprintln!("  run {}/{reps}  {c:<26} ERROR: {e}", rep + 1);
                        failed = true;
                        None
                    }
                };
                by[idx].push(r);
            }
        }
        Runs {
            contenders: contenders.to_vec(),
            by,
            failed,
        }
    }

    /// `c`'s runs, in round order (`None` for a failed one).
    pub fn runs_of(&self, c: C) -> &[Option<R>] {
        self.contenders
            .iter()
            .position(|x| *x == c)
            .map_or(&[], |i| &self.by[i])
    }

    /// The median of `f` over `c`'s successful runs.
    pub fn median(&self, c: C, f: impl Fn(&R) -> f64) -> Option<f64> {
        median(self.runs_of(c).iter().flatten().map(f))
    }

    /// The smallest `f` over `c`'s successful runs: for a cost (CPU per request) on a
    /// shared machine, the run least disturbed by other load, since load only adds to it.
    pub fn min(&self, c: C, f: impl Fn(&R) -> f64) -> Option<f64> {
        self.runs_of(c)
            .iter()
            .flatten()
            .map(f)
            .filter(|x| !x.is_nan())
            .min_by(f64::total_cmp)
    }

    /// `f` of each of `c`'s runs, in run order, with `decimals` decimals (none from 1000 up).
    pub fn each(&self, c: C, decimals: usize, f: impl Fn(&R) -> f64) -> String {
        self.runs_of(c)
            .iter()
            .flatten()
            .map(|r| {
                let v = f(r);
                if v >= 1000.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.decimals$}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The median, over rounds where both ran, of `f(c) / f(base)` in the same round: less
    /// sensitive than a ratio of medians to load that changes from one round to the next.
    pub fn paired_ratio(&self, c: C, base: C, f: impl Fn(&R) -> f64) -> Option<f64> {
        let pairs = self.runs_of(c).iter().zip(self.runs_of(base));
        median(pairs.filter_map(|(a, b)| Some(f(a.as_ref()?) / f(b.as_ref()?))))
    }
}

/// The median (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `v` with `decimals` decimals, or "-".
pub fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// `v / base` as "1.23x", or "-".
pub fn fmt_ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => fmt_x(Some(v / b)),
        _ => "-".to_string(),
    }
}

/// A ratio as "1.23x", or "-".
pub fn fmt_x(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

/// Reads a CPU-time clock of this thread or process.
pub fn cpu_clock(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; clock_gettime only
    // writes into it.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    (r == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The calling thread's CPU time, and how long it sat runnable waiting for a CPU (a sign
/// that other processes competed for its core).
#[derive(Debug, Clone, Copy)]
pub struct ThreadUsage {
    pub cpu: Option<Duration>,
    pub run_wait: Option<Duration>,
}

impl ThreadUsage {
    /// The calling thread's counters now.
    pub fn now() -> ThreadUsage {
        // "<ns on cpu> <ns runnable but waiting> <timeslices>" (Linux, CONFIG_SCHED_INFO).
        let run_wait = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .map(Duration::from_nanos);
        ThreadUsage {
            cpu: cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID),
            run_wait,
        }
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: ThreadUsage) -> ThreadUsage {
        let diff =
            |b: Option<Duration>, a: Option<Duration>| b.zip(a).map(|(b, a)| b.saturating_sub(a));
        ThreadUsage {
            cpu: diff(self.cpu, earlier.cpu),
            run_wait: diff(self.run_wait, earlier.run_wait),
        }
    }
}

/// Pins the calling thread to `core` (if any); says so when it cannot.
pub fn pin(core: Option<core_affinity::CoreId>) {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core) {
            eprintln!("could not pin a thread to CPU {}", core.id);
        }
    }
}

/// "CPU n", or what an unpinned thread is called in the tables.
pub fn core_name(core: Option<core_affinity::CoreId>) -> String {
    match core {
        Some(c) => format!("CPU {}", c.id),
        None => "an unpinned thread".to_string(),
    }
}

/// A coring runtime on exactly `kind`.
pub fn coring_runtime(kind: BackendKind) -> io::Result<coring::Runtime> {
    let rt = coring::Builder::new().backend(kind).build()?;
    if rt.backend() != kind {
        return Err(io::Error::other(format!(
            "asked for {kind}, got {}",
            rt.backend_description()
        )));
    }
    Ok(rt)
}

/// A tokio `current_thread` runtime with IO and timers.
pub fn tokio_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Exits through `fail` if `CORING_BACKEND` is set: it would override the backend each
/// coring contender asks for. `instead` names the bench's own option.
pub fn reject_backend_override(fail: fn(&str) -> !, instead: &str) {
    if let Ok(v) = std::env::var("CORING_BACKEND") {
        fail(&format!(
            "CORING_BACKEND={v} is set; it would override every coring contender's backend. \
             Unset it and use {instead} instead."
        ));
    }
}

/// Whether a coring runtime on exactly `kind` can be built here; says why not.
pub fn backend_usable(bench: &str, kind: BackendKind) -> bool {
    match coring_runtime(kind) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("{bench}: skipping coring on {kind}: {e}");
            false
        }
    }
}

/// The CPUs this process may use; warns when there are fewer than 2, since then `sides`
/// (the two threads a run pins apart) share one and `figures` do not compare.
pub fn usable_cores(bench: &str, sides: &str, figures: &str) -> Vec<core_affinity::CoreId> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.len() < 2 {
        eprintln!(
            "{bench}: fewer than 2 CPUs usable; {sides} share a CPU, so {figures} are not \
             comparable with other machines"
        );
    }
    cores
}
