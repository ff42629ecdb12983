//! The micro benchmarks: spawning no-op tasks, and many concurrent 1 ms sleeps.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring::time::sleep_until;
use coring::BackendKind;
use serde_json::json;

use crate::cli::backend_name;
use crate::hist::LatencyHist;
use crate::progress::Progress;
use crate::report::{Mode, RunResult};
use crate::sys;
use crate::thread::on_pinned_thread;

/// How long each timer sleeps.
pub const TIMER_SLEEP: Duration = Duration::from_millis(1);
// Before the measurement, each run does one unmeasured batch of the same size: a fresh
// process (or thread arena) otherwise pays for faulting in the memory of a million tasks
// in whichever run comes first, which would favour the second backend.
/// Progress is published every this many tasks.
const PROGRESS_EVERY: u64 = 1 << 14;

/// What the benchmark thread reports.
struct Measured {
    backend: BackendKind,
    description: String,
    /// Wall time of the whole batch.
    total: Duration,
    /// Of which spent spawning (the rest is awaiting).
    spawning: Duration,
    cpu: Option<Duration>,
    run_wait: Option<Duration>,
    hist: Option<LatencyHist>,
}

/// Which micro benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Micro {
    /// No-op tasks.
    Spawn,
    /// Tasks that each sleep [`TIMER_SLEEP`] and record how late they woke.
    Timers,
}

/// Spawns `tasks` no-op tasks and awaits them all, on `backend`.
pub fn run_spawn(tasks: u64, backend: BackendKind, progress: &mut Progress) -> RunResult {
    let mut res = RunResult::new(
        Mode::Spawn,
        format!("{tasks} tasks"),
        backend_name(backend),
        "task",
    );
    res.params = json!({ "tasks": tasks });
    let budget = Duration::from_secs(30) + Duration::from_micros(tasks * 10);
    let measured = measure(Micro::Spawn, tasks, backend, budget, progress);
    fill(&mut res, tasks, measured);
    res
}

/// Sets `timers` concurrent 1 ms sleeps (one task each) and waits for all, on `backend`.
pub fn run_timers(timers: u64, backend: BackendKind, progress: &mut Progress) -> RunResult {
    let mut res = RunResult::new(
        Mode::Timers,
        format!("{timers} x 1ms"),
        backend_name(backend),
        "timer",
    );
    res.params = json!({ "timers": timers, "sleep_ms": TIMER_SLEEP.as_secs_f64() * 1e3 });
    let budget = Duration::from_secs(30) + Duration::from_micros(timers * 20);
    let measured = measure(Micro::Timers, timers, backend, budget, progress);
    fill(&mut res, timers, measured);
    res
}

/// On a pinned thread with a fresh runtime on `backend`: an unmeasured batch of `n` tasks of
/// kind `micro`, then the measured one.
fn measure(
    micro: Micro,
    n: u64,
    backend: BackendKind,
    budget: Duration,
    progress: &mut Progress,
) -> Result<Measured, String> {
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    let name = match micro {
        Micro::Spawn => "bench-spawn",
        Micro::Timers => "bench-timers",
    };
    on_pinned_thread(name, progress, None, &counter, budget, move || {
        let rt = coring::Builder::new()
            .backend(backend)
            .build()
            .map_err(|e| format!("runtime on {}: {e}", backend_name(backend)))?;
        let m = rt.block_on(async {
            batch(micro, n, &AtomicU64::new(0)).await?;
            let (u0, c0) = (sys::ThreadUsage::now(), sys::process_cpu());
            let (total, spawning, hist) = batch(micro, n, &c).await?;
            let (u1, c1) = (sys::ThreadUsage::now(), sys::process_cpu());
            Ok::<_, String>(Measured {
                backend: rt.backend(),
                description: rt.backend_description(),
                total,
                spawning,
                cpu: c1.zip(c0).map(|(b, a)| b.saturating_sub(a)),
                run_wait: u1.since(u0).run_wait,
                hist: (micro == Micro::Timers).then_some(hist),
            })
        });
        drop(rt);
        m
    })
}

/// Spawns `n` tasks of kind `micro`, then awaits them in order, publishing progress into
/// `counter`; returns the total time, the time spent spawning, and the timers' lateness.
async fn batch(
    micro: Micro,
    n: u64,
    counter: &AtomicU64,
) -> Result<(Duration, Duration, LatencyHist), String> {
    let hist = Rc::new(RefCell::new(LatencyHist::new()));
    let mut handles = Vec::with_capacity(n as usize);
    let t0 = Instant::now();
    for _ in 0..n {
        let task = match micro {
            Micro::Spawn => coring::spawn(async {}),
            Micro::Timers => coring::spawn(sleep_once(hist.clone())),
        };
        handles.push(task);
    }
    let spawned = t0.elapsed();
    for (i, h) in handles.into_iter().enumerate() {
        h.await.map_err(|e| format!("task {i}: {e:?}"))?;
        if (i as u64 + 1).is_multiple_of(PROGRESS_EVERY) {
            counter.store(i as u64 + 1, Ordering::Relaxed);
        }
    }
    let total = t0.elapsed();
    let hist = hist.borrow().clone();
    Ok((total, spawned, hist))
}

/// Sleeps [`TIMER_SLEEP`] and records into `hist` how late it woke.
async fn sleep_once(hist: Rc<RefCell<LatencyHist>>) {
    let deadline = Instant::now() + TIMER_SLEEP;
    sleep_until(deadline).await;
    let late = Instant::now().saturating_duration_since(deadline);
    hist.borrow_mut().record(late.as_nanos() as u64);
}

fn fill(res: &mut RunResult, n: u64, measured: Result<Measured, String>) {
    match measured {
        Ok(m) => {
            res.backend = backend_name(m.backend).to_string();
            res.backend_description = m.description;
            res.ops = n;
            res.elapsed = m.total;
            res.total = Some(m.total);
            res.cpu = m.cpu;
            res.run_wait = crate::stats::wait_fraction(m.run_wait, m.total);
            res.latency = m.hist;
            if let serde_json::Value::Object(o) = &mut res.params {
                o.insert("spawn_ms".into(), json!(m.spawning.as_secs_f64() * 1e3));
                o.insert(
                    "await_ms".into(),
                    json!((m.total - m.spawning).as_secs_f64() * 1e3),
                );
            }
            res.note_cpu_wait();
        }
        Err(e) => res.error = Some(e),
    }
}
