//! Random aligned 4 KiB reads from a page-cache-resident file, four ways, in one process:
//!
//! - **coring**: one runtime, `qd` tasks spawned with `coring::spawn`, each looping on a
//!   shared `Rc<File>` with its own reused buffer. At QD 1, `file.read_at(vec, offset)` (the
//!   plain API, against `pread`); at QD > 1, like the raw loop, a registered file and
//!   registered buffers: `file.register()`, a registered `FixedBufPool` of `qd` buffers and
//!   `file.read_fixed_at(buf, offset)`. Reads the page cache answers still complete during
//!   submission (`preadv2(RWF_NOWAIT)`), fixed or not; the `inline/op` column says how many;
//! - **raw io_uring**: a hand-written loop on the `io-uring` crate with the setup flags coring
//!   uses by default, the file registered (IOSQE_FIXED_FILE) and one registered buffer per
//!   slot (IORING_OP_READ_FIXED), keeping `qd` reads in flight (`submit_and_wait(1)`, reap
//!   all, refill): the practical limit of the ring, as the issue's baseline defines it;
//! - **pread**: one thread calling `pread(2)` in a loop (no queue depth; shown on every row
//!   as a baseline measured under the same conditions);
//! - **preadv2**: the same loop calling `preadv2(fd, &iovec, 1, offset, RWF_NOWAIT)`, the
//!   syscall coring's inline path makes (a read the page cache cannot answer, EAGAIN, falls
//!   back to `pread` and counts as a miss; on a resident file there are none).
//!
//! The preadv2 loop splits coring's distance to `pread` in two: `coring/preadv2` is the
//! runtime's own overhead over the syscall it makes, `preadv2/pread` the cost of that
//! syscall over `pread` (the iovec import and the RWF_NOWAIT path cost a few percent per
//! call on some kernels), a floor coring's inline reads cannot go below.
//!
//! Every measurement is repeated (default 3 times, interleaved coring, raw, pread, preadv2,
//! coring, ...) and the median is reported, because shared machines are noisy; `--slices N`
//! cuts each run into N slices alternating with the other contenders' slices, so that a
//! burst of background load hits all of them alike. IOPS per CPU-second are reported as
//! well: they discount time the scheduler gave to other processes. Offsets come from a
//! deterministic xorshift generator per in-flight slot, with the same seeds for every
//! contender. Every read must return exactly 4096 bytes, and the block index stamped at the
//! start of each block is checked, so a contender that reads the wrong offset fails loudly.
//!
//! With `--direct`, every contender opens the file with `O_DIRECT` (coring through
//! `OpenOptions::direct`) and reads into aligned buffers (`AlignedBuf` at QD 1, a
//! `FixedBufPool::with_alignment` pool above it, page-aligned buffers for the raw loop and
//! `pread`), so every read goes to the device; `preadv2` sits out (RWF_NOWAIT means nothing
//! to a direct read) and **fio** joins: `fio --direct=1 --ioengine=io_uring --rw=randread
//! --bs=4k --iodepth=QD --readonly` on the same file for the same time, interleaved with the
//! others like any contender, its IOPS and CPU time read from its JSON report. The test
//! file is not read into the page cache first in this mode.
//!
//! ```text
//! cargo bench -p coring-bench --bench fread
//! cargo bench -p coring-bench --bench fread -- --direct --qd 1,32 --file-mb 1024 --secs 5
//! cargo bench -p coring-bench --bench fread -- --secs 2 --qd 1,32,128 --file-mb 256 --reps 3
//! cargo bench -p coring-bench --bench fread -- --reps 5 --slices 10                      # noisy host
//! cargo bench -p coring-bench --bench fread -- --only coring --qd 32 --reps 1 --secs 10   # for perf
//! ```

// The raw contender is written on the io-uring crate, which (like io_uring) exists only on
// Linux; elsewhere the bench only says so.
#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("fread compares against a raw io_uring loop and runs on Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::Cell;
    use std::fs::File as StdFile;
    use std::io::{self, Write};
    use std::mem::ManuallyDrop;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::path::Path;
    use std::process::Command;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use coring::buf::AlignedBuf;
    use coring_bench::args::{self, or_exit, ArgError};
    use coring_bench::fread::{check_block, TestFile, XorShift, BLOCK};
    use coring_bench::raw::ring as raw_ring;
    use coring_bench::sys;
    use io_uring::{opcode, types};

    /// Operations between two looks at the clock.
    const CHECK_EVERY: u64 = 64;

    const USAGE: &str = "\
usage: cargo bench -p coring-bench --bench fread -- [options]
  --secs S        seconds per measurement (default 2)
  --qd A,B,C      queue depths (default 1,32,128)
  --file-mb N     test file size in MiB (default 256)
  --reps N        repetitions per contender and depth; the median is reported (default 3)
  --only NAME     run only coring, raw, pread, preadv2 or fio (for profiling)
  --direct        direct IO (O_DIRECT, aligned buffers): every read goes to the device;
                  preadv2 sits out and fio (which must be installed) joins
  --slices N      split each run into N slices alternating with the other contenders'
                  slices, so that all see the same background load (default 1)
  --cpu N         pin the benchmark thread to CPU N";

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Contender {
        Coring,
        Raw,
        Pread,
        Preadv2,
        Fio,
    }

    struct Config {
        secs: Duration,
        qds: Vec<usize>,
        file_mb: u64,
        reps: usize,
        only: Option<Contender>,
        slices: u32,
        cpu: Option<usize>,
        direct: bool,
    }

    impl Config {
        fn runs(&self, c: Contender) -> bool {
            let mode = match c {
                Contender::Preadv2 => !self.direct,
                Contender::Fio => self.direct,
                _ => true,
            };
            mode && self.only.is_none_or(|o| o == c)
        }

        /// The length of one slice of a run.
        fn slice(&self) -> Duration {
            self.secs / self.slices
        }
    }

    fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Config, ArgError> {
        let defaults = Config {
            secs: Duration::from_secs(2),
            qds: vec![1, 32, 128],
            file_mb: 256,
            reps: 3,
            only: None,
            slices: 1,
            cpu: None,
            direct: false,
        };
        args::parse(args, defaults, |cfg, flag, flags| {
            match flag.name.as_str() {
                "--secs" => cfg.secs = flags.secs(flag, false)?,
                "--file-mb" => cfg.file_mb = flags.count(flag)? as u64,
                "--reps" => cfg.reps = flags.count(flag)?,
                "--cpu" => cfg.cpu = Some(flags.parse(flag)?),
                "--slices" => cfg.slices = flags.count(flag)? as u32,
                "--qd" => cfg.qds = flags.counts(flag)?,
                "--direct" => cfg.direct = true,
                "--only" => {
                    cfg.only = Some(match flags.value(flag)?.as_str() {
                        "coring" => Contender::Coring,
                        "raw" => Contender::Raw,
                        "pread" => Contender::Pread,
                        "preadv2" => Contender::Preadv2,
                        "fio" => Contender::Fio,
                        other => return Err(format!("--only: unknown contender '{other}'")),
                    })
                }
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    /// Counts completed operations and decides, every `CHECK_EVERY` of them, whether the
    /// measurement is over. The same rule for every contender.
    struct Clock {
        deadline: Instant,
        done: Cell<u64>,
        stop: Cell<bool>,
    }

    impl Clock {
        fn new(start: Instant, d: Duration) -> Clock {
            Clock {
                deadline: start + d,
                done: Cell::new(0),
                stop: Cell::new(false),
            }
        }

        /// Records one finished operation.
        fn tick(&self) {
            let d = self.done.get() + 1;
            self.done.set(d);
            if d.is_multiple_of(CHECK_EVERY) && Instant::now() >= self.deadline {
                self.stop.set(true);
            }
        }

        fn stopped(&self) -> bool {
            self.stop.get()
        }
    }

    /// Checks one read: exactly a block, and the block we asked for.
    fn check_read(who: &str, n: usize, buf: &[u8], block: u64) {
        if let Err(e) = check_block(buf, n, block) {
            panic!("{who}: {e}");
        }
    }

    /// Fraction of the file's pages in the page cache, by `mincore(2)`.
    fn resident_fraction(file: &StdFile, len: usize) -> io::Result<f64> {
        // SAFETY: a fresh shared read-only mapping of an open file; no Rust reference to the
        // mapped memory is ever created, it is only passed to mincore and unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let pages = len.div_ceil(BLOCK);
        let mut vec = vec![0u8; pages];
        // SAFETY: `addr..addr+len` is the mapping made above, and `vec` has one byte per page.
        let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
        let err = io::Error::last_os_error();
        // SAFETY: unmaps exactly the mapping made above, which nothing references.
        unsafe { libc::munmap(addr, len) };
        if rc != 0 {
            return Err(err);
        }
        let resident = vec.iter().filter(|&&b| b & 1 != 0).count();
        Ok(resident as f64 / pages as f64)
    }

    /// One measurement.
    #[derive(Clone, Copy, Default)]
    struct Run {
        ops: u64,
        elapsed: Duration,
        /// Kernel entries (io_uring_enter) during the measurement.
        enters: u64,
        /// Event-loop turns (coring only).
        turns: u64,
        /// Times the loop slept in the kernel (coring only).
        parks: u64,
        /// Reads completed during submission from the page cache (coring only).
        inline: u64,
        /// Reads `preadv2(RWF_NOWAIT)` refused (EAGAIN) and `pread` did instead (preadv2 only).
        misses: u64,
        /// CPU time the process used (user + system, every thread, io_uring workers included).
        cpu: Duration,
        /// Times the scheduler took the CPU away from the process.
        preempted: u64,
    }

    /// CPU time and involuntary context switches of the process so far.
    #[derive(Clone, Copy)]
    struct Usage {
        cpu: Duration,
        preempted: u64,
    }

    impl Usage {
        fn now() -> Usage {
            Usage {
                cpu: sys::process_cpu().expect("CLOCK_PROCESS_CPUTIME_ID is available"),
                preempted: sys::preemptions().expect("getrusage works"),
            }
        }

        /// Fills in `run`'s CPU time and preemptions since `self`.
        fn finish(self, mut run: Run) -> Run {
            let now = Usage::now();
            run.cpu = now.cpu.saturating_sub(self.cpu);
            run.preempted = now.preempted - self.preempted;
            run
        }
    }

    impl Run {
        /// Accumulates another slice of the same measurement.
        fn add(&mut self, o: &Run) {
            self.ops += o.ops;
            self.elapsed += o.elapsed;
            self.enters += o.enters;
            self.turns += o.turns;
            self.parks += o.parks;
            self.inline += o.inline;
            self.misses += o.misses;
            self.cpu += o.cpu;
            self.preempted += o.preempted;
        }

        fn iops(&self) -> f64 {
            self.ops as f64 / self.elapsed.as_secs_f64()
        }

        /// Operations per second of CPU time: insensitive to time the machine gave to others.
        fn cpu_iops(&self) -> f64 {
            self.ops as f64 / self.cpu.as_secs_f64().max(1e-9)
        }

        fn per_op(&self, n: u64) -> f64 {
            n as f64 / self.ops.max(1) as f64
        }
    }

    /// Ring size for a queue depth: coring's default of 256, or more for deeper queues.
    fn ring_entries(qd: usize) -> u32 {
        qd.next_power_of_two().max(256) as u32
    }

    // ---------------------------------------------------------------------------------------
    // coring

    /// One coring reader: reads of random blocks into `buf` (reused) with `read`, until the
    /// clock stops. At QD 1 `read` is `read_at` into a `Vec` (the plain API); at QD > 1 it
    /// is `read_fixed_at` into registered buffer `slot` of a `FixedBufPool`.
    async fn coring_reader<B: std::ops::Deref<Target = [u8]>>(
        clock: Rc<Clock>,
        slot: usize,
        blocks: u64,
        mut buf: B,
        mut read: impl AsyncFnMut(B, u64) -> (io::Result<usize>, B),
    ) {
        let mut rng = XorShift::for_slot(slot);
        while !clock.stopped() {
            let block = rng.block(blocks);
            let (res, b) = read(buf, block * BLOCK as u64).await;
            buf = b;
            let n = res.unwrap_or_else(|e| panic!("coring: read of block {block} failed: {e}"));
            check_read("coring", n, &buf, block);
            clock.tick();
        }
    }

    #[inline(never)] // a symbol to profile: valgrind --toggle-collect=fread::run_coring
    fn run_coring(path: &Path, blocks: u64, qd: usize, d: Duration, direct: bool) -> Run {
        let rt = coring::Builder::new()
            .entries(ring_entries(qd))
            .build()
            .unwrap_or_else(|e| panic!("coring: cannot build the runtime: {e}"));
        let mut options = coring::fs::OpenOptions::new();
        options.read(true).direct(direct);
        let file = rt
            .block_on(options.open(path))
            .unwrap_or_else(|e| panic!("coring: cannot open {}: {e}", path.display()));
        let file = Rc::new(file);
        // QD > 1 competes with the raw loop on its terms: registered file and buffers.
        let pool = (qd > 1).then(|| {
            let pool = coring::buf::FixedBufPool::with_alignment(qd, BLOCK, BLOCK);
            rt.block_on(async {
                file.register()
                    .unwrap_or_else(|e| panic!("coring: cannot register the file: {e}"));
                pool.register()
                    .unwrap_or_else(|e| panic!("coring: cannot register the buffers: {e}"));
            });
            pool
        });
        let before = rt.metrics();
        let usage = Usage::now();
        let (ops, elapsed) = rt.block_on(async {
            let start = Instant::now();
            let clock = Rc::new(Clock::new(start, d));
            let tasks: Vec<_> = (0..qd)
                .map(|slot| {
                    let (file, clock) = (file.clone(), clock.clone());
                    match &pool {
                        Some(pool) => {
                            let buf = pool
                                .check_out(slot)
                                .expect("coring: the pool has one buffer per slot");
                            let read = async move |b, off| file.read_fixed_at(b, off).await;
                            coring::spawn(coring_reader(clock, slot, blocks, buf, read))
                        }
                        // Direct IO needs an aligned buffer; a Vec is the plain API.
                        None if direct => {
                            let buf = AlignedBuf::new(BLOCK, BLOCK);
                            let read = async move |b, off| file.read_at(b, off).await;
                            coring::spawn(coring_reader(clock, slot, blocks, buf, read))
                        }
                        None => {
                            let buf = Vec::with_capacity(BLOCK);
                            let read = async move |b, off| file.read_at(b, off).await;
                            coring::spawn(coring_reader(clock, slot, blocks, buf, read))
                        }
                    }
                })
                .collect();
            for t in tasks {
                t.await.expect("coring: a reader task failed");
            }
            (clock.done.get(), start.elapsed())
        });
        let after = rt.metrics();
        let run = usage.finish(Run {
            ops,
            elapsed,
            enters: after.enters - before.enters,
            turns: after.turns - before.turns,
            parks: after.parks - before.parks,
            inline: after.ops_inline - before.ops_inline,
            ..Run::default()
        });
        let file = Rc::try_unwrap(file).expect("coring: every reader task has finished");
        rt.block_on(file.close())
            .unwrap_or_else(|e| panic!("coring: close failed: {e}"));
        run
    }

    /// The description of the backend coring picks, to compare with the raw loop's ring.
    fn coring_backend() -> String {
        match coring::Builder::new().build() {
            Ok(rt) if rt.backend() == coring::BackendKind::IoUring => rt.backend_description(),
            Ok(rt) => format!(
                "{} (not io_uring: coring/raw compares different backends)",
                rt.backend_description()
            ),
            Err(e) => format!("unavailable: {e}"),
        }
    }

    // ---------------------------------------------------------------------------------------
    // raw io_uring

    #[inline(never)]
    fn run_raw(file: &StdFile, blocks: u64, qd: usize, d: Duration) -> Run {
        let (mut ring, _) = raw_ring(ring_entries(qd))
            .unwrap_or_else(|e| panic!("raw: io_uring setup failed: {e}"));
        // The file is registered at index 0 and named by it (IOSQE_FIXED_FILE).
        ring.submitter()
            .register_files(&[file.as_raw_fd()])
            .unwrap_or_else(|e| panic!("raw: cannot register the file: {e}"));
        let fd = types::Fixed(0);
        // Freed only once nothing is in flight and they are unregistered: a panic in the
        // loop leaks them rather than freeing memory the kernel may still write into.
        // Page-aligned, as direct IO needs.
        let mut bufs = ManuallyDrop::new(
            (0..qd)
                .map(|_| AlignedBuf::zeroed(BLOCK, BLOCK))
                .collect::<Vec<_>>(),
        );
        let iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: every iovec describes a live BLOCK-byte heap buffer of `bufs`, which stays
        // allocated until after unregister_buffers below (or forever, on a panic).
        unsafe { ring.submitter().register_buffers(&iovecs) }
            .unwrap_or_else(|e| panic!("raw: cannot register {qd} buffers: {e}"));
        let mut rngs: Vec<XorShift> = (0..qd).map(XorShift::for_slot).collect();
        let (submitter, mut sq, mut cq) = ring.split();

        // Queues the next read of `slot`, into registered buffer `slot`.
        let mut push =
            |sq: &mut io_uring::SubmissionQueue<'_>, bufs: &mut Vec<AlignedBuf>, slot: usize| {
                let block = rngs[slot].block(blocks);
                let entry =
                    opcode::ReadFixed::new(fd, bufs[slot].as_mut_ptr(), BLOCK as u32, slot as u16)
                        .offset(block * BLOCK as u64)
                        .build()
                        // The block rides along so the completion can be checked.
                        .user_data(block << 32 | slot as u64);
                // SAFETY: `bufs[slot]` (registered as buffer `slot`, which the read covers) is
                // neither touched nor freed until this read's completion has been reaped: every
                // slot has at most one read in flight, the loop below runs until none is, and
                // `bufs` is never dropped before that (leaked on a panic). `file` outlives the
                // ring.
                unsafe { sq.push(&entry) }.expect("raw: the SQ holds at least qd entries");
            };

        let usage = Usage::now();
        let start = Instant::now();
        let clock = Clock::new(start, d);
        for slot in 0..qd {
            push(&mut sq, &mut bufs, slot);
        }
        let mut in_flight = qd;
        let mut enters = 0u64;
        while in_flight > 0 {
            sq.sync();
            enters += 1;
            match submitter.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => panic!("raw: io_uring_enter failed: {e}"),
            }
            cq.sync();
            for cqe in &mut cq {
                let (block, slot) = (cqe.user_data() >> 32, cqe.user_data() as u32 as usize);
                let res = cqe.result();
                assert!(
                    res >= 0,
                    "raw: read failed: {}",
                    io::Error::from_raw_os_error(-res)
                );
                check_read("raw", res as usize, &bufs[slot], block);
                clock.tick();
                if clock.stopped() {
                    in_flight -= 1;
                } else {
                    push(&mut sq, &mut bufs, slot);
                }
            }
            cq.sync();
        }
        let run = usage.finish(Run {
            ops: clock.done.get(),
            elapsed: start.elapsed(),
            enters,
            ..Run::default()
        });
        submitter
            .unregister_buffers()
            .unwrap_or_else(|e| panic!("raw: cannot unregister the buffers: {e}"));
        // SAFETY: every read has completed (in_flight is 0) and the buffers are no longer
        // registered, so the kernel is done with them.
        unsafe { ManuallyDrop::drop(&mut bufs) };
        run
    }

    // ---------------------------------------------------------------------------------------
    // pread

    #[inline(never)]
    fn run_pread(file: &StdFile, blocks: u64, d: Duration) -> Run {
        run_sync("pread", blocks, d, |buf, offset| {
            Ok((file.read_at(buf, offset)?, false))
        })
    }

    // ---------------------------------------------------------------------------------------
    // preadv2

    /// The `pread` loop on `preadv2(RWF_NOWAIT)`, the syscall coring's inline reads make:
    /// what that path costs with no runtime around it. A read the page cache cannot answer
    /// (EAGAIN) is done by `pread` instead and counted as a miss.
    fn run_preadv2(file: &StdFile, blocks: u64, d: Duration) -> Run {
        let fd = file.as_raw_fd();
        run_sync("preadv2", blocks, d, |buf, offset| {
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: one iovec over `buf`, a live buffer that nothing else reads or writes
            // during the call; `fd` belongs to `file`, which is open throughout.
            let rc = unsafe { libc::preadv2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) };
            if rc >= 0 {
                return Ok((rc as usize, false));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EAGAIN) {
                return Err(e);
            }
            Ok((file.read_at(buf, offset)?, true))
        })
    }

    /// One thread calling `read(buf, offset)` in a loop over the random blocks; `read`
    /// returns the bytes read and whether it missed (took a second syscall).
    #[inline(never)]
    fn run_sync(
        name: &str,
        blocks: u64,
        d: Duration,
        mut read: impl FnMut(&mut [u8], u64) -> io::Result<(usize, bool)>,
    ) -> Run {
        let mut rng = XorShift::for_slot(0);
        // Page-aligned, as direct IO needs.
        let mut buf = AlignedBuf::zeroed(BLOCK, BLOCK);
        let mut misses = 0u64;
        let usage = Usage::now();
        let start = Instant::now();
        let clock = Clock::new(start, d);
        while !clock.stopped() {
            let block = rng.block(blocks);
            let (n, missed) = read(&mut buf[..], block * BLOCK as u64)
                .unwrap_or_else(|e| panic!("{name}: read of block {block} failed: {e}"));
            misses += u64::from(missed);
            check_read(name, n, &buf, block);
            clock.tick();
        }
        usage.finish(Run {
            ops: clock.done.get(),
            elapsed: start.elapsed(),
            enters: clock.done.get() + misses,
            misses,
            ..Run::default()
        })
    }

    // ---------------------------------------------------------------------------------------
    // fio

    /// `fio --direct=1 --ioengine=io_uring --rw=randread --bs=4k --iodepth=qd` on the test
    /// file for `d` (read-only), its figures from its JSON report: the reads it completed,
    /// its measured runtime, and its CPU time (user + system of the job, as fio reports
    /// it). fio's own offsets (its random map), not ours: no content check.
    fn run_fio(path: &Path, qd: usize, d: Duration) -> Run {
        let ms = d.as_millis().max(1);
        let out = Command::new("fio")
            .args([
                "--name=coring-fread",
                &format!("--filename={}", path.display()),
                "--direct=1",
                "--ioengine=io_uring",
                "--rw=randread",
                &format!("--bs={BLOCK}"),
                &format!("--iodepth={qd}"),
                &format!("--runtime={ms}ms"),
                "--time_based",
                "--readonly",
                "--output-format=json",
            ])
            .output()
            .unwrap_or_else(|e| panic!("fio: cannot run it (apt-get install -y fio): {e}"));
        assert!(
            out.status.success(),
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("fio: unreadable JSON report: {e}"));
        let job = &report["jobs"][0];
        let num = |v: &serde_json::Value, what: &str| {
            v.as_f64()
                .unwrap_or_else(|| panic!("fio: no {what} in the report"))
        };
        let runtime = Duration::from_millis(num(&job["read"]["runtime"], "read.runtime") as u64);
        let cpu_pct = num(&job["usr_cpu"], "usr_cpu") + num(&job["sys_cpu"], "sys_cpu");
        Run {
            ops: num(&job["read"]["total_ios"], "read.total_ios") as u64,
            elapsed: runtime,
            cpu: runtime.mul_f64(cpu_pct / 100.0),
            ..Run::default()
        }
    }

    // ---------------------------------------------------------------------------------------
    // reporting

    /// The run with the median of `key` (the upper median for an even count).
    fn median(runs: &[Run], key: fn(&Run) -> f64) -> Option<Run> {
        let mut v = runs.to_vec();
        v.sort_by(|a, b| key(a).total_cmp(&key(b)));
        v.get(v.len() / 2).copied()
    }

    fn fmt_opt(r: Option<Run>, f: impl Fn(&Run) -> String) -> String {
        r.as_ref().map_or_else(|| "-".to_string(), f)
    }

    fn fmt_ratio(a: Option<Run>, b: Option<Run>, key: fn(&Run) -> f64) -> String {
        match (a, b) {
            (Some(a), Some(b)) => format!("{:.3}", key(&a) / key(&b)),
            _ => "-".to_string(),
        }
    }

    /// The median of the per-repetition ratios `key(a[i]) / key(b[i])`: runs of one repetition
    /// ran back to back, so this cancels slow drifts of the machine's speed.
    fn paired_ratio(a: &[Run], b: &[Run], key: fn(&Run) -> f64) -> String {
        let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| key(x) / key(y)).collect();
        if r.is_empty() {
            return "-".to_string();
        }
        r.sort_by(f64::total_cmp);
        format!("{:.3}", r[r.len() / 2])
    }

    /// One line per repetition: wall IOPS (CPU IOPS, preemptions, operations, and page-cache
    /// misses per operation if there were any) of a contender.
    fn fmt_rep(name: &str, r: Option<&Run>) -> String {
        match r {
            Some(r) => {
                let misses = if r.misses > 0 {
                    format!(", {:.4} miss/op", r.per_op(r.misses))
                } else {
                    String::new()
                };
                format!(
                    "{name} {:>7.0} ({:>7.0}/cpu-s, {} preempt, {} ops{misses})",
                    r.iops(),
                    r.cpu_iops(),
                    r.preempted,
                    r.ops
                )
            }
            None => format!("{name} -"),
        }
    }

    struct Row {
        qd: usize,
        coring: Vec<Run>,
        raw: Vec<Run>,
        pread: Vec<Run>,
        preadv2: Vec<Run>,
        fio: Vec<Run>,
    }

    impl Row {
        /// `c`'s runs at this queue depth.
        fn runs(&self, c: Contender) -> &[Run] {
            match c {
                Contender::Coring => &self.coring,
                Contender::Raw => &self.raw,
                Contender::Pread => &self.pread,
                Contender::Preadv2 => &self.preadv2,
                Contender::Fio => &self.fio,
            }
        }
    }

    /// A column of a table: its heading, and a row's cell.
    struct Column {
        head: &'static str,
        cell: Box<dyn Fn(&Row) -> String>,
    }

    fn col(head: &'static str, cell: impl Fn(&Row) -> String + 'static) -> Column {
        Column {
            head,
            cell: Box::new(cell),
        }
    }

    /// A table's columns: the three contenders' medians of `key` and coring's ratio to raw
    /// (of the medians, and paired), then the table's own `middle` columns, then preadv2's
    /// median and the two paired ratios that split coring's distance to pread.
    fn columns(key: fn(&Run) -> f64, middle: Vec<Column>) -> Vec<Column> {
        use Contender::*;
        let figure = move |c| {
            move |row: &Row| fmt_opt(median(row.runs(c), key), |x| format!("{:.0}", key(x)))
        };
        let paired = move |a, b| move |row: &Row| paired_ratio(row.runs(a), row.runs(b), key);
        let mut cols = vec![
            col("QD", |row| row.qd.to_string()),
            col("coring", figure(Coring)),
            col("raw uring", figure(Raw)),
            col("pread", figure(Pread)),
            col("coring/raw", move |row| {
                fmt_ratio(median(&row.coring, key), median(&row.raw, key), key)
            }),
            col("paired", paired(Coring, Raw)),
        ];
        cols.extend(middle);
        cols.extend([
            col("preadv2", figure(Preadv2)),
            col("coring/preadv2", paired(Coring, Preadv2)),
            col("preadv2/pread", paired(Preadv2, Pread)),
        ]);
        cols
    }

    /// Prints `rows` under `cols`, each column as wide as its heading (at least 8).
    fn print_table(rows: &[Row], cols: &[Column]) {
        let line = |cell: &dyn Fn(&Column) -> String| {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| format!("{:>w$}", cell(c), w = c.head.len().max(8)))
                .collect();
            println!("{}", cells.join(" "));
        };
        line(&|c| c.head.to_string());
        for row in rows {
            line(&|c| (c.cell)(row));
        }
    }

    fn print_tables(rows: &[Row]) {
        use Contender::*;
        println!(
            "\nIOPS = completed 4 KiB reads per wall-clock second, median of the runs; \
             paired = median over repetitions of coring/raw; coring/preadv2 and preadv2/pread \
             are paired the same way; x/op = per read, of the median run"
        );
        let per_op = |head, c, count: fn(&Run) -> u64| {
            col(head, move |row: &Row| {
                let m = median(row.runs(c), Run::iops);
                fmt_opt(m, |x| format!("{:.4}", x.per_op(count(x))))
            })
        };
        let middle = vec![
            per_op("coring ent/op", Coring, |x| x.enters),
            per_op("coring turn/op", Coring, |x| x.turns),
            per_op("coring park/op", Coring, |x| x.parks),
            per_op("coring inline/op", Coring, |x| x.inline),
            per_op("raw ent/op", Raw, |x| x.enters),
        ];
        print_table(rows, &columns(Run::iops, middle));
        println!(
            "\nIOPS per CPU-second (ops / process CPU time), median of the runs: the same \
             comparison with the time the machine gave to other processes taken out"
        );
        let ns = |head, c| {
            col(head, move |row: &Row| {
                let m = median(row.runs(c), Run::cpu_iops);
                fmt_opt(m, |x| format!("{:.0}", 1e9 / x.cpu_iops()))
            })
        };
        let middle = vec![
            ns("coring ns/op", Coring),
            ns("raw ns/op", Raw),
            ns("pread ns/op", Pread),
        ];
        print_table(rows, &columns(Run::cpu_iops, middle));
    }

    /// The tables of a `--direct` run: coring against fio first (the issue's yardstick),
    /// then the raw loop and pread.
    fn print_direct_tables(rows: &[Row]) {
        use Contender::*;
        println!(
            "\nDirect IO (O_DIRECT, every read from the device). IOPS = completed 4 KiB reads \
             per wall-clock second, median of the runs; paired = median over repetitions of \
             the per-repetition ratio; ns/op = process CPU time per read, of the median run"
        );
        let figure = |c| {
            move |row: &Row| {
                fmt_opt(median(row.runs(c), Run::iops), |x| {
                    format!("{:.0}", x.iops())
                })
            }
        };
        let paired = |a, b| move |row: &Row| paired_ratio(row.runs(a), row.runs(b), Run::iops);
        let ns = |c| {
            move |row: &Row| {
                fmt_opt(median(row.runs(c), Run::iops), |x| {
                    format!("{:.0}", 1e9 / x.cpu_iops())
                })
            }
        };
        let cols = vec![
            col("QD", |row| row.qd.to_string()),
            col("coring", figure(Coring)),
            col("fio", figure(Fio)),
            col("coring/fio", move |row| {
                fmt_ratio(
                    median(&row.coring, Run::iops),
                    median(&row.fio, Run::iops),
                    Run::iops,
                )
            }),
            col("paired", paired(Coring, Fio)),
            col("raw uring", figure(Raw)),
            col("coring/raw", paired(Coring, Raw)),
            col("pread", figure(Pread)),
            col("coring ns/op", ns(Coring)),
            col("fio ns/op", ns(Fio)),
            col("raw ns/op", ns(Raw)),
        ];
        print_table(rows, &cols);
    }

    pub(super) fn main() {
        let cfg = or_exit(parse_args(std::env::args().skip(1)), "fread", USAGE);
        if let Some(cpu) = cfg.cpu {
            if !sys::pin(Some(core_affinity::CoreId { id: cpu })) {
                let why = format!("--cpu {cpu}: cannot pin the thread to it");
                or_exit::<()>(Err(ArgError::Bad(why)), "fread", USAGE);
            }
        }
        let d = cfg.slice();

        let t0 = Instant::now();
        let tf = TestFile::create_in(&std::env::temp_dir(), cfg.file_mb, !cfg.direct)
            .unwrap_or_else(|e| panic!("fread: cannot create the test file: {e}"));
        let direct_flag = if cfg.direct { libc::O_DIRECT } else { 0 };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(direct_flag)
            .open(tf.path())
            .unwrap_or_else(|e| panic!("fread: cannot open {}: {e}", tf.path().display()));
        let resident = resident_fraction(&file, (tf.blocks() * BLOCK as u64) as usize).map_or_else(
            |e| format!("unknown ({e})"),
            |f| format!("{:.1}%", f * 100.0),
        );
        println!(
            "fread: {} MiB test file {} ({} blocks, {} resident in the page cache, made in {:.1?})",
            cfg.file_mb,
            tf.path().display(),
            tf.blocks(),
            resident,
            t0.elapsed()
        );
        let raw_setup = raw_ring(256).map_or_else(
            |e| format!("unavailable: {e}"),
            |(_, s)| s.name().to_string(),
        );
        let qd1_buf = if cfg.direct { "an AlignedBuf" } else { "a Vec" };
        println!(
            "coring: {} (QD 1: read_at into {qd1_buf}; QD > 1: registered file + \
             FixedBufPool, read_fixed_at){}",
            coring_backend(),
            if cfg.direct { "; direct IO" } else { "" }
        );
        println!(
            "raw:    io_uring ({raw_setup}; registered file + one registered buffer per slot, \
             READ_FIXED)"
        );
        println!(
            "{} s per run in {} slice(s), {} run(s) per contender and QD, interleaved; \
         random aligned {} B reads",
            cfg.secs.as_secs_f64(),
            cfg.slices,
            cfg.reps,
            BLOCK
        );

        let mut rows = Vec::new();
        for &qd in &cfg.qds {
            let mut row = Row {
                qd,
                coring: Vec::new(),
                raw: Vec::new(),
                pread: Vec::new(),
                preadv2: Vec::new(),
                fio: Vec::new(),
            };
            for rep in 0..cfg.reps {
                let (mut c, mut r, mut p, mut v, mut f) = (
                    Run::default(),
                    Run::default(),
                    Run::default(),
                    Run::default(),
                    Run::default(),
                );
                for slice in 0..cfg.slices {
                    // fio and coring take turns going first, so that neither always
                    // follows the other on the device.
                    let fio_first = (rep + slice as usize) % 2 == 1;
                    if fio_first && cfg.runs(Contender::Fio) {
                        f.add(&run_fio(tf.path(), qd, d));
                    }
                    if cfg.runs(Contender::Coring) {
                        c.add(&run_coring(tf.path(), tf.blocks(), qd, d, cfg.direct));
                    }
                    if !fio_first && cfg.runs(Contender::Fio) {
                        f.add(&run_fio(tf.path(), qd, d));
                    }
                    if cfg.runs(Contender::Raw) {
                        r.add(&run_raw(&file, tf.blocks(), qd, d));
                    }
                    if cfg.runs(Contender::Pread) {
                        p.add(&run_pread(&file, tf.blocks(), d));
                    }
                    if cfg.runs(Contender::Preadv2) {
                        v.add(&run_preadv2(&file, tf.blocks(), d));
                    }
                }
                for (runs, run, who) in [
                    (&mut row.coring, c, Contender::Coring),
                    (&mut row.raw, r, Contender::Raw),
                    (&mut row.pread, p, Contender::Pread),
                    (&mut row.preadv2, v, Contender::Preadv2),
                    (&mut row.fio, f, Contender::Fio),
                ] {
                    if cfg.runs(who) {
                        runs.push(run);
                    }
                }
                let last = if cfg.direct {
                    fmt_rep("fio", row.fio.get(rep))
                } else {
                    fmt_rep("preadv2", row.preadv2.get(rep))
                };
                println!(
                    "  qd {qd:>4} rep {}: {} | {} | {} | {last}",
                    rep + 1,
                    fmt_rep("coring", row.coring.get(rep)),
                    fmt_rep("raw", row.raw.get(rep)),
                    fmt_rep("pread", row.pread.get(rep)),
                );
                let _ = io::stdout().flush();
            }
            rows.push(row);
        }
        if cfg.direct {
            print_direct_tables(&rows);
        } else {
            print_tables(&rows);
        }
        drop(file);
        drop(tf);
    }
}
