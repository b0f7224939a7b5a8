// batch_norm.cu: batch normalisation in training mode (batch statistics), with an optional
// ReLU folded in, forward and backward. CPU reference: `crate::cpu::batch_norm`.
//
// Layout: x, y, g, dx contiguous [N, C, S] (S = the product of the spatial axes; [N, C] has
// S = 1); w, b [C] or null (1 and 0); per-channel buffers [C]. A channel's M = N * S values are
// element p = (n, s) at x[(n * C + c) * S + s]. `BnShape` carries N, C, S and, when
// N * C * S < 2^31 (`fast`), 32-bit index arithmetic with the divisions by S and C done by
// `FastDiv` (a 64-bit division per element would cost more than its memory traffic).
//
// Forward: `bn_sum` adds each channel's values into sum[c], then `bn_m2` adds
// (x - sum[c] / M)² into m2[c] (both zeroed first: two passes, as on the CPU); `bn_finish`
// (one thread per channel) writes mean = sum / M, the biased var = m2 / M, and, as the CPU
// makes them, scale = w / sqrt(var + eps) and shift = b - mean scale; `bn_affine` writes
// y = x scale[c] + shift[c] (then the ReLU), the CPU's `apply`. Evaluation mode (inference)
// runs `bn_affine` alone, on a scale and shift made from the running statistics.
// Backward: `bn_grad_sums` adds sg[c] = Σ h and sgx[c] = Σ h (x - mean), where h = g (times
// [y > 0] with the ReLU); `bn_grad_finish` (per channel, in f64 as the CPU) writes the bias's
// gradient db = sg, the weight's dw = Σ h xhat = sgx invstd, and dx's coefficients a = k,
// bx = -k invstd dw / M and d = -k db / M with k = w invstd; `bn_grad_input` writes
// dx = a h + bx (x - mean) + d.
// The sums split each channel into chunks of `chunk` values, one block of 256 threads per
// (chunk, channel) with a block fold and one atomic add, so the summation order is unspecified;
// grid y walks the channels (grid-stride: at most 65,535 blocks). The elementwise kernels are
// 1-D grid-stride over N * C * S; the per-channel ones one thread per channel.

struct BnShape {
    i64 n, c, s;
    FastDiv div_c, div_s;
    int fast;
};

// Channel of element i of [N, C, S].
__device__ __forceinline__ i64 bn_channel(i64 i, const BnShape& g) {
    if (g.fast) {
        const u32 q = fdiv((u32)i, g.div_s);
        return (i64)(q - fdiv(q, g.div_c) * (u32)g.c);
    }
    return (i / g.s) % g.c;
}

// Offset of value p (= n * S + s) of channel ch.
__device__ __forceinline__ i64 bn_at(i64 p, i64 ch, const BnShape& g) {
    if (g.fast) {
        const u32 n = fdiv((u32)p, g.div_s), s = (u32)p - n * (u32)g.s;
        return (i64)((n * (u32)g.c + (u32)ch) * (u32)g.s + s);
    }
    return ((p / g.s) * g.c + ch) * g.s + p % g.s;
}

#define BN_CHANNELS(ch, c) for (i64 ch = blockIdx.y; ch < (c); ch += gridDim.y)

template <typename T>
__device__ void bn_sum(const T* x, T* sum, BnShape g, i64 chunk) {
    const i64 m = g.n * g.s, p0 = (i64)blockIdx.x * chunk, p1 = min(m, p0 + chunk);
    BN_CHANNELS(ch, g.c) {
        T acc = T(0);
        for (i64 p = p0 + threadIdx.x; p < p1; p += blockDim.x) acc += x[bn_at(p, ch, g)];
        acc = block_fold(acc, SumOp(), T(0));
        if (threadIdx.x == 0) atomicAdd(sum + ch, acc);
    }
}

template <typename T>
__device__ void bn_m2(const T* x, const T* sum, T* m2, BnShape g, i64 chunk) {
    const i64 m = g.n * g.s, p0 = (i64)blockIdx.x * chunk, p1 = min(m, p0 + chunk);
    BN_CHANNELS(ch, g.c) {
        const T mean = sum[ch] / T(m);
        T acc = T(0);
        for (i64 p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
            const T d = x[bn_at(p, ch, g)] - mean;
            acc += d * d;
        }
        acc = block_fold(acc, SumOp(), T(0));
        if (threadIdx.x == 0) atomicAdd(m2 + ch, acc);
    }
}

template <typename T>
__device__ void bn_finish(const T* sum, const T* m2, const T* w, const T* b, T* mean, T* var,
                          T* scale, T* shift, i64 c, i64 m, double eps) {
    FOR_EACH_INDEX(ch, c) {
        const T mu = sum[ch] / T(m), v = m2[ch] / T(m);
        const T k = (w ? w[ch] : T(1)) / sqrt(v + T(eps));
        mean[ch] = mu;
        var[ch] = v;
        scale[ch] = k;
        shift[ch] = (b ? b[ch] : T(0)) - mu * k;
    }
}

template <typename T>
__device__ void bn_affine(const T* x, const T* scale, const T* shift, T* y, BnShape g, int relu) {
    FOR_EACH_INDEX(i, g.n * g.c * g.s) {
        const i64 ch = bn_channel(i, g);
        T v = x[i] * scale[ch] + shift[ch];
        if (relu && v < T(0)) v = T(0);
        y[i] = v;
    }
}

template <typename T>
__device__ void bn_grad_sums(const T* x, const T* y, const T* g, const T* mean, T* sg, T* sgx,
                             BnShape sh, i64 chunk, int relu) {
    const i64 m = sh.n * sh.s, p0 = (i64)blockIdx.x * chunk, p1 = min(m, p0 + chunk);
    BN_CHANNELS(ch, sh.c) {
        const T mu = mean[ch];
        T a = T(0), ax = T(0);
        for (i64 p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
            const i64 i = bn_at(p, ch, sh);
            const T h = (relu && !(y[i] > T(0))) ? T(0) : g[i];
            a += h;
            ax += h * (x[i] - mu);
        }
        a = block_fold(a, SumOp(), T(0));
        ax = block_fold(ax, SumOp(), T(0));
        if (threadIdx.x == 0) {
            atomicAdd(sg + ch, a);
            atomicAdd(sgx + ch, ax);
        }
    }
}

template <typename T>
__device__ void bn_grad_finish(const T* sg, const T* sgx, T* db, T* dw, const T* var, const T* w,
                               T* a, T* bx, T* d, i64 c, i64 m, double eps) {
    FOR_EACH_INDEX(ch, c) {
        const T is = T(1) / sqrt(var[ch] + T(eps));
        const T k = w ? w[ch] * is : is;
        const double kk = (double)k, isd = (double)is, md = (double)m;
        const double sgx_hat = (double)sgx[ch] * isd;
        db[ch] = sg[ch];
        dw[ch] = (T)sgx_hat;
        a[ch] = k;
        bx[ch] = (T)(-kk * isd * sgx_hat / md);
        d[ch] = (T)(-kk * (double)sg[ch] / md);
    }
}

template <typename T>
__device__ void bn_grad_input(const T* x, const T* y, const T* g, const T* mean, const T* a,
                              const T* bx, const T* d, T* dx, BnShape sh, int relu) {
    FOR_EACH_INDEX(i, sh.n * sh.c * sh.s) {
        const i64 ch = bn_channel(i, sh);
        const T h = (relu && !(y[i] > T(0))) ? T(0) : g[i];
        dx[i] = a[ch] * h + bx[ch] * (x[i] - mean[ch]) + d[ch];
    }
}

#define BN_KERNELS(T, TAG)                                                                     \
    extern "C" __global__ void bn_sum_##TAG(const T* x, T* sum, BnShape g, i64 chunk) {        \
        bn_sum<T>(x, sum, g, chunk);                                                           \
    }                                                                                          \
    extern "C" __global__ void bn_m2_##TAG(const T* x, const T* sum, T* m2, BnShape g,         \
                                           i64 chunk) {                                        \
        bn_m2<T>(x, sum, m2, g, chunk);                                                        \
    }                                                                                          \
    extern "C" __global__ void bn_finish_##TAG(const T* sum, const T* m2, const T* w,          \
                                               const T* b, T* mean, T* var, T* scale,          \
                                               T* shift, i64 c, i64 m, double eps) {           \
        bn_finish<T>(sum, m2, w, b, mean, var, scale, shift, c, m, eps);                       \
    }                                                                                          \
    extern "C" __global__ void bn_affine_##TAG(const T* x, const T* scale, const T* shift, T* y, \
                                               BnShape g, int relu) {                          \
        bn_affine<T>(x, scale, shift, y, g, relu);                                             \
    }                                                                                          \
    extern "C" __global__ void bn_grad_sums_##TAG(const T* x, const T* y, const T* g,          \
                                                  const T* mean, T* sg, T* sgx, BnShape sh,    \
                                                  i64 chunk, int relu) {                       \
        bn_grad_sums<T>(x, y, g, mean, sg, sgx, sh, chunk, relu);                              \
    }                                                                                          \
    extern "C" __global__ void bn_grad_finish_##TAG(const T* sg, const T* sgx, T* db, T* dw,   \
                                                    const T* var, const T* w, T* a, T* bx,     \
                                                    T* d, i64 c, i64 m, double eps) {          \
        bn_grad_finish<T>(sg, sgx, db, dw, var, w, a, bx, d, c, m, eps);                       \
    }                                                                                          \
    extern "C" __global__ void bn_grad_input_##TAG(const T* x, const T* y, const T* g,         \
                                                   const T* mean, const T* a, const T* bx,     \
                                                   const T* d, T* dx, BnShape sh, int relu) {  \
        bn_grad_input<T>(x, y, g, mean, a, bx, d, dx, sh, relu);                               \
    }

BN_KERNELS(float, f32)
BN_KERNELS(double, f64)
