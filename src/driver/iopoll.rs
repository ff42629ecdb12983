//! Polled IO ([`Builder::iopoll`](crate::Builder::iopoll)): which operations go to a
//! backend's polled ring, and what a polled completion means. Written once, used by every
//! backend that has such a ring (io_uring's second ring, set up with
//! IORING_SETUP_IOPOLL, and the mock backend, whose "polled ring" the test plays).
//!
//! A backend with a polled ring asks [`PollRoute::takes`] before it starts an operation:
//! reads and writes (plain, vectored, and those naming a registered buffer, which the
//! polled ring runs as plain ones since the buffer tables are the main ring's) of a file
//! opened for direct IO go there while the kernel has not refused polled IO for the
//! file's device. It reports each such start ([`PollRoute::started`]) and hands each completion
//! from the polled ring to [`PollRoute::completed`], which says what to do with it:
//!
//! - deliver it to the driver as is (one completion path: the driver's table, keyed as
//!   for the main ring, never learns which ring ran the operation);
//! - or, when the kernel refused the polled operation with EOPNOTSUPP (a device without
//!   poll queues: virtio disks, most VMs; a file system without `iopoll`: tmpfs), start
//!   the same description again on the main ring: the user never sees the refusal, the
//!   driver counts the operation once, and every later read and write of a file on that
//!   device (`st_dev`: the file system's device, recorded when a file is made direct; the
//!   file itself where it is unknown) goes to the main ring. Both reasons for a refusal
//!   are properties of the device or its file system, and finding out costs: on this
//!   project's VM (Linux 6.18, ext4 on virtio) the refusal of a polled read arrives 2 to
//!   12 ms after submission, polled all the while, so it is paid once per device, not per
//!   file. The refusal and the kernel's error are kept for
//!   [`Runtime::iopoll_status`](crate::Runtime::iopoll_status).
//!
//! What Linux 6.18 does here (`bench/scripts/iopoll-probe.c`, run on the project's VM,
//! whose only disk is virtio without poll queues): a polled READ of an ext4 file completes
//! with -EOPNOTSUPP, found by polling (the submission itself succeeds); a polled WRITE of
//! the same file completes with its byte count (the kernel ran it unpolled); a polled READ
//! or WRITE of a tmpfs file completes with -EOPNOTSUPP at submission (tmpfs has no
//! `iopoll`). A NOP on the polled ring completes; an ASYNC_CANCEL there completes with
//! -EINVAL.
//!
//! Cancellation: io_uring refuses IORING_OP_ASYNC_CANCEL on a polled ring (EINVAL: only
//! reads, writes and NOPs may be queued there), and a block request in flight cannot be
//! cancelled anyway. A cancel of a polled operation is therefore only recorded: the
//! operation completes with its real result within the device's latency, and if the
//! kernel refused it, it completes with ECANCELED instead of moving to the main ring.
//! Until then the driver keeps its buffer, as for any operation in flight (orphans
//! included), and shutdown polls until it is done.

use std::collections::HashSet;
use std::fmt;

use super::desc::FdRef;
use super::{Completion, OpDesc};
use crate::platform::c;

/// Whether a runtime runs direct file IO on a polled ring; see
/// [`Runtime::iopoll_status`](crate::Runtime::iopoll_status).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IopollStatus {
    /// Not asked for ([`Builder::iopoll`](crate::Builder::iopoll) is off, the default).
    Off,
    /// The polled ring is up and the kernel has refused polled IO for no file so far:
    /// reads and writes of files opened for direct IO go to it.
    Active,
    /// Asked for, but direct IO runs (at least partly) on the main path, and `reason`
    /// says why: the backend has no polled IO (the readiness and IOCP backends), the
    /// polled ring could not be set up, or the kernel refused polled IO for a file (its
    /// device has no poll queues, as virtio disks; or its file system cannot poll, as
    /// tmpfs), with the kernel's error. The IO of direct files on a refused device then
    /// runs on the main ring ([`File::is_polled`](crate::fs::File::is_polled) says which
    /// files); nothing failed. Files on other devices still try the polled ring.
    Unsupported {
        /// Why, in words, with the kernel's error where it gave one.
        reason: String,
    },
}

impl fmt::Display for IopollStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IopollStatus::Off => f.write_str("off"),
            IopollStatus::Active => f.write_str("active"),
            IopollStatus::Unsupported { reason } => write!(f, "unsupported: {reason}"),
        }
    }
}

/// One operation on the polled ring: its description (to start it again on the main
/// ring if the kernel refuses it) and whether a cancel was asked for.
#[derive(Clone, Copy)]
struct Polled {
    desc: OpDesc,
    cancelled: bool,
}

/// What the backend does with a completion from its polled ring.
#[derive(Debug)]
pub(crate) enum Reaped {
    /// Report it to the driver.
    Deliver(Completion),
    /// The kernel refused polled IO for the file: start this description again, under the
    /// same key, on the main ring (its completion is the one the driver sees).
    Reroute(OpDesc),
}

/// The routing state of a backend with a polled ring (see the module docs).
pub(crate) struct PollRoute {
    /// `None`: the polled ring is up; `Some`: it is not, and why.
    no_ring: Option<String>,
    /// Devices (`FdRef::dev`) the kernel refused polled IO for.
    refused_devs: HashSet<u64>,
    /// Files (`FdRef::id`) the kernel refused polled IO for, whose device is unknown.
    refused_files: HashSet<u64>,
    /// The first refusal, in words, for the status.
    refusal: Option<String>,
    /// `ops[key]`: operation `key` is on the polled ring. Indexed by the driver's dense
    /// slab keys.
    ops: Vec<Option<Polled>>,
    live: usize,
    /// Final completions delivered from the polled ring.
    completed: u64,
    /// Operations refused by the polled ring and started again on the main ring.
    rerouted: u64,
}

impl PollRoute {
    /// A route to a polled ring that is up.
    pub(crate) fn active() -> PollRoute {
        PollRoute {
            no_ring: None,
            refused_devs: HashSet::new(),
            refused_files: HashSet::new(),
            refusal: None,
            ops: Vec::new(),
            live: 0,
            completed: 0,
            rerouted: 0,
        }
    }

    /// No polled ring, for `reason`: nothing is ever routed.
    // Built only where io_uring's polled ring can fail to set up (Linux).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn unavailable(reason: String) -> PollRoute {
        PollRoute {
            no_ring: Some(reason),
            ..PollRoute::active()
        }
    }

    /// Whether `desc` goes to the polled ring: a read or write of a direct file the kernel
    /// has not refused polled IO for.
    #[inline]
    pub(crate) fn takes(&self, desc: &OpDesc) -> bool {
        if self.no_ring.is_some() {
            return false;
        }
        let fd = match desc {
            OpDesc::Read { fd, .. }
            | OpDesc::Write { fd, .. }
            | OpDesc::Readv { fd, .. }
            | OpDesc::Writev { fd, .. } => fd,
            _ => return false,
        };
        self.polls(fd)
    }

    /// Whether reads and writes of `fd` go to the polled ring (see [`PollRoute::takes`]).
    #[inline]
    fn polls(&self, fd: &FdRef) -> bool {
        fd.direct
            && self.no_ring.is_none()
            && (self.refused_devs.is_empty() || !self.refused_devs.contains(&fd.dev))
            && (self.refused_files.is_empty() || !self.refused_files.contains(&fd.id))
    }

    /// Operation `key`, described by `desc`, went to the polled ring.
    pub(crate) fn started(&mut self, key: usize, desc: &OpDesc) {
        if self.ops.len() <= key {
            self.ops.resize(key + 1, None);
        }
        debug_assert!(self.ops[key].is_none(), "coring: key {key} polled twice");
        self.ops[key] = Some(Polled {
            desc: *desc,
            cancelled: false,
        });
        self.live += 1;
    }

    /// Whether operation `key` is on the polled ring (its final completion not reaped).
    #[inline]
    pub(crate) fn has(&self, key: usize) -> bool {
        self.live > 0 && matches!(self.ops.get(key), Some(Some(_)))
    }

    /// Records a cancel of operation `key` if it is on the polled ring (returns whether it
    /// is): see the module docs.
    pub(crate) fn cancel(&mut self, key: usize) -> bool {
        match self.ops.get_mut(key) {
            Some(Some(p)) => {
                p.cancelled = true;
                true
            }
            _ => false,
        }
    }

    /// Operations on the polled ring: while there are any, the backend polls it and never
    /// sleeps (their completions appear only when polled).
    // Only io_uring's polled ring needs polling (Linux).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    #[inline]
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The final completion of polled operation `key` arrived: what to do with it.
    pub(crate) fn completed(&mut self, key: usize, c: Completion) -> Reaped {
        let Some(p) = self.ops.get_mut(key).and_then(Option::take) else {
            debug_assert!(
                false,
                "coring: polled completion for unknown operation {key}"
            );
            return Reaped::Deliver(c);
        };
        self.live -= 1;
        if c.res != -c::EOPNOTSUPP {
            self.completed += 1;
            return Reaped::Deliver(c);
        }
        let fd = match p.desc {
            OpDesc::Read { fd, .. }
            | OpDesc::Write { fd, .. }
            | OpDesc::Readv { fd, .. }
            | OpDesc::Writev { fd, .. } => fd,
            _ => unreachable!("coring: only reads and writes go to the polled ring"),
        };
        let (new, what) = if fd.dev != 0 {
            (
                self.refused_devs.insert(fd.dev),
                format!(
                    "the IO of every direct file on device {}:{} runs on the main ring",
                    dev_major(fd.dev),
                    dev_minor(fd.dev)
                ),
            )
        } else {
            (
                self.refused_files.insert(fd.id),
                "that file's IO runs on the main ring".to_string(),
            )
        };
        if new {
            let refusal = format!(
                "the kernel refused a polled {} of a direct file ({}): its device has no \
                 poll queues, or its file system cannot poll; {what}",
                p.desc.name(),
                std::io::Error::from_raw_os_error(c::EOPNOTSUPP)
            );
            match &mut self.refusal {
                None => self.refusal = Some(refusal),
                Some(r) if self.refused_devs.len() + self.refused_files.len() == 2 => {
                    r.push_str(" (and on other devices too)")
                }
                Some(_) => {}
            }
        }
        if p.cancelled {
            self.completed += 1;
            return Reaped::Deliver(Completion::error(c::ECANCELED));
        }
        self.rerouted += 1;
        Reaped::Reroute(p.desc)
    }

    /// Whether reads and writes of `fd` go to the polled ring.
    pub(crate) fn is_polled(&self, fd: &FdRef) -> bool {
        self.polls(fd)
    }

    /// The status [`Runtime::iopoll_status`](crate::Runtime::iopoll_status) reports.
    pub(crate) fn status(&self) -> IopollStatus {
        match (&self.no_ring, &self.refusal) {
            (Some(reason), _) | (None, Some(reason)) => IopollStatus::Unsupported {
                reason: reason.clone(),
            },
            (None, None) => IopollStatus::Active,
        }
    }

    /// (Final completions delivered from the polled ring, operations it refused that
    /// were started again on the main ring.)
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.completed, self.rerouted)
    }
}

/// The major number of device `dev` (Linux's encoding, glibc's `gnu_dev_major`).
fn dev_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

/// The minor number of device `dev` (Linux's encoding, glibc's `gnu_dev_minor`).
fn dev_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(id: u64, direct: bool, dev: u64) -> FdRef {
        FdRef {
            raw: 3,
            id,
            fixed: None,
            direct,
            dev,
        }
    }

    fn read(id: u64, direct: bool) -> OpDesc {
        read_on(id, direct, 0)
    }

    fn read_on(id: u64, direct: bool, dev: u64) -> OpDesc {
        OpDesc::Read {
            fd: fd(id, direct, dev),
            buf: std::ptr::null_mut(),
            len: 4096,
            offset: 0,
            buf_index: None,
        }
    }

    #[test]
    fn routes_direct_reads_until_refused() {
        let mut r = PollRoute::active();
        assert!(!r.takes(&read(1, false)), "a buffered file is never polled");
        assert!(r.takes(&read(1, true)));
        assert!(!r.takes(&OpDesc::Nop));
        r.started(5, &read(1, true));
        assert!(r.has(5) && r.live() == 1);
        assert!(matches!(
            r.completed(
                5,
                Completion {
                    res: 4096,
                    flags: 0
                }
            ),
            Reaped::Deliver(Completion { res: 4096, .. })
        ));
        assert_eq!(r.status(), IopollStatus::Active);
        r.started(5, &read(1, true));
        let refused = Completion::error(c::EOPNOTSUPP);
        assert!(matches!(r.completed(5, refused), Reaped::Reroute(_)));
        assert!(
            !r.takes(&read(1, true)),
            "a refused file stays on the main ring"
        );
        assert!(r.takes(&read(2, true)), "another file still tries");
        assert!(matches!(r.status(), IopollStatus::Unsupported { .. }));
        assert_eq!(r.counts(), (1, 1));
        assert_eq!(r.live(), 0);
    }

    #[test]
    fn a_refusal_covers_the_device() {
        let mut r = PollRoute::active();
        let vda = (254 << 8) | 1;
        r.started(0, &read_on(1, true, vda));
        let out = r.completed(0, Completion::error(c::EOPNOTSUPP));
        assert!(matches!(out, Reaped::Reroute(_)));
        assert!(!r.takes(&read_on(2, true, vda)), "same device: main ring");
        assert!(!r.is_polled(&fd(2, true, vda)));
        assert!(
            r.takes(&read_on(3, true, vda + 1)),
            "another device still tries"
        );
        match r.status() {
            IopollStatus::Unsupported { reason } => {
                assert!(reason.contains("device 254:1"), "{reason}")
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn a_cancelled_refusal_ends_cancelled() {
        let mut r = PollRoute::active();
        r.started(0, &read(7, true));
        assert!(r.cancel(0));
        assert!(!r.cancel(1), "not polled");
        let out = r.completed(0, Completion::error(c::EOPNOTSUPP));
        assert!(matches!(out, Reaped::Deliver(c) if c.res == -c::ECANCELED));
    }

    #[test]
    fn unavailable_routes_nothing() {
        let r = PollRoute::unavailable("no ring".into());
        assert!(!r.takes(&read(1, true)));
        assert!(!r.is_polled(&fd(1, true, 0)));
        assert_eq!(
            r.status(),
            IopollStatus::Unsupported {
                reason: "no ring".into()
            }
        );
    }
}
