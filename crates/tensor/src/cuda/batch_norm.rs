//! Launches of `kernels/batch_norm.cu`: the fused CUDA arm of [`Tensor::batch_norm_train`]
//! (`crate::ops::batch_norm`), whose CPU reference is `crate::cpu::batch_norm`.
//!
//! [`Tensor::batch_norm_train`]: crate::Tensor::batch_norm_train

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

use super::fastdiv::FastDiv;
use super::launch::{float_tag, grid_for, opt_ptr, BLOCK, EW_RUN};
use super::CudaStorage;
use crate::cpu::batch_norm::BnGeom;
use crate::error::Result;

const OP: &str = "batch_norm";

/// Values of one channel each block of the per-channel sums folds: `BN_PER_THREAD` (16) for
/// each of the block's threads, which `bn_stats` holds in registers.
const CHUNK: usize = 16 * BLOCK as usize;

/// Mirrors `struct BnShape` in `kernels/batch_norm.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct BnShape {
    n: i64,
    c: i64,
    s: i64,
    div_c: FastDiv,
    div_s: FastDiv,
    /// 1 when every index fits 31 bits, so the kernels divide with `div_c` / `div_s`.
    fast: i32,
}

// SAFETY: plain `#[repr(C)]` data with the CUDA struct's layout.
unsafe impl DeviceRepr for BnShape {}

impl BnShape {
    fn new(g: BnGeom) -> BnShape {
        let fast = g.numel() < (1 << 31);
        let div = |d: usize| FastDiv::new(if fast { d as u32 } else { 1 });
        BnShape {
            n: g.n as i64,
            c: g.c as i64,
            s: g.s as i64,
            div_c: div(g.c),
            div_s: div(g.s),
            fast: i32::from(fast),
        }
    }
}

/// The launch of the elementwise kernels (`bn_affine`, `bn_grad_input`): a thread per run of
/// [`EW_RUN`] (4) elements.
fn elementwise(g: BnGeom) -> LaunchConfig {
    grid_for(g.numel().div_ceil(EW_RUN))
}

/// One block per (chunk of a channel, channel); grid y at most 65,535, the kernels loop over
/// the channels beyond.
fn per_chunk(g: BnGeom) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (chunks(g) as u32, g.c.clamp(1, 65_535) as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Chunks of [`CHUNK`] values each channel's reductions split into (one block each).
fn chunks(g: BnGeom) -> usize {
    g.per_channel().div_ceil(CHUNK).max(1)
}

/// Scratch for a channel reduction's per-chunk results, two `[C, chunks]` halves: the buffer,
/// the addresses of its halves, and the number of chunks.
fn chunk_parts(x: &CudaStorage, g: BnGeom) -> Result<(CudaStorage, u64, u64, i64)> {
    let chunks = chunks(g);
    let parts = CudaStorage::alloc(&x.backend, x.dtype(), 2 * g.c * chunks)?;
    let first = parts.ptr();
    let second = first + (g.c * chunks * x.dtype().size_in_bytes()) as u64;
    Ok((parts, first, second, chunks as i64))
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
    let total = g.numel();
    let y = CudaStorage::alloc(be, x.dtype(), total)?;
    let mean = CudaStorage::alloc(be, x.dtype(), g.c)?;
    let var = CudaStorage::alloc(be, x.dtype(), g.c)?;
    if total == 0 {
        return Ok((y, mean, var));
    }
    // Each chunk's mean and squared deviations, combined by `bn_finish`.
    let (_parts, ppm, ppq, chunks) = chunk_parts(x, g)?;
    let scale = CudaStorage::alloc(be, x.dtype(), g.c)?;
    let shift = CudaStorage::alloc(be, x.dtype(), g.c)?;
    let (shape, chunk) = (BnShape::new(g), CHUNK as i64);
    let (c, m) = (g.c as i64, g.per_channel() as i64);
    let px = x.ptr();
    let f = be.function("batch_norm", &format!("bn_stats_{t}"))?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&ppm)
        .arg(&ppq)
        .arg(&shape)
        .arg(&chunk)
        .arg(&chunks);
    // SAFETY: x holds N * C * S elements; parts 2 * C * chunks (means first).
    unsafe { l.launch(per_chunk(g)) }.map_err(|e| be.err(OP, e))?;
    let f = be.function("batch_norm", &format!("bn_finish_{t}"))?;
    let (pw, pb, pmean, pvar) = (opt_ptr(w), opt_ptr(b), mean.ptr(), var.ptr());
    let (psc, psh) = (scale.ptr(), shift.ptr());
    let mut l = be.stream().launch_builder(&f);
    l.arg(&ppm)
        .arg(&ppq)
        .arg(&pw)
        .arg(&pb)
        .arg(&pmean)
        .arg(&pvar)
        .arg(&psc)
        .arg(&psh)
        .arg(&c)
        .arg(&m)
        .arg(&chunk)
        .arg(&chunks)
        .arg(&eps);
    // SAFETY: the parts as above; w, b (or null), mean, var, scale and shift hold C elements.
    unsafe { l.launch(grid_for(g.c)) }.map_err(|e| be.err(OP, e))?;
    let y = affine(x, &scale, &shift, y, g, relu)?;
    Ok((y, mean, var))
}

/// `y = x scale[c] + shift[c]` (then the ReLU) into `y`, which holds N * C * S elements.
fn affine(
    x: &CudaStorage,
    scale: &CudaStorage,
    shift: &CudaStorage,
    y: CudaStorage,
    g: BnGeom,
    relu: bool,
) -> Result<CudaStorage> {
    let t = float_tag(OP, x.dtype())?;
    let be = &x.backend;
    let f = be.function("batch_norm", &format!("bn_affine_{t}"))?;
    let (px, psc, psh, py) = (x.ptr(), scale.ptr(), shift.ptr(), y.ptr());
    let (shape, relu) = (BnShape::new(g), i32::from(relu));
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&psc)
        .arg(&psh)
        .arg(&py)
        .arg(&shape)
        .arg(&relu);
    // SAFETY: x and y hold N * C * S elements, scale and shift C.
    unsafe { l.launch(elementwise(g)) }.map_err(|e| be.err(OP, e))?;
    Ok(y)
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
    let y = CudaStorage::alloc(&x.backend, x.dtype(), g.numel())?;
    if g.numel() == 0 {
        return Ok(y);
    }
    affine(x, scale, shift, y, g, relu)
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
    let total = g.numel();
    let dx = CudaStorage::alloc(be, x.dtype(), total)?;
    if total == 0 {
        let zeros = || CudaStorage::full(be, x.dtype(), g.c, 0.0);
        return Ok((dx, zeros()?, zeros()?));
    }
    // Each chunk's Σ h and Σ h (x - mean), [C, chunks] each; `bn_grad_finish` adds them in
    // order and writes the gradients of the bias and the weight.
    let (_parts, psg, psgx, chunks) = chunk_parts(x, g)?;
    let (db, dw) = (
        CudaStorage::alloc(be, x.dtype(), g.c)?,
        CudaStorage::alloc(be, x.dtype(), g.c)?,
    );
    let (shape, chunk, relu) = (BnShape::new(g), CHUNK as i64, i32::from(relu));
    let (c, m) = (g.c as i64, g.per_channel() as i64);
    let (px, py, pg, pm, pv) = (x.ptr(), y.ptr(), gr.ptr(), mean.ptr(), var.ptr());
    let f = be.function("batch_norm", &format!("bn_grad_sums_{t}"))?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&py)
        .arg(&pg)
        .arg(&pm)
        .arg(&psg)
        .arg(&psgx)
        .arg(&shape)
        .arg(&chunk)
        .arg(&chunks)
        .arg(&relu);
    // SAFETY: x, y and gr hold N * C * S elements; mean C; parts 2 * C * chunks.
    unsafe { l.launch(per_chunk(g)) }.map_err(|e| be.err(OP, e))?;
    let coef = || CudaStorage::alloc(be, x.dtype(), g.c);
    let (a, bx, d) = (coef()?, coef()?, coef()?);
    let (pw, pa, pbx, pd) = (opt_ptr(w), a.ptr(), bx.ptr(), d.ptr());
    let (pdb, pdw) = (db.ptr(), dw.ptr());
    let f = be.function("batch_norm", &format!("bn_grad_finish_{t}"))?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&psg)
        .arg(&psgx)
        .arg(&pdb)
        .arg(&pdw)
        .arg(&pv)
        .arg(&pw)
        .arg(&pa)
        .arg(&pbx)
        .arg(&pd)
        .arg(&c)
        .arg(&m)
        .arg(&chunks)
        .arg(&eps);
    // SAFETY: the parts as above; db, dw, var, w (or null), a, bx and d hold C elements.
    unsafe { l.launch(grid_for(g.c)) }.map_err(|e| be.err(OP, e))?;
    let f = be.function("batch_norm", &format!("bn_grad_input_{t}"))?;
    let pdx = dx.ptr();
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&py)
        .arg(&pg)
        .arg(&pm)
        .arg(&pa)
        .arg(&pbx)
        .arg(&pd)
        .arg(&pdx)
        .arg(&shape)
        .arg(&relu);
    // SAFETY: as above; a, bx and d hold C elements, dx N * C * S.
    unsafe { l.launch(elementwise(g)) }.map_err(|e| be.err(OP, e))?;
    Ok((dx, dw, db))
}
