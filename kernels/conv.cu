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
// Kernels (a thread per run of 4 consecutive output elements, im2col's per 4 runs, col2im's
// rows of several planes; grid x over a row's columns, grid y over the rows, both grid-stride;
// blocks of 256 threads). Index arithmetic inside a row is 32-bit, with
// divisions by the shape done as a multiply-high and a shift (common.cuh's `FastDiv`, divisors
// fixed on the host), since a 64-bit division per element costs more than its memory traffic:
//   im2col_<f32|f64>: x to cols; im2col_bf16_f32: f32 x to bf16 cols (the GEMM operand at bf16
//     matmul precision, written once, with no f32 copy). A thread writes runs of 4 columns of
//     a row (one vector store each where n * L is a multiple of 4), 4 runs a thread: on an
//     H200 (2026-12-04, ncu) the one-column threads kept the SMs 79% busy and DRAM 23%, bound
//     by instructions, not bytes; one run a thread, its row setup still cost more than the run.
//   col2im_<f32|f64>: dcols [c * kh * kw, n * L] to dx [n, c, h, w]: each dx element the sum,
//     in tap order, of every (tap, output) that read it (a gather: no atomics, fixed order;
//     3 x 3 kernels with the tap loops unrolled, so that a thread's loads are in flight at once).
//     A thread takes a run of 4 consecutive dx elements (one f32 vector store), a row of the
//     launch `planes` whole planes (a multiple of 4, at least 8,192 elements: a plane of a
//     ResNet's last stage is 49, which as a row of its own left 80% of a block idle);
//     col2im_bf16_f32 reads bf16 dcols (at bf16 matmul precision the GEMM stores them so: half
//     the bytes of the largest tensor of the backward) and sums in f32.
//   conv_out_<f32|f64>: Y [c_out, n * L] (+ bias [c_out], optional) to y [n, c_out, L].
//   conv_dy_t_<f32|f64>: dy [n, c_out, L] to dYT [c_out, n * L]; conv_dy_t_bf16_f32 writes it
//     in bf16 (the backward's GEMM operand at bf16 precision).

// `planes`: the dx planes ([h, w] of one image and channel) a row of col2im's launch covers.
struct ConvShape {
    i64 n, c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, c_out, planes;
    FastDiv div_l, div_ow, div_w, div_sh, div_sw, div_hw, div_c;
};

#define CONV_ROWS(r, rows) for (i64 r = blockIdx.y; r < (rows); r += gridDim.y)
#define CONV_COLS(j, cols) \
    for (u32 j = blockIdx.x * blockDim.x + threadIdx.x; j < (u32)(cols); j += gridDim.x * blockDim.x)

// Stores of a thread's run of up to EW_RUN (4) columns (common.cuh's runs): one vector store
// when the run is whole and 4-aligned (n * L a multiple of 4), else one store per column; in
// the operand's dtype, or as bf16 from f32.
struct Plain {
    template <typename T>
    __device__ __forceinline__ void operator()(T* dst, i64 i, const EwRun<T>& r, int cnt, bool vec) const {
        ew_store(dst + i, r, cnt, vec);
    }
};
struct ToBf16 {
    __device__ __forceinline__ void operator()(u16* dst, i64 i, const EwRun<float>& r, int cnt, bool vec) const {
        if (vec && cnt == EW_RUN) {
            *reinterpret_cast<uint2*>(dst + i) = make_uint2(mma_pack(r.v[0], r.v[1]), mma_pack(r.v[2], r.v[3]));
        } else {
#pragma unroll
            for (int t = 0; t < EW_RUN; ++t)
                if (t < cnt) dst[i + t] = (u16)mma_bf16_bits(r.v[t]);
        }
    }
};

// Each thread fills runs of EW_RUN consecutive columns of one row (several runs, grid-stride,
// so that the row's setup is paid once a thread): one pair of divisions for a run's first
// column; a run inside one output row (the common case) finds its input row once and reads
// EW_RUN taps along it, any other run steps the output position along (oj, oi, img). Every
// load of a run is issued before its store, so four are in flight per thread. Offsets inside
// an image are 32-bit (h * w < 2^31, checked on the host).
template <typename T, typename O, typename Store>
__device__ void im2col(const T* x, O* cols, ConvShape s, Store store) {
    const i64 L = s.oh * s.ow, NL = s.n * L, CHW = s.c * s.h * s.w;
    const u32 runs = (u32)((NL + EW_RUN - 1) / EW_RUN);
    const bool vec = NL % EW_RUN == 0;
    const int h = (int)s.h, w = (int)s.w, ow = (int)s.ow, oh = (int)s.oh, sh = (int)s.sh, sw = (int)s.sw;
    const u32 kw = (u32)s.kw, kk = (u32)(s.kh * s.kw);
    CONV_ROWS(row, s.c * s.kh * s.kw) {
        // 32-bit divisions (c * kh * kw < 2^31, checked on the host): a 64-bit one is a call.
        const u32 ci = (u32)row / kk, tap = (u32)row - ci * kk, ki = tap / kw, kj = tap - ki * kw;
        const int r0 = (int)ki * (int)s.dh - (int)s.ph, q0 = (int)kj * (int)s.dw - (int)s.pw;
        O* dst = cols + row * NL;
        const T* xc = x + (i64)ci * s.h * s.w;
        CONV_COLS(t, runs) {
            const u32 j = t * EW_RUN;
            const int cnt = (int)min((i64)EW_RUN, NL - (i64)j);
            u32 img = fdiv(j, s.div_l);
            const u32 p = j - img * (u32)L;
            int oi = (int)fdiv(p, s.div_ow), oj = (int)(p - (u32)oi * (u32)ow);
            const T* xb = xc + (i64)img * CHW;
            EwRun<T> v;
            if (cnt == EW_RUN && oj + EW_RUN <= ow) {
                // One output row: one input row r, columns q, q + sw, ...
                const int r = r0 + oi * sh, q = q0 + oj * sw;
                const bool row_ok = (unsigned)r < (unsigned)h;
                const T* xr = xb + (row_ok ? r * w : 0);
#pragma unroll
                for (int u = 0; u < EW_RUN; ++u) {
                    const int qu = q + u * sw;
                    v.v[u] = row_ok && (unsigned)qu < (unsigned)w ? xr[qu] : T(0);
                }
            } else {
#pragma unroll
                for (int u = 0; u < EW_RUN; ++u) {
                    const int r = r0 + oi * sh, q = q0 + oj * sw;
                    v.v[u] = (u < cnt && (unsigned)r < (unsigned)h && (unsigned)q < (unsigned)w) ? xb[r * w + q] : T(0);
                    if (++oj == ow) {
                        oj = 0;
                        if (++oi == oh) {
                            oi = 0;
                            xb += CHW;
                        }
                    }
                }
            }
            store(dst, (i64)j, v, cnt, vec);
        }
    }
}

template <typename T> struct Same {
    __device__ __forceinline__ T operator()(T v) const { return v; }
};
struct FromBf16 {
    __device__ __forceinline__ float operator()(u16 v) const { return __uint_as_float((u32)v << 16); }
};

// KH, KW: the kernel's size when known at compile time (0: read from the shape). With both
// known the tap loops unroll, so a thread's loads are issued together rather than one after
// another; the 3 x 3 kernels of a ResNet take that path. UNIT: stride and dilation 1, where the
// output that tap (ki, kj) takes from (r, q) is (r + ph - ki, q + pw - kj), no division.
// A thread's run of EW_RUN elements starts with one division pair for its plane and
// position; the position then steps along (q, r, channel, image).
template <int KH, int KW, bool UNIT, typename I, typename T, typename Load>
__device__ void col2im_taps(const I* cols, T* x, ConvShape s, Load load) {
    const i64 L = s.oh * s.ow, NL = s.n * L, KK = s.kh * s.kw;
    // 32-bit row arithmetic (n * c < 2^31, checked on the host): a 64-bit division is a call.
    const u32 NC = (u32)(s.n * s.c), planes = (u32)s.planes;
    const u32 HW = (u32)(s.h * s.w), w = (u32)s.w, h = (u32)s.h, c = (u32)s.c;
    const int kh = KH ? KH : (int)s.kh, kw = KW ? KW : (int)s.kw;
    const u32 runs = (planes * HW + EW_RUN - 1) / EW_RUN;
    CONV_ROWS(row, (NC + planes - 1) / planes) {
        const u32 p0 = (u32)row * planes;
        const u32 span = min(planes, NC - p0) * HW;  // this row's elements
        const u32 img0 = fdiv(p0, s.div_c), ci0 = p0 - img0 * c;
        T* xr = x + (i64)p0 * HW;
        const bool vec = span % EW_RUN == 0;
        CONV_COLS(t, runs) {
            const u32 e = t * EW_RUN;
            if (e >= span) break;
            const int cnt = (int)min((u32)EW_RUN, span - e);
            const u32 lp = fdiv(e, s.div_hw), pix = e - lp * HW;
            u32 r = fdiv(pix, s.div_w), q = pix - r * w;
            const u32 cc = ci0 + lp, dimg = fdiv(cc, s.div_c);
            u32 ci = cc - dimg * c;
            i64 img = (i64)img0 + dimg;
            const I* base = cols + ci * KK * NL + img * L;
            if (UNIT && cnt == EW_RUN && q + EW_RUN <= w) {
                // A run inside one dx row: per tap one output row test and one address, the
                // run's EW_RUN outputs consecutive along it (each element still sums its taps
                // in tap order, as the general path does).
                EwRun<T> acc;
#pragma unroll
                for (int el = 0; el < EW_RUN; ++el) acc.v[el] = T(0);
#pragma unroll
                for (int ki = 0; ki < kh; ++ki) {
                    const int oi = (int)r + (int)s.ph - ki;
                    if ((unsigned)oi >= (unsigned)s.oh) continue;
#pragma unroll
                    for (int kj = 0; kj < kw; ++kj) {
                        const int oj = (int)q + (int)s.pw - kj;  // the run's first element's
                        const I* src = base + (i64)(ki * kw + kj) * NL + (i64)oi * s.ow + oj;
#pragma unroll
                        for (int el = 0; el < EW_RUN; ++el)
                            if ((unsigned)(oj + el) < (unsigned)s.ow) acc.v[el] += load(src[el]);
                    }
                }
                ew_store(xr + e, acc, cnt, vec);
                continue;
            }
            EwRun<T> acc;
#pragma unroll
            for (int el = 0; el < EW_RUN; ++el) {
                acc.v[el] = T(0);
                if (el < cnt) {
#pragma unroll
                    for (int ki = 0; ki < kh; ++ki) {
                        // oi * sh for the output that reads row r through tap ki
                        const i64 t = (i64)r + s.ph - ki * s.dh;
                        const u32 oi = UNIT ? (u32)t : fdiv((u32)max(t, (i64)0), s.div_sh);
                        const bool row_ok = UNIT ? (u64)t < (u64)s.oh : t >= 0 && (i64)oi * s.sh == t && oi < s.oh;
#pragma unroll
                        for (int kj = 0; kj < kw; ++kj) {
                            const i64 u = (i64)q + s.pw - kj * s.dw;
                            const u32 oj = UNIT ? (u32)u : fdiv((u32)max(u, (i64)0), s.div_sw);
                            const bool ok = UNIT ? (u64)u < (u64)s.ow : u >= 0 && (i64)oj * s.sw == u && oj < s.ow;
                            if (row_ok && ok) acc.v[el] += load(base[(ki * kw + kj) * NL + oi * s.ow + oj]);
                        }
                    }
                }
                if (++q == w) {
                    q = 0;
                    if (++r == h) {
                        r = 0;
                        if (++ci == c) {
                            ci = 0;
                            ++img;
                        }
                        base = cols + ci * KK * NL + img * L;
                    }
                }
            }
            ew_store(xr + e, acc, cnt, vec);
        }
    }
}

template <typename I, typename T, typename Load>
__device__ void col2im(const I* cols, T* x, ConvShape s, Load load) {
    const bool unit = s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1;
    if (s.kh == 3 && s.kw == 3 && unit) {
        col2im_taps<3, 3, true>(cols, x, s, load);
    } else if (s.kh == 3 && s.kw == 3) {
        col2im_taps<3, 3, false>(cols, x, s, load);
    } else {
        col2im_taps<0, 0, false>(cols, x, s, load);
    }
}

// conv_out and conv_dy_t move runs of EW_RUN columns per thread too (one division pair a
// run, the loads issued together), the image stepping along with the position in it.
template <typename T> __device__ void conv_out(const T* Y, const T* bias, T* y, ConvShape s) {
    const i64 L = s.oh * s.ow, NL = s.n * L;
    const u32 runs = (u32)((NL + EW_RUN - 1) / EW_RUN);
    const bool vec = NL % EW_RUN == 0;
    CONV_ROWS(co, s.c_out) {
        const T* src = Y + co * NL;
        const T b = bias ? bias[co] : T(0);
        CONV_COLS(t, runs) {
            const u32 j = t * EW_RUN;
            const int cnt = (int)min((i64)EW_RUN, NL - (i64)j);
            const EwRun<T> v = ew_load(src + j, cnt, vec);
            u32 img = fdiv(j, s.div_l), l = j - img * (u32)L;
#pragma unroll
            for (int u = 0; u < EW_RUN; ++u) {
                if (u < cnt) y[((i64)img * s.c_out + co) * L + l] = bias ? v.v[u] + b : v.v[u];
                if (++l == (u32)L) {
                    l = 0;
                    ++img;
                }
            }
        }
    }
}

template <typename T, typename O, typename Store> __device__ void conv_dy_t(const T* dy, O* dyt, ConvShape s, Store store) {
    const i64 L = s.oh * s.ow, NL = s.n * L;
    const u32 runs = (u32)((NL + EW_RUN - 1) / EW_RUN);
    const bool vec = NL % EW_RUN == 0;
    CONV_ROWS(co, s.c_out) {
        CONV_COLS(t, runs) {
            const u32 j = t * EW_RUN;
            const int cnt = (int)min((i64)EW_RUN, NL - (i64)j);
            u32 img = fdiv(j, s.div_l), l = j - img * (u32)L;
            EwRun<T> v;
#pragma unroll
            for (int u = 0; u < EW_RUN; ++u) {
                v.v[u] = u < cnt ? dy[((i64)img * s.c_out + co) * L + l] : T(0);
                if (++l == (u32)L) {
                    l = 0;
                    ++img;
                }
            }
            store(dyt, co * NL + j, v, cnt, vec);
        }
    }
}

extern "C" __global__ void im2col_f32(const float* x, float* cols, ConvShape s) { im2col(x, cols, s, Plain()); }
extern "C" __global__ void im2col_f64(const double* x, double* cols, ConvShape s) { im2col(x, cols, s, Plain()); }
extern "C" __global__ void im2col_bf16_f32(const float* x, u16* cols, ConvShape s) { im2col(x, cols, s, ToBf16()); }
extern "C" __global__ void col2im_f32(const float* cols, float* x, ConvShape s) { col2im(cols, x, s, Same<float>()); }
extern "C" __global__ void col2im_f64(const double* cols, double* x, ConvShape s) { col2im(cols, x, s, Same<double>()); }
extern "C" __global__ void col2im_bf16_f32(const u16* cols, float* x, ConvShape s) { col2im(cols, x, s, FromBf16()); }
extern "C" __global__ void conv_out_f32(const float* Y, const float* b, float* y, ConvShape s) { conv_out<float>(Y, b, y, s); }
extern "C" __global__ void conv_out_f64(const double* Y, const double* b, double* y, ConvShape s) { conv_out<double>(Y, b, y, s); }
extern "C" __global__ void conv_dy_t_f32(const float* dy, float* dyt, ConvShape s) { conv_dy_t(dy, dyt, s, Plain()); }
extern "C" __global__ void conv_dy_t_f64(const double* dy, double* dyt, ConvShape s) { conv_dy_t(dy, dyt, s, Plain()); }
extern "C" __global__ void conv_dy_t_bf16_f32(const float* dy, u16* dyt, ConvShape s) { conv_dy_t(dy, dyt, s, ToBf16()); }
