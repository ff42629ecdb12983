//! The load generator's per-connection loop, closed-loop or open-loop, written against a
//! clock and a transport so that the same code runs on any runtime's sockets (coring's in
//! `coring-bench`, tokio's in the `vs_tokio` bench) and, in the tests, on a virtual clock
//! with synthetic stalls; and the timeline every thread of a run shares.
//!
//! Open loop follows wrk2: requests have a fixed schedule (request `k` of the whole run is
//! due at `k / rate`, dealt round-robin over the connections), each connection has at most
//! one request outstanding (or `depth` of them, pipelined: [`drive_pipelined`]), a connection
//! that falls behind sends its late requests at once, and every latency is measured from the
//! request's *intended* send time. A stall therefore shows up in the latency of every request
//! it delayed, not only in the one that was in flight (coordinated omission correction).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
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

/// What [`Pipelined::recv`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replies {
    /// Requests answered, oldest first; 0 when the wait ended at its `wake_at` first.
    pub count: usize,
    /// When they were answered, in ns on the load loop's clock.
    pub done_ns: u64,
}

/// A connection that may have several requests in flight (HTTP/1.1 pipelining): requests go
/// out in order and are answered in the same order. Its times are on the same clock as the
/// load loop's.
pub trait Pipelined {
    /// Sends `n` more requests, in order (in one write, where the transport can).
    fn send(&mut self, n: usize) -> impl Future<Output = io::Result<()>>;

    /// Waits until at least one request in flight is answered; returns how many are (every
    /// one complete by then, oldest first, never more than are in flight) and when.
    ///
    /// With `wake_at`, returns `count: 0` once that time passes with none answered, so that
    /// the load loop can send requests that have come due. An implementation may ignore it:
    /// the next requests then merely go out late, their latency still counted from their
    /// intended time.
    fn recv(&mut self, wake_at: Option<u64>) -> impl Future<Output = io::Result<Replies>>;
}

/// A [`RoundTrip`] connection as a [`Pipelined`] one of depth 1: `send` notes the request,
/// `recv` makes the round trip.
struct OneAtATime<'a, C, T> {
    clock: &'a C,
    conn: &'a mut T,
}

impl<C: Clock, T: RoundTrip> Pipelined for OneAtATime<'_, C, T> {
    fn send(&mut self, n: usize) -> impl Future<Output = io::Result<()>> {
        debug_assert_eq!(n, 1, "a round-trip connection has one request in flight");
        std::future::ready(Ok(()))
    }

    async fn recv(&mut self, _wake_at: Option<u64>) -> io::Result<Replies> {
        self.conn.round_trip().await?;
        Ok(Replies {
            count: 1,
            done_ns: self.clock.now_ns(),
        })
    }
}

/// Runs one connection until the window ends, recording into `rec`: one request in flight
/// at a time ([`drive_pipelined`] at depth 1).
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
    let mut conn = OneAtATime { clock, conn };
    drive_pipelined(clock, &mut conn, pacing, 1, window, rec).await
}

/// Runs one connection with up to `depth` requests in flight until the window ends, then
/// waits for the replies still due, recording into `rec`.
///
/// Closed loop: `depth` requests go out at once, and each reply lets another one go, its
/// latency measured from when it was sent. Open loop: each request goes out when it is due
/// if fewer than `depth` are in flight, else as soon as a reply makes room; its latency runs
/// from when it was due either way. Nothing is sent at or after the window's end; requests
/// of the window that were due by then but not sent are counted as unsent.
///
/// # Errors
///
/// The first error of `conn`; what was measured before it stays recorded.
///
/// # Panics
///
/// If `depth` is 0.
pub async fn drive_pipelined<C: Clock, T: Pipelined>(
    clock: &C,
    conn: &mut T,
    pacing: Pacing,
    depth: usize,
    window: Window,
    rec: &mut Recorder,
) -> io::Result<()> {
    assert!(
        depth > 0,
        "a connection needs room for at least one request in flight"
    );
    // The intended send times of the requests in flight, oldest first.
    let mut in_flight: VecDeque<u64> = VecDeque::with_capacity(depth);
    // Open loop: this connection's next request of the schedule.
    let mut i = 0u64;
    let mut sending = true;
    loop {
        let now = clock.now_ns();
        if sending && now >= window.end_ns {
            sending = false;
            if let Pacing::Open(s) = pacing {
                // Behind schedule when the run ended: these were due but never sent.
                let first = i.max(s.index_at(window.warm_end_ns));
                rec.add_unsent(s.index_at(window.end_ns).saturating_sub(first));
            }
        }
        let mut batch = 0;
        while sending && in_flight.len() < depth {
            let intended = match pacing {
                Pacing::Closed => now,
                Pacing::Open(s) => {
                    // Late or not, the latency is charged from when it was due. (A request
                    // due at or after the end is after `now`, since `now` is before it.)
                    let due = s.intended_ns(i);
                    if due > now {
                        break;
                    }
                    i += 1;
                    due
                }
            };
            in_flight.push_back(intended);
            batch += 1;
        }
        if batch > 0 {
            conn.send(batch).await?;
        }
        // Open loop: when the next request is due, if it is still to be sent.
        let next_due = match pacing {
            Pacing::Open(s) if sending => Some(s.intended_ns(i)).filter(|&d| d < window.end_ns),
            _ => None,
        };
        if in_flight.is_empty() {
            match next_due {
                Some(due) => {
                    clock.sleep_until_ns(due).await;
                    continue;
                }
                // Closed loop: a request would have gone out if the window were still open.
                None => return Ok(()),
            }
        }
        let wake_at = next_due.filter(|_| in_flight.len() < depth);
        let replies = conn.recv(wake_at).await?;
        if replies.count > in_flight.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} replies with {} requests in flight",
                    replies.count,
                    in_flight.len()
                ),
            ));
        }
        for intended in in_flight.drain(..replies.count) {
            rec.record(intended, replies.done_ns, window);
        }
    }
}

/// Which of two futures finished first (see [`first`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum First<A, B> {
    /// The first future's output.
    A(A),
    /// The second future's output.
    B(B),
}

/// Runs `a` and `b` together until one finishes, and drops the other (`a` wins a tie).
pub async fn first<A: Future, B: Future>(a: A, b: B) -> First<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(First::A(v));
        }
        b.as_mut().poll(cx).map(First::B)
    })
    .await
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

    /// A pipelining server on the virtual clock: requests are served one at a time in
    /// order, `service` ns each, request `stall_at` `stall` ns more.
    struct FifoServer<'a> {
        clock: &'a VClock,
        service: u64,
        stall_at: u64,
        stall: u64,
        busy_until: u64,
        /// Every request's (send time, reply time).
        log: Vec<(u64, u64)>,
        /// Reply times of the requests in flight.
        pending: VecDeque<u64>,
        max_in_flight: usize,
    }

    impl<'a> FifoServer<'a> {
        fn new(clock: &'a VClock, service: u64, stall_at: u64, stall: u64) -> Self {
            FifoServer {
                clock,
                service,
                stall_at,
                stall,
                busy_until: 0,
                log: Vec::new(),
                pending: VecDeque::new(),
                max_in_flight: 0,
            }
        }
    }

    impl Pipelined for FifoServer<'_> {
        fn send(&mut self, n: usize) -> impl Future<Output = io::Result<()>> {
            let now = self.clock.now_ns();
            for _ in 0..n {
                let k = self.log.len() as u64;
                let extra = if k == self.stall_at { self.stall } else { 0 };
                self.busy_until = self.busy_until.max(now) + self.service + extra;
                self.log.push((now, self.busy_until));
                self.pending.push_back(self.busy_until);
            }
            self.max_in_flight = self.max_in_flight.max(self.pending.len());
            std::future::ready(Ok(()))
        }

        fn recv(&mut self, wake_at: Option<u64>) -> impl Future<Output = io::Result<Replies>> {
            let next = *self.pending.front().expect("recv with nothing in flight");
            let t = wake_at
                .map_or(next, |w| w.min(next))
                .max(self.clock.now_ns());
            self.clock.0.set(t);
            let count = self.pending.iter().take_while(|&&d| d <= t).count();
            self.pending.drain(..count);
            std::future::ready(Ok(Replies { count, done_ns: t }))
        }
    }

    fn run_pipelined(
        server: &mut FifoServer<'_>,
        pacing: Pacing,
        depth: usize,
        window: Window,
    ) -> Recorder {
        let mut rec = Recorder::keeping_samples(Arc::new(AtomicU64::new(0)));
        let clock = server.clock;
        poll_once(drive_pipelined(
            clock, server, pacing, depth, window, &mut rec,
        ))
        .unwrap();
        rec
    }

    /// The output of a future that finishes at its first poll (nothing on the virtual
    /// clock ever waits).
    fn poll_once<F: Future>(fut: F) -> F::Output {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(fut).poll(&mut cx) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("the virtual-clock load loop never waits"),
        }
    }

    #[test]
    fn pipelined_open_loop_sends_on_schedule_while_there_is_room() {
        // 1000 req/s on one connection, depth 4, 100 µs service, request 10 stalls 50 ms.
        let clock = VClock(Cell::new(0));
        let mut server = FifoServer::new(&clock, 100 * US, 10, 50 * MS);
        let rec = run_pipelined(&mut server, one_per_ms(), 4, window_ms(0, 200));
        assert_eq!((rec.requests(), rec.unsent()), (200, 0));
        assert_eq!(server.max_in_flight, 4);
        // Requests 11..=13 go out on time behind the stalled one (room in the pipeline);
        // 14 waits for the stalled reply at 60.1 ms, and each later reply lets one more go.
        for k in 0..=13 {
            assert_eq!(
                server.log[k].0,
                k as u64 * MS,
                "request {k} sent on schedule"
            );
        }
        assert_eq!(server.log[14].0, 60_100 * US);
        assert_eq!(server.log[15].0, 60_200 * US);
        // Every latency runs from the intended time to the reply: the stall is charged to
        // every request it delayed (the server is the bottleneck, so pipelining does not
        // change when replies come, only when requests go out).
        for (k, &(intended, latency)) in rec.samples().iter().enumerate() {
            let k64 = k as u64;
            assert_eq!(intended, k64 * MS, "request {k} is due at {k} ms");
            assert_eq!(
                latency,
                server.log[k].1 - intended,
                "latency of request {k}"
            );
            let want = match k64 {
                10..=65 => 59_100 * US - 900 * US * k64,
                _ => 100 * US,
            };
            assert_eq!(latency, want, "latency of request {k}");
        }
    }

    #[test]
    fn pipelined_closed_loop_keeps_depth_in_flight() {
        // Depth 4, 100 µs service: 4 go out at 0, then one per reply, each measured from
        // its actual send.
        let clock = VClock(Cell::new(0));
        let mut server = FifoServer::new(&clock, 100 * US, u64::MAX, 0);
        let rec = run_pipelined(&mut server, Pacing::Closed, 4, window_ms(0, 10));
        assert_eq!(server.max_in_flight, 4);
        let samples = rec.samples();
        assert_eq!(samples.len(), server.log.len());
        // Replies at 0.1 ms * (k + 1); sends stop at 10 ms, and the 3 in flight then are
        // still answered and measured.
        assert_eq!(samples.len(), 100 + 3);
        for (k, &(sent, latency)) in samples.iter().enumerate() {
            assert_eq!(sent, server.log[k].0);
            let want = if k < 4 {
                (k as u64 + 1) * 100 * US
            } else {
                400 * US
            };
            assert_eq!(latency, want, "request {k}");
        }
        assert_eq!(rec.unsent(), 0);
    }

    #[test]
    fn replies_beyond_the_requests_in_flight_are_an_error() {
        struct Liar;
        impl Pipelined for Liar {
            fn send(&mut self, _n: usize) -> impl Future<Output = io::Result<()>> {
                std::future::ready(Ok(()))
            }
            fn recv(&mut self, _w: Option<u64>) -> impl Future<Output = io::Result<Replies>> {
                std::future::ready(Ok(Replies {
                    count: 3,
                    done_ns: 1,
                }))
            }
        }
        let clock = VClock(Cell::new(0));
        let mut rec = Recorder::new(Arc::new(AtomicU64::new(0)));
        let res = poll_once(drive_pipelined(
            &clock,
            &mut Liar,
            Pacing::Closed,
            2,
            window_ms(0, 1),
            &mut rec,
        ));
        let e = res.expect_err("three replies to two requests must fail");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(rec.requests(), 0);
    }
}
