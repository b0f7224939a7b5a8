//! Parameter initialisers, all drawn from a [`Generator`] so that models are reproducible.
//!
//! Fans follow PyTorch: for a weight of shape `[out, in, k...]`, `fan_in = in * prod(k)` and
//! `fan_out = out * prod(k)`.

use selfsup_tensor::{DType, Generator, Tensor};

use crate::error::{config, Result};

/// Which fan a Kaiming initialiser preserves the variance of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// Preserve the variance of activations in the forward pass.
    FanIn,
    /// Preserve the variance of gradients in the backward pass.
    FanOut,
}

/// `(fan_in, fan_out)` of a weight shape (at least 2-D).
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return config(format!(
            "fans: need a weight of rank >= 2, got shape {shape:?}"
        ));
    }
    let receptive: usize = shape[2..].iter().product();
    Ok((shape[1] * receptive, shape[0] * receptive))
}

fn fan(shape: &[usize], mode: FanMode) -> Result<usize> {
    let (i, o) = fans(shape)?;
    let f = match mode {
        FanMode::FanIn => i,
        FanMode::FanOut => o,
    };
    if f == 0 {
        return config(format!("fans: zero-sized fan for shape {shape:?}"));
    }
    Ok(f)
}

/// The gain of a leaky ReLU with negative slope `a` (`a = 0` is ReLU): `sqrt(2 / (1 + a^2))`.
pub fn leaky_relu_gain(a: f64) -> f64 {
    (2.0 / (1.0 + a * a)).sqrt()
}

/// Uniform in `[lo, hi)`.
pub fn uniform(
    shape: &[usize],
    lo: f64,
    hi: f64,
    dtype: DType,
    g: &mut Generator,
) -> Result<Tensor> {
    Ok(Tensor::rand(shape, lo, hi, dtype, g)?)
}

/// Normal with the given mean and standard deviation.
pub fn normal(
    shape: &[usize],
    mean: f64,
    std: f64,
    dtype: DType,
    g: &mut Generator,
) -> Result<Tensor> {
    Ok(Tensor::randn(shape, mean, std, dtype, g)?)
}

/// Kaiming (He) uniform: `U(-b, b)` with `b = gain(a) * sqrt(3 / fan)`.
/// With `a = sqrt(5)` and fan-in this is PyTorch's default `Linear`/`Conv` weight init,
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
pub fn kaiming_uniform(
    shape: &[usize],
    a: f64,
    mode: FanMode,
    dtype: DType,
    g: &mut Generator,
) -> Result<Tensor> {
    let b = leaky_relu_gain(a) * (3.0 / fan(shape, mode)? as f64).sqrt();
    uniform(shape, -b, b, dtype, g)
}

/// Kaiming (He) normal: `N(0, (gain(a) / sqrt(fan))^2)`.
pub fn kaiming_normal(
    shape: &[usize],
    a: f64,
    mode: FanMode,
    dtype: DType,
    g: &mut Generator,
) -> Result<Tensor> {
    let std = leaky_relu_gain(a) / (fan(shape, mode)? as f64).sqrt();
    normal(shape, 0.0, std, dtype, g)
}

/// Xavier (Glorot) uniform: `U(-b, b)` with `b = gain * sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_uniform(
    shape: &[usize],
    gain: f64,
    dtype: DType,
    g: &mut Generator,
) -> Result<Tensor> {
    let (i, o) = fans(shape)?;
    let b = gain * (6.0 / (i + o).max(1) as f64).sqrt();
    uniform(shape, -b, b, dtype, g)
}

/// Xavier (Glorot) normal: `N(0, gain^2 * 2 / (fan_in + fan_out))`.
pub fn xavier_normal(
    shape: &[usize],
    gain: f64,
    dtype: DType,
    g: &mut Generator,
) -> Result<Tensor> {
    let (i, o) = fans(shape)?;
    let std = gain * (2.0 / (i + o).max(1) as f64).sqrt();
    normal(shape, 0.0, std, dtype, g)
}

/// Normal `N(mean, std^2)` truncated to `[lo, hi]` (values outside are redrawn), as used for
/// ViT weights (`std = 0.02`, bounds `±2`).
pub fn trunc_normal(
    shape: &[usize],
    mean: f64,
    std: f64,
    lo: f64,
    hi: f64,
    dtype: DType,
    g: &mut Generator,
) -> Result<Tensor> {
    let valid = lo < hi && std > 0.0 && mean + 6.0 * std >= lo && mean - 6.0 * std <= hi;
    if !valid {
        return config(format!(
            "trunc_normal: bounds [{lo}, {hi}] must be ordered and within 6 std of the mean {mean} (std {std} > 0)"
        ));
    }
    let n: usize = shape.iter().product();
    let mut p = g.fork();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let x = mean + std * p.normal_f64();
        if (lo..=hi).contains(&x) {
            out.push(x);
        }
    }
    Ok(Tensor::from_vec(out, shape)?.to_dtype(dtype)?)
}

/// Zeros.
pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(shape, dtype)
}

/// Ones.
pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::ones(shape, dtype)
}
