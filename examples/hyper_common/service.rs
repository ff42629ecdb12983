//! The runtime-independent part of the hyper service, shared (by `#[path]`) between
//! `examples/hyper_server.rs` (on coring) and `bench/examples/hyper_tokio.rs` (its tokio
//! twin in `bench/scripts/hyper_vs_tokio.sh`), so that both serve `GET /` with exactly the
//! same bytes and headers.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

/// The body type of every response: boxed, so that routes can stream; neither `Send` nor
/// `Sync` needed (coring's files and timers are not `Send`; http_body_util's boxes all
/// want `Send`).
pub type Body = std::pin::Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = std::io::Error>>>;

/// Boxes a body as [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes, Error = std::io::Error> + 'static,
{
    Box::pin(body)
}

/// What `GET /` answers (the benchmark's route).
pub const HELLO: &[u8] = b"Hello, coring!\n";

/// The response to `GET /`.
pub fn hello() -> Response<Body> {
    let mut resp = Response::new(full(HELLO));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A response of `status` with a short text body.
pub fn status(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(text.as_bytes()));
    *resp.status_mut() = status;
    resp
}

/// A whole body of static bytes.
pub fn full(bytes: &'static [u8]) -> Body {
    boxed(Full::new(Bytes::from_static(bytes)).map_err(|never| match never {}))
}
