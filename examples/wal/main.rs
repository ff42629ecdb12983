//! A write-ahead log with group commit (see `log.rs`), and two ways to drive it.
//!
//! ```text
//! cargo run --release --example wal -- run   --path /tmp/wal --appenders 64 [--records N] [--size 256] [--seed S]
//! cargo run --release --example wal -- bench --path /tmp/wal --appenders 1,16,256 --size 256,4096 [--secs 3]
//! cargo run --release --example wal -- check --path /tmp/wal
//! ```
//!
//! `run`: recovers the log, then `--appenders` tasks append records (each carries its
//! appender, its sequence number and bytes derived from both, so a checker can tell an
//! intact record from a wrong one) until `--records` each, printing `ack A S OFFSET` on
//! stdout (flushed) as each append is durable. The crash test kills it at random moments
//! and checks every acknowledged record after recovery.
//!
//! `bench`: appends/s and commit latency percentiles per appender count and record size,
//! beside a plain `std::fs` loop doing write + `sync_data` per record on the same disk.
//!
//! `check`: recovers the log and prints what it kept and cut.

#[path = "log.rs"]
mod log;

use std::io::Write;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{payload, Log};

const USAGE: &str = "usage: wal run|bench|check --path FILE [options]
  run:   --appenders N (default 16) --records N per appender (default: forever) --size BYTES (default 256)
  bench: --appenders LIST (default 1,16,256) --size LIST (default 256,4096) --secs S (default 3)
  check: recovers and reports";

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|v| v.parse().map_err(|_| format!("not a number: {v}")))
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(path)) = (args.first().map(String::as_str), arg(&args, "--path")) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let path = path.to_string();
    let r = match mode {
        "run" => run(&args, &path),
        "bench" => bench(&args, &path),
        "check" => check(&path),
        _ => Err(format!("unknown mode {mode}\n{USAGE}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String], path: &str) -> Result<(), String> {
    let appenders: u32 = arg(args, "--appenders")
        .unwrap_or("16")
        .parse()
        .map_err(|_| "bad --appenders")?;
    let records: u64 = arg(args, "--records")
        .map_or(Ok(u64::MAX), str::parse)
        .map_err(|_| "bad --records")?;
    let size: usize = arg(args, "--size")
        .unwrap_or("256")
        .parse()
        .map_err(|_| "bad --size")?;
    coring::start(async move {
        let (log, rec) = Log::open(path).await.map_err(|e| format!("open: {e}"))?;
        // Each appender goes on after the last sequence number recovery kept for it.
        let mut next = vec![0u64; appenders as usize];
        for (_, p) in &rec.records {
            let a = u32::from_le_bytes(p[0..4].try_into().unwrap()) as usize;
            let s = u64::from_le_bytes(p[4..12].try_into().unwrap());
            if a < next.len() {
                next[a] = next[a].max(s + 1);
            }
        }
        let out = Rc::new(std::cell::RefCell::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for a in 0..appenders {
            let (log, out) = (log.clone(), out.clone());
            let first = next[a as usize];
            tasks.push(coring::spawn(async move {
                for seq in first..first.saturating_add(records) {
                    match log.append(&payload(a, seq, size)).await {
                        Ok(off) => {
                            let mut o = out.borrow_mut();
                            writeln!(o, "ack {a} {seq} {off}")
                                .and_then(|()| o.flush())
                                .ok();
                        }
                        Err(e) => {
                            let mut o = out.borrow_mut();
                            writeln!(o, "err {a} {seq} {e}")
                                .and_then(|()| o.flush())
                                .ok();
                            return;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.map_err(|e| format!("appender: {e:?}"))?;
        }
        log.close();
        Ok(())
    })
}

fn check(path: &str) -> Result<(), String> {
    coring::start(async move {
        let (log, rec) = Log::open(path).await.map_err(|e| format!("open: {e}"))?;
        log.close();
        println!(
            "{} intact records, {} bytes cut from a torn tail",
            rec.records.len(),
            rec.truncated
        );
        Ok(())
    })
}

/// Percentile `p` (0..=100) of sorted latencies, in microseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn bench(args: &[String], path: &str) -> Result<(), String> {
    let appenders = list(arg(args, "--appenders").unwrap_or("1,16,256"))?;
    let sizes = list(arg(args, "--size").unwrap_or("256,4096"))?;
    let secs: f64 = arg(args, "--secs")
        .unwrap_or("3")
        .parse()
        .map_err(|_| "bad --secs")?;
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "case", "appends/s", "p50 us", "p99 us", "p99.9 us", "batches", "per sync"
    );
    for &size in &sizes {
        // The baseline: one record, one write, one sync_data, in a loop.
        let (rate, lat) = std_loop(path, size, secs)?;
        println!(
            "{:<22} {:>10.0} {:>10.1} {:>10.1} {:>10.1} {:>10} {:>8}",
            format!("std loop {size}B"),
            rate,
            pct(&lat, 50.0),
            pct(&lat, 99.0),
            pct(&lat, 99.9),
            lat.len(),
            1
        );
        for &n in &appenders {
            let (rate, lat, (batches, records)) = coring_run(path, n, size, secs)?;
            println!(
                "{:<22} {:>10.0} {:>10.1} {:>10.1} {:>10.1} {:>10} {:>8.1}",
                format!("coring {n}x {size}B"),
                rate,
                pct(&lat, 50.0),
                pct(&lat, 99.0),
                pct(&lat, 99.9),
                batches,
                records as f64 / batches.max(1) as f64
            );
        }
    }
    Ok(())
}

/// A positional write of all of `buf` with std.
fn std_write_all_at(f: &std::fs::File, mut buf: &[u8], mut off: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::write_at(f, buf, off)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_write(f, buf, off)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        off += n as u64;
    }
    Ok(())
}

fn std_loop(path: &str, size: usize, secs: f64) -> Result<(f64, Vec<Duration>), String> {
    let _ = std::fs::remove_file(path);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let rec = log::frame(&payload(0, 0, size));
    let (start, mut off, mut lat) = (Instant::now(), 0u64, Vec::new());
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        std_write_all_at(&f, &rec, off).map_err(|e| e.to_string())?;
        f.sync_data().map_err(|e| e.to_string())?;
        lat.push(t.elapsed());
        off += rec.len() as u64;
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    Ok((rate, lat))
}

type RunOut = (f64, Vec<Duration>, (u64, u64));

fn coring_run(path: &str, appenders: usize, size: usize, secs: f64) -> Result<RunOut, String> {
    let _ = std::fs::remove_file(path);
    let path = path.to_string();
    coring::start(async move {
        let (log, _) = Log::open(&path).await.map_err(|e| format!("open: {e}"))?;
        let lats = Rc::new(std::cell::RefCell::new(Vec::new()));
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for a in 0..appenders as u32 {
            let (log, lats) = (log.clone(), lats.clone());
            tasks.push(coring::spawn(async move {
                let mut seq = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    log.append(&payload(a, seq, size)).await.expect("append");
                    lats.borrow_mut().push(t.elapsed());
                    seq += 1;
                }
            }));
        }
        for t in tasks {
            t.await.map_err(|e| format!("appender: {e:?}"))?;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let stats = log.stats();
        log.close();
        let mut lat = std::mem::take(&mut *lats.borrow_mut());
        lat.sort();
        Ok((lat.len() as f64 / elapsed, lat, stats))
    })
}
