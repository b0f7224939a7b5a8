//! Launches of `kernels/attention.cu`: the fused (flash-style) CUDA arm of
//! [`Tensor::attention_qkv`] (`crate::ops::attention`), whose CPU reference is
//! `crate::cpu::attention`. The `T x T` scores are never stored: the forward saves the output
//! and each query row's log-sum-exp, and the backward recomputes the probabilities from them.
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

/// Query (or key) rows per block, one per thread (`ATT_ROWS` in the kernel file).
const ROWS: usize = 64;

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

/// The kernel-name suffix (`<dtype>_<head-width bound>`) for `x`'s dtype and the shape, or
/// the error for a shape the kernels do not cover.
fn suffix(x: &CudaStorage, b: usize, h: usize, dh: usize) -> Result<String> {
    let tag = float_tag(OP, x.dtype())?;
    let w = head_width_bound(x.dtype(), b * h, dh).ok_or_else(|| {
        x.backend.err_msg(format!(
            "{OP}: no fused kernel for {b}x{h} heads of width {dh}"
        ))
    })?;
    Ok(format!("{tag}_{w}"))
}

fn grid(b: usize, t: usize, h: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (t.div_ceil(ROWS).max(1) as u32, (b * h) as u32, 1),
        block_dim: (ROWS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Forward over the contiguous packed projections `x` (`[b, t, 3, h, dh]` from element 0):
/// `(out [b, t, h, dh], lse [b, h, t])`. `dh` must have a [`head_width_bound`].
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &CudaStorage,
    b: usize,
    t: usize,
    h: usize,
    dh: usize,
    causal: bool,
    scale: f64,
) -> Result<(CudaStorage, CudaStorage)> {
    let k = suffix(x, b, h, dh)?;
    let be = &x.backend;
    let out = CudaStorage::alloc(be, x.dtype(), b * t * h * dh)?;
    let lse = CudaStorage::alloc(be, x.dtype(), b * h * t)?;
    if b * t * h * dh == 0 {
        return Ok((out, lse));
    }
    let f = be.function("attention", &format!("attention_fwd_{k}"))?;
    let shape = AttShape::new(b, t, h, dh);
    let (px, po, pl, c) = (x.ptr(), out.ptr(), lse.ptr(), causal as i32);
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px).arg(&po).arg(&pl).arg(&shape).arg(&c).arg(&scale);
    // SAFETY: x holds b*t*3*h*dh elements, out b*t*h*dh, lse b*h*t.
    unsafe { l.launch(grid(b, t, h)) }.map_err(|e| be.err(OP, e))?;
    Ok((out, lse))
}

/// Backward: the gradient of the packed projections (x's layout) from `x`, the forward's `out`
/// and `lse`, and the output gradient `g` (`[b, t, h, dh]`), all contiguous from element 0.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &CudaStorage,
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
    let k = suffix(x, b, h, dh)?;
    let be = &x.backend;
    let dx = CudaStorage::alloc(be, x.dtype(), b * t * 3 * h * dh)?;
    if b * t * h * dh == 0 {
        return Ok(dx);
    }
    // D_i = dO_i . O_i per query row, written by the dq kernel and read by the dk/dv kernel.
    let drow = CudaStorage::alloc(be, x.dtype(), b * h * t)?;
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
    let f = be.function("attention", &format!("attention_bwd_dq_{k}"))?;
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
    unsafe { l.launch(grid(b, t, h)) }.map_err(|e| be.err(OP, e))?;
    let f = be.function("attention", &format!("attention_bwd_dkv_{k}"))?;
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
    unsafe { l.launch(grid(b, t, h)) }.map_err(|e| be.err(OP, e))?;
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
}
