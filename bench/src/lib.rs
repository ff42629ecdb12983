//! # coring-bench
//!
//! coring's benchmark harness, and its latency benchmark tool. One home for benchmark code:
//! the `coring-bench` binary and the comparison benches (`bench/benches/*.rs`: `vs_tokio`,
//! `fread`, `stream`, `pingpong`, run with `cargo bench -p coring-bench --bench NAME`) are
//! built from the same pieces:
//!
//! - [`args`]: command-line scanning;
//! - [`sys`]: thread and process CPU clocks, run-queue wait, preemptions, CPU pinning;
//! - [`hist`]: latency histograms (HDR) and percentiles; [`stats`]: rates, ratios, medians;
//! - [`runs`]: interleaved rounds of contenders with medians and paired ratios;
//! - [`load`]: the load generator's loop (closed or open loop, coordinated-omission
//!   corrected) and the timeline a run's threads share;
//! - [`echo`]: the echo server and load generator, written once for any runtime, and the
//!   orchestration of an echo run on two pinned CPUs;
//! - [`raw`] (Linux): the hand-written io_uring loops (ring setup, the raw echo server);
//! - [`http`]: the HTTP/1.1 load generator (its response parser, connection and runs);
//! - [`fread`]: the page-cache test file and its offsets; [`contender`]: coring contenders
//!   on an exact backend.
//!
//! The tool, `coring-bench`, runs every benchmark on the io_uring backend and on the
//! fallback (epoll) backend, back to back, so that one table compares them:
//!
//! - **echo**: a coring TCP echo server on one pinned CPU and a coring load generator on
//!   another, over loopback; closed loop (`--conns` ping-pong connections) or open loop
//!   (`--rate`: a fixed schedule, latency from each request's intended send time, so a
//!   stall is charged to every request it delayed, as wrk2 does). Reports requests/s,
//!   round-trip latency percentiles and the server thread's CPU time per request.
//! - **fread**: random 4 KiB reads of a page-cache file at a queue depth: IOPS, per-read
//!   latency, process CPU per read.
//! - **spawn**: spawning N no-op tasks and awaiting them: tasks/s.
//! - **timers**: N concurrent 1 ms sleeps: total time until all are done, and how late
//!   each woke.
//! - **wal**: durable appends to the `wal` example's group-commit log (its `log.rs`, the
//!   one copy, included by path) with 1, 16, 256 appenders, against a `std::fs` loop of
//!   write + `fdatasync` per record, in interleaved rounds: appends/s, append-to-durable
//!   latency, and ratios paired with the same round's loop ([`wal`]).
//!
//! And, run alone, **`coring-bench http`** ([`http`]): an HTTP/1.1 load generator against any
//! server (keep-alive, pipelining, closed or open loop with coordinated-omission
//! correction, HDR percentiles, responses by status and errors counted apart).
//!
//! ```text
//! cargo run --release -p coring-bench                     # the default suite, < 1 min
//! cargo run --release -p coring-bench -- echo --rate 20000 --secs 10 --plot echo.svg
//! cargo run --release -p coring-bench -- fread --qd 1,8,64 --backend io_uring --json
//! ```
//!
//! Latencies go into HDR histograms (3 significant digits); warm-up is excluded. The
//! output is a table on stdout, or a JSON document with `--json`, and optionally an SVG of
//! the percentile curves (`--plot`). A progress line on stderr shows what runs.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod args;
pub mod cli;
pub mod contender;
pub mod echo;
pub mod fread;
pub mod hist;
pub mod http;
pub mod load;
pub mod micro;
pub mod progress;
#[cfg(target_os = "linux")]
pub mod raw;
pub mod report;
pub mod runs;
pub mod stats;
pub mod svg;
pub mod sys;
pub mod thread;
pub mod wal;

use cli::{Bench, Config};
use progress::Progress;
use report::RunResult;

/// Runs every benchmark of the configuration, in order, and returns one result per run
/// (a failed run is a result with its error set; the others still run).
///
/// # Errors
///
/// Only when the fread test file cannot be made.
pub fn run_all(cfg: &Config) -> Result<Vec<RunResult>, String> {
    let plan = cli::plan(cfg);
    let file = if plan.iter().any(|(b, _)| matches!(b, Bench::Fread { .. })) {
        if cfg.progress {
            eprint!("\rpreparing a {} MiB fread test file ...", cfg.file_mb);
        }
        let dir = std::env::temp_dir();
        let f = fread::TestFile::create_in(&dir, cfg.file_mb, !cfg.direct)
            .map_err(|e| format!("cannot create the fread test file: {e}"))?;
        if cfg.progress {
            eprint!("\r{:60}\r", "");
        }
        Some(f)
    } else {
        None
    };
    let mut results = Vec::with_capacity(plan.len());
    for (i, (bench, backend)) in plan.iter().enumerate() {
        let what = format!(
            "[{}/{}] {} {} {}",
            i + 1,
            plan.len(),
            bench.mode().name(),
            bench.label(),
            bench.backend_label(*backend)
        );
        let unit = match bench {
            Bench::Echo { .. } => "req/s",
            Bench::Fread { .. } => "IOPS",
            Bench::Spawn { .. } => "tasks/s",
            Bench::Timers { .. } => "timers/s",
            Bench::Wal(_) => "appends/s",
        };
        let mut progress = Progress::new(cfg.progress, what, unit);
        let result = match *bench {
            Bench::Echo {
                conns,
                size,
                rate,
                secs,
                warmup,
                zc,
            } => {
                let p = echo::EchoParams {
                    zc,
                    conns,
                    size,
                    rate,
                    secs,
                    warmup,
                    client_backend: cfg.client_backend,
                    time_parks: cfg.metrics,
                };
                echo::run(&p, *backend, &mut progress)
            }
            Bench::Fread {
                qd,
                secs,
                warmup,
                direct,
            } => {
                let p = fread::FreadParams {
                    qd,
                    secs,
                    warmup,
                    direct,
                };
                let file = file.as_ref().expect("the test file exists when fread runs");
                fread::run(&p, file, *backend, &mut progress)
            }
            Bench::Spawn { tasks } => micro::run_spawn(tasks, *backend, &mut progress),
            Bench::Timers { timers } => micro::run_timers(timers, *backend, &mut progress),
            Bench::Wal(p) => wal::run(&p, &cfg.wal_dir, *backend, &mut progress),
        };
        progress.finish();
        results.push(result);
    }
    Ok(results)
}
