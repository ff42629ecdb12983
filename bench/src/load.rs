//! The load generator's per-connection loop, closed-loop or open-loop, written against a
//! clock and a transport so that the same code runs on any runtime's sockets (coring's in
//! `coring-bench`, tokio's in the `vs_tokio` bench) and, in the tests, on a virtual clock
//! with synthetic stalls; and the timeline every thread of a run shares.
//!
//! Open loop follows wrk2: requests have a fixed schedule (request `k` of the whole run is
//! due at `k / rate`, dealt round-robin over the connections), each connection has at most
//! one request outstanding, a connection that falls behind sends its late requests at once,
//! and every latency is measured from the request's *intended* send time. A stall therefore
//! shows up in the latency of every request it delayed, not only in the one that was in
//! flight (coordinated omission correction).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hist::LatencyHist;

/// The timeline of one run, shared by every thread of it: warm-up from `start` to
/// `warm_end`, then the measured window until `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// When the run starts (time 0 of its [`Window`]).
    pub start: Instant,
    /// End of the warm-up, start of the measured window.
    pub warm_end: Instant,
    /// End of the measured window.
    pub end: Instant,
}

impl Timeline {
    /// A run that starts now: `warmup`, then `secs` measured.
    pub fn starting_now(warmup: Duration, secs: Duration) -> Timeline {
        let start = Instant::now();
        Timeline {
            start,
            warm_end: start + warmup,
            end: start + warmup + secs,
        }
    }

    /// The measured window in nanoseconds since `start`, as the load loop counts time.
    pub fn window(&self) -> Window {
        let ns = |t: Instant| t.duration_since(self.start).as_nanos() as u64;
        Window {
            warm_end_ns: ns(self.warm_end),
            end_ns: ns(self.end),
        }
    }
}

/// The measured part of a run, in nanoseconds since the run's start. Nothing is sent at or
/// after `end_ns`; every reply that arrives at or after `warm_end_ns` is measured, earlier
/// ones are warm-up. Going by the reply's arrival (not the due time) keeps an overloaded
/// run honest: requests due during the warm-up but served in the window are measured,
/// with their whole delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// End of the warm-up.
    pub warm_end_ns: u64,
    /// End of the measurement; nothing is sent at or after it.
    pub end_ns: u64,
}

/// One connection's share of an open-loop schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnSchedule {
    /// Time between two requests of the whole run, in ns (`1e9 / rate`).
    period_ns: f64,
    conns: u64,
    conn: u64,
}

impl ConnSchedule {
    /// Connection `conn` of `conns` sharing `rate_total` requests per second.
    ///
    /// # Panics
    ///
    /// If the rate is not a positive number or `conn >= conns`.
    pub fn new(rate_total: f64, conns: usize, conn: usize) -> ConnSchedule {
        assert!(
            rate_total.is_finite() && rate_total > 0.0,
            "open-loop rate must be positive, not {rate_total}"
        );
        assert!(conn < conns, "connection {conn} of {conns}");
        ConnSchedule {
            period_ns: 1e9 / rate_total,
            conns: conns as u64,
            conn: conn as u64,
        }
    }

    /// Time between two requests of this connection, in ns.
    pub fn interval_ns(&self) -> f64 {
        self.period_ns * self.conns as f64
    }

    /// When this connection's request `i` is due: `offset + i * interval`, where the
    /// offset (`conn / rate`) interleaves the connections evenly.
    pub fn intended_ns(&self, i: u64) -> u64 {
        ((i * self.conns + self.conn) as f64 * self.period_ns).round() as u64
    }

    /// How many of this connection's requests are due before `t_ns`.
    pub fn index_at(&self, t_ns: u64) -> u64 {
        let guess = (t_ns as f64 / self.period_ns - self.conn as f64) / self.conns as f64;
        let mut i = guess.ceil().max(0.0) as u64;
        while i > 0 && self.intended_ns(i - 1) >= t_ns {
            i -= 1;
        }
        while self.intended_ns(i) < t_ns {
            i += 1;
        }
        i
    }
}

/// How a connection paces its requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Ping-pong: the next request goes out as soon as the previous reply is in; latency is
    /// measured from the actual send.
    Closed,
    /// A fixed schedule; latency is measured from the intended send time.
    Open(ConnSchedule),
}

/// A source of time for the load loop, in ns since the run's start.
pub trait Clock {
    /// Now.
    fn now_ns(&self) -> u64;
    /// Waits until `t_ns` (returns at once if it has passed).
    fn sleep_until_ns(&self, t_ns: u64) -> impl Future<Output = ()>;
}

/// The real clock, on any runtime: time since `start`, and that runtime's
/// `sleep_until(Instant)` (a function or a closure that captures nothing, so the clock is
/// `Copy`, `Send` and `Sync` wherever the runtime's sleep future is).
#[derive(Debug, Clone, Copy)]
pub struct WallClock<S> {
    start: Instant,
    sleep_until: S,
}

impl<S> WallClock<S> {
    /// Time 0 at `start`; waits with `sleep_until`.
    pub fn new(start: Instant, sleep_until: S) -> WallClock<S> {
        WallClock { start, sleep_until }
    }

    /// Waits until `t` with the runtime's own timer.
    pub fn sleep_until<F>(&self, t: Instant) -> F
    where
        S: Fn(Instant) -> F,
    {
        (self.sleep_until)(t)
    }
}

impl<S, F> Clock for WallClock<S>
where
    S: Fn(Instant) -> F,
    F: Future<Output = ()>,
{
    fn now_ns(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos() as u64
    }

    fn sleep_until_ns(&self, t_ns: u64) -> impl Future<Output = ()> {
        (self.sleep_until)(self.start + Duration::from_nanos(t_ns))
    }
}

/// One request and its reply.
pub trait RoundTrip {
    /// Sends a request and waits for the whole reply.
    fn round_trip(&mut self) -> impl Future<Output = io::Result<()>>;
}

/// What one connection measured. Each connection owns its recorder (so a connection's
/// task is `Send` wherever its socket is); a load generator merges them at the end.
#[derive(Debug)]
pub struct Recorder {
    hist: LatencyHist,
    requests: u64,
    warmup: u64,
    unsent: u64,
    progress: Arc<AtomicU64>,
    samples: Option<Vec<(u64, u64)>>,
}

impl Recorder {
    /// An empty recorder that also counts every completed request into `progress` (shared
    /// by the run's connections, read by the progress line).
    pub fn new(progress: Arc<AtomicU64>) -> Recorder {
        Recorder {
            hist: LatencyHist::new(),
            requests: 0,
            warmup: 0,
            unsent: 0,
            progress,
            samples: None,
        }
    }

    /// Like [`Recorder::new`], and keeps every measured `(intended_ns, latency_ns)` pair
    /// too (for tests and debugging; memory grows with the run).
    pub fn keeping_samples(progress: Arc<AtomicU64>) -> Recorder {
        Recorder {
            samples: Some(Vec::new()),
            ..Recorder::new(progress)
        }
    }

    /// Records a request due (or sent) at `intended_ns` whose reply arrived at `done_ns`.
    pub fn record(&mut self, intended_ns: u64, done_ns: u64, window: Window) {
        self.progress.fetch_add(1, Ordering::Relaxed);
        if done_ns < window.warm_end_ns {
            self.warmup += 1;
            return;
        }
        let latency = done_ns.saturating_sub(intended_ns);
        self.hist.record(latency);
        self.requests += 1;
        if let Some(s) = &mut self.samples {
            s.push((intended_ns, latency));
        }
    }

    /// Counts requests of the measured window that were due but never sent.
    pub fn add_unsent(&mut self, n: u64) {
        self.unsent += n;
    }

    /// Adds everything `other` measured (another connection of the same run).
    pub fn merge(&mut self, other: &Recorder) {
        self.hist.merge(&other.hist);
        self.requests += other.requests;
        self.warmup += other.warmup;
        self.unsent += other.unsent;
        if let (Some(mine), Some(theirs)) = (&mut self.samples, &other.samples) {
            mine.extend_from_slice(theirs);
        }
    }

    /// Requests measured.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Requests completed during the warm-up (not measured).
    pub fn warmup(&self) -> u64 {
        self.warmup
    }

    /// Open loop: requests due in the window that were never sent because the connection
    /// was behind when the run ended. Non-zero means the target rate was not reached.
    pub fn unsent(&self) -> u64 {
        self.unsent
    }

    /// The latency histogram.
    pub fn histogram(&self) -> &LatencyHist {
        &self.hist
    }

    /// The kept `(intended_ns, latency_ns)` pairs (empty unless made by
    /// [`Recorder::keeping_samples`]).
    pub fn samples(&self) -> &[(u64, u64)] {
        self.samples.as_deref().unwrap_or_default()
    }
}

/// Runs one connection until the window ends, recording into `rec`.
///
/// # Errors
///
/// The first error of a round trip; what was measured before it stays recorded.
pub async fn drive<C: Clock, T: RoundTrip>(
    clock: &C,
    conn: &mut T,
    pacing: Pacing,
    window: Window,
    rec: &mut Recorder,
) -> io::Result<()> {
    let mut i = 0u64;
    loop {
        let now = clock.now_ns();
        let intended = match pacing {
            Pacing::Closed => {
                if now >= window.end_ns {
                    return Ok(());
                }
                now
            }
            Pacing::Open(s) => {
                let due = s.intended_ns(i);
                if due >= window.end_ns {
                    return Ok(());
                }
                if now >= window.end_ns {
                    // Behind schedule when the run ended: these were due but never sent.
                    let first = i.max(s.index_at(window.warm_end_ns));
                    rec.add_unsent(s.index_at(window.end_ns).saturating_sub(first));
                    return Ok(());
                }
                if now < due {
                    clock.sleep_until_ns(due).await;
                }
                // Late or not, the latency is charged from when it was due.
                due
            }
        };
        conn.round_trip().await?;
        rec.record(intended, clock.now_ns(), window);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;

    /// Virtual time: sleeping jumps the clock forward.
    struct VClock(Cell<u64>);

    impl Clock for VClock {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
        fn sleep_until_ns(&self, t: u64) -> impl Future<Output = ()> {
            self.0.set(self.0.get().max(t));
            std::future::ready(())
        }
    }

    /// A server that takes `service` ns per request, and `stall` ns more for request
    /// number `stall_at`.
    struct Fake<'a> {
        clock: &'a VClock,
        service: u64,
        stall_at: u64,
        stall: u64,
        n: u64,
    }

    impl RoundTrip for Fake<'_> {
        fn round_trip(&mut self) -> impl Future<Output = io::Result<()>> {
            let extra = if self.n == self.stall_at {
                self.stall
            } else {
                0
            };
            self.clock.0.set(self.clock.0.get() + self.service + extra);
            self.n += 1;
            std::future::ready(Ok(()))
        }
    }

    /// Warm-up until `warm_end` ms, measured until `end` ms.
    fn window_ms(warm_end: u64, end: u64) -> Window {
        Window {
            warm_end_ns: warm_end * MS,
            end_ns: end * MS,
        }
    }

    /// Open loop, one connection, a request every millisecond.
    fn one_per_ms() -> Pacing {
        Pacing::Open(ConnSchedule::new(1000.0, 1, 0))
    }

    /// Runs the load loop to completion on the virtual clock (nothing in it ever waits),
    /// recording into `rec`.
    fn run_into(
        rec: &mut Recorder,
        (pacing, window): (Pacing, Window),
        service: u64,
        stall_at: u64,
        stall: u64,
    ) {
        let clock = VClock(Cell::new(0));
        let mut conn = Fake {
            clock: &clock,
            service,
            stall_at,
            stall,
            n: 0,
        };
        let fut = pin!(drive(&clock, &mut conn, pacing, window, rec));
        let mut cx = Context::from_waker(Waker::noop());
        match fut.poll(&mut cx) {
            Poll::Ready(res) => res.unwrap(),
            Poll::Pending => panic!("the virtual-clock load loop never waits"),
        }
    }

    /// [`run_into`] a recorder that keeps every sample.
    fn run(pacing: Pacing, window: Window, service: u64, stall_at: u64, stall: u64) -> Recorder {
        let mut rec = Recorder::keeping_samples(Arc::new(AtomicU64::new(0)));
        run_into(&mut rec, (pacing, window), service, stall_at, stall);
        rec
    }

    #[test]
    fn intended_send_times_are_i_times_interval() {
        // 1000 req/s over 4 connections: each sends every 4 ms, offset by 1 ms per conn.
        let scheds: Vec<_> = (0..4).map(|c| ConnSchedule::new(1000.0, 4, c)).collect();
        assert_eq!(scheds[0].interval_ns(), 4.0 * MS as f64);
        for (c, s) in scheds.iter().enumerate() {
            for i in 0..100u64 {
                assert_eq!(s.intended_ns(i), c as u64 * MS + i * 4 * MS);
            }
        }
        // Together, one request every 1 ms from the start, no gaps, no duplicates.
        let mut all: Vec<u64> = scheds
            .iter()
            .flat_map(|s| (0..100).map(|i| s.intended_ns(i)))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..400).map(|k| k * MS).collect::<Vec<_>>());
    }

    #[test]
    fn fractional_rates_do_not_drift() {
        // 3 req/s: request k is due at k/3 s, computed, not accumulated: 3 million
        // requests in, the schedule is still exactly on the second.
        let s = ConnSchedule::new(3.0, 1, 0);
        assert_eq!(s.intended_ns(3_000_000), 1_000_000 * 1_000_000_000);
        assert_eq!(s.intended_ns(1), 333_333_333);
    }

    #[test]
    fn index_at_counts_due_requests() {
        let s = ConnSchedule::new(1000.0, 4, 2); // due at 2, 6, 10, ... ms
        assert_eq!(s.index_at(0), 0);
        assert_eq!(s.index_at(2 * MS), 0);
        assert_eq!(s.index_at(2 * MS + 1), 1);
        assert_eq!(s.index_at(6 * MS), 1);
        assert_eq!(s.index_at(100 * MS), 25);
        for t in (0..50 * MS).step_by(250 * US as usize) {
            let n = s.index_at(t);
            assert!(n == 0 || s.intended_ns(n - 1) < t);
            assert!(s.intended_ns(n) >= t);
        }
    }

    #[test]
    fn open_loop_charges_a_stall_to_every_request_it_delayed() {
        // 1000 req/s on one connection, 100 µs service, and request 10 stalls 50 ms.
        let rec = run(one_per_ms(), window_ms(0, 200), 100 * US, 10, 50 * MS);
        let samples = rec.samples();
        assert_eq!(rec.requests(), 200);
        assert_eq!(rec.unsent(), 0);
        // Request k finishes at 60.1 ms + 0.1 ms * (k - 10) while the connection is behind
        // (k <= 65), so its latency from the intended k ms is 59.1 ms - 0.9 ms * k.
        for (k, &(intended, latency)) in samples.iter().enumerate() {
            let k = k as u64;
            assert_eq!(intended, k * MS, "request {k} is due at {k} ms");
            let want = match k {
                0..=9 => 100 * US,
                10..=65 => 59_100 * US - 900 * US * k,
                _ => 100 * US,
            };
            assert_eq!(latency, want, "latency of request {k}");
        }
        let h = rec.histogram();
        assert_eq!(h.len(), 200);
        // 55 requests (10..=64) took over 1 ms: the stall is in the percentiles.
        let over_1ms = samples.iter().filter(|s| s.1 > MS).count();
        assert_eq!(over_1ms, 55);
        assert!(h.quantile_ns(0.80) > MS, "p80 {}", h.quantile_ns(0.80));
        let max = h.summary().unwrap().max;
        assert!(max.abs_diff(50_100 * US) <= 50 * US, "max {max}");
    }

    #[test]
    fn closed_loop_sees_the_same_stall_only_once() {
        // The uncorrected view of the same server: one slow sample, the rest fast.
        let window = window_ms(0, 200);
        let rec = run(Pacing::Closed, window, 100 * US, 10, 50 * MS);
        let samples = rec.samples();
        assert_eq!(samples.iter().filter(|s| s.1 > MS).count(), 1);
        assert_eq!(samples[10].1, 50_100 * US);
        // Ping-pong: each request goes out when the previous reply is in.
        assert_eq!(samples[11].0, samples[10].0 + samples[10].1);
        assert!(rec.histogram().quantile_ns(0.99) <= 101 * US);
    }

    #[test]
    fn open_loop_above_capacity_counts_unsent_requests() {
        // Due every 1 ms, served in 2 ms: request k is sent at 2k ms and is k + 2 ms late
        // by its reply; at 100 ms, 50 were sent and 50 more were due.
        let rec = run(one_per_ms(), window_ms(0, 100), 2 * MS, u64::MAX, 0);
        // (measured, unsent)
        assert_eq!((rec.requests(), rec.unsent()), (50, 50));
        for (k, &(_, latency)) in rec.samples().iter().enumerate() {
            assert_eq!(latency, (k as u64 + 2) * MS);
        }
    }

    #[test]
    fn overload_after_the_warm_up_is_measured_not_hidden() {
        // Due every 1 ms, served in 2 ms, warm-up until 50 ms: the backlog built during the
        // warm-up is served in the window, and those replies carry their full delay.
        let rec = run(one_per_ms(), window_ms(50, 100), 2 * MS, u64::MAX, 0);
        // Request k is sent at 2k ms and answered at 2k + 2 ms: k = 24..=49 in the window.
        // (warm-up, measured, unsent)
        assert_eq!((rec.warmup(), rec.requests(), rec.unsent()), (24, 26, 50));
        let samples = rec.samples();
        assert_eq!(samples[0], (24 * MS, 26 * MS));
        assert_eq!(samples[25], (49 * MS, 51 * MS));
    }

    #[test]
    fn warm_up_requests_are_not_measured() {
        let window = window_ms(10, 30);
        let pacing = one_per_ms();
        let progress = Arc::new(AtomicU64::new(0));
        let mut rec = Recorder::new(progress.clone());
        run_into(&mut rec, (pacing, window), 10 * US, u64::MAX, 0);
        assert_eq!(rec.warmup(), 10);
        assert_eq!(rec.requests(), 20);
        assert_eq!(progress.load(Ordering::Relaxed), 30);
        assert!(rec.samples().is_empty());
    }

    #[test]
    fn merged_recorders_add_up() {
        let window = window_ms(0, 100);
        let progress = Arc::new(AtomicU64::new(0));
        let (mut a, mut b) = (
            Recorder::new(progress.clone()),
            Recorder::new(progress.clone()),
        );
        a.record(0, 10 * US, window);
        b.record(0, 30 * US, window);
        b.add_unsent(2);
        a.merge(&b);
        assert_eq!((a.requests(), a.unsent()), (2, 2));
        assert_eq!(a.histogram().len(), 2);
        assert_eq!(progress.load(Ordering::Relaxed), 2);
    }
}
