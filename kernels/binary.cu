// binary.cu: elementwise binary ops out = f(a, b) with NumPy broadcasting, and comparisons
// (1 where true, 0 where false), and `where_<dtype>` (out = c != 0 ? a : b).
//
// One kernel per op and float dtype, `<op>_f32` / `<op>_f64`, where `<op>` is `BinaryOp::NAME`
// on the Rust side (its `f` is the CPU reference).
// Layout: a and b strided through `Dims` (operand 0 = a, 1 = b; broadcast axes have stride 0),
// out contiguous in the broadcast shape. Launch: 1-D grid-stride, 256 threads per block, over
// the elements, or over runs of EW_RUN elements when every operand is contiguous
// (common.cuh's `for_each_run`: f32 as 16-byte vectors where aligned).

// out = op(a, b) over n elements: runs when both operands are contiguous, else one element a
// thread through `Dims`.
template <typename T, typename Op> __device__ void binary_body(const T* a, const T* b, T* out, i64 n, Dims d, Op op) {
    if (ew_all_contiguous(d, 2)) {
        const T* pa = a + d.offset[0];
        const T* pb = b + d.offset[1];
        const bool vec = ew_aligned(pa) && ew_aligned(pb) && ew_aligned(out);
        for_each_run(n, [&](i64 i, int cnt) {
            const EwRun<T> x = ew_load(pa + i, cnt, vec), y = ew_load(pb + i, cnt, vec);
            EwRun<T> z;
#pragma unroll
            for (int u = 0; u < EW_RUN; ++u) z.v[u] = op(x.v[u], y.v[u]);
            ew_store(out + i, z, cnt, vec);
        });
        return;
    }
    FOR_EACH_INDEX(i, n) { out[i] = op(a[operand_offset(d, 0, i)], b[operand_offset(d, 1, i)]); }
}

#define BINARY(NAME, EXPR)                                                                     \
    struct NAME##_op {                                                                         \
        template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return EXPR; } \
    };                                                                                         \
    extern "C" __global__ void NAME##_f32(const float* a, const float* b, float* out, i64 n,   \
                                          Dims d) { binary_body<float>(a, b, out, n, d, NAME##_op()); } \
    extern "C" __global__ void NAME##_f64(const double* a, const double* b, double* out, i64 n, \
                                          Dims d) { binary_body<double>(a, b, out, n, d, NAME##_op()); }

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
    if (ew_all_contiguous(d, 3)) {
        const T* pc = c + d.offset[0];
        const T* pa = a + d.offset[1];
        const T* pb = b + d.offset[2];
        const bool vec = ew_aligned(pc) && ew_aligned(pa) && ew_aligned(pb) && ew_aligned(out);
        for_each_run(n, [&](i64 i, int cnt) {
            const EwRun<T> x = ew_load(pc + i, cnt, vec), y = ew_load(pa + i, cnt, vec), z = ew_load(pb + i, cnt, vec);
            EwRun<T> o;
#pragma unroll
            for (int u = 0; u < EW_RUN; ++u) o.v[u] = x.v[u] != T(0) ? y.v[u] : z.v[u];
            ew_store(out + i, o, cnt, vec);
        });
        return;
    }
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
