//! Nothing may hang: every scenario runs under a watchdog thread that, past the
//! scenario's bound, prints what the scenario was doing (its current stage) and ends the
//! process with a failure line the parent reports.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static STAGE: Mutex<String> = Mutex::new(String::new());

/// Names what the scenario does now; a watchdog message quotes the latest stage.
pub fn stage(what: impl Into<String>) {
    let what = what.into();
    if crate::verbose() {
        eprintln!("torture: stage: {what}");
    }
    *STAGE.lock().unwrap_or_else(|p| p.into_inner()) = what;
}

/// The current stage.
pub fn current_stage() -> String {
    STAGE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Disarmed when dropped; fires once `bound` has passed.
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a watchdog for `what`: if it is not dropped within `bound`, prints a failure
    /// line naming `what` and the current stage and exits the process with status 3
    /// (without unwinding or running destructors: the process is stuck somewhere).
    pub fn arm(what: &str, bound: Duration) -> Watchdog {
        let (done, wait) = mpsc::channel::<()>();
        let what = what.to_string();
        let start = Instant::now();
        let thread = std::thread::Builder::new()
            .name("torture-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(bound) {
                    let msg = format!(
                        "{what} did not finish within {bound:?} (ran {:.1} s; stage: {})",
                        start.elapsed().as_secs_f64(),
                        current_stage()
                    );
                    println!("@torture fail {what}/watchdog - {msg}");
                    println!("@torture done");
                    eprintln!("torture: WATCHDOG: {msg}");
                    // SAFETY: _exit ends the process at once; nothing is touched afterwards.
                    unsafe { libc::_exit(3) };
                }
            })
            .expect("spawning the watchdog thread");
        Watchdog {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
