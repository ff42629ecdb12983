//! Drives the real `kv` example (a sharded key-value store: keys owned by cores, requests
//! for another core's keys forwarded with `submit_to`) with a client that checks every
//! reply: on io_uring and the fallback backend (Unix), IOCP on Windows.
//!
//! Run `cargo build --examples` first when running this file alone (see
//! tests/echo_server.rs).

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

/// A client connection: one request line, one answer line.
struct Client {
    out: TcpStream,
    input: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            input: BufReader::new(s.try_clone().unwrap()),
            out: s,
        }
    }

    fn send(&mut self, lines: &str) {
        self.out.write_all(lines.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.input.read_line(&mut l).unwrap();
        assert!(l.ends_with('\n'), "connection closed mid-answer: {l:?}");
        l.trim_end().to_string()
    }

    fn ask(&mut self, req: &str) -> String {
        self.send(&format!("{req}\n"));
        self.line()
    }
}

/// The key's owner, as the example computes it (FNV-1a modulo the cores).
fn owner(key: &str, cores: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % cores as u64) as usize
}

fn run(backend: &str) {
    const CORES: usize = 2;
    let mut child = KillOnDrop(
        Command::new(common::example::binary("kv"))
            .args([
                "--addr",
                "127.0.0.1:0",
                "--cores",
                "2",
                "--no-pin",
                "--secs",
                "15",
            ])
            .env("CORING_BACKEND", backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
        .to_string();
    assert!(first.contains("with 2 core(s)"), "{first}");
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    // Both cores own some of them, so whichever core a connection lands on receives
    // requests for keys it does not own.
    for core in 0..CORES {
        assert!(keys.iter().any(|k| owner(k, CORES) == core));
    }
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(&addr)).collect();
    let n = clients.len();
    // SET through one connection, GET through another.
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(clients[i % n].ask(&format!("SET {k} value of {k}")), "OK");
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            clients[(i + 1) % n].ask(&format!("GET {k}")),
            format!("VALUE value of {k}")
        );
    }
    // Overwrite, delete half, and check every key again; pipelined this time.
    let mut batch = String::new();
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            batch.push_str(&format!("DEL {k}\n"));
        } else {
            batch.push_str(&format!("SET {k} {i}\n"));
        }
    }
    clients[2].send(&batch);
    for (i, _) in keys.iter().enumerate() {
        let want = if i % 2 == 0 { "DELETED" } else { "OK" };
        assert_eq!(clients[2].line(), want);
    }
    for (i, k) in keys.iter().enumerate() {
        let got = clients[(i + 3) % n].ask(&format!("GET {k}"));
        if i % 2 == 0 {
            assert_eq!(got, "NOT_FOUND", "{k}");
            assert_eq!(clients[0].ask(&format!("DEL {k}")), "NOT_FOUND");
        } else {
            assert_eq!(got, format!("VALUE {i}"), "{k}");
        }
    }
    // Bad requests are answered, not fatal.
    assert!(clients[1].ask("GET").starts_with("ERROR usage"));
    assert!(clients[1]
        .ask("FLY away")
        .starts_with("ERROR unknown command"));
    assert_eq!(clients[1].ask("GET key-1"), "VALUE 1");
    // STATS sums every core's counters (map_reduce): 100 keys left, and requests for keys
    // the receiving core does not own were forwarded.
    let stats = clients[0].ask("STATS");
    let field = |name: &str| -> u64 {
        stats
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {stats:?}"))
            .parse()
            .unwrap()
    };
    assert_eq!(field("keys"), 100, "{stats}");
    assert!(field("forwarded") > 0, "{stats}");
    assert!(field("local") > 0, "{stats}");
    // A line that never ends is cut off with an error.
    let mut long = Client::connect(&addr);
    long.send(&"x".repeat(70 * 1024));
    assert!(long.line().starts_with("ERROR line longer"));
    drop(clients);
    // --secs: the server stops by itself and prints each core's share.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "kv did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let per_core_keys: usize = rest
        .lines()
        .filter_map(|l| l.split("keys=").nth(1))
        .map(|v| {
            v.split_whitespace()
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(per_core_keys, 100, "{rest}");
    for core in 0..CORES {
        let owned = keys
            .iter()
            .enumerate()
            .filter(|(i, k)| i % 2 == 1 && owner(k, CORES) == core)
            .count();
        assert!(
            rest.contains(&format!("core {core}: keys={owned} ")),
            "core {core} should hold its {owned} keys: {rest}"
        );
    }
}

// io_uring and the fallback backend exist only on Unix (Windows has IOCP, below).
#[cfg(target_os = "linux")]
#[test]
fn kv_io_uring() {
    run("io_uring");
}

#[cfg(unix)]
#[test]
fn kv_fallback() {
    run("fallback");
}

#[cfg(windows)]
#[test]
fn kv_iocp() {
    run("iocp");
}
