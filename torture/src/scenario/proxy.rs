//! The project's servers behind the fault proxy ([`crate::proxy`]): `examples/file_server`
//! and `examples/echo_server`, each started as a child process on the backend under test
//! (`CORING_BACKEND`). Client threads talk to them through the proxy, which splits,
//! delays, stalls and resets connections. Checks:
//!
//! - every connection the proxy did not reset gets byte-exact answers (HTTP bodies,
//!   ranges, pipelined requests; echoed payloads);
//! - on a connection the proxy reset, what arrived before the reset is an exact prefix;
//! - the servers keep serving (direct requests after the storm succeed; the process is
//!   alive and printed no panic);
//! - the servers' descriptors come back to their idle count (Linux: `/proc/PID/fd`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::Ctx;
use crate::child::KillOnDrop;
use crate::proxy::{Faults, Proxy};
use crate::rng::Rng;
use crate::sys;
use crate::watchdog::stage;

const IO_TIMEOUT: Duration = Duration::from_secs(15);

pub fn run(ctx: &mut Ctx) {
    let bins = match examples(&["file_server", "echo_server"]) {
        Ok(b) => b,
        Err(e) => {
            ctx.fail("examples", None, e);
            return;
        }
    };
    let faults = Faults {
        reset: 0.25,
        stall: 0.3,
        stall_max: Duration::from_millis(300),
        delay: 0.05,
        delay_max: Duration::from_millis(3),
        reset_within: 64 * 1024,
    };
    stage("proxy: file_server behind the fault proxy");
    let a = file_server(ctx, &bins[0], faults);
    stage("proxy: echo_server behind the fault proxy");
    let b = echo_server(ctx, &bins[1], faults);
    ctx.figure("connections_reset", a + b);
}

/// Finds (building them if needed) the example binaries next to this one:
/// `<target>/[<triple>/]<profile>/examples/<name>`. Under `cargo run` (`$CARGO` set) they
/// are rebuilt for this profile first, so a stale binary is never tested.
fn examples(names: &[&str]) -> Result<Vec<PathBuf>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .ok_or("the binary has no directory")?
        .to_path_buf();
    let bins: Vec<PathBuf> = names
        .iter()
        .map(|n| profile_dir.join("examples").join(n))
        .collect();
    let cargo = std::env::var("CARGO").ok();
    if cargo.is_some() || bins.iter().any(|b| !b.is_file()) {
        build_examples(cargo.as_deref().unwrap_or("cargo"), &profile_dir, names)?;
    }
    for b in &bins {
        if !b.is_file() {
            return Err(format!(
                "{} does not exist; build it with `cargo build --release --examples` (same \
                 profile as coring-torture)",
                b.display()
            ));
        }
    }
    Ok(bins)
}

fn build_examples(cargo: &str, profile_dir: &Path, names: &[&str]) -> Result<(), String> {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(p) => p.to_string(),
        None => return Err("no profile directory".into()),
    };
    let above = profile_dir.parent().ok_or("no target directory")?;
    // The target directory's root holds CACHEDIR.TAG; with --target a triple directory
    // sits between it and the profile directory.
    let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
        (above.to_path_buf(), None)
    } else {
        let triple = above.file_name().and_then(|n| n.to_str()).map(String::from);
        (
            above.parent().ok_or("no target directory")?.to_path_buf(),
            triple,
        )
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace")?
        .join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "coring", "--profile", &profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    for n in names {
        cmd.args(["--example", n]);
    }
    if let Some(t) = triple {
        cmd.args(["--target", &t]);
    }
    let fin = crate::child::run_bounded(cmd, Duration::from_secs(900), false)
        .map_err(|e| format!("running {cargo}: {e}"))?;
    if !fin.success() {
        return Err(format!(
            "building the examples failed ({}): {}",
            fin.how(),
            fin.stderr_tail(10)
        ));
    }
    Ok(())
}

/// A server child process.
struct Server {
    child: KillOnDrop,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(bin: &Path, args: &[&str], backend: &str) -> Result<Server, String> {
        let mut child = Command::new(bin)
            .args(args)
            .env("CORING_BACKEND", backend)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let child = KillOnDrop(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let e2 = err.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut e = e2.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let a = rest.trim_start_matches("http://");
                        let a = a.split_whitespace().next().unwrap_or("");
                        let addr = a
                            .parse()
                            .map_err(|_| format!("cannot parse the address in {line:?}"))?;
                        return Ok(Server {
                            child,
                            addr,
                            stderr: err,
                        });
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "{} did not print its address within 20 s; stderr: {}",
                        bin.display(),
                        err.lock().unwrap()
                    ))
                }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn fds(&self) -> Option<usize> {
        sys::fd_count_of(self.pid())
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }
}

/// What the clients of one server saw.
#[derive(Debug, Default)]
struct Seen {
    connections: u64,
    survived: u64,
    reset_by_proxy: u64,
    answers: u64,
    bytes_verified: u64,
    /// Connections the proxy did not reset that failed anyway.
    survivor_failures: Vec<String>,
    /// Failed connections that ran longer than the servers' 30 s timeouts allow.
    server_timeouts: u64,
    /// Wrong bytes (on any connection).
    mismatches: Vec<String>,
}

impl Seen {
    fn merge(&mut self, o: Seen) {
        self.connections += o.connections;
        self.survived += o.survived;
        self.reset_by_proxy += o.reset_by_proxy;
        self.answers += o.answers;
        self.bytes_verified += o.bytes_verified;
        self.survivor_failures.extend(o.survivor_failures);
        self.server_timeouts += o.server_timeouts;
        self.mismatches.extend(o.mismatches);
    }
}

/// The outcome of one client connection.
struct Conn {
    port: u16,
    /// When the connection was opened (a long one may meet the servers' 30 s timeouts).
    start: Instant,
    error: Option<String>,
    mismatch: Option<String>,
    answers: u64,
    bytes: u64,
}

/// Files the file server serves: (name, contents).
fn site(root: &Path, rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        ("small.txt".to_string(), rng.bytes(200)),
        ("medium.bin".to_string(), rng.bytes(48 * 1024)),
        ("large.bin".to_string(), rng.bytes(1536 * 1024)),
        ("sub/index.html".to_string(), b"<h1>index</h1>\n".to_vec()),
    ];
    std::fs::create_dir_all(root.join("sub")).expect("site dir");
    for (n, d) in &files {
        std::fs::write(root.join(n), d).expect("site file");
    }
    files
}

/// Reads one HTTP response from `s` (bytes already read but not consumed in `pending`):
/// `(status, body)`. On an error, the body received so far is in the error's second part.
fn read_response(
    s: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> Result<(u16, Vec<u8>), (String, Vec<u8>)> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if pending.len() > 64 * 1024 {
            return Err(("response head over 64 KiB".into(), Vec::new()));
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(("end of file before a response head".into(), Vec::new())),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) => return Err((format!("reading a response head: {e}"), Vec::new())),
        }
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| (format!("bad status line in {head:?}"), Vec::new()))?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .ok_or_else(|| (format!("no Content-Length in {head:?}"), Vec::new()))?;
    pending.drain(..head_end);
    while pending.len() < len {
        match s.read(&mut chunk) {
            Ok(0) => return Err(("end of file inside a body".into(), std::mem::take(pending))),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) => return Err((format!("reading a body: {e}"), std::mem::take(pending))),
        }
    }
    let body: Vec<u8> = pending.drain(..len).collect();
    Ok((status, body))
}

/// One keep-alive connection to the file server making `reqs` requests (some pipelined,
/// some with a byte range), verifying every body.
fn http_conn(addr: SocketAddr, files: &[(String, Vec<u8>)], rng: &mut Rng, reqs: usize) -> Conn {
    let mut c = Conn {
        port: 0,
        start: Instant::now(),
        error: None,
        mismatch: None,
        answers: 0,
        bytes: 0,
    };
    let mut s = match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            c.error = Some(format!("connect: {e}"));
            return c;
        }
    };
    c.port = s.local_addr().map_or(0, |a| a.port());
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let mut pending = Vec::new();
    let mut i = 0;
    while i < reqs {
        // One request, or two pipelined.
        let batch = if i + 1 < reqs && rng.chance(0.3) {
            2
        } else {
            1
        };
        let mut wanted = Vec::new();
        let mut out = Vec::new();
        for k in 0..batch {
            let (name, data) = &files[rng.index(files.len())];
            let last = i + k + 1 == reqs;
            let range = (data.len() > 1 && rng.chance(0.3)).then(|| {
                let a = rng.below(data.len() as u64 - 1) as usize;
                let b = a + rng.below((data.len() - a) as u64) as usize;
                (a, b)
            });
            let path = if name == "sub/index.html" {
                "/sub/"
            } else {
                name.as_str()
            };
            let path = path.trim_start_matches('/');
            out.extend_from_slice(format!("GET /{path} HTTP/1.1\r\nHost: torture\r\n").as_bytes());
            if let Some((a, b)) = range {
                out.extend_from_slice(format!("Range: bytes={a}-{b}\r\n").as_bytes());
            }
            if last {
                out.extend_from_slice(b"Connection: close\r\n");
            }
            out.extend_from_slice(b"\r\n");
            let (status, body) = match range {
                Some((a, b)) => (206, data[a..=b].to_vec()),
                None => (200, data.clone()),
            };
            wanted.push((name.clone(), range, status, body));
        }
        if let Err(e) = s.write_all(&out) {
            c.error = Some(format!("writing a request: {e}"));
            return c;
        }
        for (name, range, status, body) in wanted {
            match read_response(&mut s, &mut pending) {
                Ok((st, got)) => {
                    if st != status || got != body {
                        c.mismatch = Some(format!(
                            "GET {name} {range:?}: status {st} with {} bytes, wanted {status} with {} \
                             (equal: {})",
                            got.len(),
                            body.len(),
                            got == body
                        ));
                        return c;
                    }
                    c.answers += 1;
                    c.bytes += got.len() as u64;
                }
                Err((e, partial)) => {
                    if !body.starts_with(&partial) {
                        c.mismatch = Some(format!(
                            "GET {name} {range:?}: the {} body bytes received before the \
                             connection failed are not a prefix of the file",
                            partial.len()
                        ));
                    }
                    c.error = Some(e);
                    return c;
                }
            }
        }
        i += batch;
    }
    c
}

/// One connection to the echo server: `rounds` payloads written and read back.
fn echo_conn(addr: SocketAddr, rng: &mut Rng, rounds: usize) -> Conn {
    let mut c = Conn {
        port: 0,
        start: Instant::now(),
        error: None,
        mismatch: None,
        answers: 0,
        bytes: 0,
    };
    let mut s = match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            c.error = Some(format!("connect: {e}"));
            return c;
        }
    };
    c.port = s.local_addr().map_or(0, |a| a.port());
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    for _ in 0..rounds {
        let len = rng.range(1, 32 * 1024) as usize;
        let data = rng.bytes(len);
        if let Err(e) = s.write_all(&data) {
            c.error = Some(format!("write: {e}"));
            return c;
        }
        let mut back = Vec::with_capacity(len);
        let mut chunk = [0u8; 16 * 1024];
        while back.len() < len {
            let want = (len - back.len()).min(chunk.len());
            match s.read(&mut chunk[..want]) {
                Ok(0) => {
                    c.error = Some("end of file before the echo".into());
                    break;
                }
                Ok(n) => back.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    c.error = Some(format!("read: {e}"));
                    break;
                }
            }
        }
        if !data.starts_with(&back) {
            c.mismatch = Some(format!("an echo of {len} bytes came back different"));
            return c;
        }
        if c.error.is_some() {
            return c;
        }
        c.answers += 1;
        c.bytes += len as u64;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    c
}

/// Settles one connection's outcome against what the proxy did to it.
fn settle(proxy: &Proxy, c: Conn, seen: &mut Seen) {
    seen.connections += 1;
    seen.answers += c.answers;
    seen.bytes_verified += c.bytes;
    if let Some(m) = c.mismatch {
        seen.mismatches.push(m);
    }
    let Some(err) = c.error else {
        seen.survived += 1;
        return;
    };
    let long = c.start.elapsed() >= Duration::from_secs(25);
    match proxy.outcome(c.port, Duration::from_secs(20)) {
        Some(true) => seen.reset_by_proxy += 1,
        // The servers close a connection that takes over 30 s to send a request head or
        // to take one chunk of a response: documented, not a fault.
        Some(false) if long => seen.server_timeouts += 1,
        other => seen.survivor_failures.push(format!(
            "a connection the proxy did not reset failed ({err}; proxy: {})",
            match other {
                Some(_) => "forwarded it cleanly",
                None => "still forwarding it 20 s later",
            }
        )),
    }
}

/// Runs `threads` client threads of `conns` connections each through the proxy.
fn clients(
    proxy: &Arc<Proxy>,
    threads: usize,
    conns: usize,
    seed: u64,
    one: impl Fn(SocketAddr, &mut Rng) -> Conn + Send + Sync + 'static,
) -> Seen {
    let one = Arc::new(one);
    let mut rng = Rng::new(seed);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (proxy, one, mut r) = (proxy.clone(), one.clone(), rng.fork());
            std::thread::spawn(move || {
                let mut seen = Seen::default();
                for _ in 0..conns {
                    let c = one(proxy.addr, &mut r);
                    settle(&proxy, c, &mut seen);
                }
                seen
            })
        })
        .collect();
    let mut seen = Seen::default();
    for h in handles {
        match h.join() {
            Ok(s) => seen.merge(s),
            Err(_) => seen
                .survivor_failures
                .push("a client thread panicked".into()),
        }
    }
    seen
}

/// Waits until the server's descriptors are back to `base` (or `bound` passes).
fn fds_back(server: &Server, base: usize, bound: Duration) -> Option<usize> {
    let end = Instant::now() + bound;
    loop {
        let now = server.fds()?;
        if now <= base || Instant::now() >= end {
            return Some(now);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server's descriptor count once it is idle: the same in two readings 300 ms apart
/// (at most 5 s of waiting), after the warm-up's connections closed.
fn idle_fds(server: &Server) -> Option<usize> {
    let end = Instant::now() + Duration::from_secs(5);
    let mut last = server.fds()?;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = server.fds()?;
        if now == last || Instant::now() >= end {
            return Some(now.min(last));
        }
        last = now;
    }
}

/// The checks every server gets after its storm.
fn after_storm(
    ctx: &mut Ctx,
    what: &str,
    server: &mut Server,
    proxy: &Proxy,
    seen: &Seen,
    base_fds: Option<usize>,
    direct: impl Fn() -> Result<(), String>,
) {
    let s = &proxy.stats;
    use std::sync::atomic::Ordering::Relaxed;
    ctx.figure(
        &format!("{what}.proxy"),
        format!(
            "connections={} resets={} stalls={} delays={} segments={} bytes={}",
            s.connections.load(Relaxed),
            s.resets.load(Relaxed),
            s.stalls.load(Relaxed),
            s.delays.load(Relaxed),
            s.segments.load(Relaxed),
            s.bytes.load(Relaxed)
        ),
    );
    ctx.figure(
        &format!("{what}.clients"),
        format!(
            "connections={} survived={} reset={} timed_out={} answers={} bytes_verified={}",
            seen.connections,
            seen.survived,
            seen.reset_by_proxy,
            seen.server_timeouts,
            seen.answers,
            seen.bytes_verified
        ),
    );
    ctx.check(
        &format!("{what}-survivors-exact"),
        None,
        seen.survivor_failures.is_empty(),
        || {
            format!(
                "{} connections failed without a reset from the proxy: {}",
                seen.survivor_failures.len(),
                seen.survivor_failures
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    );
    ctx.check(
        &format!("{what}-bytes-exact"),
        None,
        seen.mismatches.is_empty(),
        || {
            seen.mismatches
                .iter()
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    let served = direct();
    ctx.check(
        &format!("{what}-keeps-serving"),
        None,
        served.is_ok(),
        || {
            format!(
                "direct requests after the storm: {}",
                served.clone().unwrap_err()
            )
        },
    );
    let alive = server.alive();
    let stderr = server.stderr.lock().unwrap().clone();
    ctx.check(
        &format!("{what}-alive"),
        None,
        alive && !stderr.contains("panicked"),
        || {
            format!(
                "the server process is {}; stderr: {}",
                if alive { "alive" } else { "gone" },
                stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            )
        },
    );
    if let Some(base) = base_fds {
        let after = fds_back(server, base, Duration::from_secs(15));
        ctx.figure(
            &format!("{what}.server_fds"),
            format!("idle={base} after={after:?}"),
        );
        ctx.check(&format!("{what}-fds"), None, after.is_some_and(|a| a <= base), || {
            format!("the server holds {after:?} descriptors 15 s after every connection ended, {base} when idle before")
        });
    }
}

/// Returns the connections the proxy reset.
fn file_server(ctx: &mut Ctx, bin: &Path, faults: Faults) -> u64 {
    let dir = sys::TempDir::new("proxy-site").expect("temp dir");
    let files = Arc::new(site(&dir.0, &mut ctx.rng));
    let root = dir.0.display().to_string();
    let mut server = match Server::start(
        bin,
        &["--root", &root, "--addr", "127.0.0.1:0", "--cores", "2"],
        &ctx.backend.to_string(),
    ) {
        Ok(s) => s,
        Err(e) => {
            ctx.fail("file-server-start", None, e);
            return 0;
        }
    };
    let addr = server.addr;
    let direct = {
        let files = files.clone();
        move || -> Result<(), String> {
            let mut r = Rng::new(5);
            for _ in 0..10 {
                let c = http_conn(addr, &files, &mut r, 3);
                if let Some(e) = c.error.or(c.mismatch) {
                    return Err(e);
                }
            }
            Ok(())
        }
    };
    // Warm up (lazily created buffers, pools), then take the idle descriptor count.
    if let Err(e) = direct() {
        ctx.fail("file-server-warmup", None, e);
        return 0;
    }
    let base = idle_fds(&server);
    let proxy = match Proxy::start(addr, faults, ctx.rng.next_u64()) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            ctx.fail("proxy-start", None, e.to_string());
            return 0;
        }
    };
    let conns = ctx.pick(8, 150);
    let f2 = files.clone();
    let seen = clients(&proxy, 6, conns, ctx.rng.next_u64(), move |a, r| {
        let reqs = r.range(1, 5) as usize;
        http_conn(a, &f2, r, reqs)
    });
    after_storm(ctx, "file_server", &mut server, &proxy, &seen, base, direct);
    seen.reset_by_proxy
}

/// Returns the connections the proxy reset.
fn echo_server(ctx: &mut Ctx, bin: &Path, faults: Faults) -> u64 {
    let mut server = match Server::start(
        bin,
        &["--addr", "127.0.0.1:0", "--cores", "1"],
        &ctx.backend.to_string(),
    ) {
        Ok(s) => s,
        Err(e) => {
            ctx.fail("echo-server-start", None, e);
            return 0;
        }
    };
    let addr = server.addr;
    let direct = move || -> Result<(), String> {
        let mut r = Rng::new(6);
        for _ in 0..10 {
            let c = echo_conn(addr, &mut r, 3);
            if let Some(e) = c.error.or(c.mismatch) {
                return Err(e);
            }
        }
        Ok(())
    };
    if let Err(e) = direct() {
        ctx.fail("echo-server-warmup", None, e);
        return 0;
    }
    let base = idle_fds(&server);
    let proxy = match Proxy::start(addr, faults, ctx.rng.next_u64()) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            ctx.fail("proxy-start", None, e.to_string());
            return 0;
        }
    };
    let conns = ctx.pick(10, 200);
    let seen = clients(&proxy, 6, conns, ctx.rng.next_u64(), |a, r| {
        let rounds = r.range(1, 6) as usize;
        echo_conn(a, r, rounds)
    });
    after_storm(ctx, "echo_server", &mut server, &proxy, &seen, base, direct);
    seen.reset_by_proxy
}
