//! Step metrics computed where the model runs. A method returns its metrics as 0-d tensors on
//! its device ([`crate::StepOutput::metrics`]); the trainer reads them back together with the
//! loss in one transfer per step, so logging costs one host-device synchronisation and none of
//! the method's own code waits for the device.

use selfsup_tensor::{no_grad, DType, Tensor};

use crate::error::{Result, SslError};

/// Fraction (a 0-d f64 tensor on `logits`' device) of the positions whose arg-max over the
/// last axis of `logits` `[..., classes]` equals `targets` `[...]` (integer class ids, any
/// device), counting only positions whose target is not `ignore`; 0 when none counts.
pub fn argmax_accuracy(logits: &Tensor, targets: &Tensor, ignore: Option<i64>) -> Result<Tensor> {
    let s = logits.shape();
    if s.is_empty() || s[s.len() - 1] == 0 || &s[..s.len() - 1] != targets.shape() {
        return Err(SslError::Config(format!(
            "accuracy: needs logits [..., classes] and targets of their leading shape, got {:?} and {:?}",
            s,
            targets.shape()
        )));
    }
    let _g = no_grad();
    // Class ids are exact in f64; comparisons then run as float ops on either device.
    let pred = logits.detach().argmax(-1, false)?.to_dtype(DType::F64)?;
    let tg = targets.to_device(logits.device())?.to_dtype(DType::F64)?;
    let hits = pred.eq(&tg)?;
    let acc = match ignore {
        None => hits.sum_all()?.div_scalar(tg.numel().max(1) as f64)?,
        Some(skip) => {
            let skip = Tensor::full_on(skip as f64, &[], DType::F64, logits.device())?;
            let counted = tg.ne(&skip)?;
            hits.mul(&counted)?
                .sum_all()?
                .div(&counted.sum_all()?.clamp(1.0, f64::INFINITY)?)?
        }
    };
    Ok(acc)
}
