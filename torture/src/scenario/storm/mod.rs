//! The cancellation storm: tens of thousands of operations of every kind (file reads and
//! writes, vectored and fixed-buffer IO, pipe IO, stream reads and writes, accept,
//! connect, UDP receive and send, timers, open, statx, fsync, directory operations, nop),
//! each dropped at a seeded random point: before its first poll, right after it, after a
//! few yields, by a timeout, by aborting its task, or not at all; or cancelled through a
//! `CancelToken` and awaited to its end (`ECANCELED` or its real result). Every buffer is a
//! [`CountedBuf`]: after the runtime is gone each must have been dropped exactly once,
//! and the process's descriptors must be back at their count before the runtime was
//! built. On io_uring the storm runs again on an 8-entry ring and with single-shot
//! stream reads.
//!
//! Data checks ride along: stream reads verify a byte sequence (a cancelled read loses
//! nothing: the stream keeps its receive), UDP receives verify datagram sequence numbers
//! (kept receives hand datagrams on in order), every connection a helper thread made must
//! come out of `accept` exactly once, and no sleep may fire before its deadline.
//!
//! Then the channel storm ([`super::channels`]) and two hostile-user checks of known
//! defects ([`hostile`]): `mem::forget`ed calls that hold a claim on a kept operation
//! (defect 2), and a buffer whose `Drop` panics when the driver drops it after a cancel
//! (defect 1).
//!
//! Layout: this file runs the passes and checks them; [`mod@fixtures`] builds what the
//! operations act on, [`ops`] builds and drives the operations.

mod fixtures;
mod hostile;
mod ops;

use super::{catch, eventually, poll_once, Ctx};
use crate::bufs::{CountedBuf, Ledger, PanicBuf};
use crate::rng::Rng;
use crate::sys;
use crate::watchdog::stage;
use coring::fs::{File, OpenOptions};
use coring::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use coring::time::{sleep, timeout};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use fixtures::*;
use hostile::*;
use ops::*;

/// Buffers of the storm's registered pool.
const FIXED_BUFS: usize = 32;
/// Size of the file the storm reads.
const DATA_LEN: u64 = 256 * 1024;
/// Concurrent worker tasks issuing operations.
const WORKERS: usize = 48;
/// How long an operation that needs nothing from anyone may take before it counts as hung
/// (generous: the machine may be loaded, the build may be instrumented).
const MUST_COMPLETE: Duration = Duration::from_secs(20);

/// The byte at `pos` of the storm's data file and of every stream's byte sequence.
fn pattern(pos: u64) -> u8 {
    (pos % 251) as u8
}

/// Counters and anomalies of the storm.
#[derive(Default)]
struct Stats {
    started: Cell<u64>,
    completed: Cell<u64>,
    errors: Cell<u64>,
    cancelled_unpolled: Cell<u64>,
    cancelled_in_flight: Cell<u64>,
    /// Operations that ended with `ECANCELED` after their `CancelToken` was cancelled.
    cancelled_by_token: Cell<u64>,
    per_kind: RefCell<BTreeMap<Kind, u64>>,
    /// Unexpected errors, by `kind: error`.
    error_kinds: RefCell<BTreeMap<String, u64>>,
    /// Data or ordering violations, hangs: the first few messages, and how many.
    anomalies: RefCell<Vec<String>>,
    anomaly_count: Cell<u64>,
    /// Panics of interval tasks (defect 6), with the first message.
    interval_panics: Cell<u64>,
    interval_panic_msg: RefCell<Option<String>>,
    stream_bytes: Cell<u64>,
    datagrams: Cell<u64>,
    /// Connections accepted, shared with the connector thread (which paces itself).
    accepted: Arc<AtomicU64>,
}

impl Stats {
    fn anomaly(&self, msg: String) {
        self.anomaly_count.set(self.anomaly_count.get() + 1);
        let mut a = self.anomalies.borrow_mut();
        if a.len() < 8 {
            a.push(msg);
        }
    }

    fn error(&self, kind: Kind, e: &io::Error) {
        self.errors.set(self.errors.get() + 1);
        *self
            .error_kinds
            .borrow_mut()
            .entry(format!("{kind:?}: {e}"))
            .or_default() += 1;
    }
}

/// One pass of the storm: a runtime configuration and how many operations it gets.
struct Pass {
    name: &'static str,
    builder: coring::Builder,
    target: u64,
}

/// Runs the storm (on io_uring also with an 8-entry ring, where the submission queue is
/// full all the time, and with single-shot stream reads), then the two hostile-user
/// checks.
pub fn run(ctx: &mut Ctx) {
    let target = ctx.pick(50_000u64, 1_000_000);
    let mut passes = vec![Pass {
        name: "default",
        builder: ctx.builder(),
        target,
    }];
    if ctx.backend == coring::BackendKind::IoUring {
        passes.push(Pass {
            name: "small-ring",
            builder: ctx.builder().entries(8),
            target: target / 2,
        });
        passes.push(Pass {
            name: "single-shot",
            builder: ctx.builder().multishot_reads(false),
            target: target / 2,
        });
    }
    let (mut ops, mut cancelled) = (0, 0);
    for pass in passes {
        let (o, c) = main_storm(ctx, &pass);
        ops += o;
        cancelled += c;
    }
    ctx.figure("ops", ops);
    ctx.figure("ops_cancelled", cancelled);
    super::channels::run(ctx, ctx.pick(2_000, 20_000));
    if ctx.wants_known("forgotten-claims", 2) {
        forgotten_claims(ctx);
    }
    if ctx.wants_known("panicking-drop", 1) {
        panicking_drop(ctx);
    }
    #[cfg(target_os = "linux")]
    unix_connect_full_backlog(ctx);
}

/// One pass; returns (operations issued, operations cancelled).
fn main_storm(ctx: &mut Ctx, pass: &Pass) -> (u64, u64) {
    let target = pass.target;
    let name = pass.name;
    // Check and figure names of a pass other than the default one carry its name.
    let key = |k: &str| -> String {
        if name == "default" {
            k.to_string()
        } else {
            format!("{name}.{k}")
        }
    };
    stage(format!("storm ({name}): setup"));
    Ledger::reset();
    let fd_base = sys::fd_count();
    let fd_list = sys::fd_targets();
    let dir = sys::TempDir::new("storm").expect("temp dir");
    let data_path = dir.path("data.bin");
    let data: Vec<u8> = (0..DATA_LEN).map(pattern).collect();
    std::fs::write(&data_path, &data).expect("writing the data file");
    let fifo_path = dir.path("fifo");
    sys::mkfifo(&fifo_path).expect("mkfifo");
    let stop = Arc::new(AtomicBool::new(false));

    let rt = pass.builder.build().expect("storm runtime");
    let fd_runtime = sys::fd_count();
    // Started after the count and joined before the next one: the thread holds the FIFO
    // open two thirds of the time, which would make either count one too high.
    let fifo_thread = fifo_reader(fifo_path.clone(), stop.clone());
    let mut rng = ctx.rng.fork();
    let seed_note = ctx.seed;
    let outcome = super::block_on_bounded(&rt, Duration::from_secs(600), async {
        let fx = Rc::new(
            fixtures(&data_path, &fifo_path)
                .await
                .expect("storm fixtures"),
        );
        let (connector, connected) = connector(
            fx.acceptor.local_addr().unwrap(),
            stop.clone(),
            fx.stats.accepted.clone(),
        );
        let helpers = spawn_helpers(&fx, &mut rng);
        let fixed = fx.fixed.clone();
        stage(format!(
            "storm ({name}): {target} ops, {WORKERS} workers (seed {seed_note:#x})"
        ));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| coring::spawn(worker(fx.clone(), rng.fork(), target)))
            .collect();
        for w in workers {
            if let Err(e) = w.await {
                fx.stats.anomaly(format!("a worker task failed: {e}"));
            }
        }
        stage(format!("storm ({name}): stopping helpers"));
        stop.store(true, Ordering::SeqCst);
        let connector_result = connector.join();
        // Ends within one open-sleep-close cycle (3 ms) of the stop.
        let _ = fifo_thread.join();
        for h in &helpers {
            h.abort();
        }
        for h in helpers {
            let _ = h.await;
        }
        stage(format!("storm ({name}): draining accepts"));
        let made = connected.load(Ordering::SeqCst);
        while fx.stats.accepted.load(Ordering::SeqCst) < made {
            match timeout(Duration::from_secs(5), fx.acceptor.accept()).await {
                Ok(Ok(_)) => {
                    fx.stats.accepted.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Err(e)) => fx.stats.anomaly(format!("accept while draining: {e}")),
                Err(_) => break,
            }
        }
        let fx = Rc::try_unwrap(fx).unwrap_or_else(|_| panic!("a task still holds the fixtures"));
        let stats = Summary::of(&fx.stats, made, connector_result.is_ok());
        stage(format!(
            "storm ({name}): closing fixtures, waiting for cancelled ops"
        ));
        drop(fx);
        let settled = eventually(Duration::from_secs(20), || rt.ops_in_flight() == 0).await;
        let in_flight = rt.ops_in_flight();
        // Close-on-drop is synchronous for idle descriptors; give anything the runtime
        // closes asynchronously one more turn.
        coring::task::yield_now().await;
        let fixed_back = fixed.available();
        drop(fixed);
        (stats, settled, in_flight, sys::fd_count(), fixed_back)
    });
    let metrics = rt.metrics();
    stage(format!("storm ({name}): dropping the runtime"));
    drop(rt);
    stop.store(true, Ordering::SeqCst);
    drop(dir);

    let Some((s, settled, in_flight, fd_in_runtime, fixed_back)) = outcome else {
        ctx.fail(
            &key("progress"),
            None,
            "the storm did not finish within 600 s",
        );
        return (0, 0);
    };
    report_storm(ctx, &s, target, &key);
    ctx.check(&key("fixed-buffers-back"), None, fixed_back == FIXED_BUFS, || {
        format!("{fixed_back} of {FIXED_BUFS} registered buffers back in their pool after every op settled")
    });
    ctx.check(&key("settle"), None, settled, || {
        format!("{in_flight} operations still in flight 20 s after every future was dropped")
    });
    ctx.figure(
        &key("driver"),
        format!(
            "submitted={} inline={} offloaded={} orphaned={} leaked={}",
            metrics.ops_submitted,
            metrics.ops_inline,
            metrics.ops_offloaded,
            metrics.ops_orphaned,
            metrics.ops_leaked
        ),
    );
    let t = Ledger::tally();
    ctx.figure(
        &key("buffers"),
        format!("{} created, {} dropped", t.created, t.dropped),
    );
    ctx.check(&key("buffers-dropped-once"), None, t.double == 0, || {
        format!("{} buffer drops of a buffer already dropped", t.double)
    });
    ctx.check(&key("buffers-all-dropped"), None, t.live == 0, || {
        let by: Vec<String> = Ledger::live_by_tag()
            .into_iter()
            .map(|(tag, n)| format!("{:?}: {n}", Kind::from_tag(tag)))
            .collect();
        format!(
            "{} of {} buffers never dropped after the runtime was dropped ({})",
            t.live,
            t.created,
            by.join(", ")
        )
    });
    let fd_after = sys::fd_count();
    ctx.figure(
        &key("fds"),
        format!("base={fd_base} runtime={fd_runtime} before-drop={fd_in_runtime} after={fd_after}"),
    );
    ctx.check(
        &key("fds-in-runtime"),
        None,
        fd_in_runtime <= fd_runtime,
        || {
            format!(
                "{fd_in_runtime} descriptors open after the fixtures were closed and every op \
             settled, {fd_runtime} right after the runtime was built"
            )
        },
    );
    ctx.check(&key("fds-baseline"), None, fd_after == fd_base, || {
        format!(
            "{fd_after} descriptors open after the runtime was dropped, {fd_base} before it \
             was built; extra: {}",
            sys::fd_diff(&fd_list, &sys::fd_targets())
        )
    });
    (s.started, s.unpolled + s.in_flight + s.by_token)
}

/// The storm's figures, copied out of the fixtures before they are dropped.
struct Summary {
    started: u64,
    completed: u64,
    errors: u64,
    unpolled: u64,
    in_flight: u64,
    by_token: u64,
    per_kind: BTreeMap<Kind, u64>,
    error_kinds: BTreeMap<String, u64>,
    anomalies: Vec<String>,
    anomaly_count: u64,
    interval_panics: u64,
    interval_panic_msg: Option<String>,
    stream_bytes: u64,
    datagrams: u64,
    accepted: u64,
    connected: u64,
    connector_ok: bool,
}

impl Summary {
    fn of(s: &Stats, connected: u64, connector_ok: bool) -> Summary {
        Summary {
            started: s.started.get(),
            completed: s.completed.get(),
            errors: s.errors.get(),
            unpolled: s.cancelled_unpolled.get(),
            in_flight: s.cancelled_in_flight.get(),
            by_token: s.cancelled_by_token.get(),
            per_kind: s.per_kind.borrow().clone(),
            error_kinds: s.error_kinds.borrow().clone(),
            anomalies: s.anomalies.borrow().clone(),
            anomaly_count: s.anomaly_count.get(),
            interval_panics: s.interval_panics.get(),
            interval_panic_msg: s.interval_panic_msg.borrow().clone(),
            stream_bytes: s.stream_bytes.get(),
            datagrams: s.datagrams.get(),
            accepted: s.accepted.load(Ordering::SeqCst),
            connected,
            connector_ok,
        }
    }
}

fn report_storm(ctx: &mut Ctx, s: &Summary, target: u64, key: &dyn Fn(&str) -> String) {
    // The totals over every pass are the scenario's "ops" and "ops_cancelled".
    ctx.figure(&format!("{}.ops", key("pass")), s.started);
    ctx.figure(
        &format!("{}.ops_cancelled", key("pass")),
        s.unpolled + s.in_flight + s.by_token,
    );
    ctx.figure(&key("cancelled_unpolled"), s.unpolled);
    ctx.figure(&key("cancelled_in_flight"), s.in_flight);
    ctx.figure(&key("cancelled_by_token"), s.by_token);
    ctx.figure(&key("completed"), s.completed);
    ctx.figure(&key("errors"), s.errors);
    let kinds: Vec<String> = s
        .per_kind
        .iter()
        .map(|(k, n)| format!("{k:?}:{n}"))
        .collect();
    ctx.figure(&key("kinds"), kinds.join(","));
    ctx.figure(&key("stream_bytes_verified"), s.stream_bytes);
    ctx.figure(&key("datagrams_verified"), s.datagrams);
    ctx.figure(
        &key("accepts"),
        format!("{} of {}", s.accepted, s.connected),
    );
    ctx.check(&key("ops-issued"), None, s.started >= target, || {
        format!("only {} of {target} operations issued", s.started)
    });
    ctx.check(
        &key("every-kind"),
        None,
        s.per_kind.len() == KINDS.len(),
        || format!("only {} of {} kinds issued", s.per_kind.len(), KINDS.len()),
    );
    ctx.check(&key("op-errors"), None, s.error_kinds.is_empty(), || {
        let v: Vec<String> = s
            .error_kinds
            .iter()
            .map(|(e, n)| format!("{n}x {e}"))
            .collect();
        format!("operations failed unexpectedly: {}", v.join("; "))
    });
    ctx.check(&key("data"), None, s.anomaly_count == 0, || {
        format!("{} anomalies: {}", s.anomaly_count, s.anomalies.join("; "))
    });
    ctx.check(
        "accepts-exact",
        None,
        s.connector_ok && s.accepted == s.connected,
        || {
            format!(
                "{} connections made to the listener, {} accepted (connector thread ok: {})",
                s.connected, s.accepted, s.connector_ok
            )
        },
    );
    if ctx.wants_known(&key("interval-max"), 6) {
        ctx.check(
            &key("interval-max"),
            Some(6),
            s.interval_panics == 0,
            || {
                format!(
                    "{} interval tasks panicked, e.g. {:?}",
                    s.interval_panics,
                    s.interval_panic_msg.as_deref().unwrap_or("?")
                )
            },
        );
    }
}
