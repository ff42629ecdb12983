//! `coring-bench`: see the library's documentation, or run it with `--help`.

use std::process::ExitCode;

use coring_bench::cli::{self, Command};
use coring_bench::http;
use coring_bench::report::{self, Host};
use coring_bench::svg::{self, PlotOptions};
use coring_bench::sys;

fn main() -> ExitCode {
    let env_backend = std::env::var("CORING_BACKEND").ok();
    let (results, json, plot, log_y, metrics) =
        match cli::parse(std::env::args().skip(1), env_backend.as_deref()) {
            Ok(Command::Run(cfg)) => (
                coring_bench::run_all(&cfg),
                cfg.json,
                cfg.plot.clone(),
                cfg.log_y,
                cfg.metrics,
            ),
            Ok(Command::Http(cfg)) => (
                http::run_all(&cfg),
                cfg.json,
                cfg.plot.clone(),
                cfg.log_y,
                false,
            ),
            Ok(Command::Help) => {
                println!("{}", cli::USAGE);
                return ExitCode::SUCCESS;
            }
            Ok(Command::HttpHelp) => {
                println!("{}", http::USAGE);
                return ExitCode::SUCCESS;
            }
            Err(msg) => {
                eprintln!("coring-bench: {msg}\n\n{}", cli::USAGE);
                return ExitCode::from(2);
            }
        };
    let results = match results {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("coring-bench: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let host = Host {
        cpus: sys::cpus().len(),
        kernel: sys::kernel_release(),
    };
    if json {
        let doc = report::json_document(&host, &results);
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("a JSON value always serializes")
        );
    } else {
        print!("{}", report::table(&host, &results));
        if metrics {
            print!("{}", report::metrics_block(&results));
        }
    }
    if let Some(path) = &plot {
        let opts = PlotOptions {
            log_y,
            ..PlotOptions::default()
        };
        match svg::plot(&results, opts) {
            Some(doc) => {
                if let Err(e) = std::fs::write(path, doc) {
                    eprintln!("coring-bench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("coring-bench: wrote {}", path.display());
            }
            None => eprintln!("coring-bench: no run measured latencies; no plot written"),
        }
    }
    if results.iter().any(|r| r.error.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
