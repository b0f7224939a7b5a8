//! Losses and helpers used across selfsup: fused cross-entropy from logits (ignore_index, label
//! smoothing), mean squared error, L2 normalisation and cosine similarity.

use crate::autograd::BackwardOp;
use crate::cpu::cross_entropy;
use crate::error::{shape_err, Error, Result};
use crate::ops::float_map;
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Tensor};

/// Options of [`Tensor::cross_entropy_with`].
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropy {
    /// Rows whose target equals this are skipped (and not counted in the mean).
    pub ignore_index: Option<i64>,
    /// Label smoothing in `[0, 1)`: the target is `(1 - eps) * onehot + eps / classes`.
    pub label_smoothing: f64,
    /// Mean over counted rows (`true`, the default) or sum.
    pub mean: bool,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        CrossEntropy {
            ignore_index: None,
            label_smoothing: 0.0,
            mean: true,
        }
    }
}

struct CeBack {
    targets: Vec<Option<usize>>,
    lse: Tensor,
    scale: f64,
    eps: f64,
}

impl BackwardOp for CeBack {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0].contiguous()?;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let gs = g.item()? * self.scale;
        let gx = x.read();
        let gl = self.lse.read();
        let l = x.layout();
        let s = match (gx.cpu("cross_entropy")?, gl.cpu("cross_entropy")?) {
            (CpuStorage::F32(v), CpuStorage::F32(lse)) => CpuStorage::F32(cross_entropy::backward(
                &v[l.offset()..l.offset() + n * c],
                c,
                &self.targets,
                lse,
                gs as f32,
                self.eps,
            )),
            (CpuStorage::F64(v), CpuStorage::F64(lse)) => CpuStorage::F64(cross_entropy::backward(
                &v[l.offset()..l.offset() + n * c],
                c,
                &self.targets,
                lse,
                gs,
                self.eps,
            )),
            (v, _) => return Err(crate::ops::unsupported("cross_entropy", v.dtype())),
        };
        Ok(vec![Some(Tensor::from_cpu(s, &[n, c])), None])
    }
}

impl Tensor {
    /// Mean cross-entropy of logits `[n, classes]` against integer targets `[n]`.
    pub fn cross_entropy(&self, targets: &Tensor) -> Result<Tensor> {
        self.cross_entropy_with(targets, &CrossEntropy::default())
    }

    /// Cross-entropy with options (ignore index, label smoothing, sum or mean).
    pub fn cross_entropy_with(&self, targets: &Tensor, opts: &CrossEntropy) -> Result<Tensor> {
        if self.rank() != 2 || targets.rank() != 1 || targets.shape()[0] != self.shape()[0] {
            return shape_err(
                "cross_entropy",
                format!(
                    "needs logits [n, classes] and targets [n], got {:?} and {:?}",
                    self.shape(),
                    targets.shape()
                ),
            );
        }
        if !(0.0..1.0).contains(&opts.label_smoothing) {
            return Err(Error::Invalid {
                op: "cross_entropy",
                msg: format!("label smoothing {} must be in [0, 1)", opts.label_smoothing),
            });
        }
        let c = self.shape()[1];
        #[cfg(feature = "cuda")]
        if !self.device().is_cpu() && targets.device() == self.device() {
            // Targets already on the GPU are not read back (that would make the step wait for
            // the device): the kernels skip ignored rows and turn out-of-range targets into NaN.
            return cuda_ce::forward_device_targets(self, targets, opts);
        }
        let raw: Vec<i64> = match targets.dtype() {
            DType::I64 => targets.to_vec::<i64>()?,
            DType::U32 => targets
                .to_vec::<u32>()?
                .into_iter()
                .map(i64::from)
                .collect(),
            d => {
                return Err(Error::UnsupportedDType {
                    op: "cross_entropy",
                    dtype: d,
                    supported: "i64 or u32 targets",
                })
            }
        };
        let tg: Vec<Option<usize>> = raw
            .iter()
            .map(|&t| {
                if Some(t) == opts.ignore_index {
                    Ok(None)
                } else if t < 0 || t as usize >= c {
                    Err(Error::Index {
                        op: "cross_entropy",
                        index: t,
                        size: c,
                    })
                } else {
                    Ok(Some(t as usize))
                }
            })
            .collect::<Result<_>>()?;
        let counted = tg.iter().filter(|t| t.is_some()).count();
        let scale = if opts.mean {
            1.0 / counted.max(1) as f64
        } else {
            1.0
        };
        #[cfg(feature = "cuda")]
        if !self.device().is_cpu() {
            let host: Vec<i64> = tg.iter().map(|t| t.map_or(-1, |v| v as i64)).collect();
            let tdev = Tensor::from_vec(host, &[tg.len()])?.to_device(self.device())?;
            return cuda_ce::forward(
                self,
                targets,
                cuda_ce::Scaled {
                    targets: tdev,
                    ignore: Some(-1),
                    scale,
                    device_scale: None,
                    eps: opts.label_smoothing,
                },
            );
        }
        let x = self.contiguous()?.detach();
        let (loss, lse) = {
            let g = x.read();
            let l = x.layout();
            let data = g.cpu("cross_entropy")?;
            let lse_store;
            let loss = float_map!("cross_entropy", data, v => {
                let (loss, lse) = cross_entropy::forward(&v[l.offset()..l.offset() + l.numel()], c, &tg, opts.label_smoothing);
                lse_store = Some(crate::Element::into_storage(lse));
                let total: f64 = loss.iter().map(|z| crate::Element::to_f64(*z)).sum::<f64>() * scale;
                vec![crate::Element::from_f64(total)]
            });
            (loss, lse_store)
        };
        let lse = Tensor::from_cpu(
            lse.ok_or(Error::Invalid {
                op: "cross_entropy",
                msg: "no rows".into(),
            })?,
            &[self.shape()[0]],
        );
        let eps = opts.label_smoothing;
        Ok(Tensor::from_op(
            Storage::Cpu(loss),
            &[],
            &[self, targets],
            || {
                Box::new(CeBack {
                    targets: tg,
                    lse,
                    scale,
                    eps,
                })
            },
        ))
    }

    /// Mean squared error against `target` (same shape).
    pub fn mse_loss(&self, target: &Tensor) -> Result<Tensor> {
        if self.shape() != target.shape() {
            return shape_err(
                "mse_loss",
                format!(
                    "prediction {:?} and target {:?} differ in shape",
                    self.shape(),
                    target.shape()
                ),
            );
        }
        self.sub(target)?.sqr()?.mean_all()
    }

    /// `x / max(||x||_2, eps)` along `axis`.
    pub fn l2_normalize(&self, axis: isize, eps: f64) -> Result<Tensor> {
        let n = self
            .sqr()?
            .sum(&[axis], true)?
            .clamp(eps * eps, f64::INFINITY)?
            .sqrt()?;
        self.div(&n)
    }

    /// Cosine similarity along `axis`: `sum(a * b) / (max(|a|, eps) * max(|b|, eps))`.
    pub fn cosine_similarity(&self, other: &Tensor, axis: isize, eps: f64) -> Result<Tensor> {
        self.l2_normalize(axis, eps)?
            .mul(&other.l2_normalize(axis, eps)?)?
            .sum(&[axis], false)
    }
}

/// The fused cross-entropy on the GPU (`kernels/loss.cu`).
#[cfg(feature = "cuda")]
pub(crate) mod cuda_ce {
    use super::*;
    use crate::cuda::rows;

    use crate::ops::dense;

    /// The targets as the kernels read them and how the summed loss is scaled.
    pub(crate) struct Scaled {
        /// i64 targets `[n]` on the logits' device, contiguous from element 0.
        pub targets: Tensor,
        /// The target value of skipped rows.
        pub ignore: Option<i64>,
        /// Host factor on the summed loss.
        pub scale: f64,
        /// Device factor on top of `scale` (1 / counted rows, counted on the device).
        pub device_scale: Option<Tensor>,
        /// Label smoothing.
        pub eps: f64,
    }

    /// Cross-entropy against targets that live on the logits' device: ignored rows counted
    /// there, nothing read back.
    pub(super) fn forward_device_targets(
        x: &Tensor,
        targets: &Tensor,
        opts: &CrossEntropy,
    ) -> Result<Tensor> {
        forward(x, targets, scaled_device_targets(x, targets, opts)?)
    }

    /// The targets and scales of a cross-entropy of logits `x` `[n, c]` against targets on
    /// its device.
    pub(crate) fn scaled_device_targets(
        x: &Tensor,
        targets: &Tensor,
        opts: &CrossEntropy,
    ) -> Result<Scaled> {
        let n = x.shape()[0];
        let t64 = match targets.dtype() {
            DType::I64 => dense(targets)?,
            DType::U32 => targets.to_dtype(DType::I64)?,
            d => {
                return Err(Error::UnsupportedDType {
                    op: "cross_entropy",
                    dtype: d,
                    supported: "i64 or u32 targets",
                })
            }
        };
        let (scale, device_scale) = match (opts.mean, opts.ignore_index) {
            (false, _) => (1.0, None),
            (true, None) => (1.0 / n.max(1) as f64, None),
            (true, Some(skip)) => {
                let _g = crate::no_grad();
                let skip = Tensor::full_on(skip as f64, &[], DType::F64, x.device())?;
                let counted = t64.to_dtype(DType::F64)?.ne(&skip)?.sum_all()?;
                // In the loss's dtype: f32 for bf16 logits.
                let dtype = match x.dtype() {
                    DType::BF16 => DType::F32,
                    d => d,
                };
                let inv = counted
                    .clamp(1.0, f64::INFINITY)?
                    .rdiv_scalar(1.0)?
                    .to_dtype(dtype)?;
                (1.0, Some(inv))
            }
        };
        Ok(Scaled {
            targets: t64,
            ignore: opts.ignore_index,
            scale,
            device_scale,
            eps: opts.label_smoothing,
        })
    }

    pub(super) fn forward(x: &Tensor, targets: &Tensor, s: Scaled) -> Result<Tensor> {
        let (total, lse) = forward_values(x, &s)?;
        Ok(total.attach(&[x, targets], || Box::new(CeBackCuda { s, lse })))
    }

    /// The loss of logits `x` `[n, c]` (outside autograd) and the rows' log-sum-exp.
    pub(crate) fn forward_values(x: &Tensor, s: &Scaled) -> Result<(Tensor, Tensor)> {
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let xd = dense(x)?;
        let (loss, lse) = {
            let (gx, gt) = (xd.read(), s.targets.read());
            match (&*gx, &*gt) {
                (Storage::Cuda(cx), Storage::Cuda(ct)) => {
                    rows::cross_entropy_forward(cx, ct, n, c, s.eps, rows::Ignore(s.ignore))?
                }
                _ => return Err(crate::storage::no_kernel("cross_entropy", x.device())),
            }
        };
        let per_row = Tensor::from_storage(Storage::Cuda(loss), &[n]);
        let total = {
            let _g = crate::no_grad();
            let t = per_row.sum_all()?.mul_scalar(s.scale)?;
            match &s.device_scale {
                Some(d) => t.mul(d)?,
                None => t,
            }
        };
        let lse = Tensor::from_storage(Storage::Cuda(lse), &[n]);
        Ok((total, lse))
    }

    /// The gradient of the loss with respect to contiguous logits `x` `[n, c]`, given the
    /// forward's `lse` and the loss's gradient `g` (one element on the device): in `x`'s dtype,
    /// or for bf16 logits with `bf16` in bf16 (the operand of a fused head's products).
    pub(crate) fn logits_grad(
        x: &Tensor,
        s: &Scaled,
        lse: &Tensor,
        g: &Tensor,
        bf16: bool,
    ) -> Result<Tensor> {
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let g = match &s.device_scale {
            Some(d) => dense(&g.mul(d)?)?,
            None => g.clone(),
        };
        let (gx, gt, gl, gg) = (x.read(), s.targets.read(), lse.read(), g.read());
        let dx = match (&*gx, &*gt, &*gl, &*gg) {
            (Storage::Cuda(cx), Storage::Cuda(ct), Storage::Cuda(cl), Storage::Cuda(cg)) => {
                rows::cross_entropy_backward(
                    cx,
                    ct,
                    cl,
                    cg,
                    g.layout().offset(),
                    n,
                    c,
                    s.scale,
                    s.eps,
                    rows::Ignore(s.ignore),
                    bf16,
                )?
            }
            _ => return Err(crate::storage::no_kernel("cross_entropy", x.device())),
        };
        Ok(Tensor::from_storage(Storage::Cuda(dx), &[n, c]))
    }

    /// The cross-entropy's backward: its targets and scales and the rows' log-sum-exp.
    struct CeBackCuda {
        s: Scaled,
        lse: Tensor,
    }

    impl BackwardOp for CeBackCuda {
        fn name(&self) -> &'static str {
            "cross_entropy"
        }
        fn backward(
            &self,
            inputs: &[Tensor],
            _: &Tensor,
            g: &Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            let x = dense(&inputs[0])?;
            Ok(vec![
                Some(logits_grad(&x, &self.s, &self.lse, g, false)?),
                None,
            ])
        }
    }
}
