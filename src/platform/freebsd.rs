//! FreeBSD-only choices (its socket calls are shared with Linux in `sockflags.rs`).

/// The option that lets listeners share a port, the kernel spreading connections among
/// them: FreeBSD's plain SO_REUSEPORT shares without spreading (the last listener gets
/// them all); SO_REUSEPORT_LB (FreeBSD 12 and later) balances.
pub(crate) const SO_REUSEPORT: i32 = libc::SO_REUSEPORT_LB;
