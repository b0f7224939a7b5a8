//! The linear probe: multinomial logistic regression on standardised features.
//!
//! Objective, for weights `W` `[D, C]` and bias `b` `[C]` on standardised rows `x_i`:
//! `mean_i [logsumexp(x_i W + b) - (x_i W + b)_{y_i}] + (l2 / 2) ||W||^2` (the bias is not
//! penalised; `l2 = 1 / (C_sklearn * N)` in scikit-learn's terms). It is smooth and strictly
//! convex in `W`, minimised with full-batch L-BFGS whose loss and gradient are two matmuls per
//! evaluation (`X W` and `X^T R`) on the tensor crate's GEMM.

use rayon::prelude::*;
use selfsup_tensor::{no_grad, DType, Tensor};

use super::features::{dims2, take_rows, Standardizer};
use super::knn::argmax;
use super::lbfgs::{minimize, LbfgsOptions};
use super::split::stratified_split;
use crate::error::{config, Result, SslError};

/// Settings of [`LinearProbe::fit`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinearConfig {
    /// Candidate L2 penalties; the one with the best validation accuracy is kept (ties go to the
    /// larger penalty).
    pub l2: Vec<f64>,
    /// Fraction of every class's labelled rows held out to choose the penalty.
    pub val_fraction: f64,
    /// Most L-BFGS iterations per solve.
    pub max_iter: usize,
    /// Seed of the validation split.
    pub seed: u64,
    /// Convergence: stop when the largest absolute gradient entry is below this.
    pub tol: f64,
    /// Also stop when one L-BFGS iteration lowers the objective by less than this fraction of
    /// it (scipy's `ftol`; 0 solves to `tol` or `max_iter`).
    pub ftol: f64,
}

impl Default for LinearConfig {
    /// Penalties `1e-5 ..= 1e-1` by decades, 20% validation, 1000 iterations, seed 0, tol 1e-5,
    /// ftol 1e-9.
    fn default() -> Self {
        LinearConfig {
            l2: vec![1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
            val_fraction: 0.2,
            max_iter: 1000,
            seed: 0,
            tol: 1e-5,
            ftol: 1e-9,
        }
    }
}

/// A fitted linear classifier on standardised features.
#[derive(Clone, Debug)]
pub struct LinearProbe {
    /// Weights `[D, C]` (f32), applied to standardised features.
    pub weight: Tensor,
    /// Bias `[C]` (f32).
    pub bias: Tensor,
    /// The chosen L2 penalty.
    pub l2: f64,
    /// Validation accuracy of the chosen penalty (model fitted on the other labelled rows).
    pub val_accuracy: f64,
    /// `(l2, validation accuracy)` of every candidate, in the order tried (decreasing l2).
    pub l2_scores: Vec<(f64, f64)>,
    /// Standardisation statistics, from the rows the final model was fitted on.
    pub scaler: Standardizer,
    /// L-BFGS iterations of the final fit.
    pub iterations: usize,
    /// Largest absolute gradient entry at the final solution.
    pub grad_inf: f64,
}

/// Rows x columns at most this large are solved in f64; larger problems use f32 matmuls (their
/// loss and gradient are still accumulated in f64).
const F64_MAX_ELEMS: usize = 4_000_000;

/// A logistic-regression problem: standardised rows, labels, the solver's state.
struct Problem {
    x: Tensor,
    labels: Vec<usize>,
    n: usize,
    d: usize,
    c: usize,
}

impl Problem {
    fn new(x: Tensor, labels: Vec<usize>, c: usize) -> Result<Self> {
        let (n, d) = dims2(&x, "linear probe")?;
        let dt = if n * d <= F64_MAX_ELEMS {
            DType::F64
        } else {
            DType::F32
        };
        let x = x.to_dtype(dt)?.contiguous()?;
        Ok(Problem { x, labels, n, d, c })
    }

    /// Loss and gradient at `p` = `W` row-major `[D, C]` followed by `b` `[C]`.
    fn eval(&self, p: &[f64], grad: &mut [f64], l2: f64) -> Result<f64> {
        let (n, d, c) = (self.n, self.d, self.c);
        let dt = self.x.dtype();
        let w = Tensor::from_slice(&p[..d * c], &[d, c])?.to_dtype(dt)?;
        let b = &p[d * c..];
        let z = self.x.matmul(&w)?.to_vec_f64()?;
        let inv_n = 1.0 / n as f64;
        let mut r = vec![0f64; n * c];
        let loss: f64 = r
            .par_chunks_mut(c)
            .zip(z.par_chunks(c))
            .zip(self.labels.par_iter())
            .map(|((ri, zi), &y)| {
                let mut mx = f64::NEG_INFINITY;
                for k in 0..c {
                    ri[k] = zi[k] + b[k];
                    mx = mx.max(ri[k]);
                }
                let mut s = 0.0;
                for v in ri.iter_mut() {
                    *v = (*v - mx).exp();
                    s += *v;
                }
                let zy = zi[y] + b[y];
                for v in ri.iter_mut() {
                    *v *= inv_n / s;
                }
                ri[y] -= inv_n;
                mx + s.ln() - zy
            })
            .sum();
        let mut gb = vec![0f64; c];
        for ri in r.chunks_exact(c) {
            for k in 0..c {
                gb[k] += ri[k];
            }
        }
        let rt = Tensor::from_vec(r, &[n, c])?.to_dtype(dt)?;
        let gw = self.x.t()?.matmul(&rt)?.to_vec_f64()?;
        let mut reg = 0.0;
        for j in 0..d * c {
            grad[j] = gw[j] + l2 * p[j];
            reg += p[j] * p[j];
        }
        grad[d * c..].copy_from_slice(&gb);
        Ok(loss * inv_n + 0.5 * l2 * reg)
    }

    fn solve(
        &self,
        p: &mut [f64],
        l2: f64,
        max_iter: usize,
        tol: f64,
        ftol: f64,
    ) -> Result<(usize, f64)> {
        let opts = LbfgsOptions {
            max_iter,
            gtol: tol,
            memory: 10,
            ftol,
        };
        let rep = minimize::<SslError>(p, &opts, &mut |x, g| self.eval(x, g, l2))?;
        Ok((rep.iterations, rep.grad_inf))
    }
}

/// Class scores `x W + b` of already standardised rows, argmax per row.
fn predict_std(x: &Tensor, p: &[f64], d: usize, c: usize) -> Result<Vec<usize>> {
    let w = Tensor::from_slice(&p[..d * c], &[d, c])?.to_dtype(x.dtype())?;
    let z = x.matmul(&w)?.to_vec_f64()?;
    let b = &p[d * c..];
    Ok(z.chunks_exact(c)
        .map(|zi| {
            let s: Vec<f64> = zi.iter().zip(b).map(|(a, b)| a + b).collect();
            argmax(&s)
        })
        .collect())
}

#[allow(clippy::neg_cmp_op_on_partial_ord)] // the negated comparisons also reject NaN
fn check_inputs(
    feats: &Tensor,
    labels: &[usize],
    classes: usize,
    cfg: &LinearConfig,
) -> Result<()> {
    let (n, _) = dims2(feats, "linear probe")?;
    if labels.len() != n {
        return config(format!(
            "linear probe: {} labels for {n} rows",
            labels.len()
        ));
    }
    super::check_labels(labels, classes, "linear probe")?;
    if classes < 2 {
        return config("linear probe: need at least 2 classes");
    }
    if cfg.l2.is_empty() || cfg.l2.iter().any(|&l| !(l >= 0.0 && l.is_finite())) {
        return config(format!(
            "linear probe: l2 candidates {:?} must be a non-empty list of finite values >= 0",
            cfg.l2
        ));
    }
    if cfg.max_iter == 0 || !(cfg.tol > 0.0) || !(cfg.ftol >= 0.0) {
        return config("linear probe: max_iter must be >= 1 and tol > 0");
    }
    Ok(())
}

impl LinearProbe {
    /// Multinomial logistic regression on standardised features (mean/std from the training
    /// rows). The L2 penalty is chosen among `cfg.l2` by accuracy on a stratified validation
    /// split of the labelled rows given here (never test data): candidates are solved from the
    /// largest penalty down, each warm-started from the previous solution. The chosen penalty
    /// is then refitted on all labelled rows. Every class needs at least 2 rows (one to fit,
    /// one to validate).
    pub fn fit(
        feats: &Tensor,
        labels: &[usize],
        classes: usize,
        cfg: &LinearConfig,
    ) -> Result<Self> {
        check_inputs(feats, labels, classes, cfg)?;
        let _g = no_grad();
        let feats = feats.detach();
        let (_, d) = dims2(&feats, "linear probe")?;
        let c = classes;
        let (fit_rows, val_rows) = stratified_split(labels, c, cfg.val_fraction, cfg.seed)?;
        let (xf, xv) = (take_rows(&feats, &fit_rows)?, take_rows(&feats, &val_rows)?);
        let scaler = Standardizer::fit(&xf)?;
        let yf: Vec<usize> = fit_rows.iter().map(|&i| labels[i]).collect();
        let yv: Vec<usize> = val_rows.iter().map(|&i| labels[i]).collect();
        let prob = Problem::new(scaler.apply(&xf)?, yf, c)?;
        let xv = scaler.apply(&xv)?.to_dtype(prob.x.dtype())?;
        let mut order = cfg.l2.clone();
        order.sort_by(|a, b| b.total_cmp(a));
        order.dedup();
        let mut p = vec![0f64; d * c + c];
        let mut scores = Vec::new();
        let mut best: Option<(f64, f64, Vec<f64>)> = None;
        for &l2 in &order {
            prob.solve(&mut p, l2, cfg.max_iter, cfg.tol, cfg.ftol)?;
            let acc = super::accuracy(&predict_std(&xv, &p, d, c)?, &yv);
            scores.push((l2, acc));
            if best.as_ref().is_none_or(|(_, a, _)| acc > *a) {
                best = Some((l2, acc, p.clone()));
            }
        }
        let Some((l2, val_accuracy, mut p)) = best else {
            return config("linear probe: no l2 candidate");
        };
        let mut probe = Self::fit_l2_from(
            &feats,
            labels,
            c,
            l2,
            (cfg.max_iter, cfg.tol, cfg.ftol),
            &mut p,
        )?;
        probe.val_accuracy = val_accuracy;
        probe.l2_scores = scores;
        Ok(probe)
    }

    /// Fits with a fixed penalty `l2` on all rows (no validation; `val_accuracy` is NaN), solved
    /// until the largest gradient entry is below `tol` or `max_iter` iterations.
    pub fn fit_l2(
        feats: &Tensor,
        labels: &[usize],
        classes: usize,
        l2: f64,
        max_iter: usize,
        tol: f64,
    ) -> Result<Self> {
        let cfg = LinearConfig {
            l2: vec![l2],
            max_iter,
            tol,
            ..Default::default()
        };
        check_inputs(feats, labels, classes, &cfg)?;
        let _g = no_grad();
        let (_, d) = dims2(feats, "linear probe")?;
        let mut p = vec![0f64; d * classes + classes];
        Self::fit_l2_from(
            &feats.detach(),
            labels,
            classes,
            l2,
            (max_iter, tol, 0.0),
            &mut p,
        )
    }

    fn fit_l2_from(
        feats: &Tensor,
        labels: &[usize],
        c: usize,
        l2: f64,
        (max_iter, tol, ftol): (usize, f64, f64),
        p: &mut [f64],
    ) -> Result<Self> {
        let (_, d) = dims2(feats, "linear probe")?;
        let scaler = Standardizer::fit(feats)?;
        let prob = Problem::new(scaler.apply(feats)?, labels.to_vec(), c)?;
        let (iterations, grad_inf) = prob.solve(p, l2, max_iter, tol, ftol)?;
        let weight = Tensor::from_slice(&p[..d * c], &[d, c])?.to_dtype(DType::F32)?;
        let bias = Tensor::from_slice(&p[d * c..], &[c])?.to_dtype(DType::F32)?;
        Ok(LinearProbe {
            weight,
            bias,
            l2,
            val_accuracy: f64::NAN,
            l2_scores: Vec::new(),
            scaler,
            iterations,
            grad_inf,
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.bias.numel()
    }

    /// Class scores `[N, C]` (f32) of raw (unstandardised) features.
    pub fn logits(&self, feats: &Tensor) -> Result<Tensor> {
        let _g = no_grad();
        let x = self.scaler.apply(feats)?.to_dtype(DType::F32)?;
        Ok(x.matmul(&self.weight)?.add(&self.bias)?)
    }

    /// The predicted class of every row of raw (unstandardised) features.
    pub fn predict(&self, feats: &Tensor) -> Result<Vec<usize>> {
        let (_, d) = dims2(feats, "linear probe predict")?;
        let c = self.classes();
        let mut p = self.weight.to_vec_f64()?;
        p.extend(self.bias.to_vec_f64()?);
        if p.len() != d * c + c {
            return config(format!(
                "linear probe: features have {d} columns, the probe was fitted on {}",
                self.scaler.mean.len()
            ));
        }
        let _g = no_grad();
        let x = self.scaler.apply(feats)?;
        let x = x.to_dtype(if x.numel() <= F64_MAX_ELEMS {
            DType::F64
        } else {
            DType::F32
        })?;
        predict_std(&x, &p, d, c)
    }
}
