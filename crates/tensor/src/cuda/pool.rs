//! Launches of `kernels/pool.cu`: max and average pooling over explicit windows, forward and
//! backward (the CUDA arms of `crate::ops::pool`; CPU reference `crate::cpu::pool`).

use std::sync::Arc;

use cudarc::driver::PushKernelArg;

use super::launch::float_tag;
use super::launch::grid_for;
use super::{CudaBackend, CudaStorage};
use crate::cpu::pool::PoolWindows;
use crate::dtype::DType;
use crate::error::Result;
use crate::storage::CpuStorage;

/// A pooling's windows on the device, and its plane geometry.
pub struct DevWindows {
    rows: CudaStorage,
    cols: CudaStorage,
    /// Planes (`n * c`).
    pub planes: usize,
    /// Input height and width.
    pub hw: (usize, usize),
    /// Output height and width.
    pub out: (usize, usize),
}

impl DevWindows {
    /// Uploads `win` for inputs of `planes` planes of `h x w`.
    pub fn new(
        backend: &Arc<CudaBackend>,
        win: &PoolWindows,
        planes: usize,
        h: usize,
        w: usize,
    ) -> Result<DevWindows> {
        let flat = |v: &[(usize, usize)]| {
            CpuStorage::I64(v.iter().flat_map(|&(a, b)| [a as i64, b as i64]).collect())
        };
        Ok(DevWindows {
            rows: CudaStorage::from_cpu(backend, &flat(&win.rows))?,
            cols: CudaStorage::from_cpu(backend, &flat(&win.cols))?,
            planes,
            hw: (h, w),
            out: (win.rows.len(), win.cols.len()),
        })
    }

    fn outputs(&self) -> usize {
        self.planes * self.out.0 * self.out.1
    }

    fn dims(&self) -> [i64; 5] {
        [
            self.planes as i64,
            self.hw.0 as i64,
            self.hw.1 as i64,
            self.out.0 as i64,
            self.out.1 as i64,
        ]
    }
}

/// Max pooling of dense `x`: the output and the flat argmax position (i64) of each window.
pub fn max_forward(x: &CudaStorage, w: &DevWindows) -> Result<(CudaStorage, CudaStorage)> {
    let t = float_tag("max_pool2d", x.dtype())?;
    let n = w.outputs();
    let y = CudaStorage::alloc(&x.backend, x.dtype(), n)?;
    let idx = CudaStorage::alloc(&x.backend, DType::I64, n)?;
    if n == 0 {
        return Ok((y, idx));
    }
    let f = x.backend.function("pool", &format!("max_pool_fwd_{t}"))?;
    let (px, pr, pc, py, pi) = (x.ptr(), w.rows.ptr(), w.cols.ptr(), y.ptr(), idx.ptr());
    let [p, h, ww, oh, ow] = w.dims();
    let mut l = x.backend.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&pr)
        .arg(&pc)
        .arg(&py)
        .arg(&pi)
        .arg(&p)
        .arg(&h)
        .arg(&ww)
        .arg(&oh)
        .arg(&ow);
    // SAFETY: buffers sized from the same windows; windows lie inside the planes.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| x.backend.err("max_pool2d", e))?;
    Ok((y, idx))
}

/// Gradient of max pooling: `dy` (dense, one per output) routed to the saved argmax.
pub fn max_backward(dy: &CudaStorage, idx: &CudaStorage, w: &DevWindows) -> Result<CudaStorage> {
    let t = float_tag("max_pool2d", dy.dtype())?;
    let (h, ww) = w.hw;
    let dx = CudaStorage::full(&dy.backend, dy.dtype(), w.planes * h * ww, 0.0)?;
    let n = w.outputs();
    if n == 0 {
        return Ok(dx);
    }
    let f = dy.backend.function("pool", &format!("max_pool_bw_{t}"))?;
    let (pd, pi, px) = (dy.ptr(), idx.ptr(), dx.ptr());
    let (p, hw, per) = (w.planes as i64, (h * ww) as i64, (w.out.0 * w.out.1) as i64);
    let mut l = dy.backend.stream().launch_builder(&f);
    l.arg(&pd).arg(&pi).arg(&px).arg(&p).arg(&hw).arg(&per);
    // SAFETY: idx holds positions inside each plane, written by max_forward.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| dy.backend.err("max_pool2d", e))?;
    Ok(dx)
}

/// Average pooling of dense `x` (`fixed_div` 0: divide by each window's size).
pub fn avg_forward(x: &CudaStorage, w: &DevWindows, fixed_div: usize) -> Result<CudaStorage> {
    let t = float_tag("avg_pool2d", x.dtype())?;
    let n = w.outputs();
    let y = CudaStorage::alloc(&x.backend, x.dtype(), n)?;
    if n == 0 {
        return Ok(y);
    }
    let f = x.backend.function("pool", &format!("avg_pool_fwd_{t}"))?;
    let (px, pr, pc, py) = (x.ptr(), w.rows.ptr(), w.cols.ptr(), y.ptr());
    let [p, h, ww, oh, ow] = w.dims();
    let fd = fixed_div as i64;
    let mut l = x.backend.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&pr)
        .arg(&pc)
        .arg(&py)
        .arg(&p)
        .arg(&h)
        .arg(&ww)
        .arg(&oh)
        .arg(&ow)
        .arg(&fd);
    // SAFETY: buffers sized from the same windows; windows lie inside the planes.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| x.backend.err("avg_pool2d", e))?;
    Ok(y)
}

/// Gradient of average pooling.
pub fn avg_backward(dy: &CudaStorage, w: &DevWindows, fixed_div: usize) -> Result<CudaStorage> {
    let t = float_tag("avg_pool2d", dy.dtype())?;
    let (h, ww) = w.hw;
    let dx = CudaStorage::full(&dy.backend, dy.dtype(), w.planes * h * ww, 0.0)?;
    let n = w.outputs();
    if n == 0 {
        return Ok(dx);
    }
    let f = dy.backend.function("pool", &format!("avg_pool_bw_{t}"))?;
    let (pd, pr, pc, px) = (dy.ptr(), w.rows.ptr(), w.cols.ptr(), dx.ptr());
    let [p, hh, www, oh, ow] = w.dims();
    let fd = fixed_div as i64;
    let mut l = dy.backend.stream().launch_builder(&f);
    l.arg(&pd)
        .arg(&pr)
        .arg(&pc)
        .arg(&px)
        .arg(&p)
        .arg(&hh)
        .arg(&www)
        .arg(&oh)
        .arg(&ow)
        .arg(&fd);
    // SAFETY: as in avg_forward.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| dy.backend.err("avg_pool2d", e))?;
    Ok(dx)
}
