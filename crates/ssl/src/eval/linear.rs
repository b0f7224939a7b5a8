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
use super::split::{stratified_folds, stratified_split};
use crate::error::{config, Result, SslError};

/// Settings of [`LinearProbe::fit`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinearConfig {
    /// Candidate L2 penalties; the one with the lowest validation cross-entropy is kept (ties go
    /// to the larger penalty).
    pub l2: Vec<f64>,
    /// Stratified cross-validation folds used to choose the penalty when there are at most
    /// `holdout_above` labelled rows (every row is validated once; 1 means a single holdout).
    pub folds: usize,
    /// Above this many labelled rows a single stratified holdout of `val_fraction` chooses the
    /// penalty instead of `folds`-fold cross-validation (which would cost `folds` times as
    /// much, while the holdout is already thousands of rows).
    pub holdout_above: usize,
    /// Fraction of every class's labelled rows held out to choose the penalty when a single
    /// holdout is used.
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
    /// Penalties `1e-5, 1e-4`, then `1e-3 ..= 1` by half decades; 5-fold cross-validation up
    /// to 10,000 labelled rows, a 20% holdout above; 1000 iterations, seed 0, tol 1e-5,
    /// ftol 1e-9.
    fn default() -> Self {
        LinearConfig {
            l2: vec![1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
            folds: 5,
            holdout_above: 10_000,
            val_fraction: 0.2,
            max_iter: 1000,
            seed: 0,
            tol: 1e-5,
            ftol: 1e-9,
        }
    }
}

/// How one candidate penalty did on the held-out labelled rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct L2Score {
    /// The penalty.
    pub l2: f64,
    /// Fraction of held-out rows classified correctly.
    pub accuracy: f64,
    /// Mean cross-entropy (nats) of the held-out rows: lower is better, and the selection
    /// criterion (a proper score that, unlike accuracy on a few dozen rows, rarely ties).
    pub loss: f64,
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
    /// Validation accuracy of the chosen penalty (models fitted on the other labelled rows;
    /// pooled over the folds under cross-validation).
    pub val_accuracy: f64,
    /// Validation cross-entropy (nats per row) of the chosen penalty, pooled the same way: the
    /// criterion the penalty was chosen by.
    pub val_loss: f64,
    /// Number of folds that chose the penalty (1: a single holdout).
    pub folds: usize,
    /// Validation scores of every candidate, in the order tried (decreasing l2).
    pub l2_scores: Vec<L2Score>,
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
        // Per-row losses added in row order: the same value whatever the threads do.
        let losses: Vec<f64> = r
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
            .collect();
        let loss: f64 = losses.iter().sum();
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

/// Class scores `x W + b` `[N·C]` (row-major) of already standardised rows `x`.
fn scores_std(x: &Tensor, p: &[f64], d: usize, c: usize) -> Result<Vec<f64>> {
    let w = Tensor::from_slice(&p[..d * c], &[d, c])?.to_dtype(x.dtype())?;
    let mut z = x.matmul(&w)?.to_vec_f64()?;
    let b = &p[d * c..];
    for zi in z.chunks_exact_mut(c) {
        zi.iter_mut().zip(b).for_each(|(v, b)| *v += b);
    }
    Ok(z)
}

/// Correct predictions and summed cross-entropy (nats) of already standardised rows `x`
/// against `labels`.
fn val_scores(x: &Tensor, p: &[f64], d: usize, c: usize, labels: &[usize]) -> Result<(usize, f64)> {
    let (mut right, mut nll) = (0usize, 0f64);
    for (s, &y) in scores_std(x, p, d, c)?.chunks_exact(c).zip(labels) {
        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + s.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        nll += lse - s[y];
        right += usize::from(argmax(s) == y);
    }
    Ok((right, nll))
}

/// The argmax class of every already standardised row.
fn predict_std(x: &Tensor, p: &[f64], d: usize, c: usize) -> Result<Vec<usize>> {
    Ok(scores_std(x, p, d, c)?
        .chunks_exact(c)
        .map(argmax)
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
    /// rows). The L2 penalty is chosen among `cfg.l2` by cross-entropy on labelled rows held
    /// out from the fit (never test data): with at most `cfg.holdout_above` rows by stratified
    /// `cfg.folds`-fold cross-validation (accuracy pooled over all rows), otherwise on one
    /// stratified `cfg.val_fraction` holdout. Within a split, candidates are solved from the
    /// largest penalty down, each warm-started from the previous solution, with the
    /// standardisation fitted on that split's training rows. The chosen penalty is then
    /// refitted on all labelled rows. Every class needs at least 2 rows.
    pub fn fit(
        feats: &Tensor,
        labels: &[usize],
        classes: usize,
        cfg: &LinearConfig,
    ) -> Result<Self> {
        check_inputs(feats, labels, classes, cfg)?;
        let _g = no_grad();
        let feats = feats.detach();
        let (n, d) = dims2(&feats, "linear probe")?;
        let c = classes;
        let splits: Vec<(Vec<usize>, Vec<usize>)> = if cfg.folds >= 2 && n <= cfg.holdout_above {
            let folds = stratified_folds(labels, c, cfg.folds, cfg.seed)?;
            (0..folds.len())
                .map(|v| {
                    let fit = (0..folds.len()).filter(|&f| f != v);
                    let mut fit: Vec<usize> = fit.flat_map(|f| folds[f].clone()).collect();
                    fit.sort_unstable();
                    (fit, folds[v].clone())
                })
                .filter(|(_, val)| !val.is_empty())
                .collect()
        } else {
            vec![stratified_split(labels, c, cfg.val_fraction, cfg.seed)?]
        };
        let mut order = cfg.l2.clone();
        order.sort_by(|a, b| b.total_cmp(a));
        order.dedup();
        let mut correct = vec![0usize; order.len()];
        let mut losses = vec![0f64; order.len()];
        let mut seen = 0usize;
        let mut starts: Vec<Vec<f64>> = Vec::new();
        for (fit_rows, val_rows) in &splits {
            let (xf, xv) = (take_rows(&feats, fit_rows)?, take_rows(&feats, val_rows)?);
            let scaler = Standardizer::fit(&xf)?;
            let yf: Vec<usize> = fit_rows.iter().map(|&i| labels[i]).collect();
            let yv: Vec<usize> = val_rows.iter().map(|&i| labels[i]).collect();
            let prob = Problem::new(scaler.apply(&xf)?, yf, c)?;
            let xv = scaler.apply(&xv)?.to_dtype(prob.x.dtype())?;
            let mut p = vec![0f64; d * c + c];
            for (j, &l2) in order.iter().enumerate() {
                prob.solve(&mut p, l2, cfg.max_iter, cfg.tol, cfg.ftol)?;
                let (right, nll) = val_scores(&xv, &p, d, c, &yv)?;
                correct[j] += right;
                losses[j] += nll;
                if starts.len() < order.len() {
                    starts.push(p.clone());
                }
            }
            seen += yv.len();
        }
        let seen = seen.max(1) as f64;
        let scores: Vec<L2Score> = (0..order.len())
            .map(|j| L2Score {
                l2: order[j],
                accuracy: correct[j] as f64 / seen,
                loss: losses[j] / seen,
            })
            .collect();
        let mut best = 0;
        for (j, sc) in scores.iter().enumerate() {
            if sc.loss < scores[best].loss {
                best = j;
            }
        }
        let L2Score {
            l2,
            accuracy: val_accuracy,
            loss: val_loss,
        } = scores[best];
        let mut p = starts.swap_remove(best);
        let mut probe = Self::fit_l2_from(
            &feats,
            labels,
            c,
            l2,
            (cfg.max_iter, cfg.tol, cfg.ftol),
            &mut p,
        )?;
        probe.val_accuracy = val_accuracy;
        probe.val_loss = val_loss;
        probe.folds = splits.len();
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
            val_loss: f64::NAN,
            folds: 0,
            l2_scores: Vec::new(),
            scaler,
            iterations,
            grad_inf,
        })
    }

    /// How the penalty was chosen, for logs: e.g. `"L2 1e-1 (5-fold cross-validation:
    /// cross-entropy 0.512, accuracy 81.20%)"`, `"L2 1e-3 (holdout: cross-entropy 0.301,
    /// accuracy 90.10%)"` or `"L2 1e-4 (fixed)"`.
    pub fn chosen_by(&self) -> String {
        let how = match self.folds {
            0 => return format!("L2 {:.0e} (fixed)", self.l2),
            1 => "holdout".to_string(),
            k => format!("{k}-fold cross-validation"),
        };
        format!(
            "L2 {:.0e} ({how}: cross-entropy {:.3}, accuracy {:.2}%)",
            self.l2,
            self.val_loss,
            100.0 * self.val_accuracy
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_tensor::rng::Philox;

    /// Overlapping 3-class data with label noise: accuracy depends on the penalty.
    fn noisy(n: usize, d: usize) -> (Tensor, Vec<usize>) {
        let mut r = Philox::new(7, 1);
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = if r.uniform_f64() < 0.7 {
                i % 3
            } else {
                r.below(3) as usize
            };
            for j in 0..d {
                x.push(r.normal_f64() + if j == i % 3 { 1.0 } else { 0.0 });
            }
            y.push(c);
        }
        (Tensor::from_vec(x, &[n, d]).unwrap(), y)
    }

    #[test]
    fn cross_validation_scores_are_pooled_fold_accuracies() {
        let (x, y) = noisy(90, 8);
        let cfg = LinearConfig {
            l2: vec![1e-3, 1e-1, 1.0],
            tol: 1e-9,
            ftol: 0.0,
            seed: 4,
            ..Default::default()
        };
        let p = LinearProbe::fit(&x, &y, 3, &cfg).unwrap();
        assert_eq!(p.folds, 5);
        let folds = stratified_folds(&y, 3, 5, 4).unwrap();
        for sc in &p.l2_scores {
            let (l2, acc) = (sc.l2, sc.accuracy);
            let (mut right, mut nll) = (0, 0.0);
            for (v, val) in folds.iter().enumerate() {
                let fit: Vec<usize> = (0..5)
                    .filter(|&f| f != v)
                    .flat_map(|f| folds[f].clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let yf: Vec<usize> = fit.iter().map(|&i| y[i]).collect();
                let m = LinearProbe::fit_l2(&take_rows(&x, &fit).unwrap(), &yf, 3, l2, 5000, 1e-9)
                    .unwrap();
                let xv = take_rows(&x, val).unwrap();
                let pred = m.predict(&xv).unwrap();
                right += val.iter().zip(pred).filter(|(&i, p)| y[i] == *p).count();
                let z = m.logits(&xv).unwrap().to_vec_f64().unwrap();
                for (zi, &i) in z.chunks_exact(3).zip(val) {
                    let lse = zi.iter().map(|v| v.exp()).sum::<f64>().ln();
                    nll += lse - zi[y[i]];
                }
            }
            assert!((acc - right as f64 / 90.0).abs() < 1e-12, "l2 {l2}");
            // The probe's scores come from f64 solves; the reference's logits are f32.
            assert!(
                (sc.loss - nll / 90.0).abs() < 1e-4,
                "l2 {l2}: {} vs {}",
                sc.loss,
                nll / 90.0
            );
        }
        let best = p
            .l2_scores
            .iter()
            .map(|s| s.loss)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(p.val_loss, best);
        assert!(p
            .l2_scores
            .iter()
            .any(|s| s.l2 == p.l2 && s.accuracy == p.val_accuracy));
        assert!(p.chosen_by().contains("5-fold"));
        // Above `holdout_above` rows a single holdout decides.
        let h = LinearProbe::fit(
            &x,
            &y,
            3,
            &LinearConfig {
                holdout_above: 50,
                ..cfg
            },
        )
        .unwrap();
        assert_eq!(h.folds, 1);
        assert!(h.chosen_by().contains("holdout"));
    }
}
