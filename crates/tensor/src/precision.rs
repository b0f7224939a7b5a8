//! How the matmul-heavy ops compute on f32 tensors: exact f32, TF32 or bf16 operands with f32
//! accumulation (PyTorch's `set_float32_matmul_precision("highest" | "high" | "medium")`).
//!
//! Tensors, parameters and gradients stay f32 whatever is chosen (the f32 "master weights");
//! only the operands of the products are rounded. It applies to [`Tensor::matmul`],
//! [`Tensor::linear`] and [`Tensor::conv2d`], forward and backward, and so to everything built
//! on them. The fused attention ([`Tensor::attention_qkv`]) stays f32 on the CPU; on a GPU at
//! `Bf16` (compute capability 8.0+, heads up to 64 wide) it multiplies bf16 operands on the
//! tensor cores (`kernels/attention_mma.cu`), else f32; where `ops::attention::
//! with_gpu_attention` picks the composed form, its matmuls follow this setting.
//!
//! On a GPU, `Tf32` runs cuBLAS with `CUBLAS_COMPUTE_32F_FAST_TF32` and `Bf16` casts the
//! operands to bf16 and runs `cublasGemmStridedBatchedEx` with f32 accumulation and output
//! (tensor cores). On the CPU the operands are rounded the same way (to nearest even), so runs
//! compare across devices up to summation order. With `Bf16` on a CPU with AVX-512 BF16
//! (`cpu::gemm::bf16_available`) the GEMMs round the operands as they pack them and multiply
//! them with `vdpbf16ps` (f32 accumulation; denormal operands count as zero), about twice the
//! f32 rate; elsewhere, and for TF32, the rounded operands are multiplied in f32, which is no
//! faster than f32.
//!
//! The setting is per thread and scoped ([`with_matmul_precision`]); a backward pass computes
//! its products with the setting in force when it runs, so run forward and backward in the same
//! scope (as `Trainer` does).
//!
//! ```
//! use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
//! use selfsup_tensor::{DType, Tensor};
//!
//! let a = Tensor::from_vec(vec![1.0f32 + 1.0 / 512.0, 1.0], &[1, 2])?;
//! let b = Tensor::ones(&[2, 1], DType::F32);
//! let exact = a.matmul(&b)?.item()?;
//! let bf16 = with_matmul_precision(MatmulPrecision::Bf16, || a.matmul(&b))?.item()?;
//! assert_eq!(exact, 2.0 + 1.0 / 512.0);
//! assert_eq!(bf16, 2.0); // 1 + 2^-9 rounds to 1 in bf16 (8 bits of mantissa)
//! # Ok::<(), selfsup_tensor::Error>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use crate::error::Result;
use crate::{DType, Tensor};

/// The precision of the products inside matmul, linear and conv2d on f32 tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MatmulPrecision {
    /// Full f32 products (the default).
    #[default]
    F32,
    /// Operands rounded to TF32 (10 bits of mantissa), f32 accumulation.
    Tf32,
    /// Operands rounded to bf16 (7 bits of mantissa), f32 accumulation.
    Bf16,
}

impl MatmulPrecision {
    /// Every precision, in the order of [`MatmulPrecision::name`]'s list.
    pub const ALL: [MatmulPrecision; 3] = [
        MatmulPrecision::F32,
        MatmulPrecision::Tf32,
        MatmulPrecision::Bf16,
    ];

    /// The name used in configs and on the command line: `f32`, `tf32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            MatmulPrecision::F32 => "f32",
            MatmulPrecision::Tf32 => "tf32",
            MatmulPrecision::Bf16 => "bf16",
        }
    }

    /// Bits of mantissa the operands keep (23 for f32).
    pub fn mantissa_bits(self) -> u32 {
        match self {
            MatmulPrecision::F32 => 23,
            MatmulPrecision::Tf32 => 10,
            MatmulPrecision::Bf16 => 7,
        }
    }
}

impl fmt::Display for MatmulPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MatmulPrecision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        MatmulPrecision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown matmul precision {s:?}: use f32, tf32 or bf16"))
    }
}

thread_local! {
    static CURRENT: Cell<MatmulPrecision> = const { Cell::new(MatmulPrecision::F32) };
}

/// The precision in force on this thread.
pub fn matmul_precision() -> MatmulPrecision {
    CURRENT.with(|c| c.get())
}

/// Runs `f` with `p` in force on this thread, then restores the previous setting (also when
/// `f` panics).
pub fn with_matmul_precision<R>(p: MatmulPrecision, f: impl FnOnce() -> R) -> R {
    struct Restore(MatmulPrecision);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(p)));
    f()
}

/// The dtype in which the matmul-heavy ops read an input `x` as a product operand under the
/// precision in force: bf16 for an f32 tensor on a GPU at [`MatmulPrecision::Bf16`] (they
/// cast it), else `x`'s own dtype. A layer whose output is only read as such an operand can
/// write it in this dtype and spare the op its cast ([`Tensor::layer_norm_as`]; a
/// transformer block's pre-norms do). Under
/// [`crate::ops::fusion::GpuFusion::Composed`] (which measures what the fusions buy) it is
/// `x`'s own dtype everywhere.
///
/// [`Tensor::linear`], [`Tensor::mlp2`] and [`Tensor::qkv_attention`] take a bf16 input with
/// f32 parameters as such an operand: its values are those of the f32 input it rounds, and its
/// gradient is bf16 (the f32 gradient rounded once, as a bf16 product stores it). On a GPU at
/// bf16 precision they read it as it is; elsewhere they widen it to f32 first.
pub fn operand_dtype(x: &Tensor) -> DType {
    if x.dtype() == DType::F32
        && !x.device().is_cpu()
        && matmul_precision() == MatmulPrecision::Bf16
        && crate::ops::fusion::gpu_fusion() == crate::ops::fusion::GpuFusion::Fused
    {
        DType::BF16
    } else {
        x.dtype()
    }
}

/// Whether `x` is a bf16 operand for f32 parameter `w` (see [`operand_dtype`]).
pub(crate) fn is_bf16_operand(x: &Tensor, w: &Tensor) -> bool {
    x.dtype() == DType::BF16 && w.dtype() == DType::F32
}

/// Whether the GPU's bf16 products take `x` as it is, or its bf16 copy: an f32 input, or a
/// bf16 operand of f32 parameter `w`, on a GPU at [`MatmulPrecision::Bf16`].
#[cfg(feature = "cuda")]
pub(crate) fn gpu_bf16_input(x: &Tensor, w: &Tensor) -> bool {
    (x.dtype() == DType::F32 || is_bf16_operand(x, w))
        && w.dtype() == DType::F32
        && !x.device().is_cpu()
        && matmul_precision() == MatmulPrecision::Bf16
}

/// Rounds an f32 to `bits` bits of mantissa, to nearest even (NaN and infinities unchanged;
/// values that round past the largest finite f32 become infinite, as in a bf16 cast).
pub fn round_mantissa(x: f32, bits: u32) -> f32 {
    if bits >= 23 || !x.is_finite() {
        return x;
    }
    let drop = 23 - bits;
    let u = x.to_bits();
    let half = 1u32 << (drop - 1);
    let lsb = (u >> drop) & 1;
    let r = u.wrapping_add(half - 1 + lsb) & !((1u32 << drop) - 1);
    f32::from_bits(r)
}

/// Whether the CPU's f32 products at the current precision are bf16 products in hardware (bf16
/// precision on a CPU with AVX-512 BF16): the operands then go to the GEMM as they are, and it
/// rounds them as it packs them (inside `cpu::gemm::with_bf16_products`), instead of
/// [`cpu_operand`] rounding a copy first.
pub(crate) fn cpu_bf16_products() -> bool {
    matmul_precision() == MatmulPrecision::Bf16 && crate::cpu::gemm::bf16_available()
}

/// Elements from which [`cpu_operand`] rounds on the rayon pool.
const PARALLEL_ROUNDING: usize = 1 << 15;

/// The operand the current precision makes of `t` for the CPU's products: `t` itself for f32
/// precision or non-f32 tensors, else a detached copy with its mantissas rounded.
pub(crate) fn cpu_operand(t: &Tensor) -> Result<Tensor> {
    let p = matmul_precision();
    if p == MatmulPrecision::F32 || t.dtype() != DType::F32 || !t.device().is_cpu() {
        return Ok(t.clone());
    }
    let bits = p.mantissa_bits();
    // One pass over the elements (on the rayon pool when there are many) into the new buffer.
    let v: Vec<f32> = crate::ops::with_slice("matmul precision", t, |s: &[f32]| {
        use rayon::prelude::*;
        if s.len() >= PARALLEL_ROUNDING {
            s.par_iter().map(|&x| round_mantissa(x, bits)).collect()
        } else {
            s.iter().map(|&x| round_mantissa(x, bits)).collect()
        }
    })?;
    Tensor::from_vec(v, t.shape())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_the_half_crate() {
        let mut g = crate::Generator::new(3);
        let x = Tensor::randn(&[4096], 0.0, 100.0, DType::F32, &mut g).unwrap();
        for v in x.to_vec::<f32>().unwrap() {
            let want = half::bf16::from_f32(v).to_f32();
            assert_eq!(round_mantissa(v, 7), want, "{v}");
        }
        // Ties go to even, overflow to infinity, NaN stays NaN.
        assert_eq!(round_mantissa(1.0 + 1.0 / 256.0, 7), 1.0);
        assert_eq!(round_mantissa(1.0 + 3.0 / 256.0, 7), 1.0 + 4.0 / 256.0);
        assert_eq!(round_mantissa(f32::MAX, 7), f32::INFINITY);
        assert!(round_mantissa(f32::NAN, 7).is_nan());
    }

    #[test]
    fn tf32_keeps_ten_bits() {
        assert_eq!(round_mantissa(1.0 + 1.0 / 1024.0, 10), 1.0 + 1.0 / 1024.0);
        assert_eq!(round_mantissa(1.0 + 1.0 / 2048.0, 10), 1.0);
        assert_eq!(round_mantissa(1.0 + 3.0 / 2048.0, 10), 1.0 + 2.0 / 1024.0);
    }

    #[test]
    fn the_setting_is_scoped_and_parsed() {
        assert_eq!(matmul_precision(), MatmulPrecision::F32);
        with_matmul_precision(MatmulPrecision::Tf32, || {
            assert_eq!(matmul_precision(), MatmulPrecision::Tf32);
            with_matmul_precision(MatmulPrecision::Bf16, || {
                assert_eq!(matmul_precision(), MatmulPrecision::Bf16)
            });
            assert_eq!(matmul_precision(), MatmulPrecision::Tf32);
        });
        assert_eq!(matmul_precision(), MatmulPrecision::F32);
        for p in MatmulPrecision::ALL {
            assert_eq!(p.name().parse::<MatmulPrecision>(), Ok(p));
        }
        assert!("fp8".parse::<MatmulPrecision>().is_err());
    }
}
