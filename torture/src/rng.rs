//! A small seeded generator (SplitMix64): every random choice of a run comes from the run's
//! seed, so a failing run is replayed with `--seed`. (Kernel timing is not seeded: a replay
//! makes the same choices, not necessarily the same interleaving.)

/// SplitMix64: fast, tiny, and good enough to pick operations and delays.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        // Multiply-shift: no modulo bias worth caring about at these sizes.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform index into a collection of `len` elements.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// An independent generator for a sub-task (a worker, a connection).
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let x = self.next_u64().to_le_bytes();
            let take = (len - v.len()).min(8);
            v.extend_from_slice(&x[..take]);
        }
        v
    }
}

/// The seed of one scenario on one backend, derived from the run's seed, so that
/// `coring-torture storm --backend fallback --seed S` replays exactly what the full run
/// with seed `S` did for that pair.
pub fn derive(seed: u64, scenario: &str, backend: &str) -> u64 {
    // FNV-1a over the names, mixed with the seed through one SplitMix step.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scenario.bytes().chain([0]).chain(backend.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    Rng::new(seed ^ h).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_choices() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(
            derive(1, "storm", "io_uring"),
            derive(1, "storm", "fallback")
        );
        assert_eq!(
            derive(1, "storm", "io_uring"),
            derive(1, "storm", "io_uring")
        );
    }

    #[test]
    fn bounds_hold() {
        let mut r = Rng::new(3);
        for _ in 0..10_000 {
            assert!(r.below(5) < 5);
            let x = r.range(10, 12);
            assert!((10..=12).contains(&x));
        }
        assert_eq!(r.bytes(13).len(), 13);
    }
}
