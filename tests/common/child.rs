//! Running one scenario of a test binary in a child process: for state that cannot be
//! undone in the test process (a seccomp filter, dropped capabilities, resource limits).
//!
//! The parent re-executes the current test binary with an environment variable set,
//! running only the named child test, which does nothing when the variable is unset (so
//! a plain `cargo test` passes through it harmlessly).

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a child may run before the parent kills it and fails.
pub const CHILD_BOUND: Duration = Duration::from_secs(60);

/// What a finished child printed.
pub struct ChildOutput {
    pub stdout: String,
    pub stderr: String,
}

impl ChildOutput {
    /// The rest of the single stdout line carrying `prefix`.
    pub fn value(&self, prefix: &str) -> &str {
        let found: Vec<&str> = self
            .stdout
            .lines()
            .filter_map(|l| l.find(prefix).map(|i| &l[i + prefix.len()..]))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one {prefix:?} line from the child\n{self}"
        );
        found[0]
    }
}

impl std::fmt::Display for ChildOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- child stdout ---\n{}\n--- child stderr ---\n{}\n--- end ---",
            self.stdout, self.stderr
        )
    }
}

/// Reads a child's pipe to the end on its own thread, so a chatty child cannot block on a
/// full pipe while the parent polls for its exit.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Re-executes this test binary running only the test `test`, with `env` set to `mode`;
/// waits for it (at most [`CHILD_BOUND`]) and fails unless it exited successfully after
/// printing `ok_marker` (libtest also exits successfully when the filter matches nothing).
pub fn run_child(env: &str, mode: &str, test: &str, ok_marker: &str) -> ChildOutput {
    assert!(
        std::env::var_os(env).is_none(),
        "the parent tests must not run with {env} set"
    );
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, mode)
        // The child must exercise Auto selection, whatever backend this run forces.
        .env_remove("CORING_BACKEND")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {} as the {mode} child: {e}", exe.display()));
    let stdout = drain(child.stdout.take().expect("child stdout"));
    let stderr = drain(child.stderr.take().expect("child stderr"));

    let deadline = Instant::now() + CHILD_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on the child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // SIGKILL cannot be ignored: the wait after it is bounded.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    // The child is gone, so its pipes are closed and the readers finish.
    let out = ChildOutput {
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    match status {
        None => panic!("the {mode} child did not exit within {CHILD_BOUND:?}; killed it\n{out}"),
        Some(s) if !s.success() => panic!("the {mode} child failed: {s}\n{out}"),
        Some(_) => {}
    }
    // libtest exits successfully when the filter matches no test: insist the child ran
    // to its end.
    assert!(
        out.stdout.lines().any(|l| l.contains(ok_marker)),
        "the {mode} child exited successfully but did not reach its end \
         (did `{test}` run?)\n{out}"
    );
    out
}
