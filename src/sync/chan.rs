//! The one channel behind all four in this module: what it holds, who waits on each side,
//! who is still there, and every operation on that, written once.
//!
//! The channels differ only in
//! - where the [`State`] lives: in a `RefCell` for [`super::local`], in a [`SyncChan`] (a
//!   mutex, plus a condition variable for a receiver blocking a thread) for
//!   [`super::mpsc`] and [`super::oneshot`]; the [`Chan`] trait is that difference;
//! - what it holds ([`Queue`]): a [`Bounded`] queue with a line of senders waiting for
//!   room for an mpsc channel, an `Option` for a oneshot, whose only sender sends once
//!   and never waits.
//!
//! Every operation decides under the lock and wakes after releasing it, since a waker may
//! run code that uses the channel.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::waiters::{wake, Waiters};
use super::{SendError, TryRecvError, TrySendError};

/// What a channel holds between send and receive, and the senders waiting for room.
pub(super) trait Queue {
    type Item;
    /// What [`close`](Queue::close) takes out, to be dropped once the lock is released.
    type Drained;

    /// Queues `value`, or gives it back when there is no room.
    fn push(&mut self, value: Self::Item) -> Result<(), Self::Item>;

    /// The next value and, since taking it frees a place, the waiting sender to wake.
    fn pop(&mut self) -> Option<(Self::Item, Option<Waker>)>;

    /// Empties the queue for good (the receiver is gone): what it held, and every waiting
    /// sender, to be woken to find the channel closed.
    fn close(&mut self) -> (Self::Drained, Vec<Waker>);
}

/// A queue whose senders may wait for room: an mpsc channel's ([`Bounded`]); a oneshot's
/// only sender never waits.
pub(super) trait SenderLine: Queue {
    fn waiters(&mut self) -> &mut Waiters;
}

/// An mpsc channel's values, at most `capacity` of them, and the line of senders waiting
/// for room (see [`Waiters`] for who is woken when).
pub(super) struct Bounded<T> {
    values: VecDeque<T>,
    capacity: usize,
    waiters: Waiters,
}

impl<T> Bounded<T> {
    pub(super) fn new(capacity: usize) -> Bounded<T> {
        Bounded {
            values: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            waiters: Waiters::new(),
        }
    }

    /// Values queued right now.
    pub(super) fn len(&self) -> usize {
        self.values.len()
    }
}

impl<T> Queue for Bounded<T> {
    type Item = T;
    type Drained = VecDeque<T>;

    fn push(&mut self, value: T) -> Result<(), T> {
        if self.values.len() >= self.capacity {
            return Err(value);
        }
        self.values.push_back(value);
        Ok(())
    }

    /// No allocation: at most one waker per receive.
    fn pop(&mut self) -> Option<(T, Option<Waker>)> {
        let v = self.values.pop_front()?;
        Some((v, self.waiters.wake_one()))
    }

    fn close(&mut self) -> (VecDeque<T>, Vec<Waker>) {
        (std::mem::take(&mut self.values), self.waiters.wake_all())
    }
}

impl<T> SenderLine for Bounded<T> {
    fn waiters(&mut self) -> &mut Waiters {
        &mut self.waiters
    }
}

/// A oneshot's value: room for one, and no sender ever waits (its only send is a
/// `try_send`).
impl<T> Queue for Option<T> {
    type Item = T;
    type Drained = Option<T>;

    fn push(&mut self, value: T) -> Result<(), T> {
        if self.is_some() {
            return Err(value);
        }
        *self = Some(value);
        Ok(())
    }

    fn pop(&mut self) -> Option<(T, Option<Waker>)> {
        self.take().map(|v| (v, None))
    }

    fn close(&mut self) -> (Option<T>, Vec<Waker>) {
        (self.take(), Vec::new())
    }
}

/// A channel's state, behind its lock (or `RefCell`).
pub(super) struct State<Q> {
    queue: Q,
    /// The receiving task's waker, while it waits for a value.
    rx_waker: Option<Waker>,
    /// Whether the receiver blocks a thread in [`SyncChan::recv_blocking`]: only then does
    /// a send need the condition variable, whose notify is a syscall.
    rx_blocking: bool,
    senders: usize,
    receiver_alive: bool,
}

/// Whom to wake on the receiving side: taken under the lock, woken after it.
#[must_use = "wake the receiver with RxWake::wake once the lock is released"]
struct RxWake {
    task: Option<Waker>,
    thread: bool,
}

impl RxWake {
    /// Wakes the receiver's task or thread; call it with the lock released.
    fn wake<C: Chan + ?Sized>(self, chan: &C) {
        if self.thread {
            chan.notify_thread();
        }
        wake(self.task);
    }
}

impl<Q: Queue> State<Q> {
    /// A channel with one sender and one receiver, holding `queue`.
    pub(super) fn new(queue: Q) -> State<Q> {
        State {
            queue,
            rx_waker: None,
            rx_blocking: false,
            senders: 1,
            receiver_alive: true,
        }
    }

    /// What the channel holds.
    pub(super) fn queue(&self) -> &Q {
        &self.queue
    }

    /// Queues `value` if the receiver is there and there is room.
    fn push(&mut self, value: Q::Item) -> Result<RxWake, TrySendError<Q::Item>> {
        if !self.receiver_alive {
            return Err(TrySendError::Closed(value));
        }
        self.queue.push(value).map_err(TrySendError::Full)?;
        Ok(self.take_receiver())
    }

    /// The next value, and a waiting sender to wake (see [`Queue::pop`]).
    fn pop(&mut self) -> Result<(Q::Item, Option<Waker>), TryRecvError> {
        match self.queue.pop() {
            Some(got) => Ok(got),
            None if self.senders == 0 => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Takes the receiver's waker, for a send or the last sender's drop to wake it.
    fn take_receiver(&mut self) -> RxWake {
        RxWake {
            task: self.rx_waker.take(),
            thread: self.rx_blocking,
        }
    }

    /// Registers the receiving task, keeping the waker it has if that wakes the same task.
    fn wait_for_value(&mut self, waker: &Waker) {
        match &self.rx_waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.rx_waker = Some(waker.clone()),
        }
    }
}

/// A channel as its handles see it: its [`State`] behind a lock, and every operation on
/// it (the provided methods), so that each is written once for all four channels.
pub(super) trait Chan {
    type Item;
    type Queue: Queue<Item = Self::Item>;

    /// Locks the state; the guard must be dropped before anything is woken.
    fn lock(&self) -> impl DerefMut<Target = State<Self::Queue>> + '_;

    /// Wakes a thread blocked in [`SyncChan::recv_blocking`].
    fn notify_thread(&self);

    /// Sends `value`, waiting in line while the channel is full; gives `value` back if
    /// the receiver is gone.
    fn send(&self, value: Self::Item) -> SendFuture<'_, Self>
    where
        Self::Queue: SenderLine,
    {
        SendFuture {
            chan: self,
            value: Some(value),
            key: None,
        }
    }

    /// Sends `value` if there is room right now.
    #[inline]
    fn try_send(&self, value: Self::Item) -> Result<(), TrySendError<Self::Item>> {
        // The guard is a temporary of this statement: the lock is released before the wake.
        let rx = self.lock().push(value)?;
        rx.wake(self);
        Ok(())
    }

    /// The next value, `Ready(None)` once the channel is empty and every sender is gone,
    /// or `Pending` with the task registered to be woken.
    #[inline]
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.lock();
        let (v, sender) = match st.pop() {
            Ok(got) => got,
            Err(TryRecvError::Closed) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                st.wait_for_value(cx.waker());
                return Poll::Pending;
            }
        };
        drop(st);
        wake(sender);
        Poll::Ready(Some(v))
    }

    /// Takes a value if one is queued.
    #[inline]
    fn try_recv(&self) -> Result<Self::Item, TryRecvError> {
        // The guard is a temporary of this statement: the lock is released before the wake.
        let (v, sender) = self.lock().pop()?;
        wake(sender);
        Ok(v)
    }

    /// Whether the receiver is gone.
    fn is_closed(&self) -> bool {
        !self.lock().receiver_alive
    }
}

/// Makes the handles of a new channel (whose [`State`] counts one sender): `chan` is an
/// `Rc` or an `Arc` of it.
pub(super) fn handles<P: Deref<Target: Chan> + Clone>(chan: P) -> (SenderRef<P>, ReceiverRef<P>) {
    (SenderRef { chan: chan.clone() }, ReceiverRef { chan })
}

/// A sender handle's reference to its channel, counted from creation to drop: when the
/// last one goes, the receiver is woken to find the channel closed.
pub(super) struct SenderRef<P: Deref<Target: Chan>> {
    chan: P,
}

impl<P: Deref<Target: Chan>> Deref for SenderRef<P> {
    type Target = P::Target;
    fn deref(&self) -> &P::Target {
        &self.chan
    }
}

impl<P: Deref<Target: Chan> + Clone> Clone for SenderRef<P> {
    fn clone(&self) -> Self {
        self.chan.lock().senders += 1;
        SenderRef {
            chan: self.chan.clone(),
        }
    }
}

impl<P: Deref<Target: Chan>> Drop for SenderRef<P> {
    #[inline]
    fn drop(&mut self) {
        let mut st = self.chan.lock();
        st.senders -= 1;
        if st.senders == 0 {
            let rx = st.take_receiver();
            drop(st);
            rx.wake(&*self.chan);
        }
    }
}

/// The receiver handle's reference to its channel. When it goes, what was queued is
/// dropped (outside the lock: a value's drop may use the channel) and every waiting sender
/// is woken to find the channel closed.
pub(super) struct ReceiverRef<P: Deref<Target: Chan>> {
    chan: P,
}

impl<P: Deref<Target: Chan>> Deref for ReceiverRef<P> {
    type Target = P::Target;
    fn deref(&self) -> &P::Target {
        &self.chan
    }
}

impl<P: Deref<Target: Chan>> Drop for ReceiverRef<P> {
    #[inline]
    fn drop(&mut self) {
        let mut st = self.chan.lock();
        st.receiver_alive = false;
        let (queued, senders) = st.queue.close();
        drop(st);
        drop(queued);
        for w in senders {
            w.wake();
        }
    }
}

/// The local channels: a `RefCell` on one core, where no thread ever blocks.
impl<Q: Queue> Chan for RefCell<State<Q>> {
    type Item = Q::Item;
    type Queue = Q;

    fn lock(&self) -> impl DerefMut<Target = State<Q>> + '_ {
        self.borrow_mut()
    }

    /// Never called: a local channel has no `recv_blocking`, so no thread waits on it.
    fn notify_thread(&self) {}
}

/// The state of a channel used across threads, and what a receiver blocking a plain
/// thread waits on.
pub(super) struct SyncChan<Q> {
    state: Mutex<State<Q>>,
    cond: Condvar,
}

impl<Q: Queue> SyncChan<Q> {
    pub(super) fn new(state: State<Q>) -> SyncChan<Q> {
        SyncChan {
            state: Mutex::new(state),
            cond: Condvar::new(),
        }
    }

    fn guard(&self) -> MutexGuard<'_, State<Q>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks the calling thread (outside any runtime) for the next value, at most
    /// `timeout`; `Ok(None)` once every sender is gone, `Err(Empty)` if the timeout passed
    /// first.
    ///
    /// # Panics
    ///
    /// On a coring runtime thread (see [`super::forbid_blocking_on_runtime`]); `what`
    /// names the caller's API in the message.
    #[track_caller]
    pub(super) fn recv_blocking(
        &self,
        what: &str,
        timeout: Duration,
    ) -> Result<Option<Q::Item>, TryRecvError> {
        super::forbid_blocking_on_runtime(what);
        // A timeout too large to add to now (Duration::MAX) means no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.guard();
        let outcome = loop {
            match st.pop() {
                Ok(got) => break Ok(Some(got)),
                Err(TryRecvError::Closed) => break Ok(None),
                Err(TryRecvError::Empty) => {}
            }
            st.rx_blocking = true;
            st = match deadline {
                None => self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break Err(TryRecvError::Empty);
                    }
                    self.cond
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        };
        st.rx_blocking = false;
        drop(st);
        Ok(outcome?.map(|(v, sender)| {
            wake(sender);
            v
        }))
    }
}

impl<Q: Queue> Chan for SyncChan<Q> {
    type Item = Q::Item;
    type Queue = Q;

    fn lock(&self) -> impl DerefMut<Target = State<Q>> + '_ {
        self.guard()
    }

    fn notify_thread(&self) {
        // One receiver, so at most one thread waits.
        self.cond.notify_one();
    }
}

/// A pending [`Chan::send`].
pub(super) struct SendFuture<'a, C: Chan<Queue: SenderLine> + ?Sized> {
    chan: &'a C,
    value: Option<C::Item>,
    /// The send's slot in the channel's line of waiting senders ([`Waiters`]), once it
    /// has had to wait. The send gives it back when it completes, under the lock it holds
    /// then, or when it is dropped before completing, passing on a wake it had.
    key: Option<usize>,
}

/// Nothing is pinned: the value is only ever moved.
impl<C: Chan<Queue: SenderLine> + ?Sized> Unpin for SendFuture<'_, C> {}

impl<C: Chan<Queue: SenderLine> + ?Sized> Future for SendFuture<'_, C> {
    type Output = Result<(), SendError<C::Item>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut st = this.chan.lock();
        let v = this.value.take().expect("send polled after completion");
        // Looking for room and registering happen under one lock, as do a receive's pop
        // and wake: a receive cannot slip between them unseen.
        let sent = match st.push(v) {
            Err(TrySendError::Full(v)) => {
                this.value = Some(v);
                st.queue.waiters().wait(&mut this.key, cx.waker());
                return Poll::Pending;
            }
            sent => sent,
        };
        if let Some(key) = this.key.take() {
            st.queue.waiters().finish(key);
        }
        drop(st);
        Poll::Ready(match sent {
            Ok(rx) => {
                rx.wake(this.chan);
                Ok(())
            }
            Err(e) => Err(SendError(e.into_inner())),
        })
    }
}

impl<C: Chan<Queue: SenderLine> + ?Sized> Drop for SendFuture<'_, C> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // The guard is a temporary of this statement: released before the wake.
            let next = self.chan.lock().queue.waiters().cancel(key);
            wake(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sync::{mpsc, oneshot};

    fn assert_send<T: Send>(_: &T) {}

    /// The thread-safe channels' futures are `Send`, though they share their code with the
    /// local channels.
    #[test]
    fn thread_safe_futures_are_send() {
        let (tx, mut rx) = mpsc::channel::<u8>(1);
        assert_send(&tx.send(1));
        assert_send(&rx.recv());
        let (_tx, rx) = oneshot::channel::<u8>();
        assert_send(&rx);
    }
}
