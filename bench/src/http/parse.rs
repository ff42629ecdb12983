//! HTTP/1.1 response framing, incrementally: where each response of a keep-alive (or
//! pipelined) connection ends, for bodies framed by `Content-Length`, by chunked transfer
//! coding, or by the connection's close. Heads and chunk-size lines are parsed with
//! `httparse`; body bytes are counted, never kept.

use std::fmt;

/// The most header (or trailer) lines one response may have.
pub const MAX_HEADERS: usize = 64;

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes (for a chunked body, the data without the chunk framing).
    pub body_bytes: u64,
    /// Whether the server closes the connection after it (`Connection: close`, an HTTP/1.0
    /// response without keep-alive, or a body that runs until the close).
    pub close: bool,
}

/// Why bytes are not an HTTP/1.1 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl From<ParseError> for std::io::Error {
    fn from(e: ParseError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

fn bad(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

/// Where the parser is within the current response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a response's status line (between responses).
    Head,
    /// In a `Content-Length` body, with this much left.
    Body { left: u64 },
    /// Before a chunk-size line.
    ChunkSize,
    /// In a chunk's data, with this much left.
    ChunkData { left: u64 },
    /// Before the CRLF that ends a chunk's data.
    ChunkEnd,
    /// After the last (zero-size) chunk: trailer lines up to an empty line.
    Trailers,
    /// In a body that ends when the server closes the connection.
    UntilClose,
}

/// How a response's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The responses of one connection, parsed as their bytes arrive.
///
/// [`ResponseParser::parse`] never consumes part of a head, a chunk-size line, a chunk's
/// closing CRLF or the trailers: the caller keeps the unconsumed bytes and offers them again
/// with more appended. Body bytes are consumed as they come, so a body of any size needs no
/// buffer of its size.
#[derive(Debug, Clone)]
pub struct ResponseParser {
    state: State,
    head_request: bool,
    current: Response,
}

impl ResponseParser {
    /// A parser for the responses to requests that all have the same method; `head_request`
    /// when that method is `HEAD` (whose responses have no body, whatever their headers
    /// say).
    pub fn new(head_request: bool) -> ResponseParser {
        ResponseParser {
            state: State::Head,
            head_request,
            current: Response {
                status: 0,
                body_bytes: 0,
                close: false,
            },
        }
    }

    /// Whether the parser is between two responses (nothing of the next one seen yet).
    pub fn between_responses(&self) -> bool {
        self.state == State::Head
    }

    /// Parses from the start of `buf`, up to the end of at most one response: returns how
    /// many bytes it consumed and the response, if one completed. Call again with the rest
    /// (and, when it completed nothing, with more bytes appended to the unconsumed ones).
    /// Interim (1xx) responses are skipped.
    ///
    /// # Errors
    ///
    /// Bytes that are not a response; the connection's framing is lost then.
    pub fn parse(&mut self, buf: &[u8]) -> Result<(usize, Option<Response>), ParseError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut resp = httparse::Response::new(&mut headers);
                    let n = match resp.parse(rest) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => return Ok((pos, None)),
                        Err(e) => return Err(bad(format!("bad response head: {e}"))),
                    };
                    pos += n;
                    let status = resp.code.unwrap_or(0);
                    if status == 101 {
                        return Err(bad("101 Switching Protocols: the server left HTTP/1.1"));
                    }
                    if (100..200).contains(&status) {
                        // Interim: the final response follows.
                        continue;
                    }
                    let version = resp.version.unwrap_or(1);
                    let (framing, close) =
                        framing(resp.headers, status, version, self.head_request)?;
                    self.current = Response {
                        status,
                        body_bytes: 0,
                        close,
                    };
                    self.state = match framing {
                        Framing::None | Framing::Length(0) => return Ok((pos, Some(self.current))),
                        Framing::Length(n) => State::Body { left: n },
                        Framing::Chunked => State::ChunkSize,
                        Framing::UntilClose => State::UntilClose,
                    };
                }
                State::Body { left } => {
                    let take = left.min(rest.len() as u64);
                    pos += take as usize;
                    self.current.body_bytes += take;
                    if take < left {
                        self.state = State::Body { left: left - take };
                        return Ok((pos, None));
                    }
                    self.state = State::Head;
                    return Ok((pos, Some(self.current)));
                }
                State::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        pos += n;
                        self.state = State::Trailers;
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        self.state = State::ChunkData { left: size };
                    }
                    Ok(httparse::Status::Partial) => return Ok((pos, None)),
                    Err(_) => return Err(bad("bad chunk-size line")),
                },
                State::ChunkData { left } => {
                    let take = left.min(rest.len() as u64);
                    pos += take as usize;
                    self.current.body_bytes += take;
                    if take < left {
                        self.state = State::ChunkData { left: left - take };
                        return Ok((pos, None));
                    }
                    self.state = State::ChunkEnd;
                }
                State::ChunkEnd => {
                    if rest.len() < 2 {
                        return Ok((pos, None));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(rest, &mut trailers) {
                        Ok(httparse::Status::Complete((n, _))) => {
                            pos += n;
                            self.state = State::Head;
                            return Ok((pos, Some(self.current)));
                        }
                        Ok(httparse::Status::Partial) => return Ok((pos, None)),
                        Err(e) => return Err(bad(format!("bad chunked trailer: {e}"))),
                    }
                }
                State::UntilClose => {
                    self.current.body_bytes += rest.len() as u64;
                    return Ok((buf.len(), None));
                }
            }
        }
    }

    /// The server closed the connection with `unconsumed` bytes left over from
    /// [`ResponseParser::parse`]: completes a body that runs until the close; `Ok(None)`
    /// when the close came between responses. The parser is ready for a new connection
    /// afterwards.
    ///
    /// # Errors
    ///
    /// A response cut short by the close.
    pub fn eof(&mut self, unconsumed: usize) -> Result<Option<Response>, ParseError> {
        let state = std::mem::replace(&mut self.state, State::Head);
        match state {
            State::UntilClose => Ok(Some(self.current)),
            State::Head if unconsumed == 0 => Ok(None),
            State::Head => Err(bad(format!(
                "connection closed in a response head ({unconsumed} bytes of it received)"
            ))),
            _ => Err(bad(format!(
                "connection closed in the body of a {} response after {} body bytes",
                self.current.status, self.current.body_bytes
            ))),
        }
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// How the body of a response is framed, and whether the connection closes after it
/// (RFC 9112 section 6.3).
fn framing(
    headers: &[httparse::Header<'_>],
    status: u16,
    version: u8,
    head_request: bool,
) -> Result<(Framing, bool), ParseError> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let mut close = if version == 0 {
        !named("connection").any(|v| lists(v, "keep-alive"))
    } else {
        named("connection").any(|v| lists(v, "close"))
    };
    if head_request || status == 204 || status == 304 {
        return Ok((Framing::None, close));
    }
    let mut codings = named("transfer-encoding").peekable();
    if codings.peek().is_some() {
        let last_is_chunked = codings
            .last()
            .and_then(|v| v.split(|&b| b == b',').next_back())
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if last_is_chunked {
            (Framing::Chunked, close)
        } else {
            (Framing::UntilClose, true)
        });
    }
    let mut length = None;
    for value in named("content-length") {
        for item in value.split(|&b| b == b',') {
            let item = item.trim_ascii();
            let n = std::str::from_utf8(item)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "bad Content-Length '{}'",
                        String::from_utf8_lossy(item)
                    ))
                })?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    match length {
        Some(n) => Ok((Framing::Length(n), close)),
        None => {
            close = true;
            Ok((Framing::UntilClose, close))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to a parser in pieces of `step` bytes (as reads would deliver them,
    /// keeping the unconsumed bytes), then the close if `eof`; returns every response.
    fn feed(wire: &[u8], step: usize, head: bool, eof: bool) -> Result<Vec<Response>, ParseError> {
        let mut p = ResponseParser::new(head);
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                let (used, done) = p.parse(&pending)?;
                pending.drain(..used);
                match done {
                    Some(r) => out.push(r),
                    None => break,
                }
            }
        }
        if eof {
            if let Some(r) = p.eof(pending.len())? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The same responses whatever the read boundaries: every split size.
    fn all_splits(wire: &[u8], head: bool, eof: bool) -> Vec<Response> {
        let whole = feed(wire, wire.len(), head, eof).unwrap();
        for step in 1..wire.len() {
            assert_eq!(
                feed(wire, step, head, eof).unwrap(),
                whole,
                "split every {step} bytes"
            );
        }
        whole
    }

    fn ok(status: u16, body: u64) -> Response {
        Response {
            status,
            body_bytes: body,
            close: false,
        }
    }

    #[test]
    fn content_length_bodies_back_to_back() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc";
        assert_eq!(
            all_splits(wire, false, false),
            [ok(200, 5), ok(404, 0), ok(200, 3)]
        );
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1A;name=x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n\
HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Check: 1\r\nX-More: 2\r\n\r\n\
HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(
            all_splits(wire, false, false),
            [ok(200, 31), ok(200, 3), ok(500, 0)]
        );
    }

    #[test]
    fn bodies_without_framing_run_until_the_close() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome bytes until the end";
        let want = Response {
            status: 200,
            body_bytes: 24,
            close: true,
        };
        assert_eq!(all_splits(wire, false, true), [want]);
        // Transfer-Encoding without chunked last: also until the close.
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz";
        assert_eq!(all_splits(wire, false, true)[0].body_bytes, 3);
    }

    #[test]
    fn connection_close_and_http_1_0() {
        let close = |wire: &[u8]| all_splits(wire, false, false)[0].close;
        assert!(close(
            b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(close(
            b"HTTP/1.1 200 OK\r\nConnection: foo, close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!close(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(close(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!close(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn no_body_for_head_204_304_and_interim_responses_are_skipped() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(all_splits(wire, true, false), [ok(200, 0), ok(200, 0)]);
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            all_splits(wire, false, false),
            [ok(204, 0), ok(304, 0), ok(200, 2)]
        );
    }

    #[test]
    fn large_bodies_are_counted_not_kept() {
        // A 64 MiB body in 64 KiB reads: nothing is left unconsumed between reads.
        let mut p = ResponseParser::new(false);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n";
        assert_eq!(p.parse(head).unwrap(), (head.len(), None));
        let chunk = vec![7u8; 65536];
        for i in 0..1024 {
            let (used, done) = p.parse(&chunk).unwrap();
            assert_eq!(used, chunk.len());
            assert_eq!(done.is_some(), i == 1023);
        }
        assert!(p.between_responses());
    }

    #[test]
    fn malformed_responses_are_errors() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        ] {
            let err = feed(wire, wire.len(), false, false);
            assert!(err.is_err(), "{:?} parsed", String::from_utf8_lossy(wire));
        }
        // Cut short by the close: in the head, and in a body.
        assert!(feed(b"HTTP/1.1 200 OK\r\nContent-Len", 5, false, true).is_err());
        assert!(feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
            5,
            false,
            true
        )
        .is_err());
        let chunked_cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        let e = feed(chunked_cut, 7, false, true).unwrap_err();
        assert!(e.to_string().contains("closed in the body"), "{e}");
        // A close between responses is not an error.
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(feed(wire, 3, false, true).unwrap(), [ok(200, 0)]);
    }
}
