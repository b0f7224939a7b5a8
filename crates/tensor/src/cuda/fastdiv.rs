//! Division by a divisor fixed on the host, done on the GPU as a multiply-high and a shift.

/// Division by a fixed `d >= 1` of dividends below 2^31 as a multiply-high and a shift
/// (Granlund and Montgomery's round-up method); mirrors `struct FastDiv` in
/// `kernels/common.cuh`. The kernels use it where a 64-bit division per element would cost more
/// than the element's memory traffic (convolution, batch norm).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FastDiv {
    d: u32,
    m: u32,
    s: u32,
}

// SAFETY: plain old data laid out as the CUDA struct.
unsafe impl cudarc::driver::DeviceRepr for FastDiv {}

impl FastDiv {
    /// The multiplier and shift for divisor `d` (at least 1): with `l = ceil(log2 d)`,
    /// `m = ceil(2^(31 + l) / d)` and `s = l - 1`; `d = 1` is `m = 0` (the quotient is `x`).
    pub(crate) fn new(d: u32) -> FastDiv {
        let d = d.max(1);
        if d == 1 {
            return FastDiv { d, m: 0, s: 0 };
        }
        let l = 32 - (d - 1).leading_zeros();
        let m = (1u64 << (31 + l)).div_ceil(u64::from(d));
        FastDiv {
            d,
            m: m as u32,
            s: l - 1,
        }
    }

    /// `x / d` as the kernels compute it, for `x < 2^31`.
    #[cfg(test)]
    fn div(&self, x: u32) -> u32 {
        if self.m == 0 {
            x
        } else {
            (((u64::from(x) * u64::from(self.m)) >> 32) as u32) >> self.s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FastDiv;

    /// The multiply-high division equals integer division for divisors up to 2^31 and
    /// dividends across the whole range below 2^31, the edges included.
    #[test]
    fn fast_division_is_exact_below_two_to_the_31() {
        let mut divisors: Vec<u32> = (1..=300).collect();
        for e in 2..=31u32 {
            let p = 1u32 << e;
            divisors.extend([p - 1, p, p + 1]);
        }
        divisors.extend([1000, 1024 * 1024, 196, 49, 3_000_017, i32::MAX as u32]);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for &d in &divisors {
            let f = FastDiv::new(d);
            let mut xs: Vec<u32> = vec![0, 1, d - 1, d, d.saturating_add(1), i32::MAX as u32];
            xs.extend((1..40u32).map(|k| k.saturating_mul(d).min(i32::MAX as u32)));
            xs.extend((1..40u32).map(|k| k.saturating_mul(d).saturating_sub(1)));
            for _ in 0..200 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                xs.push(((state >> 33) as u32) & (i32::MAX as u32));
            }
            for x in xs.into_iter().filter(|&x| x <= i32::MAX as u32) {
                assert_eq!(f.div(x), x / d, "{x} / {d} with {f:?}");
            }
        }
    }
}
