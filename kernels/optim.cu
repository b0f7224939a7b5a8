// optim.cu: fused in-place optimiser updates, one pass over a parameter, its gradient and its
// state (all contiguous, same length n). CPU reference: `crate::ops::optim` (adam_kernel,
// sgd_kernel); the host folds the bias corrections into `step_size` and `inv_sqrt_bc2`.
//
// `adam_step_<f32|f64>`: g' = g + l2 p; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
// p = p decay - step_size m / (sqrt(v) inv_sqrt_bc2 + eps)  (decay = 1 - lr wd for AdamW).
// `sgd_step_<f32|f64>`: d = g + wd p; with a momentum buffer b (non-null):
// b = first ? d : mu b + damp d, update = nesterov ? d + mu b : b; p -= lr update.
// Launch: 1-D grid-stride over n, 256 threads per block.
//
// Multi-tensor forms (one launch for every parameter of an optimiser step): `table` holds one
// entry of u64 words per chunk of at most 65,536 elements of one parameter, and block b runs
// entry b (grid = number of chunks, 256 threads striding over the chunk).
// Each entry's last word is the address of the parameter's bf16 copy (its "shadow", kept for
// the products that read it as a bf16 operand: the Rust side's `crate::shadow`), or 0: where
// there is one, the update also writes it, bf16_bits_of(new value) (round to nearest even, as
// copy.cu's cast), so it never needs a separate cast. Only f32 parameters have one.
// `adam_multi_<f32|f64>`: 14 words: p, g, m, v (addresses), start, len, then the doubles b1,
// b2, step_size, inv_sqrt_bc2, eps, decay, l2 (bit patterns) of that parameter's step, p16.
// `sgd_multi_<f32|f64>`: 11 words: p, g, b (0: no momentum buffer), start, len, then lr, mu,
// damp, wd (doubles), nesterov | first << 1, p16.
// LARS, two launches over one table of 13 words per entry: p, g, mu (addresses), start, len,
// then lr, momentum, wd, eta (doubles), adapt, first, count (the entries first..first+count
// are this parameter's chunks), p16. `lars_norms_<f32|f64>`: block b writes the f64 sums of p^2 and
// d^2 (d = g + wd p) over its chunk to partial[2b], partial[2b + 1] (zeros when not adapted).
// `lars_update_<f32|f64>`: every block sums its parameter's partials in order (so the factor
// is the same in each chunk and from run to run), factor = eta |p| / |d| when both norms are
// positive, else 1 (LarsStep::trust), d *= factor (adapted only), mu = momentum mu + d,
// p -= lr mu.
// `ema_multi_<f32|f64>`: 7 words per entry: target, source (addresses), start, len, then keep
// and scale (doubles), t16: target = keep target + scale source, in place (running statistics,
// EMA target networks). CPU reference: `crate::ops::ema` (`ema_kernel`).
// `count_up_i64`: x[i] += by over n contiguous i64 (a running statistic's batch counter, as
// BatchNorm's `num_batches_tracked`); 1-D grid-stride. CPU reference: `Tensor::count_up_`.

template <typename T>
__device__ void adam(T* p, const T* g, T* m, T* v, i64 n, double b1, double b2, double step_size,
                     double inv_sqrt_bc2, double eps, double decay, double l2) {
    FOR_EACH_INDEX(i, n) {
        T gi = g[i] + T(l2) * p[i];
        T mi = T(b1) * m[i] + T(1.0 - b1) * gi;
        T vi = T(b2) * v[i] + T(1.0 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * T(decay) - T(step_size) * mi / (sqrt(vi) * T(inv_sqrt_bc2) + T(eps));
    }
}

template <typename T>
__device__ void sgd(T* p, const T* g, T* b, i64 n, double lr, double mu, double damp, double wd,
                    int nesterov, int first) {
    FOR_EACH_INDEX(i, n) {
        T d = g[i] + T(wd) * p[i];
        T upd = d;
        if (b) {
            T bi = first ? d : T(mu) * b[i] + T(damp) * d;
            b[i] = bi;
            upd = nesterov ? d + T(mu) * bi : bi;
        }
        p[i] = p[i] - T(lr) * upd;
    }
}

#define ADAM_WORDS 14
#define SGD_WORDS 11

// Writes the bf16 copy of a new parameter value, where the entry names one (see the header).
template <typename T> __device__ __forceinline__ void store_copy(u16* p16, i64 i, T value) {
    if (p16) p16[i] = bf16_bits_of((float)value);
}

template <typename T> __device__ void adam_multi(const u64* table) {
    const u64* e = table + (i64)blockIdx.x * ADAM_WORDS;
    T* p = (T*)e[0];
    const T* g = (const T*)e[1];
    T* m = (T*)e[2];
    T* v = (T*)e[3];
    const i64 start = (i64)e[4], len = (i64)e[5];
    const T b1 = (T)__longlong_as_double((i64)e[6]), b2 = (T)__longlong_as_double((i64)e[7]);
    const T step_size = (T)__longlong_as_double((i64)e[8]), ibc2 = (T)__longlong_as_double((i64)e[9]);
    const T eps = (T)__longlong_as_double((i64)e[10]), decay = (T)__longlong_as_double((i64)e[11]);
    const T l2 = (T)__longlong_as_double((i64)e[12]);
    const T c1 = (T)(1.0 - __longlong_as_double((i64)e[6])), c2 = (T)(1.0 - __longlong_as_double((i64)e[7]));
    u16* p16 = (u16*)e[13];
    for (i64 i = start + threadIdx.x; i < start + len; i += blockDim.x) {
        T gi = g[i] + l2 * p[i];
        T mi = b1 * m[i] + c1 * gi;
        T vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const T pn = p[i] * decay - step_size * mi / (sqrt(vi) * ibc2 + eps);
        p[i] = pn;
        store_copy(p16, i, pn);
    }
}

template <typename T> __device__ void sgd_multi(const u64* table) {
    const u64* e = table + (i64)blockIdx.x * SGD_WORDS;
    T* p = (T*)e[0];
    const T* g = (const T*)e[1];
    T* b = (T*)e[2];
    const i64 start = (i64)e[3], len = (i64)e[4];
    const T lr = (T)__longlong_as_double((i64)e[5]), mu = (T)__longlong_as_double((i64)e[6]);
    const T damp = (T)__longlong_as_double((i64)e[7]), wd = (T)__longlong_as_double((i64)e[8]);
    const int nesterov = (int)(e[9] & 1), first = (int)((e[9] >> 1) & 1);
    u16* p16 = (u16*)e[10];
    for (i64 i = start + threadIdx.x; i < start + len; i += blockDim.x) {
        T d = g[i] + wd * p[i];
        T upd = d;
        if (b) {
            T bi = first ? d : mu * b[i] + damp * d;
            b[i] = bi;
            upd = nesterov ? d + mu * bi : bi;
        }
        const T pn = p[i] - lr * upd;
        p[i] = pn;
        store_copy(p16, i, pn);
    }
}

#define LARS_WORDS 13

template <typename T> __device__ void lars_norms(const u64* table, double* partial) {
    const u64* e = table + (i64)blockIdx.x * LARS_WORDS;
    const T* p = (const T*)e[0];
    const T* g = (const T*)e[1];
    const i64 start = (i64)e[3], len = (i64)e[4];
    const T wd = (T)__longlong_as_double((i64)e[7]);
    const int adapt = (int)e[9];
    double ps = 0.0, ds = 0.0;
    if (adapt) {
        for (i64 i = start + threadIdx.x; i < start + len; i += blockDim.x) {
            const T pi = p[i];
            const double d = (double)(g[i] + wd * pi);
            ps += (double)pi * (double)pi;
            ds += d * d;
        }
    }
    ps = block_fold(ps, SumOp(), 0.0);
    ds = block_fold(ds, SumOp(), 0.0);
    if (threadIdx.x == 0) {
        partial[2 * (i64)blockIdx.x] = ps;
        partial[2 * (i64)blockIdx.x + 1] = ds;
    }
}

template <typename T> __device__ void lars_update(const u64* table, const double* partial) {
    const u64* e = table + (i64)blockIdx.x * LARS_WORDS;
    T* p = (T*)e[0];
    const T* g = (const T*)e[1];
    T* mu = (T*)e[2];
    const i64 start = (i64)e[3], len = (i64)e[4];
    const T lr = (T)__longlong_as_double((i64)e[5]), m = (T)__longlong_as_double((i64)e[6]);
    const T wd = (T)__longlong_as_double((i64)e[7]);
    const double eta = __longlong_as_double((i64)e[8]);
    const int adapt = (int)e[9];
    const i64 first = (i64)e[10], count = (i64)e[11];
    T factor = T(1);
    if (adapt) {
        double ps = 0.0, ds = 0.0;
        for (i64 c = first; c < first + count; ++c) {
            ps += partial[2 * c];
            ds += partial[2 * c + 1];
        }
        const double pn = sqrt(ps), dn = sqrt(ds);
        if (pn > 0.0 && dn > 0.0) factor = (T)(pn * eta / fmax(dn, 2.2250738585072014e-308));
    }
    u16* p16 = (u16*)e[12];
    for (i64 i = start + threadIdx.x; i < start + len; i += blockDim.x) {
        const T d = adapt ? (g[i] + wd * p[i]) * factor : g[i];
        const T b = m * mu[i] + d;
        mu[i] = b;
        const T pn = p[i] - b * lr;
        p[i] = pn;
        store_copy(p16, i, pn);
    }
}

#define EMA_WORDS 7
template <typename T> __device__ void ema_multi(const u64* table) {
    const u64* e = table + (i64)blockIdx.x * EMA_WORDS;
    T* t = (T*)e[0];
    const T* s = (const T*)e[1];
    const i64 start = (i64)e[2], len = (i64)e[3];
    const T keep = (T)__longlong_as_double((i64)e[4]), scale = (T)__longlong_as_double((i64)e[5]);
    u16* t16 = (u16*)e[6];
    for (i64 i = start + threadIdx.x; i < start + len; i += blockDim.x) {
        const T tn = keep * t[i] + scale * s[i];
        t[i] = tn;
        store_copy(t16, i, tn);
    }
}

#define OPTIM(TAG, T)                                                                          \
    extern "C" __global__ void adam_step_##TAG(T* p, const T* g, T* m, T* v, i64 n, double b1, \
                                               double b2, double step_size,                    \
                                               double inv_sqrt_bc2, double eps, double decay,  \
                                               double l2) {                                    \
        adam<T>(p, g, m, v, n, b1, b2, step_size, inv_sqrt_bc2, eps, decay, l2);               \
    }                                                                                          \
    extern "C" __global__ void sgd_step_##TAG(T* p, const T* g, T* b, i64 n, double lr,        \
                                              double mu, double damp, double wd, int nesterov, \
                                              int first) {                                     \
        sgd<T>(p, g, b, n, lr, mu, damp, wd, nesterov, first);                                 \
    }                                                                                          \
    extern "C" __global__ void adam_multi_##TAG(const u64* table) { adam_multi<T>(table); }    \
    extern "C" __global__ void ema_multi_##TAG(const u64* table) { ema_multi<T>(table); }      \
    extern "C" __global__ void sgd_multi_##TAG(const u64* table) { sgd_multi<T>(table); }    \
    extern "C" __global__ void lars_norms_##TAG(const u64* table, double* partial) {           \
        lars_norms<T>(table, partial);                                                         \
    }                                                                                          \
    extern "C" __global__ void lars_update_##TAG(const u64* table, const double* partial) {    \
        lars_update<T>(table, partial);                                                        \
    }
OPTIM(f32, float)
OPTIM(f64, double)

extern "C" __global__ void count_up_i64(i64* x, i64 n, i64 by) {
    FOR_EACH_INDEX(i, n) x[i] += by;
}
