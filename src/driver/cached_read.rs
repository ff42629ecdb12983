//! Positional reads served from the page cache during submission, on every backend that
//! can ask the kernel for a read that never waits.

use super::backoff::AttemptBackoff;
use super::{Completion, OpDesc};
use crate::platform;

/// Serves positional reads straight from the page cache when it can
/// ([`platform::read_nowait`]), so a cached read costs one syscall and no trip through the
/// ring or the pool, and completes in the same poll that issued it. Adaptive
/// ([`AttemptBackoff`]): after a few reads in a row that would have blocked (data not
/// cached, a pipe), it stops trying for a while so uncached workloads do not pay
/// the extra syscall on every read.
#[derive(Debug, Default)]
pub(crate) struct CachedReads {
    backoff: AttemptBackoff,
}

impl CachedReads {
    /// The completion of `desc` if it is a positional read the page cache answered.
    ///
    /// # Safety
    ///
    /// As [`super::syscall::execute`]: the pointers in `desc` are valid for the whole call.
    #[inline]
    pub(crate) unsafe fn try_complete(&mut self, desc: &OpDesc) -> Option<Completion> {
        // Registered files and buffers are read through the plain descriptor and memory,
        // which stay valid whether registered or not.
        let OpDesc::Read {
            fd,
            buf,
            len,
            offset,
            ..
        } = *desc
        else {
            return None;
        };
        // A direct read "without waiting" (RWF_NOWAIT) still waits for the device: it only
        // promises not to wait for locks or allocation. It goes to the backend's queue.
        if len == 0 || fd.direct || !self.backoff.should_try() {
            return None;
        }
        // SAFETY: forwarded from the caller: buf is valid for len bytes.
        match unsafe { platform::read_nowait(fd.raw, buf, len, offset) } {
            Some(res) => {
                self.backoff.hit();
                Some(Completion { res, flags: 0 })
            }
            None => {
                self.backoff.miss();
                None
            }
        }
    }
}
