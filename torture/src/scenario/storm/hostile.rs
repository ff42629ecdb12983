//! Hostile-user checks of known defects: `mem::forget`ed claims (defect 2) and a buffer
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
