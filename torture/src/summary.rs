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
            .map_or(String::new(), |d| format!(" [known defect {d}]"));
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
        "result: FAIL: {} of {checks} checks failed ({known} exercise known defects of issue 14, {} do not)",
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
        let _ = writeln!(s, "known defects hit (issue 14):");
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
        "; checks of known defects skipped"
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
