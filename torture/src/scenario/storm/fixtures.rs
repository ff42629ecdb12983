//! The storm's fixtures: files, pipes, streams, listeners and sockets, the helper
//! tasks and threads feeding them, and the counters the checks read.

use super::*;

/// A TCP or Unix stream, so one fixture list can hold both.
pub(super) enum AnyStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AnyStream {
    pub(super) async fn read(&self, buf: CountedBuf) -> (io::Result<usize>, CountedBuf) {
        match self {
            AnyStream::Tcp(s) => s.read(buf).await,
            AnyStream::Unix(s) => s.read(buf).await,
        }
    }

    pub(super) async fn write(&self, buf: CountedBuf) -> (io::Result<usize>, CountedBuf) {
        match self {
            AnyStream::Tcp(s) => s.write(buf).await,
            AnyStream::Unix(s) => s.write(buf).await,
        }
    }

    pub(super) async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            AnyStream::Tcp(s) => s.write_all(buf).await,
            AnyStream::Unix(s) => s.write_all(buf).await,
        }
    }

    pub(super) async fn read_vec(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            AnyStream::Tcp(s) => s.read(buf).await,
            AnyStream::Unix(s) => s.read(buf).await,
        }
    }
}

/// A stream whose peer writes the byte sequence [`pattern`]; reads verify it.
pub(super) struct SeqStream {
    pub(super) stream: AnyStream,
    pub(super) busy: Cell<bool>,
    /// Position of the next byte a read must return.
    pub(super) next: Cell<u64>,
}

/// Clears a fixture's busy flag when dropped: made when the operation's future is made and
/// moved into it, so it goes with the future also when that is dropped unpolled. `Some(i)`
/// is sequence stream `i`, `None` the UDP socket.
pub(super) struct Busy(pub(super) Rc<Fx>, pub(super) Option<usize>);

impl Drop for Busy {
    fn drop(&mut self) {
        match self.1 {
            Some(i) => self.0.seq[i].busy.set(false),
            None => self.0.udp_busy.set(false),
        }
    }
}

/// Everything the storm's operations act on.
pub(super) struct Fx {
    pub(super) data: File,
    pub(super) data_path: PathBuf,
    pub(super) fifo_path: PathBuf,
    pub(super) scratch: File,
    /// Pipes (read end as a coring `File`, write end as std) that sometimes get data.
    pub(super) pipes: Vec<(File, std::fs::File)>,
    /// Write ends of pipes whose buffer is full (nobody reads).
    pub(super) full_pipes: Vec<(File, std::fs::File)>,
    pub(super) seq: Vec<SeqStream>,
    /// Streams whose peers read and discard.
    pub(super) sinks: Vec<AnyStream>,
    /// Streams whose send buffers are full (their peers never read), with those peers.
    pub(super) full: Vec<(AnyStream, std::os::unix::net::UnixStream)>,
    /// Accepts; only the connector thread connects to it.
    pub(super) acceptor: TcpListener,
    /// Connects that complete (a task accepts and drops them).
    pub(super) open_addr: SocketAddr,
    /// Connects that stay pending: a listener whose accept queue is full.
    pub(super) stalled_addr: SocketAddr,
    pub(super) udp_in: UdpSocket,
    pub(super) udp_busy: Cell<bool>,
    pub(super) udp_next: Cell<u32>,
    pub(super) udp_out: UdpSocket,
    pub(super) udp_sink_addr: SocketAddr,
    /// Registered (on io_uring) buffers for fixed reads and writes.
    pub(super) fixed: coring::buf::FixedBufPool,
    pub(super) unix_path: PathBuf,
    /// Where directory operations create and remove their directories.
    pub(super) dir: PathBuf,
    /// Numbers directory operations' names.
    pub(super) dirs_made: Cell<u64>,
    pub(super) stats: Stats,
}

/// A thread that keeps opening and closing the FIFO's read end, so that opening it for
/// writing sometimes succeeds (and otherwise fails with ENXIO, as documented).
pub(super) fn fifo_reader(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::os::unix::fs::OpenOptionsExt;
        while !stop.load(Ordering::SeqCst) {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path);
            std::thread::sleep(Duration::from_millis(2));
            drop(f);
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// A thread that connects to `addr` again and again (closing each connection at once),
/// counting the connections made; each must come out of `accept` exactly once. It keeps
/// at most 64 connections waiting to be accepted (`accepted` is the storm's count), so
/// the accept queue never fills (a connect to a full queue waits for minutes).
pub(super) fn connector(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
) -> (std::thread::JoinHandle<()>, Arc<AtomicU64>) {
    let made = Arc::new(AtomicU64::new(0));
    let count = made.clone();
    let h = std::thread::spawn(move || {
        let mut rng = Rng::new(addr.port().into());
        while !stop.load(Ordering::SeqCst) {
            if count.load(Ordering::SeqCst) >= accepted.load(Ordering::SeqCst) + 64 {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => {
                    count.fetch_add(1, Ordering::SeqCst);
                    drop(s);
                }
                Err(e) => {
                    eprintln!("torture: storm connector: {e}");
                    return;
                }
            }
            std::thread::sleep(Duration::from_micros(rng.range(500, 4000)));
        }
    });
    (h, made)
}

pub(super) async fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let c = std::net::TcpStream::connect(l.local_addr()?)?;
    let (a, _) = l.accept().await?;
    Ok((TcpStream::from_std(c)?, a))
}

/// A Unix stream pair whose first socket's send buffer is full.
pub(super) fn full_unix() -> io::Result<(AnyStream, std::os::unix::net::UnixStream)> {
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    a.set_nonblocking(true)?;
    sys::fill(&a)?;
    Ok((AnyStream::Unix(UnixStream::from_std(a)?), b))
}

/// A pipe whose buffer is full: a coring `File` on the write end, the std read end.
pub(super) fn full_pipe() -> io::Result<(File, std::fs::File)> {
    let (r, w) = sys::pipe()?;
    sys::set_nonblocking(w.as_raw_fd(), true)?;
    sys::fill(&w)?;
    sys::set_nonblocking(w.as_raw_fd(), false)?;
    Ok((File::from_std(w), r))
}

/// A listener whose accept queue is full, so connects to it stay pending (their SYNs are
/// dropped) until cancelled.
pub(super) fn stalled_listener(
) -> io::Result<(std::net::TcpListener, Vec<std::net::TcpStream>, SocketAddr)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    // SAFETY: listen on a socket the std listener owns; a second listen changes the backlog.
    if unsafe { libc::listen(l.as_raw_fd(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let addr = l.local_addr()?;
    let mut fillers = Vec::new();
    for _ in 0..3 {
        // Completes for the first connection or two; later ones wait (SYN dropped).
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    Ok((l, fillers, addr))
}

pub(super) async fn fixtures(
    data_path: &std::path::Path,
    fifo_path: &std::path::Path,
) -> io::Result<Fx> {
    let data = File::open(data_path).await?;
    let scratch = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(data_path.with_extension("scratch"))
        .await?;
    let mut pipes = Vec::new();
    for _ in 0..4 {
        let (r, w) = sys::pipe()?;
        sys::set_nonblocking(w.as_raw_fd(), true)?;
        pipes.push((File::from_std(r), w));
    }
    let full_pipes = vec![full_pipe()?, full_pipe()?];
    let mut seq = Vec::new();
    let mut sinks = Vec::new();
    let mut peers = Vec::new();
    for i in 0..6 {
        let (a, b) = if i % 2 == 0 {
            let (a, b) = tcp_pair().await?;
            (AnyStream::Tcp(a), AnyStream::Tcp(b))
        } else {
            let (a, b) = UnixStream::pair()?;
            (AnyStream::Unix(a), AnyStream::Unix(b))
        };
        if i < 4 {
            seq.push(SeqStream {
                stream: a,
                busy: Cell::new(false),
                next: Cell::new(0),
            });
        } else {
            sinks.push(a);
        }
        peers.push(b);
    }
    let full = vec![full_unix()?, full_unix()?];
    let acceptor = TcpListener::bind("127.0.0.1:0")?;
    let open_listener = TcpListener::bind("127.0.0.1:0")?;
    let open_addr = open_listener.local_addr()?;
    let (stalled, fillers, stalled_addr) = stalled_listener()?;
    let udp_in = UdpSocket::bind("127.0.0.1:0")?;
    let udp_out = UdpSocket::bind("127.0.0.1:0")?;
    let udp_sink = UdpSocket::bind("127.0.0.1:0")?;
    let udp_sink_addr = udp_sink.local_addr()?;
    let fixed = coring::buf::FixedBufPool::new(FIXED_BUFS, 4096);
    fixed.register()?;
    data.register()?;
    let unix_path = data_path.with_extension("sock");
    let unix_listener = coring::net::UnixListener::bind(&unix_path)?;
    PEERS.with(|p| {
        *p.borrow_mut() = Some(Peers {
            streams: peers,
            open_listener,
            stalled,
            _fillers: fillers,
            udp_sink,
            unix_listener,
        })
    });
    Ok(Fx {
        data,
        data_path: data_path.to_path_buf(),
        fifo_path: fifo_path.to_path_buf(),
        scratch,
        pipes,
        full_pipes,
        seq,
        sinks,
        full,
        acceptor,
        open_addr,
        stalled_addr,
        udp_in,
        udp_busy: Cell::new(false),
        udp_next: Cell::new(0),
        udp_out,
        udp_sink_addr,
        fixed,
        unix_path,
        dir: data_path.parent().expect("a directory").to_path_buf(),
        dirs_made: Cell::new(0),
        stats: Stats::default(),
    })
}

/// The other ends of the fixtures, owned by the helper tasks.
pub(super) struct Peers {
    /// Peers of `seq` (first four: they write the sequence) and of `sinks` (they drain).
    pub(super) streams: Vec<AnyStream>,
    pub(super) open_listener: TcpListener,
    pub(super) stalled: std::net::TcpListener,
    pub(super) _fillers: Vec<std::net::TcpStream>,
    pub(super) udp_sink: UdpSocket,
    pub(super) unix_listener: coring::net::UnixListener,
}

thread_local! {
    /// Handed from `fixtures` to `spawn_helpers` (both on the runtime's thread).
    pub(super) static PEERS: RefCell<Option<Peers>> = const { RefCell::new(None) };
}

/// Starts the helper tasks: sequence writers, sink drains, the open listener's acceptor,
/// the UDP sequence sender and the UDP sink drain. They run until aborted.
pub(super) fn spawn_helpers(fx: &Rc<Fx>, rng: &mut Rng) -> Vec<coring::JoinHandle<()>> {
    let peers = PEERS
        .with(|p| p.borrow_mut().take())
        .expect("fixtures made the peers");
    let mut handles = Vec::new();
    let Peers {
        streams,
        open_listener,
        stalled,
        _fillers,
        udp_sink,
        unix_listener,
    } = peers;
    for (i, peer) in streams.into_iter().enumerate() {
        let mut r = rng.fork();
        if i < 4 {
            handles.push(coring::spawn(async move {
                let mut pos = 0u64;
                loop {
                    let len = r.range(1, 4096);
                    let chunk: Vec<u8> = (pos..pos + len).map(pattern).collect();
                    let (res, _) = peer.write_all(chunk).await;
                    if res.is_err() {
                        return;
                    }
                    pos += len;
                    sleep(Duration::from_micros(r.below(1500))).await;
                }
            }));
        } else {
            handles.push(coring::spawn(async move {
                let mut buf = Vec::with_capacity(64 * 1024);
                loop {
                    buf.clear();
                    let (res, b) = peer.read_vec(buf).await;
                    buf = b;
                    if !matches!(res, Ok(n) if n > 0) {
                        return;
                    }
                }
            }));
        }
    }
    handles.push(coring::spawn(async move {
        loop {
            match open_listener.accept().await {
                Ok((s, _)) => drop(s),
                Err(_) => sleep(Duration::from_millis(1)).await,
            }
        }
    }));
    handles.push(coring::spawn(async move {
        loop {
            match unix_listener.accept().await {
                Ok((s, _)) => drop(s),
                Err(_) => sleep(Duration::from_millis(1)).await,
            }
        }
    }));
    handles.push(coring::spawn(async move {
        // Keeps the stalled listener (and its queue fillers) open until aborted.
        let _keep = (stalled, _fillers);
        sleep(Duration::from_secs(86_400)).await;
    }));
    handles.push(coring::spawn(async move {
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            let (_, b) = udp_sink.recv_from(buf).await;
            buf = b;
        }
    }));
    let fx2 = fx.clone();
    let mut r = rng.fork();
    // Sends sequence-numbered datagrams, at most 4 ahead of what receives returned (the
    // socket buffer can hold them, so none is dropped by the kernel).
    handles.push(coring::spawn(async move {
        let to = fx2.udp_in.local_addr().expect("udp addr");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("udp sender");
        drop(fx2);
        let mut seq = 0u32;
        loop {
            let received = UDP_RECEIVED.with(Cell::get);
            if seq >= received + 4 {
                sleep(Duration::from_micros(200)).await;
                continue;
            }
            let mut d = seq.to_le_bytes().to_vec();
            d.resize(4 + r.below(200) as usize, 0x5A);
            let (res, _) = sender.send_to(d, to).await;
            if res.is_err() {
                return;
            }
            seq += 1;
            sleep(Duration::from_micros(r.below(800))).await;
        }
    }));
    handles
}

thread_local! {
    /// Datagrams the storm's receives returned (read by the sender to pace itself).
    pub(super) static UDP_RECEIVED: Cell<u32> = const { Cell::new(0) };
}
