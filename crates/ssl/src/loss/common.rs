//! Argument checks the losses share.

use selfsup_tensor::{Error, Result, Tensor};

/// Checks that `a` and `b` are both `[N, D]` with the same shape and `N >= min_rows`.
pub(crate) fn same_2d(op: &'static str, a: &Tensor, b: &Tensor, min_rows: usize) -> Result<()> {
    if a.rank() != 2 || a.shape() != b.shape() || a.shape()[0] < min_rows || a.shape()[1] == 0 {
        return Err(Error::Shape {
            op,
            msg: format!(
                "needs two [N, D] tensors of the same shape with N >= {min_rows}, got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        });
    }
    Ok(())
}

/// Checks that a temperature is positive and finite.
pub(crate) fn temperature(op: &'static str, t: f64) -> Result<()> {
    if !(t > 0.0 && t.is_finite()) {
        return Err(Error::Invalid {
            op,
            msg: format!("temperature must be positive and finite, got {t}"),
        });
    }
    Ok(())
}

/// The identity `[D, D]` in the dtype of the square matrix `m` `[D, D]`.
pub(crate) fn eye_like(m: &Tensor) -> Result<Tensor> {
    let d = m.shape()[0];
    Tensor::arange(d, selfsup_tensor::DType::I64)
        .one_hot(d, m.dtype())?
        .to_device(m.device())
}
