//! Limited-memory BFGS for smooth convex objectives (the linear probe).

/// Stopping rules and memory of [`minimize`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct LbfgsOptions {
    /// Most iterations.
    pub max_iter: usize,
    /// Stop when the largest absolute gradient entry is below this.
    pub gtol: f64,
    /// Correction pairs kept.
    pub memory: usize,
    /// Also stop when an iteration lowers the objective by less than `ftol * max(|f|, 1)`
    /// (0: never).
    pub ftol: f64,
}

/// What [`minimize`] reached.
#[derive(Clone, Debug)]
pub(crate) struct LbfgsReport {
    /// Largest absolute gradient entry there.
    pub grad_inf: f64,
    /// Iterations taken.
    pub iterations: usize,
}

/// Minimises `f` from `x` (updated in place). `f(x, grad)` returns the objective and writes its
/// gradient. Two-loop recursion for the direction, backtracking (Armijo) line search starting at
/// the unit step; a pair with non-positive curvature is skipped. Stops at `gtol`, at
/// `max_iter`, when the relative decrease falls below `ftol`, or when no step decreases the objective any more (round-off level).
#[allow(clippy::type_complexity)]
pub(crate) fn minimize<E>(
    x: &mut [f64],
    opts: &LbfgsOptions,
    f: &mut dyn FnMut(&[f64], &mut [f64]) -> Result<f64, E>,
) -> Result<LbfgsReport, E> {
    let n = x.len();
    let mut g = vec![0f64; n];
    let mut fx = f(x, &mut g)?;
    let inf = |v: &[f64]| v.iter().fold(0f64, |a, b| a.max(b.abs()));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut rho: Vec<f64> = Vec::new();
    let mut xn = vec![0f64; n];
    let mut gn = vec![0f64; n];
    let mut iter = 0;
    while iter < opts.max_iter && inf(&g) > opts.gtol && fx.is_finite() {
        iter += 1;
        // Direction d = -H g by the two-loop recursion.
        let mut q = g.clone();
        let mut alpha = vec![0f64; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            alpha[i] = rho[i] * dot(&s_hist[i], &q);
            for (qj, yj) in q.iter_mut().zip(&y_hist[i]) {
                *qj -= alpha[i] * yj;
            }
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / inf(&g).max(1.0),
        };
        for qj in q.iter_mut() {
            *qj *= gamma;
        }
        for i in 0..s_hist.len() {
            let beta = rho[i] * dot(&y_hist[i], &q);
            for (qj, sj) in q.iter_mut().zip(&s_hist[i]) {
                *qj += (alpha[i] - beta) * sj;
            }
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (round-off): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            let sc = 1.0 / inf(&g).max(1.0);
            d = g.iter().map(|v| -v * sc).collect();
            slope = dot(&g, &d);
        }
        // Backtracking line search.
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..40 {
            for j in 0..n {
                xn[j] = x[j] + step * d[j];
            }
            let fnew = f(&xn, &mut gn)?;
            if fnew.is_finite() && fnew <= fx + 1e-4 * step * slope {
                accepted = Some(fnew);
                break;
            }
            step *= 0.5;
        }
        let Some(fnew) = accepted else {
            break;
        };
        let s: Vec<f64> = (0..n).map(|j| xn[j] - x[j]).collect();
        let y: Vec<f64> = (0..n).map(|j| gn[j] - g[j]).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&y, &y).max(f64::MIN_POSITIVE) {
            if s_hist.len() == opts.memory {
                s_hist.remove(0);
                y_hist.remove(0);
                rho.remove(0);
            }
            rho.push(1.0 / sy);
            s_hist.push(s);
            y_hist.push(y);
        }
        x.copy_from_slice(&xn);
        g.copy_from_slice(&gn);
        let done = (fnew >= fx && step < 1e-10) || fx - fnew <= opts.ftol * fx.abs().max(1.0);
        fx = fnew;
        if done {
            break;
        }
    }
    Ok(LbfgsReport {
        grad_inf: inf(&g),
        iterations: iter,
    })
}
