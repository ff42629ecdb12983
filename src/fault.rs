//! Fault injection for your own tests (feature `fault-injection`): make real operations on
//! chosen files and sockets fail with EIO or ENOSPC, transfer less than asked, or complete
//! late, at the Nth operation or with a seeded probability, on every backend.
//!
//! Storage code is only trustworthy once its error paths have run. A rule names one open
//! file or socket (anything that implements [`FaultTarget`]: `File`, `TcpStream`,
//! `TcpListener`, `UdpSocket`, and on Unix `UnixStream`, `UnixListener`), the kinds of
//! operation it applies to ([`OpKind`]), what happens ([`Fault`]) and when ([`When`]). It
//! holds from [`inject`] until the returned [`Injected`] is dropped, for operations started
//! on the thread that injected it (a runtime's own thread). Operations on other files, and
//! those the rule's trigger passes over, run untouched.
//!
//! - [`Fault::Io`], [`Fault::NoSpace`], [`Fault::Error`]: the operation ends with that
//!   error without reaching the kernel, as if the device had failed.
//! - [`Fault::Short`]: a read or write (or receive or send) of one buffer moves at most that
//!   many bytes: the kernel really does a shorter transfer.
//! - [`Fault::Delay`]: the operation starts that much later (a timer), so it completes late.
//!
//! ```
//! # #[cfg(feature = "fault-injection")]
//! # fn main() -> std::io::Result<()> {
//! use coring::fault::{inject, Fault, OpKind, Rule, When};
//! use coring::fs::File;
//!
//! coring::start(async {
//!     let path = std::env::temp_dir().join(format!("coring-fault-doc-{}", std::process::id()));
//!     let file = File::create(&path).await?;
//!     // The second write of this file fails with ENOSPC; the others succeed.
//!     let rule = inject(&file, Rule::new(Fault::NoSpace).on(OpKind::Write).when(When::Nth(2)));
//!     file.write_all_at(b"one".to_vec(), 0).await.0?;
//!     let err = file.write_all_at(b"two".to_vec(), 3).await.0.unwrap_err();
//!     assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
//!     file.write_all_at(b"three".to_vec(), 3).await.0?;
//!     assert_eq!(rule.hits(), 1);
//!     drop(rule);
//!     std::fs::remove_file(&path)
//! })
//! # }
//! # #[cfg(not(feature = "fault-injection"))]
//! # fn main() {}
//! ```

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::driver::desc::{FdRef, OpDesc};
use crate::platform::c;

/// What happens to an operation a rule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It fails with an IO error (`EIO`; `ERROR_IO_DEVICE` on Windows).
    Io,
    /// It fails because the device is full (`ENOSPC`; `ERROR_DISK_FULL` on Windows).
    NoSpace,
    /// It fails with this raw OS error code.
    Error(i32),
    /// A single-buffer read, write, receive or send moves at most this many bytes (at
    /// least 1). Other operations run untouched.
    Short(u32),
    /// It starts this much later.
    Delay(Duration),
}

/// Which operations a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Reads and receives (`read_at`, vectored and fixed reads, `read`, `recv_from`).
    Read,
    /// Writes and sends (`write_at`, vectored and fixed writes, `write`, `send_to`).
    Write,
    /// `sync_all`, `sync_data`, `sync_range`.
    Sync,
    /// Every operation on the file or socket, but its close.
    Any,
}

/// When a rule fires, counting only the operations it applies to, from its injection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    /// Every one.
    Always,
    /// The Nth only (1 is the next one).
    Nth(u64),
    /// The Nth and every one after it.
    From(u64),
    /// Each with this probability (0.0 to 1.0), from a generator seeded with `seed`, so a
    /// failing run replays with the same seed.
    Chance {
        /// The probability of each operation being hit.
        p: f64,
        /// The generator's seed.
        seed: u64,
    },
}

/// A fault, the operations it applies to and when it fires; see [`inject`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    fault: Fault,
    kind: OpKind,
    when: When,
}

impl Rule {
    /// `fault`, on every operation ([`OpKind::Any`], [`When::Always`]) until narrowed.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            fault,
            kind: OpKind::Any,
            when: When::Always,
        }
    }

    /// Applies only to operations of `kind`.
    pub fn on(mut self, kind: OpKind) -> Rule {
        self.kind = kind;
        self
    }

    /// Fires as `when` says.
    pub fn when(mut self, when: When) -> Rule {
        self.when = when;
        self
    }
}

/// A file or socket rules can name (sealed: coring's own types).
pub trait FaultTarget: sealed::Sealed {
    /// The identity of the open file (never reused, unlike descriptor numbers).
    #[doc(hidden)]
    fn fault_id(&self) -> u64;
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// A rule in force; dropping it lifts the rule.
#[derive(Debug)]
pub struct Injected {
    id: u64,
    hits: Rc<Cell<u64>>,
}

impl Injected {
    /// Operations the rule has hit so far.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }
}

impl Drop for Injected {
    fn drop(&mut self) {
        RULES.with(|r| {
            let mut r = r.borrow_mut();
            r.retain(|rule| rule.id != self.id);
            ANY.with(|a| a.set(!r.is_empty()));
        });
    }
}

struct Active {
    id: u64,
    target: u64,
    rule: Rule,
    /// Operations the rule applied to so far.
    seen: u64,
    rng: u64,
    hits: Rc<Cell<u64>>,
}

thread_local! {
    static RULES: RefCell<Vec<Active>> = const { RefCell::new(Vec::new()) };
    /// Whether any rule is in force: the one check an operation pays.
    static ANY: Cell<bool> = const { Cell::new(false) };
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// Puts `rule` in force for operations on `target` started on this thread, until the
/// returned guard is dropped. Rules stack: the first one (in injection order) that fires for
/// an operation decides its fate.
///
/// # Panics
///
/// `Fault::Short(0)`, or a `When::Chance` probability outside 0.0..=1.0 (a test's mistake).
pub fn inject(target: &impl FaultTarget, rule: Rule) -> Injected {
    assert!(
        rule.fault != Fault::Short(0),
        "coring::fault: Fault::Short(0) would make no progress; use Fault::Short(1) or more"
    );
    if let When::Chance { p, .. } = rule.when {
        assert!(
            (0.0..=1.0).contains(&p),
            "coring::fault: When::Chance takes a probability from 0.0 to 1.0, not {p}"
        );
    }
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let hits = Rc::new(Cell::new(0));
    let rng = match rule.when {
        When::Chance { seed, .. } => seed | 1,
        _ => 1,
    };
    RULES.with(|r| {
        r.borrow_mut().push(Active {
            id,
            target: target.fault_id(),
            rule,
            seen: 0,
            rng,
            hits: hits.clone(),
        })
    });
    ANY.with(|a| a.set(true));
    Injected { id, hits }
}

/// What the rules decided for an operation, once (an operation whose submission is put
/// off, by the inline budget or a readiness wait, keeps its verdict).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Verdict {
    /// Submit it, moving at most this many bytes if `Some` (see [`shorten`]).
    Submit(Option<u32>),
    /// End at once with this error code.
    Fail(i32),
    /// Start after this long.
    Delay(Duration),
}

/// The kind of a description, and the file it acts on.
fn classify(desc: &OpDesc) -> Option<(OpKind, FdRef)> {
    match *desc {
        OpDesc::Read { fd, .. }
        | OpDesc::Readv { fd, .. }
        | OpDesc::Recv { fd, .. }
        | OpDesc::RecvMsg { fd, .. } => Some((OpKind::Read, fd)),
        OpDesc::Write { fd, .. }
        | OpDesc::Writev { fd, .. }
        | OpDesc::Send { fd, .. }
        | OpDesc::SendMsg { fd, .. }
        | OpDesc::SendFile { sock: fd, .. }
        | OpDesc::Splice {
            off_in: None,
            fd_out: fd,
            ..
        } => Some((OpKind::Write, fd)),
        // From a file into a pipe: a read of the file.
        OpDesc::Splice {
            off_in: Some(_),
            fd_in: fd,
            ..
        } => Some((OpKind::Read, fd)),
        OpDesc::Fsync { fd, .. } | OpDesc::SyncFileRange { fd, .. } => Some((OpKind::Sync, fd)),
        OpDesc::Fallocate { fd, .. }
        | OpDesc::Ftruncate { fd, .. }
        | OpDesc::Fadvise { fd, .. }
        | OpDesc::Accept { fd, .. }
        | OpDesc::Connect { fd, .. }
        | OpDesc::RecvMulti { fd }
        | OpDesc::Poll { fd, .. }
        | OpDesc::AcceptMulti { fd }
        | OpDesc::Shutdown { fd, .. } => Some((OpKind::Any, fd)),
        OpDesc::Nop
        | OpDesc::OpenAt { .. }
        | OpDesc::Close { .. }
        | OpDesc::Statx { .. }
        | OpDesc::UnlinkAt { .. }
        | OpDesc::RenameAt { .. }
        | OpDesc::MkdirAt { .. }
        | OpDesc::OpenAt2 { .. }
        | OpDesc::SymlinkAt { .. }
        | OpDesc::LinkAt { .. }
        | OpDesc::ReadLinkAt { .. }
        | OpDesc::ReadDir { .. } => None,
    }
}

/// `desc` moving at most `max` bytes, if it is a single-buffer transfer.
pub(crate) fn shorten(desc: OpDesc, max: u32) -> OpDesc {
    match desc {
        OpDesc::Read {
            fd,
            buf,
            len,
            offset,
            buf_index,
        } => OpDesc::Read {
            fd,
            buf,
            len: len.min(max),
            offset,
            buf_index,
        },
        OpDesc::Write {
            fd,
            buf,
            len,
            offset,
            buf_index,
        } => OpDesc::Write {
            fd,
            buf,
            len: len.min(max),
            offset,
            buf_index,
        },
        OpDesc::Recv {
            fd,
            buf,
            len,
            flags,
            stream,
            buf_index,
        } => OpDesc::Recv {
            fd,
            buf,
            len: len.min(max),
            flags,
            stream,
            buf_index,
        },
        OpDesc::Send {
            fd,
            buf,
            len,
            flags,
            stream,
            zerocopy,
            buf_index,
        } => OpDesc::Send {
            fd,
            buf,
            len: len.min(max),
            flags,
            stream,
            zerocopy,
            buf_index,
        },
        other => other,
    }
}

/// Asks the rules in force about `desc`, counting it as one operation. `Submit(None)` when
/// none applies (at once when no rule is in force anywhere on the thread).
#[inline]
pub(crate) fn apply(desc: &OpDesc) -> Verdict {
    if !ANY.with(Cell::get) {
        return Verdict::Submit(None);
    }
    let Some((kind, fd)) = classify(desc) else {
        return Verdict::Submit(None);
    };
    RULES.with(|r| {
        for rule in r.borrow_mut().iter_mut() {
            if rule.target != fd.id || !(rule.rule.kind == OpKind::Any || rule.rule.kind == kind) {
                continue;
            }
            rule.seen += 1;
            let fires = match rule.rule.when {
                When::Always => true,
                When::Nth(n) => rule.seen == n,
                When::From(n) => rule.seen >= n,
                When::Chance { p, .. } => {
                    // xorshift64*: a uniform value in 0..1.
                    rule.rng ^= rule.rng >> 12;
                    rule.rng ^= rule.rng << 25;
                    rule.rng ^= rule.rng >> 27;
                    let x = rule.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
                    (x as f64 / (1u64 << 53) as f64) < p
                }
            };
            if !fires {
                continue;
            }
            rule.hits.set(rule.hits.get() + 1);
            return match rule.rule.fault {
                Fault::Io => Verdict::Fail(c::EIO),
                Fault::NoSpace => Verdict::Fail(c::ENOSPC),
                Fault::Error(code) => Verdict::Fail(code),
                Fault::Short(max) => Verdict::Submit(Some(max)),
                Fault::Delay(d) => Verdict::Delay(d),
            };
        }
        Verdict::Submit(None)
    })
}
