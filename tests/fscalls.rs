//! The file-system calls a storage engine needs: fallocate modes, set_len, sync_range,
//! advise, symlink / hard_link / read_link, read_dir, rename_with, open_beneath. Each runs
//! on every backend, with bad input, and (for each io_uring opcode) once with the opcode
//! hidden, to prove the blocking-pool path.

mod common;

use std::collections::BTreeSet;
use std::future::{poll_fn, Future as _};
use std::io::ErrorKind;
use std::path::Path;
use std::pin::Pin;

use common::TempDir;
use coring::fs::{self, Advice, AllocateMode, File, OpenOptions, RenameFlags, SyncRangeFlags};
use coring::{BackendKind, Runtime};

/// A file open for reading and writing, created.
async fn rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open(p)
        .await
        .unwrap()
}

/// Reads `len` bytes at `pos`.
async fn read(f: &File, pos: u64, len: usize) -> Vec<u8> {
    let (r, buf) = f.read_exact_at(Vec::with_capacity(len), pos).await;
    r.unwrap();
    buf
}

/// Whether a mode the file system (or, on Windows, Wine) lacks was refused; the test then
/// skips the rest of that mode, saying why.
fn lacks(what: &str, e: &std::io::Error) -> bool {
    if e.kind() == ErrorKind::Unsupported {
        eprintln!("skipped {what}: {e}");
        return true;
    }
    false
}

/// How many operations runtime `rt` ran on the blocking pool.
fn offloaded(rt: &Runtime) -> u64 {
    rt.metrics().ops_offloaded
}

/// Runs `body` on a runtime whose io_uring pretends to lack the `hidden` opcodes, then
/// checks that on io_uring exactly `on_pool` operations went to the blocking pool (the
/// others went to the ring).
fn run_counting<F: std::future::Future<Output = ()>>(
    builder: coring::Builder,
    hidden: &[&str],
    on_pool: u64,
    body: impl FnOnce() -> F,
) {
    let rt = builder.emulate_missing_opcodes(hidden).build().unwrap();
    common::block_on_bounded(&rt, body());
    if rt.backend() == BackendKind::IoUring {
        assert_eq!(offloaded(&rt), on_pool, "{hidden:?}: {:?}", rt.metrics());
    }
}

/// Runs `body` on a runtime whose io_uring pretends to lack `opcode` (see
/// [`run_counting`]).
fn without_opcode<F: std::future::Future<Output = ()>>(
    builder: coring::Builder,
    opcode: &str,
    on_pool: u64,
    body: impl FnOnce() -> F,
) {
    run_counting(builder, &[opcode], on_pool, body)
}

// ---------------------------------------------------------------------------------------
// fallocate modes
// ---------------------------------------------------------------------------------------

coring_test!(allocate_modes, |builder| {
    run_counting(builder, &[], 0, || async {
        let dir = TempDir::new("fscalls");
        let p = dir.path("modes");
        let f = rw(&p).await;
        f.write_all_at(vec![0xab; 16384], 0).await.0.unwrap();

        // FreeBSD and Apple platforms have mode 0 only: every other mode is refused with a
        // message before reaching the kernel.
        if cfg!(any(target_os = "freebsd", target_vendor = "apple")) {
            for mode in [
                AllocateMode::KeepSize,
                AllocateMode::PunchHole,
                AllocateMode::ZeroRange,
                AllocateMode::ZeroRangeKeepSize,
            ] {
                let e = f.allocate_with(0, 4096, mode).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
                assert!(e.to_string().contains("AllocateMode::Extend"), "{e}");
            }
            return;
        }

        // Keep-size: space past the end, the size unchanged.
        match f
            .allocate_with(16384, 1 << 20, AllocateMode::KeepSize)
            .await
        {
            Err(e) if lacks("keep-size", &e) => {}
            r => {
                r.unwrap();
                assert_eq!(f.metadata().await.unwrap().len(), 16384);
                #[cfg(unix)]
                assert!(
                    f.metadata().await.unwrap().blocks() * 512 >= 1 << 20,
                    "keep-size reserved nothing"
                );
            }
        }

        // Punch hole: reads as zeros, size unchanged, the rest untouched.
        match f.allocate_with(0, 4096, AllocateMode::PunchHole).await {
            Err(e) if lacks("punch-hole", &e) => {}
            r => {
                r.unwrap();
                assert_eq!(read(&f, 0, 4096).await, vec![0; 4096]);
                assert_eq!(read(&f, 4096, 4096).await, vec![0xab; 4096]);
                assert_eq!(f.metadata().await.unwrap().len(), 16384);
                // A hole past the end changes nothing.
                f.allocate_with(1 << 30, 4096, AllocateMode::PunchHole)
                    .await
                    .unwrap();
                assert_eq!(f.metadata().await.unwrap().len(), 16384);
            }
        }

        // Zero range: zeros inside; past the end it grows the file, unless keep-size.
        match f.allocate_with(8192, 4096, AllocateMode::ZeroRange).await {
            Err(e) if lacks("zero-range", &e) => {}
            r => {
                r.unwrap();
                assert_eq!(read(&f, 8192, 4096).await, vec![0; 4096]);
                assert_eq!(read(&f, 12288, 4096).await, vec![0xab; 4096]);
                f.allocate_with(16384, 4096, AllocateMode::ZeroRange)
                    .await
                    .unwrap();
                assert_eq!(f.metadata().await.unwrap().len(), 20480);
                f.allocate_with(20480, 4096, AllocateMode::ZeroRangeKeepSize)
                    .await
                    .unwrap();
                assert_eq!(f.metadata().await.unwrap().len(), 20480);
                assert_eq!(read(&f, 16384, 4096).await, vec![0; 4096]);
            }
        }

        // Extend is allocate().
        f.allocate_with(0, 32768, AllocateMode::Extend)
            .await
            .unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 32768);

        // Bad ranges, every mode, every backend: InvalidInput, the file unchanged.
        for mode in [
            AllocateMode::Extend,
            AllocateMode::KeepSize,
            AllocateMode::PunchHole,
            AllocateMode::ZeroRange,
            AllocateMode::ZeroRangeKeepSize,
        ] {
            for (off, len) in [(0, 0), (u64::MAX, 1), (0, u64::MAX), (1 << 63, 4096)] {
                let e = f.allocate_with(off, len, mode).await.unwrap_err();
                assert_eq!(
                    e.kind(),
                    ErrorKind::InvalidInput,
                    "{mode:?} {off} {len}: {e}"
                );
            }
        }
        assert_eq!(f.metadata().await.unwrap().len(), 32768);
        f.close().await.unwrap();

        // A file open only for reading: refused, unchanged.
        let r = File::open(&p).await.unwrap();
        for mode in [AllocateMode::PunchHole, AllocateMode::ZeroRange] {
            r.allocate_with(0, 4096, mode).await.unwrap_err();
        }
        assert_eq!(std::fs::read(&p).unwrap().len(), 32768);
    });
});

// ---------------------------------------------------------------------------------------
// set_len
// ---------------------------------------------------------------------------------------

coring_test!(set_len_truncates_and_grows, |builder| {
    run_counting(builder, &[], 0, || async {
        let dir = TempDir::new("fscalls");
        let p = dir.path("len");
        let f = rw(&p).await;
        f.write_all_at(b"0123456789abcdef".to_vec(), 0)
            .await
            .0
            .unwrap();
        f.set_len(10).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 10);
        assert_eq!(std::fs::read(&p).unwrap(), b"0123456789");
        // Growing: the new bytes read as zeros.
        f.set_len(1 << 20).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 1 << 20);
        assert_eq!(read(&f, 8, 8).await, b"89\0\0\0\0\0\0");
        f.set_len(0).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 0);
        // Lengths the kernel cannot take: InvalidInput on every backend, nothing changed.
        f.set_len(5).await.unwrap();
        for len in [u64::MAX, i64::MAX as u64 + 1] {
            let e = f.set_len(len).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{len}: {e}");
        }
        assert_eq!(f.metadata().await.unwrap().len(), 5);
        f.close().await.unwrap();
        // A file open only for reading: refused, unchanged.
        let r = File::open(&p).await.unwrap();
        let e = r.set_len(0).await.unwrap_err();
        #[cfg(unix)]
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        #[cfg(windows)]
        let _ = e;
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 5);
        // A directory where a file is expected.
        let d = File::open(&dir.0).await.unwrap();
        d.set_len(0).await.unwrap_err();
    });
});

// ---------------------------------------------------------------------------------------
// sync_range
// ---------------------------------------------------------------------------------------

coring_test!(sync_range_writes_back, |builder| {
    let rt = builder.build().unwrap();
    let dir = TempDir::new("fscalls");
    let p = dir.path("sync");
    common::block_on_bounded(&rt, async {
        let f = rw(&p).await;
        f.write_all_at(vec![1; 1 << 16], 0).await.0.unwrap();
        f.sync_range(0, 4096, SyncRangeFlags::WRITE).await.unwrap();
        f.sync_range(0, 0, SyncRangeFlags::WRITE_AND_WAIT)
            .await
            .unwrap();
        f.sync_range(
            4096,
            4096,
            SyncRangeFlags::WAIT_BEFORE | SyncRangeFlags::WAIT_AFTER,
        )
        .await
        .unwrap();
        f.sync_range(0, 0, SyncRangeFlags::NONE).await.unwrap();
        // Ranges the kernel cannot take: the offset, or the end, above i64::MAX.
        for (off, len) in [
            (u64::MAX, 0),
            (1 << 63, 1),
            (i64::MAX as u64, 1),
            (1, i64::MAX as u64),
        ] {
            let e = f
                .sync_range(off, len, SyncRangeFlags::WRITE)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{off} {len}: {e}");
        }
    });
    // A range longer than the SQE's 32-bit length runs on the pool (io_uring), as every
    // call of the readiness backend does.
    let before = offloaded(&rt);
    common::block_on_bounded(&rt, async {
        // (Writable: Windows flushes only through a handle that may write.)
        let f = rw(&p).await;
        f.sync_range(0, 5 << 30, SyncRangeFlags::WRITE_AND_WAIT)
            .await
            .unwrap();
    });
    let pool = offloaded(&rt) - before;
    match rt.backend() {
        BackendKind::IoUring => assert_eq!(pool, 1, "{:?}", rt.metrics()),
        _ => assert_eq!(pool, 2, "{:?}", rt.metrics()),
    }
});

// ---------------------------------------------------------------------------------------
// advise
// ---------------------------------------------------------------------------------------

coring_test!(advise_hints, |builder| {
    let rt = builder.build().unwrap();
    let dir = TempDir::new("fscalls");
    let p = dir.path("advise");
    std::fs::write(&p, vec![3; 1 << 16]).unwrap();
    common::block_on_bounded(&rt, async {
        let f = File::open(&p).await.unwrap();
        for advice in [
            Advice::Normal,
            Advice::Sequential,
            Advice::Random,
            Advice::WillNeed,
            Advice::DontNeed,
            Advice::NoReuse,
        ] {
            f.advise(0, 0, advice).await.unwrap();
            f.advise(4096, 8192, advice).await.unwrap();
        }
        // The data is what it was.
        assert_eq!(read(&f, 0, 16).await, vec![3; 16]);
        for (off, len) in [(u64::MAX, 0), (0, u64::MAX), (1 << 63, 1)] {
            let e = f.advise(off, len, Advice::WillNeed).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{off} {len}: {e}");
        }
    });
    let before = offloaded(&rt);
    common::block_on_bounded(&rt, async {
        let f = File::open(&p).await.unwrap();
        // Longer than the SQE's 32-bit length: the pool on io_uring.
        f.advise(0, 5 << 30, Advice::DontNeed).await.unwrap();
    });
    let pool = offloaded(&rt) - before;
    match rt.backend() {
        BackendKind::IoUring => assert_eq!(pool, 1, "{:?}", rt.metrics()),
        _ => assert_eq!(pool, 2, "{:?}", rt.metrics()),
    }
});

// posix_fadvise on a pipe: ESPIPE (Unix; Windows' advice does nothing).
#[cfg(unix)]
coring_test!(advise_on_a_pipe_is_espipe, async {
    let (r, _w) = std::io::pipe().unwrap();
    let f = File::from(std::os::fd::OwnedFd::from(r));
    let e = f.advise(0, 0, Advice::Sequential).await.unwrap_err();
    if cfg!(target_vendor = "apple") {
        return;
    }
    assert_eq!(e.raw_os_error(), Some(libc::ESPIPE), "{e}");
});

// ---------------------------------------------------------------------------------------
// symlink, read_link, hard_link
// ---------------------------------------------------------------------------------------

/// Creates a symlink, or says why the test cannot (Windows without the privilege; Wine 8,
/// whose `CreateSymbolicLinkW` is a stub that succeeds and creates nothing).
async fn try_symlink(target: &Path, link: &Path) -> bool {
    match fs::symlink(target, link).await {
        Ok(()) if cfg!(windows) && std::fs::symlink_metadata(link).is_err() => {
            eprintln!("skipped: CreateSymbolicLinkW succeeded and created nothing (Wine)");
            false
        }
        Ok(()) => true,
        #[cfg(windows)]
        Err(e) if e.kind() == ErrorKind::PermissionDenied || e.kind() == ErrorKind::Unsupported => {
            eprintln!("skipped: this Windows cannot create symbolic links here ({e})");
            false
        }
        Err(e) => panic!("symlink {link:?} -> {target:?}: {e}"),
    }
}

coring_test!(symlink_and_read_link, async {
    let dir = TempDir::new("fscalls");
    std::fs::write(dir.path("target"), b"pointed at").unwrap();
    let link = dir.path("link");
    if !try_symlink(Path::new("target"), &link).await {
        return;
    }
    assert_eq!(fs::read_link(&link).await.unwrap(), Path::new("target"));
    assert!(fs::symlink_metadata(&link).await.unwrap().is_symlink());
    assert!(fs::metadata(&link).await.unwrap().is_file());
    assert_eq!(std::fs::read(&link).unwrap(), b"pointed at");
    // A dangling link is fine to create and to read.
    let dangling = dir.path("dangling");
    fs::symlink("nowhere/at/all", &dangling).await.unwrap();
    assert_eq!(
        fs::read_link(&dangling).await.unwrap(),
        Path::new("nowhere/at/all")
    );
    // Content longer than read_link's first buffer (256 bytes): read whole.
    #[cfg(unix)]
    {
        let long: String = (0..40).map(|i| format!("component-{i:03}/")).collect();
        let long_link = dir.path("long");
        fs::symlink(&long, &long_link).await.unwrap();
        assert_eq!(fs::read_link(&long_link).await.unwrap(), Path::new(&long));
    }
    // Bad input: an existing link path, a missing directory, a file that is not a link,
    // a missing path, a NUL byte.
    let e = fs::symlink("target", &link).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let e = fs::symlink("target", dir.path("no/such/dir/link"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = fs::read_link(dir.path("target")).await.unwrap_err();
    #[cfg(unix)]
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    #[cfg(windows)]
    let _ = e;
    let e = fs::read_link(dir.path("missing")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = fs::read_link("a\0b").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
});

coring_test!(hard_link_adds_a_name, |builder| {
    run_counting(builder, &[], 0, || async {
        let dir = TempDir::new("fscalls");
        let src = dir.path("src");
        std::fs::write(&src, b"one file").unwrap();
        let dst = dir.path("dst");
        fs::hard_link(&src, &dst).await.unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"one file");
        let m = fs::metadata(&src).await.unwrap();
        assert_eq!(m.nlink(), 2);
        #[cfg(unix)]
        assert_eq!(m.ino(), fs::metadata(&dst).await.unwrap().ino());
        // Writing through one name shows through the other.
        std::fs::write(&dst, b"changed").unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), b"changed");
        // Bad input: the new name exists, the source is missing, the source is a directory.
        let e = fs::hard_link(&src, &dst).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        let e = fs::hard_link(dir.path("missing"), dir.path("x"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        std::fs::create_dir(dir.path("sub")).unwrap();
        fs::hard_link(dir.path("sub"), dir.path("sub2"))
            .await
            .unwrap_err();
        assert!(!dir.path("sub2").exists());
    });
});

// ---------------------------------------------------------------------------------------
// read_dir
// ---------------------------------------------------------------------------------------

/// Polls a stream to its next item.
async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

coring_test!(read_dir_lists_every_entry, async {
    let dir = TempDir::new("fscalls");
    // More entries than two batches.
    let mut want = BTreeSet::new();
    for i in 0..600 {
        let name = format!("f{i:04}");
        std::fs::write(dir.path(&name), b"").unwrap();
        want.insert(name);
    }
    std::fs::create_dir(dir.path("sub")).unwrap();
    want.insert("sub".to_string());

    // One by one.
    let mut rd = fs::read_dir(&dir.0).await.unwrap();
    let mut got = BTreeSet::new();
    while let Some(e) = rd.next_entry().await.unwrap() {
        let name = e.file_name().to_str().unwrap().to_string();
        assert_eq!(e.path(), dir.path(&name));
        let ft = e.file_type().unwrap();
        assert_eq!(ft.is_dir(), name == "sub", "{name}");
        assert_eq!(ft.is_file(), name != "sub", "{name}");
        assert!(got.insert(name));
    }
    assert_eq!(got, want);
    // The end stays the end.
    assert!(rd.next_entry().await.unwrap().is_none());
    assert!(rd.next_batch().await.unwrap().is_empty());

    // In batches of at most 256.
    let mut rd = fs::read_dir(&dir.0).await.unwrap();
    let mut total = 0;
    let mut batches = 0;
    loop {
        let batch = rd.next_batch().await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 256, "{}", batch.len());
        total += batch.len();
        batches += 1;
    }
    assert_eq!(total, 601);
    assert!(batches >= 3, "{batches}");

    // As a Stream.
    let mut rd = fs::read_dir(&dir.0).await.unwrap();
    let mut n = 0;
    while let Some(e) = next(&mut rd).await {
        e.unwrap();
        n += 1;
    }
    assert_eq!(n, 601);

    // An empty directory; metadata of an entry.
    let empty = dir.path("sub");
    let mut rd = fs::read_dir(&empty).await.unwrap();
    assert!(rd.next_entry().await.unwrap().is_none());
    let mut rd = fs::read_dir(&dir.0).await.unwrap();
    let e = rd.next_entry().await.unwrap().unwrap();
    let m = e.metadata().await.unwrap();
    assert_eq!(m.is_dir(), e.file_type().unwrap().is_dir());
});

coring_test!(read_dir_bad_input, async {
    let dir = TempDir::new("fscalls");
    let e = fs::read_dir(dir.path("missing")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let file = dir.path("file");
    std::fs::write(&file, b"").unwrap();
    let e = fs::read_dir(&file).await.unwrap_err();
    #[cfg(unix)]
    assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR), "{e}");
    #[cfg(windows)]
    let _ = e;
    let e = fs::read_dir("a\0b").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
});

// A batch whose future is dropped while it is on the pool is not lost: the next call
// collects it. Dropping the ReadDir with a batch in flight leaks nothing.
coring_test!(read_dir_dropped_batch_loses_nothing, async {
    let dir = TempDir::new("fscalls");
    for i in 0..300 {
        std::fs::write(dir.path(&format!("e{i}")), b"").unwrap();
    }
    let fds = common::fd_count();
    let mut rd = fs::read_dir(&dir.0).await.unwrap();
    let mut seen = BTreeSet::new();
    // Take the first batch, then start the second and drop the future at once.
    for e in rd.next_batch().await.unwrap() {
        seen.insert(e.file_name().to_owned());
    }
    {
        let mut fut = std::pin::pin!(rd.next_batch());
        let first = poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(batch) = first {
            for e in batch.unwrap() {
                seen.insert(e.file_name().to_owned());
            }
        }
    }
    while let Some(e) = rd.next_entry().await.unwrap() {
        assert!(seen.insert(e.file_name().to_owned()), "{e:?} twice");
    }
    assert_eq!(seen.len(), 300);
    drop(rd);
    // A ReadDir dropped with its next batch in flight.
    let mut rd = fs::read_dir(&dir.0).await.unwrap();
    rd.next_batch().await.unwrap();
    {
        let mut fut = std::pin::pin!(rd.next_batch());
        let _ = poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
    }
    drop(rd);
    common::eventually("the directory streams are closed", || {
        common::fd_count() <= fds
    })
    .await;
});

// ---------------------------------------------------------------------------------------
// rename_with
// ---------------------------------------------------------------------------------------

coring_test!(rename_with_flags, |builder| {
    run_counting(builder, &[], 0, || async {
        let dir = TempDir::new("fscalls");
        let (a, b) = (dir.path("a"), dir.path("b"));
        std::fs::write(&a, b"A").unwrap();
        std::fs::write(&b, b"B").unwrap();
        let no_replace = RenameFlags {
            no_replace: true,
            ..RenameFlags::default()
        };
        let exchange = RenameFlags {
            exchange: true,
            ..RenameFlags::default()
        };
        if cfg!(target_os = "freebsd") {
            for flags in [no_replace, exchange] {
                let e = fs::rename_with(&a, &b, flags).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            }
            return;
        }
        // no_replace: an existing target stays, both files intact.
        let e = fs::rename_with(&a, &b, no_replace).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read(&a).unwrap(), b"A");
        assert_eq!(std::fs::read(&b).unwrap(), b"B");
        // ... and a missing one is created.
        let c = dir.path("c");
        fs::rename_with(&a, &c, no_replace).await.unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).unwrap(), b"A");
        // exchange: swapped (Windows has no exchange: refused with a message, nothing moved).
        match fs::rename_with(&b, &c, exchange).await {
            #[cfg(windows)]
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
                assert!(e.to_string().contains("exchange"), "{e}");
                assert_eq!(std::fs::read(&b).unwrap(), b"B");
            }
            r => {
                r.unwrap();
                assert_eq!(std::fs::read(&b).unwrap(), b"A");
                assert_eq!(std::fs::read(&c).unwrap(), b"B");
                // Exchanging with a missing path.
                let e = fs::rename_with(&b, dir.path("missing"), exchange)
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            }
        }
        // Both flags: refused before the kernel.
        let both = RenameFlags {
            no_replace: true,
            exchange: true,
        };
        let e = fs::rename_with(&b, &c, both).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        // Default flags: a plain rename, which replaces.
        fs::rename_with(&b, &c, RenameFlags::default())
            .await
            .unwrap();
        assert!(!b.exists());
        // A missing source.
        let e = fs::rename_with(dir.path("missing"), dir.path("x"), no_replace)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    });
});

// ---------------------------------------------------------------------------------------
// open_beneath
// ---------------------------------------------------------------------------------------

/// Whether `open_beneath` runs on `openat2` here (Linux; the kernels tested have it), not
/// on the component walk.
const OPENAT2: bool = cfg!(target_os = "linux");

/// A tree: `root/a/b/f` ("inside"), `root/top` and, beside the root, `outside`.
struct Tree {
    _tmp: TempDir,
    root: std::path::PathBuf,
}

fn tree() -> Tree {
    let tmp = TempDir::new("fscalls-beneath");
    let root = tmp.path("root");
    std::fs::create_dir_all(root.join("a").join("b")).unwrap();
    std::fs::write(root.join("a").join("b").join("f"), b"inside").unwrap();
    std::fs::write(root.join("top"), b"top").unwrap();
    std::fs::write(tmp.path("outside"), b"outside").unwrap();
    Tree { _tmp: tmp, root }
}

async fn read_all(f: &File) -> Vec<u8> {
    let (r, buf) = f.read_at(Vec::with_capacity(64), 0).await;
    r.unwrap();
    buf
}

coring_test!(open_beneath_confines_paths, |builder| {
    run_counting(builder, &[], 0, || async {
        let t = tree();
        let root = File::open(&t.root).await.unwrap();
        let ro = OpenOptions::new().read(true).clone();

        let f = ro.open_beneath(&root, "a/b/f").await.unwrap();
        assert_eq!(read_all(&f).await, b"inside");
        let f = ro.open_beneath(&root, "./top").await.unwrap();
        assert_eq!(read_all(&f).await, b"top");
        // "." is the directory itself.
        let d = ro.open_beneath(&root, ".").await.unwrap();
        assert!(d.metadata().await.unwrap().is_dir());
        // Relative to a subdirectory.
        let a = ro.open_beneath(&root, "a").await.unwrap();
        let f = ro.open_beneath(&a, "b/f").await.unwrap();
        assert_eq!(read_all(&f).await, b"inside");

        // Escapes: `..` out of the directory, absolute paths.
        for p in ["../outside", "a/../../outside", ".."] {
            let e = ro.open_beneath(&root, p).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{p}: {e}");
        }
        let abs = t.root.join("top");
        let e = ro.open_beneath(&root, &abs).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = ro.open_beneath(&a, "../top").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

        // `..` that stays beneath: openat2 follows it (Linux); the walk refuses every `..`.
        let r = ro.open_beneath(&root, "a/../top").await;
        if OPENAT2 {
            assert_eq!(read_all(&r.unwrap()).await, b"top");
        } else {
            assert_eq!(r.unwrap_err().kind(), ErrorKind::PermissionDenied);
        }

        // Missing paths, a file where a directory is expected, an empty path, a NUL byte.
        let e = ro.open_beneath(&root, "a/missing").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        ro.open_beneath(&root, "top/x").await.unwrap_err();
        let e = ro.open_beneath(&root, "").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        let e = ro.open_beneath(&root, "a\0b").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        // A "directory" that is a file.
        let top = ro.open_beneath(&root, "top").await.unwrap();
        ro.open_beneath(&top, "x").await.unwrap_err();

        // Creating beneath, with the options as given.
        let w = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open_beneath(&root, "a/new")
            .await
            .unwrap();
        w.write_all_at(b"new".to_vec(), 0).await.0.unwrap();
        w.close().await.unwrap();
        assert_eq!(std::fs::read(t.root.join("a").join("new")).unwrap(), b"new");
        let e = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open_beneath(&root, "a/new")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        // Contradictory options are refused as by open().
        let e = OpenOptions::new()
            .read(true)
            .create(true)
            .open_beneath(&root, "a/x")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        // Nothing was created outside.
        assert!(!t.root.parent().unwrap().join("x").exists());
    });
});

// Symbolic links: followed while they stay beneath (openat2), refused when they leave.
#[cfg(unix)]
coring_test!(open_beneath_symlinks, async {
    let t = tree();
    let r = |p: &str| t.root.join(p);
    std::os::unix::fs::symlink("a/b/f", r("in")).unwrap();
    std::os::unix::fs::symlink("../outside", r("out")).unwrap();
    std::os::unix::fs::symlink(t.root.parent().unwrap().join("outside"), r("abs")).unwrap();
    std::os::unix::fs::symlink("/proc/self/root", r("magic")).unwrap();
    std::os::unix::fs::symlink("..", r("a").join("up")).unwrap();
    let root = File::open(&t.root).await.unwrap();
    let ro = OpenOptions::new().read(true).clone();
    let res = ro.open_beneath(&root, "in").await;
    if OPENAT2 {
        assert_eq!(read_all(&res.unwrap()).await, b"inside");
    } else {
        // The walk refuses every link.
        res.unwrap_err();
    }
    for p in ["out", "abs", "magic/etc/passwd", "a/up/../outside"] {
        let e = ro.open_beneath(&root, p).await.unwrap_err();
        assert!(
            e.kind() == ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::ELOOP),
            "{p}: {e}"
        );
    }
    // Creating through a link that leaves: refused, nothing created outside.
    std::os::unix::fs::symlink("../created-outside", r("mk")).unwrap();
    OpenOptions::new()
        .write(true)
        .create(true)
        .open_beneath(&root, "mk")
        .await
        .unwrap_err();
    assert!(!t.root.parent().unwrap().join("created-outside").exists());
});

// ---------------------------------------------------------------------------------------
// Each io_uring opcode hidden: the blocking pool runs the same description
// ---------------------------------------------------------------------------------------

coring_test!(fallocate_modes_without_the_opcode, |builder| {
    let dir = TempDir::new("fscalls");
    let p = dir.path("pool");
    without_opcode(builder, "FALLOCATE", 2, || async {
        let f = rw(&p).await;
        f.write_all_at(vec![9; 8192], 0).await.0.unwrap();
        match f.allocate_with(0, 4096, AllocateMode::PunchHole).await {
            Err(e) if lacks("punch-hole", &e) => {}
            r => r.unwrap(),
        }
        match f.allocate_with(8192, 4096, AllocateMode::KeepSize).await {
            Err(e) if lacks("keep-size", &e) => {}
            r => r.unwrap(),
        }
        assert_eq!(f.metadata().await.unwrap().len(), 8192);
    });
});

coring_test!(set_len_without_the_opcode, |builder| {
    let dir = TempDir::new("fscalls");
    let p = dir.path("pool");
    without_opcode(builder, "FTRUNCATE", 2, || async {
        let f = rw(&p).await;
        f.set_len(12345).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 12345);
        let e = f.set_len(u64::MAX).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        f.set_len(7).await.unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 7);
    });
});

coring_test!(sync_range_without_the_opcode, |builder| {
    let dir = TempDir::new("fscalls");
    let p = dir.path("pool");
    without_opcode(builder, "SYNC_FILE_RANGE", 1, || async {
        let f = rw(&p).await;
        f.write_all_at(vec![1; 4096], 0).await.0.unwrap();
        f.sync_range(0, 4096, SyncRangeFlags::WRITE_AND_WAIT)
            .await
            .unwrap();
    });
});

coring_test!(advise_without_the_opcode, |builder| {
    let dir = TempDir::new("fscalls");
    let p = dir.path("pool");
    std::fs::write(&p, vec![1; 4096]).unwrap();
    without_opcode(builder, "FADVISE", 2, || async {
        let f = File::open(&p).await.unwrap();
        f.advise(0, 0, Advice::Sequential).await.unwrap();
        f.advise(0, 4096, Advice::WillNeed).await.unwrap();
    });
});

coring_test!(symlink_without_the_opcode, |builder| {
    let dir = TempDir::new("fscalls");
    let link = dir.path("link");
    // The symlink, and the read_link (io_uring has no readlink: always the pool).
    without_opcode(builder, "SYMLINKAT", 2, || async {
        if !try_symlink(Path::new("somewhere"), &link).await {
            return;
        }
        assert_eq!(fs::read_link(&link).await.unwrap(), Path::new("somewhere"));
    });
});

coring_test!(hard_link_without_the_opcode, |builder| {
    let dir = TempDir::new("fscalls");
    let src = dir.path("src");
    std::fs::write(&src, b"x").unwrap();
    let dst = dir.path("dst");
    without_opcode(builder, "LINKAT", 1, || async {
        fs::hard_link(&src, &dst).await.unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"x");
    });
});

coring_test!(rename_with_without_the_opcode, |builder| {
    let dir = TempDir::new("fscalls");
    let (a, b) = (dir.path("a"), dir.path("b"));
    std::fs::write(&a, b"A").unwrap();
    std::fs::write(&b, b"B").unwrap();
    without_opcode(builder, "RENAMEAT", 1, || async {
        let no_replace = RenameFlags {
            no_replace: true,
            ..RenameFlags::default()
        };
        match fs::rename_with(&a, &b, no_replace).await {
            Err(e) if cfg!(target_os = "freebsd") => {
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}")
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}"),
            Ok(()) => panic!("no_replace replaced"),
        }
    });
    assert_eq!(std::fs::read(&b).unwrap(), b"B");
});

coring_test!(open_beneath_without_the_opcode, |builder| {
    let t = tree();
    // The root's own open goes to the ring (OPENAT); the open beneath it and the escape
    // attempt to the pool (OPENAT2 hidden).
    without_opcode(builder, "OPENAT2", 2, || async {
        let root = File::open(&t.root).await.unwrap();
        let ro = OpenOptions::new().read(true).clone();
        let f = ro.open_beneath(&root, "a/b/f").await.unwrap();
        assert_eq!(read_all(&f).await, b"inside");
        let e = ro.open_beneath(&root, "../outside").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    });
});

// ---------------------------------------------------------------------------------------
// openat2 blocked by seccomp (EPERM or ENOSYS): open_beneath walks the path instead
// ---------------------------------------------------------------------------------------

// Linux only (seccomp); the filter matches the x86_64 and aarch64 audit arches. A filter
// cannot be removed, so the scenario runs in a child process (see `common::child`).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod openat2_blocked {
    use super::*;

    const CHILD_ENV: &str = "CORING_FSCALLS_CHILD";
    const CHILD_TEST: &str = "openat2_blocked::child_entry_point";
    const OUT_OK: &str = "coring-fscalls-child: ok";

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

    #[test]
    fn open_beneath_walks_when_seccomp_blocks_openat2() {
        for mode in ["eperm", "enosys"] {
            common::child::run_child(CHILD_ENV, mode, CHILD_TEST, OUT_OK);
        }
    }

    /// Runs in the child only (`CORING_FSCALLS_CHILD` set by the test above).
    #[test]
    fn child_entry_point() {
        let Ok(mode) = std::env::var(CHILD_ENV) else {
            return;
        };
        let errno = match mode.as_str() {
            "eperm" => libc::EPERM,
            "enosys" => libc::ENOSYS,
            other => panic!("{CHILD_ENV}={other:?}"),
        };
        common::with_watchdog("fscalls child", || child_main(errno));
        println!("{OUT_OK}");
    }

    fn child_main(errno: i32) {
        block_openat2(errno);
        // The filter works: openat2 itself fails with its errno.
        // SAFETY: a size of 0 is refused before anything is read (or the filter answers).
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                c".".as_ptr(),
                std::ptr::null::<u8>(),
                0usize,
            )
        };
        assert_eq!(r, -1);
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(errno));
        let t = tree();
        for kind in [BackendKind::Fallback, BackendKind::IoUring] {
            let rt = coring::Builder::new().backend(kind).build().unwrap();
            common::block_on_bounded(&rt, async {
                let root = File::open(&t.root).await.unwrap();
                let ro = OpenOptions::new().read(true).clone();
                let f = ro.open_beneath(&root, "a/b/f").await.unwrap();
                assert_eq!(read_all(&f).await, b"inside");
                let e = ro.open_beneath(&root, "../outside").await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
                // The pool's openat2 is blocked: the walk refuses every `..`. io_uring's
                // OPENAT2 is not a system call the filter sees: `..` inside is followed.
                let r = ro.open_beneath(&root, "a/../top").await;
                if kind == BackendKind::IoUring {
                    assert_eq!(read_all(&r.unwrap()).await, b"top");
                } else {
                    let e = r.unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
                    assert!(e.to_string().contains("`..`"), "{e}");
                }
            });
        }
    }

    /// Makes `openat2` fail with `errno` for this thread and the threads it creates.
    fn block_openat2(errno: i32) {
        let st = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        };
        let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret = libc::BPF_RET | libc::BPF_K;
        let arch = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
        let nr = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
        // 0 ld arch; 1 another arch: allow (5); 2 ld nr; 3 openat2: deny (4), else allow.
        let mut prog = [
            st(ld, arch),
            jeq(AUDIT_ARCH, 0, 3),
            st(ld, nr),
            jeq(libc::SYS_openat2 as u32, 0, 1),
            st(
                ret,
                libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA),
            ),
            st(ret, libc::SECCOMP_RET_ALLOW),
        ];
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: fprog points to prog, a valid program of fprog.len instructions, alive
        // for the call (the kernel copies it).
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const libc::sock_fprog,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }
}
