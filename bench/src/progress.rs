//! The progress line on stderr: mode, backend, seconds left and the current rate, rewritten
//! in place with `\r` at most four times a second.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats;

/// Time between two updates of the line.
pub const TICK: Duration = Duration::from_millis(250);

/// Writes the progress line of one run.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    what: String,
    unit: &'static str,
    width: usize,
    last: Option<(Instant, u64)>,
    rate: f64,
}

impl Progress {
    /// A progress line for `what` (e.g. `[2/10] echo closed 16c 1024B io_uring`), counting
    /// `unit`s (e.g. `req/s`); draws nothing unless `enabled`.
    pub fn new(enabled: bool, what: String, unit: &'static str) -> Progress {
        Progress {
            enabled,
            what,
            unit,
            width: 0,
            last: None,
            rate: 0.0,
        }
    }

    /// Redraws the line: `left` until the end (if known), `done` operations so far.
    pub fn update(&mut self, now: Instant, left: Option<Duration>, done: u64) {
        self.rate = match self.last {
            Some((t, n)) if now > t => stats::rate(done.saturating_sub(n), now - t),
            _ => 0.0,
        };
        self.last = Some((now, done));
        if !self.enabled {
            return;
        }
        let line = format_line(&self.what, left, self.rate, self.unit);
        self.draw(&line);
    }

    fn draw(&mut self, line: &str) {
        let n = line.chars().count();
        let pad = self.width.saturating_sub(n);
        self.width = n;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}{:pad$}", "");
        let _ = err.flush();
    }

    /// The rate shown by the last update (operations per second since the one before).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Erases the line.
    pub fn finish(&mut self) {
        if self.enabled && self.width > 0 {
            let w = self.width;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:w$}\r", "");
            let _ = err.flush();
            self.width = 0;
        }
    }
}

/// The text of the line.
pub fn format_line(what: &str, left: Option<Duration>, rate: f64, unit: &str) -> String {
    let left = match left {
        Some(d) => format!("{:.1} s left", d.as_secs_f64()),
        None => "running".to_string(),
    };
    format!("{what} · {left} · {} {unit}", stats::human(rate))
}

/// Waits for `rx` while keeping the progress line fresh; gives up at `deadline`.
///
/// `end` is when the measurement should end (for "seconds left"), `counter` what the run
/// has done so far.
///
/// # Errors
///
/// A message saying what was waited for when the deadline passed or the sender went away.
pub fn wait_with_progress<T>(
    rx: &Receiver<T>,
    progress: &mut Progress,
    end: Option<Instant>,
    counter: &Arc<AtomicU64>,
    deadline: Instant,
    what: &str,
) -> Result<T, String> {
    loop {
        let now = Instant::now();
        progress.update(
            now,
            end.map(|e| e.saturating_duration_since(now)),
            counter.load(Ordering::Relaxed),
        );
        let wait = TICK.min(deadline.saturating_duration_since(now));
        match rx.recv_timeout(wait) {
            Ok(v) => {
                progress.finish();
                return Ok(v);
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(RecvTimeoutError::Timeout) => {
                progress.finish();
                return Err(format!("gave up waiting for {what}"));
            }
            Err(RecvTimeoutError::Disconnected) => {
                progress.finish();
                return Err(format!(
                    "a thread exited (panicked?) while waiting for {what}"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_what_time_left_and_rate() {
        let l = format_line(
            "echo io_uring",
            Some(Duration::from_millis(2340)),
            85_123.0,
            "req/s",
        );
        assert_eq!(l, "echo io_uring · 2.3 s left · 85.1k req/s");
        assert_eq!(
            format_line("spawn", None, 0.0, "tasks/s"),
            "spawn · running · 0.00 tasks/s"
        );
    }

    #[test]
    fn rate_is_the_delta_since_the_last_update() {
        let mut p = Progress::new(false, "x".into(), "req/s");
        let t0 = Instant::now();
        p.update(t0, None, 1000);
        assert_eq!(p.rate(), 0.0);
        p.update(t0 + Duration::from_millis(250), None, 3500);
        // 2500 in 0.25 s.
        assert_eq!(p.rate(), 10_000.0);
        p.update(t0 + Duration::from_millis(750), None, 4500);
        assert_eq!(p.rate(), 2_000.0);
    }

    #[test]
    fn waiting_returns_the_value_or_says_what_it_waited_for() {
        let counter = Arc::new(AtomicU64::new(0));
        let mut p = Progress::new(false, "x".into(), "req/s");
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(7).unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            wait_with_progress(&rx, &mut p, None, &counter, far, "seven"),
            Ok(7)
        );
        drop(tx);
        let err = wait_with_progress(&rx, &mut p, None, &counter, far, "eight").unwrap_err();
        assert!(err.contains("eight"), "{err}");
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let err =
            wait_with_progress(&rx, &mut p, None, &counter, Instant::now(), "nine").unwrap_err();
        assert!(err.contains("gave up") && err.contains("nine"), "{err}");
    }
}
