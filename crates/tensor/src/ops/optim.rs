//! Fused, in-place optimiser updates: one pass over each parameter that reads its gradient and
//! state and writes the new values into the same buffers (no temporaries, no graph).
//! The `nn` optimisers call these; the CUDA backend adds one kernel per step type.

use crate::error::{shape_err, Result};
use crate::storage::CpuStorage;
#[cfg(feature = "cuda")]
use crate::storage::Storage;
use crate::{Element, Tensor};
use rayon::prelude::*;

/// Hyper-parameters of one Adam/AdamW step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Weight decay: decoupled (AdamW, `p -= lr * wd * p`) or added to the gradient (Adam).
    pub weight_decay: f64,
    /// Whether the weight decay is decoupled (AdamW).
    pub decoupled: bool,
    /// 1-based step number, for bias correction.
    pub step: u64,
}

impl AdamStep {
    /// The per-step constants of the update: `(step_size, inv_sqrt_bc2, decay, l2)` with the
    /// bias corrections folded in (`p = p * decay - step_size * m / (sqrt(v) * inv_sqrt_bc2 +
    /// eps)`, and `l2 * p` added to the gradient for non-decoupled weight decay). Shared by the
    /// CPU kernel and the CUDA launch.
    pub fn coefficients(&self) -> (f64, f64, f64, f64) {
        let t = self.step.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let decay = if self.decoupled {
            1.0 - self.lr * self.weight_decay
        } else {
            1.0
        };
        let l2 = if self.decoupled {
            0.0
        } else {
            self.weight_decay
        };
        (self.lr / bc1, 1.0 / bc2.sqrt(), decay, l2)
    }
}

const PAR: usize = 1 << 15;

/// Checks that every tensor is a contiguous f32/f64 buffer of the parameter's shape and dtype.
pub(crate) fn check(op: &'static str, p: &Tensor, others: &[&Tensor]) -> Result<()> {
    for t in std::iter::once(p).chain(others.iter().copied()) {
        if t.shape() != p.shape() || t.dtype() != p.dtype() {
            return shape_err(
                op,
                format!(
                    "state of shape {:?} ({:?}) does not match parameter {:?} ({:?})",
                    t.shape(),
                    t.dtype(),
                    p.shape(),
                    p.dtype()
                ),
            );
        }
        if !t.is_contiguous() || t.layout().offset() != 0 {
            return shape_err(
                op,
                format!(
                    "needs contiguous buffers; got a strided view of shape {:?}",
                    t.shape()
                ),
            );
        }
        crate::ops::check_float(op, t)?;
        if t.device() != p.device() {
            return Err(crate::Error::DeviceMismatch {
                op,
                lhs: p.device(),
                rhs: t.device(),
            });
        }
    }
    for (i, a) in others.iter().enumerate() {
        if a.same_storage(p) || others[i + 1..].iter().any(|b| b.same_storage(a)) {
            return shape_err(op, "parameter, gradient and state must be distinct buffers");
        }
    }
    Ok(())
}

fn adam_kernel<T: crate::Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], h: &AdamStep) {
    let (b1, b2) = (T::c(h.beta1), T::c(h.beta2));
    let (step_size, inv_sqrt_bc2, decay, l2) = h.coefficients();
    let (step_size, inv_sqrt_bc2) = (T::c(step_size), T::c(inv_sqrt_bc2));
    let (decay, l2) = (T::c(decay), T::c(l2));
    let eps = T::c(h.eps);
    let body = |(((p, g), m), v): (((&mut [T], &[T]), &mut [T]), &mut [T])| {
        for i in 0..p.len() {
            let gi = g[i] + l2 * p[i];
            m[i] = b1 * m[i] + (T::ONE - b1) * gi;
            v[i] = b2 * v[i] + (T::ONE - b2) * gi * gi;
            p[i] = p[i] * decay - step_size * m[i] / (v[i].sqrt() * inv_sqrt_bc2 + eps);
        }
    };
    if p.len() >= PAR {
        p.par_chunks_mut(PAR)
            .zip(g.par_chunks(PAR))
            .zip(m.par_chunks_mut(PAR))
            .zip(v.par_chunks_mut(PAR))
            .for_each(body);
    } else {
        body((((p, g), m), v));
    }
}

fn sgd_kernel<T: crate::Float>(
    p: &mut [T],
    g: &[T],
    buf: Option<&mut [T]>,
    lr: f64,
    momentum: f64,
    dampening: f64,
    wd: f64,
    nesterov: bool,
    first: bool,
) {
    let (lr, mu, damp, wd) = (T::c(lr), T::c(momentum), T::c(1.0 - dampening), T::c(wd));
    match buf {
        None => {
            for (p, &g) in p.iter_mut().zip(g) {
                *p = *p - lr * (g + wd * *p);
            }
        }
        Some(b) => {
            for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
                let d = g + wd * *p;
                *b = if first { d } else { mu * *b + damp * d };
                let upd = if nesterov { d + mu * *b } else { *b };
                *p = *p - lr * upd;
            }
        }
    }
}

impl Tensor {
    /// One Adam (or AdamW) step in place: updates `self` (a parameter), and the moment buffers
    /// `m` and `v`, from `grad`, in one fused pass. All four must be distinct contiguous buffers
    /// of the same shape and float dtype. Matches PyTorch's `Adam`/`AdamW` update.
    pub fn adam_step_(&self, grad: &Tensor, m: &Tensor, v: &Tensor, h: &AdamStep) -> Result<()> {
        check("adam_step_", self, &[grad, m, v])?;
        let (mut pw, gr, mut mw, mut vw) = (self.write(), grad.read(), m.write(), v.write());
        #[cfg(feature = "cuda")]
        if let (Storage::Cuda(p), Storage::Cuda(g), Storage::Cuda(m), Storage::Cuda(v)) =
            (&*pw, &*gr, &*mw, &*vw)
        {
            return crate::cuda::optim::adam(p, g, m, v, self.numel(), h);
        }
        match (
            pw.cpu_mut("adam_step_")?,
            gr.cpu("adam_step_")?,
            mw.cpu_mut("adam_step_")?,
            vw.cpu_mut("adam_step_")?,
        ) {
            (CpuStorage::F32(p), CpuStorage::F32(g), CpuStorage::F32(m), CpuStorage::F32(v)) => {
                adam_kernel(p, g, m, v, h)
            }
            (CpuStorage::F64(p), CpuStorage::F64(g), CpuStorage::F64(m), CpuStorage::F64(v)) => {
                adam_kernel(p, g, m, v, h)
            }
            (p, ..) => return Err(crate::ops::unsupported("adam_step_", p.dtype())),
        }
        Ok(())
    }

    /// One SGD step in place (PyTorch semantics): `d = grad + wd * p`; with momentum,
    /// `buf = first ? d : momentum * buf + (1 - dampening) * d` and `p -= lr * (nesterov ?
    /// d + momentum * buf : buf)`; without, `p -= lr * d`.
    #[allow(clippy::too_many_arguments)]
    pub fn sgd_step_(
        &self,
        grad: &Tensor,
        momentum_buf: Option<&Tensor>,
        lr: f64,
        momentum: f64,
        dampening: f64,
        weight_decay: f64,
        nesterov: bool,
        first: bool,
    ) -> Result<()> {
        let others: Vec<&Tensor> = std::iter::once(grad).chain(momentum_buf).collect();
        check("sgd_step_", self, &others)?;
        let mut pw = self.write();
        let gr = grad.read();
        let mut bw = momentum_buf.map(|b| b.write());
        #[cfg(feature = "cuda")]
        if let (Storage::Cuda(p), Storage::Cuda(g)) = (&*pw, &*gr) {
            let b = match bw.as_deref() {
                Some(Storage::Cuda(b)) => Some(b),
                Some(_) => {
                    return Err(crate::Error::DeviceMismatch {
                        op: "sgd_step_",
                        lhs: self.device(),
                        rhs: crate::Device::Cpu,
                    })
                }
                None => None,
            };
            return crate::cuda::optim::sgd(
                p,
                g,
                b,
                self.numel(),
                lr,
                momentum,
                dampening,
                weight_decay,
                nesterov,
                first,
            );
        }
        let bslice = bw.as_mut().map(|b| b.cpu_mut("sgd_step_")).transpose()?;
        match (pw.cpu_mut("sgd_step_")?, gr.cpu("sgd_step_")?, bslice) {
            (CpuStorage::F32(p), CpuStorage::F32(g), b) => {
                let b = b.and_then(f32::slice_mut);
                sgd_kernel(
                    p,
                    g,
                    b,
                    lr,
                    momentum,
                    dampening,
                    weight_decay,
                    nesterov,
                    first,
                )
            }
            (CpuStorage::F64(p), CpuStorage::F64(g), b) => {
                let b = b.and_then(f64::slice_mut);
                sgd_kernel(
                    p,
                    g,
                    b,
                    lr,
                    momentum,
                    dampening,
                    weight_decay,
                    nesterov,
                    first,
                )
            }
            (p, ..) => return Err(crate::ops::unsupported("sgd_step_", p.dtype())),
        }
        Ok(())
    }
}

/// One parameter's share of [`Tensor::adam_steps_`]: the tensors [`Tensor::adam_step_`] takes
/// and that parameter's hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub struct AdamItem<'a> {
    /// The parameter (updated in place).
    pub param: &'a Tensor,
    /// Its gradient.
    pub grad: &'a Tensor,
    /// First-moment buffer (updated in place).
    pub m: &'a Tensor,
    /// Second-moment buffer (updated in place).
    pub v: &'a Tensor,
    /// The step's hyper-parameters.
    pub step: AdamStep,
}

/// Hyper-parameters of one SGD step of one parameter (what [`Tensor::sgd_step_`] takes
/// besides the tensors).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Dampening.
    pub dampening: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Whether the momentum buffer is new (it then takes the gradient as is).
    pub first: bool,
}

/// One parameter's share of [`Tensor::sgd_steps_`]: what [`Tensor::sgd_step_`] takes.
#[derive(Clone, Copy, Debug)]
pub struct SgdItem<'a> {
    /// The parameter (updated in place).
    pub param: &'a Tensor,
    /// Its gradient.
    pub grad: &'a Tensor,
    /// Its momentum buffer, if it uses one (updated in place).
    pub momentum_buf: Option<&'a Tensor>,
    /// The step's hyper-parameters.
    pub step: SgdStep,
}

/// Whether `groups` (each a parameter and its gradient and state) can go to one multi-tensor
/// launch: all on one GPU in one dtype, and no buffer shared between any two of them.
#[cfg(feature = "cuda")]
pub(crate) fn one_gpu_launch(groups: &[Vec<&Tensor>]) -> bool {
    let Some(first) = groups.first().and_then(|g| g.first()) else {
        return false;
    };
    if first.device().is_cpu()
        || groups
            .iter()
            .flatten()
            .any(|t| t.device() != first.device() || t.dtype() != first.dtype())
    {
        return false;
    }
    let mut seen = std::collections::HashSet::new();
    groups
        .iter()
        .flatten()
        .all(|t| seen.insert(std::sync::Arc::as_ptr(&t.0.storage) as usize))
}

/// The GPU buffer behind a parameter's bf16 copy's write guard, if it has one (see
/// `crate::shadow`).
#[cfg(feature = "cuda")]
pub(crate) fn copy_of<'a>(
    op: &'static str,
    g: &'a Option<std::sync::RwLockWriteGuard<'_, Storage>>,
) -> Result<Option<&'a crate::cuda::CudaStorage>> {
    g.as_deref().map(|g| cuda_of(op, g)).transpose()
}

#[cfg(feature = "cuda")]
pub(crate) fn cuda_of<'a>(
    op: &'static str,
    s: &'a Storage,
) -> Result<&'a crate::cuda::CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => Err(crate::storage::no_kernel(op, crate::Device::Cpu)),
    }
}

impl Tensor {
    /// [`Tensor::adam_step_`] for many parameters at once (each with its own gradient, state
    /// and hyper-parameters; the same checks and the same update). On a GPU, parameters that
    /// share one device and dtype are updated by one kernel launch instead of one per
    /// parameter (the multi-tensor step of PyTorch's `foreach`/`fused` Adam).
    pub fn adam_steps_(items: &[AdamItem]) -> Result<()> {
        for it in items {
            check("adam_step_", it.param, &[it.grad, it.m, it.v])?;
        }
        #[cfg(feature = "cuda")]
        {
            let groups: Vec<Vec<&Tensor>> = items
                .iter()
                .map(|it| vec![it.param, it.grad, it.m, it.v])
                .collect();
            if one_gpu_launch(&groups) {
                let ps: Vec<_> = items.iter().map(|it| it.param.write()).collect();
                let gs: Vec<_> = items.iter().map(|it| it.grad.read()).collect();
                let ms: Vec<_> = items.iter().map(|it| it.m.write()).collect();
                let vs: Vec<_> = items.iter().map(|it| it.v.write()).collect();
                let copies = crate::shadow::for_updates(items.iter().map(|it| it.param));
                let cw: Vec<_> = copies
                    .iter()
                    .map(|c| c.as_ref().map(|c| c.write()))
                    .collect();
                let mut slots = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    slots.push(crate::cuda::optim::AdamSlot {
                        p: cuda_of("adam_step_", &ps[i])?,
                        g: cuda_of("adam_step_", &gs[i])?,
                        m: cuda_of("adam_step_", &ms[i])?,
                        v: cuda_of("adam_step_", &vs[i])?,
                        p16: copy_of("adam_step_", &cw[i])?,
                        n: it.param.numel(),
                        h: it.step,
                    });
                }
                crate::cuda::optim::adam_many(&slots)?;
                crate::shadow::mark_current(items.iter().map(|it| it.param));
                return Ok(());
            }
        }
        for it in items {
            it.param.adam_step_(it.grad, it.m, it.v, &it.step)?;
        }
        Ok(())
    }

    /// [`Tensor::sgd_step_`] for many parameters at once; on a GPU, one kernel launch for the
    /// parameters that share one device and dtype.
    pub fn sgd_steps_(items: &[SgdItem]) -> Result<()> {
        for it in items {
            let others: Vec<&Tensor> = std::iter::once(it.grad).chain(it.momentum_buf).collect();
            check("sgd_step_", it.param, &others)?;
        }
        #[cfg(feature = "cuda")]
        {
            let groups: Vec<Vec<&Tensor>> = items
                .iter()
                .map(|it| {
                    std::iter::once(it.param)
                        .chain(std::iter::once(it.grad))
                        .chain(it.momentum_buf)
                        .collect()
                })
                .collect();
            if one_gpu_launch(&groups) {
                let ps: Vec<_> = items.iter().map(|it| it.param.write()).collect();
                let gs: Vec<_> = items.iter().map(|it| it.grad.read()).collect();
                let bs: Vec<_> = items
                    .iter()
                    .map(|it| it.momentum_buf.map(|b| b.write()))
                    .collect();
                let copies = crate::shadow::for_updates(items.iter().map(|it| it.param));
                let cw: Vec<_> = copies
                    .iter()
                    .map(|c| c.as_ref().map(|c| c.write()))
                    .collect();
                let mut slots = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    slots.push(crate::cuda::optim::SgdSlot {
                        p: cuda_of("sgd_step_", &ps[i])?,
                        g: cuda_of("sgd_step_", &gs[i])?,
                        b: bs[i]
                            .as_deref()
                            .map(|b| cuda_of("sgd_step_", b))
                            .transpose()?,
                        p16: copy_of("sgd_step_", &cw[i])?,
                        n: it.param.numel(),
                        h: it.step,
                    });
                }
                crate::cuda::optim::sgd_many(&slots)?;
                crate::shadow::mark_current(items.iter().map(|it| it.param));
                return Ok(());
            }
        }
        for it in items {
            let h = &it.step;
            it.param.sgd_step_(
                it.grad,
                it.momentum_buf,
                h.lr,
                h.momentum,
                h.dampening,
                h.weight_decay,
                h.nesterov,
                h.first,
            )?;
        }
        Ok(())
    }
}

/// Hyper-parameters of one LARS step of one parameter (You et al., 2017, as SimCLR, BYOL and
/// Barlow Twins use it): for an adapted parameter `d = g + wd p` and `d *= eta ||p|| / ||d||`
/// (by 1 when either norm is 0 or not finite); for one that is not (biases and norm scales,
/// usually), `d = g`. Then `mu = momentum mu + d` and `p -= lr mu`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LarsStep {
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay (added to the gradient of adapted parameters only).
    pub weight_decay: f64,
    /// Trust coefficient.
    pub eta: f64,
    /// Whether the parameter gets weight decay and the trust ratio.
    pub adapt: bool,
}

impl LarsStep {
    /// The trust factor from the squared norms of the parameter and of its decayed gradient:
    /// `eta ||p|| / ||d||` when both are positive, else 1. Shared by the CPU kernel and the
    /// CUDA kernel's reference.
    pub fn trust(&self, p_sq: f64, d_sq: f64) -> f64 {
        let (pn, dn) = (p_sq.sqrt(), d_sq.sqrt());
        if pn > 0.0 && dn > 0.0 {
            pn * self.eta / dn.max(f64::MIN_POSITIVE)
        } else {
            1.0
        }
    }
}

/// One parameter's share of [`Tensor::lars_steps_`].
#[derive(Clone, Copy, Debug)]
pub struct LarsItem<'a> {
    /// The parameter (updated in place).
    pub param: &'a Tensor,
    /// Its gradient.
    pub grad: &'a Tensor,
    /// Its momentum buffer (updated in place; zeros before the first step).
    pub momentum_buf: &'a Tensor,
    /// The step's hyper-parameters.
    pub step: LarsStep,
}

/// `(sum p^2, sum d^2)` in f64 with `d = g + wd p` in `T`, over fixed chunks of [`PAR`]
/// elements summed in order (the same result for any number of threads).
fn lars_norms<T: crate::Float>(p: &[T], g: &[T], wd: T) -> (f64, f64) {
    let part = |(p, g): (&[T], &[T])| {
        let (mut ps, mut ds) = (0.0f64, 0.0f64);
        for (&p, &g) in p.iter().zip(g) {
            let d = (g + wd * p).to_f64();
            let p = p.to_f64();
            ps += p * p;
            ds += d * d;
        }
        (ps, ds)
    };
    let parts: Vec<(f64, f64)> = if p.len() >= 2 * PAR {
        p.par_chunks(PAR).zip(g.par_chunks(PAR)).map(part).collect()
    } else {
        p.chunks(PAR).zip(g.chunks(PAR)).map(part).collect()
    };
    parts
        .into_iter()
        .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d))
}

fn lars_kernel<T: crate::Float>(p: &mut [T], g: &[T], mu: &mut [T], h: &LarsStep) {
    let wd = T::c(if h.adapt { h.weight_decay } else { 0.0 });
    let factor = if h.adapt {
        let (ps, ds) = lars_norms(p, g, wd);
        T::c(h.trust(ps, ds))
    } else {
        T::ONE
    };
    let (m, lr, adapt) = (T::c(h.momentum), T::c(h.lr), h.adapt);
    let body = |((p, g), mu): ((&mut [T], &[T]), &mut [T])| {
        for ((p, &g), b) in p.iter_mut().zip(g).zip(mu.iter_mut()) {
            let d = if adapt { (g + wd * *p) * factor } else { g };
            *b = m * *b + d;
            *p = *p - *b * lr;
        }
    };
    if p.len() >= PAR {
        p.par_chunks_mut(PAR)
            .zip(g.par_chunks(PAR))
            .zip(mu.par_chunks_mut(PAR))
            .for_each(body);
    } else {
        body(((p, g), mu));
    }
}

impl Tensor {
    /// One LARS step for many parameters at once (see [`LarsStep`]), each with its own gradient,
    /// momentum buffer and hyper-parameters; all distinct contiguous buffers of the parameter's
    /// shape and float dtype. The norms are summed in f64. On a GPU, the parameters that share
    /// one device and dtype take two kernel launches in all (their norms, then the update),
    /// and nothing is read back.
    pub fn lars_steps_(items: &[LarsItem]) -> Result<()> {
        for it in items {
            check("lars_step_", it.param, &[it.grad, it.momentum_buf])?;
        }
        #[cfg(feature = "cuda")]
        {
            let groups: Vec<Vec<&Tensor>> = items
                .iter()
                .map(|it| vec![it.param, it.grad, it.momentum_buf])
                .collect();
            if one_gpu_launch(&groups) {
                let ps: Vec<_> = items.iter().map(|it| it.param.write()).collect();
                let gs: Vec<_> = items.iter().map(|it| it.grad.read()).collect();
                let bs: Vec<_> = items.iter().map(|it| it.momentum_buf.write()).collect();
                let copies = crate::shadow::for_updates(items.iter().map(|it| it.param));
                let cw: Vec<_> = copies
                    .iter()
                    .map(|c| c.as_ref().map(|c| c.write()))
                    .collect();
                let mut slots = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    slots.push(crate::cuda::optim::LarsSlot {
                        p: cuda_of("lars_step_", &ps[i])?,
                        g: cuda_of("lars_step_", &gs[i])?,
                        b: cuda_of("lars_step_", &bs[i])?,
                        p16: copy_of("lars_step_", &cw[i])?,
                        n: it.param.numel(),
                        h: it.step,
                    });
                }
                crate::cuda::optim::lars_many(&slots)?;
                crate::shadow::mark_current(items.iter().map(|it| it.param));
                return Ok(());
            }
        }
        for it in items {
            let (mut pw, gr, mut bw) = (it.param.write(), it.grad.read(), it.momentum_buf.write());
            #[cfg(feature = "cuda")]
            if let (Storage::Cuda(p), Storage::Cuda(g), Storage::Cuda(b)) = (&*pw, &*gr, &*bw) {
                let slot = crate::cuda::optim::LarsSlot {
                    p,
                    g,
                    b,
                    p16: None,
                    n: it.param.numel(),
                    h: it.step,
                };
                crate::cuda::optim::lars_many(&[slot])?;
                continue;
            }
            match (
                pw.cpu_mut("lars_step_")?,
                gr.cpu("lars_step_")?,
                bw.cpu_mut("lars_step_")?,
            ) {
                (CpuStorage::F32(p), CpuStorage::F32(g), CpuStorage::F32(b)) => {
                    lars_kernel(p, g, b, &it.step)
                }
                (CpuStorage::F64(p), CpuStorage::F64(g), CpuStorage::F64(b)) => {
                    lars_kernel(p, g, b, &it.step)
                }
                (p, ..) => return Err(crate::ops::unsupported("lars_step_", p.dtype())),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_step_matches_hand_computation() {
        let p = Tensor::from_vec(vec![1.0f64, -2.0], &[2]).unwrap();
        let g = Tensor::from_vec(vec![0.5f64, 0.25], &[2]).unwrap();
        let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
        let h = AdamStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled: true,
            step: 1,
        };
        p.adam_step_(&g, &m, &v, &h).unwrap();
        // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) = lr * sign(g).
        let want = [
            1.0 * (1.0 - 0.1 * 0.01) - 0.1 * 0.5 / (0.5 + 1e-8),
            -2.0 * (1.0 - 0.1 * 0.01) - 0.1 * 0.25 / (0.25 + 1e-8),
        ];
        let got = p.to_vec::<f64>().unwrap();
        assert!(
            (got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12,
            "{got:?}"
        );
        assert!((m.to_vec::<f64>().unwrap()[0] - 0.05).abs() < 1e-15);
        assert!(p
            .adam_step_(&g, &m, &m, &h)
            .unwrap_err()
            .to_string()
            .contains("distinct"));
    }

    #[test]
    fn sgd_momentum_nesterov_matches_hand_computation() {
        let p = Tensor::from_vec(vec![1.0f32], &[1]).unwrap();
        let g = Tensor::from_vec(vec![2.0f32], &[1]).unwrap();
        let b = p.zeros_like().unwrap();
        p.sgd_step_(&g, Some(&b), 0.1, 0.9, 0.0, 0.0, true, true)
            .unwrap();
        // buf = 2, update = 2 + 0.9 * 2 = 3.8, p = 1 - 0.38.
        assert!((p.to_vec::<f32>().unwrap()[0] - 0.62).abs() < 1e-6);
        p.sgd_step_(&g, Some(&b), 0.1, 0.9, 0.0, 0.0, false, false)
            .unwrap();
        // buf = 0.9 * 2 + 2 = 3.8, p = 0.62 - 0.38.
        assert!((p.to_vec::<f32>().unwrap()[0] - 0.24).abs() < 1e-6);
    }

    /// The LARS update written out per element in f64 (norms summed in order), for checking
    /// the fused kernel.
    fn lars_reference(p: &mut [f64], g: &[f64], mu: &mut [f64], h: &LarsStep) {
        let wd = if h.adapt { h.weight_decay } else { 0.0 };
        let d: Vec<f64> = p.iter().zip(g).map(|(&p, &g)| g + wd * p).collect();
        let ps: f64 = p.iter().map(|x| x * x).sum();
        let ds: f64 = d.iter().map(|x| x * x).sum();
        let f = if h.adapt { h.trust(ps, ds) } else { 1.0 };
        for i in 0..p.len() {
            mu[i] = h.momentum * mu[i] + if h.adapt { d[i] * f } else { g[i] };
            p[i] -= h.lr * mu[i];
        }
    }

    #[test]
    fn lars_steps_match_the_written_out_update() {
        let mut gen = crate::Generator::new(7);
        // One parameter past two parallel chunks, a zero one (factor 1), an excluded one.
        let sizes = [2 * PAR + 5, 6, 3, 1];
        for dtype in [crate::DType::F64, crate::DType::F32] {
            let tol = if dtype == crate::DType::F64 {
                1e-13
            } else {
                2e-6
            };
            let ps: Vec<Tensor> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let t = Tensor::rand(&[n], -1.0, 1.0, crate::DType::F64, &mut gen).unwrap();
                    let t = if i == 1 { t.zeros_like().unwrap() } else { t };
                    t.to_dtype(dtype).unwrap()
                })
                .collect();
            let gs: Vec<Tensor> = sizes
                .iter()
                .map(|&n| {
                    Tensor::rand(&[n], -1.0, 1.0, crate::DType::F64, &mut gen)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap()
                })
                .collect();
            let bs: Vec<Tensor> = ps.iter().map(|p| p.zeros_like().unwrap()).collect();
            let mut want: Vec<(Vec<f64>, Vec<f64>)> = ps
                .iter()
                .map(|p| {
                    let v = p.to_dtype(crate::DType::F64).unwrap().to_vec().unwrap();
                    let z = vec![0.0; v.len()];
                    (v, z)
                })
                .collect();
            for step in 0..3 {
                let hs: Vec<LarsStep> = (0..sizes.len())
                    .map(|i| LarsStep {
                        lr: 0.5 / (i + 1) as f64,
                        momentum: 0.9,
                        weight_decay: if i == 1 {
                            0.0
                        } else {
                            1e-2 * (step + 1) as f64
                        },
                        eta: 1e-3 * (i + 1) as f64,
                        adapt: i != 3,
                    })
                    .collect();
                let items: Vec<LarsItem> = (0..sizes.len())
                    .map(|i| LarsItem {
                        param: &ps[i],
                        grad: &gs[i],
                        momentum_buf: &bs[i],
                        step: hs[i],
                    })
                    .collect();
                Tensor::lars_steps_(&items).unwrap();
                for (i, (p, mu)) in want.iter_mut().enumerate() {
                    let g: Vec<f64> = gs[i].to_dtype(crate::DType::F64).unwrap().to_vec().unwrap();
                    lars_reference(p, &g, mu, &hs[i]);
                }
            }
            for i in 0..sizes.len() {
                let got: Vec<f64> = ps[i].to_dtype(crate::DType::F64).unwrap().to_vec().unwrap();
                let mu: Vec<f64> = bs[i].to_dtype(crate::DType::F64).unwrap().to_vec().unwrap();
                for (j, (a, b)) in got.iter().zip(&want[i].0).enumerate() {
                    assert!(
                        (a - b).abs() <= tol * (1.0 + b.abs()),
                        "{dtype:?} p{i}[{j}]: {a} vs {b}"
                    );
                }
                for (j, (a, b)) in mu.iter().zip(&want[i].1).enumerate() {
                    assert!(
                        (a - b).abs() <= tol * (1.0 + b.abs()),
                        "{dtype:?} mu{i}[{j}]: {a} vs {b}"
                    );
                }
            }
            // The zero parameter moved by its plain (factor 1) momentum step.
            assert!(
                ps[1]
                    .to_dtype(crate::DType::F64)
                    .unwrap()
                    .to_vec::<f64>()
                    .unwrap()[0]
                    != 0.0
            );
        }
        let p = Tensor::zeros(&[2], crate::DType::F32);
        let err = Tensor::lars_steps_(&[LarsItem {
            param: &p,
            grad: &p,
            momentum_buf: &p.zeros_like().unwrap(),
            step: LarsStep {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.0,
                eta: 1e-3,
                adapt: true,
            },
        }])
        .unwrap_err();
        assert!(err.to_string().contains("distinct"), "{err}");
    }
}
