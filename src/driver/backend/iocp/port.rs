//! The completion port itself: creating it and waking it from other threads.

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::IO::{CreateIoCompletionPort, PostQueuedCompletionStatus};

use super::super::Unpark;

/// The completion key of the packets that only wake the runtime.
pub(super) const WAKE_KEY: usize = usize::MAX;

/// A completion port, closed when the runtime and every unparker are gone.
pub(super) struct Port {
    pub(super) handle: HANDLE,
}

// SAFETY: a port handle may be used from any thread (PostQueuedCompletionStatus is how
// other threads reach a port).
unsafe impl Send for Port {}
// SAFETY: as above; the handle is never changed.
unsafe impl Sync for Port {}

impl Port {
    /// A new port.
    pub(super) fn new() -> std::io::Result<Arc<Port>> {
        // SAFETY: creates a new port (no file handle, no existing port).
        let h = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, ptr::null_mut(), 0, 1) };
        if h.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(Port { handle: h }))
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port is ours and nothing names it after the last reference.
        unsafe { CloseHandle(self.handle) };
    }
}

/// Wakes a parked runtime by posting a packet without an OVERLAPPED; at most one is queued
/// at a time.
pub(super) struct PortWake {
    pub(super) port: Arc<Port>,
    pub(super) posted: AtomicBool,
}

impl Unpark for PortWake {
    fn unpark(&self) {
        if !self.posted.swap(true, Ordering::SeqCst) {
            // SAFETY: posts a packet with no OVERLAPPED to a live port.
            unsafe { PostQueuedCompletionStatus(self.port.handle, 0, WAKE_KEY, ptr::null()) };
        }
    }
}
