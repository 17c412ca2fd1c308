//! What the benchmarks share: a fixed random stream, so a workload is the same on every run
//! and machine (the figures in the README name these workloads).

/// SplitMix64: a fixed, dependency-free stream of random numbers.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (modulo: the bias is nil for the small `n` of the benchmarks).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
