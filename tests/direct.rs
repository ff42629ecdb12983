//! Direct IO: `OpenOptions::direct`, `File::dio_alignment`, `AlignedBuf`,
//! `FixedBufPool::with_alignment`, and the alignment check every read and write of a direct
//! file makes before submission, on every backend.
//!
//! The test files live in the system's temporary directory. Where its file system cannot
//! do direct IO (the open fails with EINVAL, as on tmpfs before Linux 6.6), the tests say so
//! and pass without checking anything else.

mod common;

use std::io::{self, ErrorKind};
use std::path::Path;

use common::TempDir;
use coring::buf::{AlignedBuf, FixedBufPool, IoBuf};
use coring::fs::{DioAlignment, File, OpenOptions};

/// Opens `path` for direct reading and writing, creating it; `None` (after saying why) if
/// the file system cannot do direct IO.
async fn open_direct(path: &Path) -> Option<File> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .direct(true)
        .open(path)
        .await
    {
        Ok(f) => Some(f),
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            eprintln!(
                "skipped: {} cannot be opened for direct IO here ({e})",
                path.display()
            );
            None
        }
        Err(e) => panic!("open {} for direct IO: {e}", path.display()),
    }
}

/// `len` bytes of a pattern that differs at every position within a few blocks.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// An aligned buffer for `a` holding `data`.
fn filled(a: DioAlignment, data: &[u8]) -> AlignedBuf {
    let mut buf = AlignedBuf::new(data.len(), a.memory());
    buf.extend_from_slice(data);
    buf
}

/// Asserts `res` is the direct-IO refusal naming `culprit`.
fn assert_refused<T: std::fmt::Debug>(res: io::Result<T>, culprit: &str) {
    let e = res.expect_err("a misaligned direct transfer must be refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("direct IO needs offsets and lengths that are multiples of ")
            && msg.contains(culprit),
        "message {msg:?} should name {culprit:?}"
    );
}

fn assert_sane(a: DioAlignment) {
    assert!(
        a.memory().is_power_of_two() && a.memory() <= 65536,
        "memory alignment {}",
        a.memory()
    );
    assert!(
        a.offset().is_power_of_two() && (512..=65536).contains(&a.offset()),
        "offset alignment {}",
        a.offset()
    );
}

coring_test!(dio_alignment_reports_sane_values, async {
    let dir = TempDir::new("dio-align");
    let path = dir.path("f");
    std::fs::write(&path, b"x").unwrap();
    let plain = File::open(&path).await.unwrap();
    assert!(!plain.is_direct());
    let a = plain.dio_alignment().unwrap();
    assert_sane(a);
    assert_eq!(plain.dio_alignment().unwrap(), a, "asked again");
    let Some(direct) = open_direct(&path).await else {
        return;
    };
    assert!(direct.is_direct());
    let d = direct.dio_alignment().unwrap();
    assert_sane(d);
    assert_eq!(d, a, "the same file, direct or not");
    eprintln!(
        "direct IO alignment here: memory {}, offset {}",
        d.memory(),
        d.offset()
    );
});

coring_test!(direct_write_then_read_back, async {
    let dir = TempDir::new("dio-rw");
    let Some(file) = open_direct(&dir.path("f")).await else {
        return;
    };
    let a = file.dio_alignment().unwrap();
    let block = a.offset();
    let data = pattern(4 * block, 7);
    // Two blocks at offset 0, two more at an aligned offset further in.
    let (res, _) = file.write_at(filled(a, &data[..2 * block]), 0).await;
    assert_eq!(res.unwrap(), 2 * block);
    let (res, _) = file
        .write_all_at(filled(a, &data[2 * block..]), 2 * block as u64)
        .await;
    res.unwrap();
    let (res, buf) = file
        .read_at(AlignedBuf::new(4 * block, a.memory()), 0)
        .await;
    assert_eq!(res.unwrap(), 4 * block);
    assert_eq!(&buf[..], &data[..]);
    let (res, buf) = file
        .read_exact_at(AlignedBuf::new(2 * block, a.memory()), block as u64)
        .await;
    res.unwrap();
    assert_eq!(&buf[..], &data[block..3 * block]);
    // At the end of the file: nothing, not an error.
    let (res, _) = file
        .read_at(AlignedBuf::new(block, a.memory()), 4 * block as u64)
        .await;
    assert_eq!(res.unwrap(), 0);
    file.sync_data().await.unwrap();
    file.close().await.unwrap();
});

coring_test!(direct_data_reaches_the_file, async {
    let dir = TempDir::new("dio-disk");
    let path = dir.path("f");
    let Some(file) = open_direct(&path).await else {
        return;
    };
    let a = file.dio_alignment().unwrap();
    let data = pattern(3 * a.offset(), 42);
    let (res, _) = file.write_all_at(filled(a, &data), 0).await;
    res.unwrap();
    file.close().await.unwrap();
    // Read back through a handle with the page cache.
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // And the other way: written with the cache, read directly.
    let other = pattern(2 * a.offset(), 9);
    std::fs::write(&path, &other).unwrap();
    let file = open_direct(&path).await.unwrap();
    let (res, buf) = file
        .read_exact_at(AlignedBuf::new(other.len(), a.memory()), 0)
        .await;
    res.unwrap();
    assert_eq!(&buf[..], &other[..]);
});

coring_test!(misaligned_transfers_are_refused_before_submission, async {
    let dir = TempDir::new("dio-refuse");
    let path = dir.path("f");
    let Some(file) = open_direct(&path).await else {
        return;
    };
    let a = file.dio_alignment().unwrap();
    let block = a.offset();
    let (res, _) = file
        .write_all_at(filled(a, &pattern(2 * block, 1)), 0)
        .await;
    res.unwrap();

    // Offset.
    let half = (block / 2) as u64;
    let (res, buf) = file.read_at(AlignedBuf::new(block, a.memory()), half).await;
    assert_refused(res, &format!("offset {half} is not"));
    assert!(buf.is_empty(), "nothing was read");
    let (res, _) = file.write_at(filled(a, &pattern(block, 2)), half).await;
    assert_refused(res, &format!("offset {half} is not"));
    let (res, _) = file
        .read_exact_at(AlignedBuf::new(block, a.memory()), half)
        .await;
    assert_refused(res, "offset");
    let (res, _) = file.write_all_at(filled(a, &pattern(block, 2)), half).await;
    assert_refused(res, "offset");

    // Length: a read's capacity, a write's content.
    let (res, _) = file
        .read_at(AlignedBuf::new(block + 1, a.memory()), 0)
        .await;
    assert_refused(res, &format!("buffer length {} is not", block + 1));
    let (res, _) = file.write_at(filled(a, &pattern(100, 3)), 0).await;
    assert_refused(res, "buffer length 100 is not");
    let (res, _) = file.write_all_at(filled(a, &pattern(100, 3)), 0).await;
    assert_refused(res, "buffer length 100 is not");

    // Buffer address: one byte into an aligned buffer (when one byte is misaligned).
    if a.memory() > 1 {
        let base = AlignedBuf::new(2 * block, a.memory());
        let (res, slice) = file.read_at(base.slice(1..1 + block), 0).await;
        assert_refused(res, "buffer address 0x");
        let mut base = slice.into_inner();
        base.set_len(2 * block);
        let (res, _) = file.write_at(base.slice(1..1 + block), 0).await;
        assert_refused(res, "buffer address 0x");
    }

    // Nothing reached the file.
    file.close().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), pattern(2 * block, 1));
});

coring_test!(vectored_direct_transfers, async {
    let dir = TempDir::new("dio-vec");
    let Some(file) = open_direct(&dir.path("f")).await else {
        return;
    };
    let a = file.dio_alignment().unwrap();
    let block = a.offset();
    let data = pattern(3 * block, 5);
    let parts = vec![filled(a, &data[..block]), filled(a, &data[block..])];
    let (res, _) = file.writev_at(parts, 0).await;
    assert_eq!(res.unwrap(), 3 * block);
    let bufs = vec![
        AlignedBuf::new(2 * block, a.memory()),
        AlignedBuf::new(block, a.memory()),
    ];
    let (res, bufs) = file.readv_at(bufs, 0).await;
    assert_eq!(res.unwrap(), 3 * block);
    assert_eq!(&bufs[0][..], &data[..2 * block]);
    assert_eq!(&bufs[1][..], &data[2 * block..]);

    // The culprit is named by its index.
    let bufs = vec![
        AlignedBuf::new(block, a.memory()),
        AlignedBuf::new(block - 1, a.memory()),
    ];
    let (res, _) = file.readv_at(bufs, 0).await;
    assert_refused(res, &format!("buffer 1's length {} is not", block - 1));
    let parts = vec![filled(a, &data[..block])];
    let (res, _) = file.writev_at(parts, 1).await;
    assert_refused(res, "offset 1 is not");
    if a.memory() > 1 {
        let parts = vec![
            filled(a, &data[..block]).slice(..),
            AlignedBuf::zeroed(block + 1, a.memory()).slice(1..),
        ];
        let (res, _) = file.writev_at(parts, 0).await;
        assert_refused(res, "buffer 1's address 0x");
    }
});

coring_test!(fixed_buffers_with_alignment, async {
    let dir = TempDir::new("dio-fixed");
    let Some(file) = open_direct(&dir.path("f")).await else {
        return;
    };
    let a = file.dio_alignment().unwrap();
    let block = a.offset();
    file.register().unwrap();
    // An odd size: every buffer still starts aligned.
    let pool = FixedBufPool::with_alignment(3, 2 * block, a.memory());
    pool.register().unwrap();
    for i in 0..3 {
        let buf = pool.check_out(i).unwrap();
        assert!(a.is_memory_aligned(buf.as_ptr()), "buffer {i}");
    }
    let data = pattern(2 * block, 11);
    let mut buf = pool.try_take().unwrap();
    buf.extend_from_slice(&data);
    let (res, buf) = file.write_fixed_at(buf, block as u64).await;
    assert_eq!(res.unwrap(), 2 * block);
    drop(buf);
    let mut buf = pool.try_take().unwrap();
    buf.clear();
    let (res, buf) = file.read_fixed_at(buf, block as u64).await;
    assert_eq!(res.unwrap(), 2 * block);
    assert_eq!(&buf[..], &data[..]);
    // A pool whose buffers are not a multiple of the block: refused with the length.
    let odd = FixedBufPool::with_alignment(1, block + 8, a.memory());
    let (res, _) = file.read_fixed_at(odd.try_take().unwrap(), 0).await;
    assert_refused(res, &format!("buffer length {} is not", block + 8));
    let (res, _) = file.write_fixed_at(buf, 3).await;
    assert_refused(res, "offset 3 is not");
});

coring_test!(read_exact_at_the_end_of_a_file_of_unaligned_size, async {
    let dir = TempDir::new("dio-eof");
    let path = dir.path("f");
    std::fs::write(&path, b"").unwrap();
    let Some(file) = open_direct(&path).await else {
        return;
    };
    let a = file.dio_alignment().unwrap();
    let data = pattern(a.offset() + 100, 3);
    std::fs::write(&path, &data).unwrap();
    // The read stops short at the end of the file, unaligned: that is the end, not an
    // alignment error.
    let (res, buf) = file
        .read_exact_at(AlignedBuf::new(2 * a.offset(), a.memory()), 0)
        .await;
    let e = res.expect_err("the file is shorter than the buffer");
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
    assert_eq!(&buf[..], &data[..], "what was read is kept");
    // read_at returns the short count.
    let (res, _) = file
        .read_at(AlignedBuf::new(2 * a.offset(), a.memory()), 0)
        .await;
    assert_eq!(res.unwrap(), data.len());
});

coring_test!(files_not_opened_direct_are_not_checked, async {
    let dir = TempDir::new("dio-plain");
    let path = dir.path("f");
    std::fs::write(&path, b"hello, world").unwrap();
    let file = File::open(&path).await.unwrap();
    assert!(!file.is_direct());
    let (res, buf) = file.read_at(Vec::with_capacity(5), 7).await;
    assert_eq!(res.unwrap(), 5);
    assert_eq!(&buf[..], b"world");
});

// A descriptor opened with O_DIRECT elsewhere is known to be direct (Linux and FreeBSD),
// and so is one opened with O_DIRECT among the custom flags.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
coring_test!(o_direct_from_elsewhere_is_recognised, async {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = TempDir::new("dio-adopt");
    let path = dir.path("f");
    std::fs::write(&path, b"").unwrap();
    let Some(probe) = open_direct(&path).await else {
        return;
    };
    drop(probe);
    let std_file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let file = File::from_std(std_file);
    assert!(file.is_direct());
    let (res, _) = file.read_at(Vec::with_capacity(100), 3).await;
    assert_refused(res, "offset 3 is not");
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .await
        .unwrap();
    assert!(file.is_direct());
    let plain = File::from_std(std::fs::File::open(&path).unwrap());
    assert!(!plain.is_direct());
});

// A direct read waits for the device, so it is never tried during submission (where
// `preadv2(RWF_NOWAIT)` would wait for it on the runtime's thread): no read completes
// inline. Linux only: the other kernels have no RWF_NOWAIT, so no read completes inline
// there, and IOCP counts Windows' own synchronous completions as inline.
#[cfg(target_os = "linux")]
coring_test!(
    direct_reads_are_not_completed_during_submission,
    |builder| {
        let rt = builder.build().expect("runtime");
        let dir = TempDir::new("dio-inline");
        let path = dir.path("f");
        common::block_on_bounded(&rt, async {
            let Some(file) = open_direct(&path).await else {
                return;
            };
            let a = file.dio_alignment().unwrap();
            let data = pattern(8 * a.offset(), 1);
            let (res, _) = file.write_all_at(filled(a, &data), 0).await;
            res.unwrap();
            // The blocks are in the page cache now, through the buffered handle.
            assert_eq!(std::fs::read(&path).unwrap(), data);
            let before = rt.metrics().ops_inline;
            let mut buf = AlignedBuf::new(a.offset(), a.memory());
            for i in 0..8 {
                buf.clear();
                let (res, b) = file.read_at(buf, (i * a.offset()) as u64).await;
                assert_eq!(res.unwrap(), a.offset());
                buf = b;
            }
            assert_eq!(
                rt.metrics().ops_inline,
                before,
                "a direct read completed inline"
            );
            // A buffered handle's reads of the same blocks do complete inline.
            let plain = File::open(&path).await.unwrap();
            for _ in 0..4 {
                let (res, _) = plain.read_at(Vec::with_capacity(a.offset()), 0).await;
                res.unwrap();
            }
            assert!(
                rt.metrics().ops_inline > before,
                "cached reads complete inline"
            );
        });
    }
);
