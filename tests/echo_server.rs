//! Drives the real `echo_server` example: one SO_REUSEPORT shard per core, on both backends
//! (on Windows, IOCP: core 0 accepts and hands connections to every core).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(backend: &str) {
    let (mut child, mut out, line) = start(backend, "", "--addr 127.0.0.1:0 --cores all --secs 3");
    let addr = echo_addr(&line);
    let cores: usize = line
        .split(" with ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let mut clients = Vec::new();
    for i in 0..32u8 {
        let mut c = std::net::TcpStream::connect(&addr)
            .unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = vec![i; 1000 + i as usize];
        c.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
        clients.push(c);
    }
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "echo_server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let per_core: Vec<u64> = rest
        .lines()
        .filter(|l| l.starts_with("core "))
        .map(|l| {
            l.split(": ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(per_core.len(), cores, "{rest}");
    assert_eq!(per_core.iter().sum::<u64>(), 32, "{rest}");
    if cores > 1 {
        // 32 connections hashed over the shards: all on one core has odds of 2^-31.
        assert!(per_core.iter().filter(|&&n| n > 0).count() > 1, "{rest}");
    }
    assert!(rest.contains("total: 32 connections"), "{rest}");
}

// io_uring and the fallback backend exist only on Unix (Windows has IOCP, below).
#[cfg(unix)]
#[test]
fn echo_server_all_cores_io_uring() {
    run("io_uring");
}

#[cfg(unix)]
#[test]
fn echo_server_all_cores_fallback() {
    run("fallback");
}

#[cfg(windows)]
#[test]
fn echo_server_all_cores_iocp() {
    run("iocp");
}

/// Starts a binary through `sh -c` (so a `ulimit` can be applied; on Windows, which has
/// neither, directly, and `shell_prefix` must be empty), returns the child and the first
/// stdout line.
fn start(
    backend: &str,
    shell_prefix: &str,
    args: &str,
) -> (KillOnDrop, BufReader<std::process::ChildStdout>, String) {
    let bin = common::example::binary("echo_server");
    #[cfg(unix)]
    let mut command = {
        let script = format!("{shell_prefix} exec '{}' {args}", bin.display());
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    #[cfg(windows)]
    let mut command = {
        assert!(shell_prefix.is_empty(), "no shell on Windows");
        let mut c = Command::new(&bin);
        c.args(args.split_whitespace());
        c
    };
    let mut child = KillOnDrop(
        command
            .env("CORING_BACKEND", backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (child, out, line)
}

fn echo_addr(line: &str) -> String {
    line.strip_prefix("listening on ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string()
}

fn echo_once(addr: &str, msg: &[u8]) -> std::io::Result<TcpStream> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back)?;
    assert_eq!(back, msg);
    Ok(c)
}

/// A failed accept (EMFILE under a connection flood) is logged and retried: it used to end
/// the shard's accept loop, and with one core the whole server exited with status 1.
/// Unix only, by nature: the flood needs a descriptor limit (`ulimit -n`, an rlimit).
#[cfg(unix)]
fn survives_running_out_of_descriptors(backend: &str) {
    let (mut child, _out, line) = start(backend, "ulimit -n 40;", "--addr 127.0.0.1:0 --cores 1");
    let addr = echo_addr(&line);
    // More connections than descriptors: the kernel completes them in the backlog, the
    // server's accept fails with EMFILE.
    let mut flood = Vec::new();
    for _ in 0..60 {
        match TcpStream::connect(&addr) {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(flood);
    std::thread::sleep(Duration::from_millis(500));
    let exited = child.0.try_wait().unwrap();
    let mut err = String::new();
    if exited.is_some() {
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
    }
    assert!(
        exited.is_none(),
        "echo_server died after a connection flood: {exited:?}, stderr: {err}"
    );
    echo_once(&addr, b"still serving").expect("echo after the flood");
}

/// `--secs` counts every echoed byte, also on a connection still open at the end: it used
/// to count only connections that had ended with a clean EOF (here: 0 bytes).
fn counts_bytes_of_connections_still_open(backend: &str) {
    let (mut child, mut out, line) = start(backend, "", "--addr 127.0.0.1:0 --secs 2");
    let addr = echo_addr(&line);
    let c = echo_once(&addr, &[7u8; 1000]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "echo_server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("total: 1 connections, 1000 bytes echoed"),
        "1000 bytes were echoed on the one connection, but:\n{rest}"
    );
}

// Unix only, by nature: rlimits (see above).
#[cfg(unix)]
#[test]
fn echo_server_survives_running_out_of_descriptors_io_uring() {
    survives_running_out_of_descriptors("io_uring");
}

#[cfg(unix)]
#[test]
fn echo_server_survives_running_out_of_descriptors_fallback() {
    survives_running_out_of_descriptors("fallback");
}

#[cfg(unix)]
#[test]
fn echo_server_counts_bytes_of_connections_still_open_io_uring() {
    counts_bytes_of_connections_still_open("io_uring");
}

#[cfg(unix)]
#[test]
fn echo_server_counts_bytes_of_connections_still_open_fallback() {
    counts_bytes_of_connections_still_open("fallback");
}

#[cfg(windows)]
#[test]
fn echo_server_counts_bytes_of_connections_still_open_iocp() {
    counts_bytes_of_connections_still_open("iocp");
}
