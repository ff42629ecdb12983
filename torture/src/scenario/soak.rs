//! The churn soak: a two-core pool runs the mixed workload (connections opened, used and
//! closed or reset; files written, fsynced, read back and verified; pipes, timers, UDP)
//! with a fifth of the actions cancelled at a random point, for seconds (short profile)
//! or minutes (`--long`). A sampler thread reads the process's RSS and descriptor count
//! every 100 ms. Memory and descriptors must stay flat: the last quarter of the run may
//! not rise above the second quarter (after warm-up) by more than a slack, and the
//! descriptors must be back at their count before the pool once it has shut down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring::Pool;

use super::Ctx;
use crate::sys;
use crate::watchdog::stage;
use crate::workload::{self, Plan, Tally};

/// One sample: seconds since the start, RSS (KiB, if known), open descriptors.
type Sample = (f64, Option<u64>, usize);

fn sampler(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut v = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            v.push((
                start.elapsed().as_secs_f64(),
                sys::rss_kib(),
                sys::fd_count(),
            ));
            std::thread::sleep(Duration::from_millis(100));
        }
        v
    })
}

/// The largest RSS and descriptor count among samples whose time lies in `from..to`.
fn window_max(samples: &[Sample], from: f64, to: f64) -> (Option<u64>, usize) {
    let w = samples.iter().filter(|s| s.0 >= from && s.0 < to);
    let rss = w.clone().filter_map(|s| s.1).max();
    let fds = w.map(|s| s.2).max().unwrap_or(0);
    (rss, fds)
}

pub fn run(ctx: &mut Ctx) {
    let secs = ctx.pick(10u64, 180);
    let cores = 2;
    let dir = sys::TempDir::new("soak").expect("temp dir");
    let fd_base = sys::fd_count();
    let pool = match Pool::builder()
        .cores(cores)
        .pin(false)
        .backend(ctx.backend)
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            ctx.fail("setup", None, format!("building the pool: {e}"));
            return;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = sampler(stop.clone());
    stage(format!("soak: {secs} s of churn on {cores} cores"));
    let until = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..cores)
        .map(|core| {
            let plan = Plan {
                clients: 12,
                until,
                cancel: 0.2,
                dir: dir.0.clone(),
                seed: ctx.rng.next_u64(),
            };
            pool.spawn_on(core, move || workload::run(plan))
        })
        .collect();
    let mut tally = Tally::default();
    for mut h in handles {
        match super::catch(|| h.wait(Duration::from_secs(secs + 90))) {
            Ok(Ok(t)) => tally.merge(t),
            Ok(Err(e)) => ctx.fail("workload", None, format!("a core's workload failed: {e}")),
            Err(p) => ctx.fail("workload", None, format!("waiting for a core: {p}")),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let samples = sampling.join().unwrap_or_default();
    stage("soak: shutting the pool down");
    let shutdown = pool.shutdown();
    let fd_end = sys::fd_count();
    let run = secs as f64;
    let rss: Vec<u64> = samples.iter().filter_map(|s| s.1).collect();
    let fds: Vec<usize> = samples.iter().map(|s| s.2).collect();
    ctx.figure("soak_secs", secs);
    ctx.figure("ops", tally.actions);
    ctx.figure("ops_cancelled", tally.cancelled);
    ctx.figure("connections", tally.connections);
    ctx.figure("files", tally.files);
    ctx.figure("bytes_verified", tally.bytes_verified);
    ctx.figure("server_resets", tally.server_resets);
    ctx.figure("samples", samples.len());
    if let (Some(lo), Some(hi)) = (rss.iter().min(), rss.iter().max()) {
        ctx.figure("rss_min_kib", lo);
        ctx.figure("rss_max_kib", hi);
        ctx.figure("rss", format!("{}..{}", sys::kib(*lo), sys::kib(*hi)));
    }
    if let (Some(lo), Some(hi)) = (fds.iter().min(), fds.iter().max()) {
        ctx.figure("fd_min", lo);
        ctx.figure("fd_max", hi);
    }
    let (rss_q2, fd_q2) = window_max(&samples, run * 0.25, run * 0.5);
    let (rss_q4, fd_q4) = window_max(&samples, run * 0.75, run * 1.01);
    ctx.figure(
        "growth",
        format!(
            "q2 max rss={} fds={fd_q2}, q4 max rss={} fds={fd_q4}",
            rss_q2.map_or("?".into(), sys::kib),
            rss_q4.map_or("?".into(), sys::kib)
        ),
    );
    if let (Some(a), Some(b)) = (rss_q2, rss_q4) {
        // Slack: allocator noise and per-thread arenas, not a trend.
        let slack = (a / 2).max(16 * 1024);
        ctx.check("rss-flat", None, b <= a + slack, || {
            format!(
                "RSS rose from {} (second quarter) to {} (last quarter): more than {} of slack",
                sys::kib(a),
                sys::kib(b),
                sys::kib(slack)
            )
        });
    }
    ctx.check("fds-flat", None, fd_q4 <= fd_q2 + 64, || {
        format!("descriptors rose from {fd_q2} (second quarter) to {fd_q4} (last quarter)")
    });
    ctx.check("fds-baseline", None, fd_end == fd_base, || {
        format!("{fd_end} descriptors open after the pool shut down, {fd_base} before it started")
    });
    ctx.check("no-errors", None, tally.errors.is_empty(), || {
        format!("client operations failed: {}", tally.errors_line())
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
    ctx.check("pool-shutdown", None, shutdown.is_ok(), || {
        format!("{shutdown:?}")
    });
}
