// batch_norm.cu: batch normalisation in training mode (batch statistics), with an optional
// ReLU folded in, forward and backward. CPU reference: `crate::cpu::batch_norm`.
//
// Layout: x, y, g, dx contiguous [N, C, S] (S = the product of the spatial axes; [N, C] has
// S = 1); w, b [C] or null (1 and 0); per-channel buffers [C]. A channel's M = N * S values are
// element p = (n, s) at x[(n * C + c) * S + s]. `BnShape` carries N, C, S and, when
// N * C * S < 2^31 (`fast`), 32-bit index arithmetic with the divisions by S and C done by
// `FastDiv` (a 64-bit division per element would cost more than its memory traffic).
//
// Forward: `bn_stats` splits each channel into chunks of `chunk` values (16 per thread of a
// 256-thread block, held in registers; where a plane's length is a multiple of 4, as four runs of 4
// consecutive values, each loaded together), one block per (chunk, channel), and writes each
// chunk's mean and sum of squared deviations from it (one read of x; the CPU reads it twice, for
// the mean and then the deviations); `bn_finish` (one thread per channel) combines the chunks in
// order (Chan et al.'s pairwise update, in f64: deterministic, no atomics) and writes the mean, the
// biased var = M2 / M, and, as the CPU makes them, scale = w / sqrt(var + eps) and shift = b - mean
// scale; `bn_affine` writes y = x scale[c] + shift[c] (then the ReLU), the CPU's `apply`.
// Evaluation mode (inference) runs `bn_affine` alone, on a scale and shift made from the running
// statistics.
// Backward: `bn_grad_sums` (in runs as `bn_stats`) writes each chunk's sums of h and of
// h (x - mean), where h = g (times [y > 0] with the ReLU); `bn_grad_finish` (per channel, in f64
// as the CPU) adds them in chunk order and writes the bias's gradient db = Σ h, the weight's
// dw = Σ h xhat = Σ h (x - mean) invstd, and dx's coefficients a = k, bx = -k invstd dw / M and
// d = -k db / M with k = w invstd; `bn_grad_input` writes dx = a h + bx (x - mean) + d.
// Grid y walks the channels (grid-stride: at most 65,535 blocks). The elementwise kernels are
// 1-D grid-stride over runs of 4 of the N * C * S elements; the per-channel ones one thread per
// channel.

struct BnShape {
    i64 n, c, s;
    FastDiv div_c, div_s;
    int fast;
};

// Channel ch and position sp in its plane of element i of [N, C, S].
__device__ __forceinline__ void bn_locate(i64 i, const BnShape& g, i64& ch, i64& sp) {
    if (g.fast) {
        const u32 q = fdiv((u32)i, g.div_s);
        sp = (i64)((u32)i - q * (u32)g.s);
        ch = (i64)(q - fdiv(q, g.div_c) * (u32)g.c);
        return;
    }
    const i64 q = i / g.s;
    sp = i - q * g.s;
    ch = q % g.c;
}

// Steps (ch, sp) to the next element of [N, C, S]; true when it starts a new plane (so the
// channel's values are to be read again).
__device__ __forceinline__ bool bn_step(i64& ch, i64& sp, const BnShape& g) {
    if (++sp < g.s) return false;
    sp = 0;
    ch = ch + 1 == g.c ? 0 : ch + 1;
    return true;
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

// Values of a channel each thread of a statistics block holds (the host's chunk is this times
// the block's 256 threads).
#define BN_PER_THREAD 16

// Position of a thread's value k in its block's chunk starting at p0: consecutive threads take
// consecutive values, or with `runs` (planes of a multiple of EW_RUN, so that a run never
// crosses one) consecutive runs of EW_RUN values, loaded together (f32 as one 16-byte vector).
__device__ __forceinline__ i64 bn_chunk_pos(i64 p0, int k, bool runs) {
    return runs ? p0 + ((i64)(k / EW_RUN) * blockDim.x + threadIdx.x) * EW_RUN + k % EW_RUN
                : p0 + threadIdx.x + (i64)k * blockDim.x;
}

// One block's share of a channel's statistics: its values' mean and sum of squared deviations
// from that mean (two passes over registers, one read of x), into part_mean / part_m2 at
// [ch * chunks + chunk index]. The chunk (a multiple of EW_RUN) holds whole runs.
template <typename T>
__device__ void bn_stats(const T* x, T* part_mean, T* part_m2, BnShape g, i64 chunk, i64 chunks) {
    const i64 m = g.n * g.s, p0 = (i64)blockIdx.x * chunk, p1 = min(m, p0 + chunk);
    const bool runs = g.fast && g.s % EW_RUN == 0, vec = runs && ew_aligned(x);
    BN_CHANNELS(ch, g.c) {
        T v[BN_PER_THREAD];
        T acc = T(0);
#pragma unroll
        for (int k = 0; k < BN_PER_THREAD; k += EW_RUN) {
            if (runs) {
                const i64 p = bn_chunk_pos(p0, k, true);
                const EwRun<T> r = p < p1 ? ew_load(x + bn_at(p, ch, g), EW_RUN, vec) : EwRun<T>{};
#pragma unroll
                for (int u = 0; u < EW_RUN; ++u) v[k + u] = r.v[u];
            } else {
#pragma unroll
                for (int u = 0; u < EW_RUN; ++u) {
                    const i64 p = bn_chunk_pos(p0, k + u, false);
                    v[k + u] = p < p1 ? x[bn_at(p, ch, g)] : T(0);
                }
            }
#pragma unroll
            for (int u = 0; u < EW_RUN; ++u) acc += v[k + u];
        }
        const T mean = block_fold(acc, SumOp(), T(0)) / T(p1 - p0);
        T q = T(0);
#pragma unroll
        for (int k = 0; k < BN_PER_THREAD; ++k) {
            const T d = v[k] - mean;
            if (bn_chunk_pos(p0, k, runs) < p1) q += d * d;
        }
        q = block_fold(q, SumOp(), T(0));
        if (threadIdx.x == 0) {
            part_mean[ch * chunks + blockIdx.x] = mean;
            part_m2[ch * chunks + blockIdx.x] = q;
        }
    }
}

// Per channel: the blocks' shares combined in chunk order (Chan et al.'s pairwise update, in
// f64), then mean, the biased var = M2 / M, scale = w / sqrt(var + eps) and
// shift = b - mean scale as the CPU makes them.
template <typename T>
__device__ void bn_finish(const T* part_mean, const T* part_m2, const T* w, const T* b, T* mean,
                          T* var, T* scale, T* shift, i64 c, i64 m, i64 chunk, i64 chunks,
                          double eps) {
    FOR_EACH_INDEX(ch, c) {
        double na = 0.0, ma = 0.0, qa = 0.0;
        for (i64 j = 0; j < chunks; ++j) {
            const double nb = (double)min(chunk, m - j * chunk), n = na + nb;
            const double mb = (double)part_mean[ch * chunks + j], d = mb - ma;
            ma += d * (nb / n);
            qa += (double)part_m2[ch * chunks + j] + d * d * (na * nb / n);
            na = n;
        }
        const T mu = (T)ma, v = (T)(qa / (double)m);
        const T k = (w ? w[ch] : T(1)) / sqrt(v + T(eps));
        mean[ch] = mu;
        var[ch] = v;
        scale[ch] = k;
        shift[ch] = (b ? b[ch] : T(0)) - mu * k;
    }
}

// The elementwise kernels (bn_affine, bn_grad_input) take runs of EW_RUN consecutive elements
// per thread (common.cuh's `for_each_run`): the first element's channel found once, then
// stepped along (the channel's values read again where a run crosses into the next plane), the
// loads issued together, and f32 moved as 16-byte vectors when the buffers are aligned (the host
// launches a thread per run). On an H200 (2026-12-04, ncu) one-element threads kept the SMs 80%
// busy and DRAM 34%: bound by instructions, not bytes. Each element's arithmetic is unchanged.
template <typename T>
__device__ void bn_affine(const T* x, const T* scale, const T* shift, T* y, BnShape g, int relu) {
    const bool vec = ew_aligned(x) && ew_aligned(y);
    for_each_run(g.n * g.c * g.s, [&](i64 i, int cnt) {
        i64 ch, sp;
        bn_locate(i, g, ch, sp);
        T sc = scale[ch], sf = shift[ch];
        EwRun<T> v = ew_load(x + i, cnt, vec);
#pragma unroll
        for (int k = 0; k < EW_RUN; ++k) {
            v.v[k] = v.v[k] * sc + sf;
            if (relu && v.v[k] < T(0)) v.v[k] = T(0);
            if (k + 1 < cnt && bn_step(ch, sp, g)) {
                sc = scale[ch];
                sf = shift[ch];
            }
        }
        ew_store(y + i, v, cnt, vec);
    });
}

template <typename T>
__device__ void bn_grad_sums(const T* x, const T* y, const T* g, const T* mean, T* part_sg,
                             T* part_sgx, BnShape sh, i64 chunk, i64 chunks, int relu) {
    const i64 m = sh.n * sh.s, p0 = (i64)blockIdx.x * chunk, p1 = min(m, p0 + chunk);
    // Runs of EW_RUN values as bn_stats (a plane a multiple of EW_RUN long).
    const bool runs = sh.fast && sh.s % EW_RUN == 0;
    const bool vec = runs && ew_aligned(x) && ew_aligned(g) && (!relu || ew_aligned(y));
    BN_CHANNELS(ch, sh.c) {
        const T mu = mean[ch];
        T a = T(0), ax = T(0);
        if (runs) {
            for (i64 p = p0 + (i64)threadIdx.x * EW_RUN; p < p1; p += (i64)blockDim.x * EW_RUN) {
                const i64 i = bn_at(p, ch, sh);
                const EwRun<T> gv = ew_load(g + i, EW_RUN, vec), xv = ew_load(x + i, EW_RUN, vec);
                const EwRun<T> yv = relu ? ew_load(y + i, EW_RUN, vec) : EwRun<T>{};
#pragma unroll
                for (int u = 0; u < EW_RUN; ++u) {
                    const T h = (relu && !(yv.v[u] > T(0))) ? T(0) : gv.v[u];
                    a += h;
                    ax += h * (xv.v[u] - mu);
                }
            }
        } else {
            for (i64 p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
                const i64 i = bn_at(p, ch, sh);
                const T h = (relu && !(y[i] > T(0))) ? T(0) : g[i];
                a += h;
                ax += h * (x[i] - mu);
            }
        }
        a = block_fold(a, SumOp(), T(0));
        ax = block_fold(ax, SumOp(), T(0));
        if (threadIdx.x == 0) {
            part_sg[ch * chunks + blockIdx.x] = a;
            part_sgx[ch * chunks + blockIdx.x] = ax;
        }
    }
}

template <typename T>
__device__ void bn_grad_finish(const T* part_sg, const T* part_sgx, T* db, T* dw, const T* var,
                               const T* w, T* a, T* bx, T* d, i64 c, i64 m, i64 chunks,
                               double eps) {
    FOR_EACH_INDEX(ch, c) {
        double sg = 0.0, sgx = 0.0;
        for (i64 j = 0; j < chunks; ++j) {
            sg += (double)part_sg[ch * chunks + j];
            sgx += (double)part_sgx[ch * chunks + j];
        }
        const T is = T(1) / sqrt(var[ch] + T(eps));
        const T k = w ? w[ch] * is : is;
        const double kk = (double)k, isd = (double)is, md = (double)m;
        const double sgx_hat = sgx * isd;
        db[ch] = (T)sg;
        dw[ch] = (T)sgx_hat;
        a[ch] = k;
        bx[ch] = (T)(-kk * isd * sgx_hat / md);
        d[ch] = (T)(-kk * sg / md);
    }
}

template <typename T>
__device__ void bn_grad_input(const T* x, const T* y, const T* g, const T* mean, const T* a,
                              const T* bx, const T* d, T* dx, BnShape sh, int relu) {
    const bool vec = ew_aligned(x) && ew_aligned(g) && ew_aligned(dx) && (!relu || ew_aligned(y));
    for_each_run(sh.n * sh.c * sh.s, [&](i64 i, int cnt) {
        i64 ch, sp;
        bn_locate(i, sh, ch, sp);
        T ac = a[ch], bc = bx[ch], mc = mean[ch], dc = d[ch];
        EwRun<T> xv = ew_load(x + i, cnt, vec);
        const EwRun<T> gv = ew_load(g + i, cnt, vec);
        const EwRun<T> yv = relu ? ew_load(y + i, cnt, vec) : EwRun<T>{};
#pragma unroll
        for (int k = 0; k < EW_RUN; ++k) {
            const T h = (relu && !(yv.v[k] > T(0))) ? T(0) : gv.v[k];
            xv.v[k] = ac * h + bc * (xv.v[k] - mc) + dc;
            if (k + 1 < cnt && bn_step(ch, sp, sh)) {
                ac = a[ch], bc = bx[ch], mc = mean[ch], dc = d[ch];
            }
        }
        ew_store(dx + i, xv, cnt, vec);
    });
}

#define BN_KERNELS(T, TAG)                                                                     \
    extern "C" __global__ void bn_stats_##TAG(const T* x, T* pm, T* pq, BnShape g, i64 chunk,  \
                                              i64 chunks) {                                    \
        bn_stats<T>(x, pm, pq, g, chunk, chunks);                                              \
    }                                                                                          \
    extern "C" __global__ void bn_finish_##TAG(const T* pm, const T* pq, const T* w,           \
                                               const T* b, T* mean, T* var, T* scale,          \
                                               T* shift, i64 c, i64 m, i64 chunk, i64 chunks,  \
                                               double eps) {                                   \
        bn_finish<T>(pm, pq, w, b, mean, var, scale, shift, c, m, chunk, chunks, eps);         \
    }                                                                                          \
    extern "C" __global__ void bn_affine_##TAG(const T* x, const T* scale, const T* shift, T* y, \
                                               BnShape g, int relu) {                          \
        bn_affine<T>(x, scale, shift, y, g, relu);                                             \
    }                                                                                          \
    extern "C" __global__ void bn_grad_sums_##TAG(const T* x, const T* y, const T* g,          \
                                                  const T* mean, T* psg, T* psgx, BnShape sh,  \
                                                  i64 chunk, i64 chunks, int relu) {           \
        bn_grad_sums<T>(x, y, g, mean, psg, psgx, sh, chunk, chunks, relu);                    \
    }                                                                                          \
    extern "C" __global__ void bn_grad_finish_##TAG(const T* psg, const T* psgx, T* db, T* dw, \
                                                    const T* var, const T* w, T* a, T* bx,     \
                                                    T* d, i64 c, i64 m, i64 chunks,            \
                                                    double eps) {                              \
        bn_grad_finish<T>(psg, psgx, db, dw, var, w, a, bx, d, c, m, chunks, eps);             \
    }                                                                                          \
    extern "C" __global__ void bn_grad_input_##TAG(const T* x, const T* y, const T* g,         \
                                                   const T* mean, const T* a, const T* bx,     \
                                                   const T* d, T* dx, BnShape sh, int relu) {  \
        bn_grad_input<T>(x, y, g, mean, a, bx, d, dx, sh, relu);                               \
    }

BN_KERNELS(float, f32)
BN_KERNELS(double, f64)
