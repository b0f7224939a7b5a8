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
// with the host. 1-D grid-stride over n * c.

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

template <typename T>
__device__ void ce_bw(const T* x, const i64* tg, const T* lse, const T* g, T* dx, i64 n, i64 c,
                      double scale, double eps, int has_ignore, i64 ignore) {
    const T s = g[0] * T(scale);
    FOR_EACH_INDEX(i, n * c) {
        const i64 r = i / c, j = i % c, t = ce_class(tg[r], c, has_ignore, ignore);
        T v = T(0);
        if (t >= 0) {
            v = (exp(x[i] - lse[r]) - T(eps / (double)c)) * s;
            if (j == t) v -= T(1.0 - eps) * s;
        } else if (t == -2) {
            v = (T)__longlong_as_double(0x7ff8000000000000LL);
        }
        dx[i] = v;
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
        ce_bw<T>(x, tg, lse, g, dx, n, c, scale, eps, has_ignore, ignore);                       \
    }

CE_KERNELS(float, f32)
CE_KERNELS(double, f64)
