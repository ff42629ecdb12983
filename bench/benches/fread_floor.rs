//! The latency floor of a fair order for `coring-bench fread`: `qd` reads in flight, served
//! one at a time in round robin by one pinned thread with `preadv2(RWF_NOWAIT)` (the
//! syscall coring's inline reads make), no runtime. Same test file, offsets (one xorshift
//! generator per slot) and latency as the tool: from a slot's previous read completing
//! (when it issues the next) to this one completing, in an HDR histogram.
//!
//! Whatever the scheduler, `qd` reads are always in flight, so the mean latency is `qd`
//! over the read rate (Little's law); a fair order makes every read wait for one read of
//! each other slot, and whatever stops the thread (a timer tick, another tenant of the
//! host) delays every read in flight at once. This loop's percentiles are what a perfect
//! round robin gets on the machine, to set coring's fread tail beside.
//!
//! ```text
//! cargo bench -p coring-bench --bench fread_floor                         # QD 1, 8, 32; 3 runs
//! cargo bench -p coring-bench --bench fread_floor -- --qd 32 --secs 2 --runs 5
//! ```

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("fread_floor reads with preadv2(RWF_NOWAIT) and runs on Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use coring_bench::args::{self, or_exit, ArgError};
    use coring_bench::fread::{check_block, TestFile, XorShift, BLOCK};
    use coring_bench::hist::{us, LatencyHist};

    const USAGE: &str = "\
usage: cargo bench -p coring-bench --bench fread_floor -- [options]
  --qd N[,N..]   reads in flight (default 1,8,32)
  --secs S       measured seconds per run (default 2)
  --warmup S     unmeasured seconds before each run (default 0.2)
  --runs N       runs per depth; each is printed (default 3)
  --file-mb N    test file size in MiB (default 64)
  -h, --help     this help";

    struct Args {
        qd: Vec<usize>,
        secs: Duration,
        warmup: Duration,
        runs: usize,
        file_mb: usize,
    }

    fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, ArgError> {
        let defaults = Args {
            qd: vec![1, 8, 32],
            secs: Duration::from_secs(2),
            warmup: Duration::from_millis(200),
            runs: 3,
            file_mb: 64,
        };
        args::parse(args, defaults, |a, flag, flags| {
            match flag.name.as_str() {
                "--qd" => a.qd = flags.counts(flag)?,
                "--secs" => a.secs = flags.secs(flag, false)?,
                "--warmup" => a.warmup = flags.secs(flag, true)?,
                "--runs" => a.runs = flags.count(flag)?,
                "--file-mb" => a.file_mb = flags.count(flag)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    pub fn main() {
        let a = or_exit(parse_args(std::env::args().skip(1)), "fread_floor", USAGE);
        let file = TestFile::create(a.file_mb as u64).unwrap_or_else(|e| {
            eprintln!("fread_floor: cannot create the test file: {e}");
            std::process::exit(1);
        });
        // The CPU coring-bench's fread thread runs on.
        coring_bench::sys::pin_or_warn(coring_bench::sys::cpus().first().copied());
        println!("qd   reads/s      p50      p99    p99.9   p99.99      max   (µs)");
        for &qd in &a.qd {
            for _ in 0..a.runs {
                match run(&file, qd, a.warmup, a.secs) {
                    Ok((hist, rate)) => {
                        let [p50, p99, p999, p9999, max] =
                            [0.5, 0.99, 0.999, 0.9999, 1.0].map(|q| us(hist.quantile_ns(q)));
                        println!(
                            "{qd:<4} {:>6.1}k {p50:>8.2} {p99:>8.2} {p999:>8.1} {p9999:>8.1} {max:>8.0}",
                            rate / 1e3
                        );
                    }
                    Err(e) => {
                        eprintln!("fread_floor: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
    }

    /// One run at depth `qd`: the histogram of the measured reads and their rate.
    fn run(
        file: &TestFile,
        qd: usize,
        warmup: Duration,
        secs: Duration,
    ) -> Result<(LatencyHist, f64), String> {
        let f = std::fs::File::open(file.path()).map_err(|e| format!("open: {e}"))?;
        let fd = f.as_raw_fd();
        let mut rngs: Vec<XorShift> = (0..qd).map(XorShift::for_slot).collect();
        let mut bufs = vec![vec![0u8; BLOCK]; qd];
        let mut hist = LatencyHist::new();
        let start = Instant::now();
        let (warm_end, end) = (start + warmup, start + warmup + secs);
        let mut issued = vec![start; qd];
        let mut measured = 0u64;
        for slot in (0..qd).cycle() {
            let block = rngs[slot].block(file.blocks());
            let buf = &mut bufs[slot];
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: BLOCK,
            };
            // SAFETY: `iov` points at `buf`, BLOCK writable bytes that outlive the call.
            let n = unsafe {
                libc::preadv2(fd, &iov, 1, (block * BLOCK as u64) as i64, libc::RWF_NOWAIT)
            };
            if n < 0 {
                return Err(format!(
                    "preadv2 of block {block}: {} (is the file cached?)",
                    std::io::Error::last_os_error()
                ));
            }
            check_block(buf, n as usize, block)?;
            let now = Instant::now();
            if now >= end {
                break;
            }
            if issued[slot] >= warm_end {
                hist.record((now - issued[slot]).as_nanos() as u64);
                measured += 1;
            }
            issued[slot] = now;
        }
        Ok((hist, measured as f64 / secs.as_secs_f64()))
    }
}
