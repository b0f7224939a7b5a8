// reduce.cu: row reductions out[r] = op over j < len of x[r, j] (sum, max, min; NaN wins for
// max and min, as on the CPU).
//
// Layout: x is viewed through `Dims` operand 0 as a row-major walk in which the reduced axes
// come last (the Rust side permutes them there), so element (r, j) is logical index r*len + j;
// out is contiguous with one value per row.
// Launch: one block of 256 threads per row (grid-stride over rows); each thread folds a strided
// share of the row, then `block_fold` (warp shuffles, per-warp partials in shared memory).
// Kernels: `reduce_<sum|max|min>_<f32|f64>`; for short rows, or many rows
// (`cuda::reduce::thread_per_row`), `reduce_short_<sum|max|min>_<f32|f64>` (one thread per row,
// 1-D grid-stride launch of 256 threads a block; below).
// Arg-reductions (`argreduce_*`) and the multi-tensor non-finite probe (`nonfinite_multi_*`)
// are described where they are defined, below.

template <typename T, typename Op>
__device__ void reduce_rows(const T* x, T* out, i64 rows, i64 len, const Dims& d, Op op, T init) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        T acc = init;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) acc = op(acc, x[operand_offset(d, 0, r * len + j)]);
        acc = block_fold(acc, op, init);
        if (threadIdx.x == 0) out[r] = acc;
    }
}

// Short or numerous rows (`cuda::reduce::thread_per_row`; e.g. the sum of a weight gradient's
// split-K slices, [slices, M, K] reduced over its first axis: M·K rows of tens of elements),
// where a block per row would leave most of its threads idle or the grid would run in dozens of
// waves: one thread per row,
// folding its elements in order; neighbouring threads take neighbouring rows, so when the
// reduced axis is the outer one of the stored tensor their loads are contiguous. The offset of
// (r, j) is the row's first element's plus j times the reduced axis' stride when that axis is
// the walk's innermost (`Dims` keeps it apart unless the operand is contiguous), so only one
// index walk per row.
template <typename T, typename Op>
__device__ void reduce_short_rows(const T* x, T* out, i64 rows, i64 len, const Dims& d, Op op, T init) {
    const bool inner = d.rank >= 1 && d.shape[d.rank - 1] == len;
    FOR_EACH_INDEX(r, rows) {
        T acc = init;
        if (d.contiguous & 1) {
            const T* p = x + d.offset[0] + r * len;
            for (i64 j = 0; j < len; ++j) acc = op(acc, p[j]);
        } else if (inner) {
            const T* p = x + operand_offset(d, 0, r * len);
            const i64 step = d.stride[0][d.rank - 1];
            for (i64 j = 0; j < len; ++j) acc = op(acc, p[j * step]);
        } else {
            for (i64 j = 0; j < len; ++j) acc = op(acc, x[operand_offset(d, 0, r * len + j)]);
        }
        out[r] = acc;
    }
}

#define REDUCE(KIND, OP, T, TAG, INIT)                                                         \
    extern "C" __global__ void reduce_##KIND##_##TAG(const T* x, T* out, i64 rows, i64 len,    \
                                                     Dims d) {                                 \
        reduce_rows<T>(x, out, rows, len, d, OP(), (T)(INIT));                                 \
    }                                                                                          \
    extern "C" __global__ void reduce_short_##KIND##_##TAG(const T* x, T* out, i64 rows,       \
                                                           i64 len, Dims d) {                  \
        reduce_short_rows<T>(x, out, rows, len, d, OP(), (T)(INIT));                           \
    }

REDUCE(sum, SumOp, float, f32, 0.0)
REDUCE(sum, SumOp, double, f64, 0.0)
REDUCE(max, MaxOp, float, f32, -__int_as_float(0x7f800000))
REDUCE(max, MaxOp, double, f64, -__longlong_as_double(0x7ff0000000000000LL))
REDUCE(min, MinOp, float, f32, __int_as_float(0x7f800000))
REDUCE(min, MinOp, double, f64, __longlong_as_double(0x7ff0000000000000LL))

// Arg-reductions: out[r] = index (i64) of the max (min) of row r, the first one on ties; a NaN
// beats every number and the first NaN wins, as the CPU's `arg_rows`. Same layout and launch as
// the reductions above, with (value, index) pairs folded instead of values.
// Kernels: `argreduce_<max|min>_<f32|f64|bf16>` (bf16 values compared as f32: a fused language-
// model head's logits, for a token accuracy).
template <typename T> struct ArgPair {
    T v;
    i64 i;
};

template <typename T, bool MAX> __device__ __forceinline__ ArgPair<T> arg_pick(ArgPair<T> a, ArgPair<T> b) {
    if (b.i < 0) return a;
    if (a.i < 0) return b;
    const bool an = a.v != a.v, bn = b.v != b.v;
    if (an != bn) return an ? a : b;
    if (!an && a.v != b.v) return (MAX ? a.v > b.v : a.v < b.v) ? a : b;
    return a.i <= b.i ? a : b;
}

// An element as the value compared: itself, or a bf16's f32 value.
__device__ __forceinline__ float arg_value(float v) { return v; }
__device__ __forceinline__ double arg_value(double v) { return v; }
__device__ __forceinline__ float arg_value(u16 v) { return bf16_value(v); }

template <typename T, bool MAX, typename S>
__device__ void argreduce_rows(const S* x, i64* out, i64 rows, i64 len, const Dims& d) {
    __shared__ T sv[32];
    __shared__ i64 si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        ArgPair<T> acc = {(T)0, -1};  // index -1: no element yet
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            ArgPair<T> e = {arg_value(x[operand_offset(d, 0, r * len + j)]), j};
            acc = arg_pick<T, MAX>(acc, e);
        }
        for (int o = 16; o > 0; o >>= 1) {
            ArgPair<T> other = {__shfl_down_sync(0xffffffffu, acc.v, o), __shfl_down_sync(0xffffffffu, acc.i, o)};
            acc = arg_pick<T, MAX>(acc, other);
        }
        __syncthreads();  // the previous row's readers are done with sv / si
        if (lane == 0) {
            sv[warp] = acc.v;
            si[warp] = acc.i;
        }
        __syncthreads();
        if (warp == 0) {
            ArgPair<T> w = {(T)0, -1};
            if (lane < warps) w = ArgPair<T>{sv[lane], si[lane]};
            for (int o = 16; o > 0; o >>= 1) {
                ArgPair<T> other = {__shfl_down_sync(0xffffffffu, w.v, o), __shfl_down_sync(0xffffffffu, w.i, o)};
                w = arg_pick<T, MAX>(w, other);
            }
            if (lane == 0) out[r] = w.i;
        }
    }
}

#define ARGREDUCE(KIND, MAX, T, S, TAG)                                                        \
    extern "C" __global__ void argreduce_##KIND##_##TAG(const S* x, i64* out, i64 rows, i64 len, \
                                                        Dims d) {                              \
        argreduce_rows<T, MAX>(x, out, rows, len, d);                                          \
    }

ARGREDUCE(max, true, float, float, f32)
ARGREDUCE(max, true, double, double, f64)
ARGREDUCE(max, true, float, u16, bf16)
ARGREDUCE(min, false, float, float, f32)
ARGREDUCE(min, false, double, double, f64)
ARGREDUCE(min, false, float, u16, bf16)

// Non-finite probe over many tensors in one launch (a training step's check that no gradient
// or running statistic holds a NaN or an infinity). `table` holds 3 u64 words per chunk of at
// most 65,536 elements of one tensor (`crate::cuda::table`): address, start, len (elements);
// block b writes partial[b] = the f64 sum over its chunk of x * 0, which is NaN exactly when
// the chunk holds a NaN or an infinity and 0 otherwise (the host sums the partials). Launch: a
// block of 256 threads per entry. CPU reference: `Tensor::non_finite_probe` on the CPU, the
// same sum of x * 0. Kernels: `nonfinite_multi_<f32|f64>`.
template <typename T> __device__ void nonfinite_multi(const u64* table, double* partial) {
    const u64* e = table + 3 * (i64)blockIdx.x;
    const T* x = (const T*)e[0];
    const i64 start = (i64)e[1], len = (i64)e[2];
    double acc = 0.0;
    for (i64 i = start + threadIdx.x; i < start + len; i += blockDim.x) acc += (double)x[i] * 0.0;
    acc = block_fold(acc, SumOp(), 0.0);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

extern "C" __global__ void nonfinite_multi_f32(const u64* table, double* partial) { nonfinite_multi<float>(table, partial); }
extern "C" __global__ void nonfinite_multi_f64(const u64* table, double* partial) { nonfinite_multi<double>(table, partial); }
