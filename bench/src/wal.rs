//! The wal benchmark: durable appends to a write-ahead log.
//!
//! The coring contender is the `wal` example's log itself (`examples/wal/log.rs`, included
//! here by path, so there is one copy): `appenders` tasks append records of `size` bytes
//! (framed with length and crc32) as fast as they can, the log's committer writes each
//! batch as one buffer and `sync_data`s it, and an append resolves once its record is
//! durable. The baseline is the plain loop a storage engineer would write first with
//! `std::fs`: one record, one positional write, one `fdatasync` (`File::sync_data`), again
//! and again, on one thread. Both frame the same records and run on a pinned thread, each
//! with a fresh file in the same directory.
//!
//! Latency is append to durable: from the call of `Log::append` until it resolves (for the
//! loop: from before the write until `sync_data` returns). The rate counts appends that
//! started in the measured window.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring::time::sleep_until;
use coring::BackendKind;
use serde_json::{json, Value};

use crate::cli::backend_name;
use crate::hist::{us, LatencyHist};
use crate::progress::Progress;
use crate::report::{Mode, RunResult};
use crate::stats;
use crate::sys;
use crate::thread::on_pinned_thread;

#[path = "../../examples/wal/log.rs"]
#[allow(dead_code)] // the crash test and the example use the parts the bench does not
mod log;

pub use self::log::Prealloc;

/// Who appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// The baseline: a `std::fs` loop of write + `sync_data` per record, on one thread.
    StdLoop,
    /// The practical limit of one appender on io_uring (Linux): a hand-written loop on a
    /// bare ring (the `io-uring` crate), one record per write linked to an
    /// IORING_OP_FSYNC (datasync), both submitted and awaited with one enter. What
    /// `fio --ioengine=io_uring --fdatasync=1` does at queue depth 1.
    RingLoop,
    /// coring's group-commit log with this many appending tasks.
    Coring {
        /// Concurrent appenders.
        appenders: usize,
        /// How the log reserves space ahead of its end.
        prealloc: Prealloc,
    },
}

/// The backend name reports give the baseline, which runs on no coring runtime.
pub const STD_BACKEND: &str = "std";
/// The backend name reports give the bare ring loop.
pub const RING_BACKEND: &str = "ring";

/// One wal run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WalParams {
    /// Who appends.
    pub contender: Contender,
    /// Payload bytes per record (the frame adds 8).
    pub size: usize,
    /// Measured duration.
    pub secs: Duration,
    /// Unmeasured time first (the log's first reservation happens in it).
    pub warmup: Duration,
    /// Which interleaved round (from 0), to pair runs of the same round in the summary.
    pub round: usize,
}

impl WalParams {
    /// The setup in a few words, e.g. `4096B 16 appenders zeroed` or `256B std loop`.
    pub fn label(&self) -> String {
        match self.contender {
            Contender::StdLoop => format!("{}B std loop", self.size),
            Contender::RingLoop => format!("{}B ring loop", self.size),
            Contender::Coring {
                appenders,
                prealloc,
            } => format!("{}B {appenders} appenders {}", self.size, prealloc.name()),
        }
    }
}

/// Where the runs' log files go: a fresh file per run, removed after it.
fn log_path(dir: &Path) -> PathBuf {
    dir.join(format!("coring-bench-wal-{}.log", std::process::id()))
}

/// What one measurement found.
struct Measured {
    backend: Option<BackendKind>,
    description: String,
    hist: LatencyHist,
    ops: u64,
    cpu: Option<Duration>,
    /// Batches committed and records in them, over the window.
    batches: u64,
    records: u64,
}

/// Runs one wal measurement on `backend` (ignored by the std loop) with its files in `dir`.
pub fn run(p: &WalParams, dir: &Path, backend: BackendKind, progress: &mut Progress) -> RunResult {
    let backend_label = match p.contender {
        Contender::StdLoop => STD_BACKEND,
        Contender::RingLoop => RING_BACKEND,
        Contender::Coring { .. } => backend_name(backend),
    };
    let mut res = RunResult::new(Mode::Wal, p.label(), backend_label, "append");
    let (appenders, prealloc) = match p.contender {
        Contender::StdLoop | Contender::RingLoop => (1, None),
        Contender::Coring {
            appenders,
            prealloc,
        } => (appenders, Some(prealloc.name())),
    };
    res.params = json!({
        "contender": match p.contender {
            Contender::StdLoop => "std loop",
            Contender::RingLoop => "ring loop",
            Contender::Coring { .. } => "coring",
        },
        "appenders": appenders,
        "size": p.size,
        "prealloc": prealloc,
        "round": p.round,
        "secs": p.secs.as_secs_f64(),
        "warmup_secs": p.warmup.as_secs_f64(),
        "dir": dir.display().to_string(),
    });
    let counter = Arc::new(AtomicU64::new(0));
    let thread_counter = counter.clone();
    let (params, path) = (*p, log_path(dir));
    let measured = on_pinned_thread(
        "bench-wal",
        progress,
        Some(Instant::now() + p.warmup + p.secs),
        &counter,
        p.warmup + p.secs + Duration::from_secs(60),
        move || {
            let _ = std::fs::remove_file(&path);
            let m = match params.contender {
                Contender::StdLoop => std_loop(&params, &path, &thread_counter),
                Contender::RingLoop => ring_loop(&params, &path, &thread_counter),
                Contender::Coring { .. } => coring_log(&params, &path, backend, thread_counter),
            };
            let _ = std::fs::remove_file(&path);
            m
        },
    );
    match measured {
        Ok(m) => {
            if let Some(k) = m.backend {
                res.backend = backend_name(k).to_string();
            }
            res.backend_description = m.description;
            res.ops = m.ops;
            res.elapsed = p.secs;
            res.latency = Some(m.hist);
            res.cpu = m.cpu;
            if let Value::Object(o) = &mut res.params {
                o.insert("batches".into(), json!(m.batches));
                o.insert(
                    "records_per_sync".into(),
                    json!(stats::ratio(m.records as f64, m.batches as f64)),
                );
            }
        }
        Err(e) => res.error = Some(e),
    }
    res
}

/// A positional write of all of `buf` with std.
fn std_write_all_at(f: &std::fs::File, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::write_at(f, buf, off)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_write(f, buf, off)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        off += n as u64;
    }
    Ok(())
}

/// A new file at `path` for a one-record-at-a-time loop.
fn create_loop_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

/// The loop the single-threaded contenders share: frame record `seq`, let `durable` write
/// it at `off` and make it durable, time that, again until the window ends.
fn timed_loop(
    p: &WalParams,
    counter: &AtomicU64,
    description: String,
    mut durable: impl FnMut(&[u8], u64, u64) -> Result<(), String>,
) -> Result<Measured, String> {
    let start = Instant::now();
    let (warm_end, end) = (start + p.warmup, start + p.warmup + p.secs);
    let (mut hist, mut ops, mut off, mut seq) = (LatencyHist::new(), 0u64, 0u64, 0u64);
    let mut cpu0 = None;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        if t0 >= warm_end && cpu0.is_none() {
            cpu0 = Some(sys::process_cpu());
        }
        let rec = log::frame(&log::payload(0, seq, p.size));
        durable(&rec, off, seq)?;
        let t1 = Instant::now();
        counter.fetch_add(1, Ordering::Relaxed);
        if t0 >= warm_end {
            hist.record((t1 - t0).as_nanos() as u64);
            ops += 1;
        }
        off += rec.len() as u64;
        seq += 1;
    }
    let cpu = cpu0
        .flatten()
        .zip(sys::process_cpu())
        .map(|(a, b)| b.saturating_sub(a));
    Ok(Measured {
        backend: None,
        description,
        hist,
        ops,
        cpu,
        batches: ops,
        records: ops,
    })
}

/// The baseline: frame a record, write it at the end, `sync_data`, again.
fn std_loop(p: &WalParams, path: &Path, counter: &AtomicU64) -> Result<Measured, String> {
    let f = create_loop_file(path)?;
    timed_loop(p, counter, String::new(), |rec, off, _| {
        std_write_all_at(&f, rec, off).map_err(|e| format!("write: {e}"))?;
        f.sync_data().map_err(|e| format!("sync_data: {e}"))
    })
}

/// The bare ring loop (see [`Contender::RingLoop`]).
#[cfg(target_os = "linux")]
fn ring_loop(p: &WalParams, path: &Path, counter: &AtomicU64) -> Result<Measured, String> {
    use io_uring::{opcode, squeue, types};
    use std::os::fd::AsRawFd;
    let f = create_loop_file(path)?;
    let (mut ring, setup) = crate::raw::ring(8).map_err(|e| format!("io_uring setup: {e}"))?;
    let fd = types::Fd(f.as_raw_fd());
    let description = format!("bare io_uring ({})", setup.name());
    timed_loop(p, counter, description, |rec, off, seq| {
        let write = opcode::Write::new(fd, rec.as_ptr(), rec.len() as u32)
            .offset(off)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(1);
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(2);
        // SAFETY: `rec` and the file outlive both entries: both are reaped below, before
        // this call returns.
        unsafe { ring.submission().push_multiple(&[write, sync]) }
            .map_err(|_| "the SQ is full".to_string())?;
        let mut done = 0;
        while done < 2 {
            ring.submit_and_wait(2 - done)
                .map_err(|e| format!("io_uring_enter: {e}"))?;
            for cqe in ring.completion() {
                done += 1;
                let (what, want) = match cqe.user_data() {
                    1 => ("write", rec.len() as i32),
                    _ => ("fdatasync", 0),
                };
                if cqe.result() != want {
                    return Err(format!("{what} of record {seq}: result {}", cqe.result()));
                }
            }
        }
        Ok(())
    })
}

/// The bare ring loop needs io_uring, which only Linux has.
#[cfg(not(target_os = "linux"))]
fn ring_loop(_: &WalParams, _: &Path, _: &AtomicU64) -> Result<Measured, String> {
    Err("the ring loop needs io_uring (Linux)".to_string())
}

/// What the appenders share.
struct Shared {
    warm_end: Instant,
    end: Instant,
    size: usize,
    hist: RefCell<LatencyHist>,
    ops: Cell<u64>,
    counter: Arc<AtomicU64>,
}

/// coring's log with `appenders` tasks appending until the window ends.
fn coring_log(
    p: &WalParams,
    path: &Path,
    backend: BackendKind,
    counter: Arc<AtomicU64>,
) -> Result<Measured, String> {
    let Contender::Coring {
        appenders,
        prealloc,
    } = p.contender
    else {
        unreachable!("coring_log runs the coring contender")
    };
    let rt = crate::contender::coring_runtime(backend)
        .map_err(|e| format!("runtime on {}: {e}", backend_name(backend)))?;
    let opts = log::Options {
        prealloc,
        ..log::Options::default()
    };
    let (wal, _) = rt
        .block_on(log::Log::open_with(path, opts))
        .map_err(|e| format!("open the log {}: {e}", path.display()))?;
    let start = Instant::now();
    let sh = Rc::new(Shared {
        warm_end: start + p.warmup,
        end: start + p.warmup + p.secs,
        size: p.size,
        hist: RefCell::new(LatencyHist::new()),
        ops: Cell::new(0),
        counter,
    });
    let (cpu, (b0, r0), (b1, r1), errors) = rt.block_on(async {
        let tasks: Vec<_> = (0..appenders as u32)
            .map(|a| coring::spawn(appender(wal.clone(), sh.clone(), a)))
            .collect();
        sleep_until(sh.warm_end).await;
        let (c0, s0) = (sys::process_cpu(), wal.stats());
        sleep_until(sh.end).await;
        let (c1, s1) = (sys::process_cpu(), wal.stats());
        let mut errors = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(format!("appender task: {e:?}")),
            }
        }
        wal.close();
        let cpu = c1.zip(c0).map(|(b, a)| b.saturating_sub(a));
        (cpu, s0, s1, errors)
    });
    let description = rt.backend_description();
    let kind = rt.backend();
    drop(wal);
    drop(rt);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let hist = sh.hist.borrow().clone();
    Ok(Measured {
        backend: Some(kind),
        description,
        hist,
        ops: sh.ops.get(),
        cpu,
        batches: b1 - b0,
        records: r1 - r0,
    })
}

/// One appender: append a record, wait until it is durable, again, until the window ends.
async fn appender(wal: log::Log, sh: Rc<Shared>, a: u32) -> Result<(), String> {
    let mut seq = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= sh.end {
            return Ok(());
        }
        wal.append(&log::payload(a, seq, sh.size))
            .await
            .map_err(|e| format!("append {seq} of appender {a}: {e}"))?;
        let t1 = Instant::now();
        sh.counter.fetch_add(1, Ordering::Relaxed);
        if t0 >= sh.warm_end {
            sh.hist.borrow_mut().record((t1 - t0).as_nanos() as u64);
            sh.ops.set(sh.ops.get() + 1);
        }
        seq += 1;
    }
}

/// One row of the summary: a contender's medians over its rounds, and its paired ratios
/// to the std loop of the same size.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// The run's setup (`256B 16 appenders zeroed`).
    pub label: String,
    /// `std`, `io_uring` or `fallback`.
    pub backend: String,
    /// Rounds that succeeded.
    pub rounds: usize,
    /// Median appends/s.
    pub rate: Option<f64>,
    /// Median p50, p99 and p99.9 latency in µs.
    pub p50: Option<f64>,
    /// See `p50`.
    pub p99: Option<f64>,
    /// See `p50`.
    pub p999: Option<f64>,
    /// Median records per `fdatasync`.
    pub per_sync: Option<f64>,
    /// Median over rounds of appends/s divided by the same round's std loop's.
    pub rate_ratio: Option<f64>,
    /// Median over rounds of p99 divided by the same round's std loop's.
    pub p99_ratio: Option<f64>,
}

/// The summary of every wal run in `runs`: one row per size and contender (in first-run
/// order), medians over the rounds and paired ratios to the std loop of the same size.
pub fn summary(runs: &[RunResult]) -> Vec<SummaryRow> {
    let wal: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.mode == Mode::Wal && r.error.is_none())
        .collect();
    let size_of = |r: &RunResult| r.params["size"].as_u64();
    let round_of = |r: &RunResult| r.params["round"].as_u64();
    let p = |r: &RunResult, f: fn(&crate::hist::Summary) -> u64| r.summary().map(|s| us(f(&s)));
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &wal {
        let k = (r.label.clone(), r.backend.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.iter()
        .map(|(label, backend)| {
            let mine: Vec<&RunResult> = wal
                .iter()
                .copied()
                .filter(|r| &r.label == label && &r.backend == backend)
                .collect();
            let size = mine.first().and_then(|r| size_of(r));
            let base_of = |round: Option<u64>| {
                wal.iter().copied().find(|b| {
                    b.backend == STD_BACKEND && size_of(b) == size && round_of(b) == round
                })
            };
            let paired = |f: &dyn Fn(&RunResult) -> Option<f64>| {
                stats::median(mine.iter().filter_map(|r| {
                    let b = base_of(round_of(r))?;
                    stats::ratio(f(r)?, f(b)?)
                }))
            };
            let med = |f: &dyn Fn(&RunResult) -> Option<f64>| {
                stats::median(mine.iter().filter_map(|r| f(r)))
            };
            SummaryRow {
                label: label.clone(),
                backend: backend.clone(),
                rounds: mine.len(),
                rate: med(&|r| Some(r.rate())),
                p50: med(&|r| p(r, |s| s.p50)),
                p99: med(&|r| p(r, |s| s.p99)),
                p999: med(&|r| p(r, |s| s.p999)),
                per_sync: med(&|r| r.params["records_per_sync"].as_f64()),
                rate_ratio: paired(&|r| Some(r.rate())),
                p99_ratio: paired(&|r| p(r, |s| s.p99)),
            }
        })
        .collect()
}

/// The summary as a table (empty when there were no wal runs).
pub fn summary_table(runs: &[RunResult]) -> String {
    let rows = summary(runs);
    if rows.is_empty() {
        return String::new();
    }
    let h = |x: Option<f64>| x.map_or_else(|| "-".to_string(), stats::human);
    let x = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.2}x"));
    let mut out = String::from(
        "\nwal summary: medians over rounds; ratios are paired with the same round's std loop \
         (rate: higher is better, p99: lower is better)\n",
    );
    out.push_str(&format!(
        "{:<30} {:<9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "setup",
        "backend",
        "rounds",
        "appends/s",
        "p50",
        "p99",
        "p99.9",
        "per sync",
        "rate x",
        "p99 x"
    ));
    for r in &rows {
        out.push_str(&format!(
            "{:<30} {:<9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            r.label,
            r.backend,
            r.rounds,
            h(r.rate),
            h(r.p50),
            h(r.p99),
            h(r.p999),
            h(r.per_sync),
            x(r.rate_ratio),
            x(r.p99_ratio)
        ));
    }
    out
}

/// The summary as JSON (one object per row).
pub fn summary_json(runs: &[RunResult]) -> Value {
    summary(runs)
        .into_iter()
        .map(|r| {
            json!({
                "label": r.label,
                "backend": r.backend,
                "rounds": r.rounds,
                "appends_per_sec": r.rate,
                "p50_us": r.p50,
                "p99_us": r.p99,
                "p99_9_us": r.p999,
                "records_per_sync": r.per_sync,
                "rate_vs_std_loop": r.rate_ratio,
                "p99_vs_std_loop": r.p99_ratio,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        label: &str,
        backend: &str,
        size: u64,
        round: u64,
        ops: u64,
        p99_us: u64,
    ) -> RunResult {
        let mut r = RunResult::new(Mode::Wal, label.into(), backend, "append");
        r.params = json!({ "size": size, "round": round, "records_per_sync": 2.0 });
        r.ops = ops;
        r.elapsed = Duration::from_secs(1);
        let mut h = LatencyHist::new();
        for _ in 0..100 {
            h.record(p99_us * 1000);
        }
        r.latency = Some(h);
        r
    }

    #[test]
    fn summary_pairs_each_round_with_its_std_loop() {
        let runs = vec![
            result("256B std loop", "std", 256, 0, 1000, 100),
            result("256B 16 appenders zeroed", "io_uring", 256, 0, 4000, 200),
            result("256B std loop", "std", 256, 1, 2000, 100),
            result("256B 16 appenders zeroed", "io_uring", 256, 1, 4000, 400),
            result("4096B std loop", "std", 4096, 0, 500, 100),
            result("4096B 16 appenders zeroed", "io_uring", 4096, 0, 500, 100),
        ];
        let rows = summary(&runs);
        assert_eq!(rows.len(), 4);
        let r = &rows[1];
        assert_eq!(
            (r.label.as_str(), r.rounds),
            ("256B 16 appenders zeroed", 2)
        );
        // Same-round ratios 4 and 2: the median of two is their mean.
        assert_eq!(r.rate_ratio, Some(3.0));
        assert_eq!(r.rate, Some(4000.0));
        let p99 = r.p99_ratio.unwrap();
        assert!((p99 - 3.0).abs() < 0.01, "{p99}");
        assert_eq!(rows[3].rate_ratio, Some(1.0));
        assert_eq!(rows[0].rate_ratio, Some(1.0));
        let t = summary_table(&runs);
        assert!(t.contains("256B 16 appenders zeroed"), "{t}");
        assert!(t.contains("3.00x"), "{t}");
        assert_eq!(summary_json(&runs).as_array().unwrap().len(), 4);
        assert_eq!(summary_table(&[]), "");
    }

    #[test]
    fn labels_name_the_contender() {
        let p = WalParams {
            contender: Contender::Coring {
                appenders: 16,
                prealloc: Prealloc::Zeroed,
            },
            size: 256,
            secs: Duration::from_secs(1),
            warmup: Duration::ZERO,
            round: 0,
        };
        assert_eq!(p.label(), "256B 16 appenders zeroed");
        let s = WalParams {
            contender: Contender::StdLoop,
            ..p
        };
        assert_eq!(s.label(), "256B std loop");
        assert_eq!(Prealloc::parse("allocate"), Some(Prealloc::Allocate));
        assert_eq!(Prealloc::parse("bogus"), None);
    }
}
