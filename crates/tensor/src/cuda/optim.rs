//! Launches of `kernels/optim.cu`: the fused in-place Adam(W), SGD and LARS steps (the CUDA
//! arms of [`crate::ops::optim`], whose CPU kernels are the reference), and the in-place EMA
//! updates and counter of [`crate::ops::ema`].

use cudarc::driver::PushKernelArg;

use super::launch::float_tag;
use super::launch::grid_for;
use super::table::{chunks, launch_entries, send_table, CHUNK};
use super::CudaStorage;
use crate::error::Result;
use crate::ops::optim::{AdamStep, LarsStep, SgdStep};

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

/// One parameter of a multi-tensor Adam(W) step: parameter, gradient, moments (contiguous
/// from element 0, `n` elements each, on one GPU) and that parameter's hyper-parameters.
pub struct AdamSlot<'a> {
    /// Parameter.
    pub p: &'a CudaStorage,
    /// Gradient.
    pub g: &'a CudaStorage,
    /// First moment.
    pub m: &'a CudaStorage,
    /// Second moment.
    pub v: &'a CudaStorage,
    /// The parameter's bf16 copy, written with the rounded new values (an f32 parameter's
    /// shadow, `n` elements), if it has one.
    pub p16: Option<&'a CudaStorage>,
    /// Elements.
    pub n: usize,
    /// The step's hyper-parameters.
    pub h: AdamStep,
}

/// One parameter of a multi-tensor SGD step (`b`: its momentum buffer, if any) and its
/// hyper-parameters.
pub struct SgdSlot<'a> {
    /// Parameter.
    pub p: &'a CudaStorage,
    /// Gradient.
    pub g: &'a CudaStorage,
    /// Momentum buffer.
    pub b: Option<&'a CudaStorage>,
    /// The parameter's bf16 copy to write, if it has one (as [`AdamSlot::p16`]).
    pub p16: Option<&'a CudaStorage>,
    /// Elements.
    pub n: usize,
    /// The step's hyper-parameters.
    pub h: SgdStep,
}

/// One parameter of a multi-tensor LARS step: parameter, gradient, momentum buffer (`n`
/// elements each, contiguous from element 0, on one GPU) and its hyper-parameters.
pub struct LarsSlot<'a> {
    /// Parameter.
    pub p: &'a CudaStorage,
    /// Gradient.
    pub g: &'a CudaStorage,
    /// Momentum buffer.
    pub b: &'a CudaStorage,
    /// The parameter's bf16 copy to write, if it has one (as [`AdamSlot::p16`]).
    pub p16: Option<&'a CudaStorage>,
    /// Elements.
    pub n: usize,
    /// The step's hyper-parameters.
    pub h: LarsStep,
}

/// The address of the bf16 copy `p16` of an f32 parameter `p` of `n` elements (0: none), or
/// an error naming `op` for a copy that does not fit.
fn copy_ptr(op: &str, p: &CudaStorage, p16: Option<&CudaStorage>, n: usize) -> Result<u64> {
    match p16 {
        None => Ok(0),
        Some(c)
            if p.dtype() == crate::DType::F32
                && c.dtype() == crate::DType::BF16
                && c.len() >= n =>
        {
            Ok(c.ptr())
        }
        Some(c) => Err(p.backend.err_msg(format!(
            "{op}: a bf16 copy of {n} elements of a {:?} parameter cannot be a {:?} buffer of {}",
            p.dtype(),
            c.dtype(),
            c.len()
        ))),
    }
}

/// Sends `table` (u64 words, `words` per entry) and launches `name` with a block per entry.
fn launch_table(
    first: &CudaStorage,
    name: &str,
    op: &str,
    table: Vec<u64>,
    words: usize,
) -> Result<()> {
    debug_assert_eq!(table.len() % words, 0, "{name}: entries of {words} words");
    let entries = table.len() / words;
    if entries == 0 {
        return Ok(());
    }
    let dev = send_table(first, table)?;
    launch_entries(first, "optim", name, op, &dev, entries, &[])
}

/// Adam(W) over every slot in one launch (all on one GPU, one float dtype).
pub fn adam_many(slots: &[AdamSlot]) -> Result<()> {
    let Some(first) = slots.first() else {
        return Ok(());
    };
    let t = float_tag("adam_step_", first.p.dtype())?;
    let mut table = Vec::new();
    for s in slots {
        let (step_size, inv_sqrt_bc2, decay, l2) = s.h.coefficients();
        let p16 = copy_ptr("adam_step_", s.p, s.p16, s.n)?;
        for (start, len) in chunks(s.n) {
            table.extend([s.p.ptr(), s.g.ptr(), s.m.ptr(), s.v.ptr()]);
            table.extend([start as u64, len as u64]);
            table.extend(
                [
                    s.h.beta1,
                    s.h.beta2,
                    step_size,
                    inv_sqrt_bc2,
                    s.h.eps,
                    decay,
                    l2,
                ]
                .map(f64::to_bits),
            );
            table.push(p16);
        }
    }
    launch_table(first.p, &format!("adam_multi_{t}"), "adam_step_", table, 14)
}

/// SGD over every slot in one launch (all on one GPU, one float dtype).
pub fn sgd_many(slots: &[SgdSlot]) -> Result<()> {
    let Some(first) = slots.first() else {
        return Ok(());
    };
    let t = float_tag("sgd_step_", first.p.dtype())?;
    let mut table = Vec::new();
    for s in slots {
        let h = &s.h;
        let flags = h.nesterov as u64 | (h.first as u64) << 1;
        let p16 = copy_ptr("sgd_step_", s.p, s.p16, s.n)?;
        for (start, len) in chunks(s.n) {
            table.extend([s.p.ptr(), s.g.ptr(), s.b.map_or(0, |b| b.ptr())]);
            table.extend([start as u64, len as u64]);
            table.extend([h.lr, h.momentum, 1.0 - h.dampening, h.weight_decay].map(f64::to_bits));
            table.extend([flags, p16]);
        }
    }
    launch_table(first.p, &format!("sgd_multi_{t}"), "sgd_step_", table, 11)
}

/// LARS over every slot in two launches (all on one GPU, one float dtype): the per-chunk
/// squared norms into a scratch buffer of f64 pairs, then the update, where each chunk sums
/// its parameter's pairs in order. Nothing is read back.
pub fn lars_many(slots: &[LarsSlot]) -> Result<()> {
    let Some(first) = slots.first() else {
        return Ok(());
    };
    let t = float_tag("lars_step_", first.p.dtype())?;
    let mut table = Vec::new();
    let mut entries = 0usize;
    for s in slots {
        let h = &s.h;
        let wd = if h.adapt { h.weight_decay } else { 0.0 };
        let count = s.n.div_ceil(CHUNK) as u64;
        let start_entry = entries as u64;
        let p16 = copy_ptr("lars_step_", s.p, s.p16, s.n)?;
        for (start, len) in chunks(s.n) {
            table.extend([s.p.ptr(), s.g.ptr(), s.b.ptr()]);
            table.extend([start as u64, len as u64]);
            table.extend([h.lr, h.momentum, wd, h.eta].map(f64::to_bits));
            table.extend([h.adapt as u64, start_entry, count, p16]);
            entries += 1;
        }
    }
    if entries == 0 {
        return Ok(());
    }
    let dev = send_table(first.p, table)?;
    let partial = CudaStorage::alloc(&first.p.backend, crate::DType::F64, 2 * entries)?;
    let extra = [partial.ptr()];
    launch_entries(
        first.p,
        "optim",
        &format!("lars_norms_{t}"),
        "lars_step_",
        &dev,
        entries,
        &extra,
    )?;
    launch_entries(
        first.p,
        "optim",
        &format!("lars_update_{t}"),
        "lars_step_",
        &dev,
        entries,
        &extra,
    )
}

/// One tensor of a multi-tensor EMA update: `target = keep * target + scale * source` over
/// `n` elements (both contiguous from element 0, distinct, on one GPU).
pub struct EmaSlot<'a> {
    /// Updated in place.
    pub target: &'a CudaStorage,
    /// Read.
    pub source: &'a CudaStorage,
    /// The target's bf16 copy to write, if it has one (as [`AdamSlot::p16`]).
    pub t16: Option<&'a CudaStorage>,
    /// Elements.
    pub n: usize,
    /// The target's factor.
    pub keep: f64,
    /// The source's factor.
    pub scale: f64,
}

/// The EMA update of every slot (one float dtype, one GPU) in one launch.
pub fn ema_many(slots: &[EmaSlot]) -> Result<()> {
    let Some(first) = slots.first() else {
        return Ok(());
    };
    let t = float_tag("ema_step_", first.target.dtype())?;
    let mut table = Vec::new();
    for s in slots {
        let t16 = copy_ptr("ema_step_", s.target, s.t16, s.n)?;
        for (start, len) in chunks(s.n) {
            table.extend([s.target.ptr(), s.source.ptr(), start as u64, len as u64]);
            table.extend([s.keep.to_bits(), s.scale.to_bits(), t16]);
        }
    }
    launch_table(
        first.target,
        &format!("ema_multi_{t}"),
        "ema_step_",
        table,
        7,
    )
}

/// `x[i] += by` over elements `offset .. offset + n` of the i64 buffer `x`, in place.
pub fn count_up(x: &CudaStorage, offset: usize, n: usize, by: i64) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    if x.dtype() != crate::DType::I64 || offset + n > x.len() {
        return Err(x.backend.err_msg(format!(
            "count_up_: {n} elements from {offset} of a {:?} buffer of {}",
            x.dtype(),
            x.len()
        )));
    }
    let b = &x.backend;
    let f = b.function("optim", "count_up_i64")?;
    let (px, n64) = (x.ptr() + 8 * offset as u64, n as i64);
    let mut l = b.stream().launch_builder(&f);
    l.arg(&px).arg(&n64).arg(&by);
    // SAFETY: x holds elements offset .. offset + n (checked above).
    unsafe { l.launch(grid_for(n)) }.map_err(|e| b.err("count_up_", e))?;
    Ok(())
}
