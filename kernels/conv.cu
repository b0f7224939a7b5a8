// conv.cu: 2-D convolution as im2col + one GEMM per channel group over the whole batch, on the
// GPU: im2col and its adjoint col2im, and the two layout changes around the GEMM. CPU
// reference: `crate::cpu::conv` (which computes the same convolution directly).
//
// Layout: x is [n, c, h, w] contiguous; L = oh * ow; cols is the matrix [c * kh * kw, n * L]
// (row (ci, ki, kj), column (img, oi, oj)), so per group g the GEMM
// W_g [c_out / G, c / G * kh * kw] . cols_g (the group's rows) gives the channel-major output
// Y [c_out, n * L] of the whole batch in one product whose long side is n * L (a per-image GEMM
// has N = L: 16 in a CIFAR ResNet's last stage), and the weight gradient is one product too,
// dW_g = dYT_g . cols_gᵀ, reducing over all n * L columns (no per-image partial products).
// Tap (ki, kj) of output (oi, oj) reads input row oi*sh - ph + ki*dh and column
// oj*sw - pw + kj*dw, zero outside the image.
//
// Kernels (one thread per output element; grid x over a row's columns, grid y over the rows,
// both grid-stride; blocks of 256 threads). Index arithmetic inside a row is 32-bit, with
// divisions by the shape done as a multiply-high and a shift (common.cuh's `FastDiv`, divisors
// fixed on the host), since a 64-bit division per element costs more than its memory traffic:
//   im2col_<f32|f64>: x to cols; im2col_bf16_f32: f32 x to bf16 cols (the GEMM operand at bf16
//     matmul precision, written once, with no f32 copy).
//   col2im_<f32|f64>: dcols [c * kh * kw, n * L] to dx [n, c, h, w]: one thread per dx element
//     summing, in tap order, every (tap, output) that read it (a gather: no atomics, fixed order);
//     col2im_bf16_f32 reads bf16 dcols (at bf16 matmul precision the GEMM stores them so: half
//     the bytes of the largest tensor of the backward) and sums in f32.
//   conv_out_<f32|f64>: Y [c_out, n * L] (+ bias [c_out], optional) to y [n, c_out, L].
//   conv_dy_t_<f32|f64>: dy [n, c_out, L] to dYT [c_out, n * L]; conv_dy_t_bf16_f32 writes it
//     in bf16 (the backward's GEMM operand at bf16 precision).

struct ConvShape {
    i64 n, c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, c_out;
    FastDiv div_l, div_ow, div_w, div_sh, div_sw;
};

#define CONV_ROWS(r, rows) for (i64 r = blockIdx.y; r < (rows); r += gridDim.y)
#define CONV_COLS(j, cols) \
    for (u32 j = blockIdx.x * blockDim.x + threadIdx.x; j < (u32)(cols); j += gridDim.x * blockDim.x)

template <typename T> struct Plain {
    __device__ __forceinline__ void operator()(T* dst, i64 i, T v) const { dst[i] = v; }
};
struct ToBf16 {
    __device__ __forceinline__ void operator()(u16* dst, i64 i, float v) const { dst[i] = bf16_bits_of(v); }
};

template <typename T, typename O, typename Store>
__device__ void im2col(const T* x, O* cols, ConvShape s, Store store) {
    const i64 L = s.oh * s.ow, NL = s.n * L;
    CONV_ROWS(row, s.c * s.kh * s.kw) {
        const i64 kj = row % s.kw, ki = (row / s.kw) % s.kh, ci = row / (s.kw * s.kh);
        const i64 r0 = ki * s.dh - s.ph, q0 = kj * s.dw - s.pw;
        CONV_COLS(j, NL) {
            const u32 img = fdiv(j, s.div_l), p = j - img * (u32)L;
            const u32 oi = fdiv(p, s.div_ow), oj = p - oi * (u32)s.ow;
            const i64 r = r0 + oi * s.sh, q = q0 + oj * s.sw;
            T v = T(0);
            if (r >= 0 && r < s.h && q >= 0 && q < s.w) v = x[((img * s.c + ci) * s.h + r) * s.w + q];
            store(cols, row * NL + j, v);
        }
    }
}

template <typename T> struct Same {
    __device__ __forceinline__ T operator()(T v) const { return v; }
};
struct FromBf16 {
    __device__ __forceinline__ float operator()(u16 v) const { return __uint_as_float((u32)v << 16); }
};

template <typename I, typename T, typename Load>
__device__ void col2im(const I* cols, T* x, ConvShape s, Load load) {
    const i64 L = s.oh * s.ow, NL = s.n * L, HW = s.h * s.w;
    CONV_ROWS(nc, s.n * s.c) {
        const i64 img = nc / s.c, ci = nc % s.c;
        const I* base = cols + ci * s.kh * s.kw * NL + img * L;
        CONV_COLS(pix, HW) {
            const u32 r = fdiv(pix, s.div_w), q = pix - r * (u32)s.w;
            T acc = T(0);
            for (i64 ki = 0; ki < s.kh; ++ki) {
                const i64 t = r + s.ph - ki * s.dh;  // oi * sh for the output that reads row r
                if (t < 0) break;                      // and for every later tap
                const u32 oi = fdiv((u32)t, s.div_sh);
                if ((i64)oi * s.sh != t || oi >= s.oh) continue;
                for (i64 kj = 0; kj < s.kw; ++kj) {
                    const i64 u = q + s.pw - kj * s.dw;
                    if (u < 0) break;
                    const u32 oj = fdiv((u32)u, s.div_sw);
                    if ((i64)oj * s.sw != u || oj >= s.ow) continue;
                    acc += load(base[(ki * s.kw + kj) * NL + oi * s.ow + oj]);
                }
            }
            x[nc * HW + pix] = acc;
        }
    }
}

template <typename T> __device__ void conv_out(const T* Y, const T* bias, T* y, ConvShape s) {
    const i64 L = s.oh * s.ow, NL = s.n * L;
    CONV_ROWS(co, s.c_out) {
        const T* src = Y + co * NL;
        CONV_COLS(j, NL) {
            const u32 img = fdiv(j, s.div_l), l = j - img * (u32)L;
            const T v = src[j];
            y[(img * s.c_out + co) * L + l] = bias ? v + bias[co] : v;
        }
    }
}

template <typename T, typename O, typename Store> __device__ void conv_dy_t(const T* dy, O* dyt, ConvShape s, Store store) {
    const i64 L = s.oh * s.ow, NL = s.n * L;
    CONV_ROWS(co, s.c_out) {
        CONV_COLS(j, NL) {
            const u32 img = fdiv(j, s.div_l), l = j - img * (u32)L;
            store(dyt, co * NL + j, dy[(img * s.c_out + co) * L + l]);
        }
    }
}

extern "C" __global__ void im2col_f32(const float* x, float* cols, ConvShape s) { im2col(x, cols, s, Plain<float>()); }
extern "C" __global__ void im2col_f64(const double* x, double* cols, ConvShape s) { im2col(x, cols, s, Plain<double>()); }
extern "C" __global__ void im2col_bf16_f32(const float* x, u16* cols, ConvShape s) { im2col(x, cols, s, ToBf16()); }
extern "C" __global__ void col2im_f32(const float* cols, float* x, ConvShape s) { col2im(cols, x, s, Same<float>()); }
extern "C" __global__ void col2im_f64(const double* cols, double* x, ConvShape s) { col2im(cols, x, s, Same<double>()); }
extern "C" __global__ void col2im_bf16_f32(const u16* cols, float* x, ConvShape s) { col2im(cols, x, s, FromBf16()); }
extern "C" __global__ void conv_out_f32(const float* Y, const float* b, float* y, ConvShape s) { conv_out<float>(Y, b, y, s); }
extern "C" __global__ void conv_out_f64(const double* Y, const double* b, double* y, ConvShape s) { conv_out<double>(Y, b, y, s); }
extern "C" __global__ void conv_dy_t_f32(const float* dy, float* dyt, ConvShape s) { conv_dy_t(dy, dyt, s, Plain<float>()); }
extern "C" __global__ void conv_dy_t_f64(const double* dy, double* dyt, ConvShape s) { conv_dy_t(dy, dyt, s, Plain<double>()); }
extern "C" __global__ void conv_dy_t_bf16_f32(const float* dy, u16* dyt, ConvShape s) { conv_dy_t(dy, dyt, s, ToBf16()); }
