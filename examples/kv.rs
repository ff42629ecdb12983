//! A sharded key-value store over TCP: thread-per-core with keys owned by cores.
//!
//! ```text
//! cargo run --release --example kv -- --addr 127.0.0.1:7070 --cores all
//! printf 'SET a 1\nGET a\nDEL a\nGET a\nSTATS\n' | nc -q1 127.0.0.1 7070
//! ```
//!
//! Each core of a [`coring::Pool`] accepts on its own `SO_REUSEPORT` listener (the pool's
//! `run_on_all` barrier: the address is announced once every core has bound). Every key is
//! owned by one core (FNV-1a hash modulo the core count) and lives in that core's map, a
//! [`coring::Sharded`] instance reached without locks. Requests for keys another core
//! owns are forwarded there with `invoke_on` (`submit_to` underneath), one call per owner
//! for all such requests of one read (pipelined requests share the hop), and the answers
//! come back to the connection's core. On Windows (no `SO_REUSEPORT`) core 0 accepts every
//! connection and forwards by key the same way.
//!
//! The protocol is one request per line, answered by one line, in order (requests may be
//! pipelined):
//!
//! | request | answer |
//! |---|---|
//! | `SET key value` | `OK` (the value is the rest of the line) |
//! | `GET key` | `VALUE value` or `NOT_FOUND` |
//! | `DEL key` | `DELETED` or `NOT_FOUND` |
//! | `STATS` | `STATS keys=K local=L forwarded=F`, summed over the cores (`map_reduce`) |
//! | anything else | `ERROR reason` |
//!
//! A line longer than 64 KiB is answered with `ERROR` and the connection is closed.
//! `--secs S` stops after S seconds and prints the totals (tests use it).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use coring::net::{TcpListener, TcpStream};
use coring::{Pool, Sharded};

const USAGE: &str = "usage: kv [--addr HOST:PORT] [--cores N|all] [--no-pin] [--secs S]
  --addr HOST:PORT  address to listen on (default 127.0.0.1:7070; port 0 picks one)
  --cores N|all     cores to serve on, one SO_REUSEPORT listener each (default all)
  --no-pin          do not pin the core threads (more cores than CPUs)
  --park-spin-us N  spin up to N µs before parking (Builder::park_spin; default 0)
  --secs S          stop after S seconds and print the totals (default: run forever)";

/// The longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

struct Args {
    addr: String,
    cores: Option<usize>,
    pin: bool,
    park_spin_us: u64,
    secs: Option<f64>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:7070".into(),
        cores: None,
        pin: true,
        park_spin_us: 0,
        secs: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value()?,
            "--cores" => {
                let v = value()?;
                a.cores = match v.as_str() {
                    "all" => None,
                    n => Some(n.parse().ok().filter(|&n| n > 0).ok_or(format!(
                        "--cores takes a positive number or 'all', not '{n}'"
                    ))?),
                };
            }
            "--no-pin" => a.pin = false,
            "--park-spin-us" => {
                let v = value()?;
                a.park_spin_us = v
                    .parse()
                    .map_err(|_| format!("--park-spin-us takes microseconds, not '{v}'"))?;
            }
            "--secs" => {
                let v = value()?;
                a.secs = Some(
                    v.parse()
                        .ok()
                        .filter(|s: &f64| *s > 0.0)
                        .ok_or(format!("--secs takes a positive number, not '{v}'"))?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown flag '{other}'")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kv: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One core's share of the store.
#[derive(Default)]
struct Shard {
    map: RefCell<HashMap<String, String>>,
    /// Requests this core received for keys it owns.
    local: Cell<u64>,
    /// Requests this core received for keys another core owns (forwarded there).
    forwarded: Cell<u64>,
}

/// A request, parsed on the connection's core; it crosses to the key's owner.
enum Request {
    Get(String),
    Set(String, String),
    Del(String),
}

impl Request {
    fn key(&self) -> &str {
        match self {
            Request::Get(k) | Request::Set(k, _) | Request::Del(k) => k,
        }
    }

    /// Applies the request to the owner's map; the answer line.
    fn apply(self, shard: &Shard) -> String {
        let mut map = shard.map.borrow_mut();
        match self {
            Request::Get(k) => match map.get(&k) {
                Some(v) => format!("VALUE {v}"),
                None => "NOT_FOUND".into(),
            },
            Request::Set(k, v) => {
                map.insert(k, v);
                "OK".into()
            }
            Request::Del(k) => match map.remove(&k) {
                Some(_) => "DELETED".into(),
                None => "NOT_FOUND".into(),
            },
        }
    }
}

/// The core owning `key`: FNV-1a, so that clients and tests can compute it too.
fn owner(key: &str, cores: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % cores as u64) as usize
}

fn run(args: Args) -> io::Result<()> {
    // Resolve port 0 once, so every core binds the same port.
    let probe = std::net::TcpListener::bind(&args.addr)?;
    let addr: SocketAddr = probe.local_addr()?;
    #[cfg(not(windows))]
    drop(probe);
    let mut builder = Pool::builder()
        .pin(args.pin)
        .runtime(coring::Builder::new().park_spin(Duration::from_micros(args.park_spin_us)));
    if let Some(n) = args.cores {
        builder = builder.cores(n);
    }
    let pool = builder.build()?;
    let store = Sharded::new(&pool.handle(), |_core| Shard::default());
    let s = store.clone();
    #[cfg(windows)]
    let probe = std::sync::Mutex::new(Some(probe));
    // The ready barrier: once this returns, every core's listener is bound.
    pool.run_on_all(move |_core| {
        let store = s.clone();
        #[cfg(not(windows))]
        let listener = TcpListener::bind_reuseport(addr).map(Some);
        // Windows: core 0 takes the one listener; the others only own keys.
        #[cfg(windows)]
        let listener = if _core == 0 {
            // Only core 0 takes it: the cores set up in any order.
            let taken = probe.lock().unwrap().take();
            taken.map(TcpListener::from_std).transpose()
        } else {
            Ok(None)
        };
        async move {
            if let Some(listener) = listener? {
                drop(coring::spawn(accept(listener, store)));
            }
            Ok::<_, io::Error>(())
        }
    })
    .wait(Duration::from_secs(10))?
    .into_iter()
    .collect::<io::Result<Vec<()>>>()?;
    println!(
        "listening on {addr} with {} core(s), backend {}",
        pool.cores(),
        pool.core_info(0).backend_description
    );
    let Some(secs) = args.secs else {
        loop {
            std::thread::park();
        }
    };
    std::thread::sleep(Duration::from_secs_f64(secs));
    let per_core = store
        .invoke_on_all(|s| async move { (s.map.borrow().len(), s.local.get(), s.forwarded.get()) })
        .wait(Duration::from_secs(10))?;
    for (core, (keys, local, fwd)) in per_core.iter().enumerate() {
        println!("core {core}: keys={keys} local={local} forwarded={fwd}");
    }
    drop(store);
    pool.shutdown().map_err(|e| io::Error::other(e.to_string()))
}

/// Accepts connections forever, a task each.
async fn accept(listener: TcpListener, store: Sharded<Shard>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let store = store.clone();
                drop(coring::spawn(async move {
                    // A connection's error ends only that connection.
                    let _ = serve(stream, store).await;
                }));
            }
            Err(e) => {
                eprintln!("kv: accept: {e}");
                coring::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection: reads lines, answers each in order.
async fn serve(stream: TcpStream, store: Sharded<Shard>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let cores = store.handle().cores();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (r, b) = stream.read(buf).await;
        buf = b;
        if r? == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|&c| c == b'\n') {
            let line = String::from_utf8_lossy(&pending[start..start + nl]).into_owned();
            start += nl + 1;
            lines.push(line.trim_end_matches('\r').to_string());
        }
        let mut out = answer_batch(&lines, &store, cores).await;
        pending.drain(..start);
        let too_long = pending.len() > MAX_LINE;
        if too_long {
            out.push_str("ERROR line longer than 64 KiB\n");
        }
        if !out.is_empty() {
            let (r, _) = stream.write_all(out.into_bytes()).await;
            r?;
        }
        if too_long {
            return Ok(());
        }
    }
}

/// What a request line asks for.
enum Parsed {
    Req(Request),
    Stats,
    /// A bad line: its answer.
    Bad(String),
}

fn parse_line(line: &str) -> Parsed {
    let mut words = line.splitn(3, ' ');
    let cmd = words.next().unwrap_or("");
    let key = words.next().filter(|k| !k.is_empty());
    let rest = words.next();
    match (cmd, key, rest) {
        ("GET", Some(k), None) => Parsed::Req(Request::Get(k.to_string())),
        ("DEL", Some(k), None) => Parsed::Req(Request::Del(k.to_string())),
        ("SET", Some(k), Some(v)) => Parsed::Req(Request::Set(k.to_string(), v.to_string())),
        ("STATS", None, None) => Parsed::Stats,
        ("GET" | "DEL" | "SET", _, _) => Parsed::Bad(format!(
            "ERROR usage: GET key | SET key value | DEL key (got {line:?})"
        )),
        _ => Parsed::Bad(format!("ERROR unknown command {cmd:?}")),
    }
}

/// The answers (one line each, in order) to the request lines one read brought.
///
/// Requests for keys this core owns are applied at once; the others are grouped by owner
/// and each owner gets one call with all of its requests, every owner's call in flight at
/// once: one cross-core round trip per owner per batch, not per request. Answers follow
/// request order; a key's requests all go to its owner, in order, so each key sees them as
/// sent. `STATS` waits for what came before it.
async fn answer_batch(lines: &[String], store: &Sharded<Shard>, cores: usize) -> String {
    let here = store.local();
    let me = coring::current_core().expect("connections are served on the pool's cores");
    let mut answers = vec![String::new(); lines.len()];
    let mut remote: Vec<Vec<(usize, Request)>> = (0..cores).map(|_| Vec::new()).collect();
    for (i, line) in lines.iter().enumerate() {
        match parse_line(line) {
            Parsed::Req(req) => {
                let owner = owner(req.key(), cores);
                if owner == me {
                    here.local.set(here.local.get() + 1);
                    answers[i] = req.apply(&here);
                } else {
                    here.forwarded.set(here.forwarded.get() + 1);
                    remote[owner].push((i, req));
                }
            }
            Parsed::Stats => {
                forward(&mut remote, &mut answers, store).await;
                answers[i] = stats(store).await;
            }
            Parsed::Bad(answer) => answers[i] = answer,
        }
    }
    forward(&mut remote, &mut answers, store).await;
    let mut out = String::new();
    for a in answers {
        out.push_str(&a);
        out.push('\n');
    }
    out
}

/// Sends each owner its requests in one call (all owners at once) and files the answers.
async fn forward(
    remote: &mut [Vec<(usize, Request)>],
    answers: &mut [String],
    store: &Sharded<Shard>,
) {
    let mut calls = Vec::new();
    for (owner, reqs) in remote.iter_mut().enumerate() {
        if reqs.is_empty() {
            continue;
        }
        let (at, reqs): (Vec<usize>, Vec<Request>) = std::mem::take(reqs).into_iter().unzip();
        // The owner applies them; only the requests and the answers cross cores.
        let call = store.invoke_on(owner, move |s: Rc<Shard>| async move {
            reqs.into_iter()
                .map(|r| r.apply(&s))
                .collect::<Vec<String>>()
        });
        calls.push((owner, at, call));
    }
    for (owner, at, call) in calls {
        match call.await {
            Ok(got) => {
                for (i, a) in at.into_iter().zip(got) {
                    answers[i] = a;
                }
            }
            Err(e) => {
                for i in at {
                    answers[i] = format!("ERROR core {owner}: {e}");
                }
            }
        }
    }
}

/// Every core's counters, summed (`map_reduce`).
async fn stats(store: &Sharded<Shard>) -> String {
    let sum = store
        .map_reduce(
            |s: Rc<Shard>| async move {
                [
                    s.map.borrow().len() as u64,
                    s.local.get(),
                    s.forwarded.get(),
                ]
            },
            [0u64; 3],
            |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]],
        )
        .await;
    match sum {
        Ok([keys, local, fwd]) => format!("STATS keys={keys} local={local} forwarded={fwd}"),
        Err(e) => format!("ERROR {e}"),
    }
}
