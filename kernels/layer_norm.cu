// layer_norm.cu: LayerNorm over the last axis, forward and backward, fused. CPU reference:
// `crate::cpu::layer_norm`.
//
// Layout: x, y, g, dx are contiguous [rows, len]; w and b are [len] or null (no affine part);
// mean and rstd are [rows] (saved by the forward for the backward). The `_f32_bf16` kernels
// are the f32 ones with y (forward) or g (backward) in bf16, as 16-bit patterns: a LayerNorm
// whose output is only read as a bf16 product operand writes that operand itself (and so reads
// its gradient in bf16, as the product stores it); everything else stays f32.
// `layer_norm_fwd_<f32|f64|f32_bf16>`: mean[r] = Σ_j x[r, j] / len, rstd[r] = 1 / sqrt(Σ_j (x - mean)² /
// len + eps) (two passes over the row, as on the CPU), y = (x - mean) rstd w + b. One block of
// 256 threads per row, grid-stride over rows.
// `layer_norm_bw_dx_<f32|f64|f32_bf16>`: with h = g w (or g) and xh = (x - mean) rstd,
// dx = rstd (h - mean_j h - xh mean_j (h xh)), plus `add` (x's layout; null for none): the
// gradient x already has from its other readers, which autograd would add in a pass of its
// own (a transformer block's residual stream). One block per row.
// `layer_norm_bw_wb_<f32|f64|f32_bf16>`: each chunk c of `rows_per_chunk` rows writes its sums
// part[0, c, j] = Σ_r g xh (the weight's gradient) and part[1, c, j] = Σ_r g (the bias's), rows
// in order; the Rust side sums the chunks in order (no atomics, no zeroed outputs:
// deterministic). Grid (column blocks of 256, row chunks).

// Element i of y or g: f32/f64 as they are, bf16 bits widened to f32 (stored rounded to
// nearest even).
__device__ __forceinline__ float ln_load(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ double ln_load(const double* p, i64 i) { return p[i]; }
__device__ __forceinline__ float ln_load(const u16* p, i64 i) { return bf16_value(p[i]); }
__device__ __forceinline__ void ln_store(float* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void ln_store(double* p, i64 i, double v) { p[i] = v; }
__device__ __forceinline__ void ln_store(u16* p, i64 i, float v) { p[i] = bf16_bits_of(v); }

template <typename T, typename Y>
__device__ void ln_fwd(const T* x, const T* w, const T* b, Y* y, T* mean, T* rstd, i64 rows,
                       i64 len, double eps) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = x + r * len;
        T s = T(0);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) s += row[j];
        const T m = block_fold(s, SumOp(), T(0)) / T(len);
        T q = T(0);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            const T d = row[j] - m;
            q += d * d;
        }
        const T rs = T(1) / sqrt(block_fold(q, SumOp(), T(0)) / T(len) + T(eps));
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            T v = (row[j] - m) * rs;
            if (w) v *= w[j];
            if (b) v += b[j];
            ln_store(y, r * len + j, v);
        }
        if (threadIdx.x == 0) {
            mean[r] = m;
            rstd[r] = rs;
        }
    }
}

// a + b rounded once, as autograd's separate add kernel rounds it: a plain `+` after the
// product that makes `v` may be contracted into one FMA, which rounds differently (an H200
// gave dx one ulp off the composition's, 2026-12-04).
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <typename T, typename G>
__device__ void ln_bw_dx(const T* x, const T* w, const G* g, const T* mean, const T* rstd, T* dx,
                         const T* add, i64 rows, i64 len) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * len;
        const G* gr = g + r * len;
        const T m = mean[r], rs = rstd[r];
        T sh = T(0), shx = T(0);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            const T gv = ln_load(gr, j);
            const T h = w ? gv * w[j] : gv;
            sh += h;
            shx += h * (xr[j] - m) * rs;
        }
        const T mh = block_fold(sh, SumOp(), T(0)) / T(len);
        const T mhx = block_fold(shx, SumOp(), T(0)) / T(len);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            const T gv = ln_load(gr, j);
            const T h = w ? gv * w[j] : gv;
            const T v = rs * (h - mh - (xr[j] - m) * rs * mhx);
            dx[r * len + j] = add ? add_rn(add[r * len + j], v) : v;
        }
    }
}

template <typename T, typename G>
__device__ void ln_bw_wb(const T* x, const G* g, const T* mean, const T* rstd, T* part,
                         i64 rows, i64 len, i64 rows_per_chunk) {
    const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= len) return;
    const i64 r0 = (i64)blockIdx.y * rows_per_chunk;
    const i64 r1 = min(rows, r0 + rows_per_chunk);
    T aw = T(0), ab = T(0);
    for (i64 r = r0; r < r1; ++r) {
        const T gv = ln_load(g, r * len + j);
        aw += gv * (x[r * len + j] - mean[r]) * rstd[r];
        ab += gv;
    }
    const i64 at = (i64)blockIdx.y * len + j;
    part[at] = aw;
    part[(i64)gridDim.y * len + at] = ab;
}

// T: the input, statistics, parameters and dx; Y: y and g (T, or u16 for bf16).
#define LN_KERNELS(T, Y, TAG)                                                                  \
    extern "C" __global__ void layer_norm_fwd_##TAG(const T* x, const T* w, const T* b, Y* y,  \
                                                    T* mean, T* rstd, i64 rows, i64 len,       \
                                                    double eps) {                              \
        ln_fwd<T, Y>(x, w, b, y, mean, rstd, rows, len, eps);                                  \
    }                                                                                          \
    extern "C" __global__ void layer_norm_bw_dx_##TAG(const T* x, const T* w, const Y* g,      \
                                                      const T* mean, const T* rstd, T* dx,     \
                                                      const T* add, i64 rows, i64 len) {       \
        ln_bw_dx<T, Y>(x, w, g, mean, rstd, dx, add, rows, len);                               \
    }                                                                                          \
    extern "C" __global__ void layer_norm_bw_wb_##TAG(const T* x, const Y* g, const T* mean,   \
                                                      const T* rstd, T* part, i64 rows,        \
                                                      i64 len, i64 rows_per_chunk) {           \
        ln_bw_wb<T, Y>(x, g, mean, rstd, part, rows, len, rows_per_chunk);                     \
    }

LN_KERNELS(float, float, f32)
LN_KERNELS(double, double, f64)
LN_KERNELS(float, u16, f32_bf16)
