// pool.cu: 2-D max and average pooling over planes of [planes, h, w] (contiguous), forward and
// backward. The windows are computed in the kernels from each axis's rule (`PoolAxis`, mirrors
// `crate::cpu::pool::AxisWindows`): sliding (`adaptive` 0): output i covers input
// clamp(i*stride - pad, 0, len) .. clamp(i*stride - pad + kernel, 0, len); adaptive (PyTorch's
// bins, one bin for a global pool): floor(i*len/out) .. ceil((i+1)*len/out), half-open. The CPU
// reference is `crate::cpu::pool`, whose window lists come from the same rules.
//
// `max_pool_fwd_<f32|f64>`: y = max over the window (NaN wins), idx = the flat h*w position of
// the first maximum. `max_pool_bw_<f32|f64>`: dx[p, r, c] = the sum, in output order, of dy over
// the outputs whose windows hold (r, c) and whose idx is r*w + c.
// `avg_pool_fwd_<f32|f64>`: y = window sum (row by row) / divisor (fixed_div if > 0, else the
// window's size). `avg_pool_bw_<f32|f64>`: dx[p, r, c] = the sum, in output order, of
// dy / divisor over the windows holding (r, c).
// `avg_pool_global_bw_<f32|f64>`: the same for one window over the whole plane (global average
// pooling): dx[p, r, c] = dy[p] / divisor, with the plane found by a multiply-high division
// when there are fewer than 2^31 inputs (the general kernel's 64-bit divisions cost more than
// the element's memory traffic).
// The backward kernels gather: a thread per input element walks the outputs covering it
// (`covering`, as `AxisWindows::covering`), so there are no atomics and no zeroed buffer, and
// every element's gradient is added in the order the CPU adds it (bit-identical to it).
// Launch: 1-D grid-stride over the outputs (forward) or the inputs (backward), 256 threads.

// One axis of a pooling (mirrors `cuda::pool::PoolAxis`).
struct PoolAxis {
    i64 len, out, kernel, stride, pad, adaptive;
};

// The planes and both axes (mirrors `cuda::pool::PoolShape`).
struct PoolShape {
    i64 planes;
    PoolAxis rows, cols;
    i64 fixed_div;
};

__device__ __forceinline__ i64 clamp_len(i64 v, i64 len) { return v < 0 ? 0 : (v > len ? len : v); }

// Input range [lo, hi) of output position i.
__device__ __forceinline__ void window(const PoolAxis& a, i64 i, i64& lo, i64& hi) {
    if (a.adaptive) {
        lo = i * a.len / a.out;
        hi = ((i + 1) * a.len + a.out - 1) / a.out;
    } else {
        lo = clamp_len(i * a.stride - a.pad, a.len);
        hi = clamp_len(i * a.stride - a.pad + a.kernel, a.len);
    }
}

// Output positions [lo, hi) whose windows hold input position r (0 <= r < len).
__device__ __forceinline__ void covering(const PoolAxis& a, i64 r, i64& lo, i64& hi) {
    if (a.adaptive) {
        lo = r * a.out / a.len;
        hi = ((r + 1) * a.out + a.len - 1) / a.len;
    } else {
        i64 over = r + a.pad + 1 - a.kernel;
        lo = over > 0 ? (over + a.stride - 1) / a.stride : 0;
        hi = (r + a.pad) / a.stride + 1;
    }
    if (lo > a.out) lo = a.out;
    if (hi > a.out) hi = a.out;
    if (hi < lo) hi = lo;
}

// Output k = (p, i, j) of the planes x oh x ow outputs and its window rows [r0, r1), columns
// [c0, c1).
struct OutWindow {
    i64 p, i, j, r0, r1, c0, c1;
};
__device__ __forceinline__ OutWindow out_window(const PoolShape& s, i64 k) {
    OutWindow o;
    o.j = k % s.cols.out;
    o.i = (k / s.cols.out) % s.rows.out;
    o.p = k / (s.cols.out * s.rows.out);
    window(s.rows, o.i, o.r0, o.r1);
    window(s.cols, o.j, o.c0, o.c1);
    return o;
}

// Input k = (p, r, c) of the planes x h x w inputs and the outputs covering it: rows [i0, i1),
// columns [j0, j1).
struct InCover {
    i64 p, r, c, i0, i1, j0, j1;
};
__device__ __forceinline__ InCover in_cover(const PoolShape& s, i64 k) {
    InCover v;
    v.c = k % s.cols.len;
    v.r = (k / s.cols.len) % s.rows.len;
    v.p = k / (s.cols.len * s.rows.len);
    covering(s.rows, v.r, v.i0, v.i1);
    covering(s.cols, v.c, v.j0, v.j1);
    return v;
}

// The divisor of a window of rows x cols inputs: fixed_div if set, else its size.
template <typename T>
__device__ __forceinline__ T divisor(const PoolShape& s, i64 rows, i64 cols) {
    if (s.fixed_div > 0) return T(s.fixed_div);
    const i64 d = rows * cols;
    return T(d > 0 ? d : 1);
}

template <typename T>
__device__ void max_fwd(const T* x, T* y, i64* idx, PoolShape s) {
    const i64 w = s.cols.len;
    FOR_EACH_INDEX(k, s.planes * s.rows.out * s.cols.out) {
        const OutWindow o = out_window(s, k);
        const i64 r0 = o.r0, r1 = o.r1, c0 = o.c0, c1 = o.c1;
        const T* xp = x + o.p * s.rows.len * w;
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
__device__ void max_bw(const T* dy, const i64* idx, T* dx, PoolShape s) {
    const i64 ow = s.cols.out;
    FOR_EACH_INDEX(k, s.planes * s.rows.len * s.cols.len) {
        const InCover v = in_cover(s, k);
        const i64 at = v.r * s.cols.len + v.c;
        const i64 base = v.p * s.rows.out * ow;
        T g = T(0);
        for (i64 i = v.i0; i < v.i1; ++i)
            for (i64 j = v.j0; j < v.j1; ++j) {
                const i64 o = base + i * ow + j;
                if (idx[o] == at) g += dy[o];
            }
        dx[k] = g;
    }
}

template <typename T>
__device__ void avg_fwd(const T* x, T* y, PoolShape s) {
    const i64 w = s.cols.len;
    FOR_EACH_INDEX(k, s.planes * s.rows.out * s.cols.out) {
        const OutWindow o = out_window(s, k);
        const T* xp = x + o.p * s.rows.len * w;
        T sum = T(0);
        for (i64 r = o.r0; r < o.r1; ++r)
            for (i64 c = o.c0; c < o.c1; ++c) sum += xp[r * w + c];
        y[k] = sum / divisor<T>(s, o.r1 - o.r0, o.c1 - o.c0);
    }
}

template <typename T>
__device__ void avg_bw(const T* dy, T* dx, PoolShape s) {
    const i64 ow = s.cols.out;
    FOR_EACH_INDEX(k, s.planes * s.rows.len * s.cols.len) {
        const InCover v = in_cover(s, k);
        const i64 base = v.p * s.rows.out * ow;
        T g = T(0);
        for (i64 i = v.i0; i < v.i1; ++i) {
            i64 r0, r1;
            window(s.rows, i, r0, r1);
            for (i64 j = v.j0; j < v.j1; ++j) {
                i64 c0, c1;
                window(s.cols, j, c0, c1);
                g += dy[base + i * ow + j] / divisor<T>(s, r1 - r0, c1 - c0);
            }
        }
        dx[k] = g;
    }
}

template <typename T>
__device__ void avg_global_bw(const T* dy, T* dx, i64 n, i64 hw, FastDiv div_hw, int fast, T d) {
    FOR_EACH_INDEX(k, n) {
        const i64 p = fast ? (i64)fdiv((u32)k, div_hw) : k / hw;
        dx[k] = T(0) + dy[p] / d;  // + 0: a -0 gradient comes out +0, as the CPU's sum
    }
}

#define POOL(TAG, T)                                                                           \
    extern "C" __global__ void max_pool_fwd_##TAG(const T* x, T* y, i64* idx, PoolShape s) {  \
        max_fwd<T>(x, y, idx, s);                                                              \
    }                                                                                          \
    extern "C" __global__ void max_pool_bw_##TAG(const T* dy, const i64* idx, T* dx,           \
                                                 PoolShape s) {                                \
        max_bw<T>(dy, idx, dx, s);                                                             \
    }                                                                                          \
    extern "C" __global__ void avg_pool_fwd_##TAG(const T* x, T* y, PoolShape s) {             \
        avg_fwd<T>(x, y, s);                                                                   \
    }                                                                                          \
    extern "C" __global__ void avg_pool_bw_##TAG(const T* dy, T* dx, PoolShape s) {            \
        avg_bw<T>(dy, dx, s);                                                                  \
    }                                                                                          \
    extern "C" __global__ void avg_pool_global_bw_##TAG(const T* dy, T* dx, i64 n, i64 hw,     \
                                                        FastDiv div_hw, int fast, T d) {       \
        avg_global_bw<T>(dy, dx, n, hw, div_hw, fast, d);                                      \
    }
POOL(f32, float)
POOL(f64, double)
