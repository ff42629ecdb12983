//! `Builder::iopoll` against the default, on direct 4 KiB writes: rate, latency and the CPU
//! the runtime's thread burns per write, in interleaved rounds (off, on, off, on, ...).
//!
//! What this measures depends on the device. With NVMe poll queues, the polled ring's
//! writes are polled: fewer interrupts and wakeups for a busy core. Without them (virtio,
//! the project's VM), Linux 6.18 still completes polled *writes* of an ext4 file through
//! the polled ring, unpolled (its polled reads it refuses, and coring moves them to the
//! main ring; see `bench/scripts/iopoll-probe.c`), so the runs show what the polled ring's
//! mechanics cost where the device cannot poll: the runtime spins (one non-blocking
//! `io_uring_enter` per loop turn) while a write is in flight instead of sleeping. Each run
//! prints `iopoll_status` and the polled-ring counters, so a figure is never mistaken for
//! device polling.
//!
//! ```text
//! cargo bench -p coring-bench --bench iopoll                        # QD 1 and 8, 3 rounds
//! cargo bench -p coring-bench --bench iopoll -- --qd 1 --secs 2 --rounds 5
//! ```

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("iopoll measures io_uring's polled ring and runs on Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use coring::buf::AlignedBuf;
    use coring::fs::{File, OpenOptions};
    use coring::{BackendKind, Builder};
    use coring_bench::args::{self, or_exit, ArgError};
    use coring_bench::hist::{us, LatencyHist};

    const USAGE: &str = "\
usage: cargo bench -p coring-bench --bench iopoll -- [options]
  --qd N[,N..]   writes in flight (default 1,8)
  --secs S       measured seconds per run (default 1)
  --rounds N     rounds; each runs iopoll off then on (default 3)
  --file-mb N    region written at random 4 KiB offsets, in MiB (default 64)
  -h, --help     this help";

    const BLOCK: usize = 4096;

    struct Args {
        qd: Vec<usize>,
        secs: Duration,
        rounds: usize,
        file_mb: usize,
    }

    fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, ArgError> {
        let defaults = Args {
            qd: vec![1, 8],
            secs: Duration::from_secs(1),
            rounds: 3,
            file_mb: 64,
        };
        args::parse(args, defaults, |a, flag, flags| {
            match flag.name.as_str() {
                "--qd" => a.qd = flags.counts(flag)?,
                "--secs" => a.secs = flags.secs(flag, false)?,
                "--rounds" => a.rounds = flags.count(flag)?,
                "--file-mb" => a.file_mb = flags.count(flag)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    /// The CPU time this thread has used.
    fn thread_cpu() -> Duration {
        let mut ru: libc::rusage = unsafe {
            // SAFETY: rusage is plain data; all-zero is a valid value.
            std::mem::zeroed()
        };
        // SAFETY: getrusage writes one rusage into the live local.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        Duration::from_secs(ru.ru_utime.tv_sec as u64 + ru.ru_stime.tv_sec as u64)
            + Duration::from_micros(ru.ru_utime.tv_usec as u64 + ru.ru_stime.tv_usec as u64)
    }

    struct Run {
        rate: f64,
        hist: LatencyHist,
        cpu_us_per_write: f64,
        status: String,
        polled: u64,
        rerouted: u64,
    }

    fn run(path: &std::path::Path, iopoll: bool, qd: usize, secs: Duration, blocks: u64) -> Run {
        let rt = Builder::new()
            .backend(BackendKind::IoUring)
            .iopoll(iopoll)
            .build()
            .expect("io_uring runtime");
        let (hist, n, cpu) = rt.block_on(async {
            let f = OpenOptions::new()
                .write(true)
                .direct(true)
                .open(path)
                .await
                .expect("open the test file for direct IO");
            let f = Rc::new(f);
            // One untimed write per slot first: a refusal (if any) is not measured.
            for i in 0..qd as u64 {
                write_one(&f, i % blocks).await;
            }
            let cpu0 = thread_cpu();
            let end = Instant::now() + secs;
            let tasks: Vec<_> = (0..qd as u64)
                .map(|slot| {
                    let f = f.clone();
                    coring::spawn(async move {
                        let mut hist = LatencyHist::new();
                        let mut x = slot.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                        while Instant::now() < end {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let t = Instant::now();
                            write_one(&f, x % blocks).await;
                            hist.record(t.elapsed().as_nanos() as u64);
                        }
                        hist
                    })
                })
                .collect();
            let mut all = LatencyHist::new();
            for t in tasks {
                all.merge(&t.await.expect("writer task"));
            }
            let n = all.len();
            (all, n, thread_cpu() - cpu0)
        });
        let m = rt.metrics();
        Run {
            rate: n as f64 / secs.as_secs_f64(),
            hist,
            cpu_us_per_write: cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
            status: rt.iopoll_status().to_string(),
            polled: m.ops_polled,
            rerouted: m.ops_poll_rerouted,
        }
    }

    async fn write_one(f: &File, block: u64) {
        let buf = AlignedBuf::zeroed(BLOCK, BLOCK);
        let (res, _) = f.write_at(buf, block * BLOCK as u64).await;
        assert_eq!(res.expect("direct write"), BLOCK);
    }

    pub fn main() {
        let a = or_exit(parse_args(std::env::args().skip(1)), "iopoll", USAGE);
        let path = std::env::temp_dir().join(format!("coring-iopoll-bench-{}", std::process::id()));
        let blocks = (a.file_mb * (1 << 20) / BLOCK).max(1) as u64;
        let f = std::fs::File::create(&path).expect("create the test file");
        f.set_len(blocks * BLOCK as u64)
            .expect("size the test file");
        // Allocated up front: writes overwrite, none extends the file.
        std::fs::write(&path, vec![1u8; blocks as usize * BLOCK]).expect("fill the test file");
        coring_bench::sys::pin_or_warn(coring_bench::sys::cpus().first().copied());
        println!(
            "file: {} ({} MiB, O_DIRECT 4 KiB writes)",
            path.display(),
            a.file_mb
        );
        println!("qd  iopoll  round  writes/s    p50 µs    p99 µs  CPU µs/write  polled  moved");
        for &qd in &a.qd {
            let mut rows: Vec<(bool, Run)> = Vec::new();
            for round in 0..a.rounds {
                for iopoll in [false, true] {
                    let r = run(&path, iopoll, qd, a.secs, blocks);
                    println!(
                        "{qd:<3} {:<7} {round:<6} {:>8.0} {:>9.1} {:>9.1} {:>13.1} {:>7} {:>6}",
                        if iopoll { "on" } else { "off" },
                        r.rate,
                        us(r.hist.quantile_ns(0.5)),
                        us(r.hist.quantile_ns(0.99)),
                        r.cpu_us_per_write,
                        r.polled,
                        r.rerouted
                    );
                    rows.push((iopoll, r));
                }
            }
            let median = |on: bool, f: &dyn Fn(&Run) -> f64| {
                let mut v: Vec<f64> = rows
                    .iter()
                    .filter(|(i, _)| *i == on)
                    .map(|(_, r)| f(r))
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (rate_off, rate_on) = (median(false, &|r| r.rate), median(true, &|r| r.rate));
            let (cpu_off, cpu_on) = (
                median(false, &|r| r.cpu_us_per_write),
                median(true, &|r| r.cpu_us_per_write),
            );
            println!(
                "qd {qd} medians: writes/s off {rate_off:.0}, on {rate_on:.0} ({:.2}x); CPU \
                 µs/write off {cpu_off:.1}, on {cpu_on:.1} ({:.2}x); status with iopoll: {}",
                rate_on / rate_off,
                cpu_on / cpu_off,
                rows.iter()
                    .rev()
                    .find(|(i, _)| *i)
                    .map_or("", |(_, r)| &r.status)
            );
        }
        let _ = std::fs::remove_file(&path);
    }
}
