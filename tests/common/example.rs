//! Running the crate's example programs from integration tests: finding (and building)
//! the binary, running commands with a bound, and whether `curl` is there.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The example `name`'s binary for the profile (and target) this test runs from. When the
/// test runs under cargo (`CARGO` set), `cargo build --example name` runs first, once per
/// example and process (`cargo test --test X` alone does not build examples); otherwise
/// the binary must exist already.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let exe = std::env::current_exe().expect("current_exe");
    // .../<target-dir>/[<triple>/]<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <profile>/deps")
        .to_path_buf();
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut built = BUILT
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !built.iter().any(|b| b == name) {
            build(&cargo, &profile_dir, name);
            built.push(name.to_string());
        }
    }
    assert!(
        bin.is_file(),
        "{} does not exist; build it with `cargo build --example {name}`",
        bin.display()
    );
    bin
}

/// Runs `cargo build --example name` for the profile/target dir this test runs from.
fn build(cargo: &str, profile_dir: &Path, name: &str) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(p) => p.to_string(),
        None => panic!("no profile directory in {}", profile_dir.display()),
    };
    let above = profile_dir.parent().expect("profile dir has a parent");
    // The target directory's root holds CACHEDIR.TAG; with --target there is a triple
    // directory between it and the profile directory.
    let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
        (above.to_path_buf(), None)
    } else {
        let triple = above.file_name().and_then(|n| n.to_str()).map(String::from);
        (above.parent().expect("target dir").to_path_buf(), triple)
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // A Windows test binary run on another system (under Wine) cannot start the host's
    // cargo: the example must have been built beforehand (`cargo build --examples`).
    #[cfg(windows)]
    if Command::new(cargo).arg("--version").output().is_err() {
        eprintln!("cannot run {cargo}: using the example binary as it is");
        return;
    }
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--example", name, "--profile"])
        .arg(&profile)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    if let Some(t) = triple {
        cmd.args(["--target", &t]);
    }
    let out = run_bounded(cmd, Duration::from_secs(600));
    assert!(
        out.status.success(),
        "building the example failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command to completion, killing it if it outlives `bound`.
pub fn run_bounded(mut cmd: Command, bound: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = wait_bounded(&mut child, bound)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {bound:?}; killed"));
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Waits for `child` at most `bound`; kills and reaps it and returns `None` on timeout.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `curl` can be run; prints why not (once per test) when it cannot.
pub fn have_curl() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    let have = *HAVE.get_or_init(|| {
        Command::new("curl")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !have {
        eprintln!("skipping: the `curl` binary is not installed (CI must install it)");
    }
    have
}
