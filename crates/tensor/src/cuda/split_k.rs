//! When a product's reduction is cut into slices (split-K): a GEMM whose output is small but
//! whose reduction is long, the convolution's weight gradient (`c_out x c_in·kh·kw`, reducing
//! over all `n·oh·ow` output positions: a million at a CIFAR ResNet-18's first stage at 1,024
//! views), gives cuBLAS only a few output tiles, so a few multiprocessors would do all of it
//! unless the library splits the reduction itself. Cutting it into slices, one strided-batched
//! GEMM over them into per-slice partial products, then a sum over the slices in a fixed order,
//! fills the GPU whatever cuBLAS's heuristics choose, and stays deterministic.

/// The output tile side assumed per block (cuBLAS's large tiles are 128 or 256 wide).
const TILE: usize = 128;

/// The shortest slice worth a GEMM of its own: below it the partial products cost more than
/// the parallelism they buy.
pub const MIN_SLICE: usize = 2048;

/// How many slices the reduction of an `m x n` product over `k` is cut into on a GPU with
/// `multiprocessors` SMs: 1 (not cut) when its output tiles already fill the GPU, otherwise
/// enough for about two blocks per SM, with slices at least [`MIN_SLICE`] long.
pub fn reduction_slices(m: usize, n: usize, k: usize, multiprocessors: usize) -> usize {
    let tiles = (m.div_ceil(TILE) * n.div_ceil(TILE)).max(1);
    let sms = multiprocessors.max(1);
    if tiles >= sms {
        return 1;
    }
    (2 * sms).div_ceil(tiles).min(k / MIN_SLICE).max(1)
}

/// `(slices, length)` for cutting a reduction of `k` into about `slices` slices: a divisor of
/// `k` between half of `slices` and `slices` when there is one (no remainder), otherwise
/// `slices` slices of `k / slices`, the last `k - slices·length` terms left as a tail.
pub fn slice_plan(k: usize, slices: usize) -> (usize, usize) {
    let s = slices.clamp(1, k.max(1));
    for d in (s.div_ceil(2)..=s).rev() {
        if k.is_multiple_of(d) {
            return (d, k / d);
        }
    }
    (s, k / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_products_with_few_output_tiles_and_long_reductions_are_cut() {
        // ResNet-18's first stage at 1,024 views: 64 x 576 outputs (5 tiles), a 1M reduction.
        assert_eq!(reduction_slices(64, 576, 1 << 20, 132), 53);
        // Its last stage: 512 x 4,608 outputs, 144 tiles, already more than 132 SMs.
        assert_eq!(reduction_slices(512, 4608, 16_384, 132), 1);
        // The SmallCnn's first convolution (32 x 9, one tile) at 1,024 views: 802,816 terms,
        // so 264 slices of at least 2,048 would be too many; 264 is the target and it fits.
        assert_eq!(reduction_slices(32, 9, 802_816, 132), 264);
        // A short reduction is never cut below MIN_SLICE.
        assert_eq!(reduction_slices(32, 9, 3 * MIN_SLICE - 1, 132), 2);
        assert_eq!(reduction_slices(32, 9, MIN_SLICE, 132), 1);
        assert_eq!(reduction_slices(32, 9, 100, 132), 1);
        // One SM: nothing to fill.
        assert_eq!(reduction_slices(32, 9, 1 << 20, 1), 1);
        assert_eq!(reduction_slices(0, 0, 1 << 20, 0), 1);
    }

    #[test]
    fn slice_plans_prefer_divisors_and_leave_a_short_tail_otherwise() {
        // 2^20 splits into 32 even slices rather than 53 ragged ones.
        assert_eq!(slice_plan(1 << 20, 53), (32, 1 << 15));
        assert_eq!(slice_plan(8192, 4), (4, 2048));
        // 6,727 = 7 · 31 · 31 has no divisor in 2..=3: three slices and a tail of 1.
        assert_eq!(slice_plan(6727, 3), (3, 2242));
        assert_eq!(slice_plan(10, 1), (1, 10));
        assert_eq!(slice_plan(5, 9), (5, 1));
        for (k, s) in [(802_816, 264), (200_704, 41), (50_176, 24), (6727, 3)] {
            let (d, len) = slice_plan(k, s);
            assert!(d * len <= k && k - d * len < d, "{k} {s}: {d} x {len}");
            assert!(d <= s && 2 * d >= s, "{k} {s}: {d}");
        }
    }
}
