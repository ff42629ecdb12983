//! The storm's channel part: cancellation of `send` and `recv` on bounded channels, where
//! a lost wake-up hangs and a lost or duplicated value breaks exactly-once delivery.
//!
//! Sixteen senders push numbered [`CountedBuf`]s into a channel of capacity 4, a third of
//! the sends under a timeout of 0–200 µs (cancelled while waiting for room); the receiver
//! cancels a third of its receives the same way. Once every sender is done and gone, the
//! receiver sees the end. Checks: every send that returned `Ok` was received, exactly
//! once; nothing was received that was never sent; every value was dropped exactly once
//! (received or cancelled with its send); nobody waited for ever. Twice: `sync::mpsc`
//! across the two cores of a `Pool` (sends on one, receives on the other), and
//! `sync::local` within one runtime.

use std::collections::BTreeSet;
use std::time::Duration;

use coring::time::timeout;
use coring::Pool;

use super::Ctx;
use crate::bufs::{CountedBuf, Ledger};
use crate::rng::Rng;
use crate::watchdog::stage;

const SENDERS: u64 = 16;
const CAPACITY: usize = 4;

/// What one sender did: ids sent (`Ok`), ids whose send was cancelled.
type Sent = (Vec<u32>, Vec<u32>);

/// A possibly cancelled pause: `Some(d)` a third of the time.
fn maybe_cancel(rng: &mut Rng) -> Option<Duration> {
    rng.chance(1.0 / 3.0)
        .then(|| Duration::from_micros(rng.below(200)))
}

/// Runs both channel kinds; `per_sender` values each.
pub fn run(ctx: &mut Ctx, per_sender: u64) {
    stage("storm: channels (mpsc across a pool)");
    mpsc(ctx, per_sender);
    stage("storm: channels (local)");
    local(ctx, per_sender);
}

/// Checks what the senders and the receiver report.
fn verify(ctx: &mut Ctx, kind: &str, sent: Vec<Sent>, received: Vec<u32>) {
    let mut ok = BTreeSet::new();
    let mut cancelled = BTreeSet::new();
    for (o, c) in sent {
        ok.extend(o);
        cancelled.extend(c);
    }
    let got: BTreeSet<u32> = received.iter().copied().collect();
    let dups = received.len() - got.len();
    let lost: Vec<u32> = ok.difference(&got).take(5).copied().collect();
    let lost_n = ok.difference(&got).count();
    let phantom = got
        .iter()
        .filter(|id| !ok.contains(id) && !cancelled.contains(id))
        .count();
    let delivered_cancelled = got.intersection(&cancelled).count();
    ctx.figure(
        &format!("channels.{kind}"),
        format!(
            "sent_ok={} cancelled_sends={} received={} (of them cancelled sends that had \
             already enqueued: {delivered_cancelled})",
            ok.len(),
            cancelled.len(),
            received.len()
        ),
    );
    ctx.check(
        &format!("channels-{kind}-no-loss"),
        None,
        lost_n == 0,
        || format!("{lost_n} values whose send returned Ok were never received, e.g. ids {lost:?}"),
    );
    ctx.check(
        &format!("channels-{kind}-no-duplicates"),
        None,
        dups == 0,
        || format!("{dups} values received twice"),
    );
    ctx.check(
        &format!("channels-{kind}-no-phantoms"),
        None,
        phantom == 0,
        || format!("{phantom} values received that no sender sent"),
    );
    let t = Ledger::tally();
    ctx.check(
        &format!("channels-{kind}-dropped-once"),
        None,
        t.live == 0 && t.double == 0,
        || {
            format!(
                "{} values never dropped, {} dropped twice",
                t.live, t.double
            )
        },
    );
}

async fn sender<F, Fut>(send: F, per_sender: u64, seed: u64) -> Sent
where
    F: Fn(CountedBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), ()>>,
{
    let mut rng = Rng::new(seed);
    let (mut ok, mut cancelled) = (Vec::new(), Vec::new());
    for _ in 0..per_sender {
        let msg = CountedBuf::from_vec(Vec::new(), 0);
        let id = msg.id();
        match maybe_cancel(&mut rng) {
            Some(d) => match timeout(d, send(msg)).await {
                Ok(Ok(())) => ok.push(id),
                Ok(Err(())) => {}
                Err(_) => cancelled.push(id),
            },
            None => {
                if send(msg).await.is_ok() {
                    ok.push(id);
                }
            }
        }
        if rng.chance(0.1) {
            coring::task::yield_now().await;
        }
    }
    (ok, cancelled)
}

fn mpsc(ctx: &mut Ctx, per_sender: u64) {
    Ledger::reset();
    let pool = match Pool::builder()
        .cores(2)
        .pin(false)
        .backend(ctx.backend)
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            ctx.fail("channels-mpsc", None, format!("building the pool: {e}"));
            return;
        }
    };
    let (tx, mut rx) = coring::sync::mpsc::channel::<CountedBuf>(CAPACITY);
    let seed = ctx.rng.next_u64();
    let mut receiver = pool.spawn_on(1, move || async move {
        let mut rng = Rng::new(seed);
        let mut got = Vec::new();
        loop {
            let next = match maybe_cancel(&mut rng) {
                Some(d) => match timeout(d, rx.recv()).await {
                    Ok(v) => v,
                    Err(_) => continue,
                },
                None => rx.recv().await,
            };
            match next {
                Some(m) => got.push(m.id()),
                None => return got,
            }
        }
    });
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let tx = tx.clone();
            pool.spawn_on(0, move || async move {
                let tx = std::rc::Rc::new(tx);
                sender(
                    |m| {
                        let tx = tx.clone();
                        async move { tx.send(m).await.map_err(drop) }
                    },
                    per_sender,
                    seed ^ (i + 1),
                )
                .await
            })
        })
        .collect();
    drop(tx);
    let bound = Duration::from_secs(120);
    let mut sent = Vec::new();
    let mut hung = None;
    for mut h in senders {
        match super::catch(|| h.wait(bound)) {
            Ok(Ok(s)) => sent.push(s),
            Ok(Err(e)) => hung = Some(format!("a sender failed: {e}")),
            Err(p) => hung = Some(format!("a sender: {p} (a lost wake-up?)")),
        }
    }
    let received = match super::catch(|| receiver.wait(bound)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            hung = Some(format!("the receiver failed: {e}"));
            Vec::new()
        }
        Err(p) => {
            hung = Some(format!("the receiver: {p} (a lost wake-up?)"));
            Vec::new()
        }
    };
    let shutdown = pool.shutdown();
    ctx.check(
        "channels-mpsc-finish",
        None,
        hung.is_none() && shutdown.is_ok(),
        || {
            format!(
                "{} / pool shutdown: {shutdown:?}",
                hung.clone().unwrap_or_default()
            )
        },
    );
    if hung.is_none() {
        verify(ctx, "mpsc", sent, received);
    }
}

fn local(ctx: &mut Ctx, per_sender: u64) {
    Ledger::reset();
    let rt = ctx.runtime();
    let seed = ctx.rng.next_u64();
    let out = super::block_on_bounded(&rt, Duration::from_secs(120), async move {
        let (tx, mut rx) = coring::sync::local::channel::<CountedBuf>(CAPACITY);
        let receiver = coring::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut got = Vec::new();
            loop {
                let next = match maybe_cancel(&mut rng) {
                    Some(d) => match timeout(d, rx.recv()).await {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => rx.recv().await,
                };
                match next {
                    Some(m) => got.push(m.id()),
                    None => return got,
                }
            }
        });
        let senders: Vec<_> = (0..SENDERS)
            .map(|i| {
                let tx = std::rc::Rc::new(tx.clone());
                coring::spawn(sender(
                    move |m| {
                        let tx = tx.clone();
                        async move { tx.send(m).await.map_err(drop) }
                    },
                    per_sender,
                    seed ^ (i + 1),
                ))
            })
            .collect();
        drop(tx);
        let mut sent = Vec::new();
        for s in senders {
            sent.push(s.await.expect("sender task"));
        }
        (sent, receiver.await.expect("receiver task"))
    });
    drop(rt);
    match out {
        Some((sent, received)) => verify(ctx, "local", sent, received),
        None => ctx.fail(
            "channels-local-finish",
            None,
            "the local channel storm did not finish within 120 s (a lost wake-up?)",
        ),
    }
}
