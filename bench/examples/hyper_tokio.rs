//! The tokio twin of coring's `examples/hyper_server.rs` for
//! `bench/scripts/hyper_vs_tokio.sh`: the same hyper service (`GET /`, shared source:
//! `examples/hyper_common/service.rs`) on a tokio current_thread runtime, one local task per
//! connection (the body type is not `Send`, as on coring),
//! `TCP_NODELAY`, the same http1 settings (timer, header read timeout).
//! Prints `listening on http://ADDR` on stdout once bound.
//!
//! ```text
//! cargo run --release -p coring-bench --example hyper_tokio -- --addr 127.0.0.1:0
//! ```

#[path = "../../examples/hyper_common/service.rs"]
mod service;

use std::convert::Infallible;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

fn main() -> io::Result<()> {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(v)) => addr = v.parse().map_err(io::Error::other)?,
            _ => return Err(io::Error::other(format!("unexpected argument {arg}"))),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The service's body type is not `Send` (as on coring): connections are local tasks.
    tokio::task::LocalSet::new().block_on(&rt, serve(addr))
}

async fn serve(addr: SocketAddr) -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "listening on http://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    loop {
        let (stream, _) = listener.accept().await?;
        // A connection the peer already reset fails this; hyper will find out.
        let _ = stream.set_nodelay(true);
        tokio::task::spawn_local(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service_fn(route));
            if let Err(e) = conn.await {
                eprintln!("hyper_tokio: {e}");
            }
        });
    }
}

async fn route(req: Request<Incoming>) -> Result<Response<service::Body>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => service::hello(),
        _ => service::status(StatusCode::NOT_FOUND, "not found\n"),
    })
}
