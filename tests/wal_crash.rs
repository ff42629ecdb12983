//! The `wal` example under crashes: a child process appends with many tasks and is killed
//! (SIGKILL; `TerminateProcess` on Windows) at seeded random moments, 50 times per
//! backend; after each kill the log is recovered here and every record the child
//! acknowledged must be present and intact, every kept record must be exactly what its
//! appender wrote, and each appender's records must be a gap-free prefix of its sequence
//! (recovery keeps nothing after a torn or corrupt record). And in process, on every
//! backend: injected ENOSPC and EIO mid-run fail the affected appends with that error and
//! lose no acknowledged record; a torn or corrupted tail is cut by recovery, and so is the
//! zero tail of space the log reserved ahead (which is never read as a record), with every
//! way of reserving it.

mod common;

#[path = "../examples/wal/log.rs"]
#[allow(dead_code)]
mod log;

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

const KILLS: u32 = 50;
const APPENDERS: u32 = 32;
const SIZE: usize = 200;

/// A small seeded generator (xorshift64*), so a failure replays with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Kills the child at a random moment and returns the acknowledged (appender, seq) pairs.
fn run_and_kill(backend: &str, path: &std::path::Path, rng: &mut Rng) -> Vec<(u32, u64)> {
    let mut child = Command::new(common::example::binary("wal"))
        .args(["run", "--path"])
        .arg(path)
        .args([
            "--appenders",
            &APPENDERS.to_string(),
            "--size",
            &SIZE.to_string(),
        ])
        .env("CORING_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the wal example");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    std::thread::sleep(Duration::from_millis(5 + rng.next() % 120));
    child.kill().expect("kill the wal example");
    child.wait().unwrap();
    let out = reader.join().unwrap();
    let mut acks = Vec::new();
    for line in out.lines() {
        let mut f = line.split(' ');
        // Anything else is a line cut by the kill, or an append that failed: neither was
        // acknowledged.
        if f.next() == Some("ack") {
            let a = f.next().unwrap().parse().unwrap();
            let s = f.next().unwrap().parse().unwrap();
            acks.push((a, s));
        }
    }
    acks
}

/// Recovers the log and checks it against every acknowledgement so far; whether a torn
/// tail (not just reserved zeros) was cut.
fn check(backend: &str, path: &std::path::Path, acked: &HashMap<u32, u64>, round: u32) -> bool {
    let rt = common::runtime(common::BACKENDS[0]);
    let (log, rec) = common::block_on_bounded(&rt, log::Log::open(path)).unwrap();
    log.close();
    let mut kept: HashMap<u32, u64> = HashMap::new();
    for (off, p) in &rec.records {
        assert!(
            p.len() >= 12,
            "{backend} round {round}: short record at {off}"
        );
        let a = u32::from_le_bytes(p[0..4].try_into().unwrap());
        let s = u64::from_le_bytes(p[4..12].try_into().unwrap());
        assert_eq!(
            p,
            &log::payload(a, s, SIZE),
            "{backend} round {round}: record at {off} is not what appender {a} wrote as {s}"
        );
        let next = kept.entry(a).or_insert(0);
        assert_eq!(
            s, *next,
            "{backend} round {round}: appender {a}'s records have a gap or a duplicate at {off}"
        );
        *next += 1;
    }
    for (&a, &max) in acked {
        let have = kept.get(&a).copied().unwrap_or(0);
        assert!(
            have > max,
            "{backend} round {round}: appender {a}'s record {max} was acknowledged but recovery \
             kept only {have} of its records (cut {} bytes)",
            rec.truncated
        );
    }
    rec.torn()
}

fn crash_test(backend: &str, seed: u64) {
    let dir = common::TempDir::new(&format!("wal-crash-{backend}"));
    let path = dir.path("log");
    let mut rng = Rng(seed);
    let mut acked: HashMap<u32, u64> = HashMap::new();
    let (mut torn, mut total_acks) = (0, 0);
    for round in 0..KILLS {
        for (a, s) in run_and_kill(backend, &path, &mut rng) {
            let e = acked.entry(a).or_insert(s);
            *e = (*e).max(s);
            total_acks += 1;
        }
        if check(backend, &path, &acked, round) {
            torn += 1;
        }
    }
    eprintln!(
        "wal crash test on {backend} (seed {seed:#x}): {KILLS} kills, {total_acks} acknowledged \
         appends all recovered, {torn} torn tails cut"
    );
    assert!(total_acks > 0, "{backend}: no append was ever acknowledged");
}

#[test]
fn acknowledged_records_survive_kills() {
    let seed = std::env::var("WAL_CRASH_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x5eed_0016);
    for &kind in common::BACKENDS {
        common::with_watchdog("wal crash test", || crash_test(&kind.to_string(), seed));
    }
}

/// Runs 16 appenders of 40 records each under `rule`, then recovers and checks that every
/// acknowledged record is there, intact, and that the failures carry `kind`.
fn faults_lose_no_acknowledged_record(
    builder: coring::Builder,
    rule: coring::fault::Rule,
    kind: std::io::ErrorKind,
) {
    use std::cell::RefCell;
    use std::rc::Rc;
    let rt = builder.build().unwrap();
    let dir = common::TempDir::new("wal-fault");
    let path = dir.path("log");
    let acked = Rc::new(RefCell::new(Vec::new()));
    let failed = Rc::new(RefCell::new(Vec::new()));
    common::block_on_bounded(&rt, async {
        let (log, _) = log::Log::open(&path).await.unwrap();
        let injected = coring::fault::inject(log.file(), rule);
        let mut tasks = Vec::new();
        for a in 0..16u32 {
            let (log, acked, failed) = (log.clone(), acked.clone(), failed.clone());
            tasks.push(coring::spawn(async move {
                for s in 0..40u64 {
                    match log.append(&log::payload(a, s, SIZE)).await {
                        Ok(_) => acked.borrow_mut().push((a, s)),
                        Err(e) => failed.borrow_mut().push((a, s, e.kind())),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(injected.hits() > 0, "the fault never fired");
        log.close();
    });
    let failed = failed.borrow();
    assert!(!failed.is_empty(), "no append failed");
    assert!(failed.iter().all(|&(_, _, k)| k == kind), "{failed:?}");
    let (log, rec) = common::block_on_bounded(&rt, log::Log::open(&path)).unwrap();
    log.close();
    let kept: std::collections::HashSet<(u32, u64)> = rec
        .records
        .iter()
        .map(|(off, p)| {
            let a = u32::from_le_bytes(p[0..4].try_into().unwrap());
            let s = u64::from_le_bytes(p[4..12].try_into().unwrap());
            assert_eq!(
                p,
                &log::payload(a, s, SIZE),
                "record at {off} is not what was written"
            );
            (a, s)
        })
        .collect();
    for ack in acked.borrow().iter() {
        assert!(kept.contains(ack), "acknowledged record {ack:?} lost");
    }
}

coring_test!(
    enospc_mid_batch_fails_appends_and_loses_no_acknowledged_record,
    |builder| {
        use coring::fault::{Fault, OpKind, Rule, When};
        let rule = Rule::new(Fault::NoSpace)
            .on(OpKind::Write)
            .when(When::Nth(3));
        faults_lose_no_acknowledged_record(builder, rule, std::io::ErrorKind::StorageFull)
    }
);

coring_test!(
    eio_on_a_sync_fails_appends_and_loses_no_acknowledged_record,
    |builder| {
        use coring::fault::{Fault, OpKind, Rule, When};
        let rule = Rule::new(Fault::Io).on(OpKind::Sync).when(When::Nth(4));
        #[cfg(unix)]
        let kind = std::io::Error::from_raw_os_error(libc::EIO).kind();
        #[cfg(windows)]
        let kind = std::io::Error::from_raw_os_error(1117).kind();
        faults_lose_no_acknowledged_record(builder, rule, kind)
    }
);

coring_test!(short_writes_still_make_whole_records, |builder| {
    use coring::fault::{Fault, OpKind, Rule, When};
    // Every write moves at most 100 bytes: batches go out in pieces, records stay whole.
    let rule = Rule::new(Fault::Short(100))
        .on(OpKind::Write)
        .when(When::Always);
    let rt = builder.build().unwrap();
    let dir = common::TempDir::new("wal-short");
    let path = dir.path("log");
    common::block_on_bounded(&rt, async {
        let (log, _) = log::Log::open(&path).await.unwrap();
        let _injected = coring::fault::inject(log.file(), rule);
        for s in 0..20 {
            log.append(&log::payload(0, s, SIZE)).await.unwrap();
        }
        log.close();
    });
    let (log, rec) = common::block_on_bounded(&rt, log::Log::open(&path)).unwrap();
    log.close();
    assert_eq!(rec.records.len(), 20);
});

coring_test!(recovery_cuts_a_torn_or_corrupt_tail, |builder| {
    let rt = builder.build().unwrap();
    let dir = common::TempDir::new("wal-torn");
    let path = dir.path("log");
    let mut good = Vec::new();
    for s in 0..5 {
        good.extend_from_slice(&log::frame(&log::payload(1, s, SIZE)));
    }
    // A torn record (half of it), then a corrupt one after a good one.
    let mut torn = good.clone();
    let next = log::frame(&log::payload(1, 5, SIZE));
    torn.extend_from_slice(&next[..next.len() / 2]);
    std::fs::write(&path, &torn).unwrap();
    let (log, rec) = common::block_on_bounded(&rt, log::Log::open(&path)).unwrap();
    log.close();
    assert_eq!(
        (rec.records.len(), rec.truncated),
        (5, (next.len() / 2) as u64)
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good.len() as u64);
    let mut corrupt = good.clone();
    let mut bad = next.clone();
    bad[20] ^= 0xff;
    corrupt.extend_from_slice(&bad);
    corrupt.extend_from_slice(&log::frame(&log::payload(1, 6, SIZE)));
    std::fs::write(&path, &corrupt).unwrap();
    let (log, rec) = common::block_on_bounded(&rt, log::Log::open(&path)).unwrap();
    // Appends go on after the kept records.
    common::block_on_bounded(&rt, async {
        log.append(&log::payload(1, 5, SIZE)).await.unwrap();
    });
    log.close();
    assert_eq!(
        rec.records.len(),
        5,
        "a record after a corrupt one was kept"
    );
    let (log, rec) = common::block_on_bounded(&rt, log::Log::open(&path)).unwrap();
    log.close();
    assert_eq!(rec.records.len(), 6);
    // What was cut is the space the append reserved ahead, not a record.
    assert!(!rec.torn(), "{rec:?}");
    assert_eq!(rec.truncated, rec.zeros);
});

coring_test!(recovery_reads_a_reserved_zero_tail_as_the_end, |builder| {
    let rt = builder.build().unwrap();
    let dir = common::TempDir::new("wal-zeros");
    let path = dir.path("log");
    let mut good = Vec::new();
    for s in 0..5 {
        good.extend_from_slice(&log::frame(&log::payload(2, s, SIZE)));
    }
    // Reserved space after the records: zeros, which end the log and are cut.
    let mut zeros = good.clone();
    zeros.resize(good.len() + 8192, 0);
    std::fs::write(&path, &zeros).unwrap();
    let (log, rec) = common::block_on_bounded(&rt, log::Log::open(&path)).unwrap();
    log.close();
    assert_eq!(rec.records.len(), 5);
    assert_eq!((rec.truncated, rec.zeros), (8192, 8192));
    assert!(!rec.torn());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good.len() as u64);
    // An intact-looking record after a zero gap (a batch whose first pages never reached
    // the disk) is not kept: nothing after the end is.
    let mut stale = zeros.clone();
    stale.extend_from_slice(&log::frame(&log::payload(2, 9, SIZE)));
    std::fs::write(&path, &stale).unwrap();
    let (log, rec) = common::block_on_bounded(&rt, log::Log::open(&path)).unwrap();
    log.close();
    assert_eq!(rec.records.len(), 5);
    assert!(rec.torn(), "{rec:?}");
    assert_eq!(rec.truncated, (stale.len() - good.len()) as u64);
});

coring_test!(every_preallocation_keeps_every_record, |builder| {
    let rt = builder.build().unwrap();
    let dir = common::TempDir::new("wal-prealloc");
    for prealloc in [
        log::Prealloc::None,
        log::Prealloc::Allocate,
        log::Prealloc::Zeroed,
    ] {
        let path = dir.path(prealloc.name());
        // Small segments, so that the 40 records need several reservations.
        let opts = log::Options {
            prealloc,
            segment: 4096,
        };
        common::block_on_bounded(&rt, async {
            let (log, _) = log::Log::open_with(&path, opts).await.unwrap();
            for s in 0..40 {
                log.append(&log::payload(3, s, SIZE)).await.unwrap();
            }
            if prealloc != log::Prealloc::None {
                // Space is reserved past the last record.
                let len = std::fs::metadata(&path).unwrap().len();
                assert!(len > 40 * (SIZE as u64 + 8), "{prealloc:?}: {len} bytes");
            }
            log.close();
        });
        let (log, rec) = common::block_on_bounded(&rt, log::Log::open_with(&path, opts)).unwrap();
        log.close();
        assert_eq!(rec.records.len(), 40, "{prealloc:?}");
        assert!(!rec.torn(), "{prealloc:?}: {rec:?}");
        for (i, (_, p)) in rec.records.iter().enumerate() {
            assert_eq!(p, &log::payload(3, i as u64, SIZE), "{prealloc:?}");
        }
    }
});

coring_test!(
    a_file_system_that_cannot_allocate_leaves_the_log_unreserved,
    |builder| {
        use coring::fault::{Fault, OpKind, Rule, When};
        // The first operation after the log opens is its first reservation: refused as a file
        // system without fallocate refuses it (EINVAL, as ZFS answers).
        #[cfg(unix)]
        let refused = libc::EINVAL;
        #[cfg(windows)]
        let refused = 87; // ERROR_INVALID_PARAMETER
        let rule = Rule::new(Fault::Error(refused))
            .on(OpKind::Any)
            .when(When::Nth(1));
        let rt = builder.build().unwrap();
        let dir = common::TempDir::new("wal-noalloc");
        let path = dir.path("log");
        common::block_on_bounded(&rt, async {
            let (log, _) = log::Log::open(&path).await.unwrap();
            let injected = coring::fault::inject(log.file(), rule);
            for s in 0..10 {
                log.append(&log::payload(4, s, SIZE)).await.unwrap();
            }
            assert_eq!(injected.hits(), 1);
            log.close();
        });
        // Nothing was reserved: the file ends at the last record.
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, 10 * (SIZE as u64 + log::HEADER as u64));
        let (log, rec) = common::block_on_bounded(&rt, log::Log::open(&path)).unwrap();
        log.close();
        assert_eq!((rec.records.len(), rec.truncated), (10, 0));
    }
);
