//! 2,000 connections reset at once. A coring server (its own thread and runtime) echoes
//! small requests and answers a `B` request with an endless stream that the client never
//! reads, so a quarter of its connections are blocked mid-write. The client (plain std
//! sockets) opens 2,000 connections, proves each is served, sets `SO_LINGER` to zero on
//! all of them and closes them in one loop: 2,000 resets arrive together, on armed reads
//! and on stuck writes. The server must see only "peer gone" errors, end every
//! connection, give its descriptors back, and keep serving new connections.
//!
//! Then issue 14 defect 8 (io_uring): a server task that drops a stream after reading from
//! it, then blocks its thread; the peer must see end-of-file meanwhile.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use coring::net::{TcpListener, TcpStream};

use super::Ctx;
use crate::sys;
use crate::watchdog::stage;
use crate::workload::is_peer_gone;

/// What the server counts.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    live: AtomicU64,
    writing: AtomicU64,
    ended_eof: AtomicU64,
    ended_reset: AtomicU64,
    ended_other: AtomicU64,
    others: Mutex<Vec<String>>,
}

/// One MiB of the endless answer to a `B` request.
static BIG: [u8; 1 << 20] = [0x42; 1 << 20];

async fn serve(s: TcpStream, c: Arc<Counters>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let (r, b) = s.read(buf).await;
        buf = b;
        let n = r?;
        if n == 0 {
            return Ok(());
        }
        if buf[0] == b'B' {
            c.writing.fetch_add(1, Ordering::SeqCst);
            let r = async {
                loop {
                    s.write_all(&BIG[..]).await.0?;
                }
            };
            let r: std::io::Result<()> = r.await;
            c.writing.fetch_sub(1, Ordering::SeqCst);
            return r;
        }
        let (r, b) = s.write_all(buf).await;
        buf = b;
        r?;
    }
}

/// The server thread: accepts until told to stop, a task per connection.
fn server(
    ctx: &Ctx,
    c: Arc<Counters>,
) -> (
    std::thread::JoinHandle<()>,
    SocketAddr,
    coring::sync::oneshot::Sender<()>,
) {
    let builder = ctx.builder();
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = coring::sync::oneshot::channel::<()>();
    let h = std::thread::Builder::new()
        .name("reset-server".into())
        .spawn(move || {
            let rt = builder.build().expect("server runtime");
            rt.block_on(async move {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind");
                addr_tx
                    .send(l.local_addr().expect("addr"))
                    .expect("addr channel");
                let acceptor = coring::spawn(async move {
                    loop {
                        match l.accept().await {
                            Ok((s, _)) => {
                                c.accepted.fetch_add(1, Ordering::SeqCst);
                                c.live.fetch_add(1, Ordering::SeqCst);
                                let c = c.clone();
                                drop(coring::spawn(async move {
                                    let r = serve(s, c.clone()).await;
                                    match r {
                                        Ok(()) => c.ended_eof.fetch_add(1, Ordering::SeqCst),
                                        Err(e) if is_peer_gone(&e) => {
                                            c.ended_reset.fetch_add(1, Ordering::SeqCst)
                                        }
                                        Err(e) => {
                                            let mut o = c.others.lock().unwrap();
                                            if o.len() < 8 {
                                                o.push(e.to_string());
                                            }
                                            c.ended_other.fetch_add(1, Ordering::SeqCst)
                                        }
                                    };
                                    c.live.fetch_sub(1, Ordering::SeqCst);
                                }));
                            }
                            Err(e) => {
                                {
                                    let mut o = c.others.lock().unwrap();
                                    if o.len() < 8 {
                                        o.push(format!("accept: {e}"));
                                    }
                                }
                                c.ended_other.fetch_add(1, Ordering::SeqCst);
                                coring::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                });
                let _ = stop_rx.await;
                acceptor.abort();
                let _ = acceptor.await;
            });
        })
        .expect("server thread");
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server address");
    (h, addr, stop_tx)
}

/// Waits (polling, on this plain thread) until `cond` or `bound`; whether it held.
fn wait_until(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + bound;
    while !cond() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// One echo exchange on a fresh connection; `Err` says what went wrong.
fn echo_once(addr: SocketAddr, msg: &[u8]) -> Result<std::net::TcpStream, String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
    if back != msg {
        return Err("echo differs".into());
    }
    Ok(s)
}

pub fn run(ctx: &mut Ctx) {
    if let Err(e) = sys::raise_nofile() {
        ctx.fail("setup", None, format!("raising RLIMIT_NOFILE: {e}"));
    }
    let conns = 2000usize;
    let rounds = ctx.pick(1, 10);
    let counters = Arc::new(Counters::default());
    let fd_base = sys::fd_count();
    let (server_thread, addr, stop) = server(ctx, counters.clone());
    let fd_server = sys::fd_count();
    let mut reset_total = 0u64;
    let mut fd_max = fd_server;
    for round in 0..rounds {
        stage(format!("reset: round {round}: opening {conns} connections"));
        let mut clients = Vec::with_capacity(conns);
        let mut failed = None;
        for i in 0..conns {
            let msg: &[u8] = if i % 4 == 3 { b"B" } else { b"hello, server" };
            if msg == b"B" {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                    Ok(mut s) => match s.write_all(msg) {
                        Ok(()) => clients.push(s),
                        Err(e) => failed = Some(format!("connection {i}: write: {e}")),
                    },
                    Err(e) => failed = Some(format!("connection {i}: connect: {e}")),
                }
            } else {
                match echo_once(addr, msg) {
                    Ok(s) => clients.push(s),
                    Err(e) => failed = Some(format!("connection {i}: {e}")),
                }
            }
            if failed.is_some() {
                break;
            }
        }
        if let Some(f) = failed {
            ctx.fail("serve-before", None, format!("round {round}: {f}"));
            break;
        }
        let writers = conns / 4;
        let stuck = wait_until(Duration::from_secs(20), || {
            counters.writing.load(Ordering::SeqCst) as usize == writers
        });
        ctx.check("writers-stuck", None, stuck, || {
            format!(
                "round {round}: {} of {writers} connections blocked mid-write before the reset",
                counters.writing.load(Ordering::SeqCst)
            )
        });
        fd_max = fd_max.max(sys::fd_count());
        stage(format!(
            "reset: round {round}: resetting {conns} connections at once"
        ));
        for s in &clients {
            if let Err(e) = sys::set_linger_zero(s.as_raw_fd()) {
                ctx.fail("linger", None, e.to_string());
            }
        }
        drop(clients);
        reset_total += conns as u64;
        let ended = wait_until(Duration::from_secs(30), || {
            counters.live.load(Ordering::SeqCst) == 0
        });
        ctx.check("all-ended", None, ended, || {
            format!(
                "round {round}: {} server connections still live 30 s after the resets",
                counters.live.load(Ordering::SeqCst)
            )
        });
        stage(format!("reset: round {round}: serving after the resets"));
        let mut after = Vec::new();
        for i in 0..50 {
            if let Err(e) = echo_once(addr, format!("after {i}").as_bytes()) {
                after.push(e);
            }
        }
        ctx.check("serves-after", None, after.is_empty(), || {
            format!("round {round}: new connections after the resets failed: {after:?}")
        });
        let fds_back = wait_until(Duration::from_secs(10), || sys::fd_count() <= fd_server);
        ctx.check("fds-back", None, fds_back, || {
            format!(
                "round {round}: {} descriptors open 10 s after every connection ended, {fd_server} \
                 with the server idle",
                sys::fd_count()
            )
        });
    }
    let prompt = ctx
        .wants_known("prompt-close", 8)
        .then(|| prompt_close(ctx));
    let _ = stop.send(());
    let joined = server_thread.join().is_ok();
    let c = &counters;
    ctx.figure("connections_reset", reset_total);
    ctx.figure("rounds", rounds);
    ctx.figure("accepted", c.accepted.load(Ordering::SeqCst));
    ctx.figure(
        "server_ends",
        format!(
            "eof={} reset={} other={}",
            c.ended_eof.load(Ordering::SeqCst),
            c.ended_reset.load(Ordering::SeqCst),
            c.ended_other.load(Ordering::SeqCst)
        ),
    );
    ctx.figure("fd_min", fd_base);
    ctx.figure("fd_max", fd_max);
    ctx.check(
        "server-errors",
        None,
        c.ended_other.load(Ordering::SeqCst) == 0,
        || {
            format!(
                "server errors other than a peer reset: {:?}",
                c.others.lock().unwrap()
            )
        },
    );
    ctx.check("server-thread", None, joined, || {
        "the server thread panicked".into()
    });
    let fd_end = sys::fd_count();
    ctx.check("fds-baseline", None, fd_end == fd_base, || {
        format!("{fd_end} descriptors open after the server stopped, {fd_base} before it started")
    });
    if let Some(msg) = prompt {
        ctx.check("prompt-close", Some(8), msg.is_none(), || {
            msg.unwrap_or_default()
        });
    }
}

/// Known defect 8: a server reads from a connection, drops it, then blocks its thread
/// (a long CPU task, a blocking call). The peer must see end-of-file while the thread is
/// blocked: dropping a stream with no operation of the user's outstanding closes it.
/// `None` if it did; else what happened.
fn prompt_close(ctx: &Ctx) -> Option<String> {
    stage("reset: prompt close on drop (defect 8)");
    let builder = ctx.builder();
    let (addr_tx, addr_rx) = mpsc::channel();
    let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = builder.build().expect("runtime");
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            addr_tx.send(l.local_addr().expect("addr")).expect("send");
            let (s, _) = l.accept().await.expect("accept");
            let (r, _) = s.read(Vec::with_capacity(64)).await;
            let _ = r;
            drop(s);
            let _ = dropped_tx.send(());
            // Block the runtime's thread, as a long computation would.
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(10)).ok()?;
    let result = (|| {
        let mut c = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        c.write_all(b"ping").map_err(|e| e.to_string())?;
        dropped_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the server never dropped the stream".to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut b = [0u8; 8];
        match c.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("read {n} bytes instead of end-of-file")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(
                    "no end-of-file within 3 s of the server dropping the stream while its \
                 thread stays blocked (the socket closes only when the loop turns)"
                        .to_string(),
                )
            }
            Err(e) => Err(format!("read: {e}")),
        }
    })();
    let _ = release_tx.send(());
    let _ = server.join();
    result.err()
}
