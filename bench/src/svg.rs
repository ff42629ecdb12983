//! The latency percentile plot, as a hand-written SVG: one panel per mode, x = percentile
//! on a "nines" scale (0, 90, 99, 99.9, 99.99), y = latency in µs, one line per run, and a
//! legend naming each run's backend and setup.

use std::fmt::Write as _;

use crate::report::{Mode, RunResult};

/// Panel geometry, in SVG user units.
const WIDTH: f64 = 1060.0;
const PANEL_H: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 400.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 56.0;
/// Points per nine on each curve.
const STEPS: usize = 40;

/// Line colours, one per setup in a panel (cycled); the backend sets the dash pattern.
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// How to draw the plot.
#[derive(Debug, Clone, Copy)]
pub struct PlotOptions {
    /// Logarithmic latency axis (the default: a linear one hides everything below the
    /// tail).
    pub log_y: bool,
    /// Rightmost percentile, in nines: 4 means 99.99%.
    pub max_nines: u32,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            log_y: true,
            max_nines: 4,
        }
    }
}

/// Escapes text for SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The label under x = `nines`: 0 -> `0%`, 1 -> `90%`, 3 -> `99.9%`.
pub fn nines_label(nines: u32) -> String {
    match nines {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// The smallest of 1, 2, 5 times a power of ten that is at least `v` (for axis ends).
pub fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v * (1.0 - 1e-12) {
            return m * mag;
        }
    }
    10.0 * mag
}

/// The SVG document, or `None` when no run measured latencies.
pub fn plot(runs: &[RunResult], opts: PlotOptions) -> Option<String> {
    let mut panels: Vec<(Mode, Vec<&RunResult>)> = Vec::new();
    for r in runs.iter().filter(|r| r.summary().is_some()) {
        match panels.iter_mut().find(|(m, _)| *m == r.mode) {
            Some((_, v)) => v.push(r),
            None => panels.push((r.mode, vec![r])),
        }
    }
    if panels.is_empty() {
        return None;
    }
    let height = PANEL_H * panels.len() as f64;
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    for (i, (mode, runs)) in panels.iter().enumerate() {
        panel(&mut s, i as f64 * PANEL_H, *mode, runs, opts);
    }
    s.push_str("</svg>\n");
    Some(s)
}

/// Maps data to panel coordinates.
struct Axes {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    max_nines: f64,
    lo: f64,
    hi: f64,
    log_y: bool,
}

impl Axes {
    fn x(&self, nines: f64) -> f64 {
        self.x0 + (self.x1 - self.x0) * (nines / self.max_nines)
    }

    fn y(&self, v: f64) -> f64 {
        let f = if self.log_y {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.y1 - (self.y1 - self.y0) * f.clamp(0.0, 1.0)
    }

    /// Tick values of the latency axis.
    fn y_ticks(&self) -> Vec<f64> {
        if self.log_y {
            let (a, b) = (
                self.lo.log10().round() as i32,
                self.hi.log10().round() as i32,
            );
            // Few decades: 1-2-5 ticks, so that the axis still reads.
            let steps: &[f64] = if b - a <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
            (a..=b)
                .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
                .filter(|&v| v <= self.hi * (1.0 + 1e-9))
                .collect()
        } else {
            (0..=5)
                .map(|i| self.lo + (self.hi - self.lo) * i as f64 / 5.0)
                .collect()
        }
    }
}

/// An axis tick: `0.5`, `20`, `5000`, `10k`, `1M` (no trailing zeros).
pub fn fmt_tick(v: f64) -> String {
    let (x, suffix) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
}

/// A latency for the legend: microseconds below 10 ms, milliseconds above.
pub fn fmt_latency(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn panel(s: &mut String, top: f64, mode: Mode, runs: &[&RunResult], opts: PlotOptions) {
    let max_nines = f64::from(opts.max_nines.max(1));
    let curves: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            r.latency
                .as_ref()
                .map(|h| h.curve(max_nines, STEPS))
                .unwrap_or_default()
        })
        .collect();
    let ys = || curves.iter().flatten().map(|p| p.1);
    let max = ys().fold(0.0f64, f64::max);
    let min = ys().fold(f64::INFINITY, f64::min);
    let (lo, hi) = if opts.log_y {
        let lo = 10f64.powf(min.max(0.1).log10().floor());
        let hi = 10f64.powf(max.max(lo * 10.0).log10().ceil());
        (lo, hi)
    } else {
        (0.0, nice_ceil(max))
    };
    let ax = Axes {
        x0: LEFT,
        x1: WIDTH - RIGHT,
        y0: top + TOP,
        y1: top + PANEL_H - BOTTOM,
        max_nines,
        lo,
        hi,
        log_y: opts.log_y,
    };
    let open = runs.iter().any(|r| r.open_loop);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-size="15" font-weight="bold">{} latency by percentile: {}</text>"#,
        LEFT,
        top + 24.0,
        mode.name(),
        escape(mode.latency_meaning(open))
    );
    // Frame, grid and ticks.
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        ax.x0,
        ax.y0,
        ax.x1 - ax.x0,
        ax.y1 - ax.y0
    );
    for n in 0..=opts.max_nines.max(1) {
        let x = ax.x(f64::from(n));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            ax.y0, ax.y1
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            ax.y1 + 18.0,
            nines_label(n)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        (ax.x0 + ax.x1) / 2.0,
        ax.y1 + 40.0
    );
    for v in ax.y_ticks() {
        let y = ax.y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            ax.x0, ax.x1
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            ax.x0 - 6.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">latency (µs{})</text>"#,
        ax.x0 - 56.0,
        (ax.y0 + ax.y1) / 2.0,
        if opts.log_y { ", log scale" } else { "" }
    );
    // One line per run, and its legend entry.
    let mut setups: Vec<&str> = Vec::new();
    for (i, (r, c)) in runs.iter().zip(&curves).enumerate() {
        let setup = match setups.iter().position(|l| *l == r.label) {
            Some(k) => k,
            None => {
                setups.push(&r.label);
                setups.len() - 1
            }
        };
        let color = COLORS[setup % COLORS.len()];
        let dash = if r.backend == "io_uring" {
            ""
        } else {
            r#" stroke-dasharray="7 4""#
        };
        let mut d = String::new();
        for (j, &(x, y)) in c.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1} {:.1} ",
                if j == 0 { "M" } else { "L" },
                ax.x(x),
                ax.y(y)
            );
        }
        let _ = writeln!(
            s,
            r#"<path d="{}" fill="none" stroke="{color}" stroke-width="2"{dash}><title>{}</title></path>"#,
            d.trim_end(),
            escape(&format!("{} {} {}", r.mode.name(), r.label, r.backend))
        );
        let ly = ax.y0 + 10.0 + 20.0 * i as f64;
        let lx = ax.x1 + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/>"#,
            lx + 28.0
        );
        let p99 = r.summary().map_or(0.0, |x| x.p99 as f64 / 1000.0);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{} · {} (p99 {})</text>"#,
            lx + 34.0,
            ly + 4.0,
            escape(&r.backend),
            escape(&r.label),
            fmt_latency(p99)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::LatencyHist;
    use std::time::Duration;

    fn run(mode: Mode, backend: &str, label: &str, scale: u64) -> RunResult {
        let mut r = RunResult::new(mode, label.into(), backend, "req");
        let mut h = LatencyHist::new();
        for v in 1..=10_000u64 {
            h.record(v * scale);
        }
        r.latency = Some(h);
        r.ops = 10_000;
        r.elapsed = Duration::from_secs(1);
        r
    }

    /// A minimal XML well-formedness check: tags balance and nest, attributes are quoted,
    /// and text holds no bare `<` or `&`.
    fn assert_well_formed(doc: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = doc;
        if let Some(after) = rest.strip_prefix("<?xml") {
            rest = &after[after.find("?>").expect("xml declaration ends") + 2..];
        }
        while let Some(lt) = rest.find('<') {
            let text = &rest[..lt];
            for (i, _) in text.match_indices('&') {
                let ent = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                        .iter()
                        .any(|e| ent.starts_with(e)),
                    "bare & in text: {text:?}"
                );
            }
            let gt = rest[lt..].find('>').expect("tag closes") + lt;
            let tag = &rest[lt + 1..gt];
            assert!(!tag.contains('<'), "'<' inside tag {tag:?}");
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in {tag:?}"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("tag has a name");
                stack.push(name.to_string());
            }
            rest = &rest[gt + 1..];
        }
        assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    }

    #[test]
    fn one_path_per_run_with_a_legend_entry_each() {
        let runs = vec![
            run(Mode::Echo, "io_uring", "closed 16c 1024B", 1000),
            run(Mode::Echo, "fallback", "closed 16c 1024B", 1500),
            run(Mode::Fread, "io_uring", "qd 1", 10),
            run(Mode::Fread, "fallback", "qd 1", 30),
        ];
        let svg = plot(&runs, PlotOptions::default()).unwrap();
        assert_well_formed(&svg);
        assert!(svg.starts_with("<?xml"));
        // Colour by setup, dashes for the fallback: in each panel, the two runs of a setup
        // share a colour and only the fallback's line is dashed.
        let paths: Vec<&str> = svg
            .split("<path ")
            .skip(1)
            .map(|p| &p[..p.find('>').unwrap()])
            .collect();
        assert_eq!(paths.len(), 4);
        for p in &paths {
            assert!(p.contains(r##"stroke="#1f77b4""##), "{p}");
        }
        let dashed: Vec<bool> = paths.iter().map(|p| p.contains("dasharray")).collect();
        assert_eq!(dashed, [false, true, false, true]);
        assert_eq!(svg.matches("<path ").count(), 4);
        assert_eq!(svg.matches("io_uring · ").count(), 2);
        assert_eq!(svg.matches("fallback · ").count(), 2);
        // Two panels, each with the nines axis.
        assert_eq!(svg.matches(">99.99%</text>").count(), 2);
        assert_eq!(svg.matches(">90%</text>").count(), 2);
        assert!(svg.contains("echo latency by percentile"));
        assert!(svg.contains("fread latency by percentile"));
    }

    #[test]
    fn runs_without_latency_are_left_out() {
        let mut runs = vec![run(Mode::Echo, "io_uring", "a", 1000)];
        runs.push(RunResult::new(Mode::Spawn, "1M".into(), "io_uring", "task"));
        let svg = plot(&runs, PlotOptions::default()).unwrap();
        assert_eq!(svg.matches("<path ").count(), 1);
        assert!(plot(&runs[1..], PlotOptions::default()).is_none());
    }

    #[test]
    fn labels_are_escaped_and_log_scale_is_well_formed() {
        let runs = vec![
            run(Mode::Timers, "io_uring", "a<b & \"c\"", 1),
            run(Mode::Timers, "fallback", "x", 1000),
        ];
        let opts = PlotOptions {
            log_y: true,
            max_nines: 3,
        };
        let svg = plot(&runs, opts).unwrap();
        assert_well_formed(&svg);
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;"));
        assert_eq!(svg.matches("<path ").count(), 2);
        assert!(svg.contains(">99.9%</text>") && !svg.contains(">99.99%</text>"));
        assert!(svg.contains("log scale"));
    }

    #[test]
    fn curve_points_stay_inside_the_frame() {
        let runs = vec![run(Mode::Echo, "io_uring", "a", 1000)];
        let opts = PlotOptions {
            log_y: false,
            ..PlotOptions::default()
        };
        let svg = plot(&runs, opts).unwrap();
        assert_well_formed(&svg);
        assert!(!svg.contains("log scale"));
        let d = svg.split("<path d=\"").nth(1).unwrap();
        let d = &d[..d.find('"').unwrap()];
        let nums: Vec<f64> = d
            .split(['M', 'L', ' '])
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(nums.len() % 2, 0);
        for p in nums.chunks(2) {
            assert!((LEFT..=WIDTH - RIGHT).contains(&p[0]), "x {}", p[0]);
            assert!((TOP..=PANEL_H - BOTTOM).contains(&p[1]), "y {}", p[1]);
        }
        // The curve rises: the last point (max) is the highest on screen (smallest y).
        assert!(nums[nums.len() - 1] < nums[1]);
    }

    #[test]
    fn log_axis_ticks() {
        let ax = |lo: f64, hi: f64| Axes {
            x0: 0.0,
            x1: 1.0,
            y0: 0.0,
            y1: 100.0,
            max_nines: 4.0,
            lo,
            hi,
            log_y: true,
        };
        assert_eq!(ax(10.0, 1e4).y_ticks(), [10.0, 100.0, 1000.0, 10_000.0]);
        assert_eq!(ax(10.0, 100.0).y_ticks(), [10.0, 20.0, 50.0, 100.0]);
        // Decades are evenly spaced, bottom to top.
        let a = ax(10.0, 1e4);
        assert_eq!(a.y(10.0), 100.0);
        assert_eq!(a.y(1e4), 0.0);
        assert!((a.y(100.0) - 200.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn axis_helpers() {
        assert_eq!(nines_label(0), "0%");
        assert_eq!(nines_label(1), "90%");
        assert_eq!(nines_label(2), "99%");
        assert_eq!(nines_label(4), "99.99%");
        assert_eq!(nice_ceil(0.7), 1.0);
        assert_eq!(nice_ceil(1.0), 1.0);
        assert_eq!(nice_ceil(130.0), 200.0);
        assert_eq!(nice_ceil(4100.0), 5000.0);
        assert_eq!(nice_ceil(6000.0), 10000.0);
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(fmt_tick(0.1), "0.1");
        assert_eq!(fmt_tick(20.0), "20");
        assert_eq!(fmt_tick(5000.0), "5000");
        assert_eq!(fmt_tick(10_000.0), "10k");
        assert_eq!(fmt_tick(1e7), "10M");
        assert_eq!(fmt_latency(42.25), "42.2 µs");
        assert_eq!(fmt_latency(4375.0), "4375 µs");
        assert_eq!(fmt_latency(697_303.0), "697 ms");
    }
}
