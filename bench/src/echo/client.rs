//! The echo load generator, written once for every runtime ([`load`]): one task per
//! connection, each running the load loop ([`crate::load::drive`]) on the runtime's socket,
//! closed loop or open loop, and a report that merges what they measured.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::runtime::ClientRuntime;
use super::server::at_edges;
use crate::load::{drive, Clock, ConnSchedule, Pacing, Recorder, RoundTrip, Timeline};
use crate::sys::ThreadUsage;

/// One connection's request, and the check of its reply: a per-connection pattern with the
/// request's sequence number stamped in front, so a reply from another connection or an
/// older request does not compare equal.
#[derive(Debug, Clone)]
pub struct Message {
    /// The request to send next (after [`Message::stamp`]).
    pub request: Vec<u8>,
    seq: u64,
}

impl Message {
    /// Connection `conn`'s message of `size` bytes.
    pub fn new(conn: usize, size: usize) -> Message {
        Message {
            request: (0..size)
                .map(|i| (i as u8).wrapping_add(conn as u8))
                .collect(),
            seq: 0,
        }
    }

    /// Stamps the next sequence number into the request.
    pub fn stamp(&mut self) {
        let stamp = self.seq.to_le_bytes();
        let k = stamp.len().min(self.request.len());
        self.request[..k].copy_from_slice(&stamp[..k]);
    }

    /// Checks `reply` against the request just sent, and moves on to the next one.
    ///
    /// # Errors
    ///
    /// `InvalidData` if the reply differs.
    pub fn check(&mut self, reply: &[u8]) -> io::Result<()> {
        if reply != self.request {
            let at = reply.iter().zip(&self.request).position(|(a, b)| a != b);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "echo mismatch on request {}: {} bytes back for {}, first difference at \
                     byte {at:?}",
                    self.seq,
                    reply.len(),
                    self.request.len()
                ),
            ));
        }
        self.seq += 1;
        Ok(())
    }
}

/// The load to generate.
#[derive(Debug, Clone)]
pub struct Load {
    /// Connections.
    pub conns: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Open-loop total rate, or `None` for closed loop.
    pub rate: Option<f64>,
    /// Counts every completed request, for the progress line.
    pub counter: Arc<AtomicU64>,
}

/// What one connection's task gives back: what it measured and how it ended, or why the
/// task itself failed.
pub type ConnResult = Result<(Recorder, io::Result<()>), String>;

impl Load {
    /// Closed-loop load on `conns` connections with `size`-byte messages.
    pub fn closed(conns: usize, size: usize) -> Load {
        Load {
            conns,
            size,
            rate: None,
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How connection `conn` paces its requests.
    pub fn pacing(&self, conn: usize) -> Pacing {
        match self.rate {
            None => Pacing::Closed,
            Some(r) => Pacing::Open(ConnSchedule::new(r, self.conns, conn)),
        }
    }
}

/// One client connection of a run, for [`ClientRuntime::spawn_connection`] to start.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The load it is part of.
    pub load: &'a Load,
    /// Its index among the load's connections.
    pub conn: usize,
    /// The server's address.
    pub addr: SocketAddr,
    /// The run's timeline.
    pub tl: &'a Timeline,
}

impl Connection<'_> {
    /// The connection's task: `connect`, then the load loop on `clock` until the window
    /// ends. Owns everything it uses, so the runtime may spawn it.
    pub fn task<C: Clock, T: RoundTrip>(
        &self,
        clock: C,
        connect: impl Future<Output = io::Result<T>>,
    ) -> impl Future<Output = (Recorder, io::Result<()>)> {
        let (pacing, window) = (self.load.pacing(self.conn), self.tl.window());
        let mut rec = Recorder::new(self.load.counter.clone());
        async move {
            let res = match connect.await {
                Ok(mut stream) => drive(&clock, &mut stream, pacing, window, &mut rec).await,
                Err(e) => Err(e),
            };
            (rec, res)
        }
    }
}

/// What the load generator measured.
#[derive(Debug)]
pub struct ClientReport {
    /// Every connection's measurements, merged.
    pub rec: Recorder,
    /// The client thread's CPU and run-queue wait over the window.
    pub usage: ThreadUsage,
    /// What the client runs on, in words.
    pub backend: String,
    /// What went wrong; empty for a good run.
    pub errors: Vec<String>,
}

/// The load generator thread's body on runtime `R`, written once for every runtime: one
/// task per connection (each connects, then runs the load loop), the thread's CPU time
/// sampled at the window's edges, and every connection's result merged.
///
/// # Errors
///
/// The runtime's setup error; what goes wrong later is in the report's errors.
#[inline(never)] // a symbol for profiles
pub fn load<R: ClientRuntime>(
    runtime: &R,
    addr: SocketAddr,
    load: &Load,
    tl: Timeline,
) -> Result<ClientReport, String> {
    let rt = runtime
        .build()
        .map_err(|e| format!("load generator setup: {e}"))?;
    let clock = R::clock(tl.start);
    let (usage, conns) = R::block_on(&rt, async {
        let tasks: Vec<_> = (0..load.conns)
            .map(|conn| {
                let tl = &tl;
                R::spawn_connection(Connection {
                    load,
                    conn,
                    addr,
                    tl,
                })
            })
            .collect();
        let (u0, u1) = at_edges(&clock, &tl, ThreadUsage::now).await;
        let mut conns = Vec::with_capacity(tasks.len());
        for t in tasks {
            conns.push(t.await);
        }
        (u1.since(u0), conns)
    });
    let mut report = ClientReport {
        rec: Recorder::new(load.counter.clone()),
        usage,
        backend: R::describe(&rt),
        errors: Vec::new(),
    };
    drop(rt);
    for (i, conn) in conns.into_iter().enumerate() {
        match conn {
            Ok((rec, res)) => {
                report.rec.merge(&rec);
                if let Err(e) = res {
                    report.errors.push(format!("client connection {i}: {e}"));
                }
            }
            Err(e) => report
                .errors
                .push(format!("client connection {i} task: {e}")),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_must_be_the_request_just_sent() {
        let mut m = Message::new(3, 16);
        m.stamp();
        let first = m.request.clone();
        assert_eq!(first[..8], 0u64.to_le_bytes());
        assert_eq!(first[8], 8 + 3);
        assert!(m.check(&first).is_ok());
        m.stamp();
        // The previous request's echo, a short echo, and another connection's echo fail.
        let err = m.check(&first).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("request 1"), "{err}");
        assert!(m.check(&m.request.clone()[..15]).is_err());
        let mut other = Message::new(4, 16);
        other.stamp();
        assert!(m.check(&other.request).is_err());
    }

    #[test]
    fn open_loop_load_paces_each_connection() {
        let load = Load {
            rate: Some(1000.0),
            ..Load::closed(4, 64)
        };
        assert_eq!(Load::closed(4, 64).pacing(1), Pacing::Closed);
        match load.pacing(1) {
            Pacing::Open(s) => assert_eq!(s.intended_ns(0), 1_000_000),
            Pacing::Closed => panic!("a rate means open loop"),
        }
    }
}
