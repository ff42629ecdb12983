//! coring's futures and streams with the `futures` crate's combinators: `Stream` for
//! intervals, channel receivers and listeners' connections; `select!` and `join!` over
//! coring futures.

mod common;

use std::time::Duration;

use coring::net::{TcpListener, TcpStream};
use futures::{FutureExt, StreamExt};

coring_test!(interval_is_a_stream_of_ticks, async {
    let start = std::time::Instant::now();
    let ticks: Vec<_> = coring::time::interval(Duration::from_millis(2))
        .take(3)
        .collect()
        .await;
    assert_eq!(ticks.len(), 3);
    // Scheduled instants: one period apart (no tick is skipped unless late, and then
    // the next is still on the grid).
    for w in ticks.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(2), "{gap:?}");
        assert_eq!(
            gap.as_nanos() % 2_000_000,
            0,
            "{gap:?} is off the period's grid"
        );
    }
    assert!(ticks[0] >= start);
});

coring_test!(interval_tick_dropped_mid_wait_is_the_next_tick, async {
    let mut iv = coring::time::interval(Duration::from_millis(20));
    let first = iv.tick().await;
    // The tick's wait starts, then the ready branch wins and drops it (unless this task
    // was held up past the tick, when the tick wins: either way the second tick is the
    // one scheduled after the first, not one period after the dropped wait).
    let won = futures::select_biased! {
        t = iv.tick().fuse() => Some(t),
        _ = futures::future::ready(()).fuse() => None,
    };
    let second = match won {
        Some(t) => t,
        None => iv.tick().await,
    };
    assert_eq!(second - first, Duration::from_millis(20));
});

coring_test!(channel_receivers_are_streams, async {
    let (tx, rx) = coring::sync::local::channel::<u32>(4);
    let producer = coring::spawn(async move {
        for i in 0..10 {
            tx.send(i).await.unwrap();
        }
    });
    let got: Vec<u32> = rx.collect().await;
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    producer.await.unwrap();

    // The cross-thread flavour, fed from a plain thread.
    let (tx, rx) = coring::sync::mpsc::channel::<u32>(8);
    let t = std::thread::spawn(move || {
        for i in 0..5 {
            tx.try_send(i).unwrap();
        }
    });
    let got: Vec<u32> = rx.map(|v| v * 10).collect().await;
    assert_eq!(got, vec![0, 10, 20, 30, 40]);
    t.join().unwrap();
});

coring_test!(incoming_connections_are_a_stream, async {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients = coring::spawn(async move {
        let mut kept = Vec::new();
        for _ in 0..3 {
            kept.push(TcpStream::connect(addr).await.unwrap());
        }
        kept
    });
    let accepted: Vec<_> = listener.incoming().take(3).collect().await;
    let clients = clients.await.unwrap();
    let mut peers: Vec<_> = accepted.into_iter().map(|r| r.unwrap().1).collect();
    let mut locals: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    peers.sort();
    locals.sort();
    assert_eq!(peers, locals);
});

coring_test!(select_and_join_from_futures_drive_coring_futures, async {
    let (a, b) = futures::join!(
        async {
            coring::time::sleep(Duration::from_millis(2)).await;
            1
        },
        coring::spawn(async { 2 }),
    );
    assert_eq!((a, b.unwrap()), (1, 2));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Nobody connects: the timer wins, and the dropped accept loses nothing.
    let won = futures::select! {
        _ = listener.accept().fuse() => "accept",
        _ = coring::time::sleep(Duration::from_millis(5)).fuse() => "timer",
    };
    assert_eq!(won, "timer");
    let addr = listener.local_addr().unwrap();
    let c = coring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (s, _) = listener.accept().await.unwrap();
    let c = c.await.unwrap();
    assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
});
