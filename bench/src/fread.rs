//! The fread benchmark: random aligned 4 KiB reads of a page-cache-resident file, `qd`
//! reads in flight (one task each), on one pinned thread; or, with direct IO, of the device
//! (the file opened with `OpenOptions::direct`, each reader with an `AlignedBuf`).

use std::cell::{Cell, RefCell};
use std::fs::File as StdFile;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring::buf::AlignedBuf;
use coring::time::sleep_until;
use coring::BackendKind;
use serde_json::json;

use crate::cli::backend_name;
use crate::hist::LatencyHist;
use crate::progress::Progress;
use crate::report::{Mode, RunResult};
use crate::stats;
use crate::sys::{self, ThreadUsage};
use crate::thread::on_pinned_thread;

/// Size of one read, and the alignment of every offset.
pub const BLOCK: usize = 4096;

/// The test file: every 4 KiB block starts with its index (little endian), so a read of
/// the wrong offset is caught ([`check_block`]). Removed on drop.
#[derive(Debug)]
pub struct TestFile {
    path: PathBuf,
    blocks: u64,
}

impl TestFile {
    /// [`TestFile::create_in`] the temporary directory.
    ///
    /// # Errors
    ///
    /// Any error creating, writing or reading the file.
    pub fn create(mb: u64) -> io::Result<TestFile> {
        TestFile::create_in(&std::env::temp_dir(), mb, true)
    }

    /// Writes a `mb` MiB file in `dir`, syncs it (so that writeback does not run during the
    /// measurements) and, with `warm`, reads it once, so that every page is in the page
    /// cache (direct IO does not use it).
    ///
    /// # Errors
    ///
    /// Any error creating, writing or reading the file.
    pub fn create_in(dir: &Path, mb: u64, warm: bool) -> io::Result<TestFile> {
        let path = dir.join(format!("coring-bench-{}.dat", std::process::id()));
        let tf = TestFile {
            path,
            blocks: mb * 1024 * 1024 / BLOCK as u64,
        };
        let mut f = StdFile::create(&tf.path)?;
        let mut chunk = vec![0u8; 1024 * 1024];
        let per_chunk = (chunk.len() / BLOCK) as u64;
        for c in 0..tf.blocks / per_chunk {
            for (i, blk) in chunk.chunks_mut(BLOCK).enumerate() {
                let idx = c * per_chunk + i as u64;
                blk.fill(idx as u8);
                blk[..8].copy_from_slice(&idx.to_le_bytes());
            }
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
        drop(f);
        if !warm {
            return Ok(tf);
        }
        let mut f = StdFile::open(&tf.path)?;
        let mut total = 0;
        loop {
            match f.read(&mut chunk)? {
                0 => break,
                n => total += n as u64,
            }
        }
        if total != tf.blocks * BLOCK as u64 {
            return Err(io::Error::other(format!(
                "read back {total} bytes of {}",
                tf.blocks * BLOCK as u64
            )));
        }
        Ok(tf)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many 4 KiB blocks it has.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            eprintln!("cannot remove the test file {}: {e}", self.path.display());
        }
    }
}

/// Checks a read of block `block` that returned `n` bytes into `buf`: a whole block, and
/// the block asked for.
///
/// # Errors
///
/// What is wrong, in words.
pub fn check_block(buf: &[u8], n: usize, block: u64) -> Result<(), String> {
    if n != BLOCK || buf.len() < 8 || buf[..8] != block.to_le_bytes() {
        return Err(format!(
            "read of block {block} returned {n} bytes starting with {:?}",
            &buf[..buf.len().min(8)]
        ));
    }
    Ok(())
}

/// xorshift64: deterministic offsets, cheap next to a syscall.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// The generator of reader `slot` (the same for every backend).
    pub fn for_slot(slot: usize) -> XorShift {
        let s = 0x9E37_79B9_7F4A_7C15u64 ^ (slot as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        XorShift(s.max(1))
    }

    /// A block index in `0..blocks`.
    pub fn block(&mut self, blocks: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % blocks
    }
}

/// What one fread run does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreadParams {
    /// Reads in flight.
    pub qd: usize,
    /// Measured duration.
    pub secs: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Direct IO: the file opened with `O_DIRECT`, reads into aligned buffers.
    pub direct: bool,
}

/// What the readers share.
struct Shared {
    warm_end: Instant,
    end: Instant,
    blocks: u64,
    hist: RefCell<LatencyHist>,
    ops: Cell<u64>,
    counter: Arc<AtomicU64>,
}

/// What the benchmark thread reports.
struct Measured {
    backend: BackendKind,
    description: String,
    hist: LatencyHist,
    ops: u64,
    cpu: Option<Duration>,
    usage: ThreadUsage,
    counters: (u64, u64, u64),
    offloaded: u64,
    /// The runtime's metrics at the end of the window.
    metrics: coring::Metrics,
}

/// Runs one fread benchmark on `backend`; failures end up in [`RunResult::error`].
pub fn run(
    p: &FreadParams,
    file: &TestFile,
    backend: BackendKind,
    progress: &mut Progress,
) -> RunResult {
    let label = format!("qd {}{}", p.qd, if p.direct { " direct" } else { "" });
    let mut res = RunResult::new(Mode::Fread, label, backend_name(backend), "read");
    res.params = json!({
        "qd": p.qd,
        "block": BLOCK,
        "file_mib": file.blocks() * BLOCK as u64 / (1024 * 1024),
        "secs": p.secs.as_secs_f64(),
        "warmup_secs": p.warmup.as_secs_f64(),
        "direct": p.direct,
    });
    let counter = Arc::new(AtomicU64::new(0));
    let (path, blocks, params) = (file.path().to_path_buf(), file.blocks(), *p);
    let thread_counter = counter.clone();
    let est_end = Instant::now() + p.warmup + p.secs;
    let measured = on_pinned_thread(
        "bench-fread",
        progress,
        Some(est_end),
        &counter,
        p.warmup + p.secs + Duration::from_secs(20),
        move || measure(&params, &path, blocks, backend, thread_counter),
    );
    match measured {
        Ok(m) => {
            res.backend = backend_name(m.backend).to_string();
            res.backend_description = m.description;
            res.ops = m.ops;
            res.elapsed = p.secs;
            res.latency = Some(m.hist);
            res.cpu = m.cpu;
            res.run_wait = stats::wait_fraction(m.usage.run_wait, p.secs);
            res.counters = Some(m.counters);
            res.metrics = Some(m.metrics);
            if let serde_json::Value::Object(o) = &mut res.params {
                o.insert(
                    "thread_cpu_us_per_read".into(),
                    json!(stats::cpu_us_per_op(m.usage.cpu, m.ops)),
                );
                o.insert("offloaded_ops".into(), json!(m.offloaded));
            }
            res.note_cpu_wait();
        }
        Err(e) => res.error = Some(e),
    }
    res
}

fn measure(
    p: &FreadParams,
    path: &Path,
    blocks: u64,
    backend: BackendKind,
    counter: Arc<AtomicU64>,
) -> Result<Measured, String> {
    let entries = p.qd.next_power_of_two().max(256) as u32;
    let rt = coring::Builder::new()
        .backend(backend)
        .entries(entries)
        .build()
        .map_err(|e| format!("runtime on {}: {e}", backend_name(backend)))?;
    let mut options = coring::fs::OpenOptions::new();
    options.read(true).direct(p.direct);
    let file = rt
        .block_on(options.open(path))
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let file = Rc::new(file);
    let start = Instant::now();
    let shared = Rc::new(Shared {
        warm_end: start + p.warmup,
        end: start + p.warmup + p.secs,
        blocks,
        hist: RefCell::new(LatencyHist::new()),
        ops: Cell::new(0),
        counter,
    });
    let (cpu, usage, m0, m1, errors) = rt.block_on(async {
        let readers: Vec<_> = (0..p.qd)
            .map(|slot| coring::spawn(reader(file.clone(), shared.clone(), slot)))
            .collect();
        sleep_until(shared.warm_end).await;
        let (c0, u0, m0) = (sys::process_cpu(), ThreadUsage::now(), rt.metrics());
        sleep_until(shared.end).await;
        let (c1, u1, m1) = (sys::process_cpu(), ThreadUsage::now(), rt.metrics());
        let mut errors = Vec::new();
        for r in readers {
            match r.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(format!("reader task: {e:?}")),
            }
        }
        let cpu = c1.zip(c0).map(|(b, a)| b.saturating_sub(a));
        (cpu, u1.since(u0), m0, m1, errors)
    });
    let description = rt.backend_description();
    let kind = rt.backend();
    drop(file);
    drop(rt);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let hist = shared.hist.borrow().clone();
    Ok(Measured {
        backend: kind,
        description,
        hist,
        ops: shared.ops.get(),
        cpu,
        usage,
        counters: (
            m1.enters - m0.enters,
            m1.parks - m0.parks,
            m1.turns - m0.turns,
        ),
        offloaded: m1.ops_offloaded - m0.ops_offloaded,
        metrics: m1,
    })
}

/// One reader: a read at a random block, again and again until the window ends.
///
/// Its buffer is page-aligned (an [`AlignedBuf`], which direct IO needs; it costs a
/// buffered read nothing more than a `Vec`).
async fn reader(file: Rc<coring::fs::File>, sh: Rc<Shared>, slot: usize) -> Result<(), String> {
    let mut rng = XorShift::for_slot(slot);
    let mut buf = AlignedBuf::new(BLOCK, BLOCK);
    loop {
        let t0 = Instant::now();
        if t0 >= sh.end {
            return Ok(());
        }
        let block = rng.block(sh.blocks);
        buf.clear();
        let (res, b) = file.read_at(buf, block * BLOCK as u64).await;
        buf = b;
        let t1 = Instant::now();
        let n = res.map_err(|e| format!("read of block {block}: {e}"))?;
        check_block(&buf, n, block)?;
        sh.counter.fetch_add(1, Ordering::Relaxed);
        if t0 >= sh.warm_end {
            sh.hist.borrow_mut().record((t1 - t0).as_nanos() as u64);
            sh.ops.set(sh.ops.get() + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_covers_the_file_and_is_deterministic() {
        let mut a = XorShift::for_slot(3);
        let mut b = XorShift::for_slot(3);
        let mut seen = [false; 64];
        for _ in 0..10_000 {
            let x = a.block(64);
            assert_eq!(x, b.block(64));
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_ne!(
            XorShift::for_slot(0).block(1 << 40),
            XorShift::for_slot(1).block(1 << 40)
        );
    }
}
