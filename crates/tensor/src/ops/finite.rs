//! The non-finite probe: one value that says whether any of many tensors holds a NaN or an
//! infinity, computed where the tensors live, for a training step's check of every gradient
//! and running statistic (read back with the loss, so the step still synchronises once).

use crate::error::Result;
use crate::{DType, Device, Tensor};

const OP: &str = "non_finite_probe";

impl Tensor {
    /// A 0-d f64 tensor on `device`: NaN when any element of a float tensor in `tensors` is NaN
    /// or infinite, else 0 (the sum over all of them of `x * 0`). Tensors that are not floats,
    /// or are empty, are skipped; nothing is recorded for autograd. On a GPU, the f32 and f64
    /// tensors of one device cost one kernel launch and one sum of its per-chunk partials,
    /// however many tensors there are (a training step probes every gradient: one launch
    /// instead of four per parameter); elsewhere (the CPU, bf16/f16 tensors, which are widened to f32)
    /// each tensor is `x.mul_scalar(0)?.sum_all()?`.
    ///
    /// ```
    /// # use selfsup_tensor::{Tensor, Device};
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2])?;
    /// let b = Tensor::from_vec(vec![0.5f64, f64::INFINITY], &[2])?;
    /// assert_eq!(Tensor::non_finite_probe(&[&a], Device::Cpu)?.item()?, 0.0);
    /// assert!(Tensor::non_finite_probe(&[&a, &b], Device::Cpu)?.item()?.is_nan());
    /// # Ok::<(), selfsup_tensor::Error>(())
    /// ```
    pub fn non_finite_probe(tensors: &[&Tensor], device: Device) -> Result<Tensor> {
        let _g = crate::no_grad();
        let mut parts: Vec<Tensor> = Vec::new();
        #[cfg(feature = "cuda")]
        let mut gpu: Vec<((Device, DType), Vec<Tensor>)> = Vec::new();
        for t in tensors {
            if !t.dtype().is_float() || t.numel() == 0 {
                continue;
            }
            #[cfg(feature = "cuda")]
            if !t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64) {
                // A contiguous tensor is read in place from its offset; a strided view is
                // copied first (gradients and buffers are contiguous).
                let d = if t.is_contiguous() {
                    t.detach()
                } else {
                    crate::ops::dense(t)?
                };
                let key = (t.device(), t.dtype());
                match gpu.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, group)) => group.push(d),
                    None => gpu.push((key, vec![d])),
                }
                continue;
            }
            let x = match t.dtype() {
                DType::F32 | DType::F64 => t.detach(),
                _ => t.detach().to_dtype(DType::F32)?,
            };
            parts.push(
                x.mul_scalar(0.0)?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_device(device)?,
            );
        }
        #[cfg(feature = "cuda")]
        for (_, group) in &gpu {
            if let Some(p) = gpu_partials(group)? {
                parts.push(p.sum_all()?.to_device(device)?);
            }
        }
        let mut acc: Option<Tensor> = None;
        for p in parts {
            acc = Some(match acc {
                Some(a) => a.add(&p)?,
                None => p,
            });
        }
        match acc {
            Some(a) => Ok(a),
            None => Tensor::full_on(0.0, &[], DType::F64, device),
        }
    }
}

/// The per-chunk partials of contiguous GPU tensors of one device and dtype (one launch).
#[cfg(feature = "cuda")]
fn gpu_partials(group: &[Tensor]) -> Result<Option<Tensor>> {
    use crate::storage::Storage;
    let guards: Vec<_> = group.iter().map(|t| t.read()).collect();
    let mut slots = Vec::with_capacity(group.len());
    for (g, t) in guards.iter().zip(group) {
        slots.push((crate::ops::cuda_ref(OP, g)?, t.layout().offset(), t.numel()));
    }
    let partials = crate::cuda::reduce::non_finite_partials(&slots)?;
    Ok(partials.map(|p| {
        let n = p.len();
        Tensor::from_storage(Storage::Cuda(p), &[n])
    }))
}

#[cfg(test)]
mod tests {
    use crate::{DType, Device, Tensor};

    #[test]
    fn the_probe_is_nan_exactly_when_something_is_not_finite() {
        let a = Tensor::from_vec(vec![1.0f32, -2.0, 3.0e38], &[3]).unwrap();
        let b = Tensor::from_vec(vec![0.5f64; 6], &[2, 3]).unwrap();
        let ids = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
        let probe = |ts: &[&Tensor]| Tensor::non_finite_probe(ts, Device::Cpu).unwrap();
        let p = probe(&[&a, &b.t().unwrap(), &ids]);
        assert_eq!(
            (p.shape(), p.dtype(), p.item().unwrap()),
            (&[][..], DType::F64, 0.0)
        );
        assert_eq!(probe(&[]).item().unwrap(), 0.0);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let c = Tensor::from_vec(vec![0.0f32, bad], &[2]).unwrap();
            assert!(probe(&[&a, &c]).item().unwrap().is_nan(), "{bad}");
            let h = c.to_dtype(DType::BF16).unwrap();
            assert!(probe(&[&h, &b]).item().unwrap().is_nan(), "bf16 {bad}");
        }
    }
}
