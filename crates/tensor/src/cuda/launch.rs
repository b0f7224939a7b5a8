//! Launching the elementwise kernels: the `Dims` argument (shapes and strides of up to three
//! strided operands, mirrored by `struct Dims` in `kernels/common.cuh`) and the launch shape.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use crate::error::{Error, Result};
use crate::Layout;

/// Most axes an elementwise kernel indexes (`MAX_DIMS` in `kernels/common.cuh`).
pub const MAX_DIMS: usize = 8;

/// Shapes and strides of an elementwise launch over a row-major walk of `shape`, for up to
/// three operands; `#[repr(C)]` with the field order of the CUDA struct.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    rank: i32,
    contiguous: i32,
    shape: [i64; MAX_DIMS],
    stride: [[i64; MAX_DIMS]; 3],
    offset: [i64; 3],
}

// SAFETY: plain old data with the same layout as the CUDA struct.
unsafe impl DeviceRepr for Dims {}

impl Dims {
    /// The launch description for walking `shape` with `operands` (each already broadcast to
    /// `shape`). Size-1 axes are dropped, so views of any rank with at most [`MAX_DIMS`] axes
    /// longer than one are accepted.
    pub fn new(shape: &[usize], operands: &[&Layout]) -> Result<Dims> {
        assert!(operands.len() <= 3, "Dims holds up to 3 operands");
        let axes: Vec<usize> = (0..shape.len()).filter(|&a| shape[a] != 1).collect();
        if axes.len() > MAX_DIMS {
            return Err(Error::Shape {
                op: "cuda elementwise",
                msg: format!(
                    "shape {shape:?} has {} axes longer than 1; CUDA kernels take at most {MAX_DIMS}",
                    axes.len()
                ),
            });
        }
        let mut d = Dims {
            rank: axes.len() as i32,
            contiguous: 0,
            shape: [1; MAX_DIMS],
            stride: [[0; MAX_DIMS]; 3],
            offset: [0; 3],
        };
        for (j, &a) in axes.iter().enumerate() {
            d.shape[j] = shape[a] as i64;
        }
        for (k, l) in operands.iter().enumerate() {
            d.offset[k] = l.offset() as i64;
            for (j, &a) in axes.iter().enumerate() {
                d.stride[k][j] = l.strides()[a] as i64;
            }
            if l.is_contiguous() && l.shape() == shape {
                d.contiguous |= 1 << k;
            }
        }
        Ok(d)
    }
}

/// The kernel-name suffix of a float dtype (`f32`, `f64`); other dtypes are an error naming
/// `op`, as on the CPU.
pub fn float_tag(op: &'static str, d: crate::DType) -> Result<&'static str> {
    match d {
        crate::DType::F32 => Ok("f32"),
        crate::DType::F64 => Ok("f64"),
        other => Err(crate::ops::unsupported(op, other)),
    }
}

/// Threads per block of the elementwise kernels.
pub const BLOCK: u32 = 256;

/// A 1-D grid-stride launch over `n` elements: enough blocks to fill the GPU several times
/// over, no more (the kernels loop).
pub fn grid_for(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of [`BLOCK`] threads per row, grid-stride over rows (the row kernels: reductions,
/// softmax, cross-entropy, layer norm).
pub fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, 65_535 * 16) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The device address of an optional operand (0 when absent, which kernels test for).
pub fn opt_ptr(s: Option<&super::CudaStorage>) -> u64 {
    s.map_or(0, |s| s.ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_drop_unit_axes_and_flag_contiguous_operands() {
        let a = Layout::contiguous(&[2, 1, 3]);
        let b = Layout::contiguous(&[3]).broadcast_to(&[2, 1, 3]).unwrap();
        let d = Dims::new(&[2, 1, 3], &[&a, &b]).unwrap();
        assert_eq!(d.rank, 2);
        assert_eq!(&d.shape[..2], &[2, 3]);
        assert_eq!(&d.stride[0][..2], &[3, 1]);
        assert_eq!(&d.stride[1][..2], &[0, 1]);
        assert_eq!(d.contiguous, 1);
        assert_eq!(std::mem::size_of::<Dims>(), 8 + 8 * 8 + 3 * 8 * 8 + 3 * 8);
    }

    #[test]
    fn dims_refuse_more_axes_than_the_kernels_walk() {
        let shape = [2usize; MAX_DIMS + 1];
        let l = Layout::contiguous(&shape);
        let e = Dims::new(&shape, &[&l]).unwrap_err().to_string();
        assert!(e.contains("at most 8"), "{e}");
    }
}
