//! The micro benchmarks: spawning no-op tasks, and many concurrent 1 ms sleeps.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring::time::sleep_until;
use coring::{BackendKind, Runtime};
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

fn runtime(backend: BackendKind) -> Result<Runtime, String> {
    coring::Builder::new()
        .backend(backend)
        .build()
        .map_err(|e| format!("runtime on {}: {e}", backend_name(backend)))
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
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    let budget = Duration::from_secs(30) + Duration::from_micros(tasks * 10);
    let measured = on_pinned_thread("bench-spawn", progress, None, &counter, budget, move || {
        let rt = runtime(backend)?;
        let m = rt.block_on(async {
            spawn_batch(tasks, &AtomicU64::new(0)).await?;
            let (u0, c0) = (sys::ThreadUsage::now(), sys::process_cpu());
            let (total, spawning) = spawn_batch(tasks, &c).await?;
            let (u1, c1) = (sys::ThreadUsage::now(), sys::process_cpu());
            Ok::<_, String>(Measured {
                backend: rt.backend(),
                description: rt.backend_description(),
                total,
                spawning,
                cpu: c1.zip(c0).map(|(b, a)| b.saturating_sub(a)),
                run_wait: u1.since(u0).run_wait,
                hist: None,
            })
        });
        drop(rt);
        m
    });
    fill(&mut res, tasks, measured);
    res
}

/// Spawns `n` no-op tasks, then awaits them in order; returns (total, spawning) time.
async fn spawn_batch(n: u64, counter: &AtomicU64) -> Result<(Duration, Duration), String> {
    let mut handles = Vec::with_capacity(n as usize);
    let t0 = Instant::now();
    for _ in 0..n {
        handles.push(coring::spawn(async {}));
    }
    let spawned = t0.elapsed();
    for (i, h) in handles.into_iter().enumerate() {
        h.await.map_err(|e| format!("task {i}: {e:?}"))?;
        if (i as u64 + 1).is_multiple_of(PROGRESS_EVERY) {
            counter.store(i as u64 + 1, Ordering::Relaxed);
        }
    }
    Ok((t0.elapsed(), spawned))
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
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    let budget = Duration::from_secs(30) + Duration::from_micros(timers * 20);
    let measured = on_pinned_thread(
        "bench-timers",
        progress,
        None,
        &counter,
        budget,
        move || {
            let rt = runtime(backend)?;
            let m = rt.block_on(async {
                let discard = Rc::new(RefCell::new(LatencyHist::new()));
                timer_batch(timers, &discard, &AtomicU64::new(0)).await?;
                let hist = Rc::new(RefCell::new(LatencyHist::new()));
                let (u0, c0) = (sys::ThreadUsage::now(), sys::process_cpu());
                let (total, spawning) = timer_batch(timers, &hist, &c).await?;
                let (u1, c1) = (sys::ThreadUsage::now(), sys::process_cpu());
                let hist = hist.borrow().clone();
                Ok::<_, String>(Measured {
                    backend: rt.backend(),
                    description: rt.backend_description(),
                    total,
                    spawning,
                    cpu: c1.zip(c0).map(|(b, a)| b.saturating_sub(a)),
                    run_wait: u1.since(u0).run_wait,
                    hist: Some(hist),
                })
            });
            drop(rt);
            m
        },
    );
    fill(&mut res, timers, measured);
    res
}

/// `n` tasks each sleeping 1 ms and recording how late it woke; returns (total, spawning).
async fn timer_batch(
    n: u64,
    hist: &Rc<RefCell<LatencyHist>>,
    counter: &AtomicU64,
) -> Result<(Duration, Duration), String> {
    let mut handles = Vec::with_capacity(n as usize);
    let t0 = Instant::now();
    for _ in 0..n {
        let hist = hist.clone();
        handles.push(coring::spawn(async move {
            let deadline = Instant::now() + TIMER_SLEEP;
            sleep_until(deadline).await;
            let late = Instant::now().saturating_duration_since(deadline);
            hist.borrow_mut().record(late.as_nanos() as u64);
        }));
    }
    let spawned = t0.elapsed();
    for (i, h) in handles.into_iter().enumerate() {
        h.await.map_err(|e| format!("timer task {i}: {e:?}"))?;
        if (i as u64 + 1).is_multiple_of(PROGRESS_EVERY) {
            counter.store(i as u64 + 1, Ordering::Relaxed);
        }
    }
    Ok((t0.elapsed(), spawned))
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
            if let Some(f) = res.run_wait.filter(|&f| f > crate::echo::NOISY_WAIT) {
                res.notes.push(format!(
                    "the benchmark thread waited for a CPU {:.0}% of the time (other processes, or \
                     this run's own helper threads, had it)",
                    f * 100.0
                ));
            }
        }
        Err(e) => res.error = Some(e),
    }
}
