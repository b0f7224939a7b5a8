//! Launches of `kernels/reduce.cu`: the CUDA arm of the sum/max/min reductions in
//! [`crate::ops::reduce`] (the CPU reference is `crate::cpu::reduce`).

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::launch::{Dims, BLOCK};
use super::CudaStorage;
use crate::cpu::reduce::ReduceKind;
use crate::error::Result;
use crate::Layout;

/// Reduces `x` at layout `l` (reduced axes last, `rows * len` elements) to `rows` values.
pub fn rows(
    op: &'static str,
    kind: ReduceKind,
    x: &CudaStorage,
    l: &Layout,
    rows: usize,
    len: usize,
) -> Result<CudaStorage> {
    let tag = super::launch::float_tag(op, x.dtype())?;
    let kind_name = match kind {
        ReduceKind::Sum => "sum",
        ReduceKind::Max => "max",
        ReduceKind::Min => "min",
    };
    if len == 0 {
        // An empty reduction is its identity (0, -inf or +inf), as on the CPU.
        let v = match kind {
            ReduceKind::Sum => 0.0,
            ReduceKind::Max => f64::NEG_INFINITY,
            ReduceKind::Min => f64::INFINITY,
        };
        return CudaStorage::full(&x.backend, x.dtype(), rows, v);
    }
    let out = CudaStorage::alloc(&x.backend, x.dtype(), rows)?;
    if rows == 0 {
        return Ok(out);
    }
    let d = Dims::new(l.shape(), &[l])?;
    let f = x
        .backend
        .function("reduce", &format!("reduce_{kind_name}_{tag}"))?;
    let (px, po, r64, n64) = (x.ptr(), out.ptr(), rows as i64, len as i64);
    let mut b = x.backend.stream().launch_builder(&f);
    b.arg(&px).arg(&po).arg(&r64).arg(&n64).arg(&d);
    let cfg = LaunchConfig {
        grid_dim: (rows.min(65_535 * 16) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the layout was checked against x's buffer; out holds `rows` elements.
    unsafe { b.launch(cfg) }.map_err(|e| x.backend.err(op, e))?;
    Ok(out)
}
