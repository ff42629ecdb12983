//! A TCP echo server and a few clients talking to it over loopback, on one coring runtime.
//!
//! ```text
//! cargo run --release --example echo
//! cargo run --release --example echo -- --conns 64 --size 4096 --secs 3
//! CORING_BACKEND=fallback cargo run --release --example echo   # on the fallback backend
//! ```
//!
//! The server accepts on an ephemeral port of 127.0.0.1 and spawns one task per connection,
//! which reads into an owned buffer and writes it back until the peer closes: each read and
//! write takes the buffer by value and gives it back with the result. Each client task
//! connects, then sends a `--size`-byte message, reads the whole echo back and checks it,
//! again and again for `--secs` seconds. At the end the program prints the backend and how
//! many round trips were made.
//!
//! This is a demo, not a benchmark: server and clients share one thread. To measure, run
//! `coring-bench echo` (server and load generator on two pinned CPUs, both backends, latency
//! percentiles, open or closed loop, server CPU per request), or the comparison with tokio,
//! monoio and a raw io_uring loop:
//!
//! ```text
//! cargo run --release -p coring-bench -- echo --conns 16,256
//! cargo bench -p coring-bench --bench vs_tokio -- --only echo --conns 16,64,256
//! ```

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use coring::buf::IoBuf;
use coring::net::{TcpListener, TcpStream};
use coring::time::timeout;

const USAGE: &str = "usage: echo [--conns N] [--size BYTES] [--secs S]
  --conns N       client connections, each doing ping-pong (default 16)
  --size BYTES    message size (default 1024)
  --secs S        how long the clients run (default 5)";

/// Echoes what it reads until the peer closes.
async fn echo(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        // A read fills the Vec from its start: begin each one empty.
        buf.clear();
        buf = match stream.read(buf).await {
            (Ok(0), _) => return Ok(()),
            (Ok(_), data) => match stream.write_all(data).await {
                (Ok(()), buf) => buf,
                (Err(e), _) => return Err(e),
            },
            (Err(e), _) => return Err(e),
        };
    }
}

/// Accepts connections, each echoed by a task of its own, until the runtime ends.
async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => drop(coring::spawn(async move {
                if let Err(e) = echo(stream).await {
                    eprintln!("echo: server connection: {e}");
                }
            })),
            Err(e) => return eprintln!("echo: accept: {e}"),
        }
    }
}

/// One client: round trips of a `size`-byte message until `end`; returns how many.
async fn client(addr: SocketAddr, size: usize, end: Instant) -> io::Result<u64> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut msg: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut reply = Vec::with_capacity(size);
    let mut trips = 0;
    while Instant::now() < end {
        let (res, m) = stream.write_all(msg).await;
        msg = m;
        res?;
        reply.clear();
        let (res, r) = stream.read_exact(reply.slice(..size)).await;
        reply = r.into_inner();
        res?;
        if reply != msg {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "echo mismatch"));
        }
        trips += 1;
    }
    Ok(trips)
}

/// The server and `conns` clients for `secs`; the round trips made.
async fn run(conns: usize, size: usize, secs: Duration) -> io::Result<u64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(coring::spawn(serve(listener)));
    let end = Instant::now() + secs;
    let clients: Vec<_> = (0..conns)
        .map(|_| coring::spawn(client(addr, size, end)))
        .collect();
    let mut trips = 0;
    for c in clients {
        trips += c.await.map_err(|e| io::Error::other(format!("{e:?}")))??;
    }
    Ok(trips)
}

fn parse(args: &[String]) -> Result<(usize, usize, Duration), String> {
    let (mut conns, mut size, mut secs) = (16, 1024, Duration::from_secs(5));
    for pair in args.chunks(2) {
        let (flag, value) = (&pair[0], pair.get(1).map(String::as_str));
        let bad = || match value {
            Some(v) => format!("{flag} takes a number greater than 0, not '{v}'"),
            None => format!("{flag} needs a value"),
        };
        let count = || {
            value
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
        };
        match flag.as_str() {
            "--conns" => conns = count().ok_or_else(bad)?,
            "--size" => size = count().ok_or_else(bad)?,
            "--secs" => {
                let s = value.and_then(|v| v.parse::<f64>().ok());
                secs = s
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
                    .ok_or_else(bad)?;
            }
            _ => return Err(format!("unknown argument '{flag}'")),
        }
    }
    Ok((conns, size, secs))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (conns, size, secs) = match parse(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("echo: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match coring::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Bounded: a client stuck on a lost echo ends the run instead of hanging it.
    let res = rt.block_on(timeout(
        secs + Duration::from_secs(10),
        run(conns, size, secs),
    ));
    match res {
        Ok(Ok(trips)) => {
            println!("backend: {}", rt.backend_description());
            println!(
                "{conns} connections, {size} B messages: {trips} round trips in {:.1} s \
                 ({:.0}/s, server and clients on one thread)",
                secs.as_secs_f64(),
                trips as f64 / secs.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("echo: the clients did not finish in time");
            ExitCode::FAILURE
        }
    }
}
