//! One HTTP/1.1 client connection on coring, as the load loop drives it
//! ([`crate::load::Pipelined`]): requests written back to back (pipelined up to the loop's
//! depth), responses framed by [`ResponseParser`] in order, statuses, bytes and errors
//! counted, and a new connection when the server closes one.
//!
//! Without keep-alive, the connection closes after each response.
//! When the server closes the connection (after a `Connection: close` response, or at any
//! time) or it fails (a reset, a read idle past the timeout, a response that does not
//! parse), the connection opens a new one and sends again every request not yet answered.
//! A graceful close is counted as such; everything else is an error of its kind. A
//! connection that fails [`MAX_FAILS`] times in a row without a response in between gives
//! up with the last error.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use coring::net::TcpStream;
use coring::time::timeout;

use super::parse::{Response, ResponseParser};
use super::target::Target;
use crate::load::{first, Clock, First, Pipelined, Replies, Window};

/// Consecutive failures (without a response in between) after which a connection gives up.
pub const MAX_FAILS: u32 = 3;
/// Bytes asked for by one read.
pub const READ_BUF: usize = 64 * 1024;
/// The most unparsed bytes a connection keeps between reads: a response head (or trailer
/// block) larger than this is an error.
pub const MAX_PENDING: usize = 64 * 1024;

/// The kinds of errors a connection counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Opening the connection failed or timed out.
    Connect,
    /// A read failed (a reset, ...).
    Read,
    /// A write failed.
    Write,
    /// Nothing arrived for the timeout while requests were in flight.
    Timeout,
    /// The response did not parse, or was cut short by the close.
    Parse,
    /// The server closed the connection with requests unanswered and no `Connection: close`.
    Closed,
}

impl ErrorKind {
    /// Every kind, in [`HttpCounts::errors`] order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Read,
        ErrorKind::Write,
        ErrorKind::Timeout,
        ErrorKind::Parse,
        ErrorKind::Closed,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Read => "read",
            ErrorKind::Write => "write",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Parse => "parse",
            ErrorKind::Closed => "closed",
        }
    }
}

/// What connections saw: responses by status class, bytes, connections and errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpCounts {
    /// Final responses.
    pub responses: u64,
    /// Responses by status class: 1xx (never: interim responses are skipped), 2xx, 3xx,
    /// 4xx, 5xx, other.
    pub by_class: [u64; 6],
    /// Body bytes of the responses (chunked: the data, without framing).
    pub body_bytes: u64,
    /// Bytes read from the sockets (heads, framing and bodies).
    pub read_bytes: u64,
    /// Connections opened.
    pub connects: u64,
    /// Connections the server closed gracefully (after a `Connection: close` response or a
    /// body that ends with the close).
    pub server_closes: u64,
    /// Requests sent again on a new connection, unanswered on the old one.
    pub resent: u64,
    /// Errors, by [`ErrorKind::ALL`].
    pub errors: [u64; 6],
}

impl HttpCounts {
    /// Responses outside 2xx.
    pub fn non_2xx(&self) -> u64 {
        self.responses - self.by_class[1]
    }

    /// Errors of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &HttpCounts) {
        self.responses += other.responses;
        for (a, b) in self.by_class.iter_mut().zip(other.by_class) {
            *a += b;
        }
        self.body_bytes += other.body_bytes;
        self.read_bytes += other.read_bytes;
        self.connects += other.connects;
        self.server_closes += other.server_closes;
        self.resent += other.resent;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
    }

    fn response(&mut self, r: &Response) {
        self.responses += 1;
        let class = match r.status / 100 {
            c @ 1..=5 => c as usize - 1,
            _ => 5,
        };
        self.by_class[class] += 1;
        self.body_bytes += r.body_bytes;
    }
}

/// One client connection (see the module documentation). Counts go to the warm-up or to
/// the measured window by the time they happen, as the load loop's recorder does.
#[derive(Debug)]
pub struct HttpConn<C> {
    target: Arc<Target>,
    clock: C,
    window: Window,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// Reads land here, from its start; `None` after a read was cancelled with it.
    input: Option<Vec<u8>>,
    /// Bytes read but not yet consumed by the parser (part of a head, say).
    pending: Vec<u8>,
    output: Vec<u8>,
    parser: ResponseParser,
    /// Requests written on this socket, or due to be sent again, and not answered.
    unanswered: usize,
    fails: u32,
    counts: [HttpCounts; 2],
    log: Option<Vec<Response>>,
}

impl<C: Clock> HttpConn<C> {
    /// A connection to `target` (not opened yet: [`HttpConn::connect`], or the first send,
    /// opens it). `clock` and `window` are the load loop's; `timeout` bounds connecting and
    /// how long a read may wait with requests in flight.
    pub fn new(target: Arc<Target>, clock: C, window: Window, timeout: Duration) -> HttpConn<C> {
        HttpConn {
            parser: ResponseParser::new(target.head),
            target,
            clock,
            window,
            timeout,
            stream: None,
            input: None,
            pending: Vec::new(),
            output: Vec::new(),
            unanswered: 0,
            fails: 0,
            counts: [HttpCounts::default(); 2],
            log: None,
        }
    }

    /// Also keeps every response (for tests; memory grows with the run).
    pub fn keeping_responses(mut self) -> Self {
        self.log = Some(Vec::new());
        self
    }

    /// The counts of the warm-up (`[0]`) and of the measured window (`[1]`).
    pub fn counts(&self) -> &[HttpCounts; 2] {
        &self.counts
    }

    /// The kept responses, oldest first (empty unless [`HttpConn::keeping_responses`]).
    pub fn responses(&self) -> &[Response] {
        self.log.as_deref().unwrap_or_default()
    }

    /// Requests sent and not answered yet.
    pub fn unanswered(&self) -> usize {
        self.unanswered
    }

    /// The counts that an event happening now goes to.
    fn now_counts(&mut self) -> &mut HttpCounts {
        let measured = self.clock.now_ns() >= self.window.warm_end_ns;
        &mut self.counts[usize::from(measured)]
    }

    /// Forgets the socket and everything read from it.
    fn drop_stream(&mut self) {
        self.stream = None;
        self.pending.clear();
        self.parser = ResponseParser::new(self.target.head);
    }

    /// Counts a failure and drops the socket; the error itself after [`MAX_FAILS`] in a row.
    fn fail(&mut self, kind: ErrorKind, e: io::Error) -> io::Result<()> {
        self.now_counts().errors[kind as usize] += 1;
        self.drop_stream();
        self.fails += 1;
        if self.fails >= MAX_FAILS {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{} error, {MAX_FAILS} failures in a row without a response: {e}",
                    kind.name()
                ),
            ));
        }
        Ok(())
    }

    /// Opens the connection if it is not open, and sends again the requests the last one
    /// left unanswered.
    ///
    /// # Errors
    ///
    /// The last error after [`MAX_FAILS`] failed attempts in a row.
    pub async fn connect(&mut self) -> io::Result<()> {
        while self.stream.is_none() {
            let opened = timeout(self.timeout, async {
                let s = TcpStream::connect(self.target.addr).await?;
                s.set_nodelay(true)?;
                Ok::<_, io::Error>(s)
            })
            .await;
            let stream = match opened {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    self.fail(ErrorKind::Connect, e)?;
                    continue;
                }
                Err(_) => {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no connection within {:?}", self.timeout),
                    );
                    self.fail(ErrorKind::Connect, e)?;
                    continue;
                }
            };
            self.now_counts().connects += 1;
            self.stream = Some(stream);
            if self.unanswered > 0 {
                let n = self.unanswered;
                if let Err(e) = self.write_requests(n).await {
                    self.fail(ErrorKind::Write, e)?;
                    continue;
                }
                self.now_counts().resent += n as u64;
            }
        }
        Ok(())
    }

    /// Writes `n` requests on the open socket.
    async fn write_requests(&mut self, n: usize) -> io::Result<()> {
        let stream = self.stream.as_ref().expect("writes go to an open socket");
        let mut out = std::mem::take(&mut self.output);
        out.clear();
        for _ in 0..n {
            out.extend_from_slice(&self.target.request);
        }
        let (res, out) = stream.write_all(out).await;
        self.output = out;
        res
    }

    /// Takes the completed responses out of `bytes` (the unconsumed bytes stay in
    /// `pending`); stops after one that closes the connection.
    fn parse(&mut self, bytes: &[u8], measured: usize, count: &mut usize) -> io::Result<()> {
        let mut pos = 0;
        loop {
            let (used, done) = match self.parser.parse(&bytes[pos..]) {
                Ok(r) => r,
                Err(e) => return self.fail(ErrorKind::Parse, e.into()),
            };
            pos += used;
            let Some(resp) = done else { break };
            self.answered(&resp, measured, count)?;
            if self.stream.is_none() {
                // Closed after this response: what follows it is not for us.
                return Ok(());
            }
        }
        let rest = &bytes[pos..];
        if rest.len() > MAX_PENDING {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a response head or chunk framing over {MAX_PENDING} bytes"),
            );
            return self.fail(ErrorKind::Parse, e);
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    /// Books a completed response.
    fn answered(&mut self, resp: &Response, measured: usize, count: &mut usize) -> io::Result<()> {
        if self.unanswered == 0 {
            let e = io::Error::new(io::ErrorKind::InvalidData, "a response to no request");
            return self.fail(ErrorKind::Parse, e);
        }
        self.unanswered -= 1;
        self.fails = 0;
        *count += 1;
        self.counts[measured].response(resp);
        if let Some(log) = &mut self.log {
            log.push(*resp);
        }
        if resp.close {
            self.counts[measured].server_closes += 1;
        }
        if resp.close || !self.target.keep_alive {
            self.drop_stream();
        }
        Ok(())
    }

    /// One read, bounded by the timeout and by `wake_at`; `Ok(None)` when `wake_at` came
    /// first.
    async fn read(&mut self, wake_at: Option<u64>) -> Option<io::Result<usize>> {
        let stream = self
            .stream
            .as_ref()
            .expect("reads come from an open socket");
        let mut input = self
            .input
            .take()
            .unwrap_or_else(|| Vec::with_capacity(READ_BUF));
        input.clear();
        let read = timeout(self.timeout, stream.read(input));
        let outcome = match wake_at {
            None => read.await,
            Some(t) => match first(read, self.clock.sleep_until_ns(t)).await {
                First::A(r) => r,
                // The read is cancelled; whatever it had received comes with the next one.
                First::B(()) => return None,
            },
        };
        Some(match outcome {
            Ok((res, input)) => {
                self.input = Some(input);
                res
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no response bytes for {:?} with {} requests in flight",
                    self.timeout, self.unanswered
                ),
            )),
        })
    }
}

impl<C: Clock> Pipelined for HttpConn<C> {
    async fn send(&mut self, n: usize) -> io::Result<()> {
        // A new connection sends the unanswered requests first, then these go after them.
        self.connect().await?;
        self.unanswered += n;
        if let Err(e) = self.write_requests(n).await {
            // Everything unanswered goes again on the next connection.
            self.fail(ErrorKind::Write, e)?;
            self.connect().await?;
        }
        Ok(())
    }

    async fn recv(&mut self, wake_at: Option<u64>) -> io::Result<Replies> {
        loop {
            self.connect().await?;
            let n = match self.read(wake_at).await {
                None => {
                    return Ok(Replies {
                        count: 0,
                        done_ns: self.clock.now_ns(),
                    })
                }
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    let kind = if e.kind() == io::ErrorKind::TimedOut {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::Read
                    };
                    self.fail(kind, e)?;
                    continue;
                }
            };
            let done_ns = self.clock.now_ns();
            let measured = usize::from(done_ns >= self.window.warm_end_ns);
            self.counts[measured].read_bytes += n as u64;
            let mut count = 0;
            if n == 0 {
                // The server closed the connection.
                match self.parser.eof(self.pending.len()) {
                    Ok(Some(resp)) => {
                        self.answered(&resp, measured, &mut count)?;
                        self.drop_stream();
                    }
                    Ok(None) => {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "the server closed the connection with {} requests unanswered",
                                self.unanswered
                            ),
                        );
                        self.fail(ErrorKind::Closed, e)?;
                    }
                    Err(e) => self.fail(ErrorKind::Parse, e.into())?,
                }
            } else {
                let input = self
                    .input
                    .take()
                    .expect("a finished read gives its buffer back");
                if self.pending.is_empty() {
                    self.parse(&input[..n], measured, &mut count)?;
                } else {
                    let mut bytes = std::mem::take(&mut self.pending);
                    bytes.extend_from_slice(&input[..n]);
                    self.parse(&bytes, measured, &mut count)?;
                    if self.pending.is_empty() && bytes.capacity() > self.pending.capacity() {
                        // Keep the larger allocation for next time.
                        bytes.clear();
                        self.pending = bytes;
                    }
                }
                self.input = Some(input);
            }
            if count > 0 {
                return Ok(Replies { count, done_ns });
            }
        }
    }
}
