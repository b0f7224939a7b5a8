//! 2-D convolution kernels (NCHW): forward, gradient of the input and gradient of the weight.
//!
//! Layouts (all contiguous, row-major): input `x` is `[N, C_in, H, W]`, weight `w` is
//! `[C_out, C_in / groups, kh, kw]`, output `y` is `[N, C_out, OH, OW]`, bias is `[C_out]`.
//! With `K = C_in / groups * kh * kw` and `P = OH * OW`, one image and group computes
//!
//! - forward: `y_g [C_out/g, P] = w_g [C_out/g, K] · col [K, P]`, where `col = im2col(x_g)`;
//! - input gradient: `dcol [K, P] = w_g^T · dy_g`, then `dx_g += col2im(dcol)`;
//! - weight gradient: `dw_g [C_out/g, K] += dy_g [C_out/g, P] · col^T`.
//!
//! Work is split over the batch into one contiguous run of images per rayon thread; each run
//! owns one column buffer reused for all of its images. Images with small output planes are
//! unfolded side by side into one `[K, B*P]` block so that one GEMM serves `B` images. The weight gradient keeps one partial
//! sum per run and adds the partials in run order, so it is deterministic for a given thread
//! count. 1x1 convolutions with stride 1 and no padding use the input as the column matrix.

use crate::cpu::matmul::{Gemm, Output};
use crate::dtype::Float;
use rayon::prelude::*;

/// The sizes of one 2-D convolution (see the module header for the layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size N.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Stride (rows, columns), at least 1.
    pub stride: (usize, usize),
    /// Zero padding on each side (rows, columns).
    pub padding: (usize, usize),
    /// Dilation (rows, columns), at least 1.
    pub dilation: (usize, usize),
    /// Number of channel groups (divides `c_in` and `c_out`).
    pub groups: usize,
}

impl ConvGeom {
    /// Input channels per group.
    pub fn cin_g(&self) -> usize {
        self.c_in / self.groups
    }

    /// Output channels per group.
    pub fn cout_g(&self) -> usize {
        self.c_out / self.groups
    }

    /// Rows of the column matrix: `C_in / groups * kh * kw`.
    pub fn col_rows(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }

    /// Output positions per channel: `OH * OW`.
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Elements of one input image.
    pub fn in_image(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// Elements of one output image.
    pub fn out_image(&self) -> usize {
        self.c_out * self.oh * self.ow
    }

    /// Whether the column matrix is the input itself (1x1 kernel, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.padding == (0, 0)
    }

    /// Multiply-adds times 2 of one pass (forward, input or weight gradient).
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.c_out * self.out_plane() * self.col_rows()) as f64
    }
}

/// Images per rayon task: the batch split into one contiguous run per thread.
fn images_per_task(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// Output positions `lo..hi` along one axis whose input index `o * s + off - p` lies in
/// `0..len` (`off` is the kernel tap times the dilation).
fn valid_range(out: usize, len: usize, s: usize, off: usize, p: usize) -> (usize, usize) {
    let lo = if p > off { (p - off).div_ceil(s) } else { 0 };
    let hi = if len + p > off {
        (len + p - off).div_ceil(s)
    } else {
        0
    };
    let lo = lo.min(out);
    (lo, hi.clamp(lo, out))
}

/// One kernel tap's share of the column matrix: column-matrix row `row` takes, for output rows
/// `y_lo..y_hi` and output columns `x_lo..x_hi`, the input elements `first + (oy - y_lo) *
/// row_step + (ox - x_lo) * stride_w`; the rest of the row reads padding.
#[derive(Clone, Copy)]
struct Tap {
    row: usize,
    y_lo: usize,
    y_hi: usize,
    x_lo: usize,
    x_hi: usize,
    first: usize,
    row_step: usize,
}

/// Calls `f` once per kernel tap (per column-matrix row), in row order.
#[inline(always)]
fn for_each_tap(g: &ConvGeom, mut f: impl FnMut(Tap)) {
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    let mut row = 0;
    for c in 0..g.cin_g() {
        let plane = c * g.h * g.w;
        for ki in 0..g.kh {
            let (y_lo, y_hi) = valid_range(g.oh, g.h, sh, ki * dh, ph);
            for kj in 0..g.kw {
                let (x_lo, x_hi) = valid_range(g.ow, g.w, sw, kj * dw, pw);
                // Only used when both ranges are non-empty, where these do not underflow.
                let first = if y_lo < y_hi && x_lo < x_hi {
                    plane + (y_lo * sh + ki * dh - ph) * g.w + x_lo * sw + kj * dw - pw
                } else {
                    0
                };
                f(Tap {
                    row,
                    y_lo,
                    y_hi,
                    x_lo,
                    x_hi,
                    first,
                    row_step: sh * g.w,
                });
                row += 1;
            }
        }
    }
}

/// Unfolds one image group `x` (`[C_in/groups, H, W]`) into `col` (`[K, OH*OW]` with row stride
/// `ld >= OH*OW`, so several images can sit side by side), writing zeros where the kernel reads
/// padding.
pub fn im2col<T: Float>(x: &[T], g: &ConvGeom, col: &mut [T], ld: usize) {
    let (p, ow, sw) = (g.out_plane(), g.ow, g.stride.1);
    assert!(
        ld >= p && col.len() >= (g.col_rows().max(1) - 1) * ld + p,
        "im2col: column buffer too small"
    );
    for_each_tap(g, |t| {
        let (y_lo, y_hi, x_lo, x_hi) = (t.y_lo, t.y_hi, t.x_lo, t.x_hi);
        let out = &mut col[t.row * ld..t.row * ld + p];
        // Zero where the kernel reads padding: whole output rows here, row ends below.
        out[..y_lo * ow].fill(T::ZERO);
        out[y_hi * ow..].fill(T::ZERO);
        if x_lo >= x_hi {
            out[y_lo * ow..y_hi * ow].fill(T::ZERO);
        } else if sw == 2 {
            // Downsampling: whole rows, zeros included, on the vector unit where it can.
            super::stride_copy::gather_rows_padded(
                &mut out[y_lo * ow..],
                ow,
                &x[t.first..],
                t.row_step,
                y_hi - y_lo,
                (x_lo, x_hi, ow),
                sw,
            );
        } else {
            let len = x_hi - x_lo;
            for oy in y_lo..y_hi {
                let seg = &mut out[oy * ow..(oy + 1) * ow];
                seg[..x_lo].fill(T::ZERO);
                seg[x_hi..].fill(T::ZERO);
                let from = &x[t.first + (oy - y_lo) * t.row_step..];
                if sw == 1 {
                    seg[x_lo..x_hi].copy_from_slice(&from[..len]);
                } else {
                    super::stride_copy::gather(&mut seg[x_lo..x_hi], from, sw);
                }
            }
        }
    });
}

/// Folds `col` (`[K, OH*OW]`, row stride `ld`) back onto one image group, adding into `dx`
/// (`[C_in/groups, H, W]`).
pub fn col2im_add<T: Float>(col: &[T], g: &ConvGeom, dx: &mut [T], ld: usize) {
    let (ow, sw) = (g.ow, g.stride.1);
    for_each_tap(g, |t| {
        if t.y_lo < t.y_hi && t.x_lo < t.x_hi {
            super::stride_copy::scatter_add_rows(
                &mut dx[t.first..],
                t.row_step,
                &col[t.row * ld + t.y_lo * ow + t.x_lo..],
                ow,
                (t.y_hi - t.y_lo, t.x_hi - t.x_lo),
                sw,
            );
        }
    });
}

/// Column-matrix heights up to which the forward pass multiplies directly instead of calling
/// the GEMM (whose packing costs more than the arithmetic for such short inner dimensions).
const SMALL_K: usize = 16;

/// `c [m, p] = a [m, k] · b [k, p]` as `k` vectorisable row updates per output row, for small
/// `k` (row-major, contiguous; `m = c.len() / p`).
fn small_k_matmul<T: Float>(a: &[T], b: &[T], k: usize, p: usize, c: &mut [T]) {
    for (row, ar) in c.chunks_exact_mut(p).zip(a.chunks_exact(k)) {
        for (y, &x) in row.iter_mut().zip(&b[..p]) {
            *y = ar[0] * x;
        }
        for r in 1..k {
            let ak = ar[r];
            for (y, &x) in row.iter_mut().zip(&b[r * p..(r + 1) * p]) {
                *y += ak * x;
            }
        }
    }
}

/// Whether every product of the forward pass goes through the GEMM (not the small-k loop):
/// its inputs need no rounding for bf16 products then (the GEMM rounds them as it packs). The
/// backward passes always use the GEMM.
pub fn forward_uses_gemm(g: &ConvGeom) -> bool {
    g.col_rows() > SMALL_K
}

/// Target number of columns (images x output positions) in one column block: wide enough that
/// the GEMM amortises its packing, small enough that the block stays in L2.
const BLOCK_COLS: usize = 768;

/// Images per column block: several images share one GEMM when each has few output positions
/// (e.g. 7x7 planes), except for pointwise and small-K convolutions, which skip im2col.
fn images_per_block(g: &ConvGeom, per_task: usize) -> usize {
    if g.is_pointwise() || g.col_rows() <= SMALL_K {
        return 1;
    }
    (BLOCK_COLS / g.out_plane().max(1)).clamp(1, per_task.max(1))
}

/// Copies output-gradient planes of images `n0..n0+nb`, channels of group `grp`, into the
/// block layout `[cout_g, nb * P]`.
fn gather_dy_block<T: Float>(
    dy: &[T],
    g: &ConvGeom,
    n0: usize,
    nb: usize,
    grp: usize,
    out: &mut [T],
) {
    let (p, cout_g, out_img) = (g.out_plane(), g.cout_g(), g.out_image());
    let cols = nb * p;
    for j in 0..nb {
        for co in 0..cout_g {
            let src = (n0 + j) * out_img + (grp * cout_g + co) * p;
            out[co * cols + j * p..co * cols + (j + 1) * p].copy_from_slice(&dy[src..src + p]);
        }
    }
}

/// Convolution forward: `y = conv(x, w) + bias`, contiguous `[N, C_out, OH, OW]`.
pub fn conv2d_forward<T: Gemm>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    let (out_img, in_img) = (g.out_image(), g.in_image());
    let mut y = vec![T::ZERO; g.n * out_img];
    if y.is_empty() {
        return y;
    }
    let (k, p, cin_g, cout_g) = (g.col_rows(), g.out_plane(), g.cin_g(), g.cout_g());
    let xg_len = cin_g * g.h * g.w;
    let per = images_per_task(g.n);
    let bsz = images_per_block(g, per);
    // The GEMMs run on rayon tasks: they take this thread's bf16 setting.
    let (bf16, _off) = super::gemm::take_bf16_products();
    y.par_chunks_mut(per * out_img)
        .enumerate()
        .for_each(|(t, chunk)| {
            let _bf16 = super::gemm::Bf16Scope::enter(bf16);
            let direct = g.is_pointwise() || k <= SMALL_K;
            let mut col = if g.is_pointwise() {
                Vec::new()
            } else {
                vec![T::ZERO; k * p * bsz]
            };
            let mut tmp = if direct {
                Vec::new()
            } else {
                vec![T::ZERO; cout_g * p * bsz]
            };
            let imgs = chunk.len() / out_img;
            for j0 in (0..imgs).step_by(bsz) {
                let nb = bsz.min(imgs - j0);
                let cols = nb * p;
                for grp in 0..g.groups {
                    let wg = &w[grp * cout_g * k..(grp + 1) * cout_g * k];
                    for j in 0..nb {
                        if g.is_pointwise() {
                            break;
                        }
                        let n = t * per + j0 + j;
                        let xg = &x[n * in_img + grp * xg_len..n * in_img + (grp + 1) * xg_len];
                        im2col(xg, g, &mut col[j * p..], cols);
                    }
                    if direct {
                        // One image per block here.
                        let n = t * per + j0;
                        let yg = &mut chunk[j0 * out_img + grp * cout_g * p
                            ..j0 * out_img + (grp + 1) * cout_g * p];
                        let b: &[T] = if g.is_pointwise() {
                            &x[n * in_img + grp * xg_len..n * in_img + (grp + 1) * xg_len]
                        } else {
                            &col[..k * p]
                        };
                        if k <= SMALL_K {
                            small_k_matmul(wg, b, k, p, yg);
                        } else {
                            // SAFETY: wg is [cout_g, k], b is [k, p], yg is [cout_g, p]; distinct.
                            unsafe {
                                T::gemm(
                                    cout_g,
                                    k,
                                    p,
                                    wg.as_ptr(),
                                    k as isize,
                                    1,
                                    b.as_ptr(),
                                    p as isize,
                                    1,
                                    yg.as_mut_ptr(),
                                    p as isize,
                                )
                            }
                        }
                        continue;
                    }
                    // SAFETY: wg is [cout_g, k], col is [k, cols], tmp is [cout_g, cols]; distinct.
                    unsafe {
                        T::gemm(
                            cout_g,
                            k,
                            cols,
                            wg.as_ptr(),
                            k as isize,
                            1,
                            col.as_ptr(),
                            cols as isize,
                            1,
                            tmp.as_mut_ptr(),
                            cols as isize,
                        )
                    }
                    for j in 0..nb {
                        for co in 0..cout_g {
                            let dst = (j0 + j) * out_img + (grp * cout_g + co) * p;
                            chunk[dst..dst + p]
                                .copy_from_slice(&tmp[co * cols + j * p..co * cols + (j + 1) * p]);
                        }
                    }
                }
            }
            if let Some(bias) = bias {
                for yi in chunk.chunks_mut(out_img) {
                    for (plane, &b) in yi.chunks_mut(p).zip(bias) {
                        for v in plane {
                            *v += b;
                        }
                    }
                }
            }
        });
    y
}

/// Gradient of the input: `dx = conv_transpose(dy, w)`, contiguous `[N, C_in, H, W]`.
pub fn conv2d_backward_input<T: Gemm>(dy: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    conv2d_backward_input_with(dy, w, g, false)
}

/// Rounds every value to the nearest bf16 (ties to even), kept in `T`.
fn round_to_bf16<T: Float>(v: &mut [T]) {
    for x in v {
        *x = T::c(crate::dtype::bf16_from_f64(x.to_f64()).to_f64());
    }
}

/// [`conv2d_backward_input`]; with `bf16_cols`, the column gradient `Wᵀ · dy` is rounded to
/// bf16 before its taps are summed (in `T`) into `dx`, as the GPU convolution stores it at bf16
/// matmul precision (a 1x1 convolution's single tap included).
pub fn conv2d_backward_input_with<T: Gemm>(
    dy: &[T],
    w: &[T],
    g: &ConvGeom,
    bf16_cols: bool,
) -> Vec<T> {
    let (out_img, in_img) = (g.out_image(), g.in_image());
    let mut dx = vec![T::ZERO; g.n * in_img];
    if dx.is_empty() || out_img == 0 {
        return dx;
    }
    let (k, p, cin_g, cout_g) = (g.col_rows(), g.out_plane(), g.cin_g(), g.cout_g());
    let xg_len = cin_g * g.h * g.w;
    let per = images_per_task(g.n);
    let bsz = if g.is_pointwise() {
        1
    } else {
        images_per_block(g, per).max(1)
    };
    let (bf16, _off) = super::gemm::take_bf16_products();
    dx.par_chunks_mut(per * in_img)
        .enumerate()
        .for_each(|(t, chunk)| {
            let _bf16 = super::gemm::Bf16Scope::enter(bf16);
            let mut dcol = if g.is_pointwise() {
                Vec::new()
            } else {
                vec![T::ZERO; k * p * bsz]
            };
            let mut dyb = vec![T::ZERO; cout_g * p * bsz];
            let imgs = chunk.len() / in_img;
            for j0 in (0..imgs).step_by(bsz) {
                let nb = bsz.min(imgs - j0);
                let cols = nb * p;
                for grp in 0..g.groups {
                    let wg = &w[grp * cout_g * k..(grp + 1) * cout_g * k];
                    gather_dy_block(dy, g, t * per + j0, nb, grp, &mut dyb);
                    if g.is_pointwise() {
                        let dxg = &mut chunk
                            [j0 * in_img + grp * xg_len..j0 * in_img + (grp + 1) * xg_len];
                        // SAFETY: w_g^T is [k, cout_g] (strides 1, k), dyb is [cout_g, p], dxg is
                        // [k, p] (k = cin_g, p = H*W when pointwise); distinct.
                        unsafe {
                            T::gemm(
                                k,
                                cout_g,
                                p,
                                wg.as_ptr(),
                                1,
                                k as isize,
                                dyb.as_ptr(),
                                p as isize,
                                1,
                                dxg.as_mut_ptr(),
                                p as isize,
                            )
                        }
                        if bf16_cols {
                            round_to_bf16(dxg);
                        }
                        continue;
                    }
                    // SAFETY: w_g^T is [k, cout_g], dyb is [cout_g, cols], dcol is [k, cols]; distinct.
                    unsafe {
                        T::gemm(
                            k,
                            cout_g,
                            cols,
                            wg.as_ptr(),
                            1,
                            k as isize,
                            dyb.as_ptr(),
                            cols as isize,
                            1,
                            dcol.as_mut_ptr(),
                            cols as isize,
                        )
                    }
                    if bf16_cols {
                        round_to_bf16(&mut dcol[..k * cols]);
                    }
                    for j in 0..nb {
                        let dxg = &mut chunk[(j0 + j) * in_img + grp * xg_len
                            ..(j0 + j) * in_img + (grp + 1) * xg_len];
                        col2im_add(&dcol[j * p..], g, dxg, cols);
                    }
                }
            }
        });
    dx
}

/// Gradient of the weight: `dw = sum over images of dy · col^T`, contiguous
/// `[C_out, C_in/groups, kh, kw]`.
pub fn conv2d_backward_weight<T: Gemm>(x: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    let in_img = g.in_image();
    let (k, p, cin_g, cout_g) = (g.col_rows(), g.out_plane(), g.cin_g(), g.cout_g());
    let wn = g.c_out * k;
    if g.n == 0 || wn == 0 || p == 0 {
        return vec![T::ZERO; wn];
    }
    let xg_len = cin_g * g.h * g.w;
    let per = images_per_task(g.n);
    let bsz = if g.is_pointwise() {
        1
    } else {
        images_per_block(g, per).max(1)
    };
    let (bf16, _off) = super::gemm::take_bf16_products();
    let partials: Vec<Vec<T>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let _bf16 = super::gemm::Bf16Scope::enter(bf16);
            let mut dw = vec![T::ZERO; wn];
            let mut col = if g.is_pointwise() {
                Vec::new()
            } else {
                vec![T::ZERO; k * p * bsz]
            };
            let mut dyb = vec![T::ZERO; cout_g * p * bsz];
            let (n_lo, n_hi) = (t * per, ((t + 1) * per).min(g.n));
            for n0 in (n_lo..n_hi).step_by(bsz) {
                let nb = bsz.min(n_hi - n0);
                let cols = nb * p;
                for grp in 0..g.groups {
                    let b = if g.is_pointwise() {
                        x[n0 * in_img + grp * xg_len..].as_ptr()
                    } else {
                        for j in 0..nb {
                            let xg = &x[(n0 + j) * in_img + grp * xg_len
                                ..(n0 + j) * in_img + (grp + 1) * xg_len];
                            im2col(xg, g, &mut col[j * p..], cols);
                        }
                        col.as_ptr()
                    };
                    gather_dy_block(dy, g, n0, nb, grp, &mut dyb);
                    let dwg = &mut dw[grp * cout_g * k..(grp + 1) * cout_g * k];
                    // SAFETY: dyb is [cout_g, cols], the column block transposed is [cols, k]
                    // (strides 1, cols), dwg is [cout_g, k] in this task's own buffer.
                    unsafe {
                        T::gemm_into(
                            cout_g,
                            cols,
                            k,
                            dyb.as_ptr(),
                            cols as isize,
                            1,
                            b,
                            1,
                            cols as isize,
                            dwg.as_mut_ptr(),
                            k as isize,
                            Output::Accumulate,
                        )
                    }
                }
            }
            dw
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![T::ZERO; wn]);
    for part in parts {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    dw
}

/// Gradient of the bias: `db[c] = sum over n, oy, ox of dy[n, c, oy, ox]` for `dy` of shape
/// `[n, c, plane]`.
pub fn conv2d_backward_bias<T: Float>(dy: &[T], n: usize, c: usize, plane: usize) -> Vec<T> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut s = T::ZERO;
            for i in 0..n {
                s += super::lanes::lanes_sum(&dy[(i * c + ch) * plane..(i * c + ch + 1) * plane]);
            }
            s
        })
        .collect()
}
