// unary.cu: elementwise unary ops y = f(x) and their fused backward dx = g * f'(x, y).
//
// One kernel per op and float dtype, named `<op>_f32` / `<op>_f64` (forward) and
// `<op>_bw_f32` / `<op>_bw_f64` (backward); `<op>` is `UnaryOp::NAME` on the Rust side, whose
// `f`/`df` are the CPU reference. Scalar parameters (slope, clamp bounds, the constant of
// x + c, ...) arrive as p0, p1 in the order of the op's fields.
// Layout: operands strided through `Dims` (operand 0 = x, 1 = y, 2 = g), output contiguous.
// Launch: 1-D grid-stride, 256 threads per block, over the elements, or over runs of EW_RUN
// elements when every operand is contiguous (common.cuh's `for_each_run`).
//
// The middle of a two-layer MLP at bf16 matmul precision (`Tensor::mlp2`; CPU reference: the
// composed linear, activation, linear with the first layer's output and the activation's
// gradient rounded to bf16), for the activations of `MlpActivation`; every operand is bf16,
// as under PyTorch's autocast, the arithmetic f32:
// `<op>_to_bf16_bf16(h, a, n)`: a = bf16(f(h)) for contiguous h[n] (the first layer's output;
// a is the second layer's operand). 1-D grid-stride over pairs of elements (one 4-byte load
// and store each; the last element of an odd n alone), 256 threads per block.
// `<op>_bw_bf16_colsum_bf16(h, da, dh, partial, rows, cols, rows_per_chunk)`: for row-major
// `rows x cols` h and da (the activation's gradient), dh = bf16(da * f'(h, f(h))) (the first
// layer's output gradient, as its products read it) and, in the same pass, the f32 column
// sums of dh as stored over each chunk of rows into partial[chunk * cols + col] (its bias
// gradient, finished on the Rust side): common.cuh's `bf16_store_colsum` (blocks of 32 x 8
// threads, grid (ceil(cols / 32), chunks)), as copy.cu's `cast_f32_bf16_colsum` sums a linear
// layer's.

template <typename T> __device__ __forceinline__ T sigmoid_(T x) { return T(1) / (T(1) + exp(-x)); }
template <typename T> __device__ __forceinline__ T pow_scalar_(T x, double p) {
    if (p == 2.0) return x * x;
    if (p == 1.0) return x;
    if (p == 0.0) return T(1);
    return pow(x, T(p));
}

#define SQRT_2_OVER_PI 0.7978845608028654
#define INV_SQRT_2 0.7071067811865476
#define INV_SQRT_2PI 0.3989422804014327

// y = op.f(x) over n elements: runs when x is contiguous (common.cuh's `for_each_run`), else
// one element a thread through `Dims`.
template <typename T, typename Op> __device__ void unary_fwd_body(const T* x, T* y, i64 n, Dims d, Op op) {
    if (ew_all_contiguous(d, 1)) {
        const T* px = x + d.offset[0];
        const bool vec = ew_aligned(px) && ew_aligned(y);
        for_each_run(n, [&](i64 i, int cnt) {
            const EwRun<T> v = ew_load(px + i, cnt, vec);
            EwRun<T> o;
#pragma unroll
            for (int u = 0; u < EW_RUN; ++u) o.v[u] = op.template f<T>(v.v[u]);
            ew_store(y + i, o, cnt, vec);
        });
        return;
    }
    FOR_EACH_INDEX(i, n) { y[i] = op.template f<T>(x[operand_offset(d, 0, i)]); }
}

// dx = g * op.df(x, y) over n elements (y null when the derivative does not read it; its
// layout is then x's): runs when every operand is contiguous, else one element a thread.
template <typename T, typename Op>
__device__ void unary_bwd_body(const T* x, const T* y, const T* g, T* dx, i64 n, Dims d, Op op) {
    if (ew_all_contiguous(d, 3)) {
        const T* px = x + d.offset[0];
        const T* py = y ? y + d.offset[1] : nullptr;
        const T* pg = g + d.offset[2];
        const bool vec = ew_aligned(px) && (!py || ew_aligned(py)) && ew_aligned(pg) && ew_aligned(dx);
        for_each_run(n, [&](i64 i, int cnt) {
            const EwRun<T> xv = ew_load(px + i, cnt, vec), gv = ew_load(pg + i, cnt, vec);
            const EwRun<T> yv = py ? ew_load(py + i, cnt, vec) : EwRun<T>{};
            EwRun<T> o;
#pragma unroll
            for (int u = 0; u < EW_RUN; ++u) o.v[u] = gv.v[u] * op.template df<T>(xv.v[u], yv.v[u]);
            ew_store(dx + i, o, cnt, vec);
        });
        return;
    }
    FOR_EACH_INDEX(i, n) {
        T xv = x[operand_offset(d, 0, i)];
        T yv = y ? y[operand_offset(d, 1, i)] : T(0);
        dx[i] = g[operand_offset(d, 2, i)] * op.template df<T>(xv, yv);
    }
}

#define UNARY(NAME, FWD, DF)                                                                   \
    template <typename T> __device__ __forceinline__ T NAME##_f(T x, double p0, double p1) {   \
        return FWD;                                                                            \
    }                                                                                          \
    template <typename T> __device__ __forceinline__ T NAME##_df(T x, T y, double p0, double p1) { \
        return DF;                                                                             \
    }                                                                                          \
    struct NAME##_fn {                                                                         \
        double p0, p1;                                                                         \
        template <typename T> __device__ __forceinline__ T f(T x) const { return NAME##_f<T>(x, p0, p1); } \
        template <typename T> __device__ __forceinline__ T df(T x, T y) const {                \
            return NAME##_df<T>(x, y, p0, p1);                                                 \
        }                                                                                      \
    };                                                                                         \
    template <typename T>                                                                      \
    __device__ void NAME##_fwd(const T* x, T* y, i64 n, Dims d, double p0, double p1) {        \
        unary_fwd_body<T>(x, y, n, d, NAME##_fn{p0, p1});                                      \
    }                                                                                          \
    template <typename T>                                                                      \
    __device__ void NAME##_bwd(const T* x, const T* y, const T* g, T* dx, i64 n, Dims d,       \
                               double p0, double p1) {                                         \
        unary_bwd_body<T>(x, y, g, dx, n, d, NAME##_fn{p0, p1});                               \
    }                                                                                          \
    extern "C" __global__ void NAME##_f32(const float* x, float* y, i64 n, Dims d, double p0,  \
                                          double p1) { NAME##_fwd<float>(x, y, n, d, p0, p1); } \
    extern "C" __global__ void NAME##_f64(const double* x, double* y, i64 n, Dims d, double p0, \
                                          double p1) { NAME##_fwd<double>(x, y, n, d, p0, p1); } \
    extern "C" __global__ void NAME##_bw_f32(const float* x, const float* y, const float* g,   \
                                             float* dx, i64 n, Dims d, double p0, double p1) { \
        NAME##_bwd<float>(x, y, g, dx, n, d, p0, p1);                                          \
    }                                                                                          \
    extern "C" __global__ void NAME##_bw_f64(const double* x, const double* y, const double* g, \
                                             double* dx, i64 n, Dims d, double p0, double p1) { \
        NAME##_bwd<double>(x, y, g, dx, n, d, p0, p1);                                         \
    }

UNARY(neg, -x, T(-1))
UNARY(exp, exp(x), y)
UNARY(log, log(x), T(1) / x)
UNARY(sqrt, sqrt(x), T(0.5) / y)
UNARY(rsqrt, T(1) / sqrt(x), T(-0.5) * y * y * y)
UNARY(abs, fabs(x), x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0)))
UNARY(relu, x > T(0) ? x : T(0), x > T(0) ? T(1) : T(0))
UNARY(leaky_relu, x > T(0) ? x : T(p0) * x, x > T(0) ? T(1) : T(p0))
UNARY(sigmoid, sigmoid_(x), y * (T(1) - y))
UNARY(tanh, tanh(x), T(1) - y * y)
UNARY(silu, x * sigmoid_(x), sigmoid_(x) * (T(1) + x * (T(1) - sigmoid_(x))))
UNARY(gelu_erf, T(0.5) * x * (T(1) + erf(x * T(INV_SQRT_2))),
      T(0.5) * (T(1) + erf(x * T(INV_SQRT_2))) + x * T(INV_SQRT_2PI) * exp(T(-0.5) * x * x))
UNARY(gelu_tanh,
      T(0.5) * x * (T(1) + tanh(T(SQRT_2_OVER_PI) * (x + T(0.044715) * x * x * x))),
      T(0.5) * (T(1) + tanh(T(SQRT_2_OVER_PI) * (x + T(0.044715) * x * x * x))) +
          T(0.5) * x *
              (T(1) - tanh(T(SQRT_2_OVER_PI) * (x + T(0.044715) * x * x * x)) *
                          tanh(T(SQRT_2_OVER_PI) * (x + T(0.044715) * x * x * x))) *
              T(SQRT_2_OVER_PI) * (T(1) + T(3.0 * 0.044715) * x * x))
UNARY(clamp, x < T(p0) ? T(p0) : (x > T(p1) ? T(p1) : x), (x > T(p0) && x < T(p1)) ? T(1) : T(0))
UNARY(add_scalar, x + T(p0), T(1))
UNARY(mul_scalar, x * T(p0), T(p0))
UNARY(pow_scalar, pow_scalar_(x, p0), T(p0) * pow_scalar_(x, p0 - 1.0))
UNARY(rdiv_scalar, T(p0) / x, -y / x)

#define MLP_ACT(NAME)                                                                          \
    extern "C" __global__ void NAME##_to_bf16_bf16(const u16* h, u16* a, i64 n) {              \
        auto f = [](u16 v) {                                                                   \
            return (u32)bf16_bits_of(NAME##_f<float>(bf16_value(v), 0.0, 0.0));                \
        };                                                                                     \
        const u32* h2 = (const u32*)h;                                                         \
        u32* a2 = (u32*)a;                                                                     \
        FOR_EACH_INDEX(i, n / 2) {                                                             \
            const u32 v = h2[i];                                                               \
            a2[i] = f((u16)(v & 0xffffu)) | (f((u16)(v >> 16)) << 16);                         \
        }                                                                                      \
        if ((n & 1) && blockIdx.x == 0 && threadIdx.x == 0) a[n - 1] = (u16)f(h[n - 1]);       \
    }                                                                                          \
    extern "C" __global__ void NAME##_bw_bf16_colsum_bf16(const u16* h, const u16* da,         \
                                                          u16* dh, float* partial, i64 rows,   \
                                                          i64 cols, i64 rows_per_chunk) {      \
        auto value = [&](i64 i) {                                                              \
            const float hv = bf16_value(h[i]);                                                 \
            return bf16_value(da[i]) *                                                         \
                   NAME##_df<float>(hv, NAME##_f<float>(hv, 0.0, 0.0), 0.0, 0.0);              \
        };                                                                                     \
        bf16_store_colsum<true>(value, dh, partial, rows, cols, rows_per_chunk);               \
    }

MLP_ACT(relu)
MLP_ACT(gelu_erf)
MLP_ACT(gelu_tanh)
MLP_ACT(silu)
MLP_ACT(tanh)
MLP_ACT(sigmoid)
