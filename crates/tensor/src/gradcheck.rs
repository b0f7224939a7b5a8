//! Finite-difference gradient checks.
//!
//! [`check_grad`] compares the gradients autograd computes for a function of tensors with
//! central differences in f64. Non-scalar outputs are reduced with fixed random weights, so every
//! output element's gradient is exercised. Build views (permute, narrow, broadcast) *inside* the
//! function to check ops on non-contiguous inputs; use an input twice to check accumulation.
//!
//! ```
//! use selfsup_tensor::{gradcheck::check_grad, Tensor};
//! let x = Tensor::from_vec(vec![0.3f64, -1.2, 2.0], &[3])?;
//! let report = check_grad(|xs| xs[0].tanh()?.mul(&xs[0]), &[x])?;
//! assert!(report.max_error < 1e-6, "{report:?}");
//! # Ok::<(), selfsup_tensor::Error>(())
//! ```

use crate::error::{invalid, Result};
use crate::rng::Philox;
use crate::{no_grad, DType, Tensor};

/// The outcome of a gradient check.
#[derive(Clone, Debug)]
pub struct GradReport {
    /// Largest `|analytic - numeric| / max(1, |numeric|)` over every input element.
    pub max_error: f64,
    /// (input index, element index, analytic, numeric) where `max_error` was found.
    pub worst: Option<(usize, usize, f64, f64)>,
    /// Number of elements checked.
    pub checked: usize,
}

/// Step for central differences: the error is O(h^2) truncation plus O(eps / h) rounding.
pub const STEP: f64 = 1e-6;

fn weighted_sum(out: &Tensor, w: &Tensor) -> Result<Tensor> {
    out.mul(w)?.sum_all()
}

/// Checks autograd against central differences for `f` at `inputs` (f64 tensors).
///
/// Returns the report; callers assert on `max_error` (1e-6 is the suite's bar).
pub fn check_grad<F>(f: F, inputs: &[Tensor]) -> Result<GradReport>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    for (i, t) in inputs.iter().enumerate() {
        if t.dtype() != DType::F64 {
            return invalid(
                "check_grad",
                format!(
                    "input {i} is {:?}; gradient checks need f64 inputs",
                    t.dtype()
                ),
            );
        }
    }
    let values: Vec<Vec<f64>> = inputs
        .iter()
        .map(|t| t.to_vec::<f64>())
        .collect::<Result<_>>()?;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    let leaves: Vec<Tensor> = values
        .iter()
        .zip(&shapes)
        .map(|(v, s)| Ok(Tensor::from_vec(v.clone(), s)?.requires_grad_()))
        .collect::<Result<_>>()?;
    let out = f(&leaves)?;
    let mut rng = Philox::new(0x5eed, out.numel() as u64);
    let w = Tensor::from_vec(
        (0..out.numel())
            .map(|_| rng.uniform_range(0.5, 1.5))
            .collect::<Vec<f64>>(),
        out.shape(),
    )?;
    weighted_sum(&out, &w)?.backward()?;
    let analytic: Vec<Vec<f64>> = leaves
        .iter()
        .zip(&shapes)
        .map(|(l, s)| match l.grad() {
            Some(g) => g.to_vec::<f64>(),
            None => Ok(vec![0.0; s.iter().product()]),
        })
        .collect::<Result<_>>()?;

    let _g = no_grad();
    let eval = |vals: &[Vec<f64>]| -> Result<f64> {
        let xs: Vec<Tensor> = vals
            .iter()
            .zip(&shapes)
            .map(|(v, s)| Tensor::from_vec(v.clone(), s))
            .collect::<Result<_>>()?;
        weighted_sum(&f(&xs)?, &w)?.item()
    };
    let mut report = GradReport {
        max_error: 0.0,
        worst: None,
        checked: 0,
    };
    let mut vals = values.clone();
    for i in 0..vals.len() {
        for j in 0..vals[i].len() {
            let x0 = vals[i][j];
            vals[i][j] = x0 + STEP;
            let up = eval(&vals)?;
            vals[i][j] = x0 - STEP;
            let down = eval(&vals)?;
            vals[i][j] = x0;
            let numeric = (up - down) / (2.0 * STEP);
            let a = analytic[i][j];
            let err = (a - numeric).abs() / numeric.abs().max(1.0);
            let err = if err.is_nan() { f64::INFINITY } else { err };
            report.checked += 1;
            if err > report.max_error || report.worst.is_none() {
                report.max_error = report.max_error.max(err);
                if err >= report.max_error {
                    report.worst = Some((i, j, a, numeric));
                }
            }
        }
    }
    Ok(report)
}

/// Largest `|f32 result - f64 result| / max(1, |f64 result|)` of `f` evaluated on `inputs`
/// converted to f32 and to f64: checks the f32 kernels against the f64 path.
pub fn f32_vs_f64<F>(f: F, inputs: &[Tensor]) -> Result<f64>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let _g = no_grad();
    let x64: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F64))
        .collect::<Result<_>>()?;
    let x32: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F32))
        .collect::<Result<_>>()?;
    let (a, b) = (f(&x64)?.to_vec_f64()?, f(&x32)?.to_vec_f64()?);
    if a.len() != b.len() {
        return invalid(
            "f32_vs_f64",
            format!(
                "f32 result has {} elements, f64 result {}",
                b.len(),
                a.len()
            ),
        );
    }
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
        .fold(0.0, f64::max))
}

/// Asserts that `f` and `g` give the same output and the same gradients for every input, within
/// `tol` (relative to 1 + |value|): for checking an op against another formulation of it (the
/// composed forms the GPU falls back on). A seed gradient of fixed random values drives both.
#[cfg(test)]
pub(crate) fn assert_close_grads(
    inputs: &[&Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    g: impl Fn(&[Tensor]) -> Result<Tensor>,
    tol: f64,
) {
    let run = |h: &dyn Fn(&[Tensor]) -> Result<Tensor>| {
        let leaves: Vec<Tensor> = inputs.iter().map(|t| t.detach().requires_grad_()).collect();
        let y = h(&leaves).expect("forward");
        let mut rng = crate::Generator::new(99);
        let w = Tensor::randn(y.shape(), 0.0, 1.0, y.dtype(), &mut rng).expect("seed");
        y.backward_with(Some(&w), false).expect("backward");
        let grads: Vec<Vec<f64>> = leaves
            .iter()
            .map(|l| {
                l.grad()
                    .map(|g| g.to_vec_f64().expect("grad"))
                    .unwrap_or_default()
            })
            .collect();
        (y.to_vec_f64().expect("values"), grads)
    };
    let (ya, ga) = run(&f);
    let (yb, gb) = run(&g);
    let close = |what: &str, a: &[f64], b: &[f64]| {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    };
    close("output", &ya, &yb);
    for (i, (a, b)) in ga.iter().zip(&gb).enumerate() {
        close(&format!("gradient of input {i}"), a, b);
    }
}
