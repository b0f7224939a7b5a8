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
    /// `shape`). Size-1 axes are dropped and neighbouring axes that every operand steps
    /// through as one (outer stride = inner stride x inner size) are merged, so views of any
    /// rank are accepted unless more than [`MAX_DIMS`] axes remain (an error naming the limit).
    pub fn new(shape: &[usize], operands: &[&Layout]) -> Result<Dims> {
        assert!(operands.len() <= 3, "Dims holds up to 3 operands");
        // (size, stride of each operand) per remaining axis, outermost first.
        let mut axes: Vec<(usize, [isize; 3])> = Vec::new();
        for (a, &n) in shape.iter().enumerate() {
            if n == 1 {
                continue;
            }
            let mut st = [0isize; 3];
            for (k, l) in operands.iter().enumerate() {
                st[k] = l.strides()[a] as isize;
            }
            match axes.last_mut() {
                Some((m, outer)) if (0..operands.len()).all(|k| outer[k] == st[k] * n as isize) => {
                    *m *= n;
                    *outer = st;
                }
                _ => axes.push((n, st)),
            }
        }
        if axes.len() > MAX_DIMS {
            return Err(Error::Shape {
                op: "cuda elementwise",
                msg: format!(
                    "shape {shape:?} walks {} separate axes on the GPU (after dropping size-1 axes \
                     and merging contiguous ones); CUDA kernels take at most {MAX_DIMS}: make the \
                     operands contiguous first",
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
        for (j, (n, st)) in axes.iter().enumerate() {
            d.shape[j] = *n as i64;
            for (row, &x) in d.stride.iter_mut().zip(st).take(operands.len()) {
                row[j] = x as i64;
            }
        }
        for (k, l) in operands.iter().enumerate() {
            d.offset[k] = l.offset() as i64;
            if l.is_contiguous() && l.shape() == shape {
                d.contiguous |= 1 << k;
            }
        }
        Ok(d)
    }

    /// The launch shape of an elementwise kernel over `n` elements of this walk with its first
    /// `operands` operands: over runs of [`EW_RUN`] elements when they are all contiguous (the
    /// kernels' `for_each_run` path, `kernels/common.cuh`), else over the elements.
    pub fn grid(&self, n: usize, operands: usize) -> LaunchConfig {
        let all = (1i32 << operands) - 1;
        if self.contiguous & all == all {
            grid_for(n.div_ceil(EW_RUN))
        } else {
            grid_for(n)
        }
    }
}

/// Elements per thread of an elementwise kernel whose operands are all contiguous (`EW_RUN`
/// in `kernels/common.cuh`).
pub const EW_RUN: usize = 4;

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
    fn dims_merge_axes_the_operands_step_through_as_one() {
        // A contiguous operand (strides [12, 4, 1]) and a broadcast row (strides [0, 0, 1])
        // over [2, 3, 4]: both step through the outer two axes as one of 6, not the inner two.
        let a = Layout::contiguous(&[2, 3, 4]);
        let b = Layout::contiguous(&[4]).broadcast_to(&[2, 3, 4]).unwrap();
        let d = Dims::new(&[2, 3, 4], &[&a, &b]).unwrap();
        assert_eq!(d.rank, 2);
        assert_eq!(&d.shape[..2], &[6, 4]);
        assert_eq!(&d.stride[0][..2], &[4, 1]);
        assert_eq!(&d.stride[1][..2], &[0, 1]);
        // A transposed operand merges nothing.
        let t = Layout::contiguous(&[4, 3]).permute(&[1, 0]).unwrap();
        let u = Layout::contiguous(&[3, 4]);
        let d = Dims::new(&[3, 4], &[&t, &u]).unwrap();
        assert_eq!((d.rank, &d.stride[0][..2]), (2, &[1i64, 3][..]));
    }

    #[test]
    fn dims_refuse_more_axes_than_the_kernels_walk() {
        // Contiguous: any rank collapses to one axis.
        let shape = [2usize; MAX_DIMS + 3];
        let l = Layout::contiguous(&shape);
        assert_eq!(Dims::new(&shape, &[&l]).unwrap().rank, 1);
        // Every axis reversed: nothing merges, so nine axes are refused.
        let shape = [2usize; MAX_DIMS + 1];
        let perm: Vec<usize> = (0..shape.len()).rev().collect();
        let l = Layout::contiguous(&shape).permute(&perm).unwrap();
        let e = Dims::new(l.shape(), &[&l]).unwrap_err().to_string();
        assert!(e.contains("at most 8"), "{e}");
    }
}
