// batch_norm.cu: batch normalisation in training mode (batch statistics), with an optional
// ReLU folded in, forward and backward. CPU reference: `crate::cpu::batch_norm`.
//
// Layout: x, y, g, dx contiguous [N, C, S] (S = the product of the spatial axes; [N, C] has
// S = 1); w, b [C] or null (1 and 0); per-channel buffers [C]. A channel's M = N * S values are
// element p = (n, s) at x[(n * C + c) * S + s].
// Statistics are two passes, as on the CPU: `bn_sum` adds each channel's values into sum[c],
// then `bn_m2` adds (x - sum[c] / M)² into m2[c] (both zeroed first); `bn_apply` normalises
// with mean = sum / M and the biased var = m2 / M, and writes them out. The sums split each
// channel into chunks of `chunk` values, one block of 256 threads per (chunk, channel) with a
// block fold and one atomic add, so the summation order is unspecified.
// Backward: `bn_grad_sums` adds sg[c] = Σ h and sgx[c] = Σ h xhat, where h = g (times
// [y > 0] with the ReLU); `bn_grad_input` writes dx = w rstd (h - sg / M - xhat sgx / M).
// Evaluation mode (inference: nothing needs a gradient): `bn_affine` writes
// y = x scale[c] + shift[c] (then the ReLU), with scale = w / sqrt(var + eps) and
// shift = b - mean scale made per channel beforehand, as the CPU's `apply` does.
// The elementwise kernels are 1-D grid-stride over N * C * S.

__device__ __forceinline__ i64 bn_at(i64 p, i64 c, i64 ch, i64 s) {
    return ((p / s) * c + ch) * s + p % s;
}

template <typename T>
__device__ void bn_sum(const T* x, T* sum, i64 c, i64 s, i64 m, i64 chunk) {
    const i64 ch = blockIdx.y, p0 = (i64)blockIdx.x * chunk, p1 = min(m, p0 + chunk);
    T acc = T(0);
    for (i64 p = p0 + threadIdx.x; p < p1; p += blockDim.x) acc += x[bn_at(p, c, ch, s)];
    acc = block_fold(acc, SumOp(), T(0));
    if (threadIdx.x == 0) atomicAdd(sum + ch, acc);
}

template <typename T>
__device__ void bn_m2(const T* x, const T* sum, T* m2, i64 c, i64 s, i64 m, i64 chunk) {
    const i64 ch = blockIdx.y, p0 = (i64)blockIdx.x * chunk, p1 = min(m, p0 + chunk);
    const T mean = sum[ch] / T(m);
    T acc = T(0);
    for (i64 p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
        const T d = x[bn_at(p, c, ch, s)] - mean;
        acc += d * d;
    }
    acc = block_fold(acc, SumOp(), T(0));
    if (threadIdx.x == 0) atomicAdd(m2 + ch, acc);
}

template <typename T>
__device__ void bn_apply(const T* x, const T* sum, const T* m2, const T* w, const T* b, T* y,
                         T* mean_out, T* var_out, i64 n, i64 c, i64 s, double eps, int relu) {
    const i64 m = n * s;
    FOR_EACH_INDEX(i, n * c * s) {
        const i64 ch = (i / s) % c;
        const T mean = sum[ch] / T(m), var = m2[ch] / T(m);
        T v = (x[i] - mean) * (T(1) / sqrt(var + T(eps)));
        if (w) v *= w[ch];
        if (b) v += b[ch];
        if (relu && !(v > T(0))) v = T(0);
        y[i] = v;
        if (i < c) {
            mean_out[i] = sum[i] / T(m);
            var_out[i] = m2[i] / T(m);
        }
    }
}

template <typename T>
__device__ void bn_grad_sums(const T* x, const T* y, const T* g, const T* mean, const T* var,
                             T* sg, T* sgx, i64 c, i64 s, i64 m, i64 chunk, double eps, int relu) {
    const i64 ch = blockIdx.y, p0 = (i64)blockIdx.x * chunk, p1 = min(m, p0 + chunk);
    const T mu = mean[ch], rs = T(1) / sqrt(var[ch] + T(eps));
    T a = T(0), ax = T(0);
    for (i64 p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
        const i64 i = bn_at(p, c, ch, s);
        const T h = (relu && !(y[i] > T(0))) ? T(0) : g[i];
        a += h;
        ax += h * (x[i] - mu) * rs;
    }
    a = block_fold(a, SumOp(), T(0));
    ax = block_fold(ax, SumOp(), T(0));
    if (threadIdx.x == 0) {
        atomicAdd(sg + ch, a);
        atomicAdd(sgx + ch, ax);
    }
}

template <typename T>
__device__ void bn_grad_input(const T* x, const T* y, const T* g, const T* mean, const T* var,
                              const T* w, const T* sg, const T* sgx, T* dx, i64 n, i64 c, i64 s,
                              double eps, int relu) {
    const T inv_m = T(1) / T(n * s);
    FOR_EACH_INDEX(i, n * c * s) {
        const i64 ch = (i / s) % c;
        const T rs = T(1) / sqrt(var[ch] + T(eps));
        const T k = w ? w[ch] * rs : rs;
        const T h = (relu && !(y[i] > T(0))) ? T(0) : g[i];
        const T xhat = (x[i] - mean[ch]) * rs;
        dx[i] = k * (h - sg[ch] * inv_m - xhat * sgx[ch] * inv_m);
    }
}

template <typename T>
__device__ void bn_affine(const T* x, const T* scale, const T* shift, T* y, i64 n, i64 c, i64 s,
                          int relu) {
    FOR_EACH_INDEX(i, n * c * s) {
        const i64 ch = (i / s) % c;
        T v = x[i] * scale[ch] + shift[ch];
        if (relu && !(v > T(0))) v = T(0);
        y[i] = v;
    }
}

#define BN_KERNELS(T, TAG)                                                                     \
    extern "C" __global__ void bn_sum_##TAG(const T* x, T* sum, i64 c, i64 s, i64 m,           \
                                            i64 chunk) {                                       \
        bn_sum<T>(x, sum, c, s, m, chunk);                                                     \
    }                                                                                          \
    extern "C" __global__ void bn_m2_##TAG(const T* x, const T* sum, T* m2, i64 c, i64 s,      \
                                           i64 m, i64 chunk) {                                 \
        bn_m2<T>(x, sum, m2, c, s, m, chunk);                                                  \
    }                                                                                          \
    extern "C" __global__ void bn_apply_##TAG(const T* x, const T* sum, const T* m2,           \
                                              const T* w, const T* b, T* y, T* mean_out,       \
                                              T* var_out, i64 n, i64 c, i64 s, double eps,     \
                                              int relu) {                                      \
        bn_apply<T>(x, sum, m2, w, b, y, mean_out, var_out, n, c, s, eps, relu);               \
    }                                                                                          \
    extern "C" __global__ void bn_grad_sums_##TAG(const T* x, const T* y, const T* g,          \
                                                  const T* mean, const T* var, T* sg, T* sgx,  \
                                                  i64 c, i64 s, i64 m, i64 chunk, double eps,  \
                                                  int relu) {                                  \
        bn_grad_sums<T>(x, y, g, mean, var, sg, sgx, c, s, m, chunk, eps, relu);               \
    }                                                                                          \
    extern "C" __global__ void bn_grad_input_##TAG(const T* x, const T* y, const T* g,         \
                                                   const T* mean, const T* var, const T* w,    \
                                                   const T* sg, const T* sgx, T* dx, i64 n,    \
                                                   i64 c, i64 s, double eps, int relu) {       \
        bn_grad_input<T>(x, y, g, mean, var, w, sg, sgx, dx, n, c, s, eps, relu);              \
    }                                                                                          \
    extern "C" __global__ void bn_affine_##TAG(const T* x, const T* scale, const T* shift, T* y, \
                                               i64 n, i64 c, i64 s, int relu) {                \
        bn_affine<T>(x, scale, shift, y, n, c, s, relu);                                       \
    }

BN_KERNELS(float, f32)
BN_KERNELS(double, f64)
