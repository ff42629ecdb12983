//! The sharded key-value store on 2 cores: coring's `examples/kv.rs` (a `Pool`, keys owned
//! by cores in a `Sharded` map, other cores' keys forwarded with `submit_to`) against the
//! same line protocol served by tokio's multi_thread runtime (2 workers) with a sharded
//! `Mutex<HashMap>` (16 shards). The measure is operations per server CPU-second (the
//! server's user + system time from `/proc/PID/stat`), since the load generator shares the
//! machine's CPUs.
//!
//! ```text
//! cargo build --release --example kv
//! cargo bench -p coring-bench --bench kv                     # 3 runs of 5 s each
//! cargo bench -p coring-bench --bench kv -- --secs 10 --conns 32 --depth 16
//! ```
//!
//! Each run starts the server as its own process (coring: the `kv` example with
//! `--cores 2`; tokio: this bench re-executed with `--serve-tokio`), fills `keys` keys, then
//! runs `conns` client threads for `secs` seconds, each writing `depth` requests (90% GET,
//! 10% SET of random keys) and reading their `depth` answers, checking each. Linux only
//! (`/proc`).

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring_bench::args::{self, or_exit, ArgError};
use coring_bench::runs::{fmt_opt, fmt_x, Runs};

const USAGE: &str = "\
usage: cargo build --release --example kv && cargo bench -p coring-bench --bench kv -- [options]
  --secs S     seconds of load per run (default 5)
  --conns N    client connections, a thread each (default 16)
  --depth N    requests written before reading their answers (default 8)
  --keys N     distinct keys (default 10000)
  --runs N     runs per contender, interleaved (default 3)
  --park-spin-us N   the coring server's Builder::park_spin (default 0)
  -h, --help   this help";

struct Args {
    secs: f64,
    conns: usize,
    depth: usize,
    keys: usize,
    runs: usize,
    park_spin_us: usize,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, ArgError> {
    let defaults = Args {
        secs: 5.0,
        conns: 16,
        depth: 8,
        keys: 10_000,
        runs: 3,
        park_spin_us: 0,
    };
    args::parse(args, defaults, |a, flag, flags| {
        match flag.name.as_str() {
            "--secs" => a.secs = flags.count(flag)? as f64,
            "--conns" => a.conns = flags.count(flag)?,
            "--depth" => a.depth = flags.count(flag)?,
            "--keys" => a.keys = flags.count(flag)?,
            "--runs" => a.runs = flags.count(flag)?,
            "--park-spin-us" => a.park_spin_us = flags.count(flag)?,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Coring,
    Tokio,
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Contender::Coring => "coring kv, 2 cores",
            Contender::Tokio => "tokio mt 2, Mutex shards",
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct KvResult {
    ops_per_s: f64,
    server_cpu_s: f64,
    ops_per_cpu_s: f64,
}

impl fmt::Display for KvResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>9.0} ops/s  server CPU {:>5.2} s  {:>9.0} ops per server CPU-second",
            self.ops_per_s, self.server_cpu_s, self.ops_per_cpu_s
        )
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `kv` example, built in release next to this bench (`target/release/examples`).
fn kv_example() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let release = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or("no target directory")?;
    let path = release.join("examples").join("kv");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release --example kv` first",
            path.display()
        ))
    }
}

/// The server's user + system CPU time so far (`/proc/PID/stat`, fields 14 and 15).
fn process_cpu(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let rest = &stat[stat.rfind(')').ok_or("bad /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().map_err(|e| e.to_string())?
        + f[12].parse::<u64>().map_err(|e| e.to_string())?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// Starts a server; returns it and its address (from its "listening on ADDR" line).
fn start(c: Contender, a: &Args) -> Result<(KillOnDrop, String), String> {
    let mut cmd = match c {
        Contender::Coring => {
            let mut cmd = Command::new(kv_example()?);
            cmd.args(["--addr", "127.0.0.1:0", "--cores", "2"]);
            cmd.args(["--park-spin-us", &a.park_spin_us.to_string()]);
            cmd
        }
        Contender::Tokio => {
            let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
            cmd.arg("--serve-tokio");
            cmd
        }
    };
    let mut child = KillOnDrop(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|l| l.split_whitespace().next())
        .ok_or(format!("unexpected first line {line:?}"))?
        .to_string();
    Ok((child, addr))
}

/// A tiny xorshift for the request mix.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One run: fill the keys, then load for `secs`; the server's CPU over the load.
fn run(c: Contender, a: &Args) -> Result<KvResult, String> {
    let (server, addr) = start(c, a)?;
    let connect = || -> Result<(TcpStream, BufReader<TcpStream>), String> {
        let s = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        Ok((s, r))
    };
    {
        let (mut w, mut r) = connect()?;
        let mut line = String::new();
        for chunk in (0..a.keys).collect::<Vec<_>>().chunks(256) {
            let batch: String = chunk.iter().map(|k| format!("SET k{k} v{k}\n")).collect();
            w.write_all(batch.as_bytes()).map_err(|e| e.to_string())?;
            for _ in chunk {
                line.clear();
                r.read_line(&mut line).map_err(|e| e.to_string())?;
                if line != "OK\n" {
                    return Err(format!("SET answered {line:?}"));
                }
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for t in 0..a.conns {
        let (mut w, mut r) = connect()?;
        let (stop, ops, depth, keys) = (stop.clone(), ops.clone(), a.depth, a.keys as u64);
        clients.push(std::thread::spawn(move || -> Result<(), String> {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
            let mut line = String::new();
            let mut batch = String::new();
            let mut kinds = Vec::with_capacity(depth);
            while !stop.load(Ordering::Relaxed) {
                batch.clear();
                kinds.clear();
                for _ in 0..depth {
                    let k = next(&mut rng) % keys;
                    let set = next(&mut rng).is_multiple_of(10);
                    if set {
                        batch.push_str(&format!("SET k{k} v{k}\n"));
                    } else {
                        batch.push_str(&format!("GET k{k}\n"));
                    }
                    kinds.push((set, k));
                }
                w.write_all(batch.as_bytes()).map_err(|e| e.to_string())?;
                for &(set, k) in &kinds {
                    line.clear();
                    r.read_line(&mut line).map_err(|e| e.to_string())?;
                    let ok = if set {
                        line == "OK\n"
                    } else {
                        line.strip_prefix("VALUE v")
                            .and_then(|v| v.trim_end().parse::<u64>().ok())
                            == Some(k)
                    };
                    if !ok {
                        return Err(format!("wrong answer {line:?} for key {k}"));
                    }
                }
                ops.fetch_add(depth as u64, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let cpu0 = process_cpu(server.0.id())?;
    let ops0 = ops.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.secs));
    let cpu1 = process_cpu(server.0.id())?;
    let ops1 = ops.load(Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().map_err(|_| "a client panicked".to_string())??;
    }
    drop(server);
    let n = (ops1 - ops0) as f64;
    let cpu = (cpu1 - cpu0).as_secs_f64();
    Ok(KvResult {
        ops_per_s: n / elapsed.as_secs_f64(),
        server_cpu_s: cpu,
        ops_per_cpu_s: if cpu > 0.0 { n / cpu } else { f64::NAN },
    })
}

/// The tokio server: the same protocol (GET/SET/DEL), multi_thread with 2 workers, one
/// listener, a task per connection, the map in 16 `Mutex<HashMap>` shards by key hash.
fn serve_tokio() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio multi_thread runtime");
    rt.block_on(async {
        let shards: Arc<Vec<Mutex<HashMap<String, String>>>> =
            Arc::new((0..16).map(|_| Mutex::new(HashMap::new())).collect());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("listening on {}", listener.local_addr().expect("address"));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shards = shards.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let (r, mut w) = stream.into_split();
                let mut r = tokio::io::BufReader::new(r);
                let mut line = String::new();
                let mut out = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    answer(&shards, line.trim_end(), &mut out);
                    // Answer a pipelined batch with one write once no more is buffered.
                    if r.buffer().is_empty() {
                        if w.write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
            });
        }
    });

    fn answer(shards: &[Mutex<HashMap<String, String>>], line: &str, out: &mut String) {
        let mut words = line.splitn(3, ' ');
        let (cmd, key, rest) = (words.next(), words.next(), words.next());
        let shard = |k: &str| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in k.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            &shards[(h % shards.len() as u64) as usize]
        };
        let reply = match (cmd, key, rest) {
            (Some("GET"), Some(k), None) => match shard(k).lock().unwrap().get(k) {
                Some(v) => format!("VALUE {v}"),
                None => "NOT_FOUND".into(),
            },
            (Some("SET"), Some(k), Some(v)) => {
                shard(k)
                    .lock()
                    .unwrap()
                    .insert(k.to_string(), v.to_string());
                "OK".into()
            }
            (Some("DEL"), Some(k), None) => match shard(k).lock().unwrap().remove(k) {
                Some(_) => "DELETED".into(),
                None => "NOT_FOUND".into(),
            },
            _ => "ERROR bad request".into(),
        };
        out.push_str(&reply);
        out.push('\n');
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--serve-tokio") {
        serve_tokio();
        return;
    }
    let a = or_exit(parse_args(std::env::args().skip(1)), "kv", USAGE);
    if !cfg!(target_os = "linux") {
        println!("kv reads server CPU from /proc: Linux only");
        return;
    }
    if let Err(e) = kv_example() {
        println!("kv: {e}");
        return;
    }
    println!(
        "kv store on 2 cores: {} connections, {} requests in flight each, {} keys, 90% GET, \
         {} s per run, {} runs (median)\n",
        a.conns, a.depth, a.keys, a.secs, a.runs
    );
    use Contender::*;
    let contenders = [Coring, Tokio];
    let runs = Runs::interleave(a.runs, &contenders, |c| run(c, &a));
    println!(
        "\n{:<26} {:>10} {:>14} {:>26} {:>10}",
        "", "ops/s", "server CPU s", "ops per server CPU-second", "vs tokio"
    );
    for c in contenders {
        println!(
            "{:<26} {:>10} {:>14} {:>26} {:>10}",
            c.to_string(),
            fmt_opt(runs.median(c, |r| r.ops_per_s), 0),
            fmt_opt(runs.median(c, |r| r.server_cpu_s), 2),
            fmt_opt(runs.median(c, |r| r.ops_per_cpu_s), 0),
            fmt_x(runs.paired_ratio(c, Tokio, |r| r.ops_per_cpu_s)),
        );
    }
}
