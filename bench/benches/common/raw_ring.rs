//! The ring setups coring tries (src/driver/uring/mod.rs, `Uring::setup`), in the same
//! order, shared by the benches' hand-written io_uring loops so they compete on equal
//! terms: each flavour falls back to the next on EINVAL (a flag this kernel does not know).

use std::io;

use io_uring::IoUring;

/// A ring with the first setup the kernel accepts, and the setup's name.
pub fn ring(entries: u32) -> io::Result<(IoUring, &'static str)> {
    type Flavour = (&'static str, fn(&mut io_uring::Builder));
    let flavours: [Flavour; 3] = [
        ("single_issuer+defer_taskrun", |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag()
                .setup_submit_all();
        }),
        ("coop_taskrun", |b| {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }),
        ("plain", |_| {}),
    ];
    let mut last = None;
    for (name, apply) in flavours {
        let mut b = IoUring::builder();
        b.dontfork();
        apply(&mut b);
        match b.build(entries) {
            Ok(ring) => return Ok((ring, name)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}
