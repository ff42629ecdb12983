//! `#[coring::test]` and `#[coring::main]`: the attributes run their function on coring
//! runtimes, once per backend for a test.
//!
//! These tests do not use `coring_test!`: the attribute under test is what expands them
//! per backend (`CORING_BACKEND` restricts it, as it restricts the harness).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The backends `#[coring::test]` ran on, in order.
static BACKENDS_SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RUNS: AtomicUsize = AtomicUsize::new(0);

#[coring::test(timeout = 60)]
async fn runs_on_a_runtime_with_io() {
    let listener = coring::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = coring::spawn(async move { listener.accept().await.unwrap().0 });
    let a = coring::net::TcpStream::connect(addr).await.unwrap();
    let b = accept.await.unwrap();
    let (res, _) = a.write_all(b"ping".to_vec()).await;
    res.unwrap();
    let (res, buf) = b.read(Vec::with_capacity(8)).await;
    assert_eq!(res.unwrap(), 4);
    assert_eq!(&buf[..4], b"ping");
}

#[coring::test]
async fn runs_once_per_backend_of_the_platform() {
    let n = RUNS.fetch_add(1, Ordering::SeqCst);
    let backend = coring::__macro_support::current_backend();
    BACKENDS_SEEN.lock().unwrap().push(format!("{backend:?}"));
    // The last run checks the whole list: every backend of the platform, once each, in
    // order (unless CORING_BACKEND names one).
    let expected = coring::__macro_support::test_backends();
    if n + 1 == expected.len() {
        let seen = BACKENDS_SEEN.lock().unwrap().clone();
        let want: Vec<String> = expected.iter().map(|k| format!("{k:?}")).collect();
        assert_eq!(seen, want);
    }
}

// The readiness fallback exists on Unix only; Windows names its one backend instead.
#[cfg(unix)]
#[coring::test(backend = "fallback", entries = 64)]
async fn a_named_backend_only() {
    assert_eq!(
        coring::__macro_support::current_backend(),
        coring::BackendKind::Fallback
    );
}

#[cfg(windows)]
#[coring::test(backend = "iocp", entries = 64)]
async fn a_named_backend_only() {
    assert_eq!(
        coring::__macro_support::current_backend(),
        coring::BackendKind::Iocp
    );
}

#[coring::test]
async fn a_result_test_may_use_question_marks() -> std::io::Result<()> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("coring-macros-{}", std::process::id()));
    let file = coring::fs::File::create(&path).await?;
    let (res, _) = file.write_at(b"abc".to_vec(), 0).await;
    res?;
    file.close().await?;
    coring::fs::remove_file(&path).await
}

#[coring::test]
#[should_panic(expected = "failed on the")]
async fn a_returned_error_fails_the_test_naming_the_backend() -> Result<(), String> {
    Err("boom".to_string())
}

/// Not only `main`: any function without parameters may carry the attribute.
#[coring::main(entries = 32)]
async fn app() -> std::io::Result<u32> {
    coring::time::sleep(std::time::Duration::from_millis(1)).await;
    Ok(7)
}

#[test]
fn main_runs_the_body_and_returns_its_value() {
    assert_eq!(app().unwrap(), 7);
}

/// `pool = N`: the function runs on core 0 of an N-core pool and reaches the others
/// through the handle it is given.
#[coring::main(pool = 2)]
async fn on_a_pool(
    pool: coring::PoolHandle,
) -> Result<Vec<Option<usize>>, coring::task::JoinError> {
    let here = coring::current_core();
    let there = pool
        .submit_to(1, || async { coring::current_core() })
        .await?;
    Ok(vec![here, there])
}

#[test]
fn main_with_a_pool_runs_on_core_0_and_reaches_the_others() {
    assert_eq!(on_a_pool().unwrap(), vec![Some(0), Some(1)]);
}

/// Without the handle parameter, as a plain `main`.
#[coring::main(pool = 1)]
async fn on_a_pool_without_the_handle() -> Option<usize> {
    coring::current_core()
}

#[test]
fn main_with_a_pool_may_take_no_handle() {
    assert_eq!(on_a_pool_without_the_handle(), Some(0));
}

#[coring::main(pool = 1)]
async fn panics_on_the_pool() {
    panic!("boom on core 0");
}

#[test]
#[should_panic(expected = "boom on core 0")]
fn a_panic_in_a_pool_main_is_resumed_on_the_calling_thread() {
    panics_on_the_pool();
}
