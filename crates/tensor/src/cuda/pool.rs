//! Launches of `kernels/pool.cu`: max and average pooling, forward and backward (the CUDA arms
//! of `crate::ops::pool`; CPU reference `crate::cpu::pool`). The kernels compute each window
//! from its axis's rule, so a pooling uploads nothing; the backward kernels gather (no atomics,
//! no zeroed buffer).

use cudarc::driver::{DeviceRepr, PushKernelArg};

use super::fastdiv::FastDiv;
use super::launch::float_tag;
use super::launch::grid_for;
use super::CudaStorage;
use crate::cpu::pool::{AxisWindows, PoolWindows};
use crate::dtype::DType;
use crate::error::Result;

/// One axis's windows as the kernels take them (mirrors `PoolAxis` in `kernels/pool.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PoolAxis {
    len: i64,
    out: i64,
    kernel: i64,
    stride: i64,
    pad: i64,
    adaptive: i64,
}

/// A pooling's planes and axes (mirrors `PoolShape` in `kernels/pool.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PoolShape {
    planes: i64,
    rows: PoolAxis,
    cols: PoolAxis,
    fixed_div: i64,
}
// SAFETY: plain old data laid out as the CUDA struct.
unsafe impl DeviceRepr for PoolShape {}

impl PoolAxis {
    fn new(rule: &AxisWindows, out: usize) -> PoolAxis {
        let i = |v: usize| v as i64;
        match *rule {
            AxisWindows::Sliding {
                len,
                kernel,
                stride,
                pad,
            } => PoolAxis {
                len: i(len),
                out: i(out),
                kernel: i(kernel),
                stride: i(stride),
                pad: i(pad),
                adaptive: 0,
            },
            AxisWindows::Adaptive { len, out } => PoolAxis {
                len: i(len),
                out: i(out),
                kernel: 0,
                stride: 0,
                pad: 0,
                adaptive: 1,
            },
        }
    }
}

impl PoolShape {
    /// The shape of a pooling by `win` over `planes` planes, dividing average windows by
    /// `fixed_div` (0: by each window's size).
    pub fn new(win: &PoolWindows, planes: usize, fixed_div: usize) -> PoolShape {
        PoolShape {
            planes: planes as i64,
            rows: PoolAxis::new(&win.rules.0, win.rows.len()),
            cols: PoolAxis::new(&win.rules.1, win.cols.len()),
            fixed_div: fixed_div as i64,
        }
    }

    /// Output height and width.
    pub fn out(&self) -> (usize, usize) {
        (self.rows.out as usize, self.cols.out as usize)
    }

    fn outputs(&self) -> usize {
        (self.planes * self.rows.out * self.cols.out) as usize
    }

    /// One window over the whole plane on both axes (global average pooling).
    fn is_global(&self) -> bool {
        let whole = |a: &PoolAxis| a.out == 1 && (a.adaptive == 1 || a.kernel >= a.len + a.pad);
        whole(&self.rows) && whole(&self.cols)
    }

    fn inputs(&self) -> usize {
        (self.planes * self.rows.len * self.cols.len) as usize
    }
}

/// Max pooling of dense `x`: the output and the flat argmax position (i64) of each window.
pub fn max_forward(x: &CudaStorage, s: &PoolShape) -> Result<(CudaStorage, CudaStorage)> {
    let t = float_tag("max_pool2d", x.dtype())?;
    let n = s.outputs();
    let y = CudaStorage::alloc(&x.backend, x.dtype(), n)?;
    let idx = CudaStorage::alloc(&x.backend, DType::I64, n)?;
    if n == 0 {
        return Ok((y, idx));
    }
    let f = x.backend.function("pool", &format!("max_pool_fwd_{t}"))?;
    let (px, py, pi) = (x.ptr(), y.ptr(), idx.ptr());
    let mut l = x.backend.stream().launch_builder(&f);
    l.arg(&px).arg(&py).arg(&pi).arg(s);
    // SAFETY: buffers sized from the same shape; windows lie inside the planes.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| x.backend.err("max_pool2d", e))?;
    Ok((y, idx))
}

/// Gradient of max pooling: each input gathers `dy` of the windows whose saved argmax it is.
pub fn max_backward(dy: &CudaStorage, idx: &CudaStorage, s: &PoolShape) -> Result<CudaStorage> {
    let t = float_tag("max_pool2d", dy.dtype())?;
    let n = s.inputs();
    let dx = CudaStorage::alloc(&dy.backend, dy.dtype(), n)?;
    if n == 0 {
        return Ok(dx);
    }
    let f = dy.backend.function("pool", &format!("max_pool_bw_{t}"))?;
    let (pd, pi, px) = (dy.ptr(), idx.ptr(), dx.ptr());
    let mut l = dy.backend.stream().launch_builder(&f);
    l.arg(&pd).arg(&pi).arg(&px).arg(s);
    // SAFETY: dy and idx hold one value per output, dx one per input, all from `s`.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| dy.backend.err("max_pool2d", e))?;
    Ok(dx)
}

/// Average pooling of dense `x`.
pub fn avg_forward(x: &CudaStorage, s: &PoolShape) -> Result<CudaStorage> {
    let t = float_tag("avg_pool2d", x.dtype())?;
    let n = s.outputs();
    let y = CudaStorage::alloc(&x.backend, x.dtype(), n)?;
    if n == 0 {
        return Ok(y);
    }
    let f = x.backend.function("pool", &format!("avg_pool_fwd_{t}"))?;
    let (px, py) = (x.ptr(), y.ptr());
    let mut l = x.backend.stream().launch_builder(&f);
    l.arg(&px).arg(&py).arg(s);
    // SAFETY: buffers sized from the same shape; windows lie inside the planes.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| x.backend.err("avg_pool2d", e))?;
    Ok(y)
}

/// Gradient of average pooling: each input gathers `dy / divisor` of the windows holding it.
pub fn avg_backward(dy: &CudaStorage, s: &PoolShape) -> Result<CudaStorage> {
    let t = float_tag("avg_pool2d", dy.dtype())?;
    let n = s.inputs();
    let dx = CudaStorage::alloc(&dy.backend, dy.dtype(), n)?;
    if n == 0 {
        return Ok(dx);
    }
    if s.is_global() {
        let f = dy
            .backend
            .function("pool", &format!("avg_pool_global_bw_{t}"))?;
        let hw = s.rows.len * s.cols.len;
        let d = if s.fixed_div > 0 { s.fixed_div } else { hw };
        let (pd, px, n64) = (dy.ptr(), dx.ptr(), n as i64);
        let fast = i32::from(n < 1 << 31);
        let div = FastDiv::new(hw.clamp(1, i64::from(u32::MAX)) as u32);
        let mut l = dy.backend.stream().launch_builder(&f);
        l.arg(&pd).arg(&px).arg(&n64).arg(&hw).arg(&div).arg(&fast);
        let (d32, d64) = (d as f32, d as f64);
        if dy.dtype() == DType::F32 {
            l.arg(&d32);
        } else {
            l.arg(&d64);
        }
        // SAFETY: dy holds one value per plane, dx one per input.
        unsafe { l.launch(grid_for(n)) }.map_err(|e| dy.backend.err("avg_pool2d", e))?;
        return Ok(dx);
    }
    let f = dy.backend.function("pool", &format!("avg_pool_bw_{t}"))?;
    let (pd, px) = (dy.ptr(), dx.ptr());
    let mut l = dy.backend.stream().launch_builder(&f);
    l.arg(&pd).arg(&px).arg(s);
    // SAFETY: dy holds one value per output, dx one per input, both from `s`.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| dy.backend.err("avg_pool2d", e))?;
    Ok(dx)
}
