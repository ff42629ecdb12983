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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
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
                super::with_watchdog(concat!(stringify!($name), "::io_uring"), || {
                    super::$name("io_uring")
                });
            }

            #[cfg(unix)]
            #[test]
            fn fallback() {
                super::with_watchdog(concat!(stringify!($name), "::fallback"), || {
                    super::$name("fallback")
                });
            }

            #[cfg(windows)]
            #[test]
            fn iocp() {
                super::with_watchdog(concat!(stringify!($name), "::iocp"), || {
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
    if !have_curl() {
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
    if !have_curl() {
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
    if !have_curl() {
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
    if !have_curl() {
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

fn with_watchdog(name: &str, f: impl FnOnce()) {
    let (done, wait) = mpsc::channel::<()>();
    let name = name.to_string();
    let dog = thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(TEST_BOUND) {
            eprintln!("test {name} did not finish within {TEST_BOUND:?}: aborting");
            std::process::abort();
        }
    });
    f();
    drop(done);
    dog.join().unwrap();
}

/// Whether `curl` can be run; prints why not when it cannot.
fn have_curl() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    let have = *HAVE.get_or_init(|| {
        Command::new("curl")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !have {
        eprintln!("skipping: the `curl` binary is not installed (CI must install it)");
    }
    have
}

/// The example binary, built (or found up to date) once per test process.
fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in <profile>/deps")
            .to_path_buf();
        let bin = profile_dir
            .join("examples")
            .join(format!("hyper_server{}", std::env::consts::EXE_SUFFIX));
        if let Ok(cargo) = std::env::var("CARGO") {
            build_example(&cargo, &profile_dir);
        }
        assert!(
            bin.is_file(),
            "{} does not exist; build it with `cargo build --example hyper_server`",
            bin.display()
        );
        bin
    })
}

/// Runs `cargo build --example hyper_server` for the profile/target dir this test runs
/// from (`cargo test --test hyper_server` alone does not build examples).
fn build_example(cargo: &str, profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(p) => p.to_string(),
        None => panic!("no profile directory in {}", profile_dir.display()),
    };
    let above = profile_dir.parent().expect("profile dir has a parent");
    let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
        (above.to_path_buf(), None)
    } else {
        let triple = above.file_name().and_then(|n| n.to_str()).map(String::from);
        (above.parent().expect("target dir").to_path_buf(), triple)
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    #[cfg(windows)]
    if Command::new(cargo).arg("--version").output().is_err() {
        eprintln!("cannot run {cargo}: using the example binary as it is");
        return;
    }
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--example", "hyper_server", "--profile"])
        .arg(&profile)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    if let Some(t) = triple {
        cmd.args(["--target", &t]);
    }
    let out = run_bounded(cmd, Duration::from_secs(600));
    assert!(
        out.status.success(),
        "building the example failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command to completion, killing it if it outlives `bound`.
fn run_bounded(mut cmd: Command, bound: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = wait_bounded(&mut child, bound)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {bound:?}; killed"));
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Waits for `child` at most `bound`; kills and reaps it and returns `None` on timeout.
fn wait_bounded(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs curl with fixed safety options first: no config file, no proxy, bounded time.
fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--noproxy", "*", "--max-time", CURL_MAX_TIME])
        .args(args);
    run_bounded(cmd, Duration::from_secs(30))
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
        let mut child = Command::new(server_binary())
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
                let status = wait_bounded(&mut server.child, Duration::from_secs(1));
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
