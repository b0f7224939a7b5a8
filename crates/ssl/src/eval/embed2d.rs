//! 2-D embeddings of features for plots: PCA and exact t-SNE.

use rayon::prelude::*;
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{no_grad, DType, Tensor};

use super::features::dims2;
use crate::error::{config, Result};

/// Centred rows of `x` as an f64 tensor, and the row count and width.
fn centred(x: &Tensor) -> Result<(Tensor, usize, usize)> {
    let (n, d) = dims2(x, "embedding")?;
    if n < 2 {
        return config("embedding: need at least 2 rows");
    }
    let x = x.detach().to_dtype(DType::F64)?;
    let m = x.mean(&[0], true)?;
    Ok((x.sub(&m)?.contiguous()?, n, d))
}

/// The top-2 principal directions of the centred rows `xc` `[N, D]` (f64), each of unit norm.
///
/// The covariance `xc^T xc` (`D x D`, one GEMM) is iterated on with two orthonormalised vectors
/// (subspace iteration, at most 1000 rounds, until the subspace moves less than 1e-12); a
/// direction's sign is fixed so that its largest-magnitude entry is positive.
fn top2(xc: &Tensor, d: usize) -> Result<[Vec<f64>; 2]> {
    let cov = xc.t()?.matmul(xc)?.to_vec_f64()?;
    let mv = |v: &[f64]| -> Vec<f64> {
        (0..d)
            .map(|i| {
                let row = &cov[i * d..(i + 1) * d];
                row.iter().zip(v).map(|(a, b)| a * b).sum()
            })
            .collect()
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let normalise = |v: &mut Vec<f64>| {
        let n = dot(v, v).sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
    };
    let mut rng = Philox::new(0x9CA, 0);
    let mut a: Vec<f64> = (0..d).map(|_| rng.normal_f64()).collect();
    let mut b: Vec<f64> = (0..d).map(|_| rng.normal_f64()).collect();
    let orth = |a: &mut Vec<f64>, b: &mut Vec<f64>| {
        normalise(a);
        let p = dot(a, b);
        b.iter_mut().zip(a.iter()).for_each(|(x, y)| *x -= p * y);
        normalise(b);
    };
    orth(&mut a, &mut b);
    for _ in 0..1000 {
        let (mut na, mut nb) = (mv(&a), mv(&b));
        orth(&mut na, &mut nb);
        let moved = (1.0 - dot(&na, &a).abs()) + (1.0 - dot(&nb, &b).abs());
        a = na;
        b = nb;
        if moved < 1e-12 {
            break;
        }
    }
    // Order by Rayleigh quotient (the iteration's subspace is right; the order may not be).
    if dot(&b, &mv(&b)) > dot(&a, &mv(&a)) {
        std::mem::swap(&mut a, &mut b);
    }
    // Rotate within the plane to the exact eigenvectors of the 2x2 projected matrix.
    let (aa, ab, bb) = (dot(&a, &mv(&a)), dot(&a, &mv(&b)), dot(&b, &mv(&b)));
    let theta = 0.5 * (2.0 * ab).atan2(aa - bb);
    let (c, s) = (theta.cos(), theta.sin());
    let mut u: Vec<f64> = a.iter().zip(&b).map(|(x, y)| c * x + s * y).collect();
    let mut w: Vec<f64> = a.iter().zip(&b).map(|(x, y)| -s * x + c * y).collect();
    for v in [&mut u, &mut w] {
        let big = v
            .iter()
            .fold(0f64, |m, x| if x.abs() > m.abs() { *x } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
    }
    Ok([u, w])
}

/// Projections of the rows of `feats` `[N, D]` on their top-2 principal components (rows
/// centred first). Costs one `D x N x D` GEMM for the covariance and `O(D^2)` per iteration.
pub fn pca_2d(feats: &Tensor) -> Result<Vec<[f64; 2]>> {
    let _g = no_grad();
    let (xc, _, d) = centred(feats)?;
    let [u, w] = top2(&xc, d)?;
    let mut dirs = u;
    dirs.extend(w);
    // dirs is [2, D] row-major; project as xc [N, D] x dirs^T [D, 2].
    let p = Tensor::from_vec(dirs, &[2, d])?;
    let y = xc.matmul(&p.t()?)?.to_vec_f64()?;
    Ok(y.chunks_exact(2).map(|r| [r[0], r[1]]).collect())
}

/// Most points [`tsne_2d`] accepts (the exact method is quadratic in time and memory).
pub const TSNE_MAX_POINTS: usize = 5000;

/// Exact t-SNE to 2-D: Gaussian affinities with per-point bandwidths found by bisection to match
/// `perplexity`, symmetrised; Student-t similarities in the embedding; gradient descent with
/// momentum (0.5, then 0.8), per-coordinate gains, early exaggeration 12 for the first quarter
/// of `iters` (at most 250), learning rate `max(N / 12, 50)`. Initialised from the PCA
/// projection scaled to standard deviation 1e-4 plus jitter drawn with `seed`.
///
/// `O(N^2)` time per iteration and `O(N^2)` memory: fine for up to a few thousand points
/// (at most [`TSNE_MAX_POINTS`]).
pub fn tsne_2d(feats: &Tensor, perplexity: f64, iters: usize, seed: u64) -> Result<Vec<[f64; 2]>> {
    let _g = no_grad();
    let (xc, n, _) = centred(feats)?;
    if n > TSNE_MAX_POINTS {
        return config(format!(
            "tsne: {n} points; exact t-SNE takes at most {TSNE_MAX_POINTS}, subsample first"
        ));
    }
    if !(perplexity >= 1.0 && perplexity < n as f64) {
        return config(format!(
            "tsne: perplexity {perplexity} must be in [1, number of points {n})"
        ));
    }
    // Squared distances from one GEMM.
    let gram = xc.matmul(&xc.t()?)?.to_vec_f64()?;
    let sq: Vec<f64> = (0..n).map(|i| gram[i * n + i]).collect();
    let d2 = |i: usize, j: usize| (sq[i] + sq[j] - 2.0 * gram[i * n + j]).max(0.0);
    // Conditional affinities row by row.
    let target = perplexity.ln();
    let mut p: Vec<f64> = vec![0.0; n * n];
    p.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let (mut lo, mut hi, mut beta) = (0.0f64, f64::INFINITY, 1.0f64);
        let dists: Vec<f64> = (0..n).map(|j| d2(i, j)).collect();
        let dmin = dists
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .fold(f64::INFINITY, |m, (_, &v)| m.min(v));
        for _ in 0..100 {
            let mut sum = 0.0;
            let mut wsum = 0.0;
            for j in 0..n {
                let v = if j == i {
                    0.0
                } else {
                    (-(dists[j] - dmin) * beta).exp()
                };
                row[j] = v;
                sum += v;
                wsum += v * (dists[j] - dmin);
            }
            let h = sum.ln() + beta * wsum / sum; // entropy in nats
            if (h - target).abs() < 1e-5 {
                break;
            }
            if h > target {
                lo = beta;
                beta = if hi.is_finite() {
                    0.5 * (beta + hi)
                } else {
                    beta * 2.0
                };
            } else {
                hi = beta;
                beta = 0.5 * (beta + lo);
            }
        }
        let s: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    });
    let mut ps = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            ps[i * n + j] = ((p[i * n + j] + p[j * n + i]) / (2.0 * n as f64)).max(1e-12);
        }
    }
    drop(p);
    // Initialisation.
    let init = pca_2d(feats)?;
    let sd = {
        let m: f64 = init.iter().map(|r| r[0] * r[0] + r[1] * r[1]).sum::<f64>() / (2 * n) as f64;
        m.sqrt().max(1e-12)
    };
    let mut rng = Philox::new(seed, 0x75E);
    let mut y: Vec<f64> = init
        .iter()
        .flat_map(|r| [r[0], r[1]])
        .map(|v| 1e-4 * (v / sd + 0.01 * rng.normal_f64()))
        .collect();
    let mut vel = vec![0.0; 2 * n];
    let mut gains = vec![1.0; 2 * n];
    let lr = (n as f64 / 12.0).max(50.0);
    let exag_iters = (iters / 4).min(250);
    let mut q = vec![0.0; n * n];
    for it in 0..iters {
        let exag = if it < exag_iters { 12.0 } else { 1.0 };
        let mom = if it < exag_iters { 0.5 } else { 0.8 };
        // Unnormalised Student-t kernel and its sum.
        let yr = &y;
        // Row sums added in row order, so the run is the same whatever the threads do.
        let row_sums: Vec<f64> = q
            .par_chunks_mut(n)
            .enumerate()
            .map(|(i, row)| {
                let mut s = 0.0;
                for j in 0..n {
                    let v = if i == j {
                        0.0
                    } else {
                        let dx = yr[2 * i] - yr[2 * j];
                        let dy = yr[2 * i + 1] - yr[2 * j + 1];
                        1.0 / (1.0 + dx * dx + dy * dy)
                    };
                    row[j] = v;
                    s += v;
                }
                s
            })
            .collect();
        let z: f64 = row_sums.iter().sum();
        let grad: Vec<[f64; 2]> = (0..n)
            .into_par_iter()
            .map(|i| {
                let (mut gx, mut gy) = (0.0, 0.0);
                for j in 0..n {
                    let w = q[i * n + j];
                    let m = (exag * ps[i * n + j] - w / z) * w;
                    gx += m * (yr[2 * i] - yr[2 * j]);
                    gy += m * (yr[2 * i + 1] - yr[2 * j + 1]);
                }
                [4.0 * gx, 4.0 * gy]
            })
            .collect();
        for (i, gi) in grad.iter().enumerate() {
            for (a, &g) in gi.iter().enumerate() {
                let k = 2 * i + a;
                gains[k] = if (g > 0.0) != (vel[k] > 0.0) {
                    gains[k] + 0.2
                } else {
                    (gains[k] * 0.8f64).max(0.01)
                };
                vel[k] = mom * vel[k] - lr * gains[k] * g;
                y[k] += vel[k];
            }
        }
        // Keep the embedding centred.
        for a in 0..2 {
            let m: f64 = (0..n).map(|i| y[2 * i + a]).sum::<f64>() / n as f64;
            (0..n).for_each(|i| y[2 * i + a] -= m);
        }
    }
    Ok(y.chunks_exact(2).map(|r| [r[0], r[1]]).collect())
}
