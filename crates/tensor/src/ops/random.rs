//! Random tensors and dropout from a counter-based [`Generator`]: element `i` of a draw is a
//! pure function of `(seed, offset, i)`, so results do not depend on the thread count and the
//! CUDA backend can reproduce them.

use crate::error::{invalid, Result};
use crate::layout::numel;
use crate::rng::{philox_block, u32_to_unit_f32, u64_to_unit_f64, Generator};
use crate::storage::CpuStorage;
use crate::{DType, Device, Tensor};
use rayon::prelude::*;

/// `n` values; value `i` is `f` of the 32-bit words `i*words .. (i+1)*words` of the draw.
fn fill<T: Send + Copy + Default>(
    g: &mut Generator,
    n: usize,
    words: usize,
    f: impl Fn(&[u32]) -> T + Sync,
) -> Vec<T> {
    let start = g.reserve(n * words);
    let (seed, _) = g.state();
    let mut out = vec![T::default(); n];
    const CHUNK: usize = 4096;
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let (mut cached, mut buf) = (u64::MAX, [0u32; 4]);
            let mut w = [0u32; 4];
            for (j, o) in chunk.iter_mut().enumerate() {
                for (k, wk) in w.iter_mut().enumerate().take(words) {
                    let word = ((c * CHUNK + j) * words + k) as u64;
                    if word / 4 != cached {
                        cached = word / 4;
                        buf = philox_block(seed, 0, start + cached);
                    }
                    *wk = buf[(word % 4) as usize];
                }
                *o = f(&w[..words]);
            }
        });
    out
}

fn normal_pair(u1: f64, u2: f64) -> f64 {
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The same draw made on a GPU: reserves the same Philox blocks as the CPU path would.
#[cfg(feature = "cuda")]
fn draw_on_gpu(
    ordinal: usize,
    shape: &[usize],
    dtype: DType,
    words: usize,
    g: &mut Generator,
    what: crate::cuda::random::Draw,
) -> Result<Tensor> {
    let backend = crate::cuda::CudaBackend::get(ordinal)?;
    let n = numel(shape);
    let start = g.reserve(n * words);
    let (seed, _) = g.state();
    let s = crate::cuda::random::draw(&backend, dtype, n, seed, start, what)?;
    Ok(Tensor::from_storage(
        crate::storage::Storage::Cuda(s),
        shape,
    ))
}

#[cfg(feature = "cuda")]
/// 32-bit words per value of a draw of `dtype` (uniform and Bernoulli: 1 or 2; normal: 2 or 4).
fn words(dtype: DType, normal: bool) -> usize {
    match (dtype, normal) {
        (DType::F64, true) => 4,
        (DType::F64, false) | (_, true) => 2,
        _ => 1,
    }
}

impl Tensor {
    /// [`Tensor::rand`] on `device`: the same values on every device for the same generator
    /// state (bit-identical on the GPU).
    pub fn rand_on(
        shape: &[usize],
        lo: f64,
        hi: f64,
        dtype: DType,
        device: Device,
        g: &mut Generator,
    ) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::rand(shape, lo, hi, dtype, g),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => {
                crate::ops::check_float("rand", &Tensor::zeros(&[], dtype))?;
                draw_on_gpu(
                    i,
                    shape,
                    dtype,
                    words(dtype, false),
                    g,
                    crate::cuda::random::Draw::Uniform { lo, hi },
                )
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(crate::device::no_cuda_build(device)),
        }
    }

    /// [`Tensor::randn`] on `device` (on the GPU the same draws, transformed with CUDA's
    /// log/cos: equal to the CPU's within a few ulps).
    pub fn randn_on(
        shape: &[usize],
        mean: f64,
        std: f64,
        dtype: DType,
        device: Device,
        g: &mut Generator,
    ) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::randn(shape, mean, std, dtype, g),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => {
                crate::ops::check_float("randn", &Tensor::zeros(&[], dtype))?;
                draw_on_gpu(
                    i,
                    shape,
                    dtype,
                    words(dtype, true),
                    g,
                    crate::cuda::random::Draw::Normal { mean, std },
                )
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(crate::device::no_cuda_build(device)),
        }
    }

    /// [`Tensor::bernoulli`] on `device` (bit-identical on the GPU).
    pub fn bernoulli_on(
        shape: &[usize],
        p: f64,
        dtype: DType,
        device: Device,
        g: &mut Generator,
    ) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::bernoulli(shape, p, dtype, g),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => {
                if !(0.0..=1.0).contains(&p) {
                    return invalid("bernoulli", format!("probability {p} is outside [0, 1]"));
                }
                crate::ops::check_float("bernoulli", &Tensor::zeros(&[], dtype))?;
                draw_on_gpu(
                    i,
                    shape,
                    dtype,
                    1,
                    g,
                    crate::cuda::random::Draw::Bernoulli { p },
                )
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(crate::device::no_cuda_build(device)),
        }
    }

    /// Uniform in `[lo, hi)`.
    pub fn rand(
        shape: &[usize],
        lo: f64,
        hi: f64,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<Tensor> {
        let n = numel(shape);
        let s = match dtype {
            DType::F32 => CpuStorage::F32(fill(g, n, 1, |w| {
                lo as f32 + (hi - lo) as f32 * u32_to_unit_f32(w[0])
            })),
            DType::F64 => CpuStorage::F64(fill(g, n, 2, |w| {
                lo + (hi - lo) * u64_to_unit_f64((w[0] as u64) << 32 | w[1] as u64)
            })),
            d => return Err(crate::ops::unsupported("rand", d)),
        };
        Ok(Tensor::from_cpu(s, shape))
    }

    /// Normal with the given mean and standard deviation (Box-Muller).
    pub fn randn(
        shape: &[usize],
        mean: f64,
        std: f64,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<Tensor> {
        let n = numel(shape);
        let s = match dtype {
            DType::F32 => CpuStorage::F32(fill(g, n, 2, |w| {
                (mean
                    + std * normal_pair(u32_to_unit_f32(w[0]) as f64, u32_to_unit_f32(w[1]) as f64))
                    as f32
            })),
            DType::F64 => CpuStorage::F64(fill(g, n, 4, |w| {
                mean + std
                    * normal_pair(
                        u64_to_unit_f64((w[0] as u64) << 32 | w[1] as u64),
                        u64_to_unit_f64((w[2] as u64) << 32 | w[3] as u64),
                    )
            })),
            d => return Err(crate::ops::unsupported("randn", d)),
        };
        Ok(Tensor::from_cpu(s, shape))
    }

    /// 1 with probability `p`, else 0.
    pub fn bernoulli(shape: &[usize], p: f64, dtype: DType, g: &mut Generator) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return invalid("bernoulli", format!("probability {p} is outside [0, 1]"));
        }
        let n = numel(shape);
        let thr = p;
        let bits = fill(g, n, 1, |w| (u32_to_unit_f32(w[0]) as f64) < thr);
        let s = match dtype {
            DType::F32 => CpuStorage::F32(bits.iter().map(|&b| b as u8 as f32).collect()),
            DType::F64 => CpuStorage::F64(bits.iter().map(|&b| b as u8 as f64).collect()),
            d => return Err(crate::ops::unsupported("bernoulli", d)),
        };
        Ok(Tensor::from_cpu(s, shape))
    }

    /// A random permutation of `0..n` as i64.
    pub fn randperm(n: usize, g: &mut Generator) -> Tensor {
        let mut p = g.fork();
        let perm: Vec<i64> = p.permutation(n).into_iter().map(|i| i as i64).collect();
        Tensor::from_cpu(CpuStorage::I64(perm), &[n])
    }

    /// Inverted dropout: zeroes each element with probability `p` and scales the rest by
    /// `1 / (1 - p)`; the identity when `train` is false or `p == 0`.
    pub fn dropout(&self, p: f64, train: bool, g: &mut Generator) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return invalid("dropout", format!("probability {p} must be in [0, 1)"));
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        crate::ops::check_float("dropout", self)?;
        let mask = Tensor::bernoulli_on(self.shape(), 1.0 - p, self.dtype(), self.device(), g)?
            .mul_scalar(1.0 / (1.0 - p))?;
        self.mul(&mask)
    }
}
