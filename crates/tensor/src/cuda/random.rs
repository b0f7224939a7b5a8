//! Launches of `kernels/random.cu`: uniform, normal and Bernoulli draws on the GPU from the same
//! Philox stream positions as the CPU's [`crate::ops::random`].

use std::sync::Arc;

use cudarc::driver::PushKernelArg;

use super::launch::grid_for;
use super::{CudaBackend, CudaStorage};
use crate::dtype::DType;
use crate::error::Result;

/// What to draw, with its parameters.
#[derive(Clone, Copy, Debug)]
pub enum Draw {
    /// Uniform in `[lo, hi)`.
    Uniform {
        /// Lower bound (included).
        lo: f64,
        /// Upper bound (excluded).
        hi: f64,
    },
    /// Normal with mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// 1 with probability `p`, else 0.
    Bernoulli {
        /// Probability of a 1.
        p: f64,
    },
}

/// `n` values of `dtype` (f32 or f64) drawn from Philox blocks `start..` under `seed`.
pub fn draw(
    backend: &Arc<CudaBackend>,
    dtype: DType,
    n: usize,
    seed: u64,
    start: u64,
    what: Draw,
) -> Result<CudaStorage> {
    let tag = super::launch::float_tag("random", dtype)?;
    let out = CudaStorage::alloc(backend, dtype, n)?;
    if n == 0 {
        return Ok(out);
    }
    let name = match what {
        Draw::Uniform { .. } => "rand",
        Draw::Normal { .. } => "randn",
        Draw::Bernoulli { .. } => "bernoulli",
    };
    let f = backend.function("random", &format!("{name}_{tag}"))?;
    let (po, n64) = (out.ptr(), n as i64);
    let mut l = backend.stream().launch_builder(&f);
    l.arg(&po).arg(&n64).arg(&seed).arg(&start);
    // The CPU computes the f32 bounds as `lo as f32` and `(hi - lo) as f32`.
    let (lo32, span32, span64);
    let p;
    match what {
        Draw::Uniform { lo, hi } if dtype == DType::F32 => {
            (lo32, span32) = (lo as f32, (hi - lo) as f32);
            l.arg(&lo32).arg(&span32);
        }
        Draw::Uniform { lo, hi } => {
            span64 = hi - lo;
            p = lo;
            l.arg(&p).arg(&span64);
        }
        Draw::Normal { ref mean, ref std } => {
            l.arg(mean).arg(std);
        }
        Draw::Bernoulli { ref p } => {
            l.arg(p);
        }
    }
    // SAFETY: out holds n elements.
    unsafe { l.launch(grid_for(n)) }.map_err(|e| backend.err(name, e))?;
    Ok(out)
}
