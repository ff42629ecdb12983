//! The command line, and the list of runs it asks for.

use std::path::PathBuf;
use std::time::Duration;

use coring::BackendKind;

use crate::args::{ArgError, Flags};
use crate::report::Mode;
use crate::wal::{Contender, Prealloc};

/// The help text.
pub const USAGE: &str = "\
usage: coring-bench [MODE...] [options]

Latency and throughput benchmarks of the coring runtime, each run on the io_uring and the
fallback (epoll) backend one after the other. Without a MODE, runs the default suite
(echo 16 conns x 1 KiB for 3 s, fread at QD 1 and 32 for 2 s, spawn 1M, timers 100k) in
well under a minute.

modes:
  echo      coring TCP echo server on one pinned CPU, load generator on another
  fread     random 4 KiB reads of a page-cache file at a queue depth
  spawn     spawn N no-op tasks and await them all (tasks/s)
  timers    N concurrent 1 ms sleeps (total time until all are done)
  wal       durable appends to a write-ahead log: coring's group-commit log (the wal
            example's) with N appenders against a std::fs write + fdatasync loop (and a
            bare io_uring loop), in interleaved rounds; appends/s, append-to-durable
            latency, ratios paired with the same round's std loop
  http      an HTTP/1.1 load generator against any server, run alone:
            coring-bench http --url http://127.0.0.1:8080/ [...]; see coring-bench http --help

options:
  --backend B         io_uring, fallback or both (default both; CORING_BACKEND, if set,
                      picks the default instead)
  --client-backend B  backend of the echo load generator: auto, io_uring or fallback
                      (default auto, so every server is driven by the same client)
  --conns N[,N..]     echo: connections (default 16)
  --rate R[,R..]      echo: open loop at R requests/s in total over the connections, on a
                      fixed schedule, latency from the intended send time (wrk2-style
                      coordinated-omission correction); `closed` for ping-pong (default)
  --size B[,B..]      echo: message size in bytes (default 1024); wal: record payload
                      size (default 256,4096)
  --server-send S[,S..]
                      echo: how coring's server sends its replies: `send` (write_all,
                      the default) or `zc` (send_zc, zero-copy; a plain send where the
                      backend has none); a list runs each, back to back
  --secs S            measured seconds per run (default: echo 5, or 3 in the default
                      suite; fread and wal 2)
  --warmup S          unmeasured seconds before each echo/fread/wal run (default 0.5 /
                      0.2 / 0.2)
  --appenders N[,N..] wal: concurrent appenders of the coring log (default 1,16,256)
  --prealloc P[,P..]  wal: how the coring log reserves space ahead of its end: none,
                      allocate (fallocate; default) or zeroed (written with zeros and
                      fsynced once), each a contender of its own
  --rounds N          wal: interleaved rounds, every contender once per round in a
                      rotating order (default 3)
  --path DIR          wal: directory of the log files (default the temporary directory)
  --no-ring-loop      wal: leave out the bare io_uring loop (one write linked to one
                      IORING_OP_FSYNC per record, as fio --ioengine=io_uring
                      --fdatasync=1 at depth 1), run by default on Linux
  --qd N[,N..]        fread: queue depths (default 1,32)
  --file-mb N         fread: test file size in MiB (default 64)
  --direct            fread: direct IO (O_DIRECT, an AlignedBuf per reader): every read
                      goes to the device instead of the page cache
  --tasks N           spawn: tasks (default 1000000)
  --timers N          timers: concurrent sleeps (default 100000)
  --json              print a JSON document (one object per run) instead of the table
  --plot FILE.svg     write the latency percentile curves (one line per run) as SVG
  --linear-y          linear latency axis in the plot (default logarithmic, so that the
                      median and the tail both show)
  --no-progress       no progress line on stderr
  --metrics           after the table, each echo and fread run's coring runtime
                      metrics (the server's, for echo) at the end of its measured
                      window: counters since the runtime started, batch sizes per kernel
                      entry and per reap, time parked and running, sampled op latency
  -h, --help          this help";

/// What to run and how to report it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Modes, in the order they run.
    pub modes: Vec<Mode>,
    /// Server backends; each run repeats on each, back to back.
    pub backends: Vec<BackendKind>,
    /// Backend of the echo load generator.
    pub client_backend: BackendKind,
    /// Echo connection counts.
    pub conns: Vec<usize>,
    /// Echo pacing: `None` closed loop, `Some(r)` open loop at `r` requests/s.
    pub rates: Vec<Option<f64>>,
    /// Echo message sizes.
    pub sizes: Vec<usize>,
    /// Echo server sends: `false` write_all, `true` send_zc.
    pub server_zc: Vec<bool>,
    /// Echo measured duration.
    pub echo_secs: Duration,
    /// Echo warm-up.
    pub echo_warmup: Duration,
    /// Fread measured duration.
    pub fread_secs: Duration,
    /// Fread warm-up.
    pub fread_warmup: Duration,
    /// Fread queue depths.
    pub qds: Vec<usize>,
    /// Fread test file size in MiB.
    pub file_mb: u64,
    /// Fread with direct IO.
    pub direct: bool,
    /// Spawn: tasks per run.
    pub tasks: u64,
    /// Timers: sleeps per run.
    pub timers: u64,
    /// Wal: appender counts of the coring log.
    pub appenders: Vec<usize>,
    /// Wal: record payload sizes.
    pub wal_sizes: Vec<usize>,
    /// Wal: the coring log's ways of reserving space, one contender each.
    pub preallocs: Vec<Prealloc>,
    /// Wal: interleaved rounds.
    pub rounds: usize,
    /// Wal: measured duration.
    pub wal_secs: Duration,
    /// Wal: warm-up.
    pub wal_warmup: Duration,
    /// Wal: directory of the log files.
    pub wal_dir: PathBuf,
    /// Wal: also run the bare io_uring loop (Linux).
    pub ring_loop: bool,
    /// JSON instead of the table.
    pub json: bool,
    /// Where to write the SVG plot.
    pub plot: Option<PathBuf>,
    /// Logarithmic latency axis in the plot (the default).
    pub log_y: bool,
    /// Progress line on stderr.
    pub progress: bool,
    /// Print each run's runtime metrics after the table.
    pub metrics: bool,
}

impl Default for Config {
    /// The default suite.
    fn default() -> Self {
        Config {
            modes: vec![Mode::Echo, Mode::Fread, Mode::Spawn, Mode::Timers],
            backends: vec![BackendKind::IoUring, BackendKind::Fallback],
            client_backend: BackendKind::Auto,
            conns: vec![16],
            rates: vec![None],
            sizes: vec![1024],
            server_zc: vec![false],
            echo_secs: Duration::from_secs(3),
            echo_warmup: Duration::from_millis(500),
            fread_secs: Duration::from_secs(2),
            fread_warmup: Duration::from_millis(200),
            qds: vec![1, 32],
            file_mb: 64,
            direct: false,
            tasks: 1_000_000,
            timers: 100_000,
            appenders: vec![1, 16, 256],
            wal_sizes: vec![256, 4096],
            preallocs: vec![Prealloc::default()],
            rounds: 3,
            wal_secs: Duration::from_secs(2),
            wal_warmup: Duration::from_millis(200),
            wal_dir: std::env::temp_dir(),
            ring_loop: cfg!(target_os = "linux"),
            json: false,
            plot: None,
            log_y: true,
            progress: true,
            metrics: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the benchmarks.
    Run(Box<Config>),
    /// Print the help.
    Help,
    /// Run the HTTP load generator.
    Http(Box<crate::http::HttpConfig>),
    /// Print the HTTP load generator's help.
    HttpHelp,
}

/// The name of a server backend, as reports show it.
pub fn backend_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::IoUring => "io_uring",
        BackendKind::Fallback => "fallback",
        _ => "auto",
    }
}

fn parse_backends(v: &str) -> Result<Vec<BackendKind>, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "both" | "all" => Ok(vec![BackendKind::IoUring, BackendKind::Fallback]),
        other => match BackendKind::parse(other) {
            Ok(BackendKind::Auto) | Err(_) => Err(format!(
                "--backend takes io_uring, fallback or both, not '{v}'"
            )),
            Ok(k) => Ok(vec![k]),
        },
    }
}

/// Parses the arguments (without the program name). `env_backend` is `CORING_BACKEND`,
/// which picks the default backend and must agree with an explicit `--backend`. A command
/// line that starts with `http` is the HTTP load generator's ([`crate::http::parse_args`]).
///
/// # Errors
///
/// A message naming the bad argument.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env_backend: Option<&str>,
) -> Result<Command, String> {
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "http") {
        args.next();
        return match crate::http::parse_args(args) {
            Ok(c) => Ok(Command::Http(Box::new(c))),
            Err(ArgError::Help) => Ok(Command::HttpHelp),
            Err(ArgError::Bad(msg)) => Err(format!("http: {msg}")),
        };
    }
    let mut cfg = Config::default();
    let mut modes = Vec::new();
    let mut backends = None;
    let mut secs_given = None;
    let mut warmup_given = None;
    let mut flags = Flags::new(args);
    loop {
        let flag = match flags.next_flag() {
            Ok(Some(flag)) => flag,
            Ok(None) => break,
            Err(ArgError::Help) => return Ok(Command::Help),
            Err(ArgError::Bad(msg)) => return Err(msg),
        };
        match flag.name.as_str() {
            "echo" => modes.push(Mode::Echo),
            "fread" => modes.push(Mode::Fread),
            "spawn" => modes.push(Mode::Spawn),
            "timers" => modes.push(Mode::Timers),
            "wal" => modes.push(Mode::Wal),
            "http" => return Err("http runs alone: coring-bench http --url URL [...]".to_string()),
            "--json" => cfg.json = true,
            "--direct" => cfg.direct = true,
            "--linear-y" => cfg.log_y = false,
            "--no-progress" => cfg.progress = false,
            "--metrics" => cfg.metrics = true,
            "--backend" => backends = Some(parse_backends(&flags.value(&flag)?)?),
            "--client-backend" => {
                let v = flags.value(&flag)?;
                cfg.client_backend =
                    BackendKind::parse(&v).map_err(|e| format!("{}: {e}", flag.name))?;
            }
            "--conns" => cfg.conns = flags.counts(&flag)?,
            "--size" => {
                cfg.sizes = flags.counts(&flag)?;
                cfg.wal_sizes = cfg.sizes.clone();
            }
            "--appenders" => cfg.appenders = flags.counts(&flag)?,
            "--prealloc" => cfg.preallocs = flags.list(&flag, Prealloc::parse)?,
            "--rounds" => cfg.rounds = flags.count(&flag)?,
            "--path" => cfg.wal_dir = PathBuf::from(flags.value(&flag)?),
            "--no-ring-loop" => cfg.ring_loop = false,
            "--server-send" => {
                cfg.server_zc = flags.list(&flag, |s| match s {
                    "send" => Some(false),
                    "zc" => Some(true),
                    _ => None,
                })?
            }
            "--qd" => cfg.qds = flags.counts(&flag)?,
            "--rate" => {
                cfg.rates = flags.list(&flag, |s| match s {
                    "closed" => Some(None),
                    s => s
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r > 0.0)
                        .map(Some),
                })?
            }
            "--secs" => secs_given = Some(flags.secs(&flag, false)?),
            "--warmup" => warmup_given = Some(flags.secs(&flag, true)?),
            "--file-mb" => cfg.file_mb = flags.count(&flag)? as u64,
            "--tasks" => cfg.tasks = flags.count(&flag)? as u64,
            "--timers" => cfg.timers = flags.count(&flag)? as u64,
            "--plot" => cfg.plot = Some(PathBuf::from(flags.value(&flag)?)),
            _ => return Err(format!("unknown argument '{}'", flag.name)),
        }
    }
    let env = match env_backend.map(str::trim) {
        None | Some("") => None,
        Some(v) => match BackendKind::parse(v) {
            Ok(BackendKind::Auto) => None,
            Ok(k) => Some(k),
            Err(e) => return Err(format!("CORING_BACKEND: {e}")),
        },
    };
    cfg.backends = match (backends, env) {
        (Some(b), Some(e)) if b != [e] => {
            return Err(format!(
                "CORING_BACKEND={} would override --backend for every runtime; unset it or \
                 drop --backend",
                backend_name(e)
            ))
        }
        (Some(b), _) => b,
        (None, Some(e)) => vec![e],
        (None, None) => cfg.backends,
    };
    if !modes.is_empty() {
        modes.dedup();
        cfg.modes = modes;
        // Outside the default suite, echo measures 5 s.
        cfg.echo_secs = Duration::from_secs(5);
    }
    if let Some(d) = secs_given {
        cfg.echo_secs = d;
        cfg.fread_secs = d;
        cfg.wal_secs = d;
    }
    if let Some(w) = warmup_given {
        cfg.echo_warmup = w;
        cfg.fread_warmup = w;
        cfg.wal_warmup = w;
    }
    Ok(Command::Run(Box::new(cfg)))
}

/// One run of the plan (before choosing the backend).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bench {
    /// Echo with these connections, message size and pacing.
    Echo {
        /// Connections.
        conns: usize,
        /// Message size in bytes.
        size: usize,
        /// Open-loop rate, or `None` for closed loop.
        rate: Option<f64>,
        /// Measured duration.
        secs: Duration,
        /// Warm-up.
        warmup: Duration,
        /// The server replies with `send_zc` instead of `write_all`.
        zc: bool,
    },
    /// Fread at this queue depth.
    Fread {
        /// Reads in flight.
        qd: usize,
        /// Measured duration.
        secs: Duration,
        /// Warm-up.
        warmup: Duration,
        /// Direct IO.
        direct: bool,
    },
    /// Spawn this many tasks.
    Spawn {
        /// Tasks.
        tasks: u64,
    },
    /// This many concurrent 1 ms sleeps.
    Timers {
        /// Sleeps.
        timers: u64,
    },
    /// One wal run (the backend is ignored by the std loop).
    Wal(crate::wal::WalParams),
}

impl Bench {
    /// The mode this run belongs to.
    pub fn mode(&self) -> Mode {
        match self {
            Bench::Echo { .. } => Mode::Echo,
            Bench::Fread { .. } => Mode::Fread,
            Bench::Spawn { .. } => Mode::Spawn,
            Bench::Timers { .. } => Mode::Timers,
            Bench::Wal(_) => Mode::Wal,
        }
    }

    /// The setup in a few words, for tables and legends.
    pub fn label(&self) -> String {
        match *self {
            Bench::Echo {
                conns,
                size,
                rate,
                zc,
                ..
            } => {
                let zc = if zc { " zc" } else { "" };
                match rate {
                    None => format!("closed {conns}c {size}B{zc}"),
                    Some(r) => {
                        format!("open {}/s {conns}c {size}B{zc}", crate::stats::human(r))
                    }
                }
            }
            Bench::Fread { qd, direct, .. } => {
                format!("qd {qd}{}", if direct { " direct" } else { "" })
            }
            Bench::Spawn { tasks } => format!("{tasks} tasks"),
            Bench::Timers { timers } => format!("{timers} x 1ms"),
            Bench::Wal(p) => p.label(),
        }
    }

    /// A rough upper estimate of the run's wall time (setup and teardown included).
    pub fn estimate(&self) -> Duration {
        match *self {
            Bench::Echo { secs, warmup, .. } => secs + warmup + Duration::from_millis(300),
            Bench::Fread { secs, warmup, .. } => secs + warmup + Duration::from_millis(100),
            // A warm-up batch and the measured one, at up to a microsecond per task on a
            // slow machine.
            Bench::Spawn { tasks } => Duration::from_nanos(tasks.saturating_mul(2000)),
            Bench::Timers { timers } => {
                Duration::from_millis(50) + Duration::from_nanos(timers.saturating_mul(4000))
            }
            Bench::Wal(p) => p.secs + p.warmup + Duration::from_millis(300),
        }
    }

    /// The backend a run on `kind` reports: the std loop runs on none.
    pub fn backend_label(&self, kind: BackendKind) -> &'static str {
        match self {
            Bench::Wal(p) if p.contender == Contender::StdLoop => crate::wal::STD_BACKEND,
            Bench::Wal(p) if p.contender == Contender::RingLoop => crate::wal::RING_BACKEND,
            _ => backend_name(kind),
        }
    }
}

/// Every run the configuration asks for, each paired with its backend, in running order:
/// for each mode and setup, one run per backend back to back; for wal, per record size,
/// `rounds` rounds of every contender (the std loop once, then each appender count,
/// preallocation and backend), the order rotating from round to round.
pub fn plan(cfg: &Config) -> Vec<(Bench, BackendKind)> {
    let mut out = Vec::new();
    for mode in &cfg.modes {
        if *mode == Mode::Wal {
            out.extend(wal_plan(cfg));
            continue;
        }
        let benches = one_mode(cfg, *mode);
        out.extend(
            benches
                .into_iter()
                .flat_map(|b| cfg.backends.iter().map(move |&k| (b, k))),
        );
    }
    out
}

/// The wal runs, interleaved (see [`plan`]).
fn wal_plan(cfg: &Config) -> Vec<(Bench, BackendKind)> {
    let mut out = Vec::new();
    for &size in &cfg.wal_sizes {
        let mut contenders = vec![(Contender::StdLoop, BackendKind::Auto)];
        if cfg.ring_loop {
            contenders.push((Contender::RingLoop, BackendKind::Auto));
        }
        for &appenders in &cfg.appenders {
            for &prealloc in &cfg.preallocs {
                for &k in &cfg.backends {
                    let c = Contender::Coring {
                        appenders,
                        prealloc,
                    };
                    contenders.push((c, k));
                }
            }
        }
        for round in 0..cfg.rounds {
            for i in 0..contenders.len() {
                let (contender, k) = contenders[(i + round) % contenders.len()];
                let p = crate::wal::WalParams {
                    contender,
                    size,
                    secs: cfg.wal_secs,
                    warmup: cfg.wal_warmup,
                    round,
                };
                out.push((Bench::Wal(p), k));
            }
        }
    }
    out
}

/// The runs of one mode other than wal, before choosing the backend.
fn one_mode(cfg: &Config, mode: Mode) -> Vec<Bench> {
    let mut benches = Vec::new();
    match mode {
        Mode::Echo => {
            for &conns in &cfg.conns {
                for &size in &cfg.sizes {
                    for &rate in &cfg.rates {
                        for &zc in &cfg.server_zc {
                            benches.push(Bench::Echo {
                                conns,
                                size,
                                rate,
                                secs: cfg.echo_secs,
                                warmup: cfg.echo_warmup,
                                zc,
                            });
                        }
                    }
                }
            }
        }
        Mode::Fread => benches.extend(cfg.qds.iter().map(|&qd| Bench::Fread {
            qd,
            secs: cfg.fread_secs,
            warmup: cfg.fread_warmup,
            direct: cfg.direct,
        })),
        Mode::Spawn => benches.push(Bench::Spawn { tasks: cfg.tasks }),
        Mode::Timers => benches.push(Bench::Timers { timers: cfg.timers }),
        // Run on their own: `coring-bench wal` and `coring-bench http` have their own plans.
        Mode::Wal | Mode::Http => {}
    }
    benches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn cfg(s: &str) -> Config {
        match parse(args(s), None).unwrap() {
            Command::Run(c) => *c,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn no_arguments_is_the_default_suite_under_forty_seconds() {
        let c = cfg("");
        assert_eq!(c, Config::default());
        let p = plan(&c);
        let names: Vec<String> = p
            .iter()
            .map(|(b, k)| format!("{} {} {}", b.mode().name(), b.label(), backend_name(*k)))
            .collect();
        assert_eq!(
            names,
            [
                "echo closed 16c 1024B io_uring",
                "echo closed 16c 1024B fallback",
                "fread qd 1 io_uring",
                "fread qd 1 fallback",
                "fread qd 32 io_uring",
                "fread qd 32 fallback",
                "spawn 1000000 tasks io_uring",
                "spawn 1000000 tasks fallback",
                "timers 100000 x 1ms io_uring",
                "timers 100000 x 1ms fallback",
            ]
        );
        assert_eq!(p[0].0.estimate(), Duration::from_millis(3800));
        let total: Duration = p.iter().map(|(b, _)| b.estimate()).sum();
        assert!(total < Duration::from_secs(40), "{total:?}");
    }

    #[test]
    fn metrics_flag() {
        assert!(!cfg("echo").metrics);
        assert!(cfg("echo --metrics").metrics);
    }

    #[test]
    fn explicit_modes_and_lists() {
        let c = cfg("echo --conns 4,64 --rate closed,20000 --size=64 --backend fallback --json");
        assert_eq!(c.modes, [Mode::Echo]);
        assert_eq!(c.echo_secs, Duration::from_secs(5));
        assert_eq!(c.backends, [BackendKind::Fallback]);
        assert!(c.json);
        let p = plan(&c);
        assert_eq!(p.len(), 4);
        assert_eq!(p[1].0.label(), "open 20.0k/s 4c 64B");
        assert!(matches!(
            p[3].0,
            Bench::Echo {
                conns: 64,
                size: 64,
                rate: Some(r),
                ..
            } if r == 20000.0
        ));
        let c = cfg("fread spawn --secs 1.5 --qd 8 --tasks 1000 --plot x.svg --linear-y");
        assert_eq!(c.fread_secs, Duration::from_millis(1500));
        assert!(!c.log_y);
        assert_eq!(c.plot.as_deref(), Some(std::path::Path::new("x.svg")));
        assert_eq!(plan(&c).len(), 4);
        assert_eq!(plan(&c)[2].0, Bench::Spawn { tasks: 1000 });
    }

    #[test]
    fn wal_rounds_interleave_every_contender() {
        let c = cfg(
            "wal --appenders 1,16 --size 256 --rounds 2 --secs 1 --backend io_uring \
                     --prealloc none,allocate --path /x",
        );
        assert_eq!(c.modes, [Mode::Wal]);
        assert_eq!(c.wal_dir, std::path::Path::new("/x"));
        assert_eq!(c.wal_secs, Duration::from_secs(1));
        let names: Vec<String> = plan(&c)
            .iter()
            .map(|(b, k)| format!("{} {}", b.label(), b.backend_label(*k)))
            .collect();
        let mut round = vec![
            "256B std loop std".to_string(),
            "256B 1 appenders none io_uring".to_string(),
            "256B 1 appenders allocate io_uring".to_string(),
            "256B 16 appenders none io_uring".to_string(),
            "256B 16 appenders allocate io_uring".to_string(),
        ];
        if c.ring_loop {
            round.insert(1, "256B ring loop ring".to_string());
        }
        let mut want = round.clone();
        // The second round starts one contender later.
        round.rotate_left(1);
        want.extend(round);
        assert_eq!(names, want);
        assert!(plan(&c)
            .iter()
            .all(|(b, _)| matches!(b, Bench::Wal(p) if p.size == 256)));
        let d = cfg("wal --no-ring-loop");
        assert!(!d.ring_loop);
        assert_eq!(
            (d.appenders.clone(), d.wal_sizes.clone()),
            (vec![1, 16, 256], vec![256, 4096])
        );
        assert_eq!(plan(&d).len(), 2 * 3 * (1 + 3 * 2));
        assert!(parse(args("wal --prealloc bogus"), None).is_err());
    }

    #[test]
    fn bad_arguments_are_named() {
        for (a, want) in [
            ("--conns 0", "--conns"),
            ("--rate -5", "--rate"),
            ("--secs 0", "--secs"),
            ("--backend auto", "--backend"),
            ("--bogus", "--bogus"),
            ("--qd", "needs a value"),
        ] {
            let e = parse(args(a), None).unwrap_err();
            assert!(e.contains(want), "{a}: {e}");
        }
        assert_eq!(parse(args("timers -h"), None), Ok(Command::Help));
    }

    #[test]
    fn coring_backend_sets_the_default_and_must_agree() {
        let run = |a: &str, env| match parse(args(a), env) {
            Ok(Command::Run(c)) => Ok(c.backends),
            Ok(c) => panic!("{c:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(run("", Some("fallback")), Ok(vec![BackendKind::Fallback]));
        assert_eq!(
            run("", Some("auto")),
            Ok(vec![BackendKind::IoUring, BackendKind::Fallback])
        );
        assert_eq!(
            run("--backend io_uring", Some("io_uring")),
            Ok(vec![BackendKind::IoUring])
        );
        assert!(run("--backend both", Some("fallback")).is_err());
        assert!(run("", Some("nonsense")).is_err());
    }

    #[test]
    fn http_has_its_own_command_line() {
        let cmd = parse(
            args("http --url http://127.0.0.1:8080/x --conns 4,8 --rate closed,1000 --pipeline 2 --duration 2s --warmup 250ms -H X-A:1 --backend fallback --cpus 0 --json"),
            None,
        )
        .unwrap();
        let Command::Http(c) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(c.url, "http://127.0.0.1:8080/x");
        assert_eq!(c.conns, [4, 8]);
        assert_eq!(c.rates, [None, Some(1000.0)]);
        assert_eq!(c.pipelines, [2]);
        assert_eq!(c.secs, Duration::from_secs(2));
        assert_eq!(c.warmup, Duration::from_millis(250));
        assert_eq!(c.headers, ["X-A:1"]);
        assert_eq!(c.backend, BackendKind::Fallback);
        assert_eq!(c.cpus, crate::http::Cpus::List(vec![0]));
        assert_eq!(c.threads, 1);
        assert!(c.json && c.keep_alive);
        let plan = c.plan();
        assert_eq!(plan.len(), 4);
        assert_eq!(plan[1].label(1), "open 1000/s 4c pipe 2");
        assert_eq!(plan[2].label(2), "closed 8c pipe 2 2t");
        assert_eq!(parse(args("http --help"), None), Ok(Command::HttpHelp));
        for (a, want) in [
            ("http --conns 4", "--url"),
            ("http --url https://x/", "https"),
            (
                "http --url http://127.0.0.1/ --threads 3 --conns 2",
                "--conns 2",
            ),
            (
                "http --url http://127.0.0.1/ --cpus 1,2 --threads 1",
                "--threads 1",
            ),
            (
                "http --url http://127.0.0.1/ --pipeline 2 --no-keepalive",
                "--pipeline",
            ),
            ("http --url http://127.0.0.1/ --duration 0", "--duration"),
            ("http --url http://127.0.0.1/ --rate 0", "--rate"),
            ("http --url http://127.0.0.1/ echo", "alone"),
            ("echo http", "alone"),
        ] {
            let e = parse(args(a), None).unwrap_err();
            assert!(e.contains(want), "{a}: {e}");
        }
    }
}
