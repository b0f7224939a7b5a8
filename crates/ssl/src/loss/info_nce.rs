//! InfoNCE for momentum contrast (He et al. 2020; Chen et al. 2021): each query `q_i` must pick
//! its key `k_i` out of a set of candidates, with L2-normalised dot products over a
//! temperature `t` as logits.
//!
//! - [`info_nce_queue`] (MoCo v2): candidates are `k_i` and the `K` rows of a queue of earlier
//!   keys; `loss = mean_i -log softmax([q_i.k_i, q_i.Q_1, .., q_i.Q_K] / t)[0]`.
//! - [`info_nce_batch`] (MoCo v3): candidates are all keys of the batch;
//!   `loss = mean_i -log softmax(q_i . k_j / t over j)[i]`.

use selfsup_tensor::{DType, Error, Result, Tensor};

use super::common::{same_2d, temperature};

/// InfoNCE of queries `q` `[N, D]` against their keys `k` `[N, D]` and the negatives `queue`
/// `[K, D]` (used as given: MoCo keeps it L2-normalised) at temperature `t`. `q` and `k` are
/// L2-normalised here.
pub fn info_nce_queue(q: &Tensor, k: &Tensor, queue: &Tensor, t: f64) -> Result<Tensor> {
    same_2d("info_nce_queue", q, k, 1)?;
    temperature("info_nce_queue", t)?;
    if queue.rank() != 2 || queue.shape()[1] != q.shape()[1] {
        return Err(Error::Shape {
            op: "info_nce_queue",
            msg: format!(
                "queue must be [K, {}] like the keys, got {:?}",
                q.shape()[1],
                queue.shape()
            ),
        });
    }
    let n = q.shape()[0];
    let qn = q.l2_normalize(-1, 1e-12)?;
    let kn = k.l2_normalize(-1, 1e-12)?;
    let pos = qn.mul(&kn)?.sum(&[-1], true)?;
    let neg = qn.matmul(&queue.t()?)?;
    let logits = Tensor::concat(&[&pos, &neg], 1)?.mul_scalar(1.0 / t)?;
    logits.cross_entropy(&Tensor::zeros_on(&[n], DType::I64, logits.device())?)
}

/// InfoNCE of queries `q` `[N, D]` against the keys `k` `[N, D]` of the same batch (positive:
/// the same row) at temperature `t`; both are L2-normalised here.
pub fn info_nce_batch(q: &Tensor, k: &Tensor, t: f64) -> Result<Tensor> {
    same_2d("info_nce_batch", q, k, 1)?;
    temperature("info_nce_batch", t)?;
    let n = q.shape()[0];
    let qn = q.l2_normalize(-1, 1e-12)?;
    let kn = k.l2_normalize(-1, 1e-12)?;
    let logits = qn.matmul(&kn.t()?)?.mul_scalar(1.0 / t)?;
    logits.cross_entropy(&Tensor::arange_on(n, DType::I64, logits.device())?)
}
