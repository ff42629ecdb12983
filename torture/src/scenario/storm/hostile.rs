//! Hostile-user checks of issue 14's defects: `mem::forget`ed claims (defect 2) and a buffer
//! whose `Drop` panics in the driver (defect 1).

use super::*;

/// Known defect 2: a call that holds the claim on a kept operation and is then
/// `mem::forget`ed must not block or lose what later calls get. The three reproductions
/// of issue 14: UDP, accept, and a stream on the single-shot read path.
pub(super) fn forgotten_claims(ctx: &mut Ctx) {
    stage("storm: forgotten claims (defect 2)");
    let rt = ctx.runtime();
    let udp = rt.block_on(async {
        timeout(Duration::from_secs(10), async {
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            let to = sock.local_addr()?;
            let mut first = Box::pin(sock.recv_from(Vec::with_capacity(64)));
            let _ = poll_once(&mut first).await;
            drop(first);
            let mut second = Box::pin(sock.recv_from(Vec::with_capacity(64)));
            let _ = poll_once(&mut second).await;
            std::mem::forget(second);
            let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;
            sender.send_to(b"A", to)?;
            match timeout(
                Duration::from_secs(2),
                sock.recv_from(Vec::with_capacity(64)),
            )
            .await
            {
                Ok((Ok((n, _)), b)) => Ok(String::from_utf8_lossy(&b[..n]).into_owned()),
                Ok((Err(e), _)) => Err(e),
                Err(_) => Ok("(nothing within 2 s)".to_string()),
            }
        })
        .await
    });
    match udp {
        Ok(Ok(got)) => ctx.check("forgotten-claim-udp", Some(2), got == "A", || {
            format!("after a kept receive's claim was forgotten, the next recv_from got {got:?}, not \"A\"")
        }),
        Ok(Err(e)) => ctx.fail("forgotten-claim-udp", Some(2), format!("error: {e}")),
        Err(_) => ctx.fail("forgotten-claim-udp", Some(2), "hung for 10 s"),
    }
    let accept = rt.block_on(async {
        timeout(Duration::from_secs(10), async {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let addr = l.local_addr()?;
            let mut first = Box::pin(l.accept());
            let _ = poll_once(&mut first).await;
            drop(first);
            let mut second = Box::pin(l.accept());
            let _ = poll_once(&mut second).await;
            std::mem::forget(second);
            let c = std::net::TcpStream::connect(addr)?;
            let me = c.local_addr()?;
            match timeout(Duration::from_secs(2), l.accept()).await {
                Ok(Ok((_, peer))) => Ok(Some(peer == me)),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(None),
            }
        })
        .await
    });
    match accept {
        Ok(Ok(Some(true))) => ctx.check("forgotten-claim-accept", Some(2), true, String::new),
        Ok(Ok(Some(false))) => ctx.fail(
            "forgotten-claim-accept",
            Some(2),
            "the next accept returned a connection other than the one made",
        ),
        Ok(Ok(None)) => ctx.fail(
            "forgotten-claim-accept",
            Some(2),
            "after a kept accept's claim was forgotten, the next accept got nothing within 2 s",
        ),
        Ok(Err(e)) => ctx.fail("forgotten-claim-accept", Some(2), format!("error: {e}")),
        Err(_) => ctx.fail("forgotten-claim-accept", Some(2), "hung for 10 s"),
    }
    drop(rt);
    // Streams: the single-shot path (the fallback's only one; io_uring without multishot).
    let rt = ctx
        .builder()
        .multishot_reads(false)
        .build()
        .expect("runtime");
    let stream = rt.block_on(async {
        timeout(Duration::from_secs(10), async {
            let (mine, mut peer) = {
                let (a, b) = std::os::unix::net::UnixStream::pair()?;
                (UnixStream::from_std(a)?, b)
            };
            let mut first = Box::pin(mine.read(Vec::with_capacity(64)));
            let _ = poll_once(&mut first).await;
            drop(first);
            let mut second = Box::pin(mine.read(Vec::with_capacity(64)));
            let _ = poll_once(&mut second).await;
            std::mem::forget(second);
            use std::io::Write;
            peer.write_all(b"hello")?;
            sleep(Duration::from_millis(20)).await;
            peer.write_all(b"world")?;
            let mut got = Vec::new();
            while got.len() < 10 {
                match timeout(Duration::from_secs(2), mine.read(Vec::with_capacity(64))).await {
                    Ok((Ok(n), b)) if n > 0 => got.extend_from_slice(&b[..n]),
                    Ok((Ok(_), _)) => break,
                    Ok((Err(e), _)) => return Err(e),
                    Err(_) => break,
                }
            }
            Ok(String::from_utf8_lossy(&got).into_owned())
        })
        .await
    });
    match stream {
        Ok(Ok(got)) => ctx.check(
            "forgotten-claim-stream",
            Some(2),
            got == "helloworld",
            || {
                format!(
                    "single-shot stream reads after a forgotten claim returned {got:?}, not \
                 \"helloworld\""
                )
            },
        ),
        Ok(Err(e)) => ctx.fail("forgotten-claim-stream", Some(2), format!("error: {e}")),
        Err(_) => ctx.fail("forgotten-claim-stream", Some(2), "hung for 10 s"),
    }
    drop(rt);
}

/// Known defect 1: a buffer whose `Drop` panics, lent to a read that a timeout cancels,
/// is dropped by the driver when the cancel completes. The panic must be contained (as a
/// task's panic is), and the other orphans of that batch finished: their buffers dropped.
pub(super) fn panicking_drop(ctx: &mut Ctx) {
    stage("storm: panicking buffer drop (defect 1)");
    Ledger::reset();
    let rt = ctx.runtime();
    PanicBuf::arm(true);
    let result = catch(|| {
        rt.block_on(async {
            let mut pipes = Vec::new();
            let mut tasks = Vec::new();
            for i in 0..8 {
                let (r, w) = sys::pipe().expect("pipe");
                let file = Rc::new(File::from_std(r));
                pipes.push((file.clone(), w));
                tasks.push(coring::spawn(async move {
                    if i == 3 {
                        let _ = timeout(
                            Duration::from_millis(10),
                            file.read_at(PanicBuf::with_capacity(64), 0),
                        )
                        .await;
                    } else {
                        let buf = CountedBuf::with_capacity(64, 0);
                        let _ = timeout(Duration::from_millis(10), file.read_at(buf, 0)).await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            // An unrelated task must still run afterwards.
            let after = coring::spawn(async {
                sleep(Duration::from_millis(20)).await;
                7
            });
            let v = after.await.ok();
            let settled = eventually(Duration::from_secs(5), || Ledger::tally().live == 0).await;
            drop(pipes);
            (v, settled)
        })
    });
    PanicBuf::arm(false);
    let dropped = catch(move || drop(rt));
    match result {
        Ok((v, settled)) => ctx.check("panicking-drop", Some(1), v == Some(7) && settled, || {
            format!(
                "after a buffer's Drop panicked in the driver: unrelated task result \
                     {v:?}, other orphans' buffers {} still live",
                Ledger::tally().live
            )
        }),
        Err(msg) => ctx.fail(
            "panicking-drop",
            Some(1),
            format!(
                "a panicking buffer Drop escaped block_on ({msg}); {} other buffers of the \
                 batch not dropped",
                Ledger::tally().live
            ),
        ),
    }
    if let Err(msg) = dropped {
        ctx.fail(
            "panicking-drop-runtime-drop",
            Some(1),
            format!("dropping the runtime panicked: {msg}"),
        );
    }
}

/// Linux only (the accept-queue behaviour of Unix sockets differs elsewhere).
///
/// Found by the storm's `--long` run (not in issue 14): `UnixStream::connect` to a
/// listener whose accept queue is full. `connect(2)` on a blocking Unix socket waits for
/// room; an async connect must wait too (or fail only with a real error), on every
/// backend. The queue is filled with std connections, a coring connect is started, then
/// one connection is accepted: the connect must complete then, and never fail with
/// `WouldBlock`.
#[cfg(target_os = "linux")]
pub(super) fn unix_connect_full_backlog(ctx: &mut Ctx) {
    stage("storm: Unix connect to a full accept queue");
    let dir = sys::TempDir::new("unix-backlog").expect("temp dir");
    let path = dir.path("sock");
    let rt = ctx.runtime();
    let out = rt.block_on(async {
        let listener = coring::net::UnixListener::bind(&path)?;
        // Fill the accept queue: non-blocking std connects until EAGAIN.
        let mut queued = Vec::new();
        loop {
            let s = socket2_unix_nonblocking()?;
            match connect_unix(&s, &path) {
                Ok(()) => queued.push(s),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                Err(e) => return Err(e),
            }
            if queued.len() > 100_000 {
                return Err(io::Error::other("the accept queue never filled"));
            }
        }
        let n = queued.len();
        let mut connect = Box::pin(UnixStream::connect(&path));
        let first = timeout(Duration::from_millis(200), &mut connect).await;
        let early = match first {
            Ok(Err(e)) => Some(format!("{:?} ({e})", e.kind())),
            Ok(Ok(_)) => Some("connected at once with the queue full".to_string()),
            Err(_) => None,
        };
        if let Some(early) = early {
            return Ok(format!(
                "with {n} connections queued, the connect returned {early}"
            ));
        }
        // Room in the queue: the pending connect must now complete.
        let _ = listener.accept().await?;
        match timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(_)) => Ok(String::new()),
            Ok(Err(e)) => Ok(format!("after room was made, the connect failed: {e}")),
            Err(_) => Ok("after room was made, the connect did not complete within 5 s".into()),
        }
    });
    drop(rt);
    match out {
        Ok(msg) => ctx.check("unix-connect-full-backlog", None, msg.is_empty(), || msg),
        Err(e) => ctx.fail("unix-connect-full-backlog", None, format!("setup: {e}")),
    }
}

/// A non-blocking Unix stream socket (std has no unconnected UnixStream).
#[cfg(target_os = "linux")]
fn socket2_unix_nonblocking() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket() returns a new descriptor or -1; we own it from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

#[cfg(target_os = "linux")]
fn connect_unix(fd: &std::os::fd::OwnedFd, path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: a zeroed sockaddr_un is valid; we fill family and a NUL-terminated path.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "path too long"));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: connect reads a sockaddr_un of the size passed from a live local.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
