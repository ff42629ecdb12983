//! `Metrics`: the counters, the ring's batch histograms and the per-opcode latency move as
//! a known workload says, on every backend. No assertion on how long anything took.

mod common;

use std::time::{Duration, Instant};

use coring::{BackendKind, Histogram, Metrics};

/// Nops issued by `nops_move_the_counters`: 8 tasks of 25.
const TASKS: u64 = 8;
const PER_TASK: u64 = 25;

/// The histogram's buckets add up to its count.
fn consistent(h: &Histogram) {
    assert_eq!(h.buckets().iter().sum::<u64>(), h.count(), "{h:?}");
    assert!(h.count() == 0 || h.max() >= h.quantile(0.5), "{h:?}");
}

fn nop_count(m: &Metrics) -> u64 {
    m.op_latency("nop").map_or(0, Histogram::count)
}

coring_test!(nops_move_the_counters, |builder| {
    // Every operation timed, so the nop histogram counts exactly the nops.
    let rt = builder
        .op_latency_sample(1)
        .time_parks(true)
        .build()
        .unwrap();
    let backend = rt.backend();
    let outside = Instant::now();
    let (before, after) = common::block_on_bounded(&rt, async {
        let before = coring::metrics();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                coring::spawn(async {
                    for _ in 0..PER_TASK {
                        coring::nop().await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        (before, coring::metrics())
    });
    let outside = outside.elapsed();
    let nops = TASKS * PER_TASK;
    // Every task polled at least once, and the main future too.
    assert!(
        after.tasks_polled - before.tasks_polled > TASKS,
        "{after:?}"
    );
    assert!(
        after.ops_completed - before.ops_completed >= nops,
        "{after:?}"
    );
    assert_eq!(nop_count(&after) - nop_count(&before), nops, "{after:?}");
    // One batch sample per kernel entry, one reap sample per collection.
    assert_eq!(after.enter_batch.count(), after.enters, "{after:?}");
    assert!(after.reap_batch.count() >= after.enters, "{after:?}");
    consistent(&after.enter_batch);
    consistent(&after.reap_batch);
    for o in &after.op_latency {
        consistent(&o.nanos);
    }
    // Every completion was collected by some reap or completed during submission (nops
    // are single-shot: one completion each).
    assert_eq!(
        after.reap_batch.sum() + after.ops_inline,
        after.ops_completed,
        "{after:?}"
    );
    if backend == BackendKind::IoUring {
        // Every nop reached the kernel as an SQE through some entry.
        let queued = after.ops_submitted - after.ops_inline;
        assert!(after.enter_batch.sum() >= queued, "{after:?}");
    }
    assert_eq!(after.cq_overflow, 0);
    // The runtime's own clock readings lie within what the caller saw.
    assert!(
        after.time_running + after.time_parked <= outside,
        "{after:?}"
    );
    // The value crosses threads (a pool gathers every core's).
    std::thread::spawn(move || after.clone()).join().unwrap();
});

coring_test!(parking_is_counted, |builder| {
    let rt = builder.time_parks(true).build().unwrap();
    let backend = rt.backend();
    common::block_on_bounded(&rt, async {
        coring::time::sleep(Duration::from_millis(5)).await;
    });
    let m = rt.metrics();
    assert!(m.parks >= 1, "{m:?}");
    assert!(m.time_parked > Duration::ZERO, "{m:?}");
    assert_eq!(m.enter_batch.count(), m.enters, "{m:?}");

    // Untimed (the default): the park counts, its time does not.
    let rt = coring::Builder::new().backend(backend).build().unwrap();
    common::block_on_bounded(&rt, async {
        coring::time::sleep(Duration::from_millis(5)).await;
    });
    let m = rt.metrics();
    assert!(m.parks >= 1, "{m:?}");
    assert_eq!(
        (m.time_parked, m.time_running),
        (Duration::ZERO, Duration::ZERO)
    );
});

coring_test!(latency_is_sampled_one_in_n, |builder| {
    let rt = builder.op_latency_sample(4).build().unwrap();
    common::block_on_bounded(&rt, async {
        for _ in 0..10 {
            coring::nop().await.unwrap();
        }
    });
    let m = rt.metrics();
    // Nothing but the nops went through submission: the 1st, 5th and 9th were timed.
    assert_eq!(m.ops_submitted, 10, "{m:?}");
    assert_eq!(nop_count(&m), 3, "{m:?}");

    let off = coring::Builder::new()
        .backend(rt.backend())
        .op_latency_sample(0)
        .build()
        .unwrap();
    common::block_on_bounded(&off, async {
        for _ in 0..10 {
            coring::nop().await.unwrap();
        }
    });
    assert!(off.metrics().op_latency.is_empty(), "{:?}", off.metrics());
});

// Not per backend: no runtime exists in this test.
#[test]
fn metrics_outside_a_runtime_panics_with_advice() {
    let err = std::panic::catch_unwind(coring::metrics).unwrap_err();
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap();
    assert!(msg.contains("outside a coring runtime"), "{msg}");
}
