//! A fault-injecting TCP proxy (plain std threads and `poll(2)`, so it does not depend on
//! the runtime under test): every accepted connection is forwarded to the upstream server
//! by a thread of its own, which, as the connection's seeded fate says,
//!
//! - splits what it forwards into small segments (1 to 7 bytes over the first 16 KiB of
//!   each direction, so request and response heads arrive in pieces, then up to a size
//!   chosen per connection, 64 bytes to 64 KiB),
//! - delays some segments by up to a few milliseconds (at most 64 per connection),
//! - stalls one direction for a while (the sender's buffers fill, its writes block),
//! - resets both sides (`SO_LINGER` 0, then close) once a chosen number of bytes went
//!   through in a chosen direction.
//!
//! The proxy remembers, by the client's port, which connections it reset, so a client can
//! tell an expected failure from a server's fault.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::sys;

/// How hostile the proxy is.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Probability that a connection is reset at some point.
    pub reset: f64,
    /// Probability, per direction, of one stall.
    pub stall: f64,
    /// Longest stall.
    pub stall_max: Duration,
    /// Probability that a segment is delayed (chosen per connection up to this).
    pub delay: f64,
    /// Longest delay of one segment.
    pub delay_max: Duration,
    /// Resets happen within this many bytes of a direction.
    pub reset_within: u64,
}

/// What happened to one connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fate {
    /// Largest segment after the first 16 KiB.
    seg_max: usize,
    /// Delays left to inject on this connection.
    delays_left: u32,
    delay: f64,
    delay_max: Duration,
    /// `(direction, offset, length)`: a stall once `offset` bytes went that way.
    stall: [Option<(u64, Duration)>; 2],
    /// `(direction, offset)`: reset once `offset` bytes went that way.
    reset: Option<(usize, u64)>,
}

/// Counters over all connections.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub stalls: AtomicU64,
    pub delays: AtomicU64,
    pub segments: AtomicU64,
    pub bytes: AtomicU64,
    /// Connections whose upstream connect failed.
    pub upstream_errors: AtomicU64,
}

/// A running proxy; stops (and joins its threads) when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    /// By client port: `None` while the connection is forwarded, then whether the proxy
    /// reset it. Set to `None` when a connection is accepted (a port is reused by later
    /// connections) and to the outcome before the proxy closes its sockets, so a client
    /// that sees the close never reads a stale outcome.
    reset_ports: Arc<Mutex<HashMap<u16, Option<bool>>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Starts a proxy on loopback in front of `upstream`.
    pub fn start(upstream: SocketAddr, faults: Faults, seed: u64) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let reset_ports = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stats, reset_ports, stop, conns) = (
                stats.clone(),
                reset_ports.clone(),
                stop.clone(),
                conns.clone(),
            );
            std::thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || {
                    let mut rng = Rng::new(seed);
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((client, peer)) => {
                                let fate = fate(&faults, &mut rng);
                                let mut r = rng.fork();
                                let (stats, reset_ports, stop) =
                                    (stats.clone(), reset_ports.clone(), stop.clone());
                                stats.connections.fetch_add(1, Ordering::SeqCst);
                                reset_ports.lock().unwrap().insert(peer.port(), None);
                                let h = std::thread::spawn(move || {
                                    let record = |reset: bool| {
                                        reset_ports
                                            .lock()
                                            .unwrap()
                                            .insert(peer.port(), Some(reset));
                                    };
                                    match TcpStream::connect(upstream) {
                                        Ok(up) => {
                                            let socks = [client, up];
                                            let reset =
                                                forward(&socks, fate, &mut r, &stats, &stop);
                                            // Recorded before the sockets close.
                                            record(reset);
                                            drop(socks);
                                        }
                                        Err(_) => {
                                            stats.upstream_errors.fetch_add(1, Ordering::SeqCst);
                                            record(false);
                                            drop(client);
                                        }
                                    }
                                });
                                conns.lock().unwrap().push(h);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                })?
        };
        Ok(Proxy {
            addr,
            stats,
            reset_ports,
            stop,
            acceptor: Some(acceptor),
            conns,
        })
    }

    /// Whether the proxy reset the connection whose client port is `port`; `None` while it
    /// is still forwarding it (it records the outcome when the connection ends).
    pub fn was_reset(&self, port: u16) -> Option<bool> {
        self.reset_ports
            .lock()
            .unwrap()
            .get(&port)
            .copied()
            .flatten()
    }

    /// Waits (up to `bound`) until the proxy has recorded the connection of `port`.
    pub fn outcome(&self, port: u16, bound: Duration) -> Option<bool> {
        let end = Instant::now() + bound;
        loop {
            if let Some(r) = self.was_reset(port) {
                return Some(r);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        for c in conns {
            let _ = c.join();
        }
    }
}

fn fate(f: &Faults, rng: &mut Rng) -> Fate {
    let seg_max = [64, 1460, 16 * 1024, 64 * 1024][rng.index(4)];
    let delay = if rng.chance(0.5) {
        f.delay * rng.below(101) as f64 / 100.0
    } else {
        0.0
    };
    let mut stall = [None, None];
    for s in &mut stall {
        if rng.chance(f.stall) {
            let off = rng.below(f.reset_within);
            let len = Duration::from_millis(rng.range(10, f.stall_max.as_millis().max(10) as u64));
            *s = Some((off, len));
        }
    }
    let reset = rng
        .chance(f.reset)
        .then(|| (rng.index(2), rng.below(f.reset_within)));
    Fate {
        seg_max,
        delays_left: 64,
        delay,
        delay_max: f.delay_max,
        stall,
        reset,
    }
}

/// Bytes a direction buffers before it stops reading (backpressure on the sender).
const QUEUE_CAP: usize = 256 * 1024;
/// Over the first this-many bytes of each direction, segments are 1 to 7 bytes.
const TINY_PREFIX: u64 = 16 * 1024;

/// One direction's state.
#[derive(Default)]
struct Dir {
    queue: VecDeque<u8>,
    eof: bool,
    shut: bool,
    sent: u64,
    next_at: Option<Instant>,
    stall_until: Option<Instant>,
    stalled: bool,
}

/// Forwards between `socks` (client, upstream) until both directions ended, or a reset;
/// returns whether it reset (after setting `SO_LINGER` 0 on both: the caller's close
/// sends the resets).
fn forward(
    socks: &[TcpStream; 2],
    mut fate: Fate,
    rng: &mut Rng,
    stats: &Stats,
    stop: &AtomicBool,
) -> bool {
    for s in socks {
        let _ = s.set_nonblocking(true);
        let _ = s.set_nodelay(true);
    }
    // Direction 0: client -> upstream; direction 1: upstream -> client.
    let mut dirs = [Dir::default(), Dir::default()];
    let reset_both = |stats: &Stats| {
        for s in socks {
            let _ = sys::set_linger_zero(s.as_raw_fd());
        }
        stats.resets.fetch_add(1, Ordering::SeqCst);
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        let mut fds = [
            libc::pollfd {
                fd: socks[0].as_raw_fd(),
                events: 0,
                revents: 0,
            },
            libc::pollfd {
                fd: socks[1].as_raw_fd(),
                events: 0,
                revents: 0,
            },
        ];
        let mut wake: Option<Instant> = None;
        for (d, dir) in dirs.iter_mut().enumerate() {
            let (src, dst) = (d, 1 - d);
            if let Some(t) = dir.stall_until {
                if now >= t {
                    dir.stall_until = None;
                }
            }
            if !dir.eof && dir.queue.len() < QUEUE_CAP {
                fds[src].events |= libc::POLLIN;
            }
            if !dir.queue.is_empty() && dir.stall_until.is_none() {
                match dir.next_at {
                    Some(t) if t > now => wake = Some(wake.map_or(t, |w| w.min(t))),
                    _ => fds[dst].events |= libc::POLLOUT,
                }
            }
            if let Some(t) = dir.stall_until {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        }
        let timeout_ms = wake.map_or(100, |w| {
            w.saturating_duration_since(now).as_millis().clamp(1, 100) as libc::c_int
        });
        // SAFETY: poll reads and writes two pollfd structs of a live local array.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        for (x, f) in fds.iter().enumerate() {
            if f.revents & libc::POLLERR != 0 {
                // A reset (or another error) on one side: pass it on to the other.
                let _ = sys::set_linger_zero(socks[1 - x].as_raw_fd());
                return false;
            }
        }
        for (d, dir) in dirs.iter_mut().enumerate() {
            let (src, dst) = (d, 1 - d);
            if fds[src].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && !dir.eof {
                match (&socks[src]).read(&mut chunk) {
                    Ok(0) => dir.eof = true,
                    Ok(n) => dir.queue.extend(&chunk[..n]),
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // The sender reset: pass the reset on.
                        let _ = sys::set_linger_zero(socks[dst].as_raw_fd());
                        return false;
                    }
                }
            }
            if fds[dst].revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
                && !dir.queue.is_empty()
            {
                let max = if dir.sent < TINY_PREFIX {
                    rng.range(1, 7) as usize
                } else {
                    rng.range(1, fate.seg_max as u64) as usize
                };
                let mut seg = dir.queue.len().min(max);
                if let Some((rd, off)) = fate.reset {
                    if rd == d && dir.sent < off {
                        seg = seg.min((off - dir.sent) as usize);
                    }
                }
                let (a, b) = dir.queue.as_slices();
                let buf: Vec<u8> = a.iter().chain(b).take(seg).copied().collect();
                match (&socks[dst]).write(&buf) {
                    Ok(n) => {
                        dir.queue.drain(..n);
                        dir.sent += n as u64;
                        stats.segments.fetch_add(1, Ordering::Relaxed);
                        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        if let Some((rd, off)) = fate.reset {
                            if rd == d && dir.sent >= off {
                                reset_both(stats);
                                return true;
                            }
                        }
                        if let Some((off, len)) = fate.stall[d] {
                            if !dir.stalled && dir.sent >= off {
                                dir.stalled = true;
                                dir.stall_until = Some(Instant::now() + len);
                                stats.stalls.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        let delay =
                            fate.delays_left > 0 && fate.delay > 0.0 && rng.chance(fate.delay);
                        dir.next_at = delay.then(|| {
                            fate.delays_left -= 1;
                            stats.delays.fetch_add(1, Ordering::Relaxed);
                            Instant::now()
                                + Duration::from_micros(
                                    rng.below(fate.delay_max.as_micros() as u64 + 1),
                                )
                        });
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // The receiver is gone (reset): pass it on to the sender.
                        let _ = sys::set_linger_zero(socks[src].as_raw_fd());
                        return false;
                    }
                }
            }
            if dir.eof && dir.queue.is_empty() && !dir.shut {
                let _ = socks[dst].shutdown(std::net::Shutdown::Write);
                dir.shut = true;
            }
        }
        if dirs[0].shut && dirs[1].shut {
            return false;
        }
    }
}
