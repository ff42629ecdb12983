//! What a runtime reports about its own work: [`Metrics`] (counters, the ring's batch and
//! occupancy histograms, time parked and running) and the sampled latency of operations
//! per opcode ([`LatencySampler`]).
//!
//! Everything here is plain counters owned by one runtime thread: no atomics, no
//! allocation per operation. A snapshot is a [`Metrics`] value (`Send + Clone`), so the
//! snapshots of many cores can be gathered on one thread.

use std::fmt;
use std::time::{Duration, Instant};

use slab::Slab;

/// Counters describing the work a runtime has done; see [`crate::Runtime::metrics`] and
/// [`crate::metrics`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Iterations of the event loop.
    pub turns: u64,
    /// Times the loop slept in the kernel waiting for a completion, timer or wakeup.
    pub parks: u64,
    /// Calls into the kernel to submit or wait (`io_uring_enter` on io_uring), counting
    /// the calls the backend found nothing to do for (no syscall made).
    pub enters: u64,
    /// Operations handed to the backend.
    pub ops_submitted: u64,
    /// Final completions received for operations (including orphaned ones).
    pub ops_completed: u64,
    /// Operations whose future was dropped while the kernel still owned them.
    pub ops_orphaned: u64,
    /// Transient errors (EINTR, EAGAIN, EBUSY) from the kernel that were retried.
    pub enter_retries: u64,
    /// Operations leaked at shutdown because the kernel did not finish them in time.
    pub ops_leaked: u64,
    /// Operations run on the blocking pool: on the fallback backend, those readiness cannot
    /// serve (files, paths); on io_uring, those whose opcode the kernel lacks.
    pub ops_offloaded: u64,
    /// Operations completed during submission, without a trip through the ring, the
    /// poller or the pool: reads served straight from the page cache (`preadv2` with
    /// `RWF_NOWAIT`), sends that found room in their socket buffer, on io_uring shutdowns
    /// that had nothing to wait behind (shutdown never blocks), and on the fallback backend
    /// the other socket operations that did not have to wait.
    pub ops_inline: u64,
    /// Multishot stream receives cancelled because their unread arrivals reached the
    /// per-stream cap, so that a stream nobody reads leaves further data in the socket
    /// (TCP flow control) instead of taking the shared provided buffers; the next read
    /// arms the receive again.
    pub multishot_throttled: u64,
    /// Streams switched to direct reads for bulk traffic (their multishot receive
    /// cancelled; each read then receives straight into the caller's buffer).
    pub bulk_switches: u64,
    /// Operations the kernel itself ordered or timed: on io_uring, the members of a
    /// [`link`](crate::link::link)ed chain (IOSQE_IO_LINK) and operations under a
    /// [`deadline`](crate::time::deadline_for) (IORING_OP_LINK_TIMEOUT). Elsewhere the
    /// driver emulates both, and this stays 0.
    pub ops_linked: u64,
    /// Operations completed through the polled ring ([`Builder::iopoll`](crate::Builder::iopoll));
    /// 0 without one.
    pub ops_polled: u64,
    /// Polled operations the kernel refused (EOPNOTSUPP: no poll queues) that were started
    /// again on the main ring, transparently; counted once in `ops_submitted` and
    /// `ops_completed` all the same.
    pub ops_poll_rerouted: u64,
    /// Zero-copy sends (`send_zc` and its kin) whose buffer the kernel handed back with a
    /// notification (io_uring's IORING_CQE_F_NOTIF): those that ran as zero-copy
    /// operations (one the socket refused, say a Unix-domain one, counts too: the kernel
    /// notifies it all the same). Elsewhere they are plain sends, and this stays 0. (Over loopback the
    /// kernel still copies the bytes once, to the receiving socket; the notification says
    /// so only to a caller that asks, which coring does not.)
    pub zerocopy_notifications: u64,
    /// Polls of futures: spawned tasks' and the future given to
    /// [`Runtime::block_on`](crate::Runtime::block_on).
    pub tasks_polled: u64,
    /// Wall time spent asleep in the kernel waiting for work (the parks' waits). Zero
    /// unless [`Builder::time_parks`](crate::Builder::time_parks) is on.
    pub time_parked: Duration,
    /// Wall time spent inside [`Runtime::block_on`](crate::Runtime::block_on) and not
    /// parked: running tasks, submitting and reaping (and spinning before a park, with
    /// [`Builder::park_spin`](crate::Builder::park_spin)). Zero unless
    /// [`Builder::time_parks`](crate::Builder::time_parks) is on.
    pub time_running: Duration,
    /// One sample per kernel entry (so its count equals `enters`), of the batch the entry
    /// handed over or brought back. io_uring: the submission entries (SQEs) the entry
    /// submitted, which is the submission queue's occupancy at the entry (0 for an entry
    /// that found nothing to submit). Fallback: readiness events one `epoll_wait`/`kevent`
    /// returned (0 when the backend answered without a system call). IOCP: packets one
    /// `GetQueuedCompletionStatusEx` returned. Mock backend: always 0.
    pub enter_batch: Histogram,
    /// One sample per collection of completions (one follows every kernel entry; a
    /// synchronous cancel collects once more): the completions collected, final and
    /// intermediate (a multishot receive's arrivals). On io_uring, that is the completion
    /// queue's occupancy after the entry, less the runtime's internal completions (its
    /// wakeup eventfd, cancels), plus any results of the blocking pool (`ops_offloaded`).
    pub reap_batch: Histogram,
    /// Completions the kernel dropped because the completion queue was full and it could
    /// not keep them (io_uring's `cq.koverflow` counter, as read at the snapshot; the
    /// kernel keeps it per ring and it wraps at 2^32). Modern kernels buffer overflowed
    /// completions instead of dropping them, so anything but 0 means lost completions.
    /// 0 on every other backend (they have no fixed-size completion queue).
    pub cq_overflow: u64,
    /// Latency of operations from submission to final completion, in nanoseconds, per
    /// opcode (named as in io_uring: `"nop"`, `"recv"`, `"send"`, `"read"`...), in the
    /// order each opcode was first sampled. Sampled: one operation in
    /// [`Builder::op_latency_sample`](crate::Builder::op_latency_sample) (64 by default)
    /// is timed, so each histogram counts about that fraction of its opcode's operations.
    /// Operations submitted as part of a [`link`](crate::link::link) or under a deadline,
    /// and operations orphaned before completing, are not timed.
    pub op_latency: Vec<OpLatency>,
}

impl Metrics {
    /// The latency histogram of `opcode` (e.g. `"recv"`), if any operation of it was timed.
    pub fn op_latency(&self, opcode: &str) -> Option<&Histogram> {
        self.op_latency
            .iter()
            .find(|o| o.opcode == opcode)
            .map(|o| &o.nanos)
    }
}

/// The sampled latency of one opcode; see [`Metrics::op_latency`](Metrics#structfield.op_latency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpLatency {
    /// The opcode's name, as io_uring names it (`"recv"`, `"send_zc"`, `"read_fixed"`...).
    pub opcode: &'static str,
    /// Submission-to-completion times of the timed operations, in nanoseconds.
    pub nanos: Histogram,
}

/// A histogram of `u64` values in power-of-two buckets, with the exact count, sum and
/// maximum: bucket 0 holds the value 0, bucket `i` (1..=64) the values in
/// `2^(i-1) .. 2^i`.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: [u64; Histogram::BUCKETS],
    /// Wrapping (the values recorded here are batch sizes and nanoseconds: far from it).
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: [0; Histogram::BUCKETS],
            sum: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// The number of buckets.
    pub const BUCKETS: usize = 65;

    /// Adds one value: a few instructions (the count is the buckets' sum, taken when read).
    #[inline(always)]
    pub(crate) fn record(&mut self, v: u64) {
        // 0..=64: always in bounds.
        self.buckets[(u64::BITS - v.leading_zeros()) as usize] += 1;
        self.sum = self.sum.wrapping_add(v);
        if v > self.max {
            self.max = v;
        }
    }

    /// Adds `n` zeros (the driver records only nonzero batches, and counts the rest).
    pub(crate) fn add_zeros(&mut self, n: u64) {
        self.buckets[0] += n;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The sum of the values recorded.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The largest value recorded (0 if none).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean of the values recorded (0 if none).
    pub fn mean(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum as f64 / n as f64,
        }
    }

    /// The counts per bucket (see [`Histogram`] for the ranges).
    pub fn buckets(&self) -> &[u64; Histogram::BUCKETS] {
        &self.buckets
    }

    /// The values bucket `i` holds, as `(lowest, highest)`.
    ///
    /// # Panics
    ///
    /// If `i >= Histogram::BUCKETS`.
    pub fn bucket_range(i: usize) -> (u64, u64) {
        assert!(
            i < Self::BUCKETS,
            "coring: histogram bucket {i} out of range"
        );
        match i {
            0 => (0, 0),
            64 => (1 << 63, u64::MAX),
            _ => (1 << (i - 1), (1 << i) - 1),
        }
    }

    /// An upper bound of the `q`-quantile (`q` in 0.0..=1.0, e.g. 0.99): the highest value
    /// of the bucket that holds it, or the maximum if that is lower. Within a factor of two
    /// of the exact quantile. 0 if nothing was recorded.
    pub fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::bucket_range(i).1.min(self.max);
            }
        }
        self.max
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the buckets that hold something, as `lowest..=highest: count`.
        struct Buckets<'a>(&'a Histogram);
        impl fmt::Debug for Buckets<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut m = f.debug_map();
                for (i, n) in self.0.buckets.iter().enumerate() {
                    if *n > 0 {
                        let (lo, hi) = Histogram::bucket_range(i);
                        m.entry(&format_args!("{lo}..={hi}"), n);
                    }
                }
                m.finish()
            }
        }
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum)
            .field("max", &self.max)
            .field("buckets", &Buckets(self))
            .finish()
    }
}

/// The default of [`Builder::op_latency_sample`](crate::Builder::op_latency_sample): one
/// operation in 64 is timed. Two clock reads per timed operation, about 1/32 of a clock
/// read per operation on average: well under 1% of an echo request's instructions (see
/// the README's "Metrics").
pub(crate) const DEFAULT_LATENCY_SAMPLE: u32 = 64;

/// At most this many timed operations in flight at once: beyond it, no further one is
/// timed until some finish (bounds the table if timed operations stay in flight for
/// long, such as receives on idle connections).
const MAX_TIMED_IN_FLIGHT: usize = 1024;

/// Times one operation in `every` from submission to final completion, per opcode.
pub(crate) struct LatencySampler {
    /// One in how many operations is timed (0: none).
    every: u32,
    /// Operations until the next timed one (the one that brings it to 1 is timed).
    countdown: u32,
    /// Timed operations in flight: index into `table`, and the submission time. An
    /// operation's slot names its entry here (key + 1; 0 for untimed).
    started: Slab<(u32, Instant)>,
    /// One histogram per opcode seen, in the order first timed.
    table: Vec<OpLatency>,
}

impl LatencySampler {
    pub(crate) fn new(every: u32) -> LatencySampler {
        LatencySampler {
            every,
            // The first operation is timed.
            countdown: 1,
            started: Slab::new(),
            table: Vec::new(),
        }
    }

    /// Whether the operation being submitted is to be timed. One decrement on the path of
    /// every operation; the rest only for timed ones.
    #[inline(always)]
    pub(crate) fn tick(&mut self) -> bool {
        if self.countdown > 1 {
            self.countdown -= 1;
            false
        } else {
            self.tick_slow()
        }
    }

    #[cold]
    #[inline(never)]
    fn tick_slow(&mut self) -> bool {
        if self.every == 0 {
            self.countdown = u32::MAX;
            return false;
        }
        self.countdown = self.every;
        self.started.len() < MAX_TIMED_IN_FLIGHT
    }

    /// The table index of `opcode`, added on first use (names are `&'static str`s from
    /// one match, so the pointer comparison nearly always decides).
    fn index(&mut self, opcode: &'static str) -> u32 {
        let found = self
            .table
            .iter()
            .position(|o| std::ptr::eq(o.opcode, opcode) || o.opcode == opcode);
        let i = found.unwrap_or_else(|| {
            self.table.push(OpLatency {
                opcode,
                nanos: Histogram::default(),
            });
            self.table.len() - 1
        });
        i as u32
    }

    /// Records an operation of `opcode` that finished during its submission, started at
    /// `at`.
    #[cold]
    pub(crate) fn finished_inline(&mut self, opcode: &'static str, at: Instant) {
        let i = self.index(opcode);
        self.table[i as usize].nanos.record(nanos(at.elapsed()));
    }

    /// Remembers an operation of `opcode` started at `at` and left in flight; returns the
    /// mark its slot keeps (never 0).
    #[cold]
    pub(crate) fn started(&mut self, opcode: &'static str, at: Instant) -> u32 {
        let i = self.index(opcode);
        self.started.insert((i, at)) as u32 + 1
    }

    /// The timed operation with slot mark `mark` reached its final completion.
    #[cold]
    pub(crate) fn finished(&mut self, mark: u32) {
        if let Some((i, at)) = self.started.try_remove(mark as usize - 1) {
            self.table[i as usize].nanos.record(nanos(at.elapsed()));
        }
    }

    /// The timed operation with slot mark `mark` will not be seen completing (orphaned):
    /// forgets it.
    #[cold]
    pub(crate) fn forget(&mut self, mark: u32) {
        self.started.try_remove(mark as usize - 1);
    }

    /// The histograms so far.
    pub(crate) fn table(&self) -> &[OpLatency] {
        &self.table
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let mut h = Histogram::default();
        for v in [0, 1, 2, 3, 4, 1000, u64::MAX] {
            h.record(v);
        }
        assert_eq!(h.count(), 7);
        assert_eq!(h.max(), u64::MAX);
        let b = h.buckets();
        assert_eq!((b[0], b[1], b[2], b[3], b[10], b[64]), (1, 1, 2, 1, 1, 1));
        assert_eq!(b.iter().sum::<u64>(), 7);
        assert_eq!(Histogram::bucket_range(10), (512, 1023));
        // Rank 4 of 7 is the value 3, in bucket 2 (2..=3).
        assert_eq!(h.quantile(0.5), 3);
        assert_eq!(h.quantile(0.0), 0);
        assert_eq!(h.quantile(1.0), u64::MAX);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn sampler_times_one_in_n() {
        let mut s = LatencySampler::new(4);
        let ticks: Vec<bool> = (0..9).map(|_| s.tick()).collect();
        assert_eq!(
            ticks,
            [true, false, false, false, true, false, false, false, true]
        );
        let mut off = LatencySampler::new(0);
        assert!((0..100).all(|_| !off.tick()));
        let mut s = LatencySampler::new(1);
        let m = s.started("nop", Instant::now());
        s.finished_inline("nop", Instant::now());
        s.finished(m);
        let other = s.started("recv", Instant::now());
        s.forget(other);
        assert_eq!(s.table().len(), 2);
        assert_eq!(s.table()[0].nanos.count(), 2);
        assert_eq!(s.table()[1].nanos.count(), 0);
        assert!(s.started.is_empty());
    }
}
