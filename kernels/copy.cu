// copy.cu: strided copies, fills and dtype casts.
//
// `copy_b16` / `copy_b32` / `copy_b64` move elements of 2, 4 or 8 bytes (any dtype of that
// size) from a strided source (operand 0 of `Dims`) to a strided destination (operand 1):
// this is `contiguous()`, `assign` and the scatter of a gradient into a view.
// `fill_<dtype>` writes one value into every element of a contiguous range.
// `arange_<dtype>` (f32, f64, i64, u32) writes 0, 1, ..., n-1 (`Tensor::arange_on`).
// `cast_<from>_<to>` converts a contiguous buffer elementwise (round to nearest even for the
// narrowing float casts, as the `half` crate does on the CPU).
// Launch: 1-D grid-stride, 256 threads per block.
// `cast_f32_bf16_colsum` casts a contiguous row-major f32 `rows x cols` matrix to bf16 and, in
// the same pass, sums each column over a chunk of rows into `partial[chunk * cols + col]` (the
// bias gradient of a linear layer from its output gradient, finished by a sum over chunks on
// the Rust side): common.cuh's `bf16_store_colsum`, whose comment gives the order and launch.
// `colsum_bf16` sums the columns of a contiguous row-major bf16 `rows x cols` matrix per chunk
// of rows in f32 (the bias gradient of a layer whose output gradient is bf16 already):
// common.cuh's `colsum_chunks`, same order and launch.

#define COPY(NAME, T)                                                                          \
    extern "C" __global__ void NAME(const T* src, T* dst, i64 n, Dims d) {                     \
        FOR_EACH_INDEX(i, n) { dst[operand_offset(d, 1, i)] = src[operand_offset(d, 0, i)]; }  \
    }
COPY(copy_b16, u16)
COPY(copy_b32, u32)
COPY(copy_b64, u64)

#define FILL(NAME, T)                                                                          \
    extern "C" __global__ void NAME(T* dst, i64 n, T v) {                                      \
        FOR_EACH_INDEX(i, n) { dst[i] = v; }                                                   \
    }
FILL(fill_b16, u16)
FILL(fill_b32, u32)
FILL(fill_b64, u64)

#define ARANGE(NAME, T)                                                                        \
    extern "C" __global__ void NAME(T* dst, i64 n) {                                           \
        FOR_EACH_INDEX(i, n) { dst[i] = (T)i; }                                                \
    }
ARANGE(arange_f32, float)
ARANGE(arange_f64, double)
ARANGE(arange_i64, i64)
ARANGE(arange_u32, u32)

// bf16 and f16 travel as their 16-bit patterns (no CUDA headers needed under NVRTC).
struct bf16_bits { u16 v; };
struct f16_bits { u16 v; };

template <typename T> __device__ __forceinline__ float to_f32(T x) { return (float)x; }
template <> __device__ __forceinline__ float to_f32<bf16_bits>(bf16_bits x) {
    return __uint_as_float(((u32)x.v) << 16);
}
template <> __device__ __forceinline__ float to_f32<f16_bits>(f16_bits x) {
#ifdef SELFSUP_HOST_EMULATION  // tools/cuda-emu: no PTX on the host
    _Float16 h;
    memcpy(&h, &x.v, 2);
    return (float)h;
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.v));
    return f;
#endif
}
template <typename T> __device__ __forceinline__ T from_f32(float x) { return (T)x; }
// Round to nearest even; NaN stays NaN (common.cuh's `bf16_bits_of`).
template <> __device__ __forceinline__ bf16_bits from_f32<bf16_bits>(float x) {
    return bf16_bits{bf16_bits_of(x)};
}
template <> __device__ __forceinline__ f16_bits from_f32<f16_bits>(float x) {
#ifdef SELFSUP_HOST_EMULATION
    _Float16 f = (_Float16)x;
    u16 h;
    memcpy(&h, &f, 2);
#else
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
#endif
    return f16_bits{h};
}

// Casts between f64 and the integer types go directly (no f32 rounding on the way). Float to
// integer truncates toward zero and saturates out-of-range values, as Rust's `as` does on the
// CPU: PTX's cvt.rzi saturates. NaN goes to 0 as in Rust, tested first: cvt.rzi maps NaN to 0
// only from f32 into a 32-bit integer, and otherwise to 1 << (bits - 1) (an H200 gave
// i64::MIN for f32 NaN to i64, 2026-12-04).
// A C++ cast of an out-of-range or NaN float to an integer is undefined (the optimiser may
// assume it does not happen), so those four conversions are written as the PTX instruction.
#ifdef SELFSUP_HOST_EMULATION  // tools/cuda-emu: a host cast of an out-of-range float is undefined
#define CVT_RZI(D, x) emu::cvt_rzi_sat<D>(x)
#else
template <typename D, typename S> __device__ __forceinline__ D cvt_rzi(S x) { return (D)x; }
template <> __device__ __forceinline__ i64 cvt_rzi<i64, float>(float x) {
    if (x != x) return 0;  // NaN
    i64 r;
    asm("cvt.rzi.s64.f32 %0, %1;" : "=l"(r) : "f"(x));
    return r;
}
template <> __device__ __forceinline__ i64 cvt_rzi<i64, double>(double x) {
    if (x != x) return 0;  // NaN
    i64 r;
    asm("cvt.rzi.s64.f64 %0, %1;" : "=l"(r) : "d"(x));
    return r;
}
template <> __device__ __forceinline__ u32 cvt_rzi<u32, float>(float x) {
    if (x != x) return 0;  // NaN
    u32 r;
    asm("cvt.rzi.u32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
template <> __device__ __forceinline__ u32 cvt_rzi<u32, double>(double x) {
    if (x != x) return 0;  // NaN
    u32 r;
    asm("cvt.rzi.u32.f64 %0, %1;" : "=r"(r) : "d"(x));
    return r;
}
#define CVT_RZI(D, x) cvt_rzi<D>(x)
#endif
#define CAST_DIRECT(NAME, S, D)                                                                \
    extern "C" __global__ void NAME(const S* src, D* dst, i64 n) {                             \
        FOR_EACH_INDEX(i, n) { dst[i] = CVT_RZI(D, src[i]); }                                  \
    }
#define CAST_VIA_F32(NAME, S, D)                                                               \
    extern "C" __global__ void NAME(const S* src, D* dst, i64 n) {                             \
        FOR_EACH_INDEX(i, n) { dst[i] = from_f32<D>(to_f32<S>(src[i])); }                      \
    }
CAST_DIRECT(cast_f32_f64, float, double)
CAST_DIRECT(cast_f64_f32, double, float)
CAST_DIRECT(cast_i64_f32, i64, float)
CAST_DIRECT(cast_i64_f64, i64, double)
CAST_DIRECT(cast_u32_f32, u32, float)
CAST_DIRECT(cast_u32_f64, u32, double)
CAST_DIRECT(cast_u32_i64, u32, i64)
// i64 to u32 saturates (negative to 0, above 2^32 - 1 to 2^32 - 1), as the CPU's conversion
// does, where a C cast would wrap.
extern "C" __global__ void cast_i64_u32(const i64* src, u32* dst, i64 n) {
    FOR_EACH_INDEX(i, n) {
        const i64 x = src[i];
        dst[i] = x < 0 ? 0u : (x > (i64)0xffffffffLL ? 0xffffffffu : (u32)x);
    }
}
CAST_DIRECT(cast_f32_i64, float, i64)
CAST_DIRECT(cast_f64_i64, double, i64)
CAST_DIRECT(cast_f32_u32, float, u32)
CAST_DIRECT(cast_f64_u32, double, u32)
CAST_VIA_F32(cast_f32_bf16, float, bf16_bits)
CAST_VIA_F32(cast_bf16_f32, bf16_bits, float)
CAST_VIA_F32(cast_f32_f16, float, f16_bits)
CAST_VIA_F32(cast_f16_f32, f16_bits, float)

extern "C" __global__ void cast_f32_bf16_colsum(const float* src, bf16_bits* dst, float* partial,
                                                 i64 rows, i64 cols, i64 rows_per_chunk) {
    bf16_store_colsum([&](i64 i) { return src[i]; }, (u16*)dst, partial, rows, cols,
                      rows_per_chunk);
}

extern "C" __global__ void colsum_bf16(const u16* src, float* partial, i64 rows, i64 cols,
                                       i64 rows_per_chunk) {
    colsum_chunks([&](i64 i) { return bf16_value(src[i]); }, partial, rows, cols, rows_per_chunk);
}
