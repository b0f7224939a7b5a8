// reduce.cu: row reductions out[r] = op over j < len of x[r, j] (sum, max, min; NaN wins for
// max and min, as on the CPU).
//
// Layout: x is viewed through `Dims` operand 0 as a row-major walk in which the reduced axes
// come last (the Rust side permutes them there), so element (r, j) is logical index r*len + j;
// out is contiguous with one value per row.
// Launch: one block of 256 threads per row (grid-stride over rows); each thread folds a strided
// share of the row, then `block_fold` (warp shuffles, per-warp partials in shared memory).
// Kernels: `reduce_<sum|max|min>_<f32|f64>`.

template <typename T, typename Op>
__device__ void reduce_rows(const T* x, T* out, i64 rows, i64 len, const Dims& d, Op op, T init) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        T acc = init;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) acc = op(acc, x[operand_offset(d, 0, r * len + j)]);
        acc = block_fold(acc, op, init);
        if (threadIdx.x == 0) out[r] = acc;
    }
}

#define REDUCE(KIND, OP, T, TAG, INIT)                                                         \
    extern "C" __global__ void reduce_##KIND##_##TAG(const T* x, T* out, i64 rows, i64 len,    \
                                                     Dims d) {                                 \
        reduce_rows<T>(x, out, rows, len, d, OP(), (T)(INIT));                                 \
    }

REDUCE(sum, SumOp, float, f32, 0.0)
REDUCE(sum, SumOp, double, f64, 0.0)
REDUCE(max, MaxOp, float, f32, -__int_as_float(0x7f800000))
REDUCE(max, MaxOp, double, f64, -__longlong_as_double(0x7ff0000000000000LL))
REDUCE(min, MinOp, float, f32, __int_as_float(0x7f800000))
REDUCE(min, MinOp, double, f64, __longlong_as_double(0x7ff0000000000000LL))
