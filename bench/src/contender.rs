//! Setting up the comparison benches' coring contenders: each asks for one backend and
//! must get exactly that one.

use std::io;

use coring::BackendKind;

/// A coring runtime on exactly `kind` (an error if it got another).
///
/// # Errors
///
/// The runtime's setup error, or the mismatch.
pub fn coring_runtime(kind: BackendKind) -> io::Result<coring::Runtime> {
    let rt = coring::Builder::new().backend(kind).build()?;
    if rt.backend() != kind {
        return Err(io::Error::other(format!(
            "asked for {kind}, got {}",
            rt.backend_description()
        )));
    }
    Ok(rt)
}

/// Runs `body` on a coring runtime on exactly `kind`.
///
/// # Errors
///
/// The runtime's setup error, or `body`'s.
pub fn on_coring<T>(
    kind: BackendKind,
    body: impl AsyncFnOnce(&coring::Runtime) -> Result<T, String>,
) -> Result<T, String> {
    let rt = coring_runtime(kind).map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(body(&rt))
}

/// Whether a coring runtime on exactly `kind` can be built here; says why not on stderr.
pub fn backend_usable(bench: &str, kind: BackendKind) -> bool {
    match coring_runtime(kind) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("{bench}: skipping coring on {kind}: {e}");
            false
        }
    }
}

/// Refuses to run while `CORING_BACKEND` is set: it would override the backend every coring
/// contender asks for. `instead` names the bench's own option.
///
/// # Errors
///
/// The message to print when it is set.
pub fn refuse_backend_override(instead: &str) -> Result<(), String> {
    match std::env::var("CORING_BACKEND") {
        Ok(v) => Err(format!(
            "CORING_BACKEND={v} is set; it would override every coring contender's backend. \
             Unset it and use {instead} instead."
        )),
        Err(_) => Ok(()),
    }
}
