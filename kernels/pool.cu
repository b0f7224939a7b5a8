// pool.cu: 2-D max and average pooling over planes of [planes, h, w] (contiguous), with the
// windows given explicitly: output row i covers input rows rows[2i]..rows[2i+1] (exclusive),
// output column j covers cols[2j]..cols[2j+1]; padding is already clipped away by the host
// (`crate::cpu::pool::sliding_windows` / `adaptive_windows`, which are also the CPU reference).
//
// `max_pool_fwd_<f32|f64>`: y = max over the window (NaN wins), idx = the flat h*w position of
// the first maximum. `max_pool_bw_<f32|f64>`: dx[p, idx] += dy (dx zeroed first; atomic).
// `avg_pool_fwd_<f32|f64>`: y = window sum / divisor (fixed_div if > 0, else the window's
// size). `avg_pool_bw_<f32|f64>`: every input of a window gets dy / divisor (atomic adds).
// Launch: 1-D grid-stride over the planes * oh * ow outputs, 256 threads per block.

#define POOL_INDEX                                                                             \
    i64 j = k % ow, i = (k / ow) % oh, p = k / (ow * oh);                                      \
    i64 r0 = rows[2 * i], r1 = rows[2 * i + 1], c0 = cols[2 * j], c1 = cols[2 * j + 1];

template <typename T>
__device__ void max_fwd(const T* x, const i64* rows, const i64* cols, T* y, i64* idx, i64 planes,
                        i64 h, i64 w, i64 oh, i64 ow) {
    FOR_EACH_INDEX(k, planes * oh * ow) {
        POOL_INDEX
        const T* xp = x + p * h * w;
        T best = (T)(-__longlong_as_double(0x7ff0000000000000LL));
        i64 at = r0 * w + c0;
        bool done = false;
        for (i64 r = r0; r < r1 && !done; ++r) {
            for (i64 c = c0; c < c1; ++c) {
                T v = xp[r * w + c];
                if (v > best || v != v) {
                    best = v;
                    at = r * w + c;
                    if (v != v) { done = true; break; }
                }
            }
        }
        y[k] = best;
        idx[k] = at;
    }
}

template <typename T>
__device__ void max_bw(const T* dy, const i64* idx, T* dx, i64 planes, i64 hw, i64 per_plane) {
    FOR_EACH_INDEX(k, planes * per_plane) { atomicAdd(dx + (k / per_plane) * hw + idx[k], dy[k]); }
}

template <typename T>
__device__ void avg_fwd(const T* x, const i64* rows, const i64* cols, T* y, i64 planes, i64 h,
                        i64 w, i64 oh, i64 ow, i64 fixed_div) {
    FOR_EACH_INDEX(k, planes * oh * ow) {
        POOL_INDEX
        const T* xp = x + p * h * w;
        T s = T(0);
        for (i64 r = r0; r < r1; ++r)
            for (i64 c = c0; c < c1; ++c) s += xp[r * w + c];
        i64 d = fixed_div > 0 ? fixed_div : (r1 - r0) * (c1 - c0);
        y[k] = s / T(d > 0 ? d : 1);
    }
}

template <typename T>
__device__ void avg_bw(const T* dy, const i64* rows, const i64* cols, T* dx, i64 planes, i64 h,
                       i64 w, i64 oh, i64 ow, i64 fixed_div) {
    FOR_EACH_INDEX(k, planes * oh * ow) {
        POOL_INDEX
        i64 d = fixed_div > 0 ? fixed_div : (r1 - r0) * (c1 - c0);
        T g = dy[k] / T(d > 0 ? d : 1);
        T* dxp = dx + p * h * w;
        for (i64 r = r0; r < r1; ++r)
            for (i64 c = c0; c < c1; ++c) atomicAdd(dxp + r * w + c, g);
    }
}

#define POOL(TAG, T)                                                                           \
    extern "C" __global__ void max_pool_fwd_##TAG(const T* x, const i64* rows, const i64* cols, \
                                                  T* y, i64* idx, i64 planes, i64 h, i64 w,    \
                                                  i64 oh, i64 ow) {                            \
        max_fwd<T>(x, rows, cols, y, idx, planes, h, w, oh, ow);                               \
    }                                                                                          \
    extern "C" __global__ void max_pool_bw_##TAG(const T* dy, const i64* idx, T* dx,           \
                                                 i64 planes, i64 hw, i64 per_plane) {          \
        max_bw<T>(dy, idx, dx, planes, hw, per_plane);                                         \
    }                                                                                          \
    extern "C" __global__ void avg_pool_fwd_##TAG(const T* x, const i64* rows, const i64* cols, \
                                                  T* y, i64 planes, i64 h, i64 w, i64 oh,      \
                                                  i64 ow, i64 fixed_div) {                     \
        avg_fwd<T>(x, rows, cols, y, planes, h, w, oh, ow, fixed_div);                         \
    }                                                                                          \
    extern "C" __global__ void avg_pool_bw_##TAG(const T* dy, const i64* rows, const i64* cols, \
                                                 T* dx, i64 planes, i64 h, i64 w, i64 oh,      \
                                                 i64 ow, i64 fixed_div) {                      \
        avg_bw<T>(dy, rows, cols, dx, planes, h, w, oh, ow, fixed_div);                        \
    }
POOL(f32, float)
POOL(f64, double)
