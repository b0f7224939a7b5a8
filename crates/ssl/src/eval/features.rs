//! Encoder features of a dataset, and column standardisation.

use rayon::prelude::*;
use selfsup_data::augment::normalize::Normalize;
use selfsup_data::ImageDataset;
use selfsup_nn::Module;
use selfsup_tensor::{no_grad, DType, Tensor};

use crate::encoder::Encoder;
use crate::error::{config, Result};

/// The images `rows` of `data` as an f32 tensor `[rows.len(), C, H, W]`: pixels scaled to
/// `[0, 1]`, then normalised with `normalize` when given.
pub(crate) fn images_tensor(
    data: &ImageDataset,
    rows: &[usize],
    normalize: Option<&Normalize>,
) -> Result<Tensor> {
    let n = data.image_len();
    if let Some(&bad) = rows.iter().find(|&&i| i >= data.len) {
        return config(format!(
            "image {bad} is out of range for a dataset of {} images",
            data.len
        ));
    }
    let mut buf = vec![0f32; rows.len() * n];
    buf.par_chunks_mut(n.max(1))
        .zip(rows.par_iter())
        .for_each(|(out, &i)| {
            let px = &data.pixels[i * n..(i + 1) * n];
            for (o, &p) in out.iter_mut().zip(px) {
                *o = p as f32 * (1.0 / 255.0);
            }
            if let Some(nm) = normalize {
                nm.apply(out, data.channels);
            }
        });
    Ok(Tensor::from_vec(
        buf,
        &[rows.len(), data.channels, data.height, data.width],
    )?)
}

/// Rows `rows` of `feats` (in that order) as a new tensor.
pub(crate) fn take_rows(feats: &Tensor, rows: &[usize]) -> Result<Tensor> {
    let ids: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
    Ok(feats.index_select(0, &Tensor::from_vec(ids, &[rows.len()])?)?)
}

/// Checks that a normalisation has one value, or one per channel, and no zero std.
pub(crate) fn check_normalize(normalize: Option<&Normalize>, channels: usize) -> Result<()> {
    if let Some(nm) = normalize {
        let ok = |v: &[f32]| v.len() == 1 || v.len() == channels;
        if !ok(&nm.mean) || !ok(&nm.std) || nm.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return config(format!(
                "normalisation mean {:?} / std {:?}: give 1 or {channels} values, std non-zero",
                nm.mean, nm.std
            ));
        }
    }
    Ok(())
}

/// Encoder features `[N, D]` (f32, on the host) of every image of `data`, in order, computed on
/// the encoder's device.
///
/// Runs in evaluation mode (BatchNorm uses its running statistics, dropout is off) without
/// recording gradients, `batch` images at a time, each image scaled to `[0, 1]` and normalised
/// with `normalize` when given. The encoder is left in evaluation mode: the caller switches it
/// back with `set_train(true)` if it trains further (the [`Encoder`] does not report its mode, so
/// it cannot be restored here).
pub fn extract_features(
    encoder: &mut Encoder,
    data: &ImageDataset,
    normalize: Option<&Normalize>,
    batch: usize,
) -> Result<Tensor> {
    if batch == 0 {
        return config("extract_features: batch must be at least 1");
    }
    if data.len == 0 {
        return config("extract_features: the dataset is empty");
    }
    check_normalize(normalize, data.channels)?;
    encoder.set_train(false);
    let _g = no_grad();
    let d = encoder.out_dim();
    let mut out: Vec<f32> = Vec::with_capacity(data.len * d);
    let mut start = 0;
    while start < data.len {
        let end = (start + batch).min(data.len);
        let rows: Vec<usize> = (start..end).collect();
        // Images go to the encoder's device; the features come back to the host (to_vec).
        let x = images_tensor(data, &rows, normalize)?.to_device(Module::device(&*encoder))?;
        let f = encoder.embed(&x)?;
        let f = if f.dtype() == DType::F32 {
            f
        } else {
            f.to_dtype(DType::F32)?
        };
        out.extend(f.to_vec::<f32>()?);
        start = end;
    }
    Ok(Tensor::from_vec(out, &[data.len, d])?)
}

/// Column statistics of a feature matrix, for standardising other rows the same way.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    /// Column means.
    pub mean: Vec<f64>,
    /// Column standard deviations (population); a constant column gets 1, so it maps to 0.
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Mean and standard deviation of every column of `x` `[N, D]`, accumulated in f64.
    pub fn fit(x: &Tensor) -> Result<Self> {
        let (n, d) = dims2(x, "standardize")?;
        if n == 0 {
            return config("standardize: no rows to compute statistics from");
        }
        let v = x.to_vec_f64()?;
        // Per block of rows: column sums and squares around the block mean (two passes keep
        // precision), combined below with the between-block terms.
        let parts: Vec<(Vec<f64>, Vec<f64>, f64)> = v
            .par_chunks(d * 256)
            .map(|block| {
                let rows = (block.len() / d) as f64;
                let mut s = vec![0f64; d];
                for row in block.chunks_exact(d) {
                    for (a, b) in s.iter_mut().zip(row) {
                        *a += b;
                    }
                }
                let mut q = vec![0f64; d];
                for row in block.chunks_exact(d) {
                    for j in 0..d {
                        let c = row[j] - s[j] / rows;
                        q[j] += c * c;
                    }
                }
                (s, q, rows)
            })
            .collect();
        let mut sum = vec![0f64; d];
        for (s, _, _) in &parts {
            for (a, b) in sum.iter_mut().zip(s) {
                *a += b;
            }
        }
        // Combine block variances: sum of within-block squares plus between-block terms.
        let nf = n as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / nf).collect();
        let mut m2 = vec![0f64; d];
        for (s, q, rows) in &parts {
            for j in 0..d {
                let diff = s[j] / rows - mean[j];
                m2[j] += q[j] + rows * diff * diff;
            }
        }
        let std = m2
            .iter()
            .map(|m| {
                let s = (m / nf).sqrt();
                if s > 1e-12 && s.is_finite() {
                    s
                } else {
                    1.0
                }
            })
            .collect();
        Ok(Standardizer { mean, std })
    }

    /// `(x - mean) / std` column by column, as an f32 tensor (or `x`'s dtype if it is f64).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (_, d) = dims2(x, "standardize")?;
        if d != self.mean.len() {
            return config(format!(
                "standardize: {d} columns, the statistics have {}",
                self.mean.len()
            ));
        }
        let dt = if x.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let _g = no_grad();
        let x = x.detach().to_dtype(dt)?;
        let mean = Tensor::from_vec(self.mean.clone(), &[1, d])?.to_dtype(dt)?;
        let inv: Vec<f64> = self.std.iter().map(|s| 1.0 / s).collect();
        let inv = Tensor::from_vec(inv, &[1, d])?.to_dtype(dt)?;
        Ok(x.sub(&mean)?.mul(&inv)?.contiguous()?)
    }
}

/// `(rows, cols)` of a 2-D tensor.
pub(crate) fn dims2(x: &Tensor, what: &str) -> Result<(usize, usize)> {
    match x.shape() {
        &[n, d] if d > 0 => Ok((n, d)),
        s => config(format!(
            "{what}: expected features [N, D] with D > 0, got {s:?}"
        )),
    }
}

/// Standardises columns with the mean and standard deviation of `train` only (population std; a
/// constant column maps to 0), and applies the same transform to `test`. Returns
/// `(train, test)` standardised.
pub fn standardize(train: &Tensor, test: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = Standardizer::fit(train)?;
    Ok((s.apply(train)?, s.apply(test)?))
}
