//! Launches of `kernels/conv.cu`, from which the GPU convolution is built (see
//! `crate::ops::conv`): im2col into the batch-wide column matrix `[c_in * kh * kw, n * oh * ow]`
//! (in bf16 for bf16 products), col2im back, and the two layout changes around the GEMM
//! (`[c_out, n * L]` to the output's `[n, c_out, L]`, and the output gradient the other way).

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

use super::fastdiv::FastDiv;
use super::launch::{float_tag, opt_ptr, BLOCK, EW_RUN};
use super::CudaStorage;
use crate::cpu::conv::ConvGeom;
use crate::error::Result;
use crate::DType;

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
    c_out: i64,
    planes: i64,
    div_l: FastDiv,
    div_ow: FastDiv,
    div_w: FastDiv,
    div_sh: FastDiv,
    div_sw: FastDiv,
    div_hw: FastDiv,
    div_c: FastDiv,
}
// SAFETY: plain old data laid out as the CUDA struct.
unsafe impl DeviceRepr for ConvShape {}

/// The kernels index a row's columns (`n * oh * ow`, `h * w`) and divide by the shape in 32
/// bits, as cuBLAS takes the GEMM's sizes; a convolution past that is an error naming it.
fn shape(b: &CudaStorage, g: &ConvGeom) -> Result<ConvShape> {
    let cols = g.n * g.oh * g.ow;
    let k = g.c_in * g.kh * g.kw;
    let limit = i32::MAX as usize;
    if cols > limit || k > limit || g.n * g.c_in > limit || col2im_planes(g) * g.h * g.w > limit {
        return Err(b.backend.err_msg(format!(
            "conv2d: {} images of {}x{} outputs ({cols} columns) or {k} column rows exceed the GPU \
             convolution's 32-bit sizes; split the batch",
            g.n, g.oh, g.ow
        )));
    }
    let i = |v: usize| v as i64;
    let d = |v: usize| FastDiv::new(v as u32);
    Ok(ConvShape {
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
        c_out: i(g.c_out),
        planes: i(col2im_planes(g)),
        div_l: d(g.oh * g.ow),
        div_ow: d(g.ow),
        div_w: d(g.w),
        div_sh: d(g.stride.0),
        div_sw: d(g.stride.1),
        div_hw: d(g.h * g.w),
        div_c: d(g.c_in),
    })
}

/// The dx planes (`[h, w]` of one image and channel) a row of col2im's launch covers: a multiple
/// of 4 (so every row starts 16-byte aligned) spanning at least 8,192 elements, so small planes
/// (49 in a ResNet's last stage) do not leave most of a row's block idle.
fn col2im_planes(g: &ConvGeom) -> usize {
    const ROW_ELEMENTS: usize = 8192;
    ROW_ELEMENTS
        .div_ceil((g.h * g.w).max(1))
        .next_multiple_of(4)
}

/// The runs of columns an im2col thread fills (grid-stride): its row's setup (the tap and
/// channel of the row) is paid once for them, not once a run.
const IM2COL_RUNS: usize = 4;

/// A launch over `rows` rows of `cols` columns: grid y over rows, x over columns (both
/// grid-stride), at most about half a million blocks.
fn rows_config(rows: usize, cols: usize) -> LaunchConfig {
    let y = rows.clamp(1, 65_535);
    let x = cols
        .div_ceil(BLOCK as usize)
        .clamp(1, (65_535 * 8 / y).max(1));
    LaunchConfig {
        grid_dim: (x as u32, y as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `kernel` with pointer arguments `ptrs` then the shape, over `rows x cols`.
fn launch(
    src: &CudaStorage,
    kernel: &str,
    ptrs: &[u64],
    g: &ConvGeom,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let s = shape(src, g)?;
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let b = &src.backend;
    let f = b.function("conv", kernel)?;
    let mut l = b.stream().launch_builder(&f);
    for p in ptrs {
        l.arg(p);
    }
    l.arg(&s);
    // SAFETY: every buffer is sized from the same geometry by the callers.
    unsafe { l.launch(rows_config(rows, cols)) }.map_err(|e| b.err(kernel, e))?;
    Ok(())
}

/// The kernel suffix for `src`'s dtype, or `bf16_f32` for bf16 output from f32 input.
fn tag(src: &CudaStorage, bf16: bool) -> Result<&'static str> {
    let t = float_tag("conv2d", src.dtype())?;
    Ok(if bf16 && t == "f32" { "bf16_f32" } else { t })
}

/// The column matrix `[c_in * kh * kw, n * oh * ow]` of dense `x` `[n, c_in, h, w]`; in bf16
/// when `bf16` (from f32 `x`), else in `x`'s dtype.
pub fn im2col(x: &CudaStorage, g: &ConvGeom, bf16: bool) -> Result<CudaStorage> {
    let t = tag(x, bf16)?;
    let (rows, cols) = (g.c_in * g.kh * g.kw, g.n * g.oh * g.ow);
    let dtype = if t == "bf16_f32" {
        DType::BF16
    } else {
        x.dtype()
    };
    let out = CudaStorage::alloc(&x.backend, dtype, rows * cols)?;
    // A thread per IM2COL_RUNS runs of EW_RUN (4) columns (the kernel's grid-stride loop).
    launch(
        x,
        &format!("im2col_{t}"),
        &[x.ptr(), out.ptr()],
        g,
        rows,
        cols.div_ceil(EW_RUN).div_ceil(IM2COL_RUNS),
    )?;
    Ok(out)
}

/// The adjoint of [`im2col`]: `[n, c_in, h, w]`, summing overlapping taps; from f32/f64
/// columns in their dtype, from bf16 columns (the column gradient at bf16 matmul precision)
/// in f32.
pub fn col2im(cols: &CudaStorage, g: &ConvGeom) -> Result<CudaStorage> {
    let (name, dtype) = match cols.dtype() {
        DType::BF16 => ("col2im_bf16_f32".to_string(), DType::F32),
        d => (format!("col2im_{}", float_tag("conv2d", d)?), d),
    };
    let x = CudaStorage::alloc(&cols.backend, dtype, g.n * g.c_in * g.h * g.w)?;
    // A row per `col2im_planes` planes, a thread per run of EW_RUN of its elements.
    let planes = col2im_planes(g);
    let rows = (g.n * g.c_in).div_ceil(planes);
    let runs = (planes * g.h * g.w).div_ceil(EW_RUN);
    launch(cols, &name, &[cols.ptr(), x.ptr()], g, rows, runs)?;
    Ok(x)
}

/// The output `[n, c_out, oh, ow]` from the GEMM's `[c_out, n * oh * ow]`, plus `bias`
/// (`[c_out]`, same dtype) when given.
pub fn output(yt: &CudaStorage, bias: Option<&CudaStorage>, g: &ConvGeom) -> Result<CudaStorage> {
    let t = float_tag("conv2d", yt.dtype())?;
    let cols = g.n * g.oh * g.ow;
    let y = CudaStorage::alloc(&yt.backend, yt.dtype(), g.c_out * cols)?;
    let ptrs = [yt.ptr(), opt_ptr(bias), y.ptr()];
    // A thread per run of EW_RUN columns, as im2col.
    launch(
        yt,
        &format!("conv_out_{t}"),
        &ptrs,
        g,
        g.c_out,
        cols.div_ceil(EW_RUN),
    )?;
    Ok(y)
}

/// The output gradient `[n, c_out, oh, ow]` (dense) as `[c_out, n * oh * ow]`, the layout of
/// the backward's GEMMs; in bf16 when `bf16` (from f32), else in its dtype.
pub fn grad_t(dy: &CudaStorage, g: &ConvGeom, bf16: bool) -> Result<CudaStorage> {
    let t = tag(dy, bf16)?;
    let cols = g.n * g.oh * g.ow;
    let dtype = if t == "bf16_f32" {
        DType::BF16
    } else {
        dy.dtype()
    };
    let out = CudaStorage::alloc(&dy.backend, dtype, g.c_out * cols)?;
    launch(
        dy,
        &format!("conv_dy_t_{t}"),
        &[dy.ptr(), out.ptr()],
        g,
        g.c_out,
        cols.div_ceil(EW_RUN),
    )?;
    Ok(out)
}
