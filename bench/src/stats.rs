//! The arithmetic behind the reported figures: rates, ratios, CPU per operation.

use std::time::Duration;

/// Operations per second over `elapsed`; `0.0` for an empty interval.
pub fn rate(ops: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        ops as f64 / secs
    } else {
        0.0
    }
}

/// `a / b`, or `None` when `b` is zero or either is not finite.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    let r = a / b;
    (b != 0.0 && r.is_finite()).then_some(r)
}

/// CPU microseconds per operation; `None` without operations or without a CPU reading.
pub fn cpu_us_per_op(cpu: Option<Duration>, ops: u64) -> Option<f64> {
    let cpu = cpu?;
    (ops > 0).then(|| cpu.as_secs_f64() * 1e6 / ops as f64)
}

/// The fraction of `window` spent waiting for a CPU, when known.
pub fn wait_fraction(run_wait: Option<Duration>, window: Duration) -> Option<f64> {
    ratio(run_wait?.as_secs_f64(), window.as_secs_f64())
}

/// `count` per operation (kernel entries per request and the like).
pub fn per_op(count: u64, ops: u64) -> Option<f64> {
    ratio(count as f64, ops as f64)
}

/// The median (the mean of the middle two for an even count), NaNs left out; `None` when
/// nothing is left.
pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// A compact number for a table: `1234567` -> `1.23M`, `85123` -> `85.1k`, `12.5` -> `12.5`.
pub fn human(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "-".to_string()
    } else if a >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_ops_over_seconds() {
        assert_eq!(rate(5000, Duration::from_secs(2)), 2500.0);
        assert_eq!(rate(3, Duration::from_millis(1500)), 2.0);
        assert_eq!(rate(10, Duration::ZERO), 0.0);
    }

    #[test]
    fn ratio_refuses_zero_denominators() {
        assert_eq!(ratio(3.0, 4.0), Some(0.75));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(0.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn cpu_per_request_in_microseconds() {
        // 2 s of server CPU for 400k requests is 5 µs each.
        let us = cpu_us_per_op(Some(Duration::from_secs(2)), 400_000).unwrap();
        assert!((us - 5.0).abs() < 1e-9, "{us}");
        assert_eq!(cpu_us_per_op(Some(Duration::from_secs(1)), 0), None);
        assert_eq!(cpu_us_per_op(None, 10), None);
    }

    #[test]
    fn wait_fraction_and_per_op() {
        let f = wait_fraction(Some(Duration::from_millis(150)), Duration::from_secs(3)).unwrap();
        assert!((f - 0.05).abs() < 1e-12, "{f}");
        assert_eq!(wait_fraction(None, Duration::from_secs(1)), None);
        assert_eq!(per_op(3, 4), Some(0.75));
        assert_eq!(per_op(3, 0), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(
            median([4.0, 1.0, f64::NAN, 2.0, 3.0].into_iter()),
            Some(2.5)
        );
        assert_eq!(median([f64::NAN].into_iter()), None);
    }

    #[test]
    fn human_numbers() {
        for (x, shown) in [
            (1_234_567.0, "1.23M"),
            (85_123.0, "85.1k"),
            (9_999.0, "9999"),
            (12.54, "12.5"),
            (1.234, "1.23"),
            (2.5e9, "2.50G"),
            (f64::NAN, "-"),
        ] {
            assert_eq!(human(x), shown, "{x}");
        }
    }
}
