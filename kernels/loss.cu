// loss.cu: fused softmax cross-entropy over rows of logits x[n, c] (contiguous), never storing
// the probabilities. CPU reference: `crate::cpu::cross_entropy`.
//
// Targets tg[n] are i64 class ids read on the device (never checked on the host, so the
// forward pass does not wait for them): a row whose target equals `ignore` (when `has_ignore`)
// is skipped (loss and gradient 0); a target outside [0, c) makes its row's loss and gradient
// NaN, which the trainer's non-finite check reports.
// `cross_entropy_fwd_<f32|f64>`: per row r, lse[r] = log sum_j exp(x[r, j]) and
// loss[r] = (1 - eps)(lse - x[r, t]) + eps (lse - mean_j x[r, j]) for target t = tg[r]. One
// block of 256 threads per row, grid-stride over rows; one read of the row (an online
// log-sum-exp: each thread keeps a running max and its sum of exponentials, rescaled when the
// max grows, and the block merges the threads' pairs), where a max pass then a sum pass read
// a GPT-2 row (50,304 logits, 200 KB in f32) twice, from memory, since the rows in flight do
// not fit in L2.
// `cross_entropy_bw_<f32|f64>`: dx[r, j] = g[0] * scale * (exp(x[r, j] - lse[r]) - eps / c
// - (1 - eps) [j == t]); g is the loss's gradient (already divided by the counted rows for a
// mean over device targets), read on the device so the backward pass does not synchronise
// with the host. `cross_entropy_fwd_bf16` and `cross_entropy_bw_bf16_bf16` read bf16 logits,
// as the product of a fused linear head at bf16 precision (`linear_cross_entropy`) stores
// them (f32 arithmetic; f32 loss, lse and g), and the backward stores the gradient rounded to
// bf16, the operand of that head's products, which then never exists in f32; both read (and
// the backward writes) rows of whole 16-byte vectors 8 logits at a time. One warp per row
// (blocks of 32 x 8 threads, grid-stride over rows), its lanes
// striding over the row's columns: no per-element division to find the row (a 64-bit
// division per element cost more than the element's memory traffic at GPT-2's vocabulary).

// The class of a row: t in [0, c), -1 for an ignored row, -2 for a target out of range.
__device__ __forceinline__ i64 ce_class(i64 t, i64 c, int has_ignore, i64 ignore) {
    if (has_ignore && t == ignore) return -1;
    return (t >= 0 && t < c) ? t : -2;
}

// A partial log-sum-exp: the max m of the values seen and s, the sum of exp(v - m) over them
// (m = -inf, s = 0 for none; a NaN value makes both NaN).
// Merges the state (m2, s2) into (m, s); the larger max wins, the other sum is rescaled to it.
template <typename T>
__device__ __forceinline__ void lse_merge(T& m, T& s, T m2, T s2, T neg_inf) {
    const T top = MaxOp()(m, m2);  // NaN wins
    if (top == neg_inf) return;     // both empty
    s = (m == neg_inf ? T(0) : s * exp(m - top)) + (m2 == neg_inf ? T(0) : s2 * exp(m2 - top));
    m = top;
}

// Adds the value v to the state (m, s): one exponential, two when the max grows.
template <typename T>
__device__ __forceinline__ void lse_add(T& m, T& s, T v, T neg_inf) {
    if (v > m) {
        s = (m == neg_inf ? T(0) : s * exp(m - v)) + T(1);
        m = v;
    } else if (v != v) {
        m = s = v;
    } else if (v != neg_inf) {
        s += exp(v - m);
    }
}

// Merges every thread's state across the block (as `block_fold`); every thread gets the result.
template <typename T>
__device__ void block_lse(T& m, T& s, T neg_inf) {
    __shared__ double sm[33], ss[33];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const T m2 = __shfl_down_sync(0xffffffffu, m, o), s2 = __shfl_down_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2, neg_inf);
    }
    __syncthreads();  // the previous row's readers are done with the scratch
    if (lane == 0) {
        sm[warp] = (double)m;
        ss[warp] = (double)s;
    }
    __syncthreads();
    if (warp == 0) {
        T wm = lane < warps ? (T)sm[lane] : neg_inf, ws = lane < warps ? (T)ss[lane] : T(0);
        for (int o = 16; o > 0; o >>= 1) {
            const T m2 = __shfl_down_sync(0xffffffffu, wm, o), s2 = __shfl_down_sync(0xffffffffu, ws, o);
            lse_merge(wm, ws, m2, s2, neg_inf);
        }
        if (lane == 0) {
            sm[32] = (double)wm;
            ss[32] = (double)ws;
        }
    }
    __syncthreads();
    m = (T)sm[32];
    s = (T)ss[32];
}

// A logit as the arithmetic's type: itself, or a bf16's f32 value.
__device__ __forceinline__ float ce_value(float v) { return v; }
__device__ __forceinline__ double ce_value(double v) { return v; }
__device__ __forceinline__ float ce_value(u16 v) { return bf16_value(v); }

// Whether a row of logits is read as 16-byte vectors of 8: bf16 rows whose length is a multiple
// of 8 and whose start is 16-byte aligned (GPT-2's 50,304 logits a row). One 2-byte load per
// thread per logit kept the bf16 kernels bound by instruction issue, not by memory.
__device__ __forceinline__ bool ce_vectors(const u16* p, i64 c) {
    return c % 8 == 0 && ew_aligned(p);
}

template <typename T, typename X>
__device__ void ce_fwd(const X* x, const i64* tg, T* loss, T* lse, i64 n, i64 c, double eps,
                       int has_ignore, i64 ignore) {
    const T neg_inf = (T)(-__longlong_as_double(0x7ff0000000000000LL));
    for (i64 r = blockIdx.x; r < n; r += gridDim.x) {
        const X* row = x + r * c;
        T m = neg_inf, s = T(0), total = T(0);
        bool scanned = false;
        if constexpr (sizeof(X) == 2) {
            if (ce_vectors(row, c)) {
                // bf16 rows of whole 16-byte vectors: a thread reads 8 logits at once.
                const uint4* row8 = reinterpret_cast<const uint4*>(row);
                for (i64 j = threadIdx.x; j < c / 8; j += blockDim.x) {
                    const uint4 q = row8[j];
                    const u32 w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
                    for (int k = 0; k < 8; ++k) {
                        const T v = (k & 1) ? mma_hi(w[k / 2]) : mma_lo(w[k / 2]);
                        lse_add(m, s, v, neg_inf);
                        total += v;
                    }
                }
                scanned = true;
            }
        }
        if (!scanned) {
            for (i64 j = threadIdx.x; j < c; j += blockDim.x) {
                const T v = ce_value(row[j]);
                lse_add(m, s, v, neg_inf);
                total += v;
            }
        }
        block_lse(m, s, neg_inf);
        total = block_fold(total, SumOp(), T(0));
        if (threadIdx.x == 0) {
            T l = m == neg_inf ? neg_inf : log(s) + m;
            lse[r] = l;
            const i64 t = ce_class(tg[r], c, has_ignore, ignore);
            T v = T(0);
            if (t >= 0) {
                v = l - ce_value(row[t]);
                if (eps > 0.0) v = T(1.0 - eps) * v + T(eps) * (l - total / T(c));
            } else if (t == -2) {
                v = (T)__longlong_as_double(0x7ff8000000000000LL);
            }
            loss[r] = v;
        }
    }
}

// The gradient as stored: T itself, or (for `cross_entropy_bw_bf16_bf16`) rounded to bf16.
template <typename T> __device__ __forceinline__ T ce_store(T v, T*) { return v; }
__device__ __forceinline__ u16 ce_store(float v, u16*) { return bf16_bits_of(v); }

template <typename T, typename O, typename X>
__device__ void ce_bw(const X* x, const i64* tg, const T* lse, const T* g, O* dx, i64 n, i64 c,
                      double scale, double eps, int has_ignore, i64 ignore) {
    const T s = g[0] * T(scale);
    const T smooth = T(eps / (double)c), hit = T(1.0 - eps) * s;
    for (i64 r = (i64)blockIdx.x * blockDim.y + threadIdx.y; r < n; r += (i64)gridDim.x * blockDim.y) {
        const i64 t = ce_class(tg[r], c, has_ignore, ignore);
        const T l = lse[r];
        const X* xr = x + r * c;
        O* dr = dx + r * c;
        const auto grad = [&](i64 j, T xv) {
            T v = T(0);
            if (t >= 0) {
                v = (exp(xv - l) - smooth) * s;
                if (j == t) v -= hit;
            } else if (t == -2) {
                v = (T)__longlong_as_double(0x7ff8000000000000LL);
            }
            return v;
        };
        if constexpr (sizeof(X) == 2 && sizeof(O) == 2) {
            if (ce_vectors(xr, c) && ce_vectors(dr, c)) {
                // bf16 in and out: 8 logits read and 8 gradients written per 16-byte access.
                const uint4* x8 = reinterpret_cast<const uint4*>(xr);
                uint4* d8 = reinterpret_cast<uint4*>(dr);
                for (i64 j = threadIdx.x; j < c / 8; j += blockDim.x) {
                    const uint4 q = x8[j];
                    const u32 w[4] = {q.x, q.y, q.z, q.w};
                    u32 o[4];
#pragma unroll
                    for (int k = 0; k < 4; ++k) {
                        const u32 lo = ce_store(grad(j * 8 + 2 * k, mma_lo(w[k])), dr);
                        const u32 hi = ce_store(grad(j * 8 + 2 * k + 1, mma_hi(w[k])), dr);
                        o[k] = lo | (hi << 16);
                    }
                    d8[j] = make_uint4(o[0], o[1], o[2], o[3]);
                }
                continue;
            }
        }
        for (i64 j = threadIdx.x; j < c; j += blockDim.x) dr[j] = ce_store(grad(j, ce_value(xr[j])), dr);
    }
}

#define CE_KERNELS(T, TAG)                                                                     \
    extern "C" __global__ void cross_entropy_fwd_##TAG(const T* x, const i64* tg, T* loss,       \
                                                       T* lse, i64 n, i64 c, double eps,        \
                                                       int has_ignore, i64 ignore) {            \
        ce_fwd<T, T>(x, tg, loss, lse, n, c, eps, has_ignore, ignore);                              \
    }                                                                                            \
    extern "C" __global__ void cross_entropy_bw_##TAG(const T* x, const i64* tg, const T* lse,   \
                                                      const T* g, T* dx, i64 n, i64 c,           \
                                                      double scale, double eps, int has_ignore, \
                                                      i64 ignore) {                              \
        ce_bw<T, T, T>(x, tg, lse, g, dx, n, c, scale, eps, has_ignore, ignore);                    \
    }

CE_KERNELS(float, f32)
CE_KERNELS(double, f64)

extern "C" __global__ void cross_entropy_fwd_bf16(const u16* x, const i64* tg, float* loss,
                                                  float* lse, i64 n, i64 c, double eps,
                                                  int has_ignore, i64 ignore) {
    ce_fwd<float, u16>(x, tg, loss, lse, n, c, eps, has_ignore, ignore);
}

extern "C" __global__ void cross_entropy_bw_bf16_bf16(const u16* x, const i64* tg,
                                                      const float* lse, const float* g, u16* dx,
                                                      i64 n, i64 c, double scale, double eps,
                                                      int has_ignore, i64 ignore) {
    ce_bw<float, u16, u16>(x, tg, lse, g, dx, n, c, scale, eps, has_ignore, ignore);
}
