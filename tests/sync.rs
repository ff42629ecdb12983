//! Channels on one core (local and Send flavours): order, backpressure, closing.

mod common;

use std::cell::Cell;
use std::rc::Rc;

use coring::sync::{local, mpsc, oneshot, TryRecvError, TrySendError};

coring_test!(local_mpsc_backpressure_order_and_close, async {
    let (tx, mut rx) = local::mpsc::channel::<u32>(4);
    let sent = Rc::new(Cell::new(0));
    let producer = {
        let sent = sent.clone();
        coring::spawn(async move {
            for i in 0..100 {
                tx.send(i).await.unwrap();
                sent.set(i + 1);
            }
        })
    };
    coring::task::yield_now().await;
    // The producer stopped at capacity.
    assert_eq!(sent.get(), 4);
    let mut got = Vec::new();
    while let Some(v) = rx.recv().await {
        got.push(v);
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    producer.await.unwrap();
    let (tx, rx) = local::mpsc::channel::<u32>(1);
    drop(rx);
    assert_eq!(tx.send(1).await.unwrap_err().0, 1);
    assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
});

coring_test!(local_oneshot, async {
    let (tx, rx) = local::oneshot::channel::<String>();
    drop(coring::spawn(async move { tx.send("hi".into()).unwrap() }));
    assert_eq!(rx.await.unwrap(), "hi");
    let (tx, rx) = local::oneshot::channel::<u8>();
    drop(tx);
    assert!(rx.await.is_err());
    let (tx, rx) = local::oneshot::channel::<u8>();
    drop(rx);
    assert_eq!(tx.send(3), Err(3));
});

coring_test!(send_mpsc_and_oneshot_report_closing, async {
    let (tx, mut rx) = mpsc::channel::<u8>(2);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
    assert_eq!(rx.try_recv(), Ok(1));
    let tx2 = tx.clone();
    drop(tx);
    tx2.send(4).await.unwrap();
    drop(tx2);
    assert_eq!(rx.recv().await, Some(2));
    assert_eq!(rx.recv().await, Some(4));
    assert_eq!(rx.recv().await, None);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    let (tx, rx) = mpsc::channel::<u8>(1);
    drop(rx);
    assert!(tx.is_closed());
    let err = tx.send(9).await.unwrap_err();
    assert_eq!(err.0, 9);
    assert!(err.to_string().contains("receiver was dropped"));
    let (tx, rx) = oneshot::channel::<u8>();
    drop(tx);
    assert_eq!(rx.await, Err(oneshot::RecvError));
});

// Blocking receives accept "no deadline" (Duration::MAX) without overflowing.
#[test]
fn blocking_receive_without_deadline() {
    let (tx, mut rx) = oneshot::channel::<u8>();
    std::thread::spawn(move || tx.send(5).unwrap());
    assert_eq!(rx.recv_blocking(std::time::Duration::MAX), Ok(5));
    let (tx, mut rx) = mpsc::channel::<u8>(1);
    std::thread::spawn(move || tx.try_send(6).unwrap());
    assert_eq!(rx.recv_blocking(std::time::Duration::MAX), Ok(Some(6)));
}
