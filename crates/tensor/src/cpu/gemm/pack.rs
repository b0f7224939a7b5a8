//! Packing of strided operand blocks into the sliver layout the micro-kernel reads.
//!
//! A `len × kc` block whose element `(i, p)` sits at `src + i·s_len + p·s_k` is copied into
//! `ceil(len / W)` slivers of `W × kc`; sliver `s` starts at `dst + s·W·kc` and stores element
//! `(s·W + r, p)` at offset `p·W + r` (k-major, so one k-step of a sliver is `W` contiguous
//! values). Rows past `len` in the last sliver are zero-filled. A blocks are packed with
//! `W = MR` (`i` = row of A), B blocks with `W = NR` (`i` = column of B).

use core::ptr;

/// Packs a strided `len × kc` block into `W`-wide slivers (layout in the module header).
///
/// # Safety
/// Every `(i, p)` with `i < len`, `p < kc` must address a readable `f32` through `src`, and `dst`
/// must be valid for `len.div_ceil(W) · W · kc` writes that do not overlap the source.
pub(super) unsafe fn pack<const W: usize>(
    len: usize,
    kc: usize,
    src: *const f32,
    s_len: isize,
    s_k: isize,
    dst: *mut f32,
) {
    for s in 0..len.div_ceil(W) {
        let rows = W.min(len - s * W);
        let from = src.offset((s * W) as isize * s_len);
        let to = dst.add(s * W * kc);
        if s_len == 1 {
            // Each k-step of the sliver is contiguous in the source.
            for p in 0..kc {
                let f = from.offset(p as isize * s_k);
                let t = to.add(p * W);
                if rows == W {
                    ptr::copy_nonoverlapping(f, t, W);
                } else {
                    ptr::copy_nonoverlapping(f, t, rows);
                    ptr::write_bytes(t.add(rows), 0, W - rows);
                }
            }
        } else {
            // Walk each source row along k (contiguous when `s_k == 1`), scattering by `W`.
            for r in 0..rows {
                let f = from.offset(r as isize * s_len);
                for p in 0..kc {
                    *to.add(p * W + r) = *f.offset(p as isize * s_k);
                }
            }
            if rows < W {
                for p in 0..kc {
                    ptr::write_bytes(to.add(p * W + rows), 0, W - rows);
                }
            }
        }
    }
}
