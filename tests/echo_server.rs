//! Drives the real `echo_server` example: one SO_REUSEPORT shard per core, on both backends.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example binary, built by `cargo test` next to this test's own binary
/// (`target/<profile>/examples/` beside `target/<profile>/deps/`). A full `cargo test`
/// builds every example first; `cargo test --test echo_server` alone does not rebuild it,
/// so run `cargo build --examples` before that.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not found: cargo test builds examples before integration tests",
        path.display()
    );
    path
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(backend: &str) {
    let mut child = KillOnDrop(
        Command::new(example("echo_server"))
            .args(["--addr", "127.0.0.1:0", "--cores", "all", "--secs", "3"])
            .env("CORING_BACKEND", backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
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

#[test]
fn echo_server_all_cores_io_uring() {
    run("io_uring");
}

#[test]
fn echo_server_all_cores_fallback() {
    run("fallback");
}
