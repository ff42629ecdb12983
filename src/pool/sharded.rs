//! One instance of a service per core ([`Sharded`]), reachable on its core without locks
//! or atomics, and from anywhere through the pool.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Gather, PoolHandle, Submit};
use crate::task::JoinError;

thread_local! {
    /// This core's instances, by [`Sharded`] id. Only a pool's core threads fill it.
    static INSTANCES: RefCell<HashMap<u64, Rc<dyn Any>>> = RefCell::new(HashMap::new());
}

/// Drops the calling core's instances (its runtime is about to stop).
pub(super) fn drop_local_instances() {
    let all = INSTANCES.with(|m| std::mem::take(&mut *m.borrow_mut()));
    // Dropped outside the borrow: an instance's drop may reach another `Sharded`.
    drop(all);
}

struct Inner<S> {
    id: u64,
    handle: PoolHandle,
    factory: Box<dyn Fn(usize) -> S + Send + Sync>,
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        // Each core drops its own instance (it may hold that core's sockets).
        let id = self.id;
        for core in 0..self.handle.cores() {
            self.handle.shared.mailbox(core).push(Box::new(move || {
                let gone = INSTANCES.with(|m| m.borrow_mut().remove(&id));
                drop(gone);
            }));
        }
    }
}

/// One instance of a service `S` per core of a [`Pool`](super::Pool), each created on its
/// own core (by the factory, the first time that core uses it) and used there only: `S`
/// need not be `Send` or `Sync`, and the instance is reached through an `Rc` with no lock
/// or atomic, so it keeps mutable state in `Cell`s and `RefCell`s.
///
/// The `Sharded` itself is a cloneable `Send + Sync` handle: [`invoke_on`](Self::invoke_on)
/// runs a closure against one core's instance (from a plain thread or a task of any core),
/// [`invoke_on_all`](Self::invoke_on_all) against every core's, [`map_reduce`](Self::map_reduce)
/// combines what they return, and [`local`](Self::local) gives the calling core's instance
/// directly. Dropping the last clone drops the instances, each on its core.
///
/// ```
/// use std::cell::Cell;
/// use std::time::Duration;
///
/// struct Counter(Cell<u64>);
///
/// let pool = coring::Pool::builder().cores(1).pin(false).build().unwrap();
/// let counters = coring::Sharded::new(&pool.handle(), |_core| Counter(Cell::new(0)));
/// counters
///     .invoke_on(0, |c| async move { c.0.set(c.0.get() + 5) })
///     .wait(Duration::from_secs(5))
///     .unwrap();
/// let c = counters.clone();
/// let total = pool
///     .handle()
///     .submit_to(0, move || async move {
///         c.local().0.set(c.local().0.get() + 1);
///         c.map_reduce(|c| async move { c.0.get() }, 0, |a, b| a + b).await
///     })
///     .wait(Duration::from_secs(5))
///     .unwrap()
///     .unwrap();
/// assert_eq!(total, 6);
/// pool.shutdown().unwrap();
/// ```
pub struct Sharded<S: 'static> {
    inner: Arc<Inner<S>>,
    _instances: PhantomData<fn() -> S>,
}

impl<S: 'static> Clone for Sharded<S> {
    fn clone(&self) -> Self {
        Sharded {
            inner: self.inner.clone(),
            _instances: PhantomData,
        }
    }
}

impl<S: 'static> fmt::Debug for Sharded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sharded")
            .field("id", &self.inner.id)
            .field("cores", &self.inner.handle.cores())
            .finish()
    }
}

impl<S: 'static> Sharded<S> {
    /// A service with one instance per core of `handle`'s pool; `factory(core)` creates
    /// core `core`'s instance on that core, the first time it is used there.
    pub fn new<F>(handle: &PoolHandle, factory: F) -> Sharded<S>
    where
        F: Fn(usize) -> S + Send + Sync + 'static,
    {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Sharded {
            inner: Arc::new(Inner {
                id: NEXT.fetch_add(1, Ordering::Relaxed),
                handle: handle.clone(),
                factory: Box::new(factory),
            }),
            _instances: PhantomData,
        }
    }

    /// The pool this service is sharded over.
    pub fn handle(&self) -> &PoolHandle {
        &self.inner.handle
    }

    /// The calling core's instance (created now if this is its first use): no lock, no
    /// atomic, no message.
    ///
    /// # Panics
    ///
    /// When not called on one of the pool's core threads; reach an instance from
    /// elsewhere with [`invoke_on`](Self::invoke_on).
    #[track_caller]
    pub fn local(&self) -> Rc<S> {
        let Some(core) = self.inner.handle.shared.on_own_core() else {
            panic!(
                "Sharded::local called off its pool's cores (current core: {:?}); use \
                 invoke_on(core, ..) to reach an instance from another thread or pool",
                super::current_core()
            );
        };
        let id = self.inner.id;
        let found = INSTANCES.with(|m| m.borrow().get(&id).cloned());
        let any = match found {
            Some(any) => any,
            None => {
                // The factory runs outside the borrow: it may use other `Sharded`s.
                let made: Rc<dyn Any> = Rc::new((self.inner.factory)(core));
                INSTANCES.with(|m| m.borrow_mut().entry(id).or_insert(made).clone())
            }
        };
        any.downcast::<S>()
            .unwrap_or_else(|_| unreachable!("a Sharded id maps to instances of its own type"))
    }

    /// Runs `f` with core `core`'s instance, on that core, and brings its future's output
    /// back (a [`Submit`]: await it, or `wait` on a plain thread).
    ///
    /// # Panics
    ///
    /// If `core >= self.handle().cores()`.
    #[track_caller]
    pub fn invoke_on<F, Fut>(&self, core: usize, f: F) -> Submit<Fut::Output>
    where
        F: FnOnce(Rc<S>) -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let this = self.clone();
        self.inner.handle.submit_to(core, move || f(this.local()))
    }

    /// Runs `f` with every core's instance, each on its core; the outputs in core order.
    pub fn invoke_on_all<F, Fut>(&self, f: F) -> Gather<Fut::Output>
    where
        F: Fn(Rc<S>) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let this = self.clone();
        self.inner.handle.run_on_all(move |_| f(this.local()))
    }

    /// Fans `map` out to every core's instance and folds the outputs into `init` with
    /// `reduce`, in core order.
    ///
    /// # Errors
    ///
    /// The first core's [`JoinError`] (a panic, or the pool shut down).
    pub async fn map_reduce<F, Fut, A, R>(
        &self,
        map: F,
        init: A,
        mut reduce: R,
    ) -> Result<A, JoinError>
    where
        F: Fn(Rc<S>) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
        R: FnMut(A, Fut::Output) -> A,
    {
        let all = self.invoke_on_all(map).await?;
        Ok(all.into_iter().fold(init, &mut reduce))
    }
}
