//! Latency histograms (HDR, 3 significant digits) and the percentiles the tool reports.

use hdrhistogram::Histogram;

/// The percentiles every report shows, as quantiles.
pub const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// A histogram of latencies in nanoseconds: 3 significant digits (0.1% error), from 1 ns up,
/// growing as larger values arrive.
#[derive(Clone)]
pub struct LatencyHist {
    h: Histogram<u64>,
}

impl std::fmt::Debug for LatencyHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHist")
            .field("count", &self.len())
            .field("max", &self.h.max())
            .finish()
    }
}

impl Default for LatencyHist {
    fn default() -> Self {
        LatencyHist::new()
    }
}

impl LatencyHist {
    /// An empty histogram (starts sized for 1 ns .. 1 ms and grows on demand).
    pub fn new() -> LatencyHist {
        let mut h = Histogram::new_with_bounds(1, 1_000_000, 3)
            .expect("1..1e6 with 3 significant digits is a valid HDR configuration");
        h.auto(true);
        LatencyHist { h }
    }

    /// Records one latency in nanoseconds (0 counts as the smallest value).
    pub fn record(&mut self, ns: u64) {
        let v = ns.max(1);
        // Grows the histogram as needed (saturating_record would clamp instead of
        // growing); it fails only when the counts array cannot grow, then clamp.
        if self.h.record(v).is_err() {
            self.h.saturating_record(v);
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHist) {
        self.h
            .add(&other.h)
            .expect("auto-resizing histograms always accept each other's values");
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// The value (ns) at quantile `q` (0..=1): at most 0.1% above the true value.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        self.h.value_at_quantile(q.clamp(0.0, 1.0))
    }

    /// The count, mean and reported percentiles, in nanoseconds; `None` when empty.
    pub fn summary(&self) -> Option<Summary> {
        if self.is_empty() {
            return None;
        }
        let q = |i: usize| self.quantile_ns(QUANTILES[i].1);
        Some(Summary {
            count: self.len(),
            min: self.h.min(),
            mean: self.h.mean(),
            p50: q(0),
            p90: q(1),
            p99: q(2),
            p999: q(3),
            p9999: q(4),
            max: self.h.max(),
        })
    }

    /// The percentile curve: `(nines, microseconds)` points with `nines = -log10(1 - q)`
    /// (0 at the median's left end, 1 at p90, 2 at p99, ...), `steps` points per nine from
    /// 0 to `max_nines`, the last point being the maximum. Empty when nothing was recorded.
    pub fn curve(&self, max_nines: f64, steps: usize) -> Vec<(f64, f64)> {
        if self.is_empty() || steps == 0 || max_nines <= 0.0 {
            return Vec::new();
        }
        let n = (max_nines * steps as f64).ceil() as usize;
        let mut pts: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let x = i as f64 / steps as f64;
                let q = 1.0 - 10f64.powf(-x);
                (x, self.quantile_ns(q) as f64 / 1000.0)
            })
            .collect();
        pts.push((max_nines, self.h.max() as f64 / 1000.0));
        pts
    }
}

/// Latency figures of one run, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest value.
    pub max: u64,
}

impl Summary {
    /// The reported percentiles then the maximum, in that order, in nanoseconds.
    pub fn columns(&self) -> [u64; 6] {
        [
            self.p50, self.p90, self.p99, self.p999, self.p9999, self.max,
        ]
    }
}

/// Nanoseconds to microseconds.
pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within HDR's 3-significant-digit resolution (0.1%, plus one unit for small values).
    fn close(got: u64, want: u64) -> bool {
        let tol = (want as f64 * 0.001).ceil() as u64 + 1;
        got.abs_diff(want) <= tol
    }

    #[test]
    fn uniform_small_values_are_exact() {
        let mut h = LatencyHist::new();
        for v in 1..=1000 {
            h.record(v);
        }
        let s = h.summary().unwrap();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 1);
        assert_eq!(s.max, 1000);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p90, 900);
        assert_eq!(s.p99, 990);
        assert_eq!(s.p999, 999);
        assert_eq!(s.p9999, 1000);
        assert!((s.mean - 500.5).abs() < 0.01, "{}", s.mean);
    }

    #[test]
    fn uniform_large_values_within_resolution() {
        // 1 µs .. 100 ms in 100 ns steps: values beyond the initial 1 ms bound as well.
        let mut h = LatencyHist::new();
        let n = 1_000_000u64;
        for i in 1..=n {
            h.record(i * 100);
        }
        let s = h.summary().unwrap();
        assert!(close(s.p50, 50_000_000), "p50 {}", s.p50);
        assert!(close(s.p90, 90_000_000), "p90 {}", s.p90);
        assert!(close(s.p99, 99_000_000), "p99 {}", s.p99);
        assert!(close(s.p999, 99_900_000), "p99.9 {}", s.p999);
        assert!(close(s.max, 100_000_000), "max {}", s.max);
    }

    #[test]
    fn bimodal_tail_shows_in_high_percentiles_only() {
        // 99% at 10 µs, 1% at 5 ms: p50/p90/p99 see the fast mode, p99.9 the slow one.
        let mut h = LatencyHist::new();
        for i in 0..100_000u64 {
            h.record(if i % 100 == 0 { 5_000_000 } else { 10_000 });
        }
        let s = h.summary().unwrap();
        assert!(close(s.p50, 10_000));
        assert!(close(s.p99, 10_000), "p99 {}", s.p99);
        assert!(close(s.p999, 5_000_000), "p99.9 {}", s.p999);
        assert!(close(s.max, 5_000_000));
        assert_eq!(s.columns()[5], s.max);
    }

    #[test]
    fn merge_adds_counts() {
        let (mut a, mut b) = (LatencyHist::new(), LatencyHist::new());
        for v in 0..100 {
            a.record(1000 + v);
            b.record(2_000_000 + v);
        }
        a.merge(&b);
        assert_eq!(a.len(), 200);
        // The 50th of 200 values is a's 50th, the 150th is b's 50th.
        assert_eq!(a.quantile_ns(0.25), 1049);
        assert!(close(a.quantile_ns(0.75), 2_000_049));
        assert!(close(a.summary().unwrap().max, 2_000_099));
    }

    #[test]
    fn zero_is_recorded_as_the_smallest_value() {
        let mut h = LatencyHist::new();
        h.record(0);
        assert_eq!(h.summary().unwrap().max, 1);
        assert!(LatencyHist::new().summary().is_none());
    }

    #[test]
    fn curve_is_on_the_nines_scale_and_ends_at_max() {
        let mut h = LatencyHist::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000); // 1 µs .. 10 ms
        }
        let c = h.curve(4.0, 10);
        assert_eq!(c.len(), 41);
        assert_eq!(c[0].0, 0.0);
        // x = 1 is p90, x = 2 is p99.
        assert!((c[10].0 - 1.0).abs() < 1e-12);
        assert!((c[10].1 - 9000.0).abs() <= 9.0 + 1.0, "p90 {}", c[10].1);
        assert!((c[20].1 - 9900.0).abs() <= 9.9 + 1.0, "p99 {}", c[20].1);
        assert_eq!(
            c.last().unwrap(),
            &(4.0, h.summary().unwrap().max as f64 / 1000.0)
        );
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!(LatencyHist::new().curve(4.0, 10).is_empty());
    }
}
