//! One run's figures, and the table and JSON document made of many runs.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::hist::{us, LatencyHist, Summary};
use crate::stats;

/// Above this fraction of the window spent waiting for a CPU, a note says the machine was
/// busy with something else.
pub const NOISY_WAIT: f64 = 0.05;

/// The benchmark a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// TCP echo over loopback.
    Echo,
    /// Random 4 KiB reads of a page-cache file.
    Fread,
    /// Spawning and awaiting no-op tasks.
    Spawn,
    /// Many concurrent 1 ms sleeps.
    Timers,
    /// Durable appends to a write-ahead log.
    Wal,
    /// An HTTP/1.1 server, driven by the load generator.
    Http,
}

impl Mode {
    /// The mode's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Fread => "fread",
            Mode::Spawn => "spawn",
            Mode::Timers => "timers",
            Mode::Wal => "wal",
            Mode::Http => "http",
        }
    }

    /// What the latency figures of this mode measure.
    pub fn latency_meaning(self, open_loop: bool) -> &'static str {
        match (self, open_loop) {
            (Mode::Echo, false) => "round trip, from the actual send (closed loop)",
            (Mode::Echo, true) => {
                "round trip, from the intended send time (open loop, CO-corrected)"
            }
            (Mode::Http, false) => {
                "request to complete response, from the actual send (closed loop)"
            }
            (Mode::Http, true) => {
                "request to complete response, from the intended send time (open loop, \
                 CO-corrected)"
            }
            (Mode::Fread, _) => "one read, from submission to the task seeing the result",
            (Mode::Timers, _) => "lateness: wake-up time past the sleep's deadline",
            (Mode::Spawn, _) => "none",
            (Mode::Wal, _) => {
                "append to durable: from the append until the record is synced (std loop: write \
                 + fdatasync)"
            }
        }
    }
}

/// Everything measured in one run of one mode on one backend.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Which benchmark.
    pub mode: Mode,
    /// The run's setup in a few words, e.g. `closed 16c 1024B`.
    pub label: String,
    /// The backend asked for (`io_uring` or `fallback`).
    pub requested_backend: String,
    /// The backend the runtime got (may differ if `CORING_BACKEND` overrode it).
    pub backend: String,
    /// `Runtime::backend_description()` of the measured runtime.
    pub backend_description: String,
    /// Parameters of the run, as a JSON object.
    pub params: Value,
    /// Operations measured (requests, reads, tasks, timers).
    pub ops: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// What one operation is, for the rate's unit: `req`, `read`, `task`, `timer`.
    pub op_name: &'static str,
    /// Latencies measured (see [`Mode::latency_meaning`]).
    pub latency: Option<LatencyHist>,
    /// Whether latencies are from intended send times (open-loop echo).
    pub open_loop: bool,
    /// CPU time used during the window by the measured party ([`RunResult::cpu_scope`]).
    pub cpu: Option<Duration>,
    /// Whose CPU time `cpu` is: `server thread` or `process`.
    pub cpu_scope: &'static str,
    /// Wall time of the whole batch (spawn, timers).
    pub total: Option<Duration>,
    /// Fraction of the window the measured thread sat waiting for a CPU.
    pub run_wait: Option<f64>,
    /// Runtime counters over the window: (kernel entries, parks, loop turns).
    pub counters: Option<(u64, u64, u64)>,
    /// The measured coring runtime's metrics at the end of the window (the server's, for
    /// echo), printed with `--metrics`.
    pub metrics: Option<coring::Metrics>,
    /// Open loop: the requested total rate.
    pub target_rate: Option<f64>,
    /// Open loop: requests due in the window that were never sent.
    pub unsent: u64,
    /// Named counts of the window (HTTP: responses by status, errors by kind, ...).
    pub counts: Vec<(&'static str, u64)>,
    /// Bytes received in the window (HTTP), for the transfer rate.
    pub transfer_bytes: Option<u64>,
    /// Remarks worth reading next to the figures (noisy machine, unmet rate, ...).
    pub notes: Vec<String>,
    /// Why the run failed, if it did; the figures are then partial or empty.
    pub error: Option<String>,
}

impl RunResult {
    /// An empty result for `mode` on `backend`, to be filled in by a runner.
    pub fn new(mode: Mode, label: String, backend: &str, op_name: &'static str) -> RunResult {
        RunResult {
            mode,
            label,
            requested_backend: backend.to_string(),
            backend: backend.to_string(),
            backend_description: String::new(),
            params: json!({}),
            ops: 0,
            elapsed: Duration::ZERO,
            op_name,
            latency: None,
            open_loop: false,
            cpu: None,
            cpu_scope: "process",
            total: None,
            run_wait: None,
            counters: None,
            metrics: None,
            target_rate: None,
            unsent: 0,
            counts: Vec::new(),
            transfer_bytes: None,
            notes: Vec::new(),
            error: None,
        }
    }

    /// Adds a note if the benchmark thread waited for a CPU more than [`NOISY_WAIT`] of the
    /// window ([`RunResult::run_wait`]).
    pub fn note_cpu_wait(&mut self) {
        if let Some(f) = self.run_wait.filter(|&f| f > NOISY_WAIT) {
            self.notes.push(format!(
                "the benchmark thread waited for a CPU {:.0}% of the window (other processes, \
                 or this run's own helper threads, had it)",
                f * 100.0
            ));
        }
    }

    /// Operations per second over the window.
    pub fn rate(&self) -> f64 {
        stats::rate(self.ops, self.elapsed)
    }

    /// The unit of [`RunResult::rate`], e.g. `req/s`.
    pub fn rate_unit(&self) -> &'static str {
        match self.mode {
            Mode::Echo | Mode::Http => "req/s",
            Mode::Fread => "IOPS",
            Mode::Spawn => "tasks/s",
            Mode::Timers => "timers/s",
            Mode::Wal => "appends/s",
        }
    }

    /// CPU microseconds per operation ([`RunResult::cpu_scope`] says whose CPU).
    pub fn cpu_us_per_op(&self) -> Option<f64> {
        stats::cpu_us_per_op(self.cpu, self.ops)
    }

    /// Received megabytes (10^6 bytes) per second over the window, if bytes were counted.
    pub fn transfer_mb_per_s(&self) -> Option<f64> {
        self.transfer_bytes
            .map(|b| stats::rate(b, self.elapsed) / 1e6)
    }

    /// The latency figures, if any were measured.
    pub fn summary(&self) -> Option<Summary> {
        self.latency.as_ref().and_then(LatencyHist::summary)
    }

    /// The run as a JSON object with every figure.
    pub fn to_json(&self) -> Value {
        let latency = self.summary().map(|s| {
            json!({
                "count": s.count,
                "min": us(s.min),
                "mean": s.mean / 1000.0,
                "p50": us(s.p50),
                "p90": us(s.p90),
                "p99": us(s.p99),
                "p99_9": us(s.p999),
                "p99_99": us(s.p9999),
                "max": us(s.max),
            })
        });
        let per_op = |n: u64| stats::per_op(n, self.ops);
        let counters = self.counters.map(|(enters, parks, turns)| {
            json!({
                "enters": enters,
                "parks": parks,
                "turns": turns,
                "enters_per_op": per_op(enters),
                "parks_per_op": per_op(parks),
                "turns_per_op": per_op(turns),
            })
        });
        let server_cpu = (self.cpu_scope == "server thread")
            .then(|| self.cpu_us_per_op())
            .flatten();
        json!({
            "mode": self.mode.name(),
            "label": self.label,
            "backend": self.backend,
            "requested_backend": self.requested_backend,
            "backend_description": self.backend_description,
            "params": self.params,
            "ops": self.ops,
            "op": self.op_name,
            "secs": self.elapsed.as_secs_f64(),
            "rate": self.rate(),
            "rate_unit": self.rate_unit(),
            "target_rate": self.target_rate,
            "unsent": self.unsent,
            "counts": self.counts.iter().map(|&(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "transfer_bytes": self.transfer_bytes,
            "transfer_mb_per_s": self.transfer_mb_per_s(),
            "latency_us": latency,
            "latency_meaning": self.mode.latency_meaning(self.open_loop),
            "cpu_us_per_op": self.cpu_us_per_op(),
            "cpu_scope": self.cpu_scope,
            "server_cpu_us_per_request": server_cpu,
            "total_ms": self.total.map(|d| d.as_secs_f64() * 1e3),
            "run_wait_fraction": self.run_wait,
            "runtime_counters": counters,
            "notes": self.notes,
            "error": self.error,
        })
    }
}

/// What the report says about the machine.
#[derive(Debug, Clone)]
pub struct Host {
    /// CPUs the process may use.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
}

/// The JSON document: the tool, the host, and one object per run.
/// With wal runs, also their summary (`wal_summary`: medians and paired ratios).
pub fn json_document(host: &Host, runs: &[RunResult]) -> Value {
    let mut doc = json!({
        "tool": "coring-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "host": { "cpus": host.cpus, "kernel": host.kernel },
        "runs": runs.iter().map(RunResult::to_json).collect::<Vec<_>>(),
    });
    if runs.iter().any(|r| r.mode == Mode::Wal) {
        doc["wal_summary"] = crate::wal::summary_json(runs);
    }
    doc
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), stats::human)
}

/// The readable table of all runs, with notes and errors below it (and the wal summary,
/// if there were wal runs).
pub fn table(host: &Host, runs: &[RunResult]) -> String {
    let header = [
        "mode", "setup", "backend", "rate", "unit", "p50", "p90", "p99", "p99.9", "p99.99", "max",
        "cpu/op", "total",
    ];
    let mut rows: Vec<[String; 13]> = Vec::new();
    for r in runs {
        let lat = r
            .summary()
            .map(|s| s.columns().map(|ns| stats::human(us(ns))));
        let lat = lat.unwrap_or_else(|| std::array::from_fn(|_| "-".to_string()));
        let rate = if r.error.is_some() && r.ops == 0 {
            "FAILED".to_string()
        } else {
            stats::human(r.rate())
        };
        let [p50, p90, p99, p999, p9999, max] = lat;
        rows.push([
            r.mode.name().to_string(),
            r.label.clone(),
            r.backend.clone(),
            rate,
            r.rate_unit().to_string(),
            p50,
            p90,
            p99,
            p999,
            p9999,
            max,
            opt(r.cpu_us_per_op()),
            opt(r.total.map(|d| d.as_secs_f64() * 1e3)),
        ]);
    }
    let mut width: [usize; 13] = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "coring-bench {} on {} CPU(s), kernel {}",
        env!("CARGO_PKG_VERSION"),
        host.cpus,
        host.kernel
    );
    let line = |out: &mut String, cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            // Text columns left-aligned, numbers right-aligned.
            if i < 3 || i == 4 {
                let _ = write!(s, "{cell:<w$}  ");
            } else {
                let _ = write!(s, "{cell:>w$}  ");
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(&mut out, &header.map(String::from));
    for row in &rows {
        line(&mut out, row);
    }
    out.push('\n');
    out.push_str(
        "latency columns in µs: echo = round trip (open loop: from the intended send time), \
         fread = one read, timers = lateness past the deadline, wal = append to durable\n",
    );
    out.push_str(
        "cpu/op in µs: echo = server thread CPU per request; http = load generator CPU per \
         request; fread, spawn, timers, wal = process CPU per op; total in ms\n",
    );
    let mut seen = Vec::new();
    for r in runs {
        if !r.backend_description.is_empty() && !seen.contains(&r.backend_description) {
            seen.push(r.backend_description.clone());
        }
    }
    for d in &seen {
        let _ = writeln!(out, "backend: {d}");
    }
    for r in runs {
        let who = format!("{} {} {}", r.mode.name(), r.label, r.backend);
        if !r.counts.is_empty() || r.transfer_bytes.is_some() {
            // The table names the counts that are not zero; the JSON document has them all.
            let mut items: Vec<String> = r
                .counts
                .iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if let Some(mb) = r.transfer_mb_per_s() {
                items.push(format!("{} MB/s", stats::human(mb)));
            }
            let _ = writeln!(out, "count {who}: {}", items.join(", "));
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "ERROR {who}: {e}");
        }
        for n in &r.notes {
            let _ = writeln!(out, "note  {who}: {n}");
        }
    }
    out.push_str(&crate::wal::summary_table(runs));
    out
}

/// `--metrics`: each run's coring runtime metrics (the echo server's; the fread
/// runtime's), at the end of its measured window, a few lines per run.
pub fn metrics_block(runs: &[RunResult]) -> String {
    let mut out = String::new();
    for r in runs {
        let Some(m) = &r.metrics else { continue };
        let _ = writeln!(
            out,
            "\nmetrics: {} {} {} (runtime totals at the end of the window, warm-up included)",
            r.mode.name(),
            r.label,
            r.backend
        );
        let _ = writeln!(out, "  {}", metrics_lines(m).join("\n  "));
    }
    out
}

/// The lines [`metrics_block`] prints for one snapshot.
pub fn metrics_lines(m: &coring::Metrics) -> Vec<String> {
    let hist = |h: &coring::Histogram| {
        format!(
            "n {} mean {:.2} p50<={} p99<={} max {}",
            h.count(),
            h.mean(),
            h.quantile(0.5),
            h.quantile(0.99),
            h.max()
        )
    };
    let mut lines = vec![
        format!(
            "turns {}  parks {}  enters {} (retried {})  tasks polled {}  parked {:.3} s  \
             running {:.3} s",
            m.turns,
            m.parks,
            m.enters,
            m.enter_retries,
            m.tasks_polled,
            m.time_parked.as_secs_f64(),
            m.time_running.as_secs_f64()
        ),
        format!(
            "ops submitted {}  completed {}  inline {}  offloaded {}  orphaned {}  linked {}  \
             cq overflow {}",
            m.ops_submitted,
            m.ops_completed,
            m.ops_inline,
            m.ops_offloaded,
            m.ops_orphaned,
            m.ops_linked,
            m.cq_overflow
        ),
        format!("batch per enter: {}", hist(&m.enter_batch)),
        format!("completions per reap: {}", hist(&m.reap_batch)),
    ];
    for o in &m.op_latency {
        let us = |ns: u64| ns as f64 / 1e3;
        let h = &o.nanos;
        lines.push(format!(
            "latency {} (sampled, µs): n {} p50<={:.1} p99<={:.1} max {:.1}",
            o.opcode,
            h.count(),
            us(h.quantile(0.5)),
            us(h.quantile(0.99)),
            us(h.max())
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_block_shows_a_real_snapshot() {
        let rt = coring::Builder::new().op_latency_sample(1).build().unwrap();
        rt.block_on(async {
            for _ in 0..3 {
                coring::nop().await.unwrap();
            }
        });
        let mut echo = RunResult::new(Mode::Echo, "closed 1c 64B".into(), "io_uring", "req");
        assert_eq!(metrics_block(std::slice::from_ref(&echo)), "");
        echo.metrics = Some(rt.metrics());
        let block = metrics_block(&[echo]);
        assert!(
            block.contains("metrics: echo closed 1c 64B io_uring"),
            "{block}"
        );
        assert!(block.contains("ops submitted 3  completed 3"), "{block}");
        assert!(block.contains("batch per enter: n "), "{block}");
        assert!(block.contains("latency nop (sampled, µs): n 3 "), "{block}");
    }

    fn sample_runs() -> Vec<RunResult> {
        let mut echo = RunResult::new(Mode::Echo, "closed 16c 1024B".into(), "io_uring", "req");
        echo.ops = 300_000;
        echo.elapsed = Duration::from_secs(3);
        echo.cpu = Some(Duration::from_millis(1500));
        echo.cpu_scope = "server thread";
        echo.counters = Some((150_000, 1000, 200_000));
        let mut h = LatencyHist::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        echo.latency = Some(h);
        echo.backend_description = "io_uring (256 sq)".into();
        let mut spawn = RunResult::new(Mode::Spawn, "1000000 tasks".into(), "fallback", "task");
        spawn.ops = 1_000_000;
        spawn.elapsed = Duration::from_millis(250);
        spawn.total = Some(Duration::from_millis(250));
        spawn.notes.push("a note".into());
        let mut failed = RunResult::new(Mode::Fread, "qd 1".into(), "io_uring", "read");
        failed.error = Some("io_uring unavailable".into());
        vec![echo, spawn, failed]
    }

    fn host() -> Host {
        Host {
            cpus: 2,
            kernel: "6.1".into(),
        }
    }

    #[test]
    fn json_has_one_object_per_run_with_the_figures() {
        let host = host();
        let doc = json_document(&host, &sample_runs());
        // Round-trips through text as valid JSON.
        let doc: Value = serde_json::from_str(&doc.to_string()).unwrap();
        assert_eq!(doc["tool"], "coring-bench");
        assert_eq!(doc["host"]["cpus"], 2);
        let runs = doc["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 3);
        let echo = &runs[0];
        assert_eq!(echo["mode"], "echo");
        assert_eq!(echo["backend"], "io_uring");
        assert_eq!(echo["rate"], 100_000.0);
        assert_eq!(echo["rate_unit"], "req/s");
        assert_eq!(echo["server_cpu_us_per_request"], 5.0);
        assert_eq!(echo["cpu_us_per_op"], 5.0);
        // HDR reports the highest value equivalent to the true one (3 significant digits).
        let near = |key: &str, want: f64| {
            let got = echo["latency_us"][key].as_f64().unwrap();
            assert!((got - want).abs() <= want * 0.001, "{key}: {got} vs {want}");
        };
        near("p50", 500.0);
        near("p99", 990.0);
        near("max", 1000.0);
        assert_eq!(echo["latency_us"]["count"], 1000);
        for key in ["p90", "p99_9", "p99_99", "mean", "min"] {
            assert!(echo["latency_us"][key].is_number(), "{key}");
        }
        assert_eq!(echo["runtime_counters"]["enters_per_op"], 0.5);
        assert!(echo["error"].is_null());
        let spawn = &runs[1];
        assert_eq!(spawn["rate"], 4_000_000.0);
        assert_eq!(spawn["total_ms"], 250.0);
        assert!(spawn["latency_us"].is_null());
        assert!(spawn["server_cpu_us_per_request"].is_null());
        assert_eq!(spawn["notes"][0], "a note");
        assert_eq!(runs[2]["error"], "io_uring unavailable");
        assert_eq!(runs[2]["rate"], 0.0);
    }

    #[test]
    fn table_has_a_row_per_run_and_the_notes() {
        let host = host();
        let t = table(&host, &sample_runs());
        let rows: Vec<&str> = t
            .lines()
            .filter(|l| {
                ["echo ", "spawn ", "fread "]
                    .iter()
                    .any(|m| l.starts_with(m))
            })
            .collect();
        assert_eq!(rows.len(), 3, "{t}");
        assert!(
            rows[0].contains("100.0k") && rows[0].contains("5.00"),
            "{}",
            rows[0]
        );
        assert!(
            rows[1].contains("4.00M") && rows[1].contains("250"),
            "{}",
            rows[1]
        );
        assert!(rows[2].contains("FAILED"), "{}", rows[2]);
        assert!(t.contains("ERROR fread qd 1 io_uring: io_uring unavailable"));
        assert!(t.contains("note  spawn 1000000 tasks fallback: a note"));
        assert!(t.contains("backend: io_uring (256 sq)"));
    }

    #[test]
    fn http_runs_report_their_counts_and_transfer_rate() {
        let mut r = RunResult::new(Mode::Http, "closed 16c".into(), "io_uring", "req");
        r.ops = 1000;
        r.elapsed = Duration::from_secs(2);
        r.counts = vec![
            ("responses", 1000),
            ("2xx", 990),
            ("4xx", 10),
            ("errors", 0),
        ];
        r.transfer_bytes = Some(4_000_000);
        assert_eq!(r.rate_unit(), "req/s");
        assert_eq!(r.transfer_mb_per_s(), Some(2.0));
        let doc = json_document(&host(), std::slice::from_ref(&r));
        let run = &doc["runs"][0];
        assert_eq!(run["mode"], "http");
        assert_eq!(run["counts"]["4xx"], 10);
        assert_eq!(run["counts"]["errors"], 0);
        assert_eq!(run["transfer_bytes"], 4_000_000);
        assert_eq!(run["transfer_mb_per_s"], 2.0);
        let t = table(&host(), &[r]);
        // Zero counts are left out of the table (the JSON has them all).
        assert!(
            t.contains(
                "count http closed 16c io_uring: responses 1000, 2xx 990, 4xx 10, 2.00 MB/s"
            ),
            "{t}"
        );
    }
}
