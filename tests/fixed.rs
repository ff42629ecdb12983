//! Registered (fixed) files and buffers: `File::register`, `FixedBufPool`,
//! `read_fixed_at` / `write_fixed_at`, on every backend (registration is a no-op on the
//! fallback, and every test holds there too).
//!
//! Cached regular-file reads complete during submission (`preadv2(RWF_NOWAIT)`, through the
//! raw descriptor and plain memory) on both backends, so tests that must prove the ring used
//! a slot or a buffer index read from pipes, which that fast path never serves, or write.

mod common;

use std::io::{Read, Write};
#[cfg(unix)]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
#[cfg(windows)]
use std::os::windows::io::OwnedHandle as OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use common::{eventually, TempDir};
use coring::buf::FixedBufPool;
use coring::fs::{File, OpenOptions};
use coring::time::{sleep, timeout};
use coring::BackendKind;

/// A pipe: (read end, write end).
#[cfg(unix)]
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A pipe: (read end, write end). On Windows `common::win_pipe`'s named pipe, since
/// anonymous pipes cannot do overlapped IO, which the IOCP backend needs.
#[cfg(windows)]
fn pipe() -> (OwnedFd, OwnedFd) {
    let (rd, wr) = common::win_pipe();
    (rd.into(), wr.into())
}

/// A write to a file opened only for reading: EBADF, or on Windows `ERROR_ACCESS_DENIED`.
#[cfg(unix)]
const NOT_WRITABLE: i32 = libc::EBADF;
#[cfg(windows)]
const NOT_WRITABLE: i32 = 5;

/// One more read of a pipe's read end that must not wait: non-blocking on Unix (made so by
/// the caller), on Windows (no non-blocking pipe reads) a thread's read bounded by 5 s.
/// WouldBlock if data could still come.
fn read_once_more(mut rd: std::fs::File) -> std::io::Result<usize> {
    #[cfg(unix)]
    return rd.read(&mut [0u8; 4]);
    #[cfg(windows)]
    {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(rd.read(&mut [0u8; 4]));
        });
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| Err(std::io::ErrorKind::WouldBlock.into()))
    }
}

#[cfg(unix)]
fn set_nonblocking(fd: &impl AsRawFd) {
    // SAFETY: fcntl on an open descriptor; no pointers.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        assert!(flags >= 0);
        assert_eq!(
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK),
            0
        );
    }
}

/// Creates (or truncates) `p` for reading and writing.
async fn read_write(p: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .await
        .unwrap()
}

fn is_uring(rt: &coring::Runtime) -> bool {
    rt.backend() == BackendKind::IoUring
}

// Every file operation works on a registered file, with the same bytes as without.
coring_test!(registered_file_round_trip, |builder| {
    let rt = builder.build().unwrap();
    let uring = is_uring(&rt);
    let dir = TempDir::new("fixed");
    let p = dir.path("rt");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    common::block_on_bounded(&rt, async {
        let f = read_write(&p).await;
        assert!(!f.is_registered());
        f.register().unwrap();
        f.register().unwrap(); // again on the same runtime: nothing changes
        assert_eq!(
            f.is_registered(),
            uring,
            "registered only where a ring exists"
        );
        let (r, _) = f.write_all_at(data.clone(), 0).await;
        r.unwrap();
        let (r, _) = f
            .writev_at(vec![b"ab".to_vec(), b"cd".to_vec()], 10_000)
            .await;
        assert_eq!(r.unwrap(), 4);
        f.sync_all().await.unwrap();
        f.sync_data().await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 10_004);
        let (r, buf) = f.read_exact_at(Vec::with_capacity(10_004), 0).await;
        r.unwrap();
        assert_eq!(&buf[..10_000], &data[..]);
        assert_eq!(&buf[10_000..], b"abcd");
        let (r, bufs) = f
            .readv_at(vec![Vec::with_capacity(3), Vec::with_capacity(5)], 9_998)
            .await;
        assert_eq!(r.unwrap(), 6);
        assert_eq!(bufs[0], [data[9_998], data[9_999], b'a']);
        assert_eq!(bufs[1], b"bcd");
        f.close().await.unwrap();
    });
    let on_disk = std::fs::read(&p).unwrap();
    assert_eq!(&on_disk[..10_000], &data[..]);
    assert_eq!(&on_disk[10_000..], b"abcd");
});

// On io_uring, operations on a registered file name its slot, not its descriptor number:
// with the number pointed at another pipe (dup2), a read still reads the registered pipe.
// The fallback and other runtimes use the descriptor number.
// Unix only, by nature: dup2 onto a descriptor number.
#[cfg(unix)]
coring_test!(operations_use_the_slot_on_its_own_ring_only, |builder| {
    let rt = builder.build().unwrap();
    let uring = is_uring(&rt);
    let (a_rd, a_wr) = pipe();
    let (b_rd, b_wr) = pipe();
    let (mut a_wr, mut b_wr) = (std::fs::File::from(a_wr), std::fs::File::from(b_wr));
    let file = File::from(a_rd);
    rt.block_on(async { file.register().unwrap() });
    // The slot keeps pipe A; the number now means pipe B.
    // SAFETY: both descriptors are open; dup2 replaces the file's number, which the File
    // still owns (and will close).
    assert!(unsafe { libc::dup2(b_rd.as_raw_fd(), file.as_raw_fd()) } >= 0);
    if uring {
        a_wr.write_all(b"from A").unwrap();
    }
    // (On the fallback nothing holds pipe A's read end any more: writing would be EPIPE.)
    b_wr.write_all(b"from B").unwrap();
    common::block_on_bounded(&rt, async {
        let (r, buf) = file.read_at(Vec::with_capacity(16), 0).await;
        r.unwrap();
        let want: &[u8] = if uring { b"from A" } else { b"from B" };
        assert_eq!(buf, want);
    });
    // A second runtime on this thread never uses the first ring's slot.
    let other = common::runtime(rt.backend());
    if !uring {
        // The fallback read pipe B already.
        b_wr.write_all(b"from B").unwrap();
    }
    common::block_on_bounded(&other, async {
        assert!(!file.is_registered());
        let (r, buf) = file.read_at(Vec::with_capacity(16), 0).await;
        r.unwrap();
        assert_eq!(buf, b"from B");
        // One registration per file: the first ring still exists.
        let e = file.register();
        if uring {
            assert_eq!(e.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        } else {
            e.unwrap();
        }
    });
    rt.block_on(async { assert_eq!(file.is_registered(), uring) });
    drop(file);
    drop(b_rd);
});

// The ring's table holds its own reference to a registered open file; closing the file
// must clear the slot first, or the descriptor would close while the pipe's write end
// stayed open and the reader would never see end-of-file. All three ways to let go of a
// file: drop, close().await, into_std().
coring_test!(letting_go_of_a_registered_file_releases_it, async {
    for how in ["drop", "close", "into_std"] {
        let (rd, wr) = pipe();
        let mut rd = std::fs::File::from(rd);
        #[cfg(unix)]
        set_nonblocking(&rd);
        let wr = File::from(wr);
        wr.register().unwrap();
        let (r, _) = wr.write_at(b"x".to_vec(), 0).await;
        assert_eq!(r.unwrap(), 1);
        match how {
            "drop" => drop(wr),
            "close" => wr.close().await.unwrap(),
            _ => drop(wr.into_std().unwrap()),
        }
        let mut buf = [0u8; 4];
        assert_eq!(rd.read(&mut buf).unwrap(), 1);
        match read_once_more(rd) {
            Ok(0) => {}
            other => panic!("{how}: the write end is still open (slot not cleared): {other:?}"),
        }
    }
});

// Slots come back when files close and go to the next file: far more files than the table
// has slots (at most 4096) are registered one after another, and each write through a
// reused slot lands in its own file.
coring_test!(closed_files_give_their_slot_to_the_next, async {
    let dir = TempDir::new("fixed");
    for i in 0..5000u32 {
        let p = dir.path(&format!("f{}", i % 2));
        let f = File::create(&p).await.unwrap();
        f.register().unwrap();
        let text = format!("file {i}");
        let (r, _) = f.write_all_at(text.clone().into_bytes(), 0).await;
        r.unwrap();
        if i % 3 == 0 {
            drop(f);
        } else {
            f.close().await.unwrap();
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }
});

// unregister() releases the slot at once, except while an operation may still name it.
coring_test!(unregister_waits_for_operations, |builder| {
    let rt = builder.build().unwrap();
    let uring = is_uring(&rt);
    let (rd, wr) = pipe();
    let mut wr = std::fs::File::from(wr);
    let file = File::from(rd);
    common::block_on_bounded(&rt, async {
        file.register().unwrap();
        file.unregister().unwrap();
        assert!(!file.is_registered());
        file.register().unwrap();
        assert_eq!(file.is_registered(), uring);
        let file = Rc::new(file);
        let reader = {
            let file = file.clone();
            coring::spawn(async move { file.read_at(Vec::with_capacity(8), 0).await })
        };
        sleep(Duration::from_millis(10)).await;
        let busy = file.unregister().unwrap_err();
        assert_eq!(busy.kind(), std::io::ErrorKind::ResourceBusy, "{busy}");
        wr.write_all(b"done").unwrap();
        let (r, buf) = reader.await.unwrap();
        assert_eq!(r.unwrap(), 4);
        assert_eq!(buf, b"done");
        file.unregister().unwrap();
        assert!(!file.is_registered());
    });
});

// Fixed writes send exactly len() bytes, fixed reads fill from the start and report what
// they read; registered or not, registered file or not.
coring_test!(fixed_reads_and_writes_round_trip, |builder| {
    let rt = builder.build().unwrap();
    let uring = is_uring(&rt);
    let dir = TempDir::new("fixed");
    let p = dir.path("fx");
    common::block_on_bounded(&rt, async {
        let pool = FixedBufPool::new(4, 4096);
        assert!(!pool.is_registered());
        pool.register().unwrap();
        pool.register().unwrap();
        assert_eq!(pool.is_registered(), uring);
        let f = read_write(&p).await;
        f.register().unwrap();
        for i in 0..4u8 {
            let mut b = pool.try_take().unwrap();
            assert!(b.is_empty());
            assert_eq!(b.capacity(), 4096);
            b.extend_from_slice(&[i + 1; 4096]);
            let (r, b) = f.write_fixed_at(b, u64::from(i) * 4096).await;
            assert_eq!(r.unwrap(), 4096);
            assert_eq!(b.len(), 4096);
        }
        assert_eq!(pool.available(), 4);
        // A short buffer writes its content only.
        let mut b = pool.try_take().unwrap();
        b.extend_from_slice(b"tail bytes");
        let (r, b) = f.write_fixed_at(b, 4 * 4096).await;
        assert_eq!(r.unwrap(), 10);
        drop(b);
        assert_eq!(f.metadata().await.unwrap().len(), 4 * 4096 + 10);
        for i in 0..4u8 {
            let b = pool.check_out(usize::from(3 - i)).unwrap();
            assert_eq!(b.index(), usize::from(3 - i));
            let (r, b) = f.read_fixed_at(b, u64::from(i) * 4096).await;
            assert_eq!(r.unwrap(), 4096);
            assert_eq!(b.len(), 4096);
            assert!(b.iter().all(|&x| x == i + 1), "block {i}");
        }
        let (r, b) = f.read_fixed_at(pool.try_take().unwrap(), 4 * 4096).await;
        assert_eq!(r.unwrap(), 10);
        assert_eq!(&b[..], b"tail bytes");
        // A read into a buffer with content leaves exactly the bytes read, as for a
        // reused Vec: nothing stale past them.
        let (r, b) = f.read_fixed_at(b, 4 * 4096 + 5).await;
        assert_eq!(r.unwrap(), 5);
        assert_eq!(&b[..], b"bytes");
        // Past the end of the file: 0 bytes, and the buffer holds none.
        let (r, b) = f.read_fixed_at(b, 1 << 40).await;
        assert_eq!(r.unwrap(), 0);
        assert!(b.is_empty());
        drop(b);
        // An unregistered pool's buffers do the same with plain reads and writes, and a
        // file that is not registered takes registered buffers.
        let plain = FixedBufPool::new(1, 100);
        let g = File::open(&p).await.unwrap();
        let (r, b1) = g.read_fixed_at(plain.try_take().unwrap(), 4 * 4096).await;
        assert_eq!(r.unwrap(), 10);
        assert_eq!(&b1[..], b"tail bytes");
        let (r, b2) = g.read_fixed_at(pool.try_take().unwrap(), 4096).await;
        assert_eq!(r.unwrap(), 4096);
        assert!(b2.iter().all(|&x| x == 2));
        assert_eq!((plain.available(), pool.available()), (0, 3));
        drop((b1, b2));
        assert_eq!((plain.available(), pool.available()), (1, 4));
    });
});

// Buffers from two pools into one file, and the bad inputs: offsets the kernel cannot take
// fail with EINVAL on every backend (u64::MAX is not "the file position").
coring_test!(fixed_io_bad_inputs, async {
    let dir = TempDir::new("fixed");
    let p = dir.path("bad");
    let a = FixedBufPool::new(2, 512);
    let b = FixedBufPool::new(3, 1024);
    a.register().unwrap();
    b.register().unwrap();
    let f = read_write(&p).await;
    f.register().unwrap();
    let mut x = a.try_take().unwrap();
    x.extend_from_slice(&[b'a'; 512]);
    let mut y = b.check_out(2).unwrap();
    y.extend_from_slice(&[b'b'; 1000]);
    let (r, x) = f.write_fixed_at(x, 0).await;
    assert_eq!(r.unwrap(), 512);
    let (r, y) = f.write_fixed_at(y, 512).await;
    assert_eq!(r.unwrap(), 1000);
    for pos in [u64::MAX, i64::MAX as u64 + 1] {
        let (r, x2) = f.read_fixed_at(a.try_take().unwrap(), pos).await;
        assert_eq!(r.unwrap_err().raw_os_error(), Some(common::EINVAL), "{pos}");
        assert!(x2.is_empty());
        let (r, _) = f.write_fixed_at(x2, pos).await;
        assert_eq!(r.unwrap_err().raw_os_error(), Some(common::EINVAL), "{pos}");
        let (r, _) = f.read_at(Vec::with_capacity(8), pos).await;
        assert_eq!(r.unwrap_err().raw_os_error(), Some(common::EINVAL), "{pos}");
        let (r, _) = f.write_at(b"no".to_vec(), pos).await;
        assert_eq!(r.unwrap_err().raw_os_error(), Some(common::EINVAL), "{pos}");
        let (r, _) = f.readv_at(vec![Vec::with_capacity(8)], pos).await;
        assert_eq!(r.unwrap_err().raw_os_error(), Some(common::EINVAL), "{pos}");
    }
    // A read-only file refuses fixed writes with the kernel's error, buffer returned.
    let ro = File::open(&p).await.unwrap();
    ro.register().unwrap();
    let (r, x) = ro.write_fixed_at(x, 0).await;
    assert_eq!(r.unwrap_err().raw_os_error(), Some(NOT_WRITABLE));
    drop((x, y));
    assert_eq!((a.available(), b.available()), (2, 3));
    let mut want = vec![b'a'; 512];
    want.extend_from_slice(&[b'b'; 1000]);
    assert_eq!(std::fs::read(&p).unwrap(), want);
});

// A pool hands out each buffer once; when all are out, try_take says None at once.
coring_test!(pool_exhaustion_is_none_not_a_wait, async {
    let pool = FixedBufPool::new(2, 64);
    pool.register().unwrap();
    assert_eq!(
        (pool.count(), pool.buf_size(), pool.available()),
        (2, 64, 2)
    );
    let x = pool.try_take().unwrap();
    let y = pool.try_take().unwrap();
    assert_ne!(x.index(), y.index());
    assert!(pool.try_take().is_none());
    assert!(pool.check_out(x.index()).is_none(), "handed out twice");
    assert!(pool.check_out(2).is_none(), "no such buffer");
    assert_eq!(pool.available(), 0);
    let i = x.index();
    drop(x);
    assert_eq!(pool.available(), 1);
    let x = pool.check_out(i).unwrap();
    assert!(x.is_empty(), "a buffer starts empty each time it is taken");
    // The handle may go first: the buffers keep the pool alive.
    drop(pool);
    drop((x, y));
    let r = std::panic::catch_unwind(|| FixedBufPool::new(0, 64));
    assert!(r.is_err(), "a pool of no buffers is refused");
});

// Buffer entries go back to the ring's table when a pool's last buffer does: pools adding
// up to more buffers than the table holds (16384) register one after another on one
// runtime, and a pool registered after a failed (too large) one still works. Without the
// release, the 17th pool would find the table full.
coring_test!(dropped_pools_give_their_entries_back, async {
    for round in 0..20 {
        let pool = FixedBufPool::new(1000, 64);
        pool.register()
            .unwrap_or_else(|e| panic!("pool {round}: {e}"));
        let b = pool.try_take().unwrap();
        drop(pool);
        // The buffer keeps the registration until it comes back.
        drop(b);
    }
    let too_many = FixedBufPool::new(20_000, 64);
    let err = too_many.register().err();
    if too_many.is_registered() {
        panic!("a pool larger than the table was registered");
    }
    // io_uring refuses it; the fallback has no table and accepts (a no-op).
    if let Some(e) = err {
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    }
    let pool = FixedBufPool::new(16, 64);
    pool.register().unwrap();
});

// Many fixed reads at once (QD 64), each into its own registered buffer, every byte
// checked; afterwards every buffer is back. First from a cached file (where most reads
// complete during submission), then from 64 pipes, so that all 64 are in flight together.
coring_test!(sixty_four_concurrent_fixed_reads, |builder| {
    const BLOCKS: u64 = 256;
    let rt = builder.build().unwrap();
    let dir = TempDir::new("fixed");
    let p = dir.path("blocks");
    let mut data = Vec::with_capacity((BLOCKS * 4096) as usize);
    for blk in 0..BLOCKS {
        let mut block = vec![blk as u8; 4096];
        block[..8].copy_from_slice(&blk.to_le_bytes());
        data.extend_from_slice(&block);
    }
    std::fs::write(&p, &data).unwrap();
    common::block_on_bounded(&rt, async {
        let pool = FixedBufPool::new(64, 4096);
        pool.register().unwrap();
        let f = Rc::new(File::open(&p).await.unwrap());
        f.register().unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let (f, pool) = (f.clone(), pool.clone());
                coring::spawn(async move {
                    let mut buf = pool.check_out(t as usize).unwrap();
                    for k in 0..32u64 {
                        let blk = (t * 7 + k * 13) % BLOCKS;
                        buf.clear();
                        let (r, b) = f.read_fixed_at(buf, blk * 4096).await;
                        buf = b;
                        assert_eq!(r.unwrap(), 4096);
                        assert_eq!(buf[..8], blk.to_le_bytes(), "block {blk}");
                        assert!(buf[8..].iter().all(|&x| x == blk as u8), "block {blk}");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(pool.available(), 64);

        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for i in 0..64 {
            let (rd, wr) = pipe();
            writers.push(std::fs::File::from(wr));
            let rd = File::from(rd);
            rd.register().unwrap();
            let buf = pool.check_out(i).unwrap();
            readers.push(coring::spawn(async move {
                let (r, b) = rd.read_fixed_at(buf, 0).await;
                (r.unwrap(), b[..].to_vec(), b.index())
            }));
        }
        eventually("64 reads in flight", || rt.ops_in_flight() == 64).await;
        assert_eq!(pool.available(), 0);
        for (i, w) in writers.iter_mut().enumerate() {
            w.write_all(format!("pipe {i}").as_bytes()).unwrap();
        }
        for (i, h) in readers.into_iter().enumerate() {
            let (n, bytes, index) = h.await.unwrap();
            let want = format!("pipe {i}");
            assert_eq!((n, &bytes[..], index), (want.len(), want.as_bytes(), i));
        }
        assert_eq!(pool.available(), 64);
    });
    if cfg!(target_os = "linux") {
        // The page-cache fast path serves fixed reads too, on both backends.
        assert!(rt.metrics().ops_inline > 0, "{:?}", rt.metrics());
    }
});

// Reads and writes through the ring (pipes: never served during submission) land in the
// buffer they name and nowhere else: on io_uring by buffer index and slot.
coring_test!(fixed_pipe_io_fills_the_named_buffer, |builder| {
    let rt = builder.build().unwrap();
    let (rd, wr) = pipe();
    let (rd2, wr2) = pipe();
    let mut peer_wr = std::fs::File::from(wr);
    let mut peer_rd = std::fs::File::from(rd2);
    let (rd, wr2) = (File::from(rd), File::from(wr2));
    common::block_on_bounded(&rt, async {
        let pool = FixedBufPool::new(8, 256);
        pool.register().unwrap();
        rd.register().unwrap();
        wr2.register().unwrap();
        let mut held: Vec<_> = (0..8).map(|i| pool.check_out(i).unwrap()).collect();
        let five = held.remove(5);
        let reader = rd.read_fixed_at(five, 0);
        peer_wr.write_all(b"into buffer five").unwrap();
        let (r, five) = reader.await;
        assert_eq!(r.unwrap(), 16);
        assert_eq!(&five[..], b"into buffer five");
        for b in &mut held {
            b.set_len(b.capacity());
            assert!(
                b.iter().all(|&x| x == 0),
                "buffer {} was written",
                b.index()
            );
        }
        let mut out = held.remove(2);
        out.clear();
        out.extend_from_slice(b"out of buffer two");
        let (r, _) = wr2.write_fixed_at(out, 0).await;
        assert_eq!(r.unwrap(), 17);
    });
    let mut got = [0u8; 17];
    peer_rd.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"out of buffer two");
});

// Dropping the future of an in-flight fixed read leaves the buffer with the runtime until
// the read's final completion (the cancel's, on both backends: the fallback's pool thread
// waits for the pipe in poll(2), which the cancel interrupts): only then is it back in the
// pool. (The "not before" half, a buffer freed at drop, is mutation-tested by
// tests/lifecycle.rs; a pipe read is cancelled too quickly to see it here.)
coring_test!(
    dropped_fixed_read_returns_its_buffer_after_completion,
    |builder| {
        let rt = builder.build().unwrap();
        let (rd, wr) = pipe();
        let mut wr = std::fs::File::from(wr);
        let rd = File::from(rd);
        common::block_on_bounded(&rt, async {
            let pool = FixedBufPool::new(2, 64);
            pool.register().unwrap();
            rd.register().unwrap();
            let buf = pool.try_take().unwrap();
            let res = timeout(Duration::from_millis(20), rd.read_fixed_at(buf, 0)).await;
            assert!(
                res.is_err(),
                "nothing was written: the read must still be pending"
            );
            assert_eq!(
                pool.available(),
                1,
                "buffer back while the kernel owns the read"
            );
            eventually("the orphaned read to complete", || pool.available() == 2).await;
            // The pool and the file work as before; the cancelled read took no bytes.
            wr.write_all(b"next").unwrap();
            let (r, b) = rd.read_fixed_at(pool.try_take().unwrap(), 0).await;
            assert_eq!(&b[..r.unwrap()], b"next");
        });
        assert_eq!(rt.metrics().ops_orphaned, 1);
        assert_eq!(rt.ops_in_flight(), 0);
    }
);

// Where the kernel lacks READ_FIXED / WRITE_FIXED (emulated here), fixed operations run on
// the blocking pool as plain reads and writes of the same memory.
coring_test!(
    fixed_ops_without_kernel_support_run_on_the_pool,
    |builder| {
        let rt = builder
            .emulate_missing_opcodes(&["READ_FIXED", "WRITE_FIXED"])
            .build()
            .unwrap();
        let (rd, wr) = pipe();
        let mut peer = std::fs::File::from(wr);
        let rd = File::from(rd);
        let dir = TempDir::new("fixed");
        let p = dir.path("emu");
        common::block_on_bounded(&rt, async {
            let pool = FixedBufPool::new(2, 64);
            pool.register().unwrap();
            let f = File::create(&p).await.unwrap();
            let mut b = pool.try_take().unwrap();
            b.extend_from_slice(b"pooled write");
            let (r, b) = f.write_fixed_at(b, 0).await;
            assert_eq!(r.unwrap(), 12);
            drop(b);
            peer.write_all(b"pooled read").unwrap();
            let (r, b) = rd.read_fixed_at(pool.try_take().unwrap(), 0).await;
            assert_eq!(r.unwrap(), 11);
            assert_eq!(&b[..], b"pooled read");
        });
        assert_eq!(std::fs::read(&p).unwrap(), b"pooled write");
        if is_uring(&rt) {
            assert!(rt.metrics().ops_offloaded >= 2, "{:?}", rt.metrics());
        }
    }
);

// Registrations may outlive their runtime. The ring's descriptor number is then free and
// is typically reused by the next runtime's ring: dropping the old registrations must not
// touch that ring's tables, and the file and pool can be registered there afresh.
coring_test!(
    registrations_outliving_their_runtime_touch_no_other_ring,
    |builder| {
        let dir = TempDir::new("fixed");
        let (px, py) = (dir.path("x"), dir.path("y"));
        let rt = builder.clone().build().unwrap();
        let uring = is_uring(&rt);
        let pool = FixedBufPool::new(2, 64);
        let x = common::block_on_bounded(&rt, async {
            pool.register().unwrap();
            let x = File::create(&px).await.unwrap();
            x.register().unwrap();
            x
        });
        drop(rt);
        let rt2 = builder.build().unwrap();
        common::block_on_bounded(&rt2, async {
            assert!(!x.is_registered() && !pool.is_registered());
            let y = File::create(&py).await.unwrap();
            y.register().unwrap();
            // x's stale registration goes now: it must not clear y's slot in the new ring.
            drop(x);
            let mut b = pool.try_take().unwrap();
            b.extend_from_slice(b"to y");
            let (r, b) = y.write_fixed_at(b, 0).await;
            assert_eq!(r.unwrap(), 4);
            drop(b);
            // The pool's old registration is dead: it registers with this ring instead.
            pool.register().unwrap();
            assert_eq!(pool.is_registered(), uring);
            let mut b = pool.try_take().unwrap();
            b.extend_from_slice(b", again");
            let (r, _) = y.write_fixed_at(b, 4).await;
            assert_eq!(r.unwrap(), 7);
            assert_eq!(y.is_registered(), uring);
        });
        assert_eq!(std::fs::read(&py).unwrap(), b"to y, again");
    }
);

// Sockets register like files: accept, connect-side reads and writes, datagrams and
// shutdown all work through the slot (io_uring) or the descriptor (fallback).
coring_test!(registered_sockets, |builder| {
    use coring::net::{TcpListener, TcpStream, UdpSocket};
    let rt = builder.build().unwrap();
    let uring = is_uring(&rt);
    common::block_on_bounded(&rt, async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.register().unwrap();
        assert_eq!(listener.is_registered(), uring);
        let addr = listener.local_addr().unwrap();
        let client = coring::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            s.register().unwrap();
            let (r, _) = s.write_all(b"ping".to_vec()).await;
            r.unwrap();
            let (r, buf) = s.read_exact(Vec::with_capacity(4)).await;
            r.unwrap();
            assert_eq!(buf, b"pong");
            let (r, _) = s.read(Vec::with_capacity(4)).await;
            assert_eq!(r.unwrap(), 0, "the server shut down its side");
        });
        let (conn, _) = listener.accept().await.unwrap();
        conn.register().unwrap();
        assert_eq!(conn.is_registered(), uring);
        let (r, buf) = conn.read_exact(Vec::with_capacity(4)).await;
        r.unwrap();
        assert_eq!(buf, b"ping");
        let (r, _) = conn.write_all(b"pong".to_vec()).await;
        r.unwrap();
        conn.shutdown(std::net::Shutdown::Write).await.unwrap();
        client.await.unwrap();
        conn.unregister().unwrap();
        assert!(!conn.is_registered());

        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.register().unwrap();
        b.register().unwrap();
        let (r, _) = a
            .send_to(b"datagram".to_vec(), b.local_addr().unwrap())
            .await;
        assert_eq!(r.unwrap(), 8);
        let (r, buf) = b.recv_from(Vec::with_capacity(16)).await;
        let (n, from) = r.unwrap();
        assert_eq!((n, from), (8, a.local_addr().unwrap()));
        assert_eq!(buf, b"datagram");
    });
});
