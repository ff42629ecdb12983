//! `coring::fault` (feature `fault-injection`): injected errors, short transfers and delays
//! hit the operations a rule names, on every backend, and nothing else.

mod common;

use std::rc::Rc;
use std::time::{Duration, Instant};

use coring::fault::{inject, Fault, OpKind, Rule, When};
use coring::fs::File;
use coring::net::{TcpListener, TcpStream};

/// EIO, or on Windows ERROR_IO_DEVICE.
#[cfg(unix)]
const EIO: i32 = libc::EIO;
/// EIO, or on Windows ERROR_IO_DEVICE.
#[cfg(windows)]
const EIO: i32 = 1117;

async fn scratch(dir: &common::TempDir, name: &str, data: &[u8]) -> File {
    let path = dir.path(name);
    std::fs::write(&path, data).unwrap();
    coring::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .await
        .unwrap()
}

coring_test!(
    the_nth_write_fails_with_enospc_and_the_others_succeed,
    async {
        let dir = common::TempDir::new("fault-nth");
        let f = scratch(&dir, "f", b"").await;
        let rule = inject(
            &f,
            Rule::new(Fault::NoSpace)
                .on(OpKind::Write)
                .when(When::Nth(2)),
        );
        f.write_all_at(b"one".to_vec(), 0).await.0.unwrap();
        // Reads are not counted by a write rule.
        let (r, _) = f.read_at(Vec::with_capacity(8), 0).await;
        r.unwrap();
        let err = f.write_all_at(b"two".to_vec(), 3).await.0.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
        f.write_all_at(b"333".to_vec(), 3).await.0.unwrap();
        assert_eq!(rule.hits(), 1);
        assert_eq!(std::fs::read(dir.path("f")).unwrap(), b"one333");
    }
);

coring_test!(
    io_errors_hit_reads_and_syncs_of_the_named_file_only,
    async {
        let dir = common::TempDir::new("fault-eio");
        let f = scratch(&dir, "f", b"data").await;
        let other = scratch(&dir, "g", b"data").await;
        let reads = inject(&f, Rule::new(Fault::Io).on(OpKind::Read));
        let syncs = inject(&f, Rule::new(Fault::Io).on(OpKind::Sync));
        let (r, _) = f.read_at(Vec::with_capacity(4), 0).await;
        assert_eq!(r.unwrap_err().raw_os_error(), Some(EIO));
        assert_eq!(f.sync_data().await.unwrap_err().raw_os_error(), Some(EIO));
        // Another file is untouched, and so are writes of this one.
        let (r, buf) = other.read_at(Vec::with_capacity(4), 0).await;
        assert_eq!(&buf[..r.unwrap()], b"data");
        other.sync_all().await.unwrap();
        f.write_all_at(b"DA".to_vec(), 0).await.0.unwrap();
        assert_eq!((reads.hits(), syncs.hits()), (1, 1));
        // Lifting the rules lifts the faults.
        drop((reads, syncs));
        let (r, buf) = f.read_at(Vec::with_capacity(4), 0).await;
        assert_eq!(&buf[..r.unwrap()], b"DAta");
        f.sync_data().await.unwrap();
    }
);

coring_test!(short_transfers_really_move_fewer_bytes, async {
    let dir = common::TempDir::new("fault-short");
    let f = scratch(&dir, "f", b"").await;
    let rule = inject(&f, Rule::new(Fault::Short(3)).on(OpKind::Write));
    let (r, _) = f.write_at(b"abcdefgh".to_vec(), 0).await;
    assert_eq!(r.unwrap(), 3);
    // write_all_at goes on after each short write: everything arrives, 3 bytes at a time.
    f.write_all_at(b"0123456789".to_vec(), 3).await.0.unwrap();
    assert_eq!(rule.hits(), 5);
    drop(rule);
    assert_eq!(std::fs::read(dir.path("f")).unwrap(), b"abc0123456789");
    let rule = inject(&f, Rule::new(Fault::Short(4)).on(OpKind::Read));
    let (r, buf) = f.read_at(Vec::with_capacity(13), 0).await;
    assert_eq!(&buf[..r.unwrap()], b"abc0");
    let (r, buf) = f.read_exact_at(Vec::with_capacity(13), 0).await;
    r.unwrap();
    assert_eq!(&buf[..], b"abc0123456789");
    assert_eq!(rule.hits(), 5);
});

coring_test!(a_delayed_operation_completes_late, async {
    let dir = common::TempDir::new("fault-delay");
    let f = scratch(&dir, "f", b"late").await;
    let _rule = inject(
        &f,
        Rule::new(Fault::Delay(Duration::from_millis(60))).when(When::Nth(1)),
    );
    let start = Instant::now();
    let (r, buf) = f.read_at(Vec::with_capacity(4), 0).await;
    assert_eq!(&buf[..r.unwrap()], b"late");
    assert!(start.elapsed() >= Duration::from_millis(60));
    // Only the first: the next one runs at once (no timing assertion, just that it works).
    let (r, _) = f.read_at(Vec::with_capacity(4), 0).await;
    r.unwrap();
});

coring_test!(a_dropped_delayed_operation_never_runs, async {
    let dir = common::TempDir::new("fault-delay-drop");
    let f = scratch(&dir, "f", b"").await;
    let rule = inject(
        &f,
        Rule::new(Fault::Delay(Duration::from_millis(30))).when(When::Nth(1)),
    );
    let write = coring::time::timeout(Duration::from_millis(5), f.write_at(b"x".to_vec(), 0));
    assert!(write.await.is_err(), "the delayed write finished early");
    coring::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(rule.hits(), 1);
    assert_eq!(
        std::fs::read(dir.path("f")).unwrap(),
        b"",
        "a dropped delayed write ran"
    );
});

coring_test!(seeded_chances_replay_exactly, async {
    let dir = common::TempDir::new("fault-chance");
    let f = Rc::new(scratch(&dir, "f", &[7u8; 64]).await);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let rule = inject(
            &*f,
            Rule::new(Fault::Io)
                .on(OpKind::Read)
                .when(When::Chance { p: 0.3, seed: 42 }),
        );
        let mut failed = Vec::new();
        for i in 0..100 {
            let (r, _) = f.read_at(Vec::with_capacity(8), 0).await;
            if r.is_err() {
                failed.push(i);
            }
        }
        assert_eq!(rule.hits(), failed.len() as u64);
        runs.push(failed);
    }
    assert_eq!(
        runs[0], runs[1],
        "the same seed must hit the same operations"
    );
    assert!(
        (10..60).contains(&runs[0].len()),
        "{} of 100 hit at p = 0.3",
        runs[0].len()
    );
});

coring_test!(socket_sends_fail_from_the_nth_on, async {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = coring::spawn(async move { TcpStream::connect(addr).await });
    let (server, _) = listener.accept().await.unwrap();
    let client = connect.await.unwrap().unwrap();
    let rule = inject(
        &client,
        Rule::new(Fault::Io).on(OpKind::Write).when(When::From(2)),
    );
    client.write_all(b"ok".to_vec()).await.0.unwrap();
    for _ in 0..3 {
        let err = client.write(b"no".to_vec()).await.0.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EIO));
    }
    assert_eq!(rule.hits(), 3);
    let (r, buf) = server.read(Vec::with_capacity(8)).await;
    assert_eq!(&buf[..r.unwrap()], b"ok");
});

#[test]
fn misuse_panics_with_advice() {
    let rt = common::runtime(common::BACKENDS[0]);
    let dir = common::TempDir::new("fault-misuse");
    let f = common::block_on_bounded(&rt, scratch(&dir, "f", b""));
    let short = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        inject(&f, Rule::new(Fault::Short(0)))
    }));
    let msg = short.unwrap_err();
    assert!(msg
        .downcast_ref::<&str>()
        .is_some_and(|m| m.contains("Short(1)")));
    let chance = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        inject(
            &f,
            Rule::new(Fault::Io).when(When::Chance { p: 2.0, seed: 1 }),
        )
    }));
    let msg = chance.unwrap_err();
    let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("0.0 to 1.0"), "{text}");
}
