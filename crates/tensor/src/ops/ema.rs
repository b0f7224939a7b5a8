//! Running updates in place, where the tensors live: exponential moving averages,
//! `target = keep * target + scale * source` (BatchNorm's running statistics and the EMA target
//! networks of BYOL, MoCo and DINO), and the i64 counter beside running statistics
//! ([`Tensor::count_up_`]). Many EMA targets at once ([`Tensor::ema_steps_`]) cost one kernel
//! launch per GPU and dtype, instead of four (two scalings, a sum, the copy back) per tensor.

use crate::error::Result;
use crate::ops::optim::check;
#[cfg(feature = "cuda")]
use crate::ops::optim::{cuda_of, one_gpu_launch};
use crate::storage::CpuStorage;
use crate::Tensor;

const OP: &str = "ema_step_";

/// One tensor's share of [`Tensor::ema_steps_`].
#[derive(Clone, Copy, Debug)]
pub struct EmaItem<'a> {
    /// Updated in place: `keep * target + scale * source`.
    pub target: &'a Tensor,
    /// Read: the new observation (a batch statistic, the online network's parameter).
    pub source: &'a Tensor,
    /// The target's factor (e.g. the momentum `m` of an EMA, or `1 - m` of a running mean).
    pub keep: f64,
    /// The source's factor (e.g. `1 - m`, or `m`).
    pub scale: f64,
}

fn ema_kernel<T: crate::Float>(t: &mut [T], s: &[T], keep: f64, scale: f64) {
    let (keep, scale) = (T::c(keep), T::c(scale));
    for (t, &s) in t.iter_mut().zip(s) {
        *t = keep * *t + scale * s;
    }
}

impl Tensor {
    /// `self = keep * self + scale * source` in place, outside autograd. `self` must be a
    /// contiguous buffer and `source` another of the same shape, float dtype and device (a
    /// strided `source` is read from a copy).
    ///
    /// ```
    /// # use selfsup_tensor::Tensor;
    /// let running = Tensor::from_vec(vec![1.0f32, 2.0], &[2])?;
    /// let batch = Tensor::from_vec(vec![3.0f32, 6.0], &[2])?;
    /// running.ema_step_(&batch, 0.9, 0.1)?;
    /// assert_eq!(running.to_vec::<f32>()?, vec![1.2, 2.4]);
    /// # Ok::<(), selfsup_tensor::Error>(())
    /// ```
    pub fn ema_step_(&self, source: &Tensor, keep: f64, scale: f64) -> Result<()> {
        Tensor::ema_steps_(&[EmaItem {
            target: self,
            source,
            keep,
            scale,
        }])
    }

    /// [`Tensor::ema_step_`] for many tensors, each with its own factors (the same checks and
    /// update). On a GPU the tensors that share one device and dtype are updated by one kernel
    /// launch.
    pub fn ema_steps_(items: &[EmaItem]) -> Result<()> {
        // A source that is a strided view, or starts at an offset, is read from a copy.
        let mut sources = Vec::with_capacity(items.len());
        for it in items {
            let s = it.source;
            sources.push(if s.is_contiguous() && s.layout().offset() == 0 {
                s.detach()
            } else {
                crate::ops::dense(s)?
            });
        }
        let items: Vec<EmaItem> = items
            .iter()
            .zip(&sources)
            .map(|(it, s)| EmaItem { source: s, ..*it })
            .collect();
        let items = &items[..];
        for it in items {
            check(OP, it.target, &[it.source])?;
        }
        #[cfg(feature = "cuda")]
        {
            let groups: Vec<Vec<&Tensor>> =
                items.iter().map(|it| vec![it.target, it.source]).collect();
            if one_gpu_launch(&groups) {
                let ts: Vec<_> = items.iter().map(|it| it.target.write()).collect();
                let ss: Vec<_> = items.iter().map(|it| it.source.read()).collect();
                let copies = crate::shadow::for_updates(items.iter().map(|it| it.target));
                let cw: Vec<_> = copies
                    .iter()
                    .map(|c| c.as_ref().map(|c| c.write()))
                    .collect();
                let mut slots = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    slots.push(crate::cuda::optim::EmaSlot {
                        target: cuda_of(OP, &ts[i])?,
                        source: cuda_of(OP, &ss[i])?,
                        t16: crate::ops::optim::copy_of(OP, &cw[i])?,
                        n: it.target.numel(),
                        keep: it.keep,
                        scale: it.scale,
                    });
                }
                crate::cuda::optim::ema_many(&slots)?;
                crate::shadow::mark_current(items.iter().map(|it| it.target));
                return Ok(());
            }
        }
        for it in items {
            let (mut tw, sr) = (it.target.write(), it.source.read());
            #[cfg(feature = "cuda")]
            if let (crate::storage::Storage::Cuda(t), crate::storage::Storage::Cuda(s)) =
                (&*tw, &*sr)
            {
                crate::cuda::optim::ema_many(&[crate::cuda::optim::EmaSlot {
                    target: t,
                    source: s,
                    t16: None,
                    n: it.target.numel(),
                    keep: it.keep,
                    scale: it.scale,
                }])?;
                continue;
            }
            match (tw.cpu_mut(OP)?, sr.cpu(OP)?) {
                (CpuStorage::F32(t), CpuStorage::F32(s)) => ema_kernel(t, s, it.keep, it.scale),
                (CpuStorage::F64(t), CpuStorage::F64(s)) => ema_kernel(t, s, it.keep, it.scale),
                (t, _) => return Err(crate::ops::unsupported(OP, t.dtype())),
            }
        }
        Ok(())
    }
}

impl Tensor {
    /// Adds `by` to every element of this i64 tensor in place, where it lives (a running
    /// statistic's batch counter, such as BatchNorm's `num_batches_tracked`: counting on the
    /// device, nothing is read back). `self` must be contiguous; wraps on overflow.
    ///
    /// ```
    /// # use selfsup_tensor::{Tensor, DType};
    /// let seen = Tensor::zeros(&[], DType::I64);
    /// seen.count_up_(1)?;
    /// seen.count_up_(2)?;
    /// assert_eq!(seen.to_vec::<i64>()?, vec![3]);
    /// # Ok::<(), selfsup_tensor::Error>(())
    /// ```
    pub fn count_up_(&self, by: i64) -> Result<()> {
        const OP: &str = "count_up_";
        if self.dtype() != crate::DType::I64 {
            return Err(crate::ops::unsupported(OP, self.dtype()));
        }
        if !self.is_contiguous() {
            return crate::error::shape_err(
                OP,
                format!(
                    "needs a contiguous tensor; got a strided view of shape {:?}",
                    self.shape()
                ),
            );
        }
        let (offset, n) = (self.layout().offset(), self.numel());
        let mut w = self.write();
        #[cfg(feature = "cuda")]
        if let crate::storage::Storage::Cuda(c) = &*w {
            return crate::cuda::optim::count_up(c, offset, n, by);
        }
        match w.cpu_mut(OP)? {
            CpuStorage::I64(v) => {
                for x in &mut v[offset..offset + n] {
                    *x = x.wrapping_add(by);
                }
                Ok(())
            }
            other => Err(crate::ops::unsupported(OP, other.dtype())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EmaItem;
    use crate::{DType, Tensor};

    #[test]
    fn ema_steps_apply_each_items_factors_and_refuse_bad_operands() {
        let a = Tensor::from_vec(vec![1.0f64, -2.0, 4.0], &[3]).unwrap();
        let sa = Tensor::from_vec(vec![3.0f64, 0.5, -1.0], &[3]).unwrap();
        let b = Tensor::from_vec(vec![10.0f32; 4], &[2, 2]).unwrap();
        let sb = Tensor::from_vec(vec![0.0f32, 1.0, 2.0, 3.0], &[2, 2]).unwrap();
        Tensor::ema_steps_(&[
            EmaItem {
                target: &a,
                source: &sa,
                keep: 0.75,
                scale: 0.5,
            },
            EmaItem {
                target: &b,
                source: &sb,
                keep: 0.5,
                scale: 2.0,
            },
        ])
        .unwrap();
        assert_eq!(a.to_vec::<f64>().unwrap(), vec![2.25, -1.25, 2.5]);
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![5.0, 7.0, 9.0, 11.0]);
        // Shape, dtype, layout and aliasing are checked before anything is written.
        let wrong = Tensor::zeros(&[4], DType::F64);
        let e = a.ema_step_(&wrong, 0.5, 0.5).unwrap_err().to_string();
        assert!(e.contains("ema_step_") && e.contains("[4]"), "{e}");
        assert!(a.ema_step_(&sb, 0.5, 0.5).is_err());
        assert!(b.t().unwrap().ema_step_(&sb, 0.5, 0.5).is_err());
        // A strided source is fine: b += 0.5 * sbᵀ, written out.
        b.ema_step_(&sb.t().unwrap(), 1.0, 0.5).unwrap();
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![5.0, 8.0, 9.5, 12.5]);
        assert!(a.ema_step_(&a, 0.5, 0.5).is_err());
        let ids = Tensor::from_vec(vec![1i64, 2, 3], &[3]).unwrap();
        assert!(ids.ema_step_(&ids.copy().unwrap(), 0.5, 0.5).is_err());
        assert_eq!(a.to_vec::<f64>().unwrap(), vec![2.25, -1.25, 2.5]);
    }

    #[test]
    fn count_up_adds_in_place_to_i64_only() {
        let c = Tensor::from_vec(vec![1i64, i64::MAX, -5], &[3]).unwrap();
        c.count_up_(2).unwrap();
        assert_eq!(c.to_vec::<i64>().unwrap(), vec![3, i64::MIN + 1, -3]);
        let tail = c.narrow(0, 1, 2).unwrap();
        tail.count_up_(-1).unwrap();
        assert_eq!(c.to_vec::<i64>().unwrap(), vec![3, i64::MIN, -4]);
        assert!(Tensor::zeros(&[2], DType::F32).count_up_(1).is_err());
        let m = Tensor::from_vec(vec![0i64; 4], &[2, 2]).unwrap();
        assert!(m.t().unwrap().count_up_(1).is_err());
    }
}
