//! Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
//!
//! A Philox generator maps a 128-bit counter and a 64-bit key to four independent 32-bit words.
//! Because every draw is a pure function of `(seed, counter)`, element `i` of a random tensor can
//! be computed by any thread, in any order, on any device, and comes out bit-identical: the CUDA
//! backend evaluates the same function in its kernels. Tensor-level draws (uniform, normal,
//! bernoulli, permutation) take a [`Generator`], which hands out disjoint counter ranges.

/// Philox multipliers and Weyl increments from the Random123 reference.
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// The Philox4x32-10 bijection: ten rounds over `counter` keyed by `key`.
#[inline]
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Converts 32 random bits to a uniform `f32` in `[0, 1)` (24 bits of mantissa).
#[inline(always)]
pub fn u32_to_unit_f32(x: u32) -> f32 {
    (x >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Converts 64 random bits to a uniform `f64` in `[0, 1)` (53 bits of mantissa).
#[inline(always)]
pub fn u64_to_unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// The random words for block `block` of stream `(seed, stream)`: a pure function, so any
/// thread or device can compute any block.
#[inline]
pub fn philox_block(seed: u64, stream: u64, block: u64) -> [u32; 4] {
    philox4x32(
        [
            block as u32,
            (block >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// A sequential Philox stream, for host-side draws (augmentation parameters, shuffles).
///
/// `Philox::new(seed, stream)` gives independent streams for different `stream` values, so that,
/// for example, sample `i` of epoch `e` can use stream `e << 32 | i` and get the same augmentation
/// whatever the thread count or batch order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Philox {
    seed: u64,
    stream: u64,
    block: u64,
    buf: [u32; 4],
    used: usize,
}

impl Philox {
    /// A stream identified by `(seed, stream)`, positioned at its start.
    pub fn new(seed: u64, stream: u64) -> Self {
        Philox {
            seed,
            stream,
            block: 0,
            buf: [0; 4],
            used: 4,
        }
    }

    /// The next 32 random bits.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            self.buf = philox_block(self.seed, self.stream, self.block);
            self.block = self.block.wrapping_add(1);
            self.used = 0;
        }
        let x = self.buf[self.used];
        self.used += 1;
        x
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        ((self.next_u32() as u64) << 32) | self.next_u32() as u64
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn uniform_f32(&mut self) -> f32 {
        u32_to_unit_f32(self.next_u32())
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn uniform_f64(&mut self) -> f64 {
        u64_to_unit_f64(self.next_u64())
    }

    /// Uniform in `[lo, hi)`.
    #[inline]
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform_f64()
    }

    /// Standard normal (Box-Muller on two uniform draws).
    pub fn normal_f64(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform_f64(); // in (0, 1]
        let u2 = self.uniform_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `true` with probability `p`.
    #[inline]
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform_f64() < p
    }

    /// A uniform integer in `[0, n)` (Lemire's multiply-shift with rejection; `n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Philox::below: n must be positive");
        loop {
            let x = self.next_u64();
            let m = (x as u128) * (n as u128);
            let lo = m as u64;
            if lo >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }

    /// Shuffles `xs` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

/// The source of randomness for tensor-level draws.
///
/// A generator is a seed plus an offset into its Philox stream; each draw of `n` values takes the
/// next `ceil(n / 4)` blocks, so element `i` of a draw depends only on `(seed, offset, i)`. That
/// makes draws independent of the thread count and reproducible on another device. The state can
/// be saved ([`Generator::state`]) and restored ([`Generator::from_state`]) with checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generator {
    seed: u64,
    offset: u64,
}

impl Generator {
    /// A generator at the start of the stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Generator { seed, offset: 0 }
    }

    /// `(seed, offset)`: everything needed to resume the stream exactly.
    pub fn state(&self) -> (u64, u64) {
        (self.seed, self.offset)
    }

    /// Restores a state returned by [`Generator::state`].
    pub fn from_state(seed: u64, offset: u64) -> Self {
        Generator { seed, offset }
    }

    /// Reserves blocks for `n` values and returns the first block's index.
    pub(crate) fn reserve(&mut self, n: usize) -> u64 {
        let start = self.offset;
        self.offset = self.offset.wrapping_add((n as u64).div_ceil(4));
        start
    }

    /// A sequential host-side stream derived from this generator (advances it by one block).
    pub fn fork(&mut self) -> Philox {
        let block = self.reserve(1);
        let w = philox_block(self.seed, u64::MAX, block);
        Philox::new(
            self.seed ^ ((w[0] as u64) << 32 | w[1] as u64),
            (w[2] as u64) << 32 | w[3] as u64,
        )
    }

    /// The seed this generator was created with.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_random123_known_answer() {
        // Known-answer vectors from Random123's kat_vectors for philox4x32_10.
        assert_eq!(
            philox4x32([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u32> = (0..10)
            .map({
                let mut p = Philox::new(7, 0);
                move |_| p.next_u32()
            })
            .collect();
        let b: Vec<u32> = (0..10)
            .map({
                let mut p = Philox::new(7, 0);
                move |_| p.next_u32()
            })
            .collect();
        let c: Vec<u32> = (0..10)
            .map({
                let mut p = Philox::new(7, 1);
                move |_| p.next_u32()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_moments_and_below_range() {
        let mut p = Philox::new(1, 2);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| p.uniform_f64()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.003, "var {var}");
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[p.below(7) as usize] += 1;
        }
        for c in counts {
            assert!((c as f64 - 10_000.0).abs() < 500.0, "{counts:?}");
        }
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = Philox::new(3, 0);
        let mut perm = p.permutation(1000);
        perm.sort_unstable();
        assert_eq!(perm, (0..1000).collect::<Vec<_>>());
    }
}
