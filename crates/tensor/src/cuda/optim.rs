//! Launches of `kernels/optim.cu`: the fused in-place Adam(W) and SGD steps (the CUDA arms of
//! [`crate::ops::optim`], whose CPU kernels are the reference).

use cudarc::driver::PushKernelArg;

use super::launch::float_tag;
use super::launch::grid_for;
use super::CudaStorage;
use crate::error::Result;
use crate::ops::optim::AdamStep;

/// One Adam(W) step over `n` elements of `p`, `g`, `m`, `v` (contiguous from element 0, checked
/// by the caller).
pub fn adam(
    p: &CudaStorage,
    g: &CudaStorage,
    m: &CudaStorage,
    v: &CudaStorage,
    n: usize,
    h: &AdamStep,
) -> Result<()> {
    let t = float_tag("adam_step_", p.dtype())?;
    if n == 0 {
        return Ok(());
    }
    let (step_size, inv_sqrt_bc2, decay, l2) = h.coefficients();
    let b = &p.backend;
    let f = b.function("optim", &format!("adam_step_{t}"))?;
    let (pp, pg, pm, pv, n64) = (p.ptr(), g.ptr(), m.ptr(), v.ptr(), n as i64);
    let mut l = b.stream().launch_builder(&f);
    l.arg(&pp).arg(&pg).arg(&pm).arg(&pv).arg(&n64);
    l.arg(&h.beta1)
        .arg(&h.beta2)
        .arg(&step_size)
        .arg(&inv_sqrt_bc2)
        .arg(&h.eps)
        .arg(&decay)
        .arg(&l2);
    // SAFETY: four distinct buffers of at least n elements (checked by the caller).
    unsafe { l.launch(grid_for(n)) }.map_err(|e| b.err("adam_step_", e))?;
    Ok(())
}

/// One SGD step (with an optional momentum buffer) over `n` elements.
#[allow(clippy::too_many_arguments)]
pub fn sgd(
    p: &CudaStorage,
    g: &CudaStorage,
    buf: Option<&CudaStorage>,
    n: usize,
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    first: bool,
) -> Result<()> {
    let t = float_tag("sgd_step_", p.dtype())?;
    if n == 0 {
        return Ok(());
    }
    let b = &p.backend;
    let f = b.function("optim", &format!("sgd_step_{t}"))?;
    let (pp, pg, pb, n64) = (p.ptr(), g.ptr(), buf.map_or(0, |b| b.ptr()), n as i64);
    let damp = 1.0 - dampening;
    let (nest, fst) = (nesterov as i32, first as i32);
    let mut l = b.stream().launch_builder(&f);
    l.arg(&pp)
        .arg(&pg)
        .arg(&pb)
        .arg(&n64)
        .arg(&lr)
        .arg(&momentum)
        .arg(&damp)
        .arg(&weight_decay)
        .arg(&nest)
        .arg(&fst);
    // SAFETY: distinct buffers of at least n elements (checked by the caller); a null momentum
    // buffer is skipped by the kernel.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| b.err("sgd_step_", e))?;
    Ok(())
}
