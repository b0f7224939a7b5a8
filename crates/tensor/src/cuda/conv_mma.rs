//! Launches of `kernels/conv_mma.cu`: the convolution as implicit GEMM on the tensor cores (bf16
//! operands gathered from `x` and `dy` as tiles load, the weight packed as bf16 rows first; f32
//! accumulation), for f32 tensors at bf16 matmul precision with one group. See
//! [`GpuConv`](crate::ops::fusion::GpuConv) for when it runs instead of im2col + cuBLAS.

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

use super::fastdiv::FastDiv;
use super::launch::{grid_for, opt_ptr};
use super::CudaStorage;
use crate::cpu::conv::ConvGeom;
use crate::error::Result;
use crate::DType;

/// The block tile's columns and reduction depth (`CM_BN`, `CM_BK` in the kernel file).
const TILE_N: usize = 128;
const TILE_K: usize = 32;

/// Mirrors `struct ConvMmaShape` in `kernels/conv_mma.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ConvMmaShape {
    n: i32,
    c: i32,
    h: i32,
    w: i32,
    kh: i32,
    kw: i32,
    oh: i32,
    ow: i32,
    sh: i32,
    sw: i32,
    ph: i32,
    pw: i32,
    dh: i32,
    dw: i32,
    c_out: i32,
    tiles_per_slice: i32,
    lda: i32,
    div_khkw: FastDiv,
    div_kw: FastDiv,
    div_l: FastDiv,
    div_ow: FastDiv,
}
// SAFETY: plain old data laid out as the CUDA struct.
unsafe impl DeviceRepr for ConvMmaShape {}

/// The largest kernel side the kernels take: their validity masks hold 15 rows and 15 columns.
const MAX_SIDE: usize = 15;

/// Whether the kernels cover geometry `g`: one group, kernel sides of at most 15, and 32-bit
/// index arithmetic enough: every tensor (the packed weights included) below 2^30 elements
/// (offsets, with a window's corner up to a padded row before its image, stay in range) and
/// every row or column extent below 2^28. Past it the convolution runs as im2col + cuBLAS.
pub fn fits(g: &ConvGeom) -> bool {
    let tensors = [
        g.n * g.c_in * g.h * g.w,
        g.n * g.c_out * g.oh * g.ow,
        g.c_out * packed_len(g),
        g.stride.0 * g.stride.1 * g.c_in * packed_t_len(g),
    ];
    let extents = [
        g.h + g.padding.0 + g.kh * g.dilation.0,
        g.w + g.padding.1 + g.kw * g.dilation.1,
        g.oh * g.stride.0,
        g.ow * g.stride.1,
    ];
    g.groups == 1
        && g.kh <= MAX_SIDE
        && g.kw <= MAX_SIDE
        && tensors.iter().all(|&s| s < 1 << 30)
        && extents.iter().all(|&s| s < 1 << 28)
}

/// The row length of the forward's packed weight: `c_in·kh·kw` rounded up to a multiple of 8,
/// so that every row starts 16-byte aligned.
fn packed_len(g: &ConvGeom) -> usize {
    (g.c_in * g.kh * g.kw).next_multiple_of(8)
}

/// The most taps of one axis that reach the inputs of one stride phase: those `k < side` with
/// `k·dilation ≡ r (mod stride)`, at the phase `r` with the most.
fn phase_taps(side: usize, stride: usize, dilation: usize) -> usize {
    (0..stride.max(1))
        .map(|r| {
            (0..side)
                .filter(|k| k * dilation % stride.max(1) == r)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The row length of the input gradient's packed weight: `c_out` times the most taps any stride
/// phase has, rounded up to a multiple of 8.
fn packed_t_len(g: &ConvGeom) -> usize {
    let taps =
        phase_taps(g.kh, g.stride.0, g.dilation.0) * phase_taps(g.kw, g.stride.1, g.dilation.1);
    (g.c_out * taps).next_multiple_of(8)
}

fn shape(g: &ConvGeom, tiles_per_slice: usize, lda: usize) -> ConvMmaShape {
    let i = |v: usize| v as i32;
    let d = |v: usize| FastDiv::new(v as u32);
    ConvMmaShape {
        n: i(g.n),
        c: i(g.c_in),
        h: i(g.h),
        w: i(g.w),
        kh: i(g.kh),
        kw: i(g.kw),
        oh: i(g.oh),
        ow: i(g.ow),
        sh: i(g.stride.0),
        sw: i(g.stride.1),
        ph: i(g.padding.0),
        pw: i(g.padding.1),
        dh: i(g.dilation.0),
        dw: i(g.dilation.1),
        c_out: i(g.c_out),
        tiles_per_slice: i(tiles_per_slice.min(i32::MAX as usize)),
        lda: i(lda),
        div_khkw: d(g.kh * g.kw),
        div_kw: d(g.kw),
        div_l: d(g.oh * g.ow),
        div_ow: d(g.ow),
    }
}

/// The block rows for `m` product rows: 64 (4 warps) up to 64 rows, so that 64-channel layers
/// fill their tiles, else 128 (8 warps).
fn block_rows(m: usize) -> usize {
    if m <= 64 {
        64
    } else {
        128
    }
}

/// Launches `conv_mma_<which>_<BM>` over an `m x n` product cut into `slices` along its
/// reduction, with pointer arguments `ptrs` then the shape.
fn launch(
    src: &CudaStorage,
    which: &str,
    ptrs: &[u64],
    g: &ConvGeom,
    (m, n, slices, tiles_per_slice, lda): (usize, usize, usize, usize, usize),
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let bm = block_rows(m);
    let kernel = format!("conv_mma_{which}_{bm}");
    let b = &src.backend;
    let f = b.function("conv_mma", &kernel)?;
    let s = shape(g, tiles_per_slice, lda);
    let mut l = b.stream().launch_builder(&f);
    for p in ptrs {
        l.arg(p);
    }
    l.arg(&s);
    let cfg = LaunchConfig {
        grid_dim: (
            n.div_ceil(TILE_N) as u32,
            m.div_ceil(bm) as u32,
            slices as u32,
        ),
        block_dim: (2 * bm as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: every buffer is sized from the same geometry by the callers; `fits` bounds the
    // kernels' 32-bit offsets.
    unsafe { l.launch(cfg) }.map_err(|e| b.err(&kernel, e))?;
    Ok(())
}

/// The reduction tiles of a product over `k` terms.
fn tiles(k: usize) -> usize {
    k.div_ceil(TILE_K).max(1)
}

/// Launches pack kernel `which` from dense f32 weight `w` into a new bf16 buffer of
/// `phases` grid layers of `rows` rows of `lda` elements.
fn pack(
    w: &CudaStorage,
    g: &ConvGeom,
    which: &str,
    (phases, rows, lda): (usize, usize, usize),
) -> Result<CudaStorage> {
    let b = &w.backend;
    let a = CudaStorage::alloc(b, DType::BF16, phases * rows * lda)?;
    let f = b.function("conv_mma", which)?;
    let s = shape(g, 0, lda);
    let mut cfg = grid_for(rows * lda);
    cfg.grid_dim.1 = phases as u32;
    let (wp, ap) = (w.ptr(), a.ptr());
    let mut l = b.stream().launch_builder(&f);
    l.arg(&wp).arg(&ap).arg(&s);
    // SAFETY: `w` holds the dense weight of `g`, `a` the `phases·rows·lda` elements written.
    unsafe { l.launch(cfg) }.map_err(|e| b.err(which, e))?;
    Ok(a)
}

/// The forward's operand: dense f32 weight `w` `[c_out, c_in, kh, kw]` as bf16 rows of
/// `c_in·kh·kw` rounded up to a multiple of 8 (zeros after).
pub fn pack_weight(w: &CudaStorage, g: &ConvGeom) -> Result<CudaStorage> {
    pack(w, g, "conv_mma_pack_w", (1, g.c_out, packed_len(g)))
}

/// The input gradient's operand: dense f32 weight `w` rearranged per stride phase (`sh·sw` of
/// them, each `[c_in, c_out·taps]` over the taps that reach the phase's inputs) as bf16.
pub fn pack_weight_t(w: &CudaStorage, g: &ConvGeom) -> Result<CudaStorage> {
    let phases = g.stride.0 * g.stride.1;
    pack(w, g, "conv_mma_pack_wt", (phases, g.c_in, packed_t_len(g)))
}

/// `y [n, c_out, oh, ow]` (f32) of dense f32 `x` `[n, c_in, h, w]`, the weight packed by
/// [`pack_weight`] and f32 `bias` `[c_out]` when given.
pub fn forward(
    x: &CudaStorage,
    w_packed: &CudaStorage,
    bias: Option<&CudaStorage>,
    g: &ConvGeom,
) -> Result<CudaStorage> {
    let y = CudaStorage::alloc(&x.backend, DType::F32, g.n * g.c_out * g.oh * g.ow)?;
    let k = g.c_in * g.kh * g.kw;
    let ptrs = [x.ptr(), w_packed.ptr(), opt_ptr(bias), y.ptr()];
    let n = g.n * g.oh * g.ow;
    launch(x, "fwd", &ptrs, g, (g.c_out, n, 1, tiles(k), packed_len(g)))?;
    Ok(y)
}

/// The input gradient `dx [n, c_in, h, w]` (f32) of dense f32 `dy` `[n, c_out, oh, ow]` and the
/// weight packed by [`pack_weight_t`]: one grid layer per stride phase (`sh·sw` of them), each
/// over at most `n·ceil(h / sh)·ceil(w / sw)` inputs.
pub fn input_grad(dy: &CudaStorage, w_packed: &CudaStorage, g: &ConvGeom) -> Result<CudaStorage> {
    let dx = CudaStorage::alloc(&dy.backend, DType::F32, g.n * g.c_in * g.h * g.w)?;
    let k = g.c_out * g.kh * g.kw;
    let ptrs = [dy.ptr(), w_packed.ptr(), dx.ptr()];
    let (sh, sw) = g.stride;
    let cols = g.n * g.h.div_ceil(sh) * g.w.div_ceil(sw);
    launch(
        dy,
        "dgrad",
        &ptrs,
        g,
        (g.c_in, cols, sh * sw, tiles(k), packed_t_len(g)),
    )?;
    Ok(dx)
}

/// The weight gradient's partial products `[slices, c_out, c_in·kh·kw]` (f32; their sum over
/// the first axis is the gradient) of dense f32 `dy` and `x`: the reduction over the `n·oh·ow`
/// positions cut into about `slices` runs of whole tiles (fewer when it is short), so that a
/// small output still fills the GPU. Returns the partials and their count.
pub fn weight_grad_partials(
    dy: &CudaStorage,
    x: &CudaStorage,
    g: &ConvGeom,
    slices: usize,
) -> Result<(CudaStorage, usize)> {
    let k = g.c_in * g.kh * g.kw;
    let t = tiles(g.n * g.oh * g.ow);
    let per = t.div_ceil(slices.clamp(1, t));
    let s = t.div_ceil(per);
    let part = CudaStorage::alloc(&dy.backend, DType::F32, s * g.c_out * k)?;
    let ptrs = [dy.ptr(), x.ptr(), part.ptr()];
    launch(dy, "wgrad", &ptrs, g, (g.c_out, k, s, per, 0))?;
    Ok((part, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometries_past_32_bit_offsets_or_with_groups_are_left_to_im2col() {
        let g = ConvGeom {
            n: 1024,
            c_in: 64,
            h: 32,
            w: 32,
            c_out: 64,
            kh: 3,
            kw: 3,
            oh: 32,
            ow: 32,
            stride: (1, 1),
            padding: (1, 1),
            dilation: (1, 1),
            groups: 1,
        };
        // ResNet-18's first stage at 1,024 views: 67M elements a tensor.
        assert!(fits(&g));
        assert!(!fits(&ConvGeom { groups: 2, ..g }));
        assert!(!fits(&ConvGeom { n: 16_384, ..g }));
        assert!(fits(&ConvGeom {
            kh: 15,
            kw: 15,
            ..g
        }));
        assert!(!fits(&ConvGeom { kw: 16, ..g }));
        // 3x3 at stride 2: rows 0 and 2 meet phase 0, row 1 phase 1; at dilation 2 all three
        // meet phase 0.
        assert_eq!(
            (
                phase_taps(3, 1, 1),
                phase_taps(3, 2, 1),
                phase_taps(3, 2, 2)
            ),
            (3, 2, 3)
        );
        assert_eq!(phase_taps(5, 3, 1), 2);
        assert_eq!(packed_len(&ConvGeom { c_in: 3, ..g }), 32);
        assert_eq!(
            packed_t_len(&ConvGeom {
                c_out: 5,
                stride: (2, 2),
                ..g
            }),
            24
        );
        assert_eq!(
            (block_rows(32), block_rows(64), block_rows(65)),
            (64, 64, 128)
        );
        assert_eq!((tiles(0), tiles(32), tiles(33)), (1, 1, 2));
    }
}
