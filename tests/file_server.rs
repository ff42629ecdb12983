//! End-to-end tests of `examples/file_server.rs`: the real example binary, started as a
//! child process on each backend (`CORING_BACKEND=io_uring` and `fallback`; `iocp` on
//! Windows), serving a temporary directory, and driven by the real `curl` (plus raw
//! `std::net::TcpStream` requests where curl would be too polite: malformed heads,
//! pipelining).
//!
//! Every test is expanded into `name::io_uring` and `name::fallback` (`name::iocp` on
//! Windows). Tests that need curl print a message and run only their raw-socket parts, if
//! any, when it is not installed (CI must install it; a Windows build run under Wine has
//! none). Nothing waits
//! unbounded: curl runs with `--max-time 10`, raw sockets have 10 s timeouts, the server's
//! startup line is awaited for at most 20 s, every child is killed by a guard's `Drop`,
//! and a watchdog aborts a test that runs longer than 120 s. No assertion is about time.
//!
//! # Where the binary comes from
//!
//! `CARGO_BIN_EXE_*` exists only for `[[bin]]` targets, so the example is found next to
//! this test binary: `<target-dir>/[<triple>/]<profile>/examples/file_server`, derived from
//! `std::env::current_exe()` (`.../<profile>/deps/file_server-<hash>`), which is right for
//! any `CARGO_TARGET_DIR`, `--target-dir`, `--target` or `--profile`.
//!
//! Checked on cargo 1.95: a plain `cargo test` builds the examples before it runs any
//! integration test, but `cargo test --test file_server` does **not** (a touched example
//! source was left unbuilt, so a stale or missing binary would be tested). So, once per
//! test process, this file runs `$CARGO build --example file_server` with the same
//! profile, target directory and target triple. When the binary is current this is a
//! no-op of a fraction of a second; cargo releases its build-directory lock before running
//! test binaries, so the nested build does not deadlock (also checked). Without `$CARGO`
//! (the test binary run by hand) an existing binary is used as is.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Bound on one curl invocation (`--max-time`), in seconds.
const CURL_MAX_TIME: &str = "10";
/// Bound on one raw socket read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the server printing its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a whole test.
const TEST_BOUND: Duration = Duration::from_secs(120);

const HELLO: &[u8] = b"Hello, coring!\n";
const INDEX: &[u8] = b"<h1>sub index</h1>\n";
const SPACED: &[u8] = b"a name with spaces\n";
const SECRET: &[u8] = b"top secret: outside the root\n";
const BIG_LEN: usize = 3 * 1024 * 1024;

/// Expands each test function into one `#[test]` per backend (io_uring and the fallback on
/// Unix, IOCP on Windows).
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
    get_small_file,
    get_large_file_exact_bytes,
    content_types,
    head_has_no_body,
    range_requests,
    not_found,
    method_not_allowed,
    malformed_requests,
    oversized_request_head,
    dot_dot_escape_refused,
    directory_index_and_redirect,
    name_with_space,
    keep_alive_reuses_connection,
    connection_close_and_http10,
    pipelined_requests,
    request_split_across_writes,
    max_requests_exits_cleanly,
    multi_core_pool,
    body_sizes_and_ranges_both_paths,
);

// Unix only, by nature: creating symlinks on Windows needs a privilege (the fixture makes
// none there).
#[cfg(unix)]
on_both_backends!(symlinks_confined_to_root);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A temporary directory tree: `root/` is served, `outside/` must stay unreachable.
struct Fixture {
    base: PathBuf,
    root: PathBuf,
    big: Vec<u8>,
    /// Numbers scratch files for curl output.
    scratch: AtomicUsize,
}

impl Fixture {
    fn new() -> Fixture {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().join(format!(
            "coring-file-server-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        let outside = base.join("outside");
        let scratch = base.join("scratch");
        for d in [
            &root,
            &outside,
            &scratch,
            &root.join("sub"),
            &root.join("emptydir"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let big = pattern(BIG_LEN);
        let write = |rel: &str, data: &[u8]| std::fs::write(root.join(rel), data).unwrap();
        write("hello.txt", HELLO);
        write("big.bin", &big);
        write("sub/index.html", INDEX);
        write("file with space.txt", SPACED);
        write("empty.txt", b"");
        for ext in [
            "html",
            "css",
            "js",
            "json",
            "txt",
            "png",
            "jpg",
            "gif",
            "svg",
            "wasm",
            "pdf",
            "unknownext",
        ] {
            write(&format!("a.{ext}"), ext.as_bytes());
        }
        write("noext", b"noext");
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        // Unix only: creating symlinks on Windows needs a privilege.
        #[cfg(unix)]
        {
            let link = |target: &Path, rel: &str| {
                std::os::unix::fs::symlink(target, root.join(rel)).unwrap();
            };
            link(&outside.join("secret.txt"), "escape_link");
            link(&outside, "escape_dir");
            link(Path::new("../outside/secret.txt"), "rel_escape");
            link(Path::new("hello.txt"), "inside_link");
            link(Path::new("../hello.txt"), "sub/up_link");
            link(Path::new("sub"), "sub_link");
        }
        Fixture {
            base,
            root,
            big,
            scratch: AtomicUsize::new(0),
        }
    }

    fn scratch_file(&self) -> PathBuf {
        let n = self.scratch.fetch_add(1, Ordering::Relaxed);
        self.base.join("scratch").join(format!("out-{n}"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Deterministic bytes with no short period (so misplaced 64 KiB chunks are caught).
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
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(backend: &str, root: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(common::example::binary("file_server"));
        cmd.arg("--root")
            .arg(root)
            .args(["--addr", "127.0.0.1:0", "--exit-after", "100"])
            .args(extra)
            .env("CORING_BACKEND", backend)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the file_server example");
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_reader = thread::spawn(move || {
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
            addr: "0.0.0.0:0".parse().unwrap(),
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => server.addr = addr.parse().expect("a socket address"),
            Err(_) => {
                let status =
                    common::example::wait_bounded(&mut server.child, Duration::from_secs(1));
                panic!(
                    "file_server ({backend}) printed no address within {START_TIMEOUT:?} \
                     (exit: {status:?}); stderr:\n{}",
                    server.stderr()
                );
            }
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
    }
}

/// One curl response: status, headers of the last response (after redirects), body.
#[derive(Debug)]
struct Resp {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn expect_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

/// Runs curl with fixed safety options first: no config file, no proxy, bounded time.
fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--noproxy", "*", "--max-time", CURL_MAX_TIME])
        .args(args);
    // curl bounds itself; this is the belt to its braces.
    common::example::run_bounded(cmd, Duration::from_secs(30))
}

/// `curl -sS -D - -o FILE [args] URL`: headers from stdout, body from the file.
fn fetch(fx: &Fixture, url: &str, args: &[&str]) -> Resp {
    let body_path = fx.scratch_file();
    let body_str = body_path.to_str().unwrap();
    let mut all = vec!["-D", "-", "-o", body_str];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(&all);
    assert!(
        out.status.success(),
        "curl {all:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // With -L there is one header block per response; the last one counts.
    let block = text
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or_else(|| panic!("no response head from curl: {text:?}"))
        .to_string();
    let (code, headers) = parse_head(&block);
    // curl creates the output file only once body bytes arrive.
    let body = std::fs::read(&body_path).unwrap_or_default();
    let _ = std::fs::remove_file(&body_path);
    Resp {
        code,
        headers,
        body,
    }
}

fn parse_head(block: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = block.split("\r\n");
    let status = lines.next().unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header {l:?}"));
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    (code, headers)
}

/// A raw HTTP connection for what curl will not send.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResp {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Raw {
    fn new(server: &Server) -> Raw {
        Raw {
            stream: server.connect(),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    /// Reads one more chunk into the buffer; false at EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("raw read (bounded by {IO_TIMEOUT:?}): {e}"),
        }
    }

    /// Reads one response; `head_only` for a response to HEAD (no body follows).
    fn response(&mut self, head_only: bool) -> RawResp {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(
                self.fill(),
                "connection closed before a full response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).expect("ASCII head");
        self.buf.drain(..end + 4);
        let (code, headers) = parse_head(&head);
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("numeric Content-Length"))
            .expect("every response has a Content-Length");
        let len = if head_only { 0 } else { len };
        while self.buf.len() < len {
            assert!(self.fill(), "connection closed inside a body");
        }
        let body = self.buf.drain(..len).collect();
        RawResp {
            code,
            headers,
            body,
        }
    }

    /// Whether the server closed the connection with nothing more sent.
    fn closed_cleanly(&mut self) -> bool {
        while self.fill() {}
        self.buf.is_empty()
    }
}

/// Sends `request` on a fresh connection and reads one response.
fn raw_once(server: &Server, request: &[u8]) -> (RawResp, Raw) {
    let mut raw = Raw::new(server);
    raw.send(request);
    let resp = raw.response(false);
    (resp, raw)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

fn get_small_file(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    let r = fetch(&fx, &server.url("/hello.txt"), &[]);
    assert_eq!(r.code, 200);
    assert_eq!(r.body, HELLO);
    assert_eq!(r.expect_header("Content-Length"), HELLO.len().to_string());
    assert_eq!(r.expect_header("Content-Type"), "text/plain; charset=utf-8");
    assert_eq!(r.expect_header("Accept-Ranges"), "bytes");
    assert!(r.expect_header("Date").ends_with(" GMT"));
    // An empty file is a 200 with an empty body.
    let r = fetch(&fx, &server.url("/empty.txt"), &[]);
    assert_eq!((r.code, r.body.len()), (200, 0));
    assert_eq!(r.expect_header("Content-Length"), "0");
    // The query string is not part of the path.
    let r = fetch(&fx, &server.url("/hello.txt?v=1&x=%2F"), &[]);
    assert_eq!((r.code, r.body.as_slice()), (200, HELLO));
}

fn get_large_file_exact_bytes(backend: &str) {
    // The raw requests below run without curl too.
    let with_curl = common::example::have_curl();
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    if with_curl {
        let r = fetch(&fx, &server.url("/big.bin"), &[]);
        assert_eq!(r.code, 200);
        assert_eq!(r.expect_header("Content-Length"), BIG_LEN.to_string());
        assert_eq!(r.expect_header("Content-Type"), "application/octet-stream");
        assert_eq!(r.body.len(), BIG_LEN);
        assert!(r.body == fx.big, "downloaded bytes differ from the file");
    }
    // Clients that hang up in the middle of a body do not disturb the server.
    for _ in 0..3 {
        let mut raw = Raw::new(&server);
        raw.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(raw.fill(), "no response bytes");
    }
    if with_curl {
        let r = fetch(&fx, &server.url("/big.bin"), &[]);
        assert!(r.code == 200 && r.body == fx.big);
    } else {
        let (r, _) = raw_once(&server, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(r.code == 200 && r.body == fx.big);
    }
}

/// Bodies from 0 bytes to 64 MiB, around the size up to which bodies are copied into the
/// head's send (16 KiB) and around page and pipe sizes, and ranges of the largest, are
/// byte-exact zero-copy (the default: `send_file` by `sendfile`), with `--splice` (by
/// linked splices on io_uring; the same as the default elsewhere) and with `--copy`.
fn body_sizes_and_ranges_both_paths(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let fx = Fixture::new();
    let sizes = [
        0usize,
        1,
        4095,
        16 * 1024,
        16 * 1024 + 1,
        65_537,
        262_144 + 4097,
        (1 << 20) + 1,
        64 << 20,
    ];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            // A different start per file, so one file's bytes never pass for another's.
            let data = pattern(n + i)[i..].to_vec();
            let name = format!("size-{n}.bin");
            std::fs::write(fx.root.join(&name), &data).unwrap();
            (name, data)
        })
        .collect();
    for extra in [&[][..], &["--copy"][..], &["--splice"][..]] {
        let server = Server::start(backend, &fx.root, extra);
        for (name, data) in &files {
            let r = fetch(&fx, &server.url(&format!("/{name}")), &[]);
            assert_eq!(r.code, 200, "{name} {extra:?}");
            assert_eq!(r.expect_header("Content-Length"), data.len().to_string());
            assert!(r.body == *data, "{name} {extra:?}: the bytes differ");
        }
        let (name, data) = files.last().unwrap();
        let url = server.url(&format!("/{name}"));
        let last = data.len() - 1;
        for (start, end) in [
            (1, last - 1),
            (4097, 8191),
            (16_385, 16_385 + 20_000),
            (33_554_431, last),
        ] {
            let range = format!("{start}-{end}");
            let r = fetch(&fx, &url, &["-r", &range]);
            assert_eq!(r.code, 206, "{range} {extra:?}");
            assert!(
                r.body == data[start..=end],
                "{range} {extra:?}: the bytes differ"
            );
        }
    }
}

fn content_types(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    let expected = [
        ("a.html", "text/html; charset=utf-8"),
        ("a.css", "text/css; charset=utf-8"),
        ("a.js", "text/javascript; charset=utf-8"),
        ("a.json", "application/json"),
        ("a.txt", "text/plain; charset=utf-8"),
        ("a.png", "image/png"),
        ("a.jpg", "image/jpeg"),
        ("a.gif", "image/gif"),
        ("a.svg", "image/svg+xml"),
        ("a.wasm", "application/wasm"),
        ("a.pdf", "application/pdf"),
        ("a.unknownext", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ];
    // One curl invocation, one line per URL (over one kept-alive connection).
    let mut args = vec!["-w".to_string(), "%{http_code} %{content_type}\\n".into()];
    for (name, _) in &expected {
        args.extend([
            "-o".into(),
            "/dev/null".into(),
            server.url(&format!("/{name}")),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stdout}");
    for ((name, ctype), line) in expected.iter().zip(lines) {
        assert_eq!(line, format!("200 {ctype}"), "for {name}");
    }
}

fn head_has_no_body(backend: &str) {
    // The raw requests below run without curl too.
    let with_curl = common::example::have_curl();
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    if with_curl {
        let r = fetch(&fx, &server.url("/big.bin"), &["-I"]);
        assert_eq!(r.code, 200);
        assert_eq!(r.expect_header("Content-Length"), BIG_LEN.to_string());
        assert_eq!(r.expect_header("Accept-Ranges"), "bytes");
        // With -I curl writes the head itself to the -o file; nothing else may be in it.
        assert!(r.body.starts_with(b"HTTP/1.1 200 OK\r\n") && r.body.ends_with(b"\r\n\r\n"));
        assert_eq!(r.body.windows(4).filter(|w| w == b"\r\n\r\n").count(), 1);
        // HEAD ignores Range (RFC 9110 §14.2: only GET has range semantics).
        let r = fetch(&fx, &server.url("/big.bin"), &["-I", "-r", "0-9"]);
        assert_eq!(r.code, 200);
    }
    // On the wire: nothing after the head, then the connection closes.
    let (resp, mut raw) = {
        let mut raw = Raw::new(&server);
        raw.send(b"HEAD /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        (raw.response(true), raw)
    };
    assert_eq!(resp.code, 200);
    assert_eq!(resp.header("Content-Length"), Some("15"));
    assert!(
        raw.closed_cleanly(),
        "bytes after a HEAD response: {:?}",
        raw.buf
    );
    // A HEAD of a missing file has no body either.
    let mut raw = Raw::new(&server);
    raw.send(
        b"HEAD /missing HTTP/1.1\r\nHost: t\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(raw.response(true).code, 404);
    let next = raw.response(false);
    assert_eq!((next.code, next.body.as_slice()), (200, HELLO));
    // Nor a HEAD whose head cannot be parsed (no Host; an unsupported version): the error
    // head, then the connection closes (it used to carry the error text).
    for bad in [
        &b"HEAD /hello.txt HTTP/1.1\r\n\r\n"[..],
        b"HEAD /hello.txt HTTP/2.0\r\nHost: t\r\n\r\n",
    ] {
        let mut raw = Raw::new(&server);
        raw.send(bad);
        let resp = raw.response(true);
        assert!(resp.code == 400 || resp.code == 505, "{}", resp.code);
        assert!(
            raw.closed_cleanly(),
            "a body after a HEAD error response: {:?}",
            String::from_utf8_lossy(&raw.buf)
        );
    }
}

fn range_requests(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    let url = server.url("/big.bin");
    let total = BIG_LEN as u64;
    let partial = |args: &[&str], start: u64, end: u64| {
        let r = fetch(&fx, &url, args);
        assert_eq!(r.code, 206, "{args:?}");
        assert_eq!(
            r.expect_header("Content-Range"),
            format!("bytes {start}-{end}/{total}"),
            "{args:?}"
        );
        assert_eq!(
            r.expect_header("Content-Length"),
            (end - start + 1).to_string()
        );
        assert_eq!(r.expect_header("Content-Type"), "application/octet-stream");
        assert!(
            r.body == fx.big[start as usize..=end as usize],
            "wrong bytes for {args:?}"
        );
    };
    partial(&["-r", "0-99"], 0, 99);
    partial(&["-r", "65530-65545"], 65530, 65545); // across a 64 KiB chunk edge
    partial(&["-r", "100000-2999999"], 100_000, 2_999_999); // many chunks, odd offset
    partial(&["-r", "3145000-"], 3_145_000, total - 1);
    partial(&["-r", "-100"], total - 100, total - 1);
    partial(&["-r", "0-"], 0, total - 1);
    partial(
        &["-H", "Range: bytes=10-99999999999999999999"],
        10,
        total - 1,
    );
    partial(&["-H", "Range: bytes=-99999999"], 0, total - 1);
    partial(&["-H", "Range: BYTES = 5 - 6"], 5, 6);

    let unsatisfiable = |url: &str, args: &[&str], len: usize| {
        let r = fetch(&fx, url, args);
        assert_eq!(r.code, 416, "{args:?}");
        assert_eq!(r.expect_header("Content-Range"), format!("bytes */{len}"));
    };
    unsatisfiable(&url, &["-r", "3145728-"], BIG_LEN);
    unsatisfiable(&url, &["-r", "4000000-4000010"], BIG_LEN);
    unsatisfiable(&url, &["-H", "Range: bytes=-0"], BIG_LEN);
    unsatisfiable(&server.url("/empty.txt"), &["-r", "0-0"], 0);
    unsatisfiable(&server.url("/hello.txt"), &["-r", "15-"], HELLO.len());

    // Several ranges are answered with the whole file (documented in the example);
    // invalid Range values are ignored, as RFC 9110 requires.
    for args in [
        ["-r", "0-1,5-6"],
        ["-H", "Range: bytes=abc"],
        ["-H", "Range: bytes=5-2"],
        ["-H", "Range: items=0-5"],
    ] {
        let r = fetch(&fx, &url, &args);
        assert_eq!(r.code, 200, "{args:?}");
        assert_eq!(r.header("Content-Range"), None);
        assert_eq!(r.expect_header("Content-Length"), BIG_LEN.to_string());
        assert!(r.body == fx.big, "{args:?}: whole body expected");
    }
    // If-Range without validators from this server: the whole file.
    let r = fetch(&fx, &url, &["-r", "0-9", "-H", "If-Range: \"x\""]);
    assert_eq!((r.code, r.body.len()), (200, BIG_LEN));
}

fn not_found(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    // A FIFO is never opened (that could block): 404. Made with mkfifo(1) if present.
    let fifo = Command::new("mkfifo")
        .arg(fx.root.join("fifo"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if fifo {
        let r = fetch(&fx, &server.url("/fifo"), &[]);
        assert_eq!(r.code, 404);
    }
    for path in [
        "/missing.txt",
        "/sub/missing.html",
        "/missing/dir/",
        "/hello.txt/",
        "/hello.txt/x",
        "/emptydir/",
        "/",
    ] {
        let r = fetch(&fx, &server.url(path), &[]);
        assert_eq!(r.code, 404, "{path}");
        assert_eq!(r.body, b"404 Not Found\n", "{path}");
        assert_eq!(r.expect_header("Content-Length"), "14");
    }
}

fn method_not_allowed(backend: &str) {
    // The raw requests below run without curl too.
    let with_curl = common::example::have_curl();
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    for args in [
        vec!["-X", "DELETE"],
        vec!["-X", "OPTIONS"],
        vec!["-X", "PUT"],
        vec!["--data", "a=b"],
    ] {
        if !with_curl {
            break;
        }
        let r = fetch(&fx, &server.url("/hello.txt"), &args);
        assert_eq!(r.code, 405, "{args:?}");
        assert_eq!(r.expect_header("Allow"), "GET, HEAD");
    }
    // A request with a body is answered, then the connection closes (the body is unread).
    let (resp, mut raw) = raw_once(
        &server,
        b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(resp.code, 405);
    assert_eq!(resp.header("Connection"), Some("close"));
    assert!(raw.closed_cleanly());
}

fn malformed_requests(backend: &str) {
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    let cases: &[(&[u8], u16)] = &[
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /hello.txt\r\n\r\n", 400),
        (b"GET  /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /hello.txt HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400),
        (b"GET /hello.txt FOO/1.1\r\nHost: t\r\n\r\n", 400),
        (
            b"GET /hello.txt HTTP/1.1\r\nNoColonHere\r\nHost: t\r\n\r\n",
            400,
        ),
        (
            b"GET /hello.txt HTTP/1.1\r\nBad Name: x\r\nHost: t\r\n\r\n",
            400,
        ),
        (
            b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n",
            400,
        ),
        (b"GET /hello.txt HTTP/1.1\r\n\r\n", 400), // HTTP/1.1 needs Host
        (
            b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        (
            b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n",
            400,
        ),
        (b"GET /hel\x01lo HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /hel%zzlo.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /hello.txt%00 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (
            b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
            400,
        ),
        (b"GET /hello.txt HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    ];
    for (request, code) in cases {
        let (resp, mut raw) = raw_once(&server, request);
        let shown = String::from_utf8_lossy(request);
        assert_eq!(resp.code, *code, "for {shown:?}");
        assert_eq!(resp.header("Connection"), Some("close"), "for {shown:?}");
        assert!(raw.closed_cleanly(), "for {shown:?}");
    }
    // Tolerated: empty lines before the request line, bare-LF line ends, HTTP/1.0
    // without Host, absolute-form targets.
    for request in [
        &b"\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET /hello.txt HTTP/1.1\nHost: t\n\n",
        b"GET /hello.txt HTTP/1.0\r\n\r\n",
        b"GET http://example.com/hello.txt HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ] {
        let (resp, _) = raw_once(&server, request);
        let shown = String::from_utf8_lossy(request);
        assert_eq!((resp.code, resp.body.as_slice()), (200, HELLO), "{shown:?}");
    }
}

fn oversized_request_head(backend: &str) {
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    // Headers over the 16 KiB bound: 431, then close.
    let mut request = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 20_000));
    request.extend_from_slice(b"\r\n\r\n");
    let (resp, mut raw) = raw_once(&server, &request);
    assert_eq!(resp.code, 431);
    assert_eq!(resp.header("Connection"), Some("close"));
    assert!(raw.closed_cleanly());
    // A request line over the bound: 414.
    let mut request = b"GET /".to_vec();
    request.extend(std::iter::repeat_n(b'a', 20_000));
    request.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
    let (resp, mut raw) = raw_once(&server, &request);
    assert_eq!(resp.code, 414);
    assert!(raw.closed_cleanly());
    // A client that keeps sending header lines is cut off too (no unbounded buffering):
    // the server answers once 16 KiB are in, while the client could send forever.
    let mut raw = Raw::new(&server);
    raw.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n");
    let line = b"X-Filler: 0123456789012345678901234567890123456789\r\n";
    let mut sent = 0;
    while sent < 64 * 1024 {
        if raw.stream.write_all(line).is_err() {
            break; // the server already closed
        }
        sent += line.len();
    }
    let resp = raw.response(false);
    assert_eq!(resp.code, 431);
    // The server still works.
    let (resp, _) = raw_once(&server, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.code, 200);
}

fn dot_dot_escape_refused(backend: &str) {
    // The raw requests below run without curl too.
    let with_curl = common::example::have_curl();
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    for path in [
        "/../outside/secret.txt",
        "/sub/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/sub/%2E%2E/%2e%2e/outside/secret.txt",
        "/..%2foutside%2fsecret.txt",
        "/./../outside/secret.txt",
        "/..",
    ] {
        if !with_curl {
            break;
        }
        let r = fetch(&fx, &server.url(path), &["--path-as-is"]);
        assert!(r.code == 403 || r.code == 404, "{path}: {}", r.code);
        assert!(!contains(&r.body, SECRET), "{path} leaked the secret");
    }
    // The same through a raw request (no client-side normalisation at all).
    let (resp, _) = raw_once(
        &server,
        b"GET /../../../../../../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(resp.code, 403);
    // Backslashes (a separator on Windows) and names Windows would alias to `..` (trailing
    // dots or spaces) do not climb out either.
    for path in [
        "/..%5coutside%5csecret.txt",
        "/sub%5c..%5c..%5coutside%5csecret.txt",
        "/.../outside/secret.txt",
        "/..%20/outside/secret.txt",
        "/sub/..%2e/outside/secret.txt",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let (resp, _) = raw_once(&server, request.as_bytes());
        assert!(
            resp.code == 403 || resp.code == 404,
            "{path}: {}",
            resp.code
        );
        assert!(!contains(&resp.body, SECRET), "{path} leaked the secret");
    }
    // `..` that stays inside the root is fine.
    for path in [
        "/sub/../hello.txt",
        "/./hello.txt",
        "/sub/./../sub/../hello.txt",
    ] {
        if !with_curl {
            break;
        }
        let r = fetch(&fx, &server.url(path), &["--path-as-is"]);
        assert_eq!((r.code, r.body.as_slice()), (200, HELLO), "{path}");
    }
    // On Windows a backslash separates, as `/` does.
    #[cfg(windows)]
    {
        let (resp, _) = raw_once(
            &server,
            b"GET /sub%5cindex.html HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        assert_eq!((resp.code, resp.body.as_slice()), (200, INDEX));
    }
}

#[cfg(unix)]
fn symlinks_confined_to_root(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    for path in [
        "/escape_link",
        "/escape_dir/secret.txt",
        "/rel_escape",
        "/escape_dir/",
    ] {
        let r = fetch(&fx, &server.url(path), &[]);
        assert_eq!(r.code, 403, "{path}");
        assert!(!contains(&r.body, SECRET), "{path} leaked the secret");
    }
    // Links that resolve inside the root are followed.
    for path in ["/inside_link", "/sub/up_link", "/sub_link/../hello.txt"] {
        let r = fetch(&fx, &server.url(path), &["--path-as-is"]);
        assert_eq!((r.code, r.body.as_slice()), (200, HELLO), "{path}");
    }
    // The type follows the file the link resolves to.
    let r = fetch(&fx, &server.url("/inside_link"), &[]);
    assert_eq!(r.expect_header("Content-Type"), "text/plain; charset=utf-8");
    let r = fetch(&fx, &server.url("/sub_link/index.html"), &[]);
    assert_eq!((r.code, r.body.as_slice()), (200, INDEX));
}

fn directory_index_and_redirect(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    let r = fetch(&fx, &server.url("/sub/"), &[]);
    assert_eq!((r.code, r.body.as_slice()), (200, INDEX));
    assert_eq!(r.expect_header("Content-Type"), "text/html; charset=utf-8");
    let r = fetch(&fx, &server.url("/sub"), &[]);
    assert_eq!(r.code, 301);
    assert_eq!(r.expect_header("Location"), "/sub/");
    let r = fetch(&fx, &server.url("/sub"), &["-L"]);
    assert_eq!((r.code, r.body.as_slice()), (200, INDEX));
    let r = fetch(&fx, &server.url("/sub/index.html"), &[]);
    assert_eq!((r.code, r.body.as_slice()), (200, INDEX));
}

fn name_with_space(backend: &str) {
    // The raw requests below run without curl too.
    let with_curl = common::example::have_curl();
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    if with_curl {
        let r = fetch(&fx, &server.url("/file%20with%20space.txt"), &[]);
        assert_eq!((r.code, r.body.as_slice()), (200, SPACED));
        assert_eq!(r.expect_header("Content-Type"), "text/plain; charset=utf-8");
    } else {
        let (r, _) = raw_once(
            &server,
            b"GET /file%20with%20space.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        assert_eq!((r.code, r.body.as_slice()), (200, SPACED));
    }
    // A raw space in the target is not HTTP.
    let (resp, _) = raw_once(
        &server,
        b"GET /file with space.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(resp.code, 400);
}

fn keep_alive_reuses_connection(backend: &str) {
    // The raw requests below run without curl too.
    let with_curl = common::example::have_curl();
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    if with_curl {
        let (a, b) = (fx.scratch_file(), fx.scratch_file());
        let out = curl(&[
            "-v",
            "-o",
            a.to_str().unwrap(),
            &server.url("/hello.txt"),
            "-o",
            b.to_str().unwrap(),
            &server.url("/big.bin"),
        ]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        let reused = log.contains("Re-using existing connection")
            || (log.matches("Connected to").count() == 1 && log.contains("left intact"));
        assert!(reused, "curl did not reuse the connection:\n{log}");
        assert_eq!(log.matches("Connected to").count(), 1, "{log}");
        assert_eq!(std::fs::read(&a).unwrap(), HELLO);
        assert!(std::fs::read(&b).unwrap() == fx.big);
    }
    // Many requests on one raw connection.
    let mut raw = Raw::new(&server);
    for _ in 0..20 {
        raw.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = raw.response(false);
        assert_eq!((r.code, r.body.as_slice()), (200, HELLO));
        assert_eq!(r.header("Connection"), None);
    }
}

fn connection_close_and_http10(backend: &str) {
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    // HTTP/1.1 with `Connection: close`: the response says so, then the server closes.
    let (resp, mut raw) = raw_once(
        &server,
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((resp.code, resp.body.as_slice()), (200, HELLO));
    assert_eq!(resp.header("Connection"), Some("close"));
    assert!(raw.closed_cleanly());
    // HTTP/1.0 closes by default.
    let (resp, mut raw) = raw_once(&server, b"GET /hello.txt HTTP/1.0\r\n\r\n");
    assert_eq!((resp.code, resp.body.as_slice()), (200, HELLO));
    assert!(raw.closed_cleanly());
    // HTTP/1.0 with keep-alive stays open for another request.
    let (resp, mut raw) = raw_once(
        &server,
        b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(resp.code, 200);
    assert_eq!(resp.header("Connection"), Some("keep-alive"));
    raw.send(b"GET /sub/ HTTP/1.0\r\n\r\n");
    let resp = raw.response(false);
    assert_eq!((resp.code, resp.body.as_slice()), (200, INDEX));
    assert!(raw.closed_cleanly());
    // With curl too, when curl is there.
    if common::example::have_curl() {
        let r = fetch(&fx, &server.url("/hello.txt"), &["-H", "Connection: close"]);
        assert_eq!(r.expect_header("Connection"), "close");
        let r = fetch(&fx, &server.url("/hello.txt"), &["--http1.0"]);
        assert_eq!((r.code, r.body.as_slice()), (200, HELLO));
    }
}

fn pipelined_requests(backend: &str) {
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    // Four requests in one write; the responses come back in order.
    let mut raw = Raw::new(&server);
    raw.send(
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n\
          GET /sub/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let r = raw.response(false);
    assert_eq!((r.code, r.body.as_slice()), (200, HELLO));
    let r = raw.response(true);
    assert_eq!(r.code, 200);
    let r = raw.response(false);
    assert_eq!((r.code, r.body.as_slice()), (206, &fx.big[..10]));
    let r = raw.response(false);
    assert_eq!((r.code, r.body.as_slice()), (200, INDEX));
    assert!(raw.closed_cleanly());
    // A big response followed by a small one on the same connection.
    let mut raw = Raw::new(&server);
    raw.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = raw.response(false);
    assert!(r.code == 200 && r.body == fx.big);
    let r = raw.response(false);
    assert_eq!((r.code, r.body.as_slice()), (200, HELLO));
    // An error in the middle of a pipeline answers it and closes after it.
    let mut raw = Raw::new(&server);
    raw.send(
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nBROKEN\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(raw.response(false).code, 200);
    assert_eq!(raw.response(false).code, 400);
    assert!(raw.closed_cleanly());
}

fn request_split_across_writes(backend: &str) {
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &[]);
    let mut raw = Raw::new(&server);
    // Byte by byte (TCP_NODELAY on the client, so most go out as separate segments).
    for b in b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n" {
        raw.send(&[*b]);
    }
    let r = raw.response(false);
    assert_eq!((r.code, r.body.as_slice()), (200, HELLO));
    // Split right inside the CRLF CRLF.
    raw.send(b"GET /sub/ HTTP/1.1\r\nHost: t\r\n\r");
    thread::sleep(Duration::from_millis(50));
    raw.send(b"\n");
    let r = raw.response(false);
    assert_eq!((r.code, r.body.as_slice()), (200, INDEX));
}

fn max_requests_exits_cleanly(backend: &str) {
    if !common::example::have_curl() {
        return;
    }
    let fx = Fixture::new();
    let mut server = Server::start(backend, &fx.root, &["--max-requests", "3"]);
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\\n",
        &server.url("/hello.txt"),
        "-o",
        "/dev/null",
        &server.url("/missing"),
        "-o",
        "/dev/null",
        &server.url("/big.bin"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200\n404\n200\n");
    let status = common::example::wait_bounded(&mut server.child, Duration::from_secs(10))
        .expect("the server did not exit after --max-requests 3");
    assert!(status.success(), "exit status {status}");
    if let Some(r) = server.stderr_reader.take() {
        r.join().unwrap();
    }
    // Nothing is logged per request without --verbose: only the startup line.
    let log = server.stderr();
    assert_eq!(log.lines().count(), 1, "unexpected log lines:\n{log}");
    assert!(!log.contains("hello.txt"), "{log}");
}

fn multi_core_pool(backend: &str) {
    // The raw requests below run without curl too.
    let with_curl = common::example::have_curl();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipping: --cores 2 needs two CPUs, this machine allows {cpus}");
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(backend, &fx.root, &["--cores", "2"]);
    assert!(server.stderr().contains("2 core(s)") || wait_for_log(&server, "2 core(s)"));
    // Separate connections, so the kernel spreads them over both listeners.
    if with_curl {
        for _ in 0..8 {
            let r = fetch(&fx, &server.url("/hello.txt"), &[]);
            assert_eq!((r.code, r.body.as_slice()), (200, HELLO));
        }
        let r = fetch(&fx, &server.url("/big.bin"), &["-r", "1000-200000"]);
        assert!(r.code == 206 && r.body == fx.big[1000..=200_000]);
    }
    for _ in 0..4 {
        let (resp, _) = raw_once(&server, b"GET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!((resp.code, resp.body.as_slice()), (200, INDEX));
    }
}

/// Waits (bounded) for a line to show up on the server's stderr.
fn wait_for_log(server: &Server, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if server.stderr().contains(needle) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
