//! `coring-bench http`: an HTTP/1.1 load generator for latency work, against any server.
//!
//! Connections are spread over `--threads` threads, each a core of a coring [`Pool`]
//! (pinned, one runtime each); each connection is one task running the load loop
//! ([`crate::load::drive_pipelined`]) on an [`HttpConn`]: keep-alive, up to `--pipeline`
//! requests in flight, closed loop (latency from the actual send) or open loop at `--rate`
//! requests/s in total (latency from the intended send time, coordinated omission
//! corrected, as wrk2 does). Responses are framed by `Content-Length`, chunked coding or the
//! close ([`parse`]); statuses, bytes, reconnections and errors are counted
//! ([`HttpCounts`]). The report is coring-bench's table, JSON document and SVG plot.
//!
//! ```text
//! coring-bench http --url http://127.0.0.1:8080/1k.bin --conns 16 --duration 5
//! coring-bench http --url http://127.0.0.1:8080/ --rate 20000,40000 --plot http.svg
//! ```

pub mod conn;
pub mod parse;
pub mod target;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use coring::{BackendKind, Pool};
use serde_json::json;

use self::conn::{ErrorKind, HttpConn, HttpCounts, MAX_FAILS};
use self::target::Target;
use crate::args::{self, ArgError, Flag, Flags};
use crate::cli::backend_name;
use crate::echo::server::at_edges;
use crate::load::{drive_pipelined, ConnSchedule, Pacing, Recorder, Timeline, WallClock};
use crate::progress::{wait_with_progress, Progress};
use crate::report::{Mode, RunResult, NOISY_WAIT};
use crate::stats;
use crate::sys::{self, ThreadUsage};

/// The help text of `coring-bench http`.
pub const USAGE: &str = "\
usage: coring-bench http --url http://HOST[:PORT][/PATH] [options]

An HTTP/1.1 load generator: drives any server (on loopback, another host, or inside a
network namespace: run it under `ip netns exec NS`), keep-alive, optionally pipelined,
closed loop or open loop, and reports requests/s, latency percentiles up to p99.99,
responses by status, errors and the transfer rate.

options:
  --url URL           the one URL every request asks for (http:// only)
  --conns N[,N..]     connections (default 16)
  --threads N         load generator threads, each a pinned core of a coring Pool with its
                      own runtime; connections are dealt round robin (default 1)
  --cpus LIST|none    CPUs to pin the threads to, one each (default: the last N CPUs this
                      process may use, so that a server pinned to the first ones keeps them;
                      `none` runs unpinned)
  --rate R[,R..]      open loop at R requests/s in total over the connections, each request
                      on a fixed schedule and its latency measured from when it was due
                      (coordinated-omission corrected, as wrk2 does); `closed` (default):
                      each reply lets the next request go, latency from the actual send
  --pipeline D[,D..]  requests in flight per connection (HTTP/1.1 pipelining; default 1)
  --duration S        measured seconds per run (default 5; `5`, `5s` or `500ms`)
  --warmup S          unmeasured seconds before it, while the connections open (default 1)
  --timeout S         connect timeout, and longest wait for response bytes with requests
                      in flight (default 5); a connection gives up after 3 failures in a row
  --method M          request method (default GET; HEAD responses have no body)
  -H, --header 'N: V' an extra request header (repeatable)
  --no-keepalive      `Connection: close` on every request: a new connection for each
  --backend B         the generator's coring backend: auto (default), io_uring or fallback
  --json              print a JSON document instead of the table
  --plot FILE.svg     write the latency percentile curves (one line per run) as SVG
  --linear-y          linear latency axis in the plot
  --no-progress       no progress line on stderr
  -h, --help          this help

Responses are framed by Content-Length, chunked transfer coding, or the server's close.
A server that closes a connection (after `Connection: close`, or at any time) gets a new
one, and the requests it left unanswered are sent again on it. Non-2xx responses and errors
(connect, read, write, timeout, parse, closed) are counted separately; latencies include
non-2xx responses.";

/// Which CPUs the generator's threads run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cpus {
    /// The last `threads` CPUs the process may use (unpinned if there are fewer).
    Last,
    /// These CPU ids, one thread each.
    List(Vec<usize>),
    /// Not pinned.
    Unpinned,
}

/// What `coring-bench http` was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// The URL.
    pub url: String,
    /// Connection counts, one run each.
    pub conns: Vec<usize>,
    /// Pacings, one run each: `None` closed loop, `Some(r)` open loop at `r` requests/s.
    pub rates: Vec<Option<f64>>,
    /// Pipelining depths, one run each.
    pub pipelines: Vec<usize>,
    /// Generator threads.
    pub threads: usize,
    /// Where the threads run.
    pub cpus: Cpus,
    /// Measured duration of each run.
    pub secs: Duration,
    /// Warm-up before each run.
    pub warmup: Duration,
    /// Connect and read timeout.
    pub timeout: Duration,
    /// Request method.
    pub method: String,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// Keep-alive (else `Connection: close` on every request).
    pub keep_alive: bool,
    /// The generator's backend.
    pub backend: BackendKind,
    /// JSON instead of the table.
    pub json: bool,
    /// Where to write the SVG plot.
    pub plot: Option<PathBuf>,
    /// Logarithmic latency axis in the plot.
    pub log_y: bool,
    /// Progress line on stderr.
    pub progress: bool,
}

impl HttpConfig {
    /// The defaults, for `url`.
    pub fn new(url: &str) -> HttpConfig {
        HttpConfig {
            url: url.to_string(),
            conns: vec![16],
            rates: vec![None],
            pipelines: vec![1],
            threads: 1,
            cpus: Cpus::Last,
            secs: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            method: "GET".to_string(),
            headers: Vec::new(),
            keep_alive: true,
            backend: BackendKind::Auto,
            json: false,
            plot: None,
            log_y: true,
            progress: true,
        }
    }

    /// Every run, in order: each connection count, pipelining depth and pacing.
    pub fn plan(&self) -> Vec<HttpRun> {
        let mut runs = Vec::new();
        for &conns in &self.conns {
            for &pipeline in &self.pipelines {
                for &rate in &self.rates {
                    runs.push(HttpRun {
                        conns,
                        pipeline,
                        rate,
                    });
                }
            }
        }
        runs
    }
}

/// `5`, `5s`, `1.5` or `500ms`, up to an hour; 0 only if `allow_zero`.
fn duration(flag: &Flag, value: &str, allow_zero: bool) -> Result<Duration, String> {
    let secs = match value.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().ok().map(|v| v / 1000.0),
        None => value.strip_suffix('s').unwrap_or(value).parse::<f64>().ok(),
    };
    secs.and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| (allow_zero || !d.is_zero()) && *d <= Duration::from_secs(3600))
        .ok_or_else(|| {
            format!(
                "{} takes a duration from {} to 3600 s (`5`, `5s`, `500ms`), not '{value}'",
                flag.name,
                if allow_zero { "0" } else { "more than 0" }
            )
        })
}

/// Parses the arguments after `http`.
///
/// # Errors
///
/// [`ArgError::Help`], or a message naming the bad argument.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<HttpConfig, ArgError> {
    let mut threads = None;
    let mut url = None;
    let mut cfg = args::parse(
        args,
        HttpConfig::new(""),
        |cfg, flag, flags: &mut Flags<_>| {
            match flag.name.as_str() {
                "--url" => url = Some(flags.value(flag)?),
                "--conns" | "-c" => cfg.conns = flags.counts(flag)?,
                "--threads" | "-t" => threads = Some(flags.count(flag)?),
                "--cpus" => {
                    let v = flags.value(flag)?;
                    cfg.cpus = if v == "none" {
                        Cpus::Unpinned
                    } else {
                        let list: Option<Vec<usize>> =
                            v.split(',').map(|s| s.trim().parse().ok()).collect();
                        Cpus::List(list.filter(|l| !l.is_empty()).ok_or_else(|| {
                            format!("--cpus takes CPU ids like 1 or 2,3, or none; not '{v}'")
                        })?)
                    }
                }
                "--rate" | "-R" => {
                    cfg.rates = flags.list(flag, |s| match s {
                        "closed" => Some(None),
                        s => s
                            .parse::<f64>()
                            .ok()
                            .filter(|r| r.is_finite() && *r > 0.0)
                            .map(Some),
                    })?
                }
                "--pipeline" => cfg.pipelines = flags.counts(flag)?,
                "--duration" | "--secs" | "-d" => {
                    cfg.secs = duration(flag, &flags.value(flag)?, false)?
                }
                "--warmup" => cfg.warmup = duration(flag, &flags.value(flag)?, true)?,
                "--timeout" => cfg.timeout = duration(flag, &flags.value(flag)?, false)?,
                "--method" => cfg.method = flags.value(flag)?,
                "--header" | "-H" => cfg.headers.push(flags.value(flag)?),
                "--no-keepalive" => cfg.keep_alive = false,
                "--backend" => {
                    let v = flags.value(flag)?;
                    cfg.backend =
                        BackendKind::parse(&v).map_err(|e| format!("{}: {e}", flag.name))?;
                }
                "--json" => cfg.json = true,
                "--plot" => cfg.plot = Some(PathBuf::from(flags.value(flag)?)),
                "--linear-y" => cfg.log_y = false,
                "--no-progress" => cfg.progress = false,
                "echo" | "fread" | "spawn" | "timers" => {
                    return Err(format!(
                        "http runs alone; run {} in another coring-bench invocation",
                        flag.name
                    ))
                }
                _ => return Ok(false),
            }
            Ok(true)
        },
    )?;
    cfg.url = url.ok_or_else(|| "http needs --url http://HOST[:PORT]/PATH".to_string())?;
    cfg.threads = match (&cfg.cpus, threads) {
        (Cpus::List(l), Some(t)) if l.len() != t => {
            return Err(ArgError::Bad(format!(
                "--threads {t} but --cpus lists {} CPUs; one thread per CPU",
                l.len()
            )))
        }
        (Cpus::List(l), _) => l.len(),
        (_, t) => t.unwrap_or(1),
    };
    if let Some(&c) = cfg.conns.iter().find(|&&c| c < cfg.threads) {
        return Err(ArgError::Bad(format!(
            "--conns {c} is fewer than the {} threads: each thread needs a connection",
            cfg.threads
        )));
    }
    if !cfg.keep_alive && cfg.pipelines.iter().any(|&d| d > 1) {
        return Err(ArgError::Bad(
            "--pipeline needs keep-alive: drop --no-keepalive".to_string(),
        ));
    }
    // Check the URL, method and headers now (resolving the host too).
    Target::new(&cfg.url, &cfg.method, &cfg.headers, cfg.keep_alive)?;
    Ok(cfg)
}

/// One run of the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpRun {
    /// Connections.
    pub conns: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Open-loop total rate, or `None` for closed loop.
    pub rate: Option<f64>,
}

impl HttpRun {
    /// The setup in a few words, for tables and legends: `closed 16c`, `open 20.0k/s 16c
    /// pipe 4`.
    pub fn label(&self, threads: usize) -> String {
        let mut s = match self.rate {
            None => format!("closed {}c", self.conns),
            Some(r) => format!("open {}/s {}c", stats::human(r), self.conns),
        };
        if self.pipeline > 1 {
            s.push_str(&format!(" pipe {}", self.pipeline));
        }
        if threads > 1 {
            s.push_str(&format!(" {threads}t"));
        }
        s
    }

    /// How connection `conn` paces its requests.
    pub fn pacing(&self, conn: usize) -> Pacing {
        match self.rate {
            None => Pacing::Closed,
            Some(r) => Pacing::Open(ConnSchedule::new(r, self.conns, conn)),
        }
    }
}

/// What one generator thread measured.
#[derive(Debug)]
struct ThreadReport {
    rec: Recorder,
    counts: [HttpCounts; 2],
    usage: ThreadUsage,
    errors: Vec<String>,
}

/// The CPUs for `threads` threads (`None`: unpinned), and a note when they cannot be pinned
/// as asked.
fn choose_cpus(cpus: &Cpus, threads: usize) -> (Option<Vec<usize>>, Option<String>) {
    match cpus {
        Cpus::List(l) => (Some(l.clone()), None),
        Cpus::Unpinned => (None, None),
        Cpus::Last => {
            let ids: Vec<usize> = sys::cpus().into_iter().map(|c| c.id).collect();
            if ids.len() >= threads {
                (Some(ids[ids.len() - threads..].to_vec()), None)
            } else {
                (
                    None,
                    Some(format!(
                        "{threads} threads but this process may use {} CPUs: unpinned",
                        ids.len()
                    )),
                )
            }
        }
    }
}

/// Runs every run of the plan, in order.
///
/// # Errors
///
/// A bad URL (the runs themselves report their failures in their results).
pub fn run_all(cfg: &HttpConfig) -> Result<Vec<RunResult>, String> {
    let target = Arc::new(Target::new(
        &cfg.url,
        &cfg.method,
        &cfg.headers,
        cfg.keep_alive,
    )?);
    let plan = cfg.plan();
    let mut results = Vec::with_capacity(plan.len());
    for (i, run) in plan.iter().enumerate() {
        let what = format!(
            "[{}/{}] http {} {}",
            i + 1,
            plan.len(),
            run.label(cfg.threads),
            cfg.url
        );
        let mut progress = Progress::new(cfg.progress, what, "req/s");
        let result = run_one(cfg, &target, run, &mut progress);
        progress.finish();
        results.push(result);
    }
    Ok(results)
}

/// One run: the pool, the connections on it, and the merged figures.
pub fn run_one(
    cfg: &HttpConfig,
    target: &Arc<Target>,
    run: &HttpRun,
    progress: &mut Progress,
) -> RunResult {
    let mut res = RunResult::new(
        Mode::Http,
        run.label(cfg.threads),
        backend_name(cfg.backend),
        "req",
    );
    res.cpu_scope = "load generator";
    res.open_loop = run.rate.is_some();
    res.target_rate = run.rate;
    let (cpus, pin_note) = choose_cpus(&cfg.cpus, cfg.threads);
    res.notes.extend(pin_note);
    res.params = json!({
        "url": cfg.url,
        "addr": target.addr.to_string(),
        "method": cfg.method,
        "conns": run.conns,
        "pipeline": run.pipeline,
        "rate": run.rate,
        "loop": if run.rate.is_some() { "open" } else { "closed" },
        "threads": cfg.threads,
        "cpus": cpus,
        "keep_alive": cfg.keep_alive,
        "secs": cfg.secs.as_secs_f64(),
        "warmup_secs": cfg.warmup.as_secs_f64(),
        "timeout_secs": cfg.timeout.as_secs_f64(),
    });
    let builder = Pool::builder().backend(cfg.backend);
    let builder = match &cpus {
        Some(list) => builder.cpu_list(list.clone()),
        None => builder.cores(cfg.threads).pin(false),
    };
    let pool = match builder.build() {
        Ok(p) => p,
        Err(e) => {
            res.error = Some(format!("load generator pool: {e}"));
            return res;
        }
    };
    let info = pool.core_info(0);
    res.backend = backend_name(info.backend).to_string();
    res.backend_description = info.backend_description.clone();

    let counter = Arc::new(AtomicU64::new(0));
    let tl = Timeline::starting_now(cfg.warmup, cfg.secs);
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(cfg.threads);
    for t in 0..cfg.threads {
        let conns: Vec<usize> = (t..run.conns).step_by(cfg.threads).collect();
        let (tx, target, counter, run) = (tx.clone(), target.clone(), counter.clone(), *run);
        let timeout = cfg.timeout;
        handles.push(pool.spawn_on(t, move || async move {
            let report = thread_load(target, conns, run, tl, timeout, counter).await;
            let _ = tx.send(report);
        }));
    }
    drop(tx);
    // Connections that keep failing give up after MAX_FAILS timeouts each.
    let deadline = tl.end + cfg.timeout * (MAX_FAILS + 1) + Duration::from_secs(10);
    let mut reports = Vec::with_capacity(cfg.threads);
    for _ in 0..cfg.threads {
        match wait_with_progress(
            &rx,
            progress,
            Some(tl.end),
            &counter,
            deadline,
            "the load generator threads",
        ) {
            Ok(r) => reports.push(r),
            Err(e) => {
                res.error = Some(e);
                break;
            }
        }
    }
    drop(handles);
    if let Err(e) = pool.shutdown() {
        res.notes.push(format!("load generator pool shutdown: {e}"));
    }
    fill(&mut res, cfg, run, &reports);
    res
}

/// One generator thread: a task per connection (each connects, then runs the load loop),
/// the thread's CPU time at the window's edges, and the merged measurements.
async fn thread_load(
    target: Arc<Target>,
    conns: Vec<usize>,
    run: HttpRun,
    tl: Timeline,
    timeout: Duration,
    counter: Arc<AtomicU64>,
) -> ThreadReport {
    let clock = WallClock::new(tl.start, coring::time::sleep_until);
    let window = tl.window();
    let tasks: Vec<_> = conns
        .iter()
        .map(|&c| {
            let mut rec = Recorder::new(counter.clone());
            let mut conn = HttpConn::new(target.clone(), clock, window, timeout);
            let pacing = run.pacing(c);
            coring::spawn(async move {
                let res = match conn.connect().await {
                    Ok(()) => {
                        drive_pipelined(&clock, &mut conn, pacing, run.pipeline, window, &mut rec)
                            .await
                    }
                    Err(e) => Err(e),
                };
                (rec, *conn.counts(), res)
            })
        })
        .collect();
    let (u0, u1) = at_edges(&clock, &tl, ThreadUsage::now).await;
    let mut report = ThreadReport {
        rec: Recorder::new(counter.clone()),
        counts: [HttpCounts::default(); 2],
        usage: u1.since(u0),
        errors: Vec::new(),
    };
    for (task, c) in tasks.into_iter().zip(&conns) {
        match task.await {
            Ok((rec, counts, res)) => {
                report.rec.merge(&rec);
                report.counts[0].add(&counts[0]);
                report.counts[1].add(&counts[1]);
                if let Err(e) = res {
                    report.errors.push(format!("connection {c}: {e}"));
                }
            }
            Err(e) => report.errors.push(format!("connection {c} task: {e:?}")),
        }
    }
    report
}

/// The named counts a run reports, from the window's [`HttpCounts`].
pub fn count_items(c: &HttpCounts) -> Vec<(&'static str, u64)> {
    let mut items = vec![
        ("responses", c.responses),
        ("2xx", c.by_class[1]),
        ("3xx", c.by_class[2]),
        ("4xx", c.by_class[3]),
        ("5xx", c.by_class[4]),
        ("other_status", c.by_class[5] + c.by_class[0]),
        ("non_2xx", c.non_2xx()),
        ("errors", c.error_total()),
    ];
    for k in ErrorKind::ALL {
        items.push((
            match k {
                ErrorKind::Connect => "errors_connect",
                ErrorKind::Read => "errors_read",
                ErrorKind::Write => "errors_write",
                ErrorKind::Timeout => "errors_timeout",
                ErrorKind::Parse => "errors_parse",
                ErrorKind::Closed => "errors_closed",
            },
            c.errors[k as usize],
        ));
    }
    items.extend([
        ("connects", c.connects),
        ("server_closes", c.server_closes),
        ("resent", c.resent),
        ("body_bytes", c.body_bytes),
        ("read_bytes", c.read_bytes),
    ]);
    items
}

/// Moves the threads' measurements into the result.
fn fill(res: &mut RunResult, cfg: &HttpConfig, run: &HttpRun, reports: &[ThreadReport]) {
    let mut rec = Recorder::new(Arc::new(AtomicU64::new(0)));
    let mut counts = [HttpCounts::default(); 2];
    let mut cpu = Some(Duration::ZERO);
    let mut wait = Some(Duration::ZERO);
    for r in reports {
        rec.merge(&r.rec);
        counts[0].add(&r.counts[0]);
        counts[1].add(&r.counts[1]);
        cpu = cpu.zip(r.usage.cpu).map(|(a, b)| a + b);
        wait = wait.zip(r.usage.run_wait).map(|(a, b)| a + b);
    }
    if reports.is_empty() {
        return;
    }
    let window = counts[1];
    res.ops = rec.requests();
    res.elapsed = cfg.secs;
    res.latency = Some(rec.histogram().clone());
    res.unsent = rec.unsent();
    res.cpu = cpu;
    res.transfer_bytes = Some(window.read_bytes);
    res.counts = count_items(&window);
    let threads = reports.len() as u32;
    res.run_wait = stats::wait_fraction(wait.map(|w| w / threads), cfg.secs);
    if let serde_json::Value::Object(m) = &mut res.params {
        m.insert("warmup_requests".into(), json!(rec.warmup()));
        m.insert("warmup_errors".into(), json!(counts[0].error_total()));
    }
    if let Some(f) = res.run_wait.filter(|&f| f > NOISY_WAIT) {
        res.notes.push(format!(
            "the load generator threads waited for a CPU {:.0}% of the window: other \
             processes competed, figures are noisy",
            f * 100.0
        ));
    }
    if let Some(f) = cpu
        .and_then(|c| stats::ratio(c.as_secs_f64(), cfg.secs.as_secs_f64() * f64::from(threads)))
        .filter(|&f| f > 0.9)
    {
        res.notes.push(format!(
            "load generator at {:.0}% of its CPU: it may be the bottleneck (add --threads)",
            f * 100.0
        ));
    }
    if window.non_2xx() > 0 {
        res.notes.push(format!(
            "{} of {} responses were not 2xx",
            window.non_2xx(),
            window.responses
        ));
    }
    if window.error_total() > 0 {
        res.notes.push(format!(
            "{} errors in the window ({})",
            window.error_total(),
            ErrorKind::ALL
                .iter()
                .filter(|k| window.errors[**k as usize] > 0)
                .map(|k| format!("{} {}", k.name(), window.errors[*k as usize]))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(rate) = run.rate {
        let achieved = res.rate();
        if rec.unsent() > 0 || stats::ratio(achieved, rate).is_some_and(|r| r < 0.98) {
            res.notes.push(format!(
                "target {} req/s not reached ({} req/s, {} requests never sent): the tail \
                 latencies are a lower bound",
                stats::human(rate),
                stats::human(achieved),
                rec.unsent()
            ));
        }
    }
    let errors: Vec<&String> = reports.iter().flat_map(|r| &r.errors).collect();
    for e in errors.iter().take(5) {
        res.notes.push((*e).clone());
    }
    if errors.len() > 5 {
        res.notes.push(format!(
            "... and {} more connection failures",
            errors.len() - 5
        ));
    }
    if !errors.is_empty() && res.error.is_none() {
        res.error = Some(format!("{} connection(s) gave up", errors.len()));
    }
}
