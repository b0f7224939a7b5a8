// loss.cu: fused softmax cross-entropy over rows of logits x[n, c] (contiguous), never storing
// the probabilities. CPU reference: `crate::cpu::cross_entropy`.
//
// Targets tg[n] are i64 class ids read on the device (never checked on the host, so the
// forward pass does not wait for them): a row whose target equals `ignore` (when `has_ignore`)
// is skipped (loss and gradient 0); a target outside [0, c) makes its row's loss and gradient
// NaN, which the trainer's non-finite check reports.
// `cross_entropy_fwd_<f32|f64>`: per row r, lse[r] = log sum_j exp(x[r, j]) and
// loss[r] = (1 - eps)(lse - x[r, t]) + eps (lse - mean_j x[r, j]) for target t = tg[r]. One
// block of 256 threads per row, grid-stride over rows.
// `cross_entropy_bw_<f32|f64>`: dx[r, j] = g[0] * scale * (exp(x[r, j] - lse[r]) - eps / c
// - (1 - eps) [j == t]); g is the loss's gradient (already divided by the counted rows for a
// mean over device targets), read on the device so the backward pass does not synchronise
// with the host. `cross_entropy_bw_f32_bf16` stores that f32 gradient rounded to bf16: the
// operand of the products of a fused linear head at bf16 precision (`linear_cross_entropy`),
// which then never writes it in f32. One warp per row (blocks of 32 x 8 threads, grid-stride over rows), its lanes
// striding over the row's columns: no per-element division to find the row (a 64-bit
// division per element cost more than the element's memory traffic at GPT-2's vocabulary).

// The class of a row: t in [0, c), -1 for an ignored row, -2 for a target out of range.
__device__ __forceinline__ i64 ce_class(i64 t, i64 c, int has_ignore, i64 ignore) {
    if (has_ignore && t == ignore) return -1;
    return (t >= 0 && t < c) ? t : -2;
}

template <typename T>
__device__ void ce_fwd(const T* x, const i64* tg, T* loss, T* lse, i64 n, i64 c, double eps,
                       int has_ignore, i64 ignore) {
    const T neg_inf = (T)(-__longlong_as_double(0x7ff0000000000000LL));
    for (i64 r = blockIdx.x; r < n; r += gridDim.x) {
        const T* row = x + r * c;
        T m = neg_inf, total = T(0);
        for (i64 j = threadIdx.x; j < c; j += blockDim.x) {
            m = MaxOp()(m, row[j]);
            total += row[j];
        }
        m = block_fold(m, MaxOp(), neg_inf);
        total = block_fold(total, SumOp(), T(0));
        if (m == neg_inf) m = T(0);
        T s = T(0);
        for (i64 j = threadIdx.x; j < c; j += blockDim.x) s += exp(row[j] - m);
        s = block_fold(s, SumOp(), T(0));
        if (threadIdx.x == 0) {
            T l = log(s) + m;
            lse[r] = l;
            const i64 t = ce_class(tg[r], c, has_ignore, ignore);
            T v = T(0);
            if (t >= 0) {
                v = l - row[t];
                if (eps > 0.0) v = T(1.0 - eps) * v + T(eps) * (l - total / T(c));
            } else if (t == -2) {
                v = (T)__longlong_as_double(0x7ff8000000000000LL);
            }
            loss[r] = v;
        }
    }
}

// The gradient as stored: T itself, or (for `cross_entropy_bw_f32_bf16`) rounded to bf16.
template <typename T> __device__ __forceinline__ T ce_store(T v, T*) { return v; }
__device__ __forceinline__ u16 ce_store(float v, u16*) { return bf16_bits_of(v); }

template <typename T, typename O>
__device__ void ce_bw(const T* x, const i64* tg, const T* lse, const T* g, O* dx, i64 n, i64 c,
                      double scale, double eps, int has_ignore, i64 ignore) {
    const T s = g[0] * T(scale);
    const T smooth = T(eps / (double)c), hit = T(1.0 - eps) * s;
    for (i64 r = (i64)blockIdx.x * blockDim.y + threadIdx.y; r < n; r += (i64)gridDim.x * blockDim.y) {
        const i64 t = ce_class(tg[r], c, has_ignore, ignore);
        const T l = lse[r];
        const T* xr = x + r * c;
        O* dr = dx + r * c;
        for (i64 j = threadIdx.x; j < c; j += blockDim.x) {
            T v = T(0);
            if (t >= 0) {
                v = (exp(xr[j] - l) - smooth) * s;
                if (j == t) v -= hit;
            } else if (t == -2) {
                v = (T)__longlong_as_double(0x7ff8000000000000LL);
            }
            dr[j] = ce_store(v, dr);
        }
    }
}

#define CE_KERNELS(T, TAG)                                                                     \
    extern "C" __global__ void cross_entropy_fwd_##TAG(const T* x, const i64* tg, T* loss,       \
                                                       T* lse, i64 n, i64 c, double eps,        \
                                                       int has_ignore, i64 ignore) {            \
        ce_fwd<T>(x, tg, loss, lse, n, c, eps, has_ignore, ignore);                              \
    }                                                                                            \
    extern "C" __global__ void cross_entropy_bw_##TAG(const T* x, const i64* tg, const T* lse,   \
                                                      const T* g, T* dx, i64 n, i64 c,           \
                                                      double scale, double eps, int has_ignore, \
                                                      i64 ignore) {                              \
        ce_bw<T, T>(x, tg, lse, g, dx, n, c, scale, eps, has_ignore, ignore);                    \
    }

CE_KERNELS(float, f32)
CE_KERNELS(double, f64)

extern "C" __global__ void cross_entropy_bw_f32_bf16(const float* x, const i64* tg,
                                                     const float* lse, const float* g, u16* dx,
                                                     i64 n, i64 c, double scale, double eps,
                                                     int has_ignore, i64 ignore) {
    ce_bw<float, u16>(x, tg, lse, g, dx, n, c, scale, eps, has_ignore, ignore);
}
