//! The parent's printout: a block per (scenario, backend) as it finishes, then one summary
//! meant to be quoted (figures, totals, failed checks with the command that replays them).

use std::fmt::Write as _;

use crate::report::{defect_title, TOTALS};
use crate::RunResult;

/// The block printed when one run finishes.
pub fn run_block(r: &RunResult) -> String {
    let mut s = String::new();
    let status = if r.report.failures.is_empty() {
        "ok".to_string()
    } else {
        format!(
            "FAILED ({} of {} checks)",
            r.report.failures.len(),
            r.report.checks
        )
    };
    let _ = writeln!(
        s,
        "   {} on {}: {status} in {:.1} s",
        r.scenario, r.backend, r.secs
    );
    let figs: Vec<String> = r
        .report
        .figures
        .iter()
        .filter(|(k, _)| k != "secs")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for line in wrap(&figs, 92) {
        let _ = writeln!(s, "     {line}");
    }
    for f in &r.report.failures {
        let tag = f
            .defect
            .map_or(String::new(), |d| format!(" [issue 14 defect {d}]"));
        let _ = writeln!(s, "     FAIL {}{tag}: {}", f.check, f.message);
    }
    for k in &r.report.skipped {
        let _ = writeln!(s, "     skipped {k}");
    }
    if r.abnormal.is_some() && !r.stderr_tail.is_empty() {
        let _ = writeln!(s, "     --- stderr tail ---");
        for l in r.stderr_tail.lines() {
            let _ = writeln!(s, "     | {l}");
        }
    }
    s
}

/// Joins `items` with spaces into lines of at most `width` characters.
fn wrap(items: &[String], width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for it in items {
        if !cur.is_empty() && cur.len() + 1 + it.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(it);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// The closing summary.
pub fn summary(
    results: &[RunResult],
    seed: u64,
    profile: &str,
    secs: f64,
    skip_known: bool,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== coring-torture summary: profile {profile}, seed {seed:#x}, {} runs in {secs:.1} s",
        results.len()
    );
    let _ = writeln!(
        s,
        "{:<13} {:<9} {:>7} {:>6}  key figures",
        "scenario", "backend", "result", "secs"
    );
    for r in results {
        let result = if r.report.failures.is_empty() {
            "ok".to_string()
        } else {
            format!("{} FAIL", r.report.failures.len())
        };
        let key: Vec<String> = r
            .report
            .figures
            .iter()
            .filter(|(k, _)| TOTALS.iter().any(|(t, _)| t == k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            s,
            "{:<13} {:<9} {:>7} {:>6.1}  {}",
            r.scenario,
            r.backend.to_string(),
            result,
            r.secs,
            key.join(" ")
        );
    }
    let _ = writeln!(s, "totals: {}", totals(results));
    s.push_str(&record(results, seed, profile));
    let failures: Vec<_> = results
        .iter()
        .flat_map(|r| r.report.failures.iter().map(move |f| (r, f)))
        .collect();
    let checks: u64 = results.iter().map(|r| r.report.checks).sum();
    if failures.is_empty() {
        let _ = writeln!(
            s,
            "result: PASS ({checks} checks{})",
            skipped_note(skip_known)
        );
        return s;
    }
    let known = failures.iter().filter(|(_, f)| f.defect.is_some()).count();
    let _ = writeln!(
        s,
        "result: FAIL: {} of {checks} checks failed ({known} are regressions of issue 14's fixed defects, {} new findings)",
        failures.len(),
        failures.len() - known
    );
    for (r, f) in &failures {
        let tag = f
            .defect
            .map_or("NEW".to_string(), |d| format!("defect {d}"));
        let _ = writeln!(s, "  [{tag}] {} on {}: {}", f.check, r.backend, f.message);
    }
    let mut defects: Vec<u8> = failures.iter().filter_map(|(_, f)| f.defect).collect();
    defects.sort_unstable();
    defects.dedup();
    if !defects.is_empty() {
        let _ = writeln!(s, "issue 14 defects regressed:");
        for d in defects {
            let _ = writeln!(s, "  {d}: {}", defect_title(d));
        }
    }
    let mut runs: Vec<String> = failures
        .iter()
        .map(|(r, _)| {
            format!(
                "coring-torture {} --backend {} --seed {seed:#x}{}",
                r.scenario,
                r.backend,
                if profile == "long" { " --long" } else { "" }
            )
        })
        .collect();
    runs.dedup();
    let _ = writeln!(s, "replay:");
    for r in runs {
        let _ = writeln!(s, "  {r}");
    }
    s
}

fn skipped_note(skip_known: bool) -> &'static str {
    if skip_known {
        "; checks of issue 14's defects skipped"
    } else {
        ""
    }
}

/// The totals line: sums and ranges of the figures in [`TOTALS`].
fn totals(results: &[RunResult]) -> String {
    let mut parts = Vec::new();
    for (key, how) in TOTALS {
        let vals: Vec<f64> = results
            .iter()
            .filter_map(|r| r.report.number(key))
            .collect();
        if vals.is_empty() {
            continue;
        }
        let v = match *how {
            "sum" => vals.iter().sum::<f64>(),
            "min" => vals.iter().cloned().fold(f64::INFINITY, f64::min),
            _ => vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        };
        let shown = if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        parts.push(format!("{key}={shown}"));
    }
    parts.join(" ")
}

/// Adds `key` over the runs of `scenario` (all backends).
fn sum(results: &[RunResult], scenario: &str, key: &str) -> f64 {
    results
        .iter()
        .filter(|r| r.scenario == scenario)
        .filter_map(|r| r.report.number(key))
        .sum()
}

/// `1234567` as `1,234,567`.
fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// " - all checks passed", or how many failed: the known defects they exercise, and the
/// new ones by name.
fn verdict(results: &[RunResult], scenario: &str) -> String {
    let mut known: Vec<u8> = Vec::new();
    let mut new = Vec::new();
    let mut n = 0;
    for r in results.iter().filter(|r| r.scenario == scenario) {
        for f in &r.report.failures {
            n += 1;
            match f.defect {
                Some(d) => known.push(d),
                None => new.push(format!("{} on {}", f.check, r.backend)),
            }
        }
    }
    if n == 0 {
        return " - all checks passed".to_string();
    }
    known.sort_unstable();
    known.dedup();
    let known: Vec<String> = known.iter().map(|d| d.to_string()).collect();
    let mut parts = Vec::new();
    if !known.is_empty() {
        let word = if known.len() == 1 {
            "defect"
        } else {
            "defects"
        };
        parts.push(format!("known {word} {}", known.join(", ")));
    }
    if !new.is_empty() {
        parts.push(format!("NEW: {}", new.join(", ")));
    }
    format!(" - {n} checks failed ({})", parts.join("; "))
}

/// A paragraph to quote (issue 14's closing note): the figures per scenario, in words.
fn record(results: &[RunResult], seed: u64, profile: &str) -> String {
    let ran = |name: &str| results.iter().any(|r| r.scenario == name);
    let per = |name: &str, key: &str, fmt: &dyn Fn(f64) -> String| -> String {
        let v: Vec<String> = results
            .iter()
            .filter(|r| r.scenario == name)
            .filter_map(|r| {
                r.report
                    .number(key)
                    .map(|x| format!("{} {}", r.backend, fmt(x)))
            })
            .collect();
        v.join(", ")
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| format!("Linux {}", k.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s =
        format!("for the record (profile {profile}, seed {seed:#x}, {kernel}, {cpus} CPUs):\n");
    if ran("storm") {
        let _ = writeln!(
            s,
            "  cancellation storm: {} operations ({}), {} of them dropped or cancelled (CancelToken) before completing{}",
            thousands(sum(results, "storm", "ops")),
            per("storm", "ops", &|x| thousands(x)),
            thousands(sum(results, "storm", "ops_cancelled")),
            verdict(results, "storm")
        );
    }
    if ran("runtime-drop") {
        let _ = writeln!(
            s,
            "  runtime drop, shutdown_timeout(0): {} tasks with an operation or sleep in flight, {} of them operations the kernel held, {} buffers leaked{}",
            thousands(sum(results, "runtime-drop", "ops")),
            thousands(sum(results, "runtime-drop", "ops_cancelled")),
            thousands(sum(results, "runtime-drop", "leaked_buffers")),
            verdict(results, "runtime-drop")
        );
    }
    if ran("signals") {
        let _ = writeln!(
            s,
            "  signal storm (no SA_RESTART, every thread): {} signals delivered ({}) during {} operations{}",
            thousands(sum(results, "signals", "signals_delivered")),
            per("signals", "signal_rate_hz", &|x| format!("{} Hz", thousands(x))),
            thousands(sum(results, "signals", "ops")),
            verdict(results, "signals")
        );
    }
    if ran("rlimits") {
        let _ = writeln!(
            s,
            "  low RLIMIT_NOFILE and RLIMIT_MEMLOCK in children{}",
            verdict(results, "rlimits")
        );
    }
    if ran("reset") || ran("proxy") {
        let mut parts = Vec::new();
        if ran("reset") {
            parts.push(format!(
                "{} at once in rounds of 2,000{}",
                thousands(sum(results, "reset", "connections_reset")),
                verdict(results, "reset")
            ));
        }
        if ran("proxy") {
            parts.push(format!(
                "{} by the fault proxy in front of the example servers{}",
                thousands(sum(results, "proxy", "connections_reset")),
                verdict(results, "proxy")
            ));
        }
        let _ = writeln!(s, "  connections reset: {}", parts.join("; "));
    }
    if ran("soak") {
        let ranges = |lo: &str, hi: &str, unit: &dyn Fn(f64) -> String| -> String {
            let v: Vec<String> = results
                .iter()
                .filter(|r| r.scenario == "soak")
                .filter_map(|r| {
                    let (a, b) = (r.report.number(lo)?, r.report.number(hi)?);
                    Some(format!("{} {}-{}", r.backend, unit(a), unit(b)))
                })
                .collect();
            v.join(", ")
        };
        let _ = writeln!(
            s,
            "  churn soak: {} s ({}); RSS {} MiB; fds {}{}",
            thousands(sum(results, "soak", "soak_secs")),
            per("soak", "soak_secs", &|x| format!("{} s", thousands(x))),
            ranges("rss_min_kib", "rss_max_kib", &|x| format!(
                "{:.1}",
                x / 1024.0
            )),
            ranges("fd_min", "fd_max", &|x| thousands(x)),
            verdict(results, "soak")
        );
    }
    s
}
