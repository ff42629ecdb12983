//! Registered ("fixed") files and buffers, as the rest of the crate sees them.
//!
//! io_uring can take a file or a buffer into a table of its ring once
//! (`io_uring_register(2)`); operations then name it by index, and the kernel skips the
//! per-operation file lookup and reference count (IOSQE_FIXED_FILE) or the page pinning
//! (IORING_OP_READ_FIXED / WRITE_FIXED). An index means something only in the ring whose
//! table holds it, so a reference to an entry, [`Fixed`], carries that ring's id, and only
//! the io_uring translation, for its own ring, uses the index. Everywhere else (the
//! fallback backend, another runtime's ring, an opcode run on the blocking pool) the
//! operation uses the plain descriptor and the same memory, which stay valid all along:
//! registration is an optimisation, never a second meaning. The fallback backend has no
//! tables; registering there succeeds and changes nothing.
//!
//! A [`Registration`] holds entries until it is dropped, which clears them in the kernel at
//! once (while the ring exists) and lets the table hand them out again. Owners drop it only
//! when no operation can still name the entries: a `SharedFd` when its last clone goes
//! away (every operation, in flight or orphaned, holds one), before it closes the
//! descriptor; a buffer pool when its last buffer comes back (every operation owns its
//! buffer until its final completion), before it frees the memory.

use std::cell::RefCell;
use std::io;
use std::num::NonZeroU32;
use std::rc::Rc;

use super::AnyBackend;
use super::Backend;
use crate::runtime::context;

/// An entry of one ring's registered-file or registered-buffer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fixed {
    /// The ring whose table holds the entry; ring ids are never reused in a process.
    pub(crate) ring: NonZeroU32,
    /// The index in that table.
    pub(crate) index: u32,
}

/// Which of a ring's tables.
// Tables exist only where io_uring does (Linux); elsewhere nothing is ever registered.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Files,
    Buffers,
}

/// A ring's tables, as the registrations in them see them.
pub(crate) trait Tables {
    /// Clears entries `first..first + count` of `table` in the kernel, if the ring still
    /// exists, and makes them available again.
    fn clear(&self, table: Table, first: u32, count: u32);
    /// Whether the ring still exists.
    fn is_live(&self) -> bool;
}

/// `count` consecutive entries of one table of one ring, held until dropped.
pub(crate) struct Registration {
    first: Fixed,
    count: u32,
    table: Table,
    tables: Rc<dyn Tables>,
}

impl Registration {
    // Built only by the io_uring backend.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn new(first: Fixed, count: u32, table: Table, tables: Rc<dyn Tables>) -> Self {
        Registration {
            first,
            count,
            table,
            tables,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tables.clear(self.table, self.first.index, self.count);
    }
}

/// Where a file or a buffer pool keeps its registration: at most one, in one ring.
#[derive(Default)]
pub(crate) struct FixedCell(RefCell<Option<Registration>>);

/// Says what to do when registration is attempted without a runtime.
const OUTSIDE_RUNTIME: &str = "coring: register() needs the runtime whose ring it registers \
                               with; call it inside Runtime::block_on or a task spawned on one";

/// What registering with the current runtime asks of its backend.
pub(crate) type RegisterFn<'a> = &'a dyn Fn(&AnyBackend) -> io::Result<Option<Registration>>;

impl FixedCell {
    /// The first entry held, for operations to name (the backend decides whether it is
    /// its own ring's).
    #[inline]
    pub(crate) fn get(&self) -> Option<Fixed> {
        self.0.borrow().as_ref().map(|r| r.first)
    }

    /// Registers with the current runtime's ring through `register`, unless already
    /// registered there. Succeeds without doing anything on a backend without tables.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` while registered with another runtime that still exists;
    /// otherwise what `register` reports.
    ///
    /// # Panics
    ///
    /// Outside a runtime.
    pub(crate) fn register(&self, what: &str, register: RegisterFn<'_>) -> io::Result<()> {
        context::with(OUTSIDE_RUNTIME, |rt| {
            // Busy while the runtime finishes operations (user Drop code of an orphaned
            // operation's output runs then).
            let Ok(driver) = rt.driver.try_borrow() else {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{what}: register() called while the runtime is completing operations \
                         (from a Drop run by the driver); call it from a task"
                    ),
                ));
            };
            let backend = driver.backend();
            let Some(ring) = backend.ring_id() else {
                return Ok(());
            };
            let mut held = self.0.borrow_mut();
            if let Some(r) = held.as_ref() {
                if r.first.ring == ring {
                    return Ok(());
                }
                if r.tables.is_live() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{what} is registered with another runtime's ring; a registration \
                             belongs to one ring (operations on other runtimes use the plain \
                             descriptor and memory)"
                        ),
                    ));
                }
            }
            let new = register(backend)?;
            // Replacing a registration in a ring that is gone clears nothing in any kernel.
            *held = new;
            Ok(())
        })
    }

    /// Whether the entry held belongs to the ring of the runtime running on this thread,
    /// so that operations submitted now use it.
    pub(crate) fn is_registered_here(&self) -> bool {
        let Some(fixed) = self.get() else {
            return false;
        };
        context::try_with(|rt| {
            rt.driver
                .try_borrow()
                .is_ok_and(|d| d.backend().ring_id() == Some(fixed.ring))
        })
        .unwrap_or(false)
    }

    /// Drops the registration, clearing its entries in the kernel.
    pub(crate) fn unregister(&self) {
        // Taken out first, so that the clearing runs without the cell borrowed.
        let r = self.0.borrow_mut().take();
        drop(r);
    }
}
