//! Polled IO (`Builder::iopoll`): direct reads and writes on io_uring's second, polled ring,
//! the transparent move to the main ring where the kernel refuses polled IO, and the
//! status that says so.
//!
//! What this machine can show: its only disk is virtio (`/sys/block/vda/queue/io_poll` is
//! 0: no poll queues), `null_blk` is not loadable (the kernel runs with `nomodule`, and
//! `/sys/module/null_blk` is absent), and tmpfs has no `iopoll`. So on io_uring these tests
//! exercise the refused path end to end against the real kernel (Linux 6.18 refuses a
//! polled read of an ext4 file on virtio with EOPNOTSUPP in its completion, and one of a
//! tmpfs file at submission; it completes a polled write there, unpolled: see
//! `bench/scripts/iopoll-probe.c`), and the path
//! where the device polls runs on the mock backend, whose "polled ring" is routed by the
//! same code. The tests accept either outcome on io_uring (a machine with NVMe poll queues
//! keeps the file polled), and check that what they observe is consistent.

mod common;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use coring::buf::{AlignedBuf, FixedBufPool};
use coring::fs::{File, OpenOptions};
use coring::{BackendKind, IopollStatus};

/// A fresh path in the system's temporary directory (ext4 on this machine's virtio disk).
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("coring-iopoll-{}-{name}", std::process::id()))
}

/// Opens `path` for direct IO, creating it; `None` (after saying why) where the file
/// system cannot do direct IO.
async fn open_direct(path: &std::path::Path) -> Option<File> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .direct(true)
        .open(path)
        .await
    {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("skipped: {} cannot do direct IO here ({e})", path.display());
            None
        }
        Err(e) => panic!("open {} for direct IO: {e}", path.display()),
    }
}

/// `len` bytes that differ at every position within a few blocks.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn aligned(data: &[u8], align: usize) -> AlignedBuf {
    let mut b = AlignedBuf::new(data.len(), align);
    b.extend_from_slice(data);
    b
}

/// What the runtime must say about polled IO on `backend` before any IO.
fn check_initial_status(rt: &coring::Runtime, backend: BackendKind) {
    match (backend, rt.iopoll_status()) {
        (BackendKind::IoUring, IopollStatus::Active) => {}
        // The kernel may refuse to set up a polled ring at all: then it says so.
        (BackendKind::IoUring, IopollStatus::Unsupported { reason }) => {
            assert!(reason.contains("IORING_SETUP_IOPOLL"), "{reason}")
        }
        (_, IopollStatus::Unsupported { reason }) => {
            assert!(reason.contains("has no polled IO"), "{reason}")
        }
        (b, s) => panic!("{b}: unexpected initial iopoll status {s:?}"),
    }
}

// Reads and writes (plain and vectored) of a direct file with iopoll on are byte-exact on
// every backend, each operation is counted once however it ran, and the status and
// `is_polled` agree with what happened.
coring_test!(direct_io_with_iopoll_is_byte_exact, |builder| {
    let rt = builder.iopoll(true).build().expect("runtime");
    let backend = rt.backend();
    check_initial_status(&rt, backend);
    let path = temp_path(&format!("rw-{backend}"));
    common::block_on_bounded(&rt, async {
        let Some(f) = open_direct(&path).await else {
            return;
        };
        let a = f.dio_alignment().unwrap();
        let unit = a.offset().max(a.memory()).max(4096);
        let ring_polls = rt.iopoll_status() == IopollStatus::Active;
        assert_eq!(
            f.is_polled(),
            ring_polls,
            "a direct file on an active ring polls"
        );

        // A write, then a read of it back.
        let data = pattern(4 * unit, 7);
        let m0 = rt.metrics();
        let (res, _) = f.write_at(aligned(&data, a.memory()), 0).await;
        assert_eq!(res.unwrap(), data.len());
        let polled_before_read = f.is_polled();
        let m1 = rt.metrics();
        let (res, back) = f.read_at(AlignedBuf::new(data.len(), a.memory()), 0).await;
        assert_eq!(res.unwrap(), data.len());
        assert!(
            back[..] == data[..],
            "read back differs from what was written"
        );
        let m2 = rt.metrics();
        for (what, before, after) in [("write", &m0, &m1), ("read", &m1, &m2)] {
            assert_eq!(
                (
                    after.ops_submitted - before.ops_submitted,
                    after.ops_completed - before.ops_completed
                ),
                (1, 1),
                "the {what} counts once, whichever ring ran it: {after:?}"
            );
        }
        let read_polled = m2.ops_polled - m1.ops_polled;
        let read_rerouted = m2.ops_poll_rerouted - m1.ops_poll_rerouted;
        if polled_before_read {
            assert_eq!(
                read_polled + read_rerouted,
                1,
                "a polled read completes on the polled ring or is moved once: {m2:?}"
            );
        } else {
            assert_eq!((read_polled, read_rerouted), (0, 0), "{m2:?}");
        }

        // Vectored, at an offset, after whatever the first read taught the runtime.
        let parts = [pattern(unit, 1), pattern(2 * unit, 2)];
        let bufs: Vec<AlignedBuf> = parts.iter().map(|p| aligned(p, a.memory())).collect();
        let (res, _) = f.writev_at(bufs, unit as u64).await;
        assert_eq!(res.unwrap(), 3 * unit);
        let bufs = vec![
            AlignedBuf::new(2 * unit, a.memory()),
            AlignedBuf::new(unit, a.memory()),
        ];
        let (res, bufs) = f.readv_at(bufs, unit as u64).await;
        assert_eq!(res.unwrap(), 3 * unit);
        let got: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let want: Vec<u8> = parts.concat();
        assert!(got == want, "vectored read back differs");

        // A registered file and registered buffers on a fresh direct file (on a device that
        // polls it goes to the polled ring, which names both plainly: its tables are the
        // main ring's; after a refusal, to the main ring, which uses both tables).
        let path2 = temp_path(&format!("fixed-{backend}"));
        let g = open_direct(&path2).await.expect("direct IO worked above");
        g.register().unwrap();
        let pool = FixedBufPool::with_alignment(2, 2 * unit, a.memory());
        pool.register().unwrap();
        let fixed_data = pattern(2 * unit, 9);
        let mut buf = pool.try_take().unwrap();
        buf.extend_from_slice(&fixed_data);
        let (res, buf) = g.write_fixed_at(buf, unit as u64).await;
        assert_eq!(res.unwrap(), 2 * unit);
        drop(buf);
        let mut buf = pool.try_take().unwrap();
        buf.clear();
        let (res, buf) = g.read_fixed_at(buf, unit as u64).await;
        assert_eq!(res.unwrap(), 2 * unit);
        assert!(buf[..] == fixed_data[..], "fixed read back differs");
        drop(g);
        let _ = std::fs::remove_file(&path2);

        let m = rt.metrics();
        let status = rt.iopoll_status();
        eprintln!(
            "{backend}: iopoll status: {status}; file polled: {}; polled ops {}, moved to \
             the main ring {}",
            f.is_polled(),
            m.ops_polled,
            m.ops_poll_rerouted
        );
        match &status {
            IopollStatus::Active => {
                assert!(f.is_polled());
                assert_eq!(m.ops_poll_rerouted, 0);
            }
            IopollStatus::Unsupported { reason } => {
                assert!(!f.is_polled(), "{reason}");
                if m.ops_poll_rerouted > 0 {
                    // The kernel's own words for EOPNOTSUPP, on the refused path.
                    let eopnotsupp = std::io::Error::from_raw_os_error(95).to_string();
                    assert!(reason.contains(&eopnotsupp), "{reason}");
                }
            }
            IopollStatus::Off => panic!("asked for iopoll, status Off"),
            other => panic!("unexpected status {other:?}"),
        }
        // Every polled operation ended on one ring or the other: nothing left behind.
        assert_eq!(rt.ops_in_flight(), 0);
    });
    let _ = std::fs::remove_file(&path);
});

// Polled IO off (the default) says so, on every backend, and no file polls.
coring_test!(iopoll_off_by_default, |builder| {
    let rt = builder.build().expect("runtime");
    assert_eq!(rt.iopoll_status(), IopollStatus::Off);
    let path = temp_path(&format!("off-{}", rt.backend()));
    common::block_on_bounded(&rt, async {
        if let Some(f) = open_direct(&path).await {
            assert!(f.is_direct() && !f.is_polled());
        }
    });
    let m = rt.metrics();
    assert_eq!((m.ops_polled, m.ops_poll_rerouted), (0, 0));
    let _ = std::fs::remove_file(&path);
});

/// Polls `fut` once (submitting its operation), then drops it while the operation is in
/// flight.
async fn poll_once_then_drop<F: Future>(fut: F) {
    let mut fut: Pin<Box<F>> = Box::pin(fut);
    std::future::poll_fn(|cx| {
        let _ = fut.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await;
    drop(fut);
}

// Direct reads and writes dropped while in flight (on the polled ring where there is one)
// are finished by the driver, never freed early. Runs on every backend.
coring_test!(dropped_polled_ops_are_finished, |builder| {
    let rt = builder.iopoll(true).build().expect("runtime");
    let backend = rt.backend();
    let path = temp_path(&format!("drop-{backend}"));
    let done = common::block_on_bounded(&rt, async {
        let Some(f) = open_direct(&path).await else {
            return false;
        };
        let a = f.dio_alignment().unwrap();
        let unit = a.offset().max(a.memory()).max(4096);
        let data = pattern(16 * unit, 3);
        let (res, _) = f.write_at(aligned(&data, a.memory()), 0).await;
        assert_eq!(res.unwrap(), data.len());
        for i in 0..16 {
            poll_once_then_drop(f.read_at(AlignedBuf::new(unit, a.memory()), (i * unit) as u64))
                .await;
            poll_once_then_drop(f.write_at(aligned(&data[..unit], a.memory()), (i * unit) as u64))
                .await;
        }
        common::eventually("orphaned polled ops to finish", || rt.ops_in_flight() == 0).await;
        let m = rt.metrics();
        assert_eq!(m.ops_leaked, 0, "{m:?}");
        assert_eq!(m.ops_submitted, m.ops_completed, "{m:?}");
        true
    });
    if done {
        let _ = std::fs::remove_file(&path);
    }
});

// A runtime dropped with direct writes in flight (on the polled ring where there is one:
// Linux 6.18 completes polled writes on this VM's disk, unpolled) waits for them: its
// shutdown polls the polled ring until they are done (or, past the deadline, leaks their
// buffers, never frees them). Runs on every backend.
coring_test!(runtime_dropped_with_polled_ops_in_flight, |builder| {
    let rt = builder
        .iopoll(true)
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .expect("runtime");
    let backend = rt.backend();
    let path = temp_path(&format!("rtdrop-{backend}"));
    let opened = common::block_on_bounded(&rt, async {
        let Some(f) = open_direct(&path).await else {
            return false;
        };
        assert_eq!(
            f.is_polled(),
            rt.iopoll_status() == IopollStatus::Active,
            "before any IO, a direct file polls where the ring is up"
        );
        let a = f.dio_alignment().unwrap();
        let unit = a.offset().max(a.memory()).max(4096);
        let data = pattern(unit, 5);
        let f = std::rc::Rc::new(f);
        for i in 0..8 {
            let f = f.clone();
            let buf = aligned(&data, a.memory());
            drop(coring::spawn(async move {
                let _ = f.write_at(buf, (i * unit) as u64).await;
            }));
        }
        // The tasks submit their writes; the runtime is dropped right after.
        coring::task::yield_now().await;
        true
    });
    drop(rt);
    if opened {
        let _ = std::fs::remove_file(&path);
    }
});

/// The mock-backend tests need a direct descriptor made by `std` and recognised by
/// `File::from_std` (`O_DIRECT` among its status flags), which coring reads on Linux and
/// FreeBSD only; the mock never touches the descriptor otherwise.
#[cfg(target_os = "linux")]
mod mock {
    use super::*;
    use coring::mock::MockHandle;
    use coring::task::yield_now;
    use coring::Builder;
    use std::os::unix::fs::OpenOptionsExt;

    fn mock_runtime(iopoll: bool) -> (coring::Runtime, MockHandle) {
        let rt = Builder::new()
            .backend(BackendKind::Mock)
            .iopoll(iopoll)
            .shutdown_timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let mock = rt.mock();
        (rt, mock)
    }

    /// A file opened for direct IO (or `None` where the file system cannot).
    fn direct_file(name: &str) -> Option<(File, PathBuf)> {
        let path = temp_path(name);
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            Ok(f) => Some((File::from_std(f), path)),
            Err(e) => {
                eprintln!("skipped: no direct IO in {} ({e})", path.display());
                None
            }
        }
    }

    async fn turns(n: usize) {
        for _ in 0..n {
            yield_now().await;
        }
    }

    // Where the device polls: direct reads go to the polled ring and complete there; a
    // buffered file's do not; the file stays polled.
    #[test]
    fn polled_device_keeps_the_file_polled() {
        common::with_watchdog("polled_device_keeps_the_file_polled", || {
            let (rt, mock) = mock_runtime(true);
            assert_eq!(rt.iopoll_status(), IopollStatus::Active);
            let Some((f, path)) = rt.block_on(async { direct_file("mock-polls") }) else {
                return;
            };
            rt.block_on(async {
                assert!(f.is_direct() && f.is_polled());
                let f = std::rc::Rc::new(f);
                let g = f.clone();
                let h = coring::spawn(async move {
                    let (res, buf) = g.read_at(AlignedBuf::new(4096, 4096), 0).await;
                    (res.unwrap(), buf[..4].to_vec())
                });
                turns(2).await;
                let op = mock.only("read");
                assert!(op.polled, "a direct read goes to the polled ring: {op:?}");
                mock.fill(op.key, b"poll");
                mock.complete(op.key, 4096);
                assert_eq!(h.await.unwrap(), (4096, b"poll".to_vec()));
                assert!(f.is_polled());
                // A buffered file on the same runtime: main ring.
                let plain = File::from_std(std::fs::File::open(&path).unwrap());
                assert!(!plain.is_polled());
                let h = coring::spawn(async move {
                    let (res, _) = plain.read_at(vec![0u8; 16], 0).await;
                    res.unwrap()
                });
                turns(2).await;
                let op = mock.only("read");
                assert!(!op.polled, "{op:?}");
                mock.complete(op.key, 0);
                assert_eq!(h.await.unwrap(), 0);
            });
            let m = rt.metrics();
            assert_eq!((m.ops_polled, m.ops_poll_rerouted), (1, 0), "{m:?}");
            assert_eq!(rt.iopoll_status(), IopollStatus::Active);
            let _ = std::fs::remove_file(&path);
        });
    }

    // Where the device has no poll queues: the refusal (EOPNOTSUPP) never reaches the
    // caller; the same operation runs on the main ring, once more only there; the file's
    // later IO goes there; the status says why; the op counts once.
    #[test]
    fn refused_polled_read_moves_to_the_main_ring() {
        common::with_watchdog("refused_polled_read_moves_to_the_main_ring", || {
            let (rt, mock) = mock_runtime(true);
            let Some((f, path)) = rt.block_on(async { direct_file("mock-refuses") }) else {
                return;
            };
            rt.block_on(async {
                let f = std::rc::Rc::new(f);
                let g = f.clone();
                let h = coring::spawn(async move {
                    let (res, buf) = g.read_at(AlignedBuf::new(4096, 4096), 0).await;
                    (res.unwrap(), buf[..4].to_vec())
                });
                turns(2).await;
                let op = mock.only("read");
                assert!(op.polled);
                mock.complete(op.key, -libc::EOPNOTSUPP);
                turns(2).await;
                let again = mock.only("read");
                assert_eq!(again.key, op.key, "the same operation, started again");
                assert!(!again.polled, "now on the main ring: {again:?}");
                assert!(!f.is_polled(), "the file's IO stays on the main ring");
                // So does that of another direct file on the same device (same file
                // system: the temporary directory).
                if let Some((other, p2)) = direct_file("mock-refuses-2") {
                    assert!(!other.is_polled(), "the refusal covers the device");
                    let _ = std::fs::remove_file(p2);
                }
                mock.fill(again.key, b"main");
                mock.complete(again.key, 4096);
                assert_eq!(h.await.unwrap(), (4096, b"main".to_vec()));
                // The next write goes straight to the main ring.
                let g = f.clone();
                let h = coring::spawn(async move {
                    let (res, _) = g.write_at(AlignedBuf::zeroed(4096, 4096), 0).await;
                    res.unwrap()
                });
                turns(2).await;
                let w = mock.only("write");
                assert!(!w.polled, "{w:?}");
                mock.complete(w.key, 4096);
                assert_eq!(h.await.unwrap(), 4096);
            });
            let m = rt.metrics();
            assert_eq!((m.ops_submitted, m.ops_completed), (2, 2), "{m:?}");
            assert_eq!((m.ops_polled, m.ops_poll_rerouted), (0, 1), "{m:?}");
            match rt.iopoll_status() {
                IopollStatus::Unsupported { reason } => {
                    assert!(reason.contains("refused a polled read"), "{reason}")
                }
                s => panic!("expected Unsupported after a refusal, got {s:?}"),
            }
            let _ = std::fs::remove_file(&path);
        });
    }

    // A cancel (here: the future dropped) of a polled operation is only recorded; if the
    // kernel then refuses it, it ends cancelled instead of moving to the main ring, and
    // the driver frees it only then.
    #[test]
    fn cancelled_polled_op_is_not_restarted() {
        common::with_watchdog("cancelled_polled_op_is_not_restarted", || {
            let (rt, mock) = mock_runtime(true);
            let Some((f, path)) = rt.block_on(async { direct_file("mock-cancel") }) else {
                return;
            };
            rt.block_on(async {
                let r = coring::time::timeout(
                    Duration::from_millis(1),
                    f.read_at(AlignedBuf::new(4096, 4096), 0),
                )
                .await;
                assert!(r.is_err(), "nothing completed the read");
                turns(2).await;
                let op = mock.only("read");
                assert!(op.polled && op.cancel_requested, "{op:?}");
                assert_eq!(rt.ops_in_flight(), 1, "the driver still owns it");
                mock.complete(op.key, -libc::EOPNOTSUPP);
                turns(2).await;
                assert!(
                    mock.pending().is_empty(),
                    "not restarted: {:?}",
                    mock.pending()
                );
                assert_eq!(rt.ops_in_flight(), 0);
            });
            let m = rt.metrics();
            assert_eq!((m.ops_orphaned, m.ops_poll_rerouted), (1, 0), "{m:?}");
            let _ = std::fs::remove_file(&path);
        });
    }

    // The mock without iopoll routes nothing to a polled ring.
    #[test]
    fn mock_without_iopoll_is_off() {
        common::with_watchdog("mock_without_iopoll_is_off", || {
            let (rt, _mock) = mock_runtime(false);
            assert_eq!(rt.iopoll_status(), IopollStatus::Off);
        });
    }
}
