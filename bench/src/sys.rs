//! Thin wrappers over the clocks, `/proc` files and CPU pinning the runners use.

use std::time::Duration;

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), if the kernel says.
pub fn thread_cpu() -> Option<Duration> {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process, every thread included (`CLOCK_PROCESS_CPUTIME_ID`):
/// the fallback's blocking pool and io_uring's kernel workers count too.
pub fn process_cpu() -> Option<Duration> {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; clock_gettime only
    // writes into it.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// How long the calling thread has sat runnable but waiting for a CPU, from
/// `/proc/thread-self/schedstat` (`"<ns on cpu> <ns waiting> <slices>"`); `None` where the
/// kernel does not keep it.
pub fn thread_run_wait() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    parse_schedstat_wait(&s)
}

/// The waiting-time field of a schedstat line.
pub fn parse_schedstat_wait(line: &str) -> Option<Duration> {
    line.split_whitespace()
        .nth(1)?
        .parse()
        .ok()
        .map(Duration::from_nanos)
}

/// A thread's CPU time and wait-for-CPU time at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThreadUsage {
    /// CPU time used so far.
    pub cpu: Option<Duration>,
    /// Time spent runnable but not running (other processes had the CPU).
    pub run_wait: Option<Duration>,
}

impl ThreadUsage {
    /// The calling thread's usage now.
    pub fn now() -> ThreadUsage {
        ThreadUsage {
            cpu: thread_cpu(),
            run_wait: thread_run_wait(),
        }
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: ThreadUsage) -> ThreadUsage {
        let diff =
            |b: Option<Duration>, a: Option<Duration>| b.zip(a).map(|(b, a)| b.saturating_sub(a));
        ThreadUsage {
            cpu: diff(self.cpu, earlier.cpu),
            run_wait: diff(self.run_wait, earlier.run_wait),
        }
    }
}

/// The CPUs this process may run on, in order (empty if unknown).
pub fn cpus() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// Pins the calling thread to `core` (when there is one); says whether it worked.
pub fn pin(core: Option<core_affinity::CoreId>) -> bool {
    core.is_some_and(core_affinity::set_for_current)
}

/// Pins the calling thread to `core` (when there is one); says so on stderr when it cannot.
pub fn pin_or_warn(core: Option<core_affinity::CoreId>) {
    if let Some(c) = core.filter(|&c| !pin(Some(c))) {
        eprintln!("could not pin a thread to CPU {}", c.id);
    }
}

/// "CPU n", or what an unpinned thread is called in the tables.
pub fn core_name(core: Option<core_affinity::CoreId>) -> String {
    match core {
        Some(c) => format!("CPU {}", c.id),
        None => "an unpinned thread".to_string(),
    }
}

/// The CPUs this process may use, for a bench that pins two threads apart (`sides`); warns
/// when there are fewer than 2, since the two then share one and `figures` do not compare
/// with other machines.
pub fn usable_cores(bench: &str, sides: &str, figures: &str) -> Vec<core_affinity::CoreId> {
    let cores = cpus();
    if cores.len() < 2 {
        eprintln!(
            "{bench}: fewer than 2 CPUs usable; {sides} share a CPU, so {figures} are not \
             comparable with other machines"
        );
    }
    cores
}

/// How often the scheduler has taken a CPU away from this process so far (involuntary
/// context switches, `getrusage`); `None` if the kernel would not say.
pub fn preemptions() -> Option<u64> {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage that outlives the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (rc == 0).then_some(ru.ru_nivcsw as u64)
}

/// The running kernel's release, e.g. `6.8.0-45-generic`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_wait_is_the_second_field() {
        assert_eq!(
            parse_schedstat_wait("123456 7890 12\n"),
            Some(Duration::from_nanos(7890))
        );
        assert_eq!(parse_schedstat_wait("123456"), None);
        assert_eq!(parse_schedstat_wait("1 x 3"), None);
    }

    #[test]
    fn usage_since_subtracts_and_saturates() {
        let a = ThreadUsage {
            cpu: Some(Duration::from_millis(10)),
            run_wait: Some(Duration::from_millis(5)),
        };
        let b = ThreadUsage {
            cpu: Some(Duration::from_millis(25)),
            run_wait: None,
        };
        let d = b.since(a);
        assert_eq!(d.cpu, Some(Duration::from_millis(15)));
        assert_eq!(d.run_wait, None);
        assert_eq!(a.since(b).cpu, Some(Duration::ZERO));
    }
}
