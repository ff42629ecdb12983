//! A TCP echo server on one core or on every core.
//!
//! ```text
//! cargo run --release --example echo_server -- --addr 127.0.0.1:7000 --cores all
//! ```
//!
//! With `--cores 1` (the default) one runtime serves everything. With `--cores N` or
//! `--cores all`, a [`coring::Pool`] starts one pinned thread per core and each binds its
//! own `SO_REUSEPORT` listener on the same address, so the kernel spreads connections over
//! the cores and no connection ever crosses cores. `--secs S` stops the server after S
//! seconds and prints how many connections and bytes each core served (tests use it).
//!
//! Windows has no `SO_REUSEPORT`: there core 0 accepts on the one listener and hands each
//! connection, as a std socket, to the next core in turn (itself included), which adopts it
//! before doing any IO on it (a Windows handle belongs to the completion port of the first
//! runtime that does IO on it).

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use coring::net::{TcpListener, TcpStream};
use coring::sync::oneshot;
use coring::time::{sleep, timeout};
use coring::Pool;

const USAGE: &str = "usage: echo_server [--addr HOST:PORT] [--cores N|all] [--secs S]
  --addr HOST:PORT  address to listen on (default 127.0.0.1:7000; port 0 picks one)
  --cores N|all     cores to serve on, one SO_REUSEPORT listener each (default 1)
  --secs S          stop after S seconds and print per-core counts (default: run forever)";

struct Args {
    addr: String,
    cores: Option<usize>,
    secs: Option<f64>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:7000".into(),
        cores: Some(1),
        secs: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value()?,
            "--cores" => {
                let v = value()?;
                a.cores = if v == "all" {
                    None
                } else {
                    Some(v.parse().ok().filter(|n| *n > 0).ok_or(format!(
                        "--cores takes a positive number or 'all', not '{v}'"
                    ))?)
                };
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
            eprintln!("echo_server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> io::Result<()> {
    // Resolve port 0 once, so every shard binds the same port.
    let probe = std::net::TcpListener::bind(&args.addr)?;
    let addr: SocketAddr = probe.local_addr()?;
    // Unix: every shard binds its own listener; the probe goes first. (Windows keeps it.)
    #[cfg(not(windows))]
    drop(probe);
    let mut builder = Pool::builder();
    if let Some(n) = args.cores {
        builder = builder.cores(n);
    }
    let pool = builder.build()?;
    // The ready barrier: every core binds (Windows: adopts its share), spawns its serving
    // task and returns; `run_on_all` completes once all have, so the address is announced
    // only when every listener is bound and clients never race the binds.
    let secs = args.secs;
    #[cfg(not(windows))]
    let mut setup = pool.run_on_all(move |_core| async move {
        let listener = TcpListener::bind_reuseport(addr)?;
        Ok::<_, io::Error>(start_serving(Incoming::Listener(listener), secs))
    });
    #[cfg(windows)]
    let mut setup = handoff_shards(&pool, probe, secs);
    let mut counts = Vec::with_capacity(pool.cores());
    for shard in setup.wait(Duration::from_secs(10))? {
        counts.push(shard?);
    }
    println!(
        "listening on {addr} with {} core(s), backend {}",
        pool.cores(),
        pool.core_info(0).backend_description
    );
    let mut total = (0u64, 0u64);
    for (core, mut done) in counts.into_iter().enumerate() {
        let wait = Duration::from_secs_f64(secs.unwrap_or(1e9) + 30.0);
        let (conns, bytes) = done.recv_blocking(wait)?;
        println!("core {core}: {conns} connections, {bytes} bytes echoed");
        total.0 += conns;
        total.1 += bytes;
    }
    println!("total: {} connections, {} bytes echoed", total.0, total.1);
    pool.shutdown().map_err(|e| io::Error::other(e.to_string()))
}

/// Spawns the core's serving task; the receiver gets its (connections, bytes) once
/// `secs` have passed.
fn start_serving(incoming: Incoming, secs: Option<f64>) -> oneshot::Receiver<(u64, u64)> {
    let (tx, rx) = oneshot::channel();
    drop(coring::spawn(async move {
        let _ = tx.send(serve(incoming, secs).await);
    }));
    rx
}

/// Windows' shards: core 0 accepts on `listener` and hands the connections round-robin to
/// every core, itself included (see the module docs).
#[cfg(windows)]
fn handoff_shards(
    pool: &Pool,
    listener: std::net::TcpListener,
    secs: Option<f64>,
) -> coring::Gather<io::Result<oneshot::Receiver<(u64, u64)>>> {
    use std::sync::Mutex;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..pool.cores())
        .map(|_| coring::sync::mpsc::channel::<std::net::TcpStream>(64))
        .unzip();
    let acceptor = Mutex::new(Some((listener, senders)));
    let receivers = Mutex::new(receivers.into_iter().map(Some).collect::<Vec<_>>());
    pool.run_on_all(move |core| {
        let acceptor = if core == 0 {
            acceptor.lock().unwrap().take()
        } else {
            None
        };
        let rx = receivers.lock().unwrap()[core].take();
        async move {
            if let Some((listener, senders)) = acceptor {
                let l = TcpListener::from_std(listener)?;
                drop(coring::spawn(hand_out(l, senders)));
            }
            let rx = rx.ok_or_else(|| io::Error::other("a core was set up twice"))?;
            Ok(start_serving(Incoming::Handed(rx), secs))
        }
    })
}

/// Accepts forever, handing each connection to the next core in turn (Windows).
#[cfg(windows)]
async fn hand_out(
    listener: TcpListener,
    cores: Vec<coring::sync::mpsc::Sender<std::net::TcpStream>>,
) {
    let mut next = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("echo_server: accept: {e}");
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Nothing ran on it yet, so it converts at once.
        let Ok(stream) = stream.into_std() else {
            eprintln!("echo_server: a new connection could not be handed over");
            continue;
        };
        // A core that stopped dropped its receiver: the connection closes.
        let _ = cores[next].send(stream).await;
        next = (next + 1) % cores.len();
    }
}

/// Where a shard's connections come from.
enum Incoming {
    /// Its own listener.
    #[cfg_attr(windows, allow(dead_code))]
    Listener(TcpListener),
    /// Connections another core accepted (Windows).
    #[cfg(windows)]
    Handed(coring::sync::mpsc::Receiver<std::net::TcpStream>),
}

impl Incoming {
    /// The next connection.
    async fn next(&mut self) -> io::Result<TcpStream> {
        match self {
            Incoming::Listener(l) => l.accept().await.map(|(stream, _)| stream),
            #[cfg(windows)]
            Incoming::Handed(rx) => match rx.recv().await {
                Some(stream) => TcpStream::from_std(stream),
                // The accepting core is gone: nothing more comes.
                None => std::future::pending().await,
            },
        }
    }
}

/// Serves the connections of `incoming`, a task each, until `secs` have passed (or
/// forever); returns (connections, bytes).
async fn serve(mut incoming: Incoming, secs: Option<f64>) -> (u64, u64) {
    let bytes = Rc::new(std::cell::Cell::new(0u64));
    let mut conns = 0u64;
    let run = async {
        loop {
            let stream = match incoming.next().await {
                Ok(stream) => stream,
                // Out of descriptors (EMFILE/ENFILE), or a connection that went away before
                // it was accepted: the listener is fine; back off briefly and go on
                // (connections closing meanwhile free descriptors).
                Err(e) => {
                    eprintln!("echo_server: accept: {e}");
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            conns += 1;
            let bytes = bytes.clone();
            drop(coring::spawn(async move {
                // A connection's error ends only that connection.
                let _ = echo(stream, &bytes).await;
            }));
        }
    };
    match secs {
        Some(s) => {
            let _ = timeout(Duration::from_secs_f64(s), run).await;
            // Let connections that are mid-echo finish their current exchange.
            sleep(Duration::from_millis(50)).await;
        }
        None => run.await,
    }
    (conns, bytes.get())
}

/// Echoes until the peer closes, adding every echoed chunk to `bytes` as it goes (so a
/// connection still open at the end, or one that fails later, is counted too).
async fn echo(stream: TcpStream, bytes: &std::cell::Cell<u64>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (r, b) = stream.read(buf).await;
        let n = r?;
        if n == 0 {
            return Ok(());
        }
        let (r, b) = stream.write_all(b).await;
        r?;
        bytes.set(bytes.get() + n as u64);
        buf = b;
    }
}
