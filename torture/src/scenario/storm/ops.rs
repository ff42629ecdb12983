//! The storm's operations: one builder per kind, the drop points, and the workers that
//! issue them.

use super::*;

/// The operation kinds; the discriminant tags buffers in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    FileRead = 1,
    FileWrite,
    Fsync,
    PipeRead,
    PipeWrite,
    StreamRead,
    StreamWrite,
    FullWrite,
    Accept,
    Connect,
    ConnectStalled,
    UdpRecv,
    UdpSend,
    Sleep,
    SleepLong,
    Interval,
    Open,
    OpenFifo,
    Statx,
    Nop,
    ReadvAt,
    WritevAt,
    FixedRead,
    FixedWrite,
    UnixConnect,
    MkdirRmdir,
    SleepReset,
}

pub(super) const KINDS: &[Kind] = &[
    Kind::FileRead,
    Kind::FileWrite,
    Kind::Fsync,
    Kind::PipeRead,
    Kind::PipeWrite,
    Kind::StreamRead,
    Kind::StreamWrite,
    Kind::FullWrite,
    Kind::Accept,
    Kind::Connect,
    Kind::ConnectStalled,
    Kind::UdpRecv,
    Kind::UdpSend,
    Kind::Sleep,
    Kind::SleepLong,
    Kind::Interval,
    Kind::Open,
    Kind::OpenFifo,
    Kind::Statx,
    Kind::Nop,
    Kind::ReadvAt,
    Kind::WritevAt,
    Kind::FixedRead,
    Kind::FixedWrite,
    Kind::UnixConnect,
    Kind::MkdirRmdir,
    Kind::SleepReset,
];

impl Kind {
    /// Whether the operation finishes by itself (nothing it waits for may never come).
    pub(super) fn completes(self) -> bool {
        matches!(
            self,
            Kind::FileRead
                | Kind::FileWrite
                | Kind::Fsync
                | Kind::StreamWrite
                | Kind::Connect
                | Kind::UdpSend
                | Kind::Sleep
                | Kind::Open
                | Kind::OpenFifo
                | Kind::Statx
                | Kind::Nop
                | Kind::ReadvAt
                | Kind::WritevAt
                | Kind::FixedRead
                | Kind::FixedWrite
                | Kind::UnixConnect
                | Kind::MkdirRmdir
                | Kind::SleepReset
        )
    }

    pub(super) fn from_tag(t: u8) -> Option<Kind> {
        KINDS.iter().copied().find(|k| *k as u8 == t)
    }
}

/// Where an operation's future is dropped.
#[derive(Debug, Clone, Copy)]
pub(super) enum DropAt {
    /// Never polled.
    Unpolled,
    /// Right after its first poll (the operation submitted).
    FirstPoll,
    /// After this many more polls, yielding to the runtime in between.
    Yields(u32),
    /// By `timeout` after this many microseconds.
    Timeout(u64),
    /// Not dropped: awaited to the end (bounded).
    Await,
    /// Its task aborted after this many yields.
    Abort(u32),
    /// Bound to a `CancelToken`, polled this many times (yielding in between; 0: never
    /// before the cancel), the token cancelled, then awaited: it must end (with its
    /// result, or `ECANCELED`), except a sleep, which the token does not cover.
    Token(u32),
}

pub(super) fn pick_drop(rng: &mut Rng) -> DropAt {
    match rng.below(100) {
        0..=9 => DropAt::Unpolled,
        10..=29 => DropAt::FirstPoll,
        30..=44 => DropAt::Yields(rng.range(1, 4) as u32),
        45..=59 => DropAt::Timeout(rng.below(3000)),
        60..=74 => DropAt::Token(rng.below(4) as u32),
        75..=87 => DropAt::Await,
        _ => DropAt::Abort(rng.below(4) as u32),
    }
}

pub(super) type OpFut = Pin<Box<dyn Future<Output = io::Result<()>>>>;

pub(super) async fn worker(fx: Rc<Fx>, mut rng: Rng, target: u64) {
    while fx.stats.started.get() < target {
        let kind = KINDS[rng.index(KINDS.len())];
        let Some(fut) = make_op(&fx, kind, &mut rng) else {
            continue;
        };
        fx.stats.started.set(fx.stats.started.get() + 1);
        *fx.stats.per_kind.borrow_mut().entry(kind).or_default() += 1;
        let at = pick_drop(&mut rng);
        drive(&fx.stats, kind, fut, at).await;
    }
}

/// Runs `fut` to the drop point `at`, counting how it ended.
pub(super) async fn drive(stats: &Stats, kind: Kind, mut fut: OpFut, at: DropAt) {
    let done = |r: io::Result<()>| {
        stats.completed.set(stats.completed.get() + 1);
        if let Err(e) = r {
            stats.error(kind, &e);
        }
    };
    let in_flight = || {
        stats
            .cancelled_in_flight
            .set(stats.cancelled_in_flight.get() + 1)
    };
    match at {
        DropAt::Unpolled => {
            drop(fut);
            stats
                .cancelled_unpolled
                .set(stats.cancelled_unpolled.get() + 1);
        }
        DropAt::FirstPoll | DropAt::Yields(_) => {
            let extra = if let DropAt::Yields(n) = at { n } else { 0 };
            for i in 0..=extra {
                if i > 0 {
                    coring::task::yield_now().await;
                }
                if let Poll::Ready(r) = poll_once(&mut fut).await {
                    return done(r);
                }
            }
            drop(fut);
            in_flight();
        }
        DropAt::Timeout(us) => match timeout(Duration::from_micros(us), fut).await {
            Ok(r) => done(r),
            Err(_) => in_flight(),
        },
        DropAt::Await => {
            let bound = if kind.completes() {
                MUST_COMPLETE
            } else {
                Duration::from_millis(5)
            };
            match timeout(bound, fut).await {
                Ok(r) => done(r),
                Err(_) if kind.completes() => {
                    stats.anomaly(format!("a {kind:?} did not complete within {bound:?}"));
                    in_flight();
                }
                Err(_) => in_flight(),
            }
        }
        DropAt::Token(polls) => {
            let token = coring::cancel::CancelToken::new();
            let mut fut = token.bind(fut);
            for i in 0..polls {
                if i > 0 {
                    coring::task::yield_now().await;
                }
                if let Poll::Ready(r) = poll_once(&mut fut).await {
                    return done(r);
                }
            }
            token.cancel();
            // Only a long sleep outlives the cancel (timers are not the token's).
            let ends = kind != Kind::SleepLong;
            let bound = if ends {
                MUST_COMPLETE
            } else {
                Duration::from_millis(5)
            };
            match timeout(bound, fut).await {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => {
                    stats
                        .cancelled_by_token
                        .set(stats.cancelled_by_token.get() + 1);
                }
                Ok(r) => done(r),
                Err(_) if ends => {
                    stats.anomaly(format!(
                        "a {kind:?} did not end within {bound:?} after its token was cancelled"
                    ));
                    in_flight();
                }
                Err(_) => in_flight(),
            }
        }
        DropAt::Abort(yields) => {
            let h = coring::spawn(fut);
            for _ in 0..yields {
                coring::task::yield_now().await;
            }
            h.abort();
            match h.await {
                Ok(r) => done(r),
                Err(e) if e.is_cancelled() => in_flight(),
                Err(e) => stats.anomaly(format!("a {kind:?} task failed: {e}")),
            }
        }
    }
}

pub(super) fn small(rng: &mut Rng) -> usize {
    if rng.chance(0.2) {
        rng.range(1, 16) as usize
    } else {
        rng.range(64, 8192) as usize
    }
}

pub(super) fn write_buf(kind: Kind, rng: &mut Rng) -> CountedBuf {
    let len = small(rng);
    CountedBuf::from_vec(vec![rng.below(256) as u8; len], kind as u8)
}

/// Builds one operation of `kind` as a boxed future, or `None` if the fixture it needs is
/// in use by another read (one read at a time per stream and per UDP socket: with two in
/// flight the order of their bytes is not defined).
pub(super) fn make_op(fx: &Rc<Fx>, kind: Kind, rng: &mut Rng) -> Option<OpFut> {
    let fx = fx.clone();
    let tag = kind as u8;
    Some(match kind {
        Kind::FileRead => {
            let pos = rng.below(DATA_LEN);
            let buf = CountedBuf::with_capacity(small(rng), tag);
            Box::pin(async move {
                let (r, b) = fx.data.read_at(buf, pos).await;
                let n = r?;
                let want: Vec<u8> = (pos..pos + n as u64).map(pattern).collect();
                if b.bytes()[..n] != want[..] || (n == 0 && pos < DATA_LEN) {
                    fx.stats
                        .anomaly(format!("file read at {pos} returned wrong bytes ({n})"));
                }
                Ok(())
            })
        }
        Kind::FileWrite => {
            let buf = write_buf(kind, rng);
            let pos = rng.below(1 << 20);
            Box::pin(async move { fx.scratch.write_at(buf, pos).await.0.map(drop) })
        }
        Kind::Fsync => Box::pin(async move { fx.scratch.sync_data().await }),
        Kind::PipeRead => {
            let i = rng.index(fx.pipes.len());
            if rng.chance(0.4) {
                use std::io::Write;
                let n = rng.range(1, 64) as usize;
                let _ = (&fx.pipes[i].1).write(&vec![1u8; n]);
            }
            let buf = CountedBuf::with_capacity(small(rng), tag);
            Box::pin(async move { fx.pipes[i].0.read_at(buf, 0).await.0.map(drop) })
        }
        Kind::PipeWrite => {
            let i = rng.index(fx.full_pipes.len());
            let buf = write_buf(kind, rng);
            Box::pin(async move { fx.full_pipes[i].0.write_at(buf, 0).await.0.map(drop) })
        }
        Kind::StreamRead => {
            let i = rng.index(fx.seq.len());
            if fx.seq[i].busy.replace(true) {
                return None;
            }
            let buf = CountedBuf::with_capacity(small(rng), tag);
            let busy = Busy(fx.clone(), Some(i));
            Box::pin(async move {
                let _busy = &busy;
                let s = &fx.seq[i];
                let (r, b) = s.stream.read(buf).await;
                let n = r?;
                verify_sequence(&fx.stats, s, &b.bytes()[..n], i);
                Ok(())
            })
        }
        Kind::StreamWrite => {
            let i = rng.index(fx.sinks.len());
            let buf = write_buf(kind, rng);
            Box::pin(async move { fx.sinks[i].write(buf).await.0.map(drop) })
        }
        Kind::FullWrite => {
            let i = rng.index(fx.full.len());
            let buf = write_buf(kind, rng);
            Box::pin(async move { fx.full[i].0.write(buf).await.0.map(drop) })
        }
        Kind::Accept => Box::pin(async move {
            let (s, _) = fx.acceptor.accept().await?;
            drop(s);
            fx.stats.accepted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }),
        Kind::Connect => Box::pin(async move {
            let s = TcpStream::connect(fx.open_addr).await?;
            // A reset instead of a FIN: no TIME_WAIT left behind by tens of thousands of
            // connections.
            sys::set_linger_zero(s.as_raw_fd())?;
            Ok(())
        }),
        Kind::ConnectStalled => Box::pin(async move {
            let s = TcpStream::connect(fx.stalled_addr).await?;
            sys::set_linger_zero(s.as_raw_fd())?;
            Ok(())
        }),
        Kind::UdpRecv => {
            if fx.udp_busy.replace(true) {
                return None;
            }
            let buf = CountedBuf::with_capacity(rng.range(64, 2048) as usize, tag);
            let busy = Busy(fx.clone(), None);
            Box::pin(async move {
                let _busy = &busy;
                let (r, b) = fx.udp_in.recv_from(buf).await;
                let (n, _) = r?;
                verify_datagram(&fx, &b.bytes()[..n]);
                Ok(())
            })
        }
        Kind::UdpSend => {
            let buf = write_buf(kind, rng);
            Box::pin(async move { fx.udp_out.send_to(buf, fx.udp_sink_addr).await.0.map(drop) })
        }
        Kind::Sleep => {
            let d = Duration::from_micros(rng.below(3000));
            Box::pin(async move {
                let s = sleep(d);
                let deadline = s.deadline();
                s.await;
                let now = std::time::Instant::now();
                if now < deadline {
                    fx.stats.anomaly(format!(
                        "a sleep of {d:?} fired {:?} before its deadline",
                        deadline - now
                    ));
                }
                Ok(())
            })
        }
        Kind::SleepReset => {
            let first = Duration::from_micros(rng.below(3000));
            let second = Duration::from_micros(rng.below(3000));
            Box::pin(async move {
                let mut s = sleep(first);
                let _ = poll_once(&mut s).await;
                coring::task::yield_now().await;
                let deadline = std::time::Instant::now() + second;
                s.reset(deadline);
                s.await;
                let now = std::time::Instant::now();
                if now < deadline {
                    fx.stats.anomaly(format!(
                        "a sleep reset to {second:?} fired {:?} before its new deadline",
                        deadline - now
                    ));
                }
                Ok(())
            })
        }
        Kind::SleepLong => Box::pin(async move {
            sleep(Duration::from_secs(3600)).await;
            Ok(())
        }),
        Kind::Interval => {
            let period = match rng.below(4) {
                0 => Duration::from_millis(1),
                1 => Duration::from_secs(3600),
                2 => Duration::from_secs(u64::MAX),
                _ => Duration::MAX,
            };
            Box::pin(async move {
                // Its own task: a panic in `tick` (issue 14 defect 6) is contained there and
                // counted, and the storm goes on.
                let h = coring::spawn(async move {
                    let mut iv = coring::time::interval(period);
                    iv.tick().await;
                    let _ = timeout(Duration::from_millis(2), iv.tick()).await;
                });
                if let Err(e) = h.await {
                    if e.is_panic() {
                        let msg = crate::scenario::panic_message(&*e.into_panic());
                        fx.stats
                            .interval_panics
                            .set(fx.stats.interval_panics.get() + 1);
                        fx.stats
                            .interval_panic_msg
                            .borrow_mut()
                            .get_or_insert(format!("interval({period:?}): {msg}"));
                    }
                }
                Ok(())
            })
        }
        Kind::Open => Box::pin(async move {
            let f = File::open(&fx.data_path).await?;
            drop(f);
            Ok(())
        }),
        Kind::OpenFifo => Box::pin(async move {
            match OpenOptions::new().write(true).open(&fx.fifo_path).await {
                Ok(f) => f.close().await,
                // No reader at the moment: documented, as open(2) with O_NONBLOCK.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
                Err(e) => Err(e),
            }
        }),
        Kind::Statx => Box::pin(async move {
            let m = coring::fs::metadata(&fx.data_path).await?;
            if m.len() != DATA_LEN {
                fx.stats
                    .anomaly(format!("statx said {} bytes, not {DATA_LEN}", m.len()));
            }
            Ok(())
        }),
        Kind::Nop => Box::pin(coring::nop()),
        Kind::ReadvAt => {
            let pos = rng.below(DATA_LEN);
            let bufs = vec![
                CountedBuf::with_capacity(small(rng), tag),
                CountedBuf::with_capacity(small(rng), tag),
            ];
            Box::pin(async move {
                let (r, b) = fx.data.readv_at(bufs, pos).await;
                let mut left = r?;
                let mut at = pos;
                for buf in &b {
                    let n = left.min(buf.bytes().len());
                    let want: Vec<u8> = (at..at + n as u64).map(pattern).collect();
                    if buf.bytes()[..n] != want[..] {
                        fx.stats
                            .anomaly(format!("readv at {pos} returned wrong bytes"));
                    }
                    at += n as u64;
                    left -= n;
                }
                Ok(())
            })
        }
        Kind::WritevAt => {
            let bufs = vec![write_buf(kind, rng), write_buf(kind, rng)];
            let pos = rng.below(1 << 20);
            Box::pin(async move { fx.scratch.writev_at(bufs, pos).await.0.map(drop) })
        }
        Kind::FixedRead => {
            let buf = fx.fixed.try_take()?;
            let pos = rng.below(DATA_LEN);
            Box::pin(async move {
                let (r, b) = fx.data.read_fixed_at(buf, pos).await;
                let n = r?;
                let want: Vec<u8> = (pos..pos + n as u64).map(pattern).collect();
                if b[..n] != want[..] {
                    fx.stats
                        .anomaly(format!("fixed read at {pos} returned wrong bytes"));
                }
                Ok(())
            })
        }
        Kind::FixedWrite => {
            let mut buf = fx.fixed.try_take()?;
            buf.clear();
            buf.extend_from_slice(&vec![rng.below(256) as u8; small(rng).min(4096)]);
            let pos = rng.below(1 << 20);
            Box::pin(async move { fx.scratch.write_fixed_at(buf, pos).await.0.map(drop) })
        }
        // A full accept queue (the acceptor task lagging) makes the connect wait, as a
        // blocking connect(2) does (`unix-connect-full-backlog` checks that on its own).
        Kind::UnixConnect => {
            Box::pin(async move { UnixStream::connect(&fx.unix_path).await.map(drop) })
        }
        Kind::MkdirRmdir => {
            let n = fx.dirs_made.get();
            fx.dirs_made.set(n + 1);
            let path = fx.dir.join(format!("d{n}"));
            Box::pin(async move {
                coring::fs::create_dir(&path).await?;
                coring::fs::rename(&path, path.with_extension("moved")).await?;
                coring::fs::remove_dir(path.with_extension("moved")).await
            })
        }
    })
}

pub(super) fn verify_sequence(stats: &Stats, s: &SeqStream, got: &[u8], i: usize) {
    let start = s.next.get();
    if let Some(off) = got
        .iter()
        .enumerate()
        .position(|(k, &b)| b != pattern(start + k as u64))
    {
        stats.anomaly(format!(
            "stream {i}: byte {} of the sequence is {} not {} (bytes lost or reordered by \
             cancelled reads)",
            start + off as u64,
            got[off],
            pattern(start + off as u64)
        ));
        // Resynchronise: skip the check until the sequence lines up again is not possible;
        // count the rest as seen so one loss is reported once.
    }
    s.next.set(start + got.len() as u64);
    stats
        .stream_bytes
        .set(stats.stream_bytes.get() + got.len() as u64);
}

pub(super) fn verify_datagram(fx: &Fx, got: &[u8]) {
    let stats = &fx.stats;
    let Some(seq) = got
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    else {
        stats.anomaly(format!("a datagram of {} bytes", got.len()));
        return;
    };
    let want = fx.udp_next.get();
    if seq != want {
        stats.anomaly(format!(
            "datagram {seq} received when {want} was next (lost or reordered by cancelled \
             receives)"
        ));
    }
    fx.udp_next.set(seq + 1);
    UDP_RECEIVED.with(|r| r.set(seq + 1));
    stats.datagrams.set(stats.datagrams.get() + 1);
}
