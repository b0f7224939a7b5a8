//! Launches of `kernels/attention.cu`: the fused (flash-style) CUDA arm of
//! [`Tensor::attention_qkv`] (`crate::ops::attention`), whose CPU reference is
//! `crate::cpu::attention`. The `T x T` scores are never stored: the forward saves the output
//! and each query row's log-sum-exp, and the backward recomputes the probabilities from them.
//! Two sets of kernels: `kernels/attention.cu` on the CUDA cores in the tensor's dtype, and
//! `kernels/attention_mma.cu` on the tensor cores (bf16 operands, f32 accumulation) for f32
//! tensors when the run's matmul precision is bf16 ([`Kernels`]), and for bf16 projections
//! (`Tensor::qkv_attention`, whose product stores them in bf16; the projections' gradient is
//! bf16, lse f32, and out and the output gradient f32 or, for the output projection's bf16
//! operand, bf16: [`out_dtypes`]).
//!
//! [`Tensor::attention_qkv`]: crate::Tensor::attention_qkv

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

use super::launch::float_tag;
use super::CudaStorage;
use crate::error::Result;
use crate::DType;

const OP: &str = "attention_qkv";

/// Head widths the f32 kernels are instantiated for: a head of width `dh` runs in the
/// smallest one at least `dh` (its rows live in registers).
pub const HEAD_WIDTHS: [usize; 4] = [16, 32, 64, 128];

/// Head widths of the f64 kernels (for gradient checks and tests: one bound keeps NVRTC's
/// compile of the file short).
pub const HEAD_WIDTHS_F64: [usize; 1] = [64];

/// Head widths of the tensor-core kernels (`attention_mma.cu`; f32 or bf16 projections): the
/// smallest one at least `dh` is used, the columns past `dh` padded with zeros.
pub const MMA_HEAD_WIDTHS: [usize; 2] = [32, 64];

/// Query (or key) rows per block: one per thread (`ATT_ROWS`) on the CUDA cores, 16 per warp of
/// four (`MMA_ROWS`) on the tensor cores.
const ROWS: usize = 64;

/// Which kernels run the attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// `attention.cu`: a thread per row, in the tensor's dtype.
    CudaCores,
    /// `attention_mma.cu`: a warp per 16 rows, bf16 `mma.sync` with f32 accumulation (f32
    /// tensors, compute capability 8.0 or later).
    TensorCores,
}

impl Kernels {
    fn file(self) -> &'static str {
        match self {
            Kernels::CudaCores => "attention",
            Kernels::TensorCores => "attention_mma",
        }
    }
    fn threads(self) -> u32 {
        match self {
            Kernels::CudaCores => ROWS as u32,
            Kernels::TensorCores => 128,
        }
    }
}

/// Most blocks along the grid's y axis, which carries `batch * heads`.
const MAX_GRID_Y: usize = 65_535;

/// The problem shape, mirrored by `struct AttShape` in `kernels/attention.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AttShape {
    b: i64,
    t: i64,
    h: i64,
    dh: i64,
}

// SAFETY: plain old data with the layout of the CUDA struct.
unsafe impl DeviceRepr for AttShape {}

/// The kernel's head-width bound for `batch * heads` heads of width `dh` in `dtype`, or
/// `None` when the fused kernels do not cover the shape (wider heads, more heads than a grid
/// holds, a dtype other than f32/f64): the caller then composes the op from matmuls and a
/// softmax.
pub fn head_width_bound(dtype: DType, batch_heads: usize, dh: usize) -> Option<usize> {
    if batch_heads == 0 || batch_heads > MAX_GRID_Y {
        return None;
    }
    let widths: &[usize] = match dtype {
        DType::F32 => &HEAD_WIDTHS,
        DType::F64 => &HEAD_WIDTHS_F64,
        _ => return None,
    };
    widths.iter().copied().find(|&w| dh <= w)
}

/// The tensor-core kernels' head-width bound for `batch * heads` heads of width `dh` whose
/// projections are f32 or bf16 (`dtype`), or `None` when they do not cover the shape (wider
/// heads, too many heads for the grid, another dtype).
pub fn mma_head_width_bound(dtype: DType, batch_heads: usize, dh: usize) -> Option<usize> {
    if !matches!(dtype, DType::F32 | DType::BF16) || batch_heads == 0 || batch_heads > MAX_GRID_Y {
        return None;
    }
    MMA_HEAD_WIDTHS.iter().copied().find(|&w| dh <= w)
}

impl AttShape {
    fn new(b: usize, t: usize, h: usize, dh: usize) -> AttShape {
        AttShape {
            b: b as i64,
            t: t as i64,
            h: h as i64,
            dh: dh as i64,
        }
    }
}

/// The dtypes the output and its gradient may have for projections of `dtype` on `kernels`: the
/// projections' own, and for bf16 projections on the tensor cores f32 (the first) or bf16.
pub fn out_dtypes(kernels: Kernels, dtype: DType) -> &'static [DType] {
    match (kernels, dtype) {
        (Kernels::TensorCores, DType::BF16) => &[DType::F32, DType::BF16],
        (_, DType::F64) => &[DType::F64],
        (_, DType::BF16) => &[DType::BF16],
        _ => &[DType::F32],
    }
}

/// The kernel-name prefix and suffix (`attention_` + `<dtype>_<bound>`, or `attention_mma_` +
/// `<bound>` for f32 projections, `bf16_<bound>` for bf16 projections with an f32 output and
/// `bf16o_<bound>` for bf16 both) for `x`'s dtype, the output's and the shape, or the error for
/// a shape or output dtype the kernels do not cover.
fn names(
    x: &CudaStorage,
    kernels: Kernels,
    out: DType,
    b: usize,
    h: usize,
    dh: usize,
) -> Result<(&'static str, String)> {
    if !out_dtypes(kernels, x.dtype()).contains(&out) {
        return Err(crate::error::Error::DTypeMismatch {
            op: OP,
            lhs: x.dtype(),
            rhs: out,
        });
    }
    let none = || {
        x.backend.err_msg(format!(
            "{OP}: no fused {kernels:?} kernel for {b}x{h} heads of width {dh} in {:?}",
            x.dtype()
        ))
    };
    match kernels {
        Kernels::CudaCores => {
            let tag = float_tag(OP, x.dtype())?;
            let w = head_width_bound(x.dtype(), b * h, dh).ok_or_else(none)?;
            Ok(("attention_", format!("{tag}_{w}")))
        }
        Kernels::TensorCores => {
            let w = mma_head_width_bound(x.dtype(), b * h, dh).ok_or_else(none)?;
            if x.backend.capability().0 < 8 {
                return Err(x.backend.err_msg(format!(
                    "{OP}: the tensor-core kernels need compute capability 8.0 or later"
                )));
            }
            let tag = match (x.dtype(), out) {
                (DType::BF16, DType::BF16) => "bf16o_",
                (DType::BF16, _) => "bf16_",
                _ => "",
            };
            Ok(("attention_mma_", format!("{tag}{w}")))
        }
    }
}

fn grid(kernels: Kernels, b: usize, t: usize, h: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (t.div_ceil(ROWS).max(1) as u32, (b * h) as u32, 1),
        block_dim: (kernels.threads(), 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The dtype of the log-sum-exp and the row terms `D` for projections of `dtype`: theirs, but
/// f32 for bf16 projections.
fn row_dtype(dtype: DType) -> DType {
    if dtype == DType::BF16 {
        DType::F32
    } else {
        dtype
    }
}

/// Forward over the contiguous packed projections `x` (`[b, t, 3, h, dh]` from element 0):
/// `(out [b, t, h, dh] in `out`, one of [`out_dtypes`], lse [b, h, t] in x's dtype, f32 for
/// bf16 `x`). `dh` must have a [`head_width_bound`] (CUDA cores) or an
/// [`mma_head_width_bound`] (tensor cores).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &CudaStorage,
    kernels: Kernels,
    out: DType,
    b: usize,
    t: usize,
    h: usize,
    dh: usize,
    causal: bool,
    scale: f64,
) -> Result<(CudaStorage, CudaStorage)> {
    let (pre, k) = names(x, kernels, out, b, h, dh)?;
    let be = &x.backend;
    let rows = row_dtype(x.dtype());
    let out = CudaStorage::alloc(be, out, b * t * h * dh)?;
    let lse = CudaStorage::alloc(be, rows, b * h * t)?;
    if b * t * h * dh == 0 {
        return Ok((out, lse));
    }
    let f = be.function(kernels.file(), &format!("{pre}fwd_{k}"))?;
    let shape = AttShape::new(b, t, h, dh);
    let (px, po, pl, c) = (x.ptr(), out.ptr(), lse.ptr(), causal as i32);
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px).arg(&po).arg(&pl).arg(&shape).arg(&c).arg(&scale);
    // SAFETY: x holds b*t*3*h*dh elements, out b*t*h*dh, lse b*h*t.
    unsafe { l.launch(grid(kernels, b, t, h)) }.map_err(|e| be.err(OP, e))?;
    Ok((out, lse))
}

/// Backward: the gradient of the packed projections (x's layout and dtype) from `x`, the
/// forward's `out` and `lse`, and the output gradient `g` (`[b, t, h, dh]`, in `out`'s dtype),
/// all contiguous from element 0; `kernels` as in the forward. With a bf16 `out` the row terms
/// `D_i = dO_i . O_i` come from the stored (rounded) output.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &CudaStorage,
    kernels: Kernels,
    out: &CudaStorage,
    lse: &CudaStorage,
    g: &CudaStorage,
    b: usize,
    t: usize,
    h: usize,
    dh: usize,
    causal: bool,
    scale: f64,
) -> Result<CudaStorage> {
    let (pre, k) = names(x, kernels, out.dtype(), b, h, dh)?;
    let be = &x.backend;
    let rows = row_dtype(x.dtype());
    for (s, want) in [(lse, rows), (g, out.dtype())] {
        if s.dtype() != want {
            return Err(crate::error::Error::DTypeMismatch {
                op: OP,
                lhs: s.dtype(),
                rhs: want,
            });
        }
    }
    let dx = CudaStorage::alloc(be, x.dtype(), b * t * 3 * h * dh)?;
    if b * t * h * dh == 0 {
        return Ok(dx);
    }
    // D_i = dO_i . O_i per query row, written by the dq kernel and read by the dk/dv kernel.
    let drow = CudaStorage::alloc(be, rows, b * h * t)?;
    let shape = AttShape::new(b, t, h, dh);
    let (px, po, pl, pg, pdx, pd, c) = (
        x.ptr(),
        out.ptr(),
        lse.ptr(),
        g.ptr(),
        dx.ptr(),
        drow.ptr(),
        causal as i32,
    );
    let f = be.function(kernels.file(), &format!("{pre}bwd_dq_{k}"))?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&po)
        .arg(&pl)
        .arg(&pg)
        .arg(&pdx)
        .arg(&pd)
        .arg(&shape)
        .arg(&c)
        .arg(&scale);
    // SAFETY: sizes as in `forward`; dx holds b*t*3*h*dh elements, drow b*h*t.
    unsafe { l.launch(grid(kernels, b, t, h)) }.map_err(|e| be.err(OP, e))?;
    let f = be.function(kernels.file(), &format!("{pre}bwd_dkv_{k}"))?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&pl)
        .arg(&pg)
        .arg(&pd)
        .arg(&pdx)
        .arg(&shape)
        .arg(&c)
        .arg(&scale);
    // SAFETY: as above; queued after the dq kernel on the same stream, so drow is complete.
    unsafe { l.launch(grid(kernels, b, t, h)) }.map_err(|e| be.err(OP, e))?;
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_widths_pick_the_smallest_bound_and_refuse_what_the_grid_cannot_hold() {
        let f = DType::F32;
        assert_eq!(head_width_bound(f, 8, 1), Some(16));
        assert_eq!(head_width_bound(f, 8, 16), Some(16));
        assert_eq!(head_width_bound(f, 8, 17), Some(32));
        assert_eq!(head_width_bound(f, 96, 64), Some(64));
        assert_eq!(head_width_bound(f, 8, 128), Some(128));
        assert_eq!(head_width_bound(f, 8, 129), None);
        assert_eq!(head_width_bound(f, 70_000, 64), None);
        assert_eq!(head_width_bound(f, 0, 64), None);
        assert_eq!(head_width_bound(DType::F64, 8, 5), Some(64));
        assert_eq!(head_width_bound(DType::F64, 8, 65), None);
        assert_eq!(head_width_bound(DType::BF16, 8, 64), None);
    }

    #[test]
    fn only_bf16_projections_on_the_tensor_cores_choose_their_output_dtype() {
        use DType::*;
        let (tc, cc) = (Kernels::TensorCores, Kernels::CudaCores);
        assert_eq!(out_dtypes(tc, BF16), &[F32, BF16]);
        assert_eq!(out_dtypes(tc, F32), &[F32]);
        assert_eq!(out_dtypes(cc, F32), &[F32]);
        assert_eq!(out_dtypes(cc, F64), &[F64]);
    }

    #[test]
    fn tensor_core_widths_cover_f32_and_bf16_heads_up_to_64() {
        let f = DType::F32;
        assert_eq!(mma_head_width_bound(f, 8, 1), Some(32));
        assert_eq!(mma_head_width_bound(f, 8, 32), Some(32));
        assert_eq!(mma_head_width_bound(f, 96, 33), Some(64));
        assert_eq!(mma_head_width_bound(f, 96, 64), Some(64));
        assert_eq!(mma_head_width_bound(f, 8, 65), None);
        assert_eq!(mma_head_width_bound(f, 70_000, 64), None);
        assert_eq!(mma_head_width_bound(DType::F64, 8, 64), None);
        assert_eq!(mma_head_width_bound(DType::BF16, 8, 64), Some(64));
        assert_eq!(mma_head_width_bound(DType::BF16, 8, 65), None);
    }
}
