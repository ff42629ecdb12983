//! Dropping a runtime with thousands of operations in flight and
//! `Builder::shutdown_timeout(Duration::ZERO)`: the runtime must not wait, must not free
//! anything the kernel may still write (it leaks instead), and the leak must be bounded by
//! what was in flight.
//!
//! "Never freed early" is checked through pipes: each of 64 pipes has one read in flight
//! with a [`CountedBuf`]. After the runtime is gone, a byte is written into every pipe
//! whose read end is still open. A read whose buffer was dropped must not take that byte
//! (the kernel, or a blocking-pool thread, would be writing into freed memory); a read
//! still alive may take it, into its leaked buffer.
//!
//! Then the objects and futures of a dropped runtime are used on new ones: a stream whose
//! send was leaked (issue 14 defect 3), a `Sleep` and a stream read moved between runtimes
//! (defect 7), and `live_tasks()` right after spawning (defect 9).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use coring::fs::File;
use coring::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use coring::time::{sleep, timeout};

use super::{catch, eventually, poll_once, Ctx};
use crate::bufs::{CountedBuf, Ledger};
use crate::sys;
use crate::watchdog::stage;

const PIPES: usize = 64;
const FULL_STREAMS: usize = 4;
const WRITES_PER_STREAM: usize = 200;
const READ_STREAMS: usize = 8;
const LISTENERS: usize = 2;
const ACCEPTS_PER_LISTENER: usize = 200;
const UDP_SOCKETS: usize = 2;
const RECVS_PER_SOCKET: usize = 200;
const SLEEPS: usize = 2000;
const STALLED_CONNECTS: usize = 100;

/// Operations one round leaves in flight.
const OPS_PER_ROUND: usize = PIPES
    + FULL_STREAMS * WRITES_PER_STREAM
    + READ_STREAMS
    + LISTENERS * ACCEPTS_PER_LISTENER
    + UDP_SOCKETS * RECVS_PER_SOCKET
    + SLEEPS
    + STALLED_CONNECTS;

/// Descriptors the runtime's side of one round owns (each may be leaked at most once).
const FDS_PER_ROUND: usize =
    PIPES + FULL_STREAMS + READ_STREAMS + LISTENERS + UDP_SOCKETS + STALLED_CONNECTS;

/// Runs the rounds, then the reuse checks.
pub fn run(ctx: &mut Ctx) {
    if let Err(e) = sys::raise_nofile() {
        ctx.fail("setup", None, format!("raising RLIMIT_NOFILE: {e}"));
    }
    let rounds: usize = ctx.pick(2, 20);
    let fd_start = sys::fd_count();
    let rss_start = sys::rss_kib();
    let mut totals = Totals::default();
    for round in 0..rounds {
        stage(format!("runtime-drop: round {round} of {rounds}"));
        one_round(ctx, round, &mut totals);
    }
    let fd_end = sys::fd_count();
    ctx.figure("rounds", rounds);
    ctx.figure("ops", totals.spawned);
    ctx.figure("ops_cancelled", totals.in_flight);
    ctx.figure("leaked_buffers", totals.leaked_buffers);
    let by: Vec<String> = totals
        .leaked_by_kind
        .iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect();
    ctx.figure("leaked_by_kind", by.join(","));
    ctx.figure("pipe_reads_alive_after_drop", totals.alive_reads);
    ctx.figure("drop_ms_max", format!("{:.1}", totals.drop_ms_max));
    ctx.figure(
        "fds",
        format!(
            "start={fd_start} end={fd_end} (leaked {} over {rounds} rounds, bound {})",
            fd_end.saturating_sub(fd_start),
            FDS_PER_ROUND * rounds
        ),
    );
    ctx.check(
        "fd-leak-bounded",
        None,
        fd_end <= fd_start + FDS_PER_ROUND * rounds,
        || {
            format!(
                "{} descriptors leaked over {rounds} rounds; at most {FDS_PER_ROUND} per round \
                 belong to leaked operations",
                fd_end - fd_start
            )
        },
    );
    if let (Some(a), Some(b)) = (rss_start, sys::rss_kib()) {
        ctx.figure("rss_kib", format!("start={a} end={b}"));
    }
    if ctx.wants_known("stale-write-count", 3) {
        stale_write_count(ctx);
    }
    if ctx.wants_known("moved-futures", 7) {
        moved_futures(ctx);
    }
}

#[derive(Default)]
struct Totals {
    spawned: u64,
    in_flight: u64,
    leaked_buffers: u64,
    alive_reads: u64,
    drop_ms_max: f64,
    leaked_by_kind: std::collections::BTreeMap<&'static str, u64>,
}

/// Names of the buffer tags of this scenario.
const TAGS: [&str; 5] = ["?", "pipe-read", "stream-write", "stream-read", "udp-recv"];

/// The std ends of one round's fixtures, which outlive the runtime.
struct StdSide {
    pipe_writers: Vec<std::fs::File>,
    /// Peers of the full streams and of the read streams (never read, never written).
    _peers: Vec<std::os::unix::net::UnixStream>,
    /// The stalled listener and its queue fillers.
    _stalled: (std::net::TcpListener, Vec<std::net::TcpStream>),
}

/// The runtime's side, handed to the tasks (and leaked with them).
struct RtSide {
    pipe_readers: Vec<File>,
    full: Vec<UnixStream>,
    readers: Vec<UnixStream>,
    listeners: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
    stalled_addr: std::net::SocketAddr,
}

fn fixtures() -> std::io::Result<(StdSide, RtSide)> {
    let mut pipe_writers = Vec::new();
    let mut pipe_readers = Vec::new();
    for _ in 0..PIPES {
        let (r, w) = sys::pipe()?;
        sys::set_nonblocking(w.as_raw_fd(), true)?;
        pipe_readers.push(File::from_std(r));
        pipe_writers.push(w);
    }
    let mut peers = Vec::new();
    let mut full = Vec::new();
    for _ in 0..FULL_STREAMS {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        a.set_nonblocking(true)?;
        sys::fill(&a)?;
        full.push(UnixStream::from_std(a)?);
        peers.push(b);
    }
    let mut readers = Vec::new();
    for _ in 0..READ_STREAMS {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        readers.push(UnixStream::from_std(a)?);
        peers.push(b);
    }
    let listeners = (0..LISTENERS)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let udp = (0..UDP_SOCKETS)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    // SAFETY: a second listen on a socket the std listener owns changes its backlog.
    if unsafe { libc::listen(l.as_raw_fd(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let stalled_addr = l.local_addr()?;
    let fillers = (0..3)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&stalled_addr, Duration::from_millis(200)).ok()
        })
        .collect();
    Ok((
        StdSide {
            pipe_writers,
            _peers: peers,
            _stalled: (l, fillers),
        },
        RtSide {
            pipe_readers,
            full,
            readers,
            listeners,
            udp,
            stalled_addr,
        },
    ))
}

fn one_round(ctx: &mut Ctx, round: usize, totals: &mut Totals) {
    Ledger::reset();
    let (std_side, rt_side) = match fixtures() {
        Ok(f) => f,
        Err(e) => {
            ctx.fail("setup", None, format!("round {round}: fixtures: {e}"));
            return;
        }
    };
    let rt = ctx
        .builder()
        .shutdown_timeout(Duration::ZERO)
        .build()
        .expect("runtime");
    let rt_side = Rc::new(rt_side);
    let mut pipe_buf_ids = Vec::new();
    POLLED.with(|p| p.set(0));
    let started = rt.block_on(async {
        let mut spawned = 0usize;
        for i in 0..PIPES {
            let buf = CountedBuf::with_capacity(4096, 1);
            pipe_buf_ids.push(buf.id());
            let s = rt_side.clone();
            drop(coring::spawn(async move {
                polled();
                let _ = s.pipe_readers[i].read_at(buf, 0).await;
            }));
            spawned += 1;
        }
        for i in 0..FULL_STREAMS {
            for _ in 0..WRITES_PER_STREAM {
                let s = rt_side.clone();
                let buf = CountedBuf::from_vec(vec![0x42; 512], 2);
                drop(coring::spawn(async move {
                    polled();
                    let _ = s.full[i].write(buf).await;
                }));
                spawned += 1;
            }
        }
        for i in 0..READ_STREAMS {
            let s = rt_side.clone();
            let buf = CountedBuf::with_capacity(4096, 3);
            drop(coring::spawn(async move {
                polled();
                let _ = s.readers[i].read(buf).await;
            }));
            spawned += 1;
        }
        for i in 0..LISTENERS {
            for _ in 0..ACCEPTS_PER_LISTENER {
                let s = rt_side.clone();
                drop(coring::spawn(async move {
                    polled();
                    let _ = s.listeners[i].accept().await;
                }));
                spawned += 1;
            }
        }
        for i in 0..UDP_SOCKETS {
            for _ in 0..RECVS_PER_SOCKET {
                let s = rt_side.clone();
                let buf = CountedBuf::with_capacity(2048, 4);
                drop(coring::spawn(async move {
                    polled();
                    let _ = s.udp[i].recv_from(buf).await;
                }));
                spawned += 1;
            }
        }
        for i in 0..SLEEPS {
            drop(coring::spawn(async move {
                polled();
                sleep(Duration::from_secs(3600 + i as u64)).await;
            }));
            spawned += 1;
        }
        for _ in 0..STALLED_CONNECTS {
            let s = rt_side.clone();
            drop(coring::spawn(async move {
                polled();
                let _ = TcpStream::connect(s.stalled_addr).await;
            }));
            spawned += 1;
        }
        // Every task spawned, none polled yet: "spawned tasks that have not finished".
        let live_now = rt.live_tasks();
        // Let every task submit its operation (each counts its first poll).
        let submitted = eventually(Duration::from_secs(20), || {
            POLLED.with(|p| p.get()) == spawned
        })
        .await;
        coring::task::yield_now().await;
        (spawned, live_now, submitted)
    });
    let (spawned, live_before_poll, submitted) = started;
    ctx.check("submitted", None, submitted, || {
        format!(
            "round {round}: only {} of {spawned} tasks were polled within 20 s",
            POLLED.with(|p| p.get())
        )
    });
    totals.spawned += OPS_PER_ROUND as u64;
    stage(format!("runtime-drop: round {round}: dropping the runtime"));
    let in_flight = rt.ops_in_flight();
    let t = Instant::now();
    drop(rt);
    let drop_ms = t.elapsed().as_secs_f64() * 1e3;
    totals.drop_ms_max = totals.drop_ms_max.max(drop_ms);
    totals.in_flight += in_flight as u64;
    drop(rt_side);
    let tally = Ledger::tally();
    totals.leaked_buffers += tally.live;
    for (tag, n) in Ledger::live_by_tag() {
        *totals
            .leaked_by_kind
            .entry(TAGS[usize::from(tag)])
            .or_default() += n;
    }
    // A buffer lent to the kernel is leaked, not dropped; every other one is dropped.
    ctx.check("leak-bounded", None, tally.live <= in_flight as u64, || {
        format!(
            "round {round}: {} buffers leaked with {in_flight} operations in flight at the drop",
            tally.live
        )
    });
    ctx.check("no-double-drop", None, tally.double == 0, || {
        format!("round {round}: {} buffers dropped twice", tally.double)
    });
    if round == 0 && ctx.wants_known("live-tasks", 9) {
        ctx.check("live-tasks", Some(9), live_before_poll == spawned, || {
            format!(
                "live_tasks() said {live_before_poll} right after {spawned} tasks were spawned \
                 (none polled yet, none finished)"
            )
        });
    }
    stage(format!("runtime-drop: round {round}: probing the pipes"));
    freed_early_probe(ctx, round, &std_side, &pipe_buf_ids, totals);
    drop(std_side);
}

/// Writes a byte into each pipe and checks that no read whose buffer was dropped takes it.
fn freed_early_probe(
    ctx: &mut Ctx,
    round: usize,
    std_side: &StdSide,
    ids: &[u32],
    totals: &mut Totals,
) {
    let mut open = Vec::new();
    for (i, w) in std_side.pipe_writers.iter().enumerate() {
        match (&*w).write(&[0xEE]) {
            Ok(1) => open.push(i),
            // The read end is closed: the read and its descriptor are gone.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            other => ctx.fail(
                "probe",
                None,
                format!("round {round}: writing pipe {i}: {other:?}"),
            ),
        }
    }
    // A read still alive takes its byte asynchronously; give it time to (the check can
    // only miss a defect by waiting too little, never invent one).
    std::thread::sleep(Duration::from_millis(100));
    let mut early = Vec::new();
    for &i in &open {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int into a live local; the descriptor is open.
        let rc =
            unsafe { libc::ioctl(std_side.pipe_writers[i].as_raw_fd(), libc::FIONREAD, &mut n) };
        if rc != 0 {
            continue;
        }
        if n == 0 {
            totals.alive_reads += 1;
            if Ledger::is_dropped(ids[i]) {
                early.push(i);
            }
        }
    }
    ctx.check("never-freed-early", None, early.is_empty(), || {
        format!(
            "round {round}: pipes {early:?}: a read took a byte written after the runtime was \
             dropped, but its buffer had been dropped already"
        )
    });
}

thread_local! {
    /// Tasks of the current round that have been polled (and so submitted their op).
    static POLLED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts a task's first poll.
fn polled() {
    POLLED.with(|p| p.set(p.get() + 1));
}

/// Known defect 3: a stream whose send was leaked by a runtime dropped with
/// `shutdown_timeout(0)` (or whose send future was `mem::forget`ed) must still be
/// writable on a new runtime once its peer has read.
fn stale_write_count(ctx: &mut Ctx) {
    stage("runtime-drop: stale write count (defect 3)");
    for how in ["leaked", "forgotten"] {
        let result = catch(|| -> std::io::Result<String> {
            let (a, mut peer) = std::os::unix::net::UnixStream::pair()?;
            a.set_nonblocking(true)?;
            sys::fill(&a)?;
            peer.set_nonblocking(true)?;
            let stream = Rc::new(UnixStream::from_std(a)?);
            let rt1 = ctx.builder().shutdown_timeout(Duration::ZERO).build()?;
            rt1.block_on(async {
                let s = stream.clone();
                let mut w = Box::pin(async move { s.write(vec![1u8; 1024]).await });
                let _ = poll_once(&mut w).await;
                if how == "forgotten" {
                    std::mem::forget(w);
                } else {
                    // Left in flight: the runtime's drop leaks it (zero shutdown timeout).
                    drop(coring::spawn(w));
                    coring::task::yield_now().await;
                }
            });
            // The peer reads everything: the socket has room again.
            let drain = |peer: &mut std::os::unix::net::UnixStream| {
                let mut sink = vec![0u8; 1 << 16];
                while let Ok(n) = std::io::Read::read(peer, &mut sink) {
                    if n == 0 {
                        break;
                    }
                }
            };
            if how == "forgotten" {
                // The forgotten send completes and is reaped on its own runtime.
                drain(&mut peer);
                rt1.block_on(sleep(Duration::from_millis(50)));
                drain(&mut peer);
            }
            drop(rt1);
            drain(&mut peer);
            // The runtime's identity is its address (issue 14): keep the first runtime's
            // freed memory taken, so that the next one cannot inherit its identity by
            // chance and hide the stale count.
            let _spacers = (ctx.runtime(), ctx.runtime());
            let rt2 = ctx.runtime();
            let r = rt2.block_on(async {
                timeout(Duration::from_secs(5), async {
                    let (w, _) = stream.write(b"x".to_vec()).await;
                    let sd = stream.shutdown(std::net::Shutdown::Write).await;
                    format!(
                        "write: {:?}, shutdown(Write): {:?}",
                        w.map_err(|e| e.to_string()),
                        sd.map_err(|e| e.to_string())
                    )
                })
                .await
                .unwrap_or_else(|_| "write or shutdown hung for 5 s".to_string())
            });
            Ok(r)
        });
        let name = format!("stale-write-count-{how}");
        match result {
            Ok(Ok(r)) => ctx.check(&name, Some(3), r == "write: Ok(1), shutdown(Write): Ok(())", || {
                format!("a stream whose send was {how} on a dropped runtime, used on a new one: {r}")
            }),
            Ok(Err(e)) => ctx.fail(&name, Some(3), format!("setup: {e}")),
            Err(p) => ctx.fail(&name, Some(3), format!("panicked: {p}")),
        }
    }
}

/// Known defect 7: a future polled on one runtime and then awaited on another of the same
/// thread must complete there or panic with advice, never hang.
fn moved_futures(ctx: &mut Ctx) {
    stage("runtime-drop: futures moved between runtimes (defect 7)");
    for keep_first in [true, false] {
        let name = if keep_first {
            "moved-sleep-first-alive"
        } else {
            "moved-sleep-first-dropped"
        };
        let r = catch(|| {
            let rt1 = ctx.runtime();
            let mut s = Box::pin(sleep(Duration::from_millis(50)));
            rt1.block_on(async {
                let _ = poll_once(&mut s).await;
            });
            if !keep_first {
                drop(rt1);
            }
            let rt2 = ctx.runtime();
            rt2.block_on(async { timeout(Duration::from_secs(3), s).await.is_ok() })
        });
        match r {
            Ok(true) => ctx.check(name, Some(7), true, String::new),
            Ok(false) => ctx.fail(
                name,
                Some(7),
                "a Sleep polled on one runtime and awaited on another never fired (3 s)",
            ),
            // A panic that says what to do is the documented outcome.
            Err(msg) => ctx.check(name, Some(7), msg.contains("runtime"), || {
                format!("panicked without advice: {msg}")
            }),
        }
    }
    let r = catch(|| -> std::io::Result<bool> {
        let (a, mut peer) = std::os::unix::net::UnixStream::pair()?;
        let stream = UnixStream::from_std(a)?;
        let rt1 = ctx.runtime();
        let mut read = Box::pin(stream.read(Vec::with_capacity(64)));
        rt1.block_on(async {
            let _ = poll_once(&mut read).await;
        });
        peer.write_all(b"moved")?;
        let rt2 = ctx.runtime();
        Ok(rt2.block_on(async { timeout(Duration::from_secs(3), read).await.is_ok() }))
    });
    let name = "moved-stream-read";
    match r {
        Ok(Ok(true)) => ctx.check(name, Some(7), true, String::new),
        Ok(Ok(false)) => ctx.fail(
            name,
            Some(7),
            "a stream read polled on one runtime and awaited on another hung (3 s)",
        ),
        Ok(Err(e)) => ctx.fail(name, Some(7), format!("setup: {e}")),
        Err(msg) => ctx.check(name, Some(7), msg.contains("runtime"), || {
            format!("panicked without advice: {msg}")
        }),
    }
}
