//! One echo run: a server thread pinned to the first CPU and a load generator thread pinned
//! to the second, on one shared timeline. Any server and any client go together: each is a
//! thread body, given to [`run_pair`].

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use super::client::ClientReport;
use super::server::{Ready, ServerReport, DRAIN};
use crate::load::Timeline;
use crate::progress::{wait_with_progress, Progress};
use crate::sys;
use crate::thread::spawn_pinned;

/// Time allowed for thread setup and teardown, beyond the run itself.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed, after the measured window, for the client's last round trips.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// The server thread's side of the start of a run.
#[derive(Debug)]
pub struct Handshake {
    ready: Sender<Result<Ready, String>>,
    timeline: Receiver<Timeline>,
}

impl Handshake {
    /// Tells the main thread where the server listens (or why it cannot), then waits for
    /// the run's timeline; gives back what setup made.
    ///
    /// # Errors
    ///
    /// The setup's error, or a run abandoned before it started.
    pub fn start<T>(self, setup: Result<(T, Ready), String>) -> Result<(T, Timeline), String> {
        let made = match setup {
            Ok((made, ready)) => {
                let _ = self.ready.send(Ok(ready));
                made
            }
            Err(e) => {
                let _ = self.ready.send(Err(e.clone()));
                return Err(e);
            }
        };
        let tl = self
            .timeline
            .recv()
            .map_err(|_| "the run was abandoned before it started".to_string())?;
        Ok((made, tl))
    }
}

impl Handshake {
    /// Tells the main thread the server cannot run, and why.
    ///
    /// # Errors
    ///
    /// Always: `why`.
    pub fn refuse<T>(self, why: String) -> Result<T, String> {
        let _ = self.ready.send(Err(why.clone()));
        Err(why)
    }
}

/// What one run gives back.
#[derive(Debug)]
pub struct Pair {
    /// What the server said when it listened.
    pub ready: Ready,
    /// The run's timeline.
    pub timeline: Timeline,
    /// What the server measured.
    pub server: ServerReport,
    /// What the load generator measured.
    pub client: ClientReport,
}

/// Runs one echo run: `server` (given the connection count and its handshake) on a thread
/// pinned to the first CPU; once it listens, a timeline of `warmup` then `secs` starts, and
/// `client` (given the address and the timeline) runs on a thread pinned to the second CPU.
/// Its connections open during the warm-up. `progress` shows `counter` (the client's
/// completed requests) while the run goes on.
///
/// # Errors
///
/// A thread that cannot start, a setup failure, a panic, or a thread that did not answer in
/// time (it is then left behind).
pub fn run_pair(
    conns: usize,
    (warmup, secs): (Duration, Duration),
    server: impl FnOnce(usize, Handshake) -> Result<ServerReport, String> + Send + 'static,
    client: impl FnOnce(SocketAddr, Timeline) -> Result<ClientReport, String> + Send + 'static,
    progress: &mut Progress,
    counter: &Arc<AtomicU64>,
) -> Result<Pair, String> {
    let cores = sys::cpus();
    let (server_core, client_core) = (cores.first().copied(), cores.get(1).copied());
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tl_tx, tl_rx) = mpsc::channel();
    let hs = Handshake {
        ready: ready_tx,
        timeline: tl_rx,
    };
    let (server_thread, server_rx) =
        spawn_pinned("echo-server", server_core, move || server(conns, hs))?;
    let ready = within(&ready_rx, SETUP_TIMEOUT, "the server to listen")??;

    let tl = Timeline::starting_now(warmup, secs);
    let _ = tl_tx.send(tl);
    let addr = ready.addr;
    let (client_thread, client_rx) =
        spawn_pinned("echo-client", client_core, move || client(addr, tl))?;
    let client = wait_with_progress(
        &client_rx,
        progress,
        Some(tl.end),
        counter,
        tl.end + ROUND_TRIP_TIMEOUT + SETUP_TIMEOUT,
        "the load generator to finish",
    )
    .and_then(|r| r);
    let server = within(&server_rx, DRAIN + SETUP_TIMEOUT, "the server to finish").and_then(|r| r);
    let (client, server) = (client?, server?);
    // Both threads have reported, so they are about to exit.
    client_thread
        .join()
        .map_err(|_| "the load generator thread panicked".to_string())?;
    server_thread
        .join()
        .map_err(|_| "the server thread panicked".to_string())?;
    Ok(Pair {
        ready,
        timeline: tl,
        server,
        client,
    })
}

/// `rx`'s answer within `d`.
fn within<T>(rx: &Receiver<T>, d: Duration, what: &str) -> Result<T, String> {
    rx.recv_timeout(d).map_err(|e| match e {
        RecvTimeoutError::Timeout => format!("gave up after {d:?} waiting for {what}"),
        RecvTimeoutError::Disconnected => {
            format!("a thread exited (panicked?) while waiting for {what}")
        }
    })
}
