//! Launches of `kernels/batch_norm.cu`: the fused CUDA arm of [`Tensor::batch_norm_train`]
//! (`crate::ops::batch_norm`), whose CPU reference is `crate::cpu::batch_norm`.
//!
//! [`Tensor::batch_norm_train`]: crate::Tensor::batch_norm_train

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::launch::{float_tag, grid_for, opt_ptr, BLOCK};
use super::CudaStorage;
use crate::cpu::batch_norm::BnGeom;
use crate::error::Result;

const OP: &str = "batch_norm";

/// Values of one channel each block of the per-channel sums folds.
const CHUNK: usize = 4096;

/// One block per (chunk of a channel, channel).
fn per_chunk(g: BnGeom) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (g.per_channel().div_ceil(CHUNK).max(1) as u32, g.c as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Training-mode forward over contiguous `x` `[N, C, S]`: `(y, mean, var)` with the batch's
/// mean and biased variance `[C]`.
pub fn train_forward(
    x: &CudaStorage,
    w: Option<&CudaStorage>,
    b: Option<&CudaStorage>,
    g: BnGeom,
    eps: f64,
    relu: bool,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let t = float_tag(OP, x.dtype())?;
    let be = &x.backend;
    let total = g.n * g.c * g.s;
    let y = CudaStorage::alloc(be, x.dtype(), total)?;
    let mean = CudaStorage::alloc(be, x.dtype(), g.c)?;
    let var = CudaStorage::alloc(be, x.dtype(), g.c)?;
    if total == 0 {
        return Ok((y, mean, var));
    }
    let sum = CudaStorage::full(be, x.dtype(), g.c, 0.0)?;
    let m2 = CudaStorage::full(be, x.dtype(), g.c, 0.0)?;
    let (c, s, m, chunk) = (g.c as i64, g.s as i64, g.per_channel() as i64, CHUNK as i64);
    let (px, ps, pm2) = (x.ptr(), sum.ptr(), m2.ptr());
    let f = be.function("batch_norm", &format!("bn_sum_{t}"))?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px).arg(&ps).arg(&c).arg(&s).arg(&m).arg(&chunk);
    // SAFETY: x holds N * C * S elements, sum C.
    unsafe { l.launch(per_chunk(g)) }.map_err(|e| be.err(OP, e))?;
    let f = be.function("batch_norm", &format!("bn_m2_{t}"))?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&ps)
        .arg(&pm2)
        .arg(&c)
        .arg(&s)
        .arg(&m)
        .arg(&chunk);
    // SAFETY: as above; m2 holds C elements.
    unsafe { l.launch(per_chunk(g)) }.map_err(|e| be.err(OP, e))?;
    let f = be.function("batch_norm", &format!("bn_apply_{t}"))?;
    let (pw, pb, py, pmean, pvar) = (opt_ptr(w), opt_ptr(b), y.ptr(), mean.ptr(), var.ptr());
    let (n, relu) = (g.n as i64, i32::from(relu));
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&ps)
        .arg(&pm2)
        .arg(&pw)
        .arg(&pb)
        .arg(&py)
        .arg(&pmean)
        .arg(&pvar)
        .arg(&n)
        .arg(&c)
        .arg(&s)
        .arg(&eps)
        .arg(&relu);
    // SAFETY: x and y hold N * C * S elements; sum, m2, w, b (or null), mean and var C.
    unsafe { l.launch(grid_for(total)) }.map_err(|e| be.err(OP, e))?;
    Ok((y, mean, var))
}

/// Evaluation-mode forward without a graph: `y = x scale[c] + shift[c]` (then the ReLU) over
/// contiguous `x`, with the per-channel `scale` and `shift` (`[C]`) made by the caller.
pub fn eval_affine(
    x: &CudaStorage,
    scale: &CudaStorage,
    shift: &CudaStorage,
    g: BnGeom,
    relu: bool,
) -> Result<CudaStorage> {
    let t = float_tag(OP, x.dtype())?;
    let be = &x.backend;
    let total = g.n * g.c * g.s;
    let y = CudaStorage::alloc(be, x.dtype(), total)?;
    if total == 0 {
        return Ok(y);
    }
    let f = be.function("batch_norm", &format!("bn_affine_{t}"))?;
    let (px, psc, psh, py) = (x.ptr(), scale.ptr(), shift.ptr(), y.ptr());
    let (n, c, s, relu) = (g.n as i64, g.c as i64, g.s as i64, i32::from(relu));
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&psc)
        .arg(&psh)
        .arg(&py)
        .arg(&n)
        .arg(&c)
        .arg(&s)
        .arg(&relu);
    // SAFETY: x and y hold N * C * S elements, scale and shift C.
    unsafe { l.launch(grid_for(total)) }.map_err(|e| be.err(OP, e))?;
    Ok(y)
}

/// Training-mode backward: `(dx, dw, db)` from contiguous `x`, the output `y`, its gradient
/// `gr`, the batch statistics and the weight; `dw` / `db` are `Σ h xhat` / `Σ h` (computed
/// anyway: `dx` needs them).
#[allow(clippy::too_many_arguments)]
pub fn train_backward(
    x: &CudaStorage,
    y: &CudaStorage,
    gr: &CudaStorage,
    mean: &CudaStorage,
    var: &CudaStorage,
    w: Option<&CudaStorage>,
    g: BnGeom,
    eps: f64,
    relu: bool,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let t = float_tag(OP, x.dtype())?;
    let be = &x.backend;
    let total = g.n * g.c * g.s;
    let dx = CudaStorage::alloc(be, x.dtype(), total)?;
    let sg = CudaStorage::full(be, x.dtype(), g.c, 0.0)?;
    let sgx = CudaStorage::full(be, x.dtype(), g.c, 0.0)?;
    if total == 0 {
        return Ok((dx, sgx, sg));
    }
    let (c, s, m, chunk) = (g.c as i64, g.s as i64, g.per_channel() as i64, CHUNK as i64);
    let (n, relu) = (g.n as i64, i32::from(relu));
    let (px, py, pg, pm, pv, psg, psgx) = (
        x.ptr(),
        y.ptr(),
        gr.ptr(),
        mean.ptr(),
        var.ptr(),
        sg.ptr(),
        sgx.ptr(),
    );
    let f = be.function("batch_norm", &format!("bn_grad_sums_{t}"))?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&py)
        .arg(&pg)
        .arg(&pm)
        .arg(&pv)
        .arg(&psg)
        .arg(&psgx)
        .arg(&c)
        .arg(&s)
        .arg(&m)
        .arg(&chunk)
        .arg(&eps)
        .arg(&relu);
    // SAFETY: x, y and gr hold N * C * S elements; mean, var, sg and sgx C.
    unsafe { l.launch(per_chunk(g)) }.map_err(|e| be.err(OP, e))?;
    let f = be.function("batch_norm", &format!("bn_grad_input_{t}"))?;
    let (pw, pd) = (opt_ptr(w), dx.ptr());
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&py)
        .arg(&pg)
        .arg(&pm)
        .arg(&pv)
        .arg(&pw)
        .arg(&psg)
        .arg(&psgx)
        .arg(&pd)
        .arg(&n)
        .arg(&c)
        .arg(&s)
        .arg(&eps)
        .arg(&relu);
    // SAFETY: as above; w holds C elements (or is null), dx N * C * S.
    unsafe { l.launch(grid_for(total)) }.map_err(|e| be.err(OP, e))?;
    Ok((dx, sgx, sg))
}
