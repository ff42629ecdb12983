//! A mixed workload for one runtime, shared by the signal storm and the soak: TCP echo
//! exchanges (connect, write, read back, verify, close or reset), UDP pings, file cycles
//! (create, write, fsync, read back, verify, remove), pipe exchanges through `File`,
//! Unix stream pairs, timers, statx, open and nop, with a chosen share of them cancelled
//! at a random point. Every byte read back is verified.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use coring::fs::{File, OpenOptions};
use coring::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use coring::time::{sleep, timeout};

use crate::rng::Rng;
use crate::sys;

/// How a workload runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Client tasks issuing actions concurrently.
    pub clients: usize,
    /// Stop issuing actions at this instant.
    pub until: Instant,
    /// Share of actions cancelled at a random point (0.0 to 1.0).
    pub cancel: f64,
    /// A directory for the file cycles.
    pub dir: PathBuf,
    pub seed: u64,
}

/// What a workload did; `Send`, so a pool core can hand it back.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub actions: u64,
    pub cancelled: u64,
    pub bytes_verified: u64,
    pub connections: u64,
    pub files: u64,
    /// Errors a client saw, by `action: error` (none is expected).
    pub errors: BTreeMap<String, u64>,
    /// Of those, errors of kind `Interrupted` (EINTR reaching the user).
    pub interrupted: u64,
    /// Data that came back wrong.
    pub corrupt: Vec<String>,
    /// Errors the echo servers saw that a reset or a cancelled client explains.
    pub server_resets: u64,
    /// Other server-side errors.
    pub server_errors: BTreeMap<String, u64>,
}

impl Tally {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: Tally) {
        self.actions += other.actions;
        self.cancelled += other.cancelled;
        self.bytes_verified += other.bytes_verified;
        self.connections += other.connections;
        self.files += other.files;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.interrupted += other.interrupted;
        self.corrupt.extend(other.corrupt.into_iter().take(8));
        self.server_resets += other.server_resets;
        for (k, v) in other.server_errors {
            *self.server_errors.entry(k).or_default() += v;
        }
    }

    fn error(&mut self, action: &str, e: &io::Error) {
        if e.kind() == io::ErrorKind::Interrupted {
            self.interrupted += 1;
        }
        *self.errors.entry(format!("{action}: {e}")).or_default() += 1;
    }

    /// A short description of the errors, for a failure message.
    pub fn errors_line(&self) -> String {
        let v: Vec<String> = self
            .errors
            .iter()
            .map(|(e, n)| format!("{n}x {e}"))
            .collect();
        v.join("; ")
    }
}

/// Whether an error on the server side of a connection is explained by the client going
/// away (a reset, a cancelled exchange).
pub fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionAborted
    )
}

/// Shared state of one workload.
struct Shared {
    tcp: SocketAddr,
    udp: SocketAddr,
    data_path: PathBuf,
    tally: RefCell<Tally>,
    plan: Plan,
}

/// Runs the workload on the current runtime until `plan.until`, and returns its tally.
///
/// # Panics
///
/// If its servers cannot bind on loopback.
pub async fn run(plan: Plan) -> Tally {
    let listener = TcpListener::bind("127.0.0.1:0").expect("workload listener");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("workload udp");
    let data_path = plan.dir.join(format!("wl-data-{}", plan.seed));
    std::fs::write(&data_path, vec![7u8; 8192]).expect("workload data file");
    let shared = Rc::new(Shared {
        tcp: listener.local_addr().expect("addr"),
        udp: udp.local_addr().expect("addr"),
        data_path,
        tally: RefCell::new(Tally::default()),
        plan: plan.clone(),
    });
    let server = coring::spawn(echo_server(listener, shared.clone()));
    let udp_server = coring::spawn(udp_echo(udp));
    let mut rng = Rng::new(plan.seed);
    let clients: Vec<_> = (0..plan.clients)
        .map(|i| coring::spawn(client(shared.clone(), rng.fork(), i)))
        .collect();
    for c in clients {
        if let Err(e) = c.await {
            shared
                .tally
                .borrow_mut()
                .corrupt
                .push(format!("a client task failed: {e}"));
        }
    }
    server.abort();
    udp_server.abort();
    let _ = server.await;
    let _ = udp_server.await;
    let _ = std::fs::remove_file(&shared.data_path);
    let t = shared.tally.borrow().clone();
    t
}

async fn echo_server(listener: TcpListener, shared: Rc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let shared = shared.clone();
                drop(coring::spawn(async move {
                    if let Err(e) = echo(&s).await {
                        let mut t = shared.tally.borrow_mut();
                        if is_peer_gone(&e) {
                            t.server_resets += 1;
                        } else {
                            *t.server_errors.entry(format!("echo: {e}")).or_default() += 1;
                        }
                    }
                }));
            }
            Err(e) => {
                *shared
                    .tally
                    .borrow_mut()
                    .server_errors
                    .entry(format!("accept: {e}"))
                    .or_default() += 1;
                sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Echoes until end of file.
pub async fn echo(s: &TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (r, b) = s.read(buf).await;
        if r? == 0 {
            return Ok(());
        }
        let (r, b) = s.write_all(b).await;
        r?;
        buf = b;
    }
}

async fn udp_echo(sock: UdpSocket) {
    let mut buf = Vec::with_capacity(2048);
    loop {
        buf.clear();
        let (r, b) = sock.recv_from(buf).await;
        buf = b;
        if let Ok((_, from)) = r {
            let (_, b) = sock.send_to(buf, from).await;
            buf = b;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    TcpEcho,
    UdpPing,
    FileCycle,
    PipeExchange,
    UnixExchange,
    Timer,
    Statx,
    Open,
    Nop,
}

const ACTIONS: &[Action] = &[
    Action::TcpEcho,
    Action::TcpEcho,
    Action::UdpPing,
    Action::FileCycle,
    Action::FileCycle,
    Action::PipeExchange,
    Action::UnixExchange,
    Action::Timer,
    Action::Statx,
    Action::Open,
    Action::Nop,
];

async fn client(shared: Rc<Shared>, mut rng: Rng, id: usize) {
    let mut n = 0u64;
    while Instant::now() < shared.plan.until {
        n += 1;
        let action = ACTIONS[rng.index(ACTIONS.len())];
        let cancel_after = rng
            .chance(shared.plan.cancel)
            .then(|| Duration::from_micros(rng.below(5000)));
        let fut = act(&shared, action, &mut rng, id, n);
        let r = match cancel_after {
            Some(d) => match timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => {
                    shared.tally.borrow_mut().cancelled += 1;
                    Ok(())
                }
            },
            // Bounded even when not cancelled: a hung action fails, it does not hang.
            None => match timeout(Duration::from_secs(20), fut).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{action:?} did not finish within 20 s"),
                )),
            },
        };
        let mut t = shared.tally.borrow_mut();
        t.actions += 1;
        if let Err(e) = r {
            t.error(&format!("{action:?}"), &e);
        }
    }
}

fn corrupt(shared: &Shared, what: String) {
    let mut t = shared.tally.borrow_mut();
    if t.corrupt.len() < 8 {
        t.corrupt.push(what);
    }
}

fn verified(shared: &Shared, n: usize) {
    shared.tally.borrow_mut().bytes_verified += n as u64;
}

async fn act(shared: &Shared, action: Action, rng: &mut Rng, id: usize, n: u64) -> io::Result<()> {
    match action {
        Action::TcpEcho => {
            let s = Rc::new(TcpStream::connect(shared.tcp).await?);
            shared.tally.borrow_mut().connections += 1;
            for _ in 0..rng.range(1, 4) {
                let len = if rng.chance(0.1) {
                    rng.range(16 * 1024, 256 * 1024)
                } else {
                    rng.range(1, 4096)
                } as usize;
                let data = rng.bytes(len);
                // Written by a task of its own while this one reads the echo: a large
                // exchange would otherwise fill every buffer on the way and stall.
                let mut writer = AbortOnDrop(coring::spawn({
                    let s = s.clone();
                    let data = data.clone();
                    async move { s.write_all(data).await.0 }
                }));
                let (r, back) = s.read_exact(Vec::with_capacity(len)).await;
                r?;
                match (&mut writer.0).await {
                    Ok(r) => r?,
                    Err(e) => return Err(io::Error::other(format!("writer task: {e}"))),
                }
                if back != data {
                    corrupt(
                        shared,
                        format!("tcp echo of {len} bytes came back different"),
                    );
                }
                verified(shared, len);
            }
            if rng.chance(0.3) {
                // An abortive close: the server sees a reset.
                sys::set_linger_zero(s.as_raw_fd())?;
            } else if rng.chance(0.5) {
                s.shutdown(std::net::Shutdown::Write).await?;
                let (r, _) = s.read(Vec::with_capacity(16)).await;
                if r? != 0 {
                    corrupt(shared, "data after the echo's end".into());
                }
            }
            Ok(())
        }
        Action::UdpPing => {
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            let len = rng.range(1, 1400) as usize;
            let data = rng.bytes(len);
            let (r, data) = sock.send_to(data, shared.udp).await;
            r?;
            let (r, back) = sock.recv_from(Vec::with_capacity(2048)).await;
            let (len, _) = r?;
            if back[..len] != data[..] {
                corrupt(shared, "udp echo came back different".into());
            }
            verified(shared, len);
            Ok(())
        }
        Action::FileCycle => {
            let path = shared
                .plan
                .dir
                .join(format!("wl-{}-{id}-{n}", shared.plan.seed));
            let _cleanup = RemoveOnDrop(path.clone());
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .await?;
            let len = rng.range(1, 128 * 1024) as usize;
            let data = rng.bytes(len);
            let pos = rng.below(64 * 1024);
            let (r, data) = f.write_all_at(data, pos).await;
            r?;
            if rng.chance(0.5) {
                f.sync_all().await?;
            } else {
                f.sync_data().await?;
            }
            let (r, back) = f.read_exact_at(Vec::with_capacity(len), pos).await;
            r?;
            if back != data {
                corrupt(
                    shared,
                    format!("file read back {len} bytes at {pos} different"),
                );
            }
            let m = f.metadata().await?;
            if m.len() != pos + len as u64 {
                corrupt(
                    shared,
                    format!("file length {} after writing {len} at {pos}", m.len()),
                );
            }
            verified(shared, len);
            f.close().await?;
            coring::fs::remove_file(&path).await?;
            shared.tally.borrow_mut().files += 1;
            Ok(())
        }
        Action::PipeExchange => {
            let (r, w) = sys::pipe()?;
            let (r, w) = (File::from_std(r), File::from_std(w));
            let len = rng.range(1, 32 * 1024) as usize;
            let data = rng.bytes(len);
            let (res, data) = w.write_all_at(data, 0).await;
            res?;
            let (res, back) = r.read_exact_at(Vec::with_capacity(len), 0).await;
            res?;
            if back != data {
                corrupt(shared, "pipe data came back different".into());
            }
            verified(shared, len);
            Ok(())
        }
        Action::UnixExchange => {
            let (a, b) = UnixStream::pair()?;
            let len = rng.range(1, 64 * 1024) as usize;
            let data = rng.bytes(len);
            let (res, data) = a.write_all(data).await;
            res?;
            let (res, back) = b.read_exact(Vec::with_capacity(len)).await;
            res?;
            if back != data {
                corrupt(shared, "unix stream data came back different".into());
            }
            verified(shared, len);
            Ok(())
        }
        Action::Timer => {
            if rng.chance(0.5) {
                sleep(Duration::from_micros(rng.below(3000))).await;
            } else {
                let mut iv = coring::time::interval(Duration::from_micros(rng.range(100, 1000)));
                for _ in 0..3 {
                    iv.tick().await;
                }
            }
            Ok(())
        }
        Action::Statx => {
            let m = coring::fs::metadata(&shared.data_path).await?;
            if m.len() != 8192 {
                corrupt(shared, format!("statx length {}", m.len()));
            }
            Ok(())
        }
        Action::Open => {
            let f = File::open(&shared.data_path).await?;
            let (r, b) = f.read_at(Vec::with_capacity(8192), 0).await;
            let got = r?;
            if got != 8192 || b.iter().any(|&x| x != 7) {
                corrupt(shared, format!("read {got} bytes of the data file"));
            }
            f.close().await
        }
        Action::Nop => coring::nop().await,
    }
}

/// Aborts its task when dropped (a cancelled exchange leaves no writer behind, holding
/// the stream open).
struct AbortOnDrop<T>(coring::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a file when dropped (a cancelled file cycle leaves nothing behind).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// Used by the Linux-only rlimits children.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// Every action once, in order, each bounded: a quick proof that a runtime works (used in
/// children under low resource limits). Errors are tallied, not raised.
pub async fn smoke(dir: PathBuf, seed: u64, bound: Duration) -> Tally {
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            let mut t = Tally::default();
            t.error("bind", &e);
            return t;
        }
    };
    let udp = match UdpSocket::bind("127.0.0.1:0") {
        Ok(u) => u,
        Err(e) => {
            let mut t = Tally::default();
            t.error("udp bind", &e);
            return t;
        }
    };
    let data_path = dir.join(format!("smoke-data-{seed}"));
    if let Err(e) = std::fs::write(&data_path, vec![7u8; 8192]) {
        let mut t = Tally::default();
        t.error("data file", &e);
        return t;
    }
    let shared = Rc::new(Shared {
        tcp: listener.local_addr().expect("addr"),
        udp: udp.local_addr().expect("addr"),
        data_path,
        tally: RefCell::new(Tally::default()),
        plan: Plan {
            clients: 1,
            until: Instant::now(),
            cancel: 0.0,
            dir,
            seed,
        },
    });
    let server = coring::spawn(echo_server(listener, shared.clone()));
    let udp_server = coring::spawn(udp_echo(udp));
    let mut rng = Rng::new(seed);
    for (i, &action) in ACTIONS.iter().enumerate() {
        let r = match timeout(bound, act(&shared, action, &mut rng, 0, i as u64)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{action:?} did not finish within {bound:?}"),
            )),
        };
        let mut t = shared.tally.borrow_mut();
        t.actions += 1;
        if let Err(e) = r {
            t.error(&format!("{action:?}"), &e);
        }
    }
    server.abort();
    udp_server.abort();
    let _ = server.await;
    let _ = udp_server.await;
    let _ = std::fs::remove_file(&shared.data_path);
    let t = shared.tally.borrow().clone();
    t
}
