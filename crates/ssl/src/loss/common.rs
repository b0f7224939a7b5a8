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
