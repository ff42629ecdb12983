//! `coring-torture`: coring's stress suite. See the crate's README, or run `--help`.
//!
//! The parent process runs every (scenario, backend) pair in a child process of its own
//! (this binary re-executed with `--in-process`), bounded in time, and prints one summary;
//! a pair that crashes, hangs or leaks cannot spoil the figures of the others.
#![warn(clippy::undocumented_unsafe_blocks)]

mod bufs;
mod child;
mod proxy;
mod report;
mod rng;
mod scenario;
mod summary;
mod sys;
mod watchdog;
mod workload;

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coring::BackendKind;

use crate::report::Report;
use crate::scenario::{Ctx, SCENARIOS};

const USAGE: &str = "\
usage: coring-torture [SCENARIO...] [--backend io_uring|fallback|both] [--seed N] [--long]
                      [--skip-known] [--in-process] [--verbose] [--list]

Runs coring's stress scenarios, each on each backend, each in a child process bounded in
time, and prints a summary (ops cancelled, signals delivered, connections reset, soak
duration, RSS and fd ranges, failed checks). Exit status 0 only if every check passed.

  SCENARIO        one or more of the scenarios below (default: all of them)
  --backend B     io_uring, fallback or both (default both; io_uring exists on Linux only)
  --seed N        seed of every random choice (decimal or 0x hex; default: from the clock,
                  printed so that a failing run can be replayed)
  --long          the release-check profile: minutes per scenario instead of seconds
  --skip-known    leave out the checks of issue 14's defects (fixed; for older commits)
  --in-process    run one scenario on one backend in this process (for debuggers)
  --verbose       copy children's stderr through and print each stage
  --list          list the scenarios and exit
";

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Whether `--verbose` was given.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// The parsed command line.
#[derive(Debug, Default)]
struct Args {
    scenarios: Vec<String>,
    backend: Option<String>,
    seed: Option<u64>,
    long: bool,
    skip_known: bool,
    in_process: bool,
    verbose: bool,
    list: bool,
    help: bool,
    /// Hidden: run a child workload (`--child NAME`).
    child: Option<String>,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("--seed takes a number (decimal or 0x hex), not '{s}'"))
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--backend" => a.backend = Some(value("--backend")?),
            "--seed" => a.seed = Some(parse_seed(&value("--seed")?)?),
            "--long" => a.long = true,
            "--skip-known" => a.skip_known = true,
            "--in-process" => a.in_process = true,
            "--verbose" | "-v" => a.verbose = true,
            "--list" => a.list = true,
            "-h" | "--help" => a.help = true,
            "--child" => a.child = Some(value("--child")?),
            f if f.starts_with('-') => return Err(format!("unknown flag '{f}'")),
            name => {
                if name != "all" && scenario::find(name).is_none() {
                    return Err(format!("unknown scenario '{name}' (see --list)"));
                }
                a.scenarios.push(name.to_string());
            }
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("coring-torture: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    VERBOSE.store(args.verbose, Ordering::Relaxed);
    if args.help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.list {
        for s in SCENARIOS {
            println!("{:<13} {}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    let backends = match scenario::backends(args.backend.as_deref().unwrap_or("both")) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("coring-torture: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or_else(clock_seed);
    if let Some(name) = &args.child {
        return run_child_workload(name, backends[0], seed, &args);
    }
    let names: Vec<&'static str> =
        if args.scenarios.is_empty() || args.scenarios.iter().any(|s| s == "all") {
            SCENARIOS.iter().map(|s| s.name).collect()
        } else {
            args.scenarios
                .iter()
                .filter_map(|n| scenario::find(n).map(|s| s.name))
                .collect()
        };
    if args.in_process {
        if names.len() != 1 || backends.len() != 1 {
            eprintln!("coring-torture: --in-process runs exactly one scenario on one backend");
            return ExitCode::from(2);
        }
        return run_in_process(names[0], backends[0], seed, &args);
    }
    run_parent(&names, &backends, seed, &args)
}

/// A seed from the clock and the pid, for runs without `--seed`.
fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    rng::Rng::new(t ^ u64::from(std::process::id()) << 32).next_u64() & 0xFFFF_FFFF
}

/// Notes every panic (message and place) on stderr in one line, without the default
/// hook's backtrace hint, so a child's stderr tail shows what panicked.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = scenario::panic_message(info.payload());
        let at = info
            .location()
            .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        let thread = std::thread::current();
        eprintln!(
            "torture: panic in thread '{}'{at}: {msg}",
            thread.name().unwrap_or("?")
        );
    }));
}

/// `--in-process`: runs one scenario on one backend here, printing its tagged lines.
fn run_in_process(name: &'static str, backend: BackendKind, seed: u64, args: &Args) -> ExitCode {
    install_panic_hook();
    // Scenarios choose the backend through the builder; the variable would override it.
    if std::env::var_os("CORING_BACKEND").is_some() {
        eprintln!("coring-torture: ignoring CORING_BACKEND (the scenario forces {backend})");
        std::env::remove_var("CORING_BACKEND");
    }
    let sc = scenario::find(name).expect("a known scenario");
    let bound = if args.long { sc.bound.1 } else { sc.bound.0 };
    let mut ctx = Ctx::new(sc.name, backend, seed, args.long, args.skip_known);
    let start = Instant::now();
    {
        let _dog = watchdog::Watchdog::arm(&format!("{name}/{backend}"), bound);
        if let Err(msg) = scenario::catch(|| (sc.run)(&mut ctx)) {
            let stage = watchdog::current_stage();
            ctx.fail(
                "panic",
                None,
                format!("the scenario panicked: {msg} (stage: {stage})"),
            );
        }
    }
    ctx.figure("secs", format!("{:.1}", start.elapsed().as_secs_f64()));
    print!("{}", ctx.report.to_lines());
    println!("@torture done");
    if ctx.report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--child NAME`: a hidden workload for a scenario that needs a process of its own.
fn run_child_workload(name: &str, backend: BackendKind, seed: u64, args: &Args) -> ExitCode {
    install_panic_hook();
    let Some((_, f)) = scenario::CHILDREN.iter().find(|(n, _)| *n == name) else {
        eprintln!("coring-torture: unknown child workload '{name}'");
        return ExitCode::from(2);
    };
    let ctx = Ctx::new("child", backend, seed, args.long, args.skip_known);
    let _dog = watchdog::Watchdog::arm(&format!("child {name}"), Duration::from_secs(60));
    match scenario::catch(|| f(&ctx)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(msg) => {
            println!("@child panic {msg}");
            ExitCode::from(101)
        }
    }
}

/// One (scenario, backend) run as the parent saw it.
pub struct RunResult {
    pub scenario: &'static str,
    pub backend: BackendKind,
    pub report: Report,
    pub secs: f64,
    /// How the child ended, when it did not end normally (crash, watchdog, kill).
    pub abnormal: Option<String>,
    pub stderr_tail: String,
}

fn run_parent(
    names: &[&'static str],
    backends: &[BackendKind],
    seed: u64,
    args: &Args,
) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("coring-torture: cannot find my own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let profile = if args.long { "long" } else { "short" };
    let backend_list: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
    println!(
        "== coring-torture: profile {profile}, seed {seed:#x}, backends {}, scenarios {}",
        backend_list.join("+"),
        names.join(" ")
    );
    let start = Instant::now();
    let mut results = Vec::new();
    for &name in names {
        let sc = scenario::find(name).expect("a known scenario");
        for &backend in backends {
            let bound = if args.long { sc.bound.1 } else { sc.bound.0 };
            let mut cmd = Command::new(&exe);
            cmd.args([name, "--in-process", "--backend", &backend.to_string()])
                .arg(format!("--seed={seed:#x}"))
                .env_remove("CORING_BACKEND");
            if args.long {
                cmd.arg("--long");
            }
            if args.skip_known {
                cmd.arg("--skip-known");
            }
            if args.verbose {
                cmd.arg("--verbose");
            }
            println!("-- {name} on {backend} ...");
            // The child's own watchdog fires at `bound`; this one only catches a child
            // whose watchdog could not run.
            let fin = match child::run_bounded(cmd, bound + Duration::from_secs(30), args.verbose) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("coring-torture: cannot start {}: {e}", exe.display());
                    return ExitCode::FAILURE;
                }
            };
            let parsed = Report::from_lines(&fin.stdout);
            let abnormal = match (&parsed, fin.status) {
                (Some(_), Some(s)) if s.success() || s.code() == Some(1) => None,
                _ => Some(fin.how()),
            };
            let mut report = parsed.unwrap_or_default();
            if let Some(how) = &abnormal {
                report.fail(
                    &format!("{name}/process"),
                    None,
                    format!(
                        "the scenario process ended abnormally ({how}); stderr tail: {}",
                        fin.stderr_tail(6)
                    ),
                );
            }
            let r = RunResult {
                scenario: name,
                backend,
                report,
                secs: fin.secs,
                abnormal,
                stderr_tail: fin.stderr_tail(20),
            };
            print!("{}", summary::run_block(&r));
            results.push(r);
        }
    }
    print!(
        "{}",
        summary::summary(
            &results,
            seed,
            profile,
            start.elapsed().as_secs_f64(),
            args.skip_known
        )
    );
    if results.iter().all(|r| r.report.failures.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_the_documented_flags() {
        let a = args(&[
            "storm",
            "reset",
            "--backend",
            "fallback",
            "--seed=0x2a",
            "--long",
        ])
        .unwrap();
        assert_eq!(a.scenarios, ["storm", "reset"]);
        assert_eq!(a.backend.as_deref(), Some("fallback"));
        assert_eq!(a.seed, Some(42));
        assert!(a.long && !a.skip_known);
        assert!(args(&["nosuch"]).is_err());
        assert!(args(&["--seed", "x"]).is_err());
        assert!(args(&["--frobnicate"]).is_err());
        assert!(scenario::backends("both").is_ok());
        assert!(scenario::backends("auto").is_err());
    }
}
