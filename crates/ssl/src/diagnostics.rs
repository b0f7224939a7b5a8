//! Collapse diagnostics for joint-embedding methods, computed on a batch of embeddings:
//!
//! - `embedding_std`: the standard deviation over the batch of L2-normalised embeddings,
//!   averaged over dimensions: about `1/sqrt(d)` when embeddings spread over the sphere, 0 when
//!   they collapse to a point (SimSiam paper, section 4);
//! - `effective_rank`: `exp(entropy)` of the normalised eigenvalues of the embedding covariance
//!   (Roy & Vetterli 2007): from 1 (dimensional collapse) up to `d`;
//! - `alignment` and `uniformity` (Wang & Isola 2020) of normalised positive pairs:
//!   `E ||f(x) - f(y)||^2` and `log E exp(-2 ||f(x) - f(y)||^2)` over distinct samples.

use selfsup_tensor::{no_grad, Error, Result, Tensor};

/// The diagnostics of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostics {
    /// Mean over dimensions of the batch std of normalised embeddings.
    pub embedding_std: f64,
    /// `1/sqrt(d)`: what `embedding_std` is for embeddings spread uniformly.
    pub healthy_std: f64,
    /// Effective rank of the covariance, in `[1, d]`.
    pub effective_rank: f64,
    /// Alignment of positive pairs (lower is better), if pairs were given.
    pub alignment: Option<f64>,
    /// Uniformity (lower is better).
    pub uniformity: f64,
}

impl Diagnostics {
    /// Whether the embeddings look collapsed (std below a tenth of healthy, or rank below 1.5).
    pub fn collapsed(&self) -> bool {
        self.embedding_std < 0.1 * self.healthy_std || self.effective_rank < 1.5
    }

    /// One line for the run log, saying plainly when the run has collapsed.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "embedding std {:.4} (healthy {:.4}), effective rank {:.1}, uniformity {:.3}",
            self.embedding_std, self.healthy_std, self.effective_rank, self.uniformity
        );
        if let Some(a) = self.alignment {
            s.push_str(&format!(", alignment {a:.3}"));
        }
        if self.collapsed() {
            s.push_str(" -- COLLAPSED: the embeddings carry almost no information");
        }
        s
    }
}

/// Eigenvalues of a symmetric `d x d` matrix (row-major) by cyclic Jacobi rotations.
fn symmetric_eigenvalues(mut a: Vec<f64>, d: usize) -> Vec<f64> {
    for _sweep in 0..60 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j] * a[i * d + j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..d).map(|i| a[i * d + i]).collect()
}

/// Diagnostics of embeddings `z` `[B, d]`, with optional positive partners `z2` `[B, d]`.
pub fn diagnostics(z: &Tensor, z2: Option<&Tensor>) -> Result<Diagnostics> {
    let _g = no_grad();
    if z.rank() != 2 || z.shape()[0] < 2 {
        return Err(Error::Shape {
            op: "diagnostics",
            msg: format!("needs embeddings [batch >= 2, d], got {:?}", z.shape()),
        });
    }
    let (b, d) = (z.shape()[0], z.shape()[1]);
    let zn = z.l2_normalize(-1, 1e-12)?;
    let embedding_std = zn.std(&[0], false, false)?.mean_all()?.item()?;
    let centred = z.sub(&z.mean(&[0], true)?)?;
    let cov = centred
        .t()?
        .matmul(&centred)?
        .mul_scalar(1.0 / (b - 1) as f64)?
        .to_vec_f64()?;
    let eig: Vec<f64> = symmetric_eigenvalues(cov, d)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let total: f64 = eig.iter().sum();
    let effective_rank = if total <= 0.0 {
        1.0
    } else {
        let h: f64 = eig
            .iter()
            .map(|&v| v / total)
            .filter(|&p| p > 0.0)
            .map(|p| -p * p.ln())
            .sum();
        h.exp()
    };
    // Pairwise squared distances of unit vectors: 2 - 2 cos.
    let cos = zn.matmul(&zn.t()?)?.to_vec_f64()?;
    let mut acc = 0.0;
    for i in 0..b {
        for j in 0..b {
            if i != j {
                acc += (-2.0 * (2.0 - 2.0 * cos[i * b + j])).exp();
            }
        }
    }
    let uniformity = (acc / (b * (b - 1)) as f64).ln();
    let alignment = match z2 {
        Some(z2) => {
            if z2.shape() != z.shape() {
                return Err(Error::Shape {
                    op: "diagnostics",
                    msg: format!(
                        "positive partners {:?} differ from embeddings {:?}",
                        z2.shape(),
                        z.shape()
                    ),
                });
            }
            Some(
                zn.sub(&z2.l2_normalize(-1, 1e-12)?)?
                    .sqr()?
                    .sum(&[1], false)?
                    .mean_all()?
                    .item()?,
            )
        }
        None => None,
    };
    Ok(Diagnostics {
        embedding_std,
        healthy_std: 1.0 / (d as f64).sqrt(),
        effective_rank,
        alignment,
        uniformity,
    })
}
