//! Rationing the attempts to complete an operation during submission.

/// Whether attempts of one kind to complete an operation during submission (a read from
/// the page cache, a send into a socket buffer) are worth their syscall: after
/// [`AttemptBackoff::MISSES`] attempts in a row that would have blocked, the next
/// [`AttemptBackoff::PAUSE`] operations skip the attempt and go straight to the backend's
/// queue, so a workload whose attempts keep failing (uncached data, a bulk writer on a full
/// socket) pays the extra syscall on a few operations in every 68 only.
#[derive(Debug, Default)]
pub(crate) struct AttemptBackoff {
    misses: u32,
    skip: u32,
}

impl AttemptBackoff {
    /// Attempts that would block, in a row, before a pause.
    pub(crate) const MISSES: u32 = 4;
    /// Operations sent straight to the backend during a pause.
    pub(crate) const PAUSE: u32 = 64;

    /// Whether to attempt this operation (counts down a pause).
    #[inline]
    pub(crate) fn should_try(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// The attempt completed the operation.
    #[inline]
    pub(crate) fn hit(&mut self) {
        self.misses = 0;
    }

    /// The attempt would have blocked (or moved less than asked).
    pub(crate) fn miss(&mut self) {
        self.misses += 1;
        if self.misses >= Self::MISSES {
            self.misses = 0;
            self.skip = Self::PAUSE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AttemptBackoff;

    #[test]
    fn backoff_pauses_after_misses_in_a_row_and_resumes() {
        let mut s = AttemptBackoff::default();
        // A hit between misses resets the count.
        for _ in 0..AttemptBackoff::MISSES - 1 {
            assert!(s.should_try());
            s.miss();
        }
        assert!(s.should_try());
        s.hit();
        for _ in 0..AttemptBackoff::MISSES {
            assert!(s.should_try());
            s.miss();
        }
        // Paused: exactly PAUSE operations skip the attempt.
        for _ in 0..AttemptBackoff::PAUSE {
            assert!(!s.should_try());
        }
        assert!(s.should_try());
    }
}
