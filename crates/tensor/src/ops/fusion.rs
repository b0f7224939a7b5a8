//! Whether the multi-op fusions run on a GPU ([`Tensor::mlp2`](crate::Tensor::mlp2),
//! [`Tensor::linear_cross_entropy`](crate::Tensor::linear_cross_entropy),
//! [`Tensor::qkv_attention`](crate::Tensor::qkv_attention), the LayerNorm that writes its
//! consumers' bf16 operand ([`Tensor::layer_norm_as`](crate::Tensor::layer_norm_as),
//! [`crate::precision::operand_dtype`]), and the
//! convolution's per-image forward GEMMs and sliced weight-gradient reduction,
//! [`Tensor::conv2d`](crate::Tensor::conv2d)): they do by default; [`with_gpu_fusion`] with
//! [`GpuFusion::Composed`] runs their plain compositions instead, so that a benchmark can
//! measure what each buys on the same work (`selfsup bench gpt-step --fusion composed`,
//! `selfsup bench simclr-step --fusion composed`). Likewise [`with_gpu_conv`] picks how the
//! GPU convolution computes its products at bf16 precision ([`GpuConv`]; `selfsup bench
//! simclr-step --conv implicit`).

use std::cell::Cell;
use std::thread::LocalKey;

/// How the fused ops run on a GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GpuFusion {
    /// Their fused kernels where they have them (`mlp2` and `linear_cross_entropy` at bf16
    /// matmul precision; the convolution's arrangements at any precision).
    #[default]
    Fused,
    /// The ops they stand for, one after another.
    Composed,
}

impl std::str::FromStr for GpuFusion {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fused" => Ok(GpuFusion::Fused),
            "composed" => Ok(GpuFusion::Composed),
            other => Err(format!(
                "unknown fusion {other:?}: expected fused or composed"
            )),
        }
    }
}

/// How [`Tensor::conv2d`](crate::Tensor::conv2d) computes its products on a GPU for f32
/// tensors at bf16 matmul precision with one group (other convolutions always use
/// [`GpuConv::Im2col`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GpuConv {
    /// im2col into a column matrix (bf16), cuBLAS GEMMs over it, and col2im for the input
    /// gradient (`kernels/conv.cu`).
    #[default]
    Im2col,
    /// Implicit GEMM on the tensor cores (`kernels/conv_mma.cu`): the products gather their
    /// im2col operands from the input, the output gradient and the weight as they load, so no
    /// column matrix is written or read.
    Implicit,
}

impl std::str::FromStr for GpuConv {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "im2col" => Ok(GpuConv::Im2col),
            "implicit" => Ok(GpuConv::Implicit),
            other => Err(format!(
                "unknown convolution {other:?}: expected im2col or implicit"
            )),
        }
    }
}

thread_local! {
    static GPU_FUSION: Cell<GpuFusion> = const { Cell::new(GpuFusion::Fused) };
    static GPU_CONV: Cell<GpuConv> = const { Cell::new(GpuConv::Im2col) };
}

/// Runs `f` with GPU convolutions computed as `mode` says (on this thread, restored afterwards;
/// a backward pass follows what its forward chose).
pub fn with_gpu_conv<R>(mode: GpuConv, f: impl FnOnce() -> R) -> R {
    scoped(&GPU_CONV, mode, f)
}

/// The [`GpuConv`] in force on this thread.
pub fn gpu_conv() -> GpuConv {
    GPU_CONV.with(|c| c.get())
}

/// Runs `f` with the fused ops on a GPU run as `mode` says (on this thread, restored
/// afterwards; a backward pass follows what its forward chose).
pub fn with_gpu_fusion<R>(mode: GpuFusion, f: impl FnOnce() -> R) -> R {
    scoped(&GPU_FUSION, mode, f)
}

/// The [`GpuFusion`] in force on this thread.
pub fn gpu_fusion() -> GpuFusion {
    GPU_FUSION.with(|c| c.get())
}

/// Runs `f` with the thread-local `key` set to `v`, restoring its previous value afterwards
/// (also when `f` panics).
pub(crate) fn scoped<T: Copy + 'static, R>(
    key: &'static LocalKey<Cell<T>>,
    v: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(key, key.with(|c| c.replace(v)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_scoped_nested_and_restored_after_a_panic() {
        assert_eq!(gpu_fusion(), GpuFusion::Fused);
        with_gpu_fusion(GpuFusion::Composed, || {
            assert_eq!(gpu_fusion(), GpuFusion::Composed);
            with_gpu_fusion(GpuFusion::Fused, || {
                assert_eq!(gpu_fusion(), GpuFusion::Fused)
            });
            assert_eq!(gpu_fusion(), GpuFusion::Composed);
        });
        assert_eq!(gpu_fusion(), GpuFusion::Fused);
        let r = std::panic::catch_unwind(|| with_gpu_fusion(GpuFusion::Composed, || panic!("x")));
        assert!(r.is_err());
        assert_eq!(gpu_fusion(), GpuFusion::Fused);
        // Per thread: another thread starts from the default.
        with_gpu_fusion(GpuFusion::Composed, || {
            let other = std::thread::spawn(gpu_fusion).join().unwrap();
            assert_eq!(other, GpuFusion::Fused);
        });
    }

    #[test]
    fn names_parse_and_others_are_refused() {
        assert_eq!("fused".parse::<GpuFusion>(), Ok(GpuFusion::Fused));
        assert_eq!("composed".parse::<GpuFusion>(), Ok(GpuFusion::Composed));
        assert_eq!(
            "on".parse::<GpuFusion>().unwrap_err(),
            "unknown fusion \"on\": expected fused or composed"
        );
        assert_eq!("im2col".parse::<GpuConv>(), Ok(GpuConv::Im2col));
        assert_eq!("implicit".parse::<GpuConv>(), Ok(GpuConv::Implicit));
        assert_eq!(
            "winograd".parse::<GpuConv>().unwrap_err(),
            "unknown convolution \"winograd\": expected im2col or implicit"
        );
        assert_eq!(gpu_conv(), GpuConv::Im2col);
        assert_eq!(
            with_gpu_conv(GpuConv::Implicit, gpu_conv),
            GpuConv::Implicit
        );
        assert_eq!(gpu_conv(), GpuConv::Im2col);
    }
}
