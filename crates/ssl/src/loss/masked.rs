//! Losses of masked modelling: reconstruction errors counted only where the input was masked
//! (MAE, SimMIM), MAE's per-patch normalised pixel targets, and cross-entropy over the masked
//! tokens of MLM.
//!
//! Unmasked entries are multiplied by an exact zero, so their targets never change the loss:
//! not even in the last bit.

use selfsup_tensor::ops::loss::CrossEntropy;
use selfsup_tensor::{Error, Result, Tensor};

pub use selfsup_data::mask::IGNORE_INDEX;

fn shape_err<T>(op: &'static str, msg: String) -> Result<T> {
    Err(Error::Shape { op, msg })
}

/// MAE's loss: `pred` and `target` `[B, N, P]` (N patches of P pixels), `mask` `[B, N]` with 1
/// for masked patches and 0 for visible ones. The squared error is averaged over each patch's
/// pixels, then over the masked patches: `sum_bn mask * mean_p (pred - target)^2 / sum mask`.
pub fn masked_patch_mse(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if pred.rank() != 3 || pred.shape() != target.shape() || mask.shape() != &pred.shape()[..2] {
        return shape_err(
            "masked_patch_mse",
            format!(
                "needs pred and target [B, N, P] and mask [B, N], got {:?}, {:?} and {:?}",
                pred.shape(),
                target.shape(),
                mask.shape()
            ),
        );
    }
    let per_patch = pred.sub(target)?.sqr()?.mean(&[-1], false)?;
    let mask = mask.to_dtype(pred.dtype())?;
    mean_over_mask(
        "masked_patch_mse",
        per_patch.mul(&mask)?.sum_all()?,
        &mask,
        "no patch is masked",
    )
}

/// `total / sum(mask)`. A mask on the CPU is counted there and an empty one is an error; on a
/// GPU the count stays on the device (reading it back would make the step wait), so an empty
/// mask gives a NaN loss, which the trainer reports as a non-finite loss.
fn mean_over_mask(op: &'static str, total: Tensor, mask: &Tensor, empty: &str) -> Result<Tensor> {
    let count = mask.sum_all()?;
    if !mask.device().is_cpu() {
        return total.div(&count);
    }
    let count = count.item()?;
    if count <= 0.0 {
        return Err(Error::Invalid {
            op,
            msg: format!("{empty}: the loss would be 0/0"),
        });
    }
    total.div_scalar(count)
}

/// A reconstruction error over masked pixels (SimMIM): `pred`, `target` any shape, `mask`
/// broadcastable to it (e.g. `[B, 1, H, W]` for `[B, C, H, W]` images), 1 where masked. The
/// elementwise error (`|d|` when `l1`, else `d^2`) is summed over masked entries and divided by
/// their number (the mask's count after broadcasting).
pub fn masked_pixel_loss(
    pred: &Tensor,
    target: &Tensor,
    mask: &Tensor,
    l1: bool,
) -> Result<Tensor> {
    if pred.shape() != target.shape() {
        return shape_err(
            "masked_pixel_loss",
            format!(
                "pred {:?} and target {:?} differ",
                pred.shape(),
                target.shape()
            ),
        );
    }
    let mask = mask.to_dtype(pred.dtype())?.broadcast_to(pred.shape())?;
    let d = pred.sub(target)?;
    let err = if l1 { d.abs()? } else { d.sqr()? };
    mean_over_mask(
        "masked_pixel_loss",
        err.mul(&mask)?.sum_all()?,
        &mask,
        "no pixel is masked",
    )
}

/// MAE's normalised pixel targets: each patch (last axis) minus its mean, divided by
/// `sqrt(var + 1e-6)` with the unbiased variance. Carries no gradient (it is a target).
pub fn norm_pix_target(target: &Tensor) -> Result<Tensor> {
    let t = target.detach();
    if t.rank() == 0 || t.shape()[t.rank() - 1] < 2 {
        return shape_err(
            "norm_pix_target",
            format!(
                "needs patches of at least 2 pixels on the last axis, got {:?}",
                t.shape()
            ),
        );
    }
    let mean = t.mean(&[-1], true)?;
    let var = t.var(&[-1], true, true)?;
    t.sub(&mean)?.div(&var.add_scalar(1e-6)?.sqrt()?)
}

/// Cross-entropy of `logits` `[B, T, V]` against `targets` `[B, T]` (i64) over the positions
/// whose target is not [`IGNORE_INDEX`] (MLM: the selected tokens), averaged over them.
pub fn masked_token_ce(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.rank() != 3 || targets.shape() != &logits.shape()[..2] {
        return shape_err(
            "masked_token_ce",
            format!(
                "needs logits [B, T, V] and targets [B, T], got {:?} and {:?}",
                logits.shape(),
                targets.shape()
            ),
        );
    }
    let (b, t, v) = (logits.shape()[0], logits.shape()[1], logits.shape()[2]);
    let tg = targets.reshape(&[b * t])?;
    // Checked only where the targets are on the host; on a GPU they are not read back, and
    // the cross-entropy's device count makes an all-ignored batch a loss of 0.
    if targets.device().is_cpu() && tg.to_vec::<i64>()?.iter().all(|&x| x == IGNORE_INDEX) {
        return Err(Error::Invalid {
            op: "masked_token_ce",
            msg: "no position is selected: the loss would be 0/0".into(),
        });
    }
    logits.reshape(&[b * t, v])?.cross_entropy_with(
        &tg,
        &CrossEntropy {
            ignore_index: Some(IGNORE_INDEX),
            ..CrossEntropy::default()
        },
    )
}
