//! NT-Xent (SimCLR, Chen et al. 2020): for `2N` projections where rows `i` and `i + N` are two
//! views of the same image, each row is an anchor whose positive is its partner and whose
//! negatives are the other `2N - 2` rows. With `z` L2-normalised and `s = z z^T / T`, the loss is
//! the mean over all `2N` anchors of `-log softmax(s_i)[partner(i)]`, self-similarity excluded.

use selfsup_tensor::{DType, Error, Result, Tensor};

/// NT-Xent over `z` of shape `[2N, D]` (rows `i` and `i + N` positives) at temperature `t`.
pub fn nt_xent(z: &Tensor, t: f64) -> Result<Tensor> {
    if z.rank() != 2 || z.shape()[0] < 2 || z.shape()[0] % 2 != 0 {
        return Err(Error::Shape {
            op: "nt_xent",
            msg: format!(
                "needs [2N, D] with N >= 1 (rows i and i+N are positives), got {:?}",
                z.shape()
            ),
        });
    }
    if !(t > 0.0 && t.is_finite()) {
        return Err(Error::Invalid {
            op: "nt_xent",
            msg: format!("temperature must be positive and finite, got {t}"),
        });
    }
    let m = z.shape()[0];
    let n = m / 2;
    let zn = z.l2_normalize(-1, 1e-12)?;
    let sim = zn.matmul(&zn.t()?)?.mul_scalar(1.0 / t)?;
    // Exclude self-similarity: exp(-inf) is exactly 0 in the fused cross-entropy.
    let eye = Tensor::eye_on(m, z.dtype(), z.device())?;
    let logits = sim.masked_fill(&eye, f64::NEG_INFINITY)?;
    // Row i's positive is row (i + n) mod 2n.
    let rows = Tensor::arange_on(m, DType::I64, z.device())?;
    let targets = Tensor::concat(&[&rows.narrow(0, n, n)?, &rows.narrow(0, 0, n)?], 0)?;
    logits.cross_entropy(&targets)
}
