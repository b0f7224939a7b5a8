//! Batched matrix multiply over strided operands: `out[b] = a[b] · b[b]` for row-major output
//! `[batch, m, n]`. Each operand's matrix strides are passed to the GEMM as they are, so
//! transposed views need no copy; batch offsets come from (possibly broadcast) batch strides.

use crate::dtype::Float;
use crate::layout::Layout;
use rayon::prelude::*;

/// What a GEMM does with its output `C` (see [`Gemm::gemm_into`]).
#[derive(Clone, Copy, Debug)]
pub enum Output<T> {
    /// `C = A·B`; C is only written, so it may be uninitialised.
    Write,
    /// `C += A·B`; C must hold initialised values.
    Accumulate,
    /// `C = A·B + bias`, `bias[j]` added to every element of column `j` (`n` values); C is
    /// only written.
    ColBias(*const T),
}

/// A GEMM on raw strided matrices (`C = A·B`, C row-major and contiguous).
pub trait Gemm: Float {
    /// `C ← A·B` as `out` says (write, accumulate, or write with a column bias).
    ///
    /// # Safety
    /// Pointers must be valid for the given sizes and strides; `c` must not alias `a` or `b`;
    /// with [`Output::Accumulate`] `c` must hold initialised values, with [`Output::ColBias`]
    /// the bias must be readable for `n` values.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_into(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
        out: Output<Self>,
    );

    /// `C = A·B` ([`Gemm::gemm_into`] with [`Output::Write`]).
    ///
    /// # Safety
    /// As for [`Gemm::gemm_into`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
    ) {
        Self::gemm_into(m, k, n, a, rsa, csa, b, rsb, csb, c, rsc, Output::Write);
    }
}

impl Gemm for f32 {
    unsafe fn gemm_into(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        c: *mut f32,
        rsc: isize,
        out: Output<f32>,
    ) {
        use super::gemm::{sgemm, sgemm_col_bias};
        match out {
            Output::Write => sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, 1),
            Output::Accumulate => sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 1.0, c, rsc, 1),
            // The packed path adds the bias as it stores each tile.
            Output::ColBias(bias) => {
                sgemm_col_bias(m, k, n, a, rsa, csa, b, rsb, csb, c, rsc, 1, bias)
            }
        }
    }
}

impl Gemm for f64 {
    unsafe fn gemm_into(
        m: usize,
        k: usize,
        n: usize,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        c: *mut f64,
        rsc: isize,
        out: Output<f64>,
    ) {
        let beta = match out {
            Output::Write => 0.0,
            Output::Accumulate => 1.0,
            Output::ColBias(bias) => {
                // C starts as the bias rows and the product accumulates onto them.
                for i in 0..m {
                    std::ptr::copy_nonoverlapping(bias, c.offset(i as isize * rsc), n);
                }
                1.0
            }
        };
        super::gemm::dgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, beta, c, rsc, 1);
    }
}

fn batch_offset(l: &Layout, mut i: usize) -> usize {
    let r = l.rank() - 2;
    let mut off = l.offset();
    for d in (0..r).rev() {
        let dim = l.shape()[d];
        off += (i % dim) * l.strides()[d];
        i /= dim;
    }
    off
}

/// `a` is `[batch.., m, k]`, `b` is `[batch.., k, n]`, both already broadcast to the same batch
/// shape; returns the contiguous `[batch.., m, n]` product.
pub fn matmul<T: Gemm>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<T> {
    let len = batch * m * n;
    if len == 0 || k == 0 {
        return vec![T::ZERO; len];
    }
    // Every element is written by its block's GEMM (β = 0 never reads C), so the output is
    // not zero-filled first: one pass over it fewer.
    let mut out: Vec<T> = Vec::with_capacity(len);
    let base = OutPtr(out.as_mut_ptr());
    let ra = la.rank();
    let (rsa, csa) = (la.strides()[ra - 2] as isize, la.strides()[ra - 1] as isize);
    let (rsb, csb) = (lb.strides()[ra - 2] as isize, lb.strides()[ra - 1] as isize);
    // The GEMMs run on rayon tasks: they take this thread's bf16 setting.
    let (bf16, _off) = super::gemm::take_bf16_products();
    let one = |i: usize| {
        let c = base.at(i * m * n);
        let (oa, ob) = (batch_offset(la, i), batch_offset(lb, i));
        // SAFETY: offsets and strides come from layouts that lie inside their buffers
        // (checked when the layouts were built); `c` is a fresh m*n block.
        super::gemm::with_bf16_products(bf16, || unsafe {
            T::gemm(
                m,
                k,
                n,
                a.as_ptr().add(oa),
                rsa,
                csa,
                b.as_ptr().add(ob),
                rsb,
                csb,
                c,
                n as isize,
            )
        })
    };
    if batch > 1 && m * n * k * batch >= 1 << 15 {
        (0..batch).into_par_iter().for_each(one);
    } else {
        (0..batch).for_each(one);
    }
    // SAFETY: the GEMMs above wrote all `len` elements (blocks `i * m * n ..` for every `i`).
    unsafe { out.set_len(len) };
    out
}

/// The output buffer's base pointer, shared by the batch's tasks (each writes its own block).
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: tasks write disjoint blocks of the buffer.
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// The pointer `i` elements in (a method, so closures capture the whole `Sync` wrapper).
    fn at(self, i: usize) -> *mut T {
        // SAFETY: callers stay inside the allocation.
        unsafe { self.0.add(i) }
    }
}
