//! `Rng`: a seeded splitmix64, enough randomness for choosing calls and faults, so a run
//! can be replayed from its seed; no dependency.

/// splitmix64 over a 64-bit state.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `[lo, hi)` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> std::time::Duration {
        std::time::Duration::from_millis(lo + self.next_u64() % (hi.saturating_sub(lo)).max(1))
    }

    /// A non-empty random subset of `items`, in order.
    pub fn subset<'a>(&mut self, items: &[&'a str]) -> Vec<&'a str> {
        let mask = 1 + self.below((1 << items.len()) - 1);
        items
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, f)| *f)
            .collect()
    }

    /// An independent generator derived from this one's next value and `stream`.
    pub fn fork(&mut self, stream: u64) -> Rng {
        Rng(self.next_u64() ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03))
    }
}
