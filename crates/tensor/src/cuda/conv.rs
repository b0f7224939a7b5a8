//! Launches of `kernels/conv.cu`: im2col and col2im, from which the GPU convolution is built
//! (im2col, then cuBLAS GEMM; see `crate::ops::conv`).

use cudarc::driver::{DeviceRepr, PushKernelArg};

use super::launch::float_tag;
use super::launch::grid_for;
use super::CudaStorage;
use crate::cpu::conv::ConvGeom;
use crate::error::Result;

/// Mirrors `struct ConvShape` in `kernels/conv.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ConvShape {
    n: i64,
    c: i64,
    h: i64,
    w: i64,
    kh: i64,
    kw: i64,
    oh: i64,
    ow: i64,
    sh: i64,
    sw: i64,
    ph: i64,
    pw: i64,
    dh: i64,
    dw: i64,
}
// SAFETY: plain old data laid out as the CUDA struct.
unsafe impl DeviceRepr for ConvShape {}

fn shape(g: &ConvGeom) -> ConvShape {
    let i = |v: usize| v as i64;
    ConvShape {
        n: i(g.n),
        c: i(g.c_in),
        h: i(g.h),
        w: i(g.w),
        kh: i(g.kh),
        kw: i(g.kw),
        oh: i(g.oh),
        ow: i(g.ow),
        sh: i(g.stride.0),
        sw: i(g.stride.1),
        ph: i(g.padding.0),
        pw: i(g.padding.1),
        dh: i(g.dilation.0),
        dw: i(g.dilation.1),
    }
}

fn launch(
    kernel: &str,
    src: &CudaStorage,
    dst: &CudaStorage,
    total: usize,
    g: &ConvGeom,
) -> Result<()> {
    if total == 0 {
        return Ok(());
    }
    let b = &src.backend;
    let f = b.function("conv", kernel)?;
    let (ps, pd, s) = (src.ptr(), dst.ptr(), shape(g));
    let mut l = b.stream().launch_builder(&f);
    l.arg(&ps).arg(&pd).arg(&s);
    // SAFETY: both buffers are sized from the same geometry by the callers.
    unsafe { l.launch(grid_for(total)) }.map_err(|e| b.err(kernel, e))?;
    Ok(())
}

/// `[n, c_in, h, w]` (dense) to columns `[n, c_in * kh * kw, oh * ow]`.
pub fn im2col(x: &CudaStorage, g: &ConvGeom) -> Result<CudaStorage> {
    let t = float_tag("conv2d", x.dtype())?;
    let total = g.n * g.c_in * g.kh * g.kw * g.oh * g.ow;
    let cols = CudaStorage::alloc(&x.backend, x.dtype(), total)?;
    launch(&format!("im2col_{t}"), x, &cols, total, g)?;
    Ok(cols)
}

/// The adjoint of [`im2col`]: columns back to `[n, c_in, h, w]`, summing overlapping taps.
pub fn col2im(cols: &CudaStorage, g: &ConvGeom) -> Result<CudaStorage> {
    let t = float_tag("conv2d", cols.dtype())?;
    let total = g.n * g.c_in * g.h * g.w;
    let x = CudaStorage::alloc(&cols.backend, cols.dtype(), total)?;
    launch(&format!("col2im_{t}"), cols, &x, total, g)?;
    Ok(x)
}
