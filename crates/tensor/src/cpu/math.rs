//! Vectorisable f32 elementary functions (no libm calls, branch-free selects), so that loops
//! over them compile to SIMD code. f64 keeps the standard library's functions (it serves
//! gradient checks and references, where speed matters less than the last ulp).

/// e^x for f32 with at most about 2 ulp error; exactly 0 below -87.34 (so masked `-inf`
/// logits contribute exactly nothing), +inf above 88.72, NaN for NaN.
///
/// Cephes' method: x = n·ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial, 2^n by
/// building the exponent bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.336_55, 88.376_26);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    // 2^n from the exponent bits. `n + 127` is an integer in [1, 255] here; adding 2^23 puts
    // it in the low mantissa bits, and the shift drops everything above them. (An `as i32`
    // conversion would saturate per lane, which compiles to scalar code and stops the loop
    // from vectorising.)
    let biased = (n + 127.0 + 8_388_608.0).to_bits();
    let scale = f32::from_bits(biased << 23);
    let y = er * scale;
    let y = if x < -87.336_55 { 0.0 } else { y };
    let y = if x > 88.722_83 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// erf(x) for f32, branch-free so loops over it vectorise: absolute error below 4e-7
/// everywhere and relative error below 1e-6 for |x| < 0.5; odd; ±1 beyond |x| ≈ 3.9; NaN for
/// NaN.
///
/// |x| < 0.5: the Maclaurin series to x¹¹. Otherwise Abramowitz & Stegun 7.1.26,
/// `1 - t (a1 + t (a2 + ...)) e^(-x²)` with `t = 1 / (1 + p |x|)`, using [`exp_f32`].
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    erf_gauss_f32(x).0
}

/// `(erf(x), e^(-x²))` for f32: [`erf_f32`] computes the Gaussian factor anyway, so callers
/// that need both get it without a second exponential.
#[inline(always)]
pub fn erf_gauss_f32(x: f32) -> (f32, f32) {
    const TWO_OVER_SQRT_PI: f32 = std::f32::consts::FRAC_2_SQRT_PI;
    let z = x * x;
    let mut s = -1.0f32 / 1320.0;
    s = s * z + 1.0 / 216.0;
    s = s * z - 1.0 / 42.0;
    s = s * z + 1.0 / 10.0;
    s = s * z - 1.0 / 3.0;
    s = s * z + 1.0;
    let small = TWO_OVER_SQRT_PI * x * s;
    let a = x.abs();
    let gauss = exp_f32(-z);
    let big = 1.0 - erfc_factor(a) * gauss;
    let big = if x < 0.0 { -big } else { big };
    let y = if a < 0.5 { small } else { big };
    (if x.is_nan() { x } else { y }, gauss)
}

/// The Abramowitz-Stegun 7.1.26 factor `t·P(t)`, `t = 1 / (1 + 0.3275911·a)`, with
/// `erfc(a) ≈ t·P(t)·e^(-a²)` for `a ≥ 0` (absolute error about 1.5e-7 in exact arithmetic).
#[inline(always)]
fn erfc_factor(a: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let mut p = 1.061_405_4f32;
    p = p * t - 1.453_152_1;
    p = p * t + 1.421_413_7;
    p = p * t - 0.284_496_72;
    p = p * t + 0.254_829_6;
    p * t
}

/// `(1 + erf(x), e^(-x²))` for f32, for the GELU `x·Φ(x) = x·(1 + erf(x/√2))/2` and its
/// derivative: the Abramowitz-Stegun tail `erfc(|x|) ≈ t·P(t)·e^(-x²)` alone, as `2 - tail`
/// for `x ≥ 0` and `tail` for `x < 0`. Absolute error below 7e-7 (worst near x = 0.07, where
/// the value is 1.08); for negative x there is no cancellation against 1, and the series that
/// [`erf_gauss_f32`] needs for the relative accuracy of `erf` near 0 is not needed, since
/// `1 + erf` is near 1 there.
#[inline(always)]
pub fn erf1p_gauss_f32(x: f32) -> (f32, f32) {
    let gauss = exp_f32(-(x * x));
    let tail = erfc_factor(x.abs()) * gauss;
    // NaN propagates through `tail` (and `2 - tail`) by itself.
    (if x < 0.0 { tail } else { 2.0 - tail }, gauss)
}

#[cfg(test)]
mod tests {
    use super::{erf1p_gauss_f32, erf_f32, erf_gauss_f32, exp_f32};

    #[test]
    fn erf_f32_matches_f64_erf() {
        let (mut worst_abs, mut worst_rel_small) = (0.0f64, 0.0f64);
        let mut x = -6.0f32;
        while x < 6.0 {
            let (a, b) = (erf_f32(x) as f64, libm::erf(x as f64));
            worst_abs = worst_abs.max((a - b).abs());
            if x.abs() < 0.5 && x != 0.0 {
                worst_rel_small = worst_rel_small.max(((a - b) / b).abs());
            }
            x += 0.000_37;
        }
        assert!(worst_abs < 4e-7, "worst absolute error {worst_abs}");
        assert!(
            worst_rel_small < 1e-6,
            "worst relative error near 0 {worst_rel_small}"
        );
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        assert!(erf_f32(f32::NAN).is_nan());
    }

    #[test]
    fn erf_gauss_f32_pairs_erf_with_its_gaussian() {
        let mut x = -9.0f32;
        while x < 9.0 {
            let (e, g) = erf_gauss_f32(x);
            assert_eq!(e.to_bits(), erf_f32(x).to_bits(), "x {x}");
            let want = (-(x as f64) * (x as f64)).exp();
            // x² rounded to f32 carries a relative error of 6e-8, i.e. an absolute error of
            // 6e-8·x² in the exponent: the tolerance grows with x².
            let tol = 1e-6 * want * (1.0 + (x * x) as f64);
            assert!((g as f64 - want).abs() <= tol, "x {x}: {g} vs {want}");
            x += 0.013;
        }
        assert!(erf_gauss_f32(f32::NAN).1.is_nan());
    }

    #[test]
    fn erf1p_gauss_f32_matches_f64_erfc() {
        let mut x = -9.0f32;
        let (mut worst, mut worst_at) = (0.0f64, 0.0f32);
        while x < 9.0 {
            let (e, g) = erf1p_gauss_f32(x);
            let err = (e as f64 - libm::erfc(-(x as f64))).abs();
            if err > worst {
                worst = err;
                worst_at = x;
            }
            assert_eq!(g.to_bits(), erf_gauss_f32(x).1.to_bits(), "x {x}");
            x += 0.000_91;
        }
        assert!(worst < 7e-7, "worst absolute error {worst} at {worst_at}");
        assert_eq!(erf1p_gauss_f32(f32::INFINITY).0, 2.0);
        assert_eq!(erf1p_gauss_f32(f32::NEG_INFINITY).0, 0.0);
        assert!((erf1p_gauss_f32(0.0).0 - 1.0).abs() < 7e-7);
        assert!(erf1p_gauss_f32(f32::NAN).0.is_nan());
    }

    #[test]
    fn exp_f32_matches_std_within_2_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max((a - b).abs() / b);
            x += 0.000_73;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
