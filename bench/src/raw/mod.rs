//! Hand-written io_uring loops on the `io-uring` crate, the practical limit the benches hold
//! coring to (Linux only, as io_uring): the ring setup they share, and the raw echo server.
//! The raw fread loop lives in the `fread` bench, its only user.

pub mod echo;

use std::io;

use io_uring::{opcode, IoUring};

/// A ring setup, from the most to the least capable. coring tries the same ones in the
/// same order (`Uring::setup` in its io_uring driver), so a raw loop competes on equal
/// terms with the runtime it is compared to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG | SUBMIT_ALL` (6.1+).
    DeferTaskrun,
    /// `IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG` (5.19+).
    CoopTaskrun,
    /// No setup flags.
    Plain,
}

impl Setup {
    /// Every setup, in the order they are tried.
    pub const ALL: [Setup; 3] = [Setup::DeferTaskrun, Setup::CoopTaskrun, Setup::Plain];

    /// The name coring's `backend_description` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Setup::DeferTaskrun => "single_issuer+defer_taskrun",
            Setup::CoopTaskrun => "coop_taskrun",
            Setup::Plain => "plain",
        }
    }

    /// A ring of `entries` with this setup, not inherited by child processes (`dontfork`).
    ///
    /// # Errors
    ///
    /// `io_uring_setup(2)`'s error; `EINVAL` for a flag this kernel does not know.
    pub fn build(self, entries: u32) -> io::Result<IoUring> {
        let mut b = IoUring::builder();
        b.dontfork();
        if self == Setup::DeferTaskrun {
            b.setup_single_issuer().setup_defer_taskrun();
            b.setup_submit_all();
        }
        if self == Setup::CoopTaskrun {
            b.setup_coop_taskrun();
        }
        if self != Setup::Plain {
            b.setup_taskrun_flag();
        }
        b.build(entries)
    }
}

/// A ring with the first setup the kernel accepts (a setup refused with `EINVAL` gives way
/// to the next), and that setup.
///
/// # Errors
///
/// Any other setup error, or the last `EINVAL`.
pub fn ring(entries: u32) -> io::Result<(IoUring, Setup)> {
    let mut refused = io::Error::from_raw_os_error(libc::EINVAL);
    for setup in Setup::ALL {
        match setup.build(entries) {
            Ok(ring) => return Ok((ring, setup)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => refused = e,
            Err(e) => return Err(e),
        }
    }
    Err(refused)
}

/// Whether a ring can be set up *and entered* here (seccomp may allow the one and not the
/// other): one NOP, submitted and reaped. Returns the setup the ring got.
///
/// # Errors
///
/// What failed, in words.
pub fn probe() -> Result<Setup, String> {
    let (mut ring, setup) = ring(8).map_err(|e| format!("io_uring setup: {e}"))?;
    let nop = opcode::Nop::new().build();
    // SAFETY: a NOP carries no pointer.
    unsafe { ring.submission().push(&nop) }.map_err(|_| "the SQ is full".to_string())?;
    ring.submit_and_wait(1)
        .map_err(|e| format!("io_uring_enter: {e}"))?;
    let completed = ring.completion().next().is_some();
    if completed {
        Ok(setup)
    } else {
        Err("a NOP did not complete".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setups_are_tried_strongest_first() {
        assert_eq!(
            Setup::ALL.map(Setup::name),
            ["single_issuer+defer_taskrun", "coop_taskrun", "plain"]
        );
        // Where io_uring is blocked (seccomp, sysctl) there is nothing more to check.
        if let Ok((ring, setup)) = ring(8) {
            assert!(ring.params().sq_entries() >= 8);
            assert!(Setup::ALL.contains(&setup));
        }
    }
}
