// softmax.cu: softmax and log-softmax along rows: y[r, j] = exp(x[r, j] - m) / s or
// x[r, j] - m - log(s), with m the row maximum (0 if the row is all -inf) and
// s = sum_j exp(x[r, j] - m). CPU reference: `crate::cpu::softmax::softmax_rows`.
//
// Layout: x through `Dims` operand 0 with the softmax axis last (element (r, j) is logical
// index r*len + j); y contiguous rows. Launch: one block of 256 threads per row, grid-stride
// over rows; three passes over the row (max, sum, write), reductions by `block_fold`.
// Kernels: `softmax_<f32|f64>`, `log_softmax_<f32|f64>`.

template <typename T>
__device__ void softmax_rows(const T* x, T* y, i64 rows, i64 len, const Dims& d, bool log_out) {
    const T neg_inf = (T)(-__longlong_as_double(0x7ff0000000000000LL));
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        T m = neg_inf;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) m = MaxOp()(m, x[operand_offset(d, 0, r * len + j)]);
        m = block_fold(m, MaxOp(), neg_inf);
        if (m == neg_inf) m = T(0);
        T s = T(0);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) s += exp(x[operand_offset(d, 0, r * len + j)] - m);
        s = block_fold(s, SumOp(), T(0));
        const T ls = log(s);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            T v = x[operand_offset(d, 0, r * len + j)] - m;
            y[r * len + j] = log_out ? v - ls : exp(v) / s;
        }
    }
}

extern "C" __global__ void softmax_f32(const float* x, float* y, i64 rows, i64 len, Dims d) {
    softmax_rows<float>(x, y, rows, len, d, false);
}
extern "C" __global__ void softmax_f64(const double* x, double* y, i64 rows, i64 len, Dims d) {
    softmax_rows<double>(x, y, rows, len, d, false);
}
extern "C" __global__ void log_softmax_f32(const float* x, float* y, i64 rows, i64 len, Dims d) {
    softmax_rows<float>(x, y, rows, len, d, true);
}
extern "C" __global__ void log_softmax_f64(const double* x, double* y, i64 rows, i64 len, Dims d) {
    softmax_rows<double>(x, y, rows, len, d, true);
}
