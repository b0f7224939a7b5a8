//! CPC's InfoNCE (van den Oord et al. 2018): each prediction of a future step must pick out the
//! encoding it predicts among all encodings of the batch. With `q` the predictions and `k` the
//! encodings (row `i` of each a positive pair), both L2-normalised, the loss is the mean over `i`
//! of `-log softmax_j(q_i . k_j / t)[i]`: every other row of `k` is a negative.

use selfsup_tensor::{DType, Error, Result, Tensor};

/// InfoNCE of predictions `q` `[N, D]` against encodings `k` `[N, D]` (row `i` positives), on
/// cosine similarities at temperature `t`.
pub fn cpc_info_nce(q: &Tensor, k: &Tensor, t: f64) -> Result<Tensor> {
    if q.rank() != 2 || q.shape() != k.shape() || q.shape()[0] == 0 {
        return Err(Error::Shape {
            op: "cpc_info_nce",
            msg: format!(
                "needs predictions and encodings of one shape [N >= 1, D], got {:?} and {:?}",
                q.shape(),
                k.shape()
            ),
        });
    }
    if !(t > 0.0 && t.is_finite()) {
        return Err(Error::Invalid {
            op: "cpc_info_nce",
            msg: format!("temperature must be positive and finite, got {t}"),
        });
    }
    let n = q.shape()[0];
    let logits = info_nce_logits(q, k, t)?;
    logits.cross_entropy(&Tensor::arange_on(n, DType::I64, logits.device())?)
}

/// The similarity matrix `[N, N]` of [`cpc_info_nce`] (row `i`: prediction `i` against every
/// encoding), for accuracies.
pub fn info_nce_logits(q: &Tensor, k: &Tensor, t: f64) -> Result<Tensor> {
    let qn = q.l2_normalize(-1, 1e-12)?;
    let kn = k.l2_normalize(-1, 1e-12)?;
    qn.matmul(&kn.t()?)?.mul_scalar(1.0 / t)
}
