// binary.cu: elementwise binary ops out = f(a, b) with NumPy broadcasting, and comparisons
// (1 where true, 0 where false), and `where_<dtype>` (out = c != 0 ? a : b).
//
// One kernel per op and float dtype, `<op>_f32` / `<op>_f64`, where `<op>` is `BinaryOp::NAME`
// on the Rust side (its `f` is the CPU reference).
// Layout: a and b strided through `Dims` (operand 0 = a, 1 = b; broadcast axes have stride 0),
// out contiguous in the broadcast shape. Launch: 1-D grid-stride, 256 threads per block.

#define BINARY(NAME, EXPR)                                                                     \
    template <typename T> __device__ __forceinline__ T NAME##_op(T a, T b) { return EXPR; }    \
    template <typename T> __device__ void NAME##_body(const T* a, const T* b, T* out, i64 n,  \
                                                      Dims d) {                                \
        FOR_EACH_INDEX(i, n) {                                                                 \
            out[i] = NAME##_op<T>(a[operand_offset(d, 0, i)], b[operand_offset(d, 1, i)]);     \
        }                                                                                      \
    }                                                                                          \
    extern "C" __global__ void NAME##_f32(const float* a, const float* b, float* out, i64 n,   \
                                          Dims d) { NAME##_body<float>(a, b, out, n, d); }     \
    extern "C" __global__ void NAME##_f64(const double* a, const double* b, double* out, i64 n, \
                                          Dims d) { NAME##_body<double>(a, b, out, n, d); }

BINARY(add, a + b)
BINARY(sub, a - b)
BINARY(mul, a * b)
BINARY(div, a / b)
BINARY(pow, pow(a, b))
BINARY(maximum, fmax(a, b))
BINARY(minimum, fmin(a, b))
BINARY(eq, a == b ? T(1) : T(0))
BINARY(ne, a != b ? T(1) : T(0))
BINARY(lt, a < b ? T(1) : T(0))
BINARY(le, a <= b ? T(1) : T(0))
BINARY(gt, a > b ? T(1) : T(0))
BINARY(ge, a >= b ? T(1) : T(0))

// where: out = c != 0 ? a : b, all three broadcast (operands 0 = c, 1 = a, 2 = b).
template <typename T> __device__ void where_body(const T* c, const T* a, const T* b, T* out, i64 n, Dims d) {
    FOR_EACH_INDEX(i, n) {
        out[i] = c[operand_offset(d, 0, i)] != T(0) ? a[operand_offset(d, 1, i)] : b[operand_offset(d, 2, i)];
    }
}
extern "C" __global__ void where_f32(const float* c, const float* a, const float* b, float* out, i64 n, Dims d) {
    where_body<float>(c, a, b, out, n, d);
}
extern "C" __global__ void where_f64(const double* c, const double* a, const double* b, double* out, i64 n, Dims d) {
    where_body<double>(c, a, b, out, n, d);
}
