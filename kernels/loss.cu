// loss.cu: fused softmax cross-entropy over rows of logits x[n, c] (contiguous), never storing
// the probabilities. CPU reference: `crate::cpu::cross_entropy`.
//
// `cross_entropy_fwd_<f32|f64>`: per row r, lse[r] = log sum_j exp(x[r, j]) and
// loss[r] = (1 - eps)(lse - x[r, t]) + eps (lse - mean_j x[r, j]) for target t = tg[r], or 0
// when tg[r] < 0 (an ignored row). One block of 256 threads per row, grid-stride over rows.
// `cross_entropy_bw_<f32|f64>`: dx[r, j] = g[0] * scale * (exp(x[r, j] - lse[r]) - eps / c
// - (1 - eps) [j == t]), 0 on ignored rows; g is the loss's gradient, read on the device so
// the backward pass does not synchronise with the host. 1-D grid-stride over n * c.

template <typename T>
__device__ void ce_fwd(const T* x, const i64* tg, T* loss, T* lse, i64 n, i64 c, double eps) {
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
            i64 t = tg[r];
            T v = T(0);
            if (t >= 0) {
                v = l - row[t];
                if (eps > 0.0) v = T(1.0 - eps) * v + T(eps) * (l - total / T(c));
            }
            loss[r] = v;
        }
    }
}

template <typename T>
__device__ void ce_bw(const T* x, const i64* tg, const T* lse, const T* g, T* dx, i64 n, i64 c,
                      double scale, double eps) {
    const T s = g[0] * T(scale);
    FOR_EACH_INDEX(i, n * c) {
        i64 r = i / c, j = i % c, t = tg[r];
        T v = T(0);
        if (t >= 0) {
            v = (exp(x[i] - lse[r]) - T(eps / (double)c)) * s;
            if (j == t) v -= T(1.0 - eps) * s;
        }
        dx[i] = v;
    }
}

extern "C" __global__ void cross_entropy_fwd_f32(const float* x, const i64* tg, float* loss, float* lse, i64 n, i64 c, double eps) {
    ce_fwd<float>(x, tg, loss, lse, n, c, eps);
}
extern "C" __global__ void cross_entropy_fwd_f64(const double* x, const i64* tg, double* loss, double* lse, i64 n, i64 c, double eps) {
    ce_fwd<double>(x, tg, loss, lse, n, c, eps);
}
extern "C" __global__ void cross_entropy_bw_f32(const float* x, const i64* tg, const float* lse, const float* g, float* dx, i64 n, i64 c, double scale, double eps) {
    ce_bw<float>(x, tg, lse, g, dx, n, c, scale, eps);
}
extern "C" __global__ void cross_entropy_bw_f64(const double* x, const i64* tg, const double* lse, const double* g, double* dx, i64 n, i64 c, double scale, double eps) {
    ce_bw<double>(x, tg, lse, g, dx, n, c, scale, eps);
}
