//! What a scenario run found: figures to quote and failed checks, printed as tagged lines
//! (`@torture ...`) that the parent process collects into the summary.
//!
//! A check that exercises one of issue 14's defects (all fixed since) carries its number,
//! so the summary tells a regression of a fixed defect from a new finding, and
//! `--skip-known` can leave those checks out (to run the suite against a commit from
//! before the fixes).

use std::fmt::Write as _;

/// The defects of issue 14 (fixed) that checks of this suite exercise, by number.
pub const KNOWN_DEFECTS: &[(u8, &str)] = &[
    (
        1,
        "a panicking Drop of a cancelled op's buffer escapes the event loop",
    ),
    (
        2,
        "a mem::forget'ed call's claim blocks kept receives/accepts",
    ),
    (
        3,
        "a stream's in-flight write count goes stale after shutdown_timeout(0) leaks",
    ),
    (
        4,
        "unregister() says ResourceBusy when nothing uses the descriptor",
    ),
    (5, "fallback: EINTR escapes from blocking-pool operations"),
    (6, "time::interval(Duration::MAX) panics"),
    (7, "futures moved between runtimes hang"),
    (
        8,
        "io_uring: a dropped stream is not closed until the loop turns",
    ),
    (
        9,
        "live_tasks() does not count spawned tasks not yet polled",
    ),
    (
        10,
        "the fallback reason under RLIMIT_MEMLOCK does not name memlock (issue 14, \"Also\")",
    ),
];

/// The description of known defect `n`.
pub fn defect_title(n: u8) -> &'static str {
    KNOWN_DEFECTS
        .iter()
        .find(|(k, _)| *k == n)
        .map_or("(unknown)", |(_, t)| t)
}

/// One failed check.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// `scenario/check`.
    pub check: String,
    /// The known defect this check exercises, if any.
    pub defect: Option<u8>,
    /// What was wrong, on one line.
    pub message: String,
}

/// Figures and failures of one scenario on one backend.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// `(key, value)` in the order they were recorded.
    pub figures: Vec<(String, String)>,
    /// Failed checks.
    pub failures: Vec<Failure>,
    /// Checks run (passed or failed), for the summary.
    pub checks: u64,
    /// Checks skipped (`--skip-known`, or a kernel feature missing), with why.
    pub skipped: Vec<String>,
}

impl Report {
    /// Records a figure (shown in the summary; the keys in [`TOTALS`] are also summed).
    pub fn figure(&mut self, key: &str, value: impl ToString) {
        self.figures.push((key.to_string(), value.to_string()));
    }

    /// Records that check `check` ran, and failed with `message` unless `ok`.
    pub fn check(
        &mut self,
        check: &str,
        defect: Option<u8>,
        ok: bool,
        message: impl FnOnce() -> String,
    ) {
        self.checks += 1;
        if !ok {
            self.fail(check, defect, message());
        }
    }

    /// Records a failure of `check`.
    pub fn fail(&mut self, check: &str, defect: Option<u8>, message: impl Into<String>) {
        let message: String = message.into();
        self.failures.push(Failure {
            check: check.to_string(),
            defect,
            message: one_line(&message),
        });
    }

    /// Records a skipped check and why.
    pub fn skip(&mut self, check: &str, why: &str) {
        self.skipped.push(format!("{check}: {why}"));
    }

    /// The tagged lines a scenario child prints for the parent.
    pub fn to_lines(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.figures {
            let _ = writeln!(s, "@torture figure {k} {}", one_line(v));
        }
        for f in &self.failures {
            let d = f.defect.map_or("-".to_string(), |d| d.to_string());
            let _ = writeln!(s, "@torture fail {} {d} {}", f.check, f.message);
        }
        for k in &self.skipped {
            let _ = writeln!(s, "@torture skip {}", one_line(k));
        }
        let _ = writeln!(s, "@torture checks {}", self.checks);
        s
    }

    /// Parses what [`Report::to_lines`] printed (other lines are ignored). `None` if the
    /// child never printed its end line (`@torture done`).
    pub fn from_lines(text: &str) -> Option<Report> {
        let mut r = Report::default();
        let mut done = false;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("@torture ") else {
                continue;
            };
            let (tag, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            match tag {
                "figure" => {
                    let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                    r.figures.push((k.to_string(), v.to_string()));
                }
                "fail" => {
                    let mut it = rest.splitn(3, ' ');
                    let check = it.next().unwrap_or("?").to_string();
                    let defect = it.next().and_then(|d| d.parse().ok());
                    let message = it.next().unwrap_or("").to_string();
                    r.failures.push(Failure {
                        check,
                        defect,
                        message,
                    });
                }
                "skip" => r.skipped.push(rest.to_string()),
                "checks" => r.checks = rest.trim().parse().unwrap_or(0),
                "done" => done = true,
                _ => {}
            }
        }
        done.then_some(r)
    }

    /// The numeric value of figure `key`, if recorded and numeric.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.figures
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.split_whitespace().next()?.parse().ok())
    }
}

/// Figures the summary adds up over all runs (`sum`) or takes the range of (`min`/`max`).
pub const TOTALS: &[(&str, &str)] = &[
    ("ops", "sum"),
    ("ops_cancelled", "sum"),
    ("signals_delivered", "sum"),
    ("connections_reset", "sum"),
    ("soak_secs", "sum"),
    ("rss_min_kib", "min"),
    ("rss_max_kib", "max"),
    ("fd_min", "min"),
    ("fd_max", "max"),
];

/// `s` on one line (newlines become ` | `), for the tagged-line protocol.
pub fn one_line(s: &str) -> String {
    s.trim().replace('\n', " | ").replace('\r', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let mut r = Report::default();
        r.figure("ops", 5);
        r.check("storm/buffers", None, false, || {
            "2 buffers\nnot dropped".into()
        });
        r.check("storm/claims", Some(2), false, || "lost \"A\"".into());
        r.check("storm/fds", None, true, String::new);
        r.skip("signals/lease", "no leases");
        let text = format!("noise\n{}@torture done\n", r.to_lines());
        let back = Report::from_lines(&text).expect("done line");
        assert_eq!(back.figures, r.figures);
        assert_eq!(back.failures, r.failures);
        assert_eq!(back.checks, 3);
        assert_eq!(back.skipped, r.skipped);
        assert_eq!(back.number("ops"), Some(5.0));
        assert!(Report::from_lines("@torture figure a 1\n").is_none());
    }
}
