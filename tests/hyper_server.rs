//! End-to-end tests of `examples/hyper_server.rs` (hyper 1.x on coring through
//! `coring::compat`): the real example binary, started as a child process on each backend
//! (`CORING_BACKEND=io_uring` and `fallback`; `iocp` on Windows) and driven by the real
//! `curl`: GET, POST with a body echoed back, a streamed (chunked) body, a file read
//! through coring, and keep-alive reuse (curl's "Re-using existing connection").
//!
//! The harness follows `tests/file_server.rs` (see its docs for where the binary comes
//! from and why this file builds it): curl runs with `--max-time 10`, the server's startup
//! line is awaited for at most 20 s, every child is killed by a guard's `Drop`, and a
//! watchdog aborts a test that runs longer than 120 s. No assertion is about time. Without
//! curl (a Windows build under Wine has none) the tests print why and return.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const CURL_MAX_TIME: &str = "10";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const TEST_BOUND: Duration = Duration::from_secs(120);
const HELLO: &[u8] = b"Hello, coring!\n";

/// Expands each test function into one `#[test]` per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[cfg(unix)]
            #[test]
            fn io_uring() {
                super::common::with_watchdog_for(concat!(stringify!($name), "::io_uring"), super::TEST_BOUND, || {
                    super::$name("io_uring")
                });
            }

            #[cfg(unix)]
            #[test]
            fn fallback() {
                super::common::with_watchdog_for(concat!(stringify!($name), "::fallback"), super::TEST_BOUND, || {
                    super::$name("fallback")
                });
            }

            #[cfg(windows)]
            #[test]
            fn iocp() {
                super::common::with_watchdog_for(concat!(stringify!($name), "::iocp"), super::TEST_BOUND, || {
                    super::$name("iocp")
                });
            }
        }
    )*};
}

on_both_backends!(
    get_and_keep_alive,
    post_body_echoed,
    streamed_body,
    file_read_through_coring,
);

fn get_and_keep_alive(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let dir = Scratch::new();
    let server = Server::start(backend, &dir.0);
    let (a, b, c) = (dir.file("a"), dir.file("b"), dir.file("c"));
    let out = curl(&[
        "-v",
        "-o",
        a.to_str().unwrap(),
        &server.url("/"),
        "-o",
        b.to_str().unwrap(),
        &server.url("/"),
        "-o",
        c.to_str().unwrap(),
        &server.url("/missing"),
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Re-using existing connection"),
        "curl did not reuse the connection:\n{log}"
    );
    assert_eq!(log.matches("Connected to").count(), 1, "{log}");
    assert_eq!(std::fs::read(&a).unwrap(), HELLO);
    assert_eq!(std::fs::read(&b).unwrap(), HELLO);
    assert_eq!(std::fs::read(&c).unwrap(), b"not found\n");
    assert!(log.contains("< HTTP/1.1 404"), "{log}");
}

fn post_body_echoed(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let dir = Scratch::new();
    let server = Server::start(backend, &dir.0);
    // A small body, then a large one (several reads and writes of the adapter), on one
    // connection.
    let small = dir.file("small");
    std::fs::write(&small, b"posted body").unwrap();
    let big = dir.file("big");
    let data = pattern(2 * 1024 * 1024 + 17);
    std::fs::write(&big, &data).unwrap();
    let (o1, o2) = (dir.file("o1"), dir.file("o2"));
    let out = curl(&[
        "-v",
        "--data-binary",
        &format!("@{}", small.display()),
        "-o",
        o1.to_str().unwrap(),
        &server.url("/echo"),
        "--next",
        "--data-binary",
        &format!("@{}", big.display()),
        "-o",
        o2.to_str().unwrap(),
        &server.url("/echo"),
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Re-using existing connection"), "{log}");
    assert_eq!(std::fs::read(&o1).unwrap(), b"posted body");
    assert!(
        std::fs::read(&o2).unwrap() == data,
        "the large echo differs"
    );
    // GET on the echo route is refused.
    let null = dir.file("null");
    let out = curl(&[
        "-o",
        null.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &server.url("/echo"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
}

fn streamed_body(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let dir = Scratch::new();
    let server = Server::start(backend, &dir.0);
    let out = curl(&["-D", "-", &server.url("/stream?n=4")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\n");
}

fn file_read_through_coring(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let dir = Scratch::new();
    let data = pattern(3 * 1024 * 1024 + 5);
    std::fs::write(dir.file("big.bin"), &data).unwrap();
    std::fs::write(dir.file("empty"), b"").unwrap();
    let server = Server::start(backend, &dir.0);
    let out_path = dir.file("got");
    let out = curl(&[
        "-D",
        "-",
        "-o",
        out_path.to_str().unwrap(),
        &server.url("/files/big.bin"),
    ]);
    assert!(out.status.success());
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-length: {}", data.len())),
        "{head}"
    );
    assert!(
        std::fs::read(&out_path).unwrap() == data,
        "the file arrived changed"
    );
    for (path, code) in [
        ("/files/empty", "200"),
        ("/files/missing", "404"),
        ("/files/..", "403"),
        ("/files/%2e%2e", "404"),
    ] {
        let null = dir.file("null");
        let out = curl(&[
            "-o",
            null.to_str().unwrap(),
            "-w",
            "%{http_code}",
            "--path-as-is",
            &server.url(path),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), code, "{path}");
    }
}

// ---------------------------------------------------------------------------------------
// Harness (as in tests/file_server.rs)
// ---------------------------------------------------------------------------------------

/// Runs curl with fixed safety options first: no config file, no proxy, bounded time.
fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--noproxy", "*", "--max-time", CURL_MAX_TIME])
        .args(args);
    common::example::run_bounded(cmd, Duration::from_secs(30))
}

/// A scratch directory (the server's `--root` and curl's outputs), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "coring-hyper-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes with no short period.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A running server; killed (and reaped) when dropped.
struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(backend: &str, root: &Path) -> Server {
        let mut child = Command::new(common::example::binary("hyper_server"))
            .arg("--root")
            .arg(root)
            .args(["--addr", "127.0.0.1:0"])
            .env("CORING_BACKEND", backend)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the hyper_server example");
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            stderr,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => server.addr = addr,
            Err(_) => {
                let status =
                    common::example::wait_bounded(&mut server.child, Duration::from_secs(1));
                panic!(
                    "hyper_server ({backend}) printed no address within {START_TIMEOUT:?} \
                     (exit: {status:?}); stderr:\n{}",
                    server.stderr.lock().unwrap()
                );
            }
        }
        // The backend asked for is the one running (no silent fall back).
        let deadline = Instant::now() + Duration::from_secs(10);
        // (The whole line: `eprintln!` may write it in pieces.)
        let backend_line = |log: &str| log.find("backend").is_some_and(|i| log[i..].contains('\n'));
        while !backend_line(&server.stderr.lock().unwrap()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let log = server.stderr.lock().unwrap().clone();
        assert!(log.contains(&format!("backend {backend}")), "{log}");
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
