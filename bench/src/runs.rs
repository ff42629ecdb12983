//! Interleaved rounds for the comparison benches: every contender runs once per round, in
//! an order that rotates from round to round, and the report gives medians, the cheapest
//! run, and paired ratios (the median of same-round ratios), which are less sensitive than
//! a ratio of medians to load that changes from one round to the next.

use std::fmt;

use crate::stats::median;

/// Every run's result, by contender and round (`None` where the run failed).
#[derive(Debug)]
pub struct Runs<C, R> {
    contenders: Vec<C>,
    by: Vec<Vec<Option<R>>>,
    /// Some run failed (its error was printed).
    pub failed: bool,
}

impl<C: Copy + PartialEq + fmt::Display, R: fmt::Display> Runs<C, R> {
    /// Runs each contender `reps` times, interleaved: one run of each per round, the order
    /// rotating every round so no contender always runs first. Prints each run's result
    /// (or error) as it comes.
    pub fn interleave(
        reps: usize,
        contenders: &[C],
        mut run: impl FnMut(C) -> Result<R, String>,
    ) -> Self {
        let mut by: Vec<Vec<Option<R>>> = contenders.iter().map(|_| Vec::new()).collect();
        let mut failed = false;
        for rep in 0..reps {
            for i in 0..contenders.len() {
                let idx = (i + rep) % contenders.len();
                let c = contenders[idx];
                let r = match run(c) {
                    Ok(r) => {
                        println!("  run {}/{reps}  {c:<26} {r}", rep + 1);
                        Some(r)
                    }
                    Err(e) => {
                        eprintln!("  run {}/{reps}  {c:<26} ERROR: {e}", rep + 1);
                        failed = true;
                        None
                    }
                };
                by[idx].push(r);
            }
        }
        Runs {
            contenders: contenders.to_vec(),
            by,
            failed,
        }
    }

    /// `c`'s runs, in round order (`None` for a failed one).
    pub fn runs_of(&self, c: C) -> &[Option<R>] {
        self.contenders
            .iter()
            .position(|x| *x == c)
            .map_or(&[], |i| &self.by[i])
    }

    /// The median of `f` over `c`'s successful runs.
    pub fn median(&self, c: C, f: impl Fn(&R) -> f64) -> Option<f64> {
        median(self.runs_of(c).iter().flatten().map(f))
    }

    /// The smallest `f` over `c`'s successful runs: for a cost (CPU per request) on a
    /// shared machine, the run least disturbed by other load, since load only adds to it.
    pub fn min(&self, c: C, f: impl Fn(&R) -> f64) -> Option<f64> {
        self.runs_of(c)
            .iter()
            .flatten()
            .map(f)
            .filter(|x| !x.is_nan())
            .min_by(f64::total_cmp)
    }

    /// `f` of each of `c`'s runs, in run order, with `decimals` decimals (none from 1000 up).
    pub fn each(&self, c: C, decimals: usize, f: impl Fn(&R) -> f64) -> String {
        self.runs_of(c)
            .iter()
            .flatten()
            .map(|r| {
                let v = f(r);
                if v >= 1000.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.decimals$}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The median, over rounds where both ran, of `f(c) / f(base)` in the same round.
    pub fn paired_ratio(&self, c: C, base: C, f: impl Fn(&R) -> f64) -> Option<f64> {
        let pairs = self.runs_of(c).iter().zip(self.runs_of(base));
        median(pairs.filter_map(|(a, b)| Some(f(a.as_ref()?) / f(b.as_ref()?))))
    }
}

/// `v` with `decimals` decimals, or "-".
pub fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// `v / base` as "1.23x", or "-".
pub fn fmt_ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => fmt_x(Some(v / b)),
        _ => "-".to_string(),
    }
}

/// A ratio as "1.23x", or "-".
pub fn fmt_x(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_and_pair_up() {
        let mut order = Vec::new();
        let mut n = 0.0;
        let runs = Runs::interleave(3, &['a', 'b'], |c| {
            order.push(c);
            n += 1.0;
            if c == 'b' && n > 5.0 {
                Err("no".to_string())
            } else {
                Ok(if c == 'a' { 2.0 * n } else { n })
            }
        });
        assert_eq!(order, ['a', 'b', 'b', 'a', 'a', 'b']);
        assert!(runs.failed);
        let id = |x: &f64| *x;
        // a: 2, 8, 10; b: 2, 3, failed.
        assert_eq!(runs.median('a', id), Some(8.0));
        assert_eq!(runs.min('b', id), Some(2.0));
        assert_eq!(runs.each('b', 1, id), "2.0 3.0");
        // Same-round ratios a/b: 2/2, 8/3; the third round has no b.
        assert_eq!(
            runs.paired_ratio('a', 'b', id),
            Some((1.0 + 8.0 / 3.0) / 2.0)
        );
        assert_eq!(fmt_ratio(Some(3.0), Some(2.0)), "1.50x");
        assert_eq!(fmt_ratio(Some(3.0), None), "-");
        assert_eq!(fmt_opt(Some(1.234), 1), "1.2");
    }
}
