//! A write-ahead log with group commit (see `log.rs`), and two ways to drive it.
//!
//! ```text
//! cargo run --release --example wal -- run   --path /tmp/wal --appenders 64 [--records N] [--size 256] [--seed S]
//! cargo run --release --example wal -- check --path /tmp/wal
//! ```
//!
//! `run`: recovers the log, then `--appenders` tasks append records (each carries its
//! appender, its sequence number and bytes derived from both, so a checker can tell an
//! intact record from a wrong one) until `--records` each, printing `ack A S OFFSET` on
//! stdout (flushed) as each append is durable. The crash test kills it at random moments
//! and checks every acknowledged record after recovery.
//!
//! `check`: recovers the log and prints what it kept and cut.
//!
//! The benchmark of this log (appends/s and commit latency against a plain `std::fs`
//! write + `sync_data` loop) is a mode of the bench tool, which includes this same
//! `log.rs`: `cargo run --release -p coring-bench -- wal --appenders 1,16,256`.

#[path = "log.rs"]
#[allow(dead_code)] // shared with tests/wal_crash.rs and coring-bench, which use the rest
mod log;

use std::io::Write;
use std::process::ExitCode;
use std::rc::Rc;

use log::{payload, Log};

const USAGE: &str = "usage: wal run|check --path FILE [options]
  run:   --appenders N (default 16) --records N per appender (default: forever) --size BYTES (default 256)
  check: recovers and reports
(the benchmark: coring-bench wal)";

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
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
        "bench" => Err("the benchmark moved: cargo run --release -p coring-bench -- wal".into()),
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
            "{} intact records, {} bytes cut from the end ({} of them reserved zeros)",
            rec.records.len(),
            rec.truncated,
            rec.zeros
        );
        Ok(())
    })
}
