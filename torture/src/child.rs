//! Running processes with a bound: this binary re-executed for one scenario (or a hidden
//! child workload), and the example servers the fault proxy sits in front of.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or killed) child left.
#[derive(Debug)]
pub struct Finished {
    /// `None` if it was killed at the bound.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub secs: f64,
}

impl Finished {
    /// Whether it exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// How it ended, for messages.
    pub fn how(&self) -> String {
        match self.status {
            None => "killed at its time bound".to_string(),
            Some(s) => s.to_string(),
        }
    }

    /// The last `n` lines of stderr, for a failure message.
    pub fn stderr_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static, echo: bool) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if echo {
                        use std::io::Write;
                        let _ = std::io::stderr().write_all(&chunk[..n]);
                    }
                    all.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    })
}

/// Runs `cmd` to its end, killing it (SIGKILL) once `bound` has passed. With `echo`, the
/// child's stderr is copied to ours as it comes.
pub fn run_bounded(mut cmd: Command, bound: Duration, echo: bool) -> std::io::Result<Finished> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = drain(child.stdout.take().expect("piped stdout"), false);
    let err = drain(child.stderr.take().expect("piped stderr"), echo);
    let status = wait_bounded(&mut child, bound);
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Waits for `child` at most `bound`; kills and reaps it and returns `None` past it.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A child process killed when this guard drops (so a failing scenario never leaves a
/// server running).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
