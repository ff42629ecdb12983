//! The io_uring backend's per-descriptor send state: sends complete during submission where
//! they can, and a stream's sends and shutdown take effect in the order they were issued.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use crate::driver::backoff::AttemptBackoff;
use crate::driver::dense::DenseMap;
use crate::driver::syscall::{execute, outcome, Outcome};
use crate::driver::{Completion, OpDesc};

/// Per descriptor: sends that run as non-blocking syscalls during submission, and the
/// ordered writes that wait for their turn.
///
/// **Sends during submission.** A send that finds room in the socket buffer, which is
/// nearly every send of a request/response protocol, completes in the poll that issued it,
/// with no SQE, no CQE, no slot and no second poll of the task. One that would block goes
/// to the ring. Sends that keep finding the buffer full (a bulk writer; a short send counts
/// as a miss) pause this descriptor's attempts ([`AttemptBackoff`]), not the others'.
///
/// **Order.** The ring does not order operations on one file: a later send issued while an
/// earlier one waits in the kernel for room can go first, and IORING_OP_SHUTDOWN runs on a
/// kernel worker thread, after sends issued behind it. So, per descriptor:
/// - no attempt during submission while an earlier send of the descriptor is in the ring
///   (or on the pool) or waiting its turn;
/// - an ordered write ([`OpDesc::is_ordered_write`]: a stream's send, a shutdown of the
///   write side) issued while an earlier one is in the ring or waiting is *deferred* here,
///   in order, and submitted when the one before it finishes ([`SendOrder::finished`]
///   names the descriptor, [`SendOrder::next_in_turn`] gives the next): at most one stream
///   send of a descriptor is in the ring at a time;
/// - a shutdown never goes to the ring: the backend runs `shutdown(2)` (which never blocks)
///   when nothing is before it.
///
/// This is what the readiness backend guarantees with its per-descriptor queues; both run
/// the syscalls through [`execute`]. Datagram sends are not deferred (each datagram stands
/// alone), only kept from overtaking by attempts during submission. An op in flight or
/// deferred holds its descriptor open, so the number names the same file until its entry
/// here is gone.
#[derive(Default)]
pub(crate) struct SendOrder {
    /// Per descriptor number.
    fds: DenseMap<SendState>,
    /// Descriptor of each submitted or deferred operation, by operation key.
    keys: DenseMap<RawFd>,
}

#[derive(Default)]
struct SendState {
    /// Sends of this descriptor in the ring or on the pool.
    submitted: u32,
    /// Ordered writes waiting for the ones before them, in issue order.
    deferred: VecDeque<(usize, OpDesc)>,
    backoff: AttemptBackoff,
}

impl SendState {
    fn busy(&self) -> bool {
        self.submitted > 0 || !self.deferred.is_empty()
    }
}

/// The descriptor of an operation this state tracks: a send, sendmsg or shutdown.
fn send_fd(desc: &OpDesc) -> Option<RawFd> {
    match *desc {
        OpDesc::Send { fd, .. } | OpDesc::SendMsg { fd, .. } | OpDesc::Shutdown { fd, .. } => {
            Some(fd.raw)
        }
        _ => None,
    }
}

impl SendOrder {
    /// The completion of `desc` if it is a send (`send` or `sendmsg`) that did not have to
    /// wait and had nothing of its descriptor submitted or deferred before it, or a
    /// `shutdown` with nothing before it.
    ///
    /// # Safety
    ///
    /// As [`execute`]: the pointers in `desc` are valid for the whole call.
    pub(crate) unsafe fn try_complete(&mut self, desc: &OpDesc) -> Option<Completion> {
        let fd = match *desc {
            // A zero-copy send goes to the ring even when it need not wait: a syscall here
            // would copy.
            OpDesc::Send { len: 0, .. }
            | OpDesc::Send { zerocopy: true, .. }
            | OpDesc::SendMsg { zerocopy: true, .. } => return None,
            OpDesc::Send { fd, .. } | OpDesc::SendMsg { fd, .. } => fd.raw,
            OpDesc::Shutdown { .. } => {
                if self.must_wait(desc).is_some() {
                    return None;
                }
                // SAFETY: no pointers: a descriptor and a constant.
                let res = unsafe { execute(desc) };
                return Some(Completion { res, flags: 0 });
            }
            _ => return None,
        };
        let st = self.fds.get_or_default(fd as usize);
        if st.busy() || !st.backoff.should_try() {
            return None;
        }
        // SAFETY: forwarded from the caller.
        let res = unsafe { execute(desc) };
        match outcome(desc, res, false) {
            Outcome::Wait => {
                st.backoff.miss();
                return None;
            }
            // A short send: the buffer is full, the next send will likely have to wait.
            Outcome::Drained => st.backoff.miss(),
            Outcome::Ready => st.backoff.hit(),
        }
        Some(Completion { res, flags: 0 })
    }

    /// Defers operation `key` if it must wait behind an earlier one of its descriptor
    /// (`true`: the backend submits nothing now; [`SendOrder::next_in_turn`] gives it back
    /// in its turn, or [`SendOrder::undefer`] when it is cancelled first).
    pub(crate) fn defer(&mut self, key: usize, desc: &OpDesc) -> bool {
        let Some(fd) = self.must_wait(desc) else {
            return false;
        };
        self.fds
            .get_or_default(fd as usize)
            .deferred
            .push_back((key, *desc));
        self.keys.insert(key, fd);
        true
    }

    /// The descriptor of `desc` if `desc` is an ordered write and an earlier operation of
    /// that descriptor is submitted or deferred: it must wait its turn.
    fn must_wait(&self, desc: &OpDesc) -> Option<RawFd> {
        let fd = send_fd(desc).filter(|_| desc.is_ordered_write())?;
        self.fds
            .get(fd as usize)
            .is_some_and(SendState::busy)
            .then_some(fd)
    }

    /// Operation `key`, described by `desc`, went to the ring or the pool.
    pub(crate) fn submitted(&mut self, key: usize, desc: &OpDesc) {
        if let Some(fd) = send_fd(desc) {
            self.fds.get_or_default(fd as usize).submitted += 1;
            self.keys.insert(key, fd);
        }
    }

    /// Operation `key`'s final completion arrived (a no-op unless it is a submitted send);
    /// the descriptor, if it now has a deferred operation free to go
    /// ([`SendOrder::next_in_turn`]).
    pub(crate) fn finished(&mut self, key: usize) -> Option<RawFd> {
        let fd = self.keys.remove(key)?;
        let st = self.fds.get_mut(fd as usize)?;
        st.submitted -= 1;
        (st.submitted == 0 && !st.deferred.is_empty()).then_some(fd)
    }

    /// The next deferred operation of `fd`, if nothing of `fd` is submitted: the backend
    /// submits it now (and reports it with [`SendOrder::submitted`], or runs a shutdown at
    /// once).
    pub(crate) fn next_in_turn(&mut self, fd: RawFd) -> Option<(usize, OpDesc)> {
        let st = self.fds.get_mut(fd as usize)?;
        if st.submitted > 0 {
            return None;
        }
        let (key, desc) = st.deferred.pop_front()?;
        self.keys.remove(key);
        Some((key, desc))
    }

    /// Puts back at the head of its descriptor's queue an operation
    /// [`SendOrder::next_in_turn`] gave out that could not be submitted (a full submission
    /// queue).
    pub(crate) fn put_back(&mut self, key: usize, desc: OpDesc) {
        if let Some(fd) = send_fd(&desc) {
            self.fds
                .get_or_default(fd as usize)
                .deferred
                .push_front((key, desc));
            self.keys.insert(key, fd);
        }
    }

    /// Takes deferred operation `key` out of its queue (it is being cancelled): its
    /// descriptor, or `None` if it is not deferred. The descriptor's next deferred
    /// operation may be free to go now ([`SendOrder::next_in_turn`] says).
    pub(crate) fn undefer(&mut self, key: usize) -> Option<RawFd> {
        let fd = *self.keys.get(key)?;
        let st = self.fds.get_mut(fd as usize)?;
        let i = st.deferred.iter().position(|&(k, _)| k == key)?;
        st.deferred.remove(i);
        self.keys.remove(key);
        Some(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::SendOrder;
    use crate::driver::backoff::AttemptBackoff;
    use crate::driver::desc::FdRef;
    use crate::driver::OpDesc;

    /// A connected non-blocking Unix stream pair.
    fn pair() -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn send_desc(fd: std::os::fd::RawFd, buf: &[u8]) -> OpDesc {
        OpDesc::Send {
            fd: FdRef {
                raw: fd,
                id: 0,
                fixed: None,
                direct: false,
                dev: 0,
            },
            buf: buf.as_ptr(),
            len: buf.len() as u32,
            flags: crate::platform::SEND_FLAGS,
            stream: true,
            zerocopy: false,
            buf_index: None,
        }
    }

    // Per descriptor: a full socket's failed attempts pause its own attempts only, and a
    // send submitted to the ring holds back attempts on its descriptor until it finishes.
    #[test]
    fn sends_pause_and_wait_per_descriptor() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (full, mut full_peer) = pair();
        let (other, mut other_peer) = pair();
        let chunk = [7u8; 4096];
        while (&full).write(&chunk).is_ok() {}
        let mut sends = SendOrder::default();
        let on_full = send_desc(full.as_raw_fd(), &chunk);
        let on_other = send_desc(other.as_raw_fd(), b"hello");
        for _ in 0..AttemptBackoff::MISSES {
            // SAFETY: the descriptions point to live buffers for the whole call.
            assert!(unsafe { sends.try_complete(&on_full) }.is_none());
        }
        // SAFETY: as above.
        let c = unsafe { sends.try_complete(&on_other) }.expect("another socket was paused");
        assert_eq!(c.res, 5);
        // The submitted send on `other` holds back the next attempt there until it finishes.
        sends.submitted(9, &on_other);
        // SAFETY: as above.
        assert!(unsafe { sends.try_complete(&on_other) }.is_none());
        // A shutdown waits behind it too (it would fail the submitted send).
        let shut = OpDesc::Shutdown {
            fd: FdRef {
                raw: other.as_raw_fd(),
                id: 0,
                fixed: None,
                direct: false,
                dev: 0,
            },
            how: libc::SHUT_WR,
        };
        // SAFETY: no pointers.
        assert!(unsafe { sends.try_complete(&shut) }.is_none());
        // Submitted behind it, a stream send and the shutdown are deferred, in order; a
        // cancelled deferred one leaves the queue.
        assert!(sends.defer(10, &on_other));
        assert!(sends.defer(11, &on_other));
        assert!(sends.defer(12, &shut));
        assert_eq!(sends.undefer(11), Some(other.as_raw_fd()));
        assert_eq!(sends.undefer(11), None);
        // Nothing goes while the submitted send runs.
        assert!(sends.next_in_turn(other.as_raw_fd()).is_none());
        assert_eq!(sends.finished(9), Some(other.as_raw_fd()));
        let (key, next) = sends
            .next_in_turn(other.as_raw_fd())
            .expect("the deferred send");
        assert_eq!(key, 10);
        sends.submitted(key, &next);
        assert!(sends.next_in_turn(other.as_raw_fd()).is_none());
        assert_eq!(sends.finished(10), Some(other.as_raw_fd()));
        assert_eq!(
            sends.next_in_turn(other.as_raw_fd()).map(|(k, _)| k),
            Some(12)
        );
        assert!(sends.next_in_turn(other.as_raw_fd()).is_none());
        // Nothing submitted or deferred: the attempts are back.
        // SAFETY: as above.
        let again = unsafe { sends.try_complete(&on_other) };
        assert_eq!(again.map(|c| c.res), Some(5));
        let mut got = [0u8; 10];
        std::io::Read::read_exact(&mut other_peer, &mut got).unwrap();
        assert_eq!(&got, b"hellohello");
        // Nothing submitted: the shutdown runs at once, and the peer sees end-of-file.
        // SAFETY: no pointers.
        assert_eq!(unsafe { sends.try_complete(&shut) }.map(|c| c.res), Some(0));
        assert_eq!(std::io::Read::read(&mut other_peer, &mut got).unwrap(), 0);
        // `full` is paused: emptied, its next send still skips the attempt.
        full_peer.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 16];
        while std::io::Read::read(&mut full_peer, &mut sink).is_ok_and(|n| n > 0) {}
        // SAFETY: as above.
        assert!(unsafe { sends.try_complete(&on_full) }.is_none());
    }
}
