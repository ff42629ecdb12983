//! The echo harness, and `coring-bench`'s echo mode on it.
//!
//! An echo run is a TCP echo server on one pinned CPU and a load generator on another, over
//! loopback, closed or open loop ([`pair::run_pair`]). The server and the load generator are
//! written once ([`server::serve`], [`client::load`]) against a few traits
//! ([`runtime`]) that each runtime implements: coring here ([`coring::Coring`]), tokio and
//! monoio in the comparison benches; the raw io_uring server ([`crate::raw::echo`]) shares
//! the rest of the server's bookkeeping. The server thread measures its own CPU time (and
//! runtime counters) over the measured window, waking at the window's edges, so that its
//! CPU time per request compares servers even when the load generator is the bottleneck.

pub mod client;
pub mod coring;
pub mod pair;
pub mod runtime;
pub mod server;

use std::time::Duration;

use ::coring::BackendKind;
use serde_json::json;

use self::client::Load;
use self::coring::Coring;
use self::pair::{run_pair, Pair};
use crate::cli::backend_name;
use crate::progress::Progress;
use crate::report::{Mode, RunResult, NOISY_WAIT};
use crate::stats;

/// What one echo run does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoParams {
    /// Connections.
    pub conns: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Open-loop total rate, or `None` for closed loop.
    pub rate: Option<f64>,
    /// Measured duration.
    pub secs: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// The load generator's backend.
    pub client_backend: BackendKind,
    /// The server replies with `send_zc` (zero-copy) instead of `write_all`.
    pub zc: bool,
    /// The server runtime times its parks (`--metrics`: time parked and running).
    pub time_parks: bool,
}

/// Runs one echo benchmark with the server on `backend`; failures end up in
/// [`RunResult::error`].
pub fn run(p: &EchoParams, backend: BackendKind, progress: &mut Progress) -> RunResult {
    let label = crate::cli::Bench::Echo {
        conns: p.conns,
        size: p.size,
        rate: p.rate,
        secs: p.secs,
        warmup: p.warmup,
        zc: p.zc,
    }
    .label();
    let mut res = RunResult::new(Mode::Echo, label, backend_name(backend), "req");
    res.cpu_scope = "server thread";
    res.open_loop = p.rate.is_some();
    res.target_rate = p.rate;
    res.params = json!({
        "conns": p.conns,
        "size": p.size,
        "rate": p.rate,
        "loop": if p.rate.is_some() { "open" } else { "closed" },
        "secs": p.secs.as_secs_f64(),
        "warmup_secs": p.warmup.as_secs_f64(),
        "server_send": if p.zc { "send_zc" } else { "write_all" },
    });
    let load = Load {
        rate: p.rate,
        ..Load::closed(p.conns, p.size)
    };
    let counter = load.counter.clone();
    let (server, client) = (
        Coring {
            backend,
            zc: p.zc,
            time_parks: p.time_parks,
        },
        Coring {
            backend: p.client_backend,
            zc: false,
            time_parks: false,
        },
    );
    let pair = run_pair(
        p.conns,
        (p.warmup, p.secs),
        move |conns, hs| server::serve(&server, conns, hs),
        move |addr, tl| client::load(&client, addr, &load, tl),
        progress,
        &counter,
    );
    match pair {
        Ok(pair) => fill(&mut res, p, &pair),
        Err(e) => res.error = Some(e),
    }
    res
}

/// Moves the measurements into the result.
fn fill(res: &mut RunResult, p: &EchoParams, pair: &Pair) {
    let (c, s) = (&pair.client, &pair.server);
    if let Some(kind) = pair.ready.backend {
        res.backend = backend_name(kind).to_string();
    }
    res.backend_description = pair.ready.description.clone();
    let usage = s.usage();
    res.ops = c.rec.requests();
    res.elapsed = p.secs;
    res.latency = Some(c.rec.histogram().clone());
    res.unsent = c.rec.unsent();
    res.cpu = usage.cpu;
    res.run_wait = stats::wait_fraction(usage.run_wait, p.secs);
    res.counters = s
        .counter(|m| m.enters)
        .zip(s.counter(|m| m.parks))
        .zip(s.counter(|m| m.turns))
        .map(|((e, p), t)| (e, p, t));
    res.metrics = s.end.metrics.clone();
    if let serde_json::Value::Object(m) = &mut res.params {
        m.insert("client_backend".into(), json!(c.backend));
        m.insert("warmup_requests".into(), json!(c.rec.warmup()));
        m.insert(
            "client_cpu_us_per_request".into(),
            json!(stats::cpu_us_per_op(c.usage.cpu, c.rec.requests())),
        );
        m.insert(
            "client_run_wait_fraction".into(),
            json!(stats::wait_fraction(c.usage.run_wait, p.secs)),
        );
    }
    for (who, u) in [("server", &usage), ("load generator", &c.usage)] {
        if let Some(f) = stats::wait_fraction(u.run_wait, p.secs).filter(|&f| f > NOISY_WAIT) {
            res.notes.push(format!(
                "the {who} thread waited for a CPU {:.0}% of the window: other processes \
                 competed, figures are noisy",
                f * 100.0
            ));
        }
    }
    // A load generator near 100% of its CPU is the bottleneck: compare cpu/op then.
    if let Some(f) = c
        .usage
        .cpu
        .and_then(|cpu| stats::ratio(cpu.as_secs_f64(), p.secs.as_secs_f64()))
        .filter(|&f| f > 0.9)
    {
        res.notes.push(format!(
            "load generator at {:.0}% of its CPU: client-bound, compare server cpu/op rather \
             than req/s",
            f * 100.0
        ));
    }
    if let Some(rate) = p.rate {
        let achieved = res.rate();
        if c.rec.unsent() > 0 || stats::ratio(achieved, rate).is_some_and(|r| r < 0.98) {
            res.notes.push(format!(
                "target {} req/s not reached ({} req/s, {} requests never sent): the tail \
                 latencies are a lower bound",
                stats::human(rate),
                stats::human(achieved),
                c.rec.unsent()
            ));
        }
    }
    res.notes.extend(c.errors.iter().cloned());
    res.notes.extend(s.errors.iter().cloned());
    if !c.errors.is_empty() && res.error.is_none() {
        res.error = Some(format!("{} load generator error(s)", c.errors.len()));
    }
}
