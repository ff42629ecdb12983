//! `send_file`: a file's bytes to a stream socket without a copy through user space
//! (io_uring: linked splices through a pooled pipe; readiness: `sendfile(2)`; Windows: a
//! copy). Every test checks the bytes that arrive, byte for byte.

mod common;

use std::io::Read;
use std::net::Shutdown;
use std::path::Path;
use std::time::Duration;

use common::TempDir;
use coring::fs::File;
use coring::net::TcpStream;

/// Deterministic, position-dependent content (so a shifted or stale byte shows), seeded.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Writes `len` bytes of pattern `seed` to `dir/name`; returns them.
fn make_file(dir: &TempDir, name: &str, len: usize, seed: u32) -> (std::path::PathBuf, Vec<u8>) {
    let data = pattern(len, seed);
    let path = dir.path(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// A loopback TCP connection: the coring end (sending) and a std end read by a thread,
/// which returns everything received up to EOF (bounded: a 20 s read timeout fails it).
fn tcp_pair() -> (TcpStream, std::thread::JoinHandle<Vec<u8>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    (TcpStream::from_std(server).unwrap(), reader(client))
}

/// Reads `s` to EOF on a thread.
fn reader<S: Read + Send + 'static>(mut s: S) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("reading the sent bytes");
        got
    })
}

/// Sets a read timeout so a reader thread cannot hang the test.
fn bounded(s: &std::net::TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
}

/// Sends `len` bytes of `path` from `offset` on a new connection and returns what was
/// sent and what arrived.
async fn send_over_tcp(path: &Path, offset: u64, len: u64) -> (u64, Vec<u8>) {
    let (s, rx) = tcp_pair();
    let f = File::open(path).await.unwrap();
    let n = s.send_file(&f, offset, len).await.unwrap();
    s.shutdown(Shutdown::Write).await.unwrap();
    drop(s);
    (n, rx.join().unwrap())
}

/// A `coring_test!` that runs its body twice per backend: with `sendfile` (the default)
/// and with `Builder::splice_files(true)` (linked splices through a pipe on io_uring; the
/// fallback ignores the option, so there it runs the same route twice).
macro_rules! both_routes {
    ($name:ident, $body:expr) => {
        coring_test!($name, |builder| {
            for splice in [false, true] {
                let rt = builder
                    .clone()
                    .splice_files(splice)
                    .build()
                    .expect("runtime");
                common::block_on_bounded(&rt, $body);
            }
        });
    };
}

both_routes!(bodies_are_byte_exact, async {
    let dir = TempDir::new("sendfile-sizes");
    // Around page and pipe boundaries, and past the pipe's 256 KiB several times.
    for (i, size) in [
        0usize,
        1,
        4095,
        4096,
        4097,
        65_536 + 17,
        262_144,
        1 << 20,
        5 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let (path, data) = make_file(&dir, &format!("f{i}"), size, i as u32);
        let (n, got) = send_over_tcp(&path, 0, size as u64).await;
        assert_eq!(n, size as u64, "size {size}");
        assert!(got == data, "size {size}: the bytes differ");
        // From an offset inside a page, to the end.
        if size > 1 {
            let off = (size / 3) | 1;
            let (n, got) = send_over_tcp(&path, off as u64, u64::MAX).await;
            assert_eq!(n, (size - off) as u64, "size {size} from {off}");
            assert!(
                got == data[off..],
                "size {size} from {off}: the bytes differ"
            );
        }
    }
});

both_routes!(offsets_at_and_past_the_end, async {
    let dir = TempDir::new("sendfile-ends");
    let (path, data) = make_file(&dir, "f", 10_000, 7);
    // At the end and past it: nothing, and no error.
    for off in [10_000, 10_001, 1 << 40] {
        let (n, got) = send_over_tcp(&path, off, 100).await;
        assert_eq!((n, got.len()), (0, 0), "offset {off}");
    }
    // A file shorter than asked: what it has.
    let (n, got) = send_over_tcp(&path, 9_990, 100).await;
    assert_eq!(n, 10);
    assert_eq!(got, data[9_990..]);
    // Nothing asked: nothing sent.
    let (n, got) = send_over_tcp(&path, 0, 0).await;
    assert_eq!((n, got.len()), (0, 0));
    // An offset no kernel takes.
    let (s, rx) = tcp_pair();
    let f = File::open(&path).await.unwrap();
    let e = s.send_file(&f, u64::MAX, 1).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    // The stream still works.
    assert_eq!(s.send_file(&f, 0, 5).await.unwrap(), 5);
    drop(s);
    assert_eq!(rx.join().unwrap(), data[..5]);
});

both_routes!(mixed_with_writes_in_order, async {
    // Head from a buffer, body from the file, then another head: the order a server uses.
    let dir = TempDir::new("sendfile-mixed");
    let (path, data) = make_file(&dir, "f", 300_000, 3);
    let (s, rx) = tcp_pair();
    let f = File::open(&path).await.unwrap();
    let mut want = Vec::new();
    for round in 0..3u64 {
        let head = format!("head {round}\n").into_bytes();
        want.extend_from_slice(&head);
        let (r, _) = s.write_all(head).await;
        r.unwrap();
        let off = round * 1000 + 1;
        assert_eq!(s.send_file(&f, off, 200_000).await.unwrap(), 200_000);
        want.extend_from_slice(&data[off as usize..off as usize + 200_000]);
    }
    drop(s);
    assert!(rx.join().unwrap() == want, "the bytes differ");
});

both_routes!(registered_file_and_socket, async {
    let dir = TempDir::new("sendfile-fixed");
    let (path, data) = make_file(&dir, "f", 700_001, 11);
    let (s, rx) = tcp_pair();
    let f = File::open(&path).await.unwrap();
    // A no-op on backends without registered-file tables.
    f.register().unwrap();
    s.register().unwrap();
    assert_eq!(s.send_file(&f, 4_097, 600_000).await.unwrap(), 600_000);
    drop(s);
    assert!(
        rx.join().unwrap() == data[4_097..604_097],
        "the bytes differ"
    );
});

both_routes!(peer_closed_is_an_error, async {
    let dir = TempDir::new("sendfile-closed");
    let (path, _) = make_file(&dir, "f", 16 << 20, 5);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    // Gone before anything is sent: the first bytes draw a reset, the next sends fail.
    drop(client);
    let s = TcpStream::from_std(server).unwrap();
    let f = File::open(&path).await.unwrap();
    let e = s.send_file(&f, 0, 16 << 20).await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{e:?}"
    );
});

/// Shrinks a socket's send buffer, so a transfer to a peer that does not read stops soon.
#[cfg(unix)]
fn small_send_buffer(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 16 * 1024;
    // SAFETY: setsockopt reads one c_int from a live local.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

/// Windows: the default send buffer; the peer's receive window still bounds the transfer.
#[cfg(windows)]
fn small_send_buffer(_s: &TcpStream) {}

both_routes!(dropped_mid_transfer_then_exact_bytes, async {
    let dir = TempDir::new("sendfile-drop");
    // More than the socket buffers on both ends hold, so it cannot finish unread.
    let (big_path, big) = make_file(&dir, "big", 24 << 20, 1);
    let (path, data) = make_file(&dir, "small", 3 << 20, 2);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    bounded(&client);
    let (server, _) = l.accept().unwrap();
    let s = TcpStream::from_std(server).unwrap();
    small_send_buffer(&s);
    let big_file = File::open(&big_path).await.unwrap();
    // The reader does not read yet: the transfer stops mid-way and is dropped there.
    let r = coring::time::timeout(
        Duration::from_millis(200),
        s.send_file(&big_file, 0, big.len() as u64),
    )
    .await;
    assert!(r.is_err(), "24 MiB went to a peer that reads nothing");
    // Transfers after it on the same runtime, on other connections, send exactly their own
    // bytes (a pipe left with bytes in it would show here).
    let f = File::open(&path).await.unwrap();
    for round in 0..4u64 {
        let (s2, rx) = tcp_pair();
        let off = round * 4096 + round;
        let n = s2.send_file(&f, off, data.len() as u64).await.unwrap();
        assert_eq!(n, data.len() as u64 - off);
        drop(s2);
        assert!(rx.join().unwrap() == data[off as usize..], "round {round}");
    }
    // The dropped transfer's connection got a prefix of its file, nothing else.
    drop(s);
    let got = reader(client).join().unwrap();
    assert!(got.len() < big.len());
    assert!(
        got == big[..got.len()],
        "the interrupted stream's bytes differ"
    );
});

// Unix-domain streams exist on Unix only.
#[cfg(unix)]
both_routes!(unix_stream, async {
    let dir = TempDir::new("sendfile-unix");
    let (path, data) = make_file(&dir, "f", (1 << 20) + 5, 9);
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let rx = reader(b);
    let s = coring::net::UnixStream::from_std(a).unwrap();
    let f = File::open(&path).await.unwrap();
    assert_eq!(
        s.send_file(&f, 3, u64::MAX).await.unwrap(),
        data.len() as u64 - 3
    );
    drop(s);
    assert!(rx.join().unwrap() == data[3..], "the bytes differ");
});

/// io_uring with `splice_files` sends files by linked splices (the kernel orders each
/// pair). Only io_uring links in the kernel.
#[cfg(target_os = "linux")]
#[test]
fn io_uring_links_splices() {
    common::with_watchdog("io_uring_links_splices", || {
        let rt = coring::Builder::new()
            .backend(coring::BackendKind::IoUring)
            .splice_files(true)
            .build()
            .unwrap();
        let dir = TempDir::new("sendfile-linked");
        let (path, data) = make_file(&dir, "f", 1 << 20, 6);
        let before = rt.metrics();
        let (n, got) = common::block_on_bounded(&rt, send_over_tcp(&path, 0, 1 << 20));
        assert_eq!(n, 1 << 20);
        assert!(got == data, "the bytes differ");
        let after = rt.metrics();
        assert!(after.ops_linked >= before.ops_linked + 2, "{after:?}");
        assert_eq!(after.ops_offloaded, before.ops_offloaded, "{after:?}");
    });
}

/// io_uring's default route runs `sendfile` during submission for a cached file: no
/// operation goes to the blocking pool. Needs `cachestat(2)` (Linux 6.5+; without it every
/// `sendfile` goes to the pool, by design): skipped with a message where it is missing.
/// Only io_uring chooses between the two.
#[cfg(target_os = "linux")]
#[test]
fn io_uring_sendfile_inline_when_cached() {
    common::with_watchdog("io_uring_sendfile_inline_when_cached", || {
        let dir = TempDir::new("sendfile-inline");
        let (path, data) = make_file(&dir, "f", 1 << 20, 10);
        // Probe cachestat (451) on the file: 0 if the kernel has it.
        let probe = std::fs::File::open(&path).unwrap();
        let range = [0u64, 4096];
        let mut st = [0u64; 5];
        // SAFETY: cachestat reads two u64 and writes five, both live locals.
        let r = unsafe {
            use std::os::fd::AsRawFd;
            libc::syscall(451, probe.as_raw_fd(), range.as_ptr(), st.as_mut_ptr(), 0)
        };
        if r != 0 {
            eprintln!(
                "skipping: no cachestat(2) here ({})",
                std::io::Error::last_os_error()
            );
            return;
        }
        let rt = coring::Builder::new()
            .backend(coring::BackendKind::IoUring)
            .build()
            .unwrap();
        let before = rt.metrics().ops_offloaded;
        let (n, got) = common::block_on_bounded(&rt, send_over_tcp(&path, 0, 1 << 20));
        assert_eq!(n, 1 << 20);
        assert!(got == data, "the bytes differ");
        assert_eq!(
            rt.metrics().ops_offloaded,
            before,
            "a cached file went to the pool"
        );
    });
}

/// io_uring asked to splice but without the opcode (the test hook hides it): `sendfile`
/// instead, no linked operations. Only io_uring has opcodes to hide.
#[cfg(target_os = "linux")]
#[test]
fn io_uring_without_splice() {
    common::with_watchdog("io_uring_without_splice", || {
        let rt = coring::Builder::new()
            .backend(coring::BackendKind::IoUring)
            .splice_files(true)
            .emulate_missing_opcodes(&["splice"])
            .build()
            .unwrap();
        let dir = TempDir::new("sendfile-nosplice");
        let (path, data) = make_file(&dir, "f", (2 << 20) + 1, 4);
        let (n, got) = common::block_on_bounded(&rt, send_over_tcp(&path, 1, u64::MAX));
        assert_eq!(n, data.len() as u64 - 1);
        assert!(got == data[1..], "the bytes differ");
        assert_eq!(rt.metrics().ops_linked, 0, "no splices");
    });
}

// A file whose pages were dropped from the page cache: on io_uring `sendfile` then runs
// on the blocking pool (the ring's thread does not wait for the device); the bytes are
// the same. Eviction is best effort (`POSIX_FADV_DONTNEED` of clean pages), so the route
// is not asserted. Linux only: the advice's effect is Linux's.
#[cfg(target_os = "linux")]
both_routes!(uncached_file, async {
    use std::os::fd::AsRawFd;
    let dir = TempDir::new("sendfile-cold");
    let (path, data) = make_file(&dir, "f", (3 << 20) + 7, 8);
    let std_file = std::fs::File::open(&path).unwrap();
    std_file.sync_all().unwrap();
    // SAFETY: no pointers; advice on a descriptor this test owns.
    unsafe { libc::posix_fadvise(std_file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let (n, got) = send_over_tcp(&path, 5, u64::MAX).await;
    assert_eq!(n, data.len() as u64 - 5);
    assert!(got == data[5..], "the bytes differ");
});
