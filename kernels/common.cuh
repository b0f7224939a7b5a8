// common.cuh: definitions shared by every selfsup kernel file (prepended to each file before
// NVRTC compiles it, so no include paths are needed).
//
// Layout: tensors are flat buffers addressed by an element offset plus per-axis strides (in
// elements), exactly as the CPU side's `Layout`. An elementwise kernel walks the *output* in
// row-major order, one logical index `i` per thread (grid-stride loop), and maps `i` to the
// offset of each operand through `Dims`: up to MAX_DIMS axes, up to 3 strided operands.

#define MAX_DIMS 8

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

// Division of x < 2^31 by a divisor d >= 1 fixed on the host, as a multiply-high and a shift
// (Granlund-Montgomery, round-up): with l = ceil(log2 d), m = ceil(2^(31 + l) / d) < 2^32 and
// q = umulhi(x, m) >> (l - 1); d = 1 is m = 0. A 64-bit division costs tens of instructions,
// more than an elementwise kernel's memory traffic per element. Mirrors `cuda::launch::FastDiv`
// on the Rust side, which computes m and s.
struct FastDiv {
    u32 d, m, s;
};
__device__ __forceinline__ u32 fdiv(u32 x, FastDiv f) { return f.m ? (__umulhi(x, f.m) >> f.s) : x; }

// The FastDiv of divisor d >= 1 made on the device (once per block, where the divisor depends
// on the block): the host's `FastDiv::new`.
__device__ __forceinline__ FastDiv fastdiv_of(u32 d) {
    if (d <= 1) return FastDiv{1u, 0u, 0u};
    u32 l = 0;
    while ((1ull << l) < d) ++l;
    return FastDiv{d, (u32)(((1ull << (31 + l)) + d - 1) / d), l - 1};
}

// Shapes and strides of an elementwise launch; mirrors `cuda::launch::Dims` on the Rust side
// (repr(C), same field order). `contiguous` bit k set means operand k is contiguous from
// `offset[k]`, so its offset is `offset[k] + i` without the division walk.
struct Dims {
    int rank;
    int contiguous;
    i64 shape[MAX_DIMS];
    i64 stride[3][MAX_DIMS];
    i64 offset[3];
};

// Offset of logical index `i` in operand `k`.
__device__ __forceinline__ i64 operand_offset(const Dims& d, int k, i64 i) {
    if (d.contiguous & (1 << k)) return d.offset[k] + i;
    i64 off = d.offset[k];
    for (int ax = d.rank - 1; ax >= 0; --ax) {
        i64 n = d.shape[ax];
        i64 c = i % n;
        i /= n;
        off += c * d.stride[k][ax];
    }
    return off;
}

// f32 -> bf16 bits, round to nearest even (NaN stays NaN, quiet bit set), as copy.cu's cast
// and the `half` crate do: for kernels that write a bf16 operand of a later product.
__device__ __forceinline__ u16 bf16_bits_of(float x) {
    u32 u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

// The f32 value of bf16 bits.
__device__ __forceinline__ float bf16_value(u16 b) { return __uint_as_float((u32)b << 16); }

// Column sums of a row-major `rows x cols` matrix whose element i = r * cols + col is
// `value(i)`, per chunk of rows: partial[chunk * cols + col] = the sum of column col over the
// chunk's rows (rows_per_chunk rows a chunk; a linear layer's bias gradient, finished by a sum
// over chunks on the Rust side). Fixed order, so deterministic: thread (x, y) of a 32 x 8
// block walks column 32 * blockIdx.x + x, rows y, y + 8, ... of chunk blockIdx.y; the 8
// partial sums of a column are folded in shared memory. Launch: blocks of 32 x 8, grid
// (ceil(cols / 32), chunks).
#define COLSUM_ROWS_PER_THREAD_STEP 8
template <typename F>
__device__ void colsum_chunks(F value, float* partial, i64 rows, i64 cols, i64 rows_per_chunk) {
    __shared__ float sums[COLSUM_ROWS_PER_THREAD_STEP][33];
    const i64 col = (i64)blockIdx.x * 32 + threadIdx.x;
    const i64 r0 = (i64)blockIdx.y * rows_per_chunk;
    const i64 r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    float acc = 0.0f;
    if (col < cols) {
        for (i64 r = r0 + threadIdx.y; r < r1; r += COLSUM_ROWS_PER_THREAD_STEP) acc += value(r * cols + col);
    }
    sums[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        float t = 0.0f;
        for (int y = 0; y < COLSUM_ROWS_PER_THREAD_STEP; ++y) t += sums[y][threadIdx.x];
        partial[(i64)blockIdx.y * cols + col] = t;
    }
}

// For kernels that write a bf16 copy of a row-major f32 `rows x cols` matrix and sum its
// columns in the same pass (a linear layer's output gradient: its products' operand and its
// bias gradient): dst[i] = bf16(value(i)), and `colsum_chunks` (order and launch there) of
// the values as computed, or with SUM_STORED of the values as stored in bf16 (what a bias
// gradient summed from the bf16 copy would be).
template <bool SUM_STORED = false, typename F>
__device__ void bf16_store_colsum(F value, u16* dst, float* partial, i64 rows, i64 cols,
                                  i64 rows_per_chunk) {
    auto stored = [&](i64 i) {
        const float v = value(i);
        const u16 b = bf16_bits_of(v);
        dst[i] = b;
        return SUM_STORED ? bf16_value(b) : v;
    };
    colsum_chunks(stored, partial, rows, cols, rows_per_chunk);
}

// Grid-stride loop over [0, n).
#define FOR_EACH_INDEX(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// Elementwise kernels whose operands are all contiguous take runs of EW_RUN elements a thread
// (`for_each_run`): one index step per run, the run's loads issued together, and f32 moved as
// 16-byte vectors where every operand of the launch starts 16-byte aligned (`ew_aligned`). On
// an H200 (2026-12-04, ncu) the one-element `add_f32` kept the SMs 56% busy and DRAM 46%,
// bound by instructions. Launched over ceil(n / EW_RUN) threads (`cuda::launch::Dims::grid`).
#define EW_RUN 4
template <typename T> struct EwRun {
    T v[EW_RUN];
};
__device__ __forceinline__ bool ew_aligned(const void* p) { return ((size_t)p & 15) == 0; }

// Elements p[0 .. cnt) of a run (zero past cnt), one load each.
template <typename T> __device__ __forceinline__ EwRun<T> ew_load_each(const T* p, int cnt) {
    EwRun<T> r;
#pragma unroll
    for (int u = 0; u < EW_RUN; ++u) r.v[u] = u < cnt ? p[u] : T(0);
    return r;
}
// The same, as one 16-byte load for a whole f32 run when `vec` (the launch's operands are
// aligned).
template <typename T> __device__ __forceinline__ EwRun<T> ew_load(const T* p, int cnt, bool vec) {
    return ew_load_each(p, cnt);
}
template <> __device__ __forceinline__ EwRun<float> ew_load<float>(const float* p, int cnt, bool vec) {
    if (vec && cnt == EW_RUN) {
        const float4 q = *reinterpret_cast<const float4*>(p);
        return EwRun<float>{{q.x, q.y, q.z, q.w}};
    }
    return ew_load_each(p, cnt);
}
// Stores p[0 .. cnt) of a run, one store each, or as ew_load one vector store.
template <typename T> __device__ __forceinline__ void ew_store_each(T* p, const EwRun<T>& r, int cnt) {
#pragma unroll
    for (int u = 0; u < EW_RUN; ++u)
        if (u < cnt) p[u] = r.v[u];
}
template <typename T> __device__ __forceinline__ void ew_store(T* p, const EwRun<T>& r, int cnt, bool vec) {
    ew_store_each(p, r, cnt);
}
template <> __device__ __forceinline__ void ew_store<float>(float* p, const EwRun<float>& r, int cnt, bool vec) {
    if (vec && cnt == EW_RUN) {
        *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
    } else {
        ew_store_each(p, r, cnt);
    }
}

// Grid-stride loop over runs of EW_RUN elements of [0, n): f(first, count) for each.
template <typename F> __device__ __forceinline__ void for_each_run(i64 n, F f) {
    const i64 runs = (n + EW_RUN - 1) / EW_RUN;
    FOR_EACH_INDEX(t, runs) {
        const i64 first = t * EW_RUN;
        f(first, (int)(n - first < EW_RUN ? n - first : EW_RUN));
    }
}

// Whether operands 0 .. k - 1 of a launch are all contiguous (so `for_each_run` applies).
__device__ __forceinline__ bool ew_all_contiguous(const Dims& d, int k) {
    return (d.contiguous & ((1 << k) - 1)) == (1 << k) - 1;
}

// Folding operators for reductions. Max and min let NaN win, as the CPU kernels do.
struct SumOp {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const {
        return (a != a || a > b) ? a : b;
    }
};
struct MinOp {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const {
        return (a != a || a < b) ? a : b;
    }
};

// Folds `v` across a warp; lane 0 holds the result.
template <typename T, typename Op> __device__ __forceinline__ T warp_fold(T v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    return v;
}

// Folds `v` across the whole block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. Every thread of the block must call it.
template <typename T, typename Op> __device__ T block_fold(T v, Op op, T init) {
    __shared__ double scratch[33];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_fold(v, op);
    __syncthreads();  // the previous call's readers are done with scratch
    if (lane == 0) scratch[warp] = (double)v;
    __syncthreads();
    if (warp == 0) {
        T w = lane < warps ? (T)scratch[lane] : init;
        w = warp_fold(w, op);
        if (lane == 0) scratch[32] = (double)w;
    }
    __syncthreads();
    return (T)scratch[32];
}

// ---- Tensor-core products (attention_mma.cu, conv_mma.cu): bf16 operands, f32 accumulation.
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"),
// with g = lane / 4 and t = lane % 4: A (16 x 16, row-major) regs {a0 a1} row g cols 2t, 2t+1;
// {a2 a3} row g+8; {a4 a5} row g cols 2t+8, 2t+9; {a6 a7} row g+8 cols 2t+8, 2t+9. B (16 x 8)
// {b0 b1} rows 2t, 2t+1 col g; {b2 b3} rows 2t+8, 2t+9. C/D (16 x 8, f32) c0 c1 row g cols
// 2t, 2t+1; c2 c3 row g+8. Under SELFSUP_HOST_EMULATION `mma_bf16` computes the same product
// from the same fragments with warp shuffles.

// f32 -> bf16 bits (`bf16_bits_of`'s rounding), widened for packing: one `cvt.rn.bf16.f32` on
// sm_80+ (a NaN comes out canonical), the integer rounding elsewhere.
__device__ __forceinline__ u32 mma_bf16_bits(float f) {
#if !defined(SELFSUP_HOST_EMULATION) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    u16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    return bf16_bits_of(f);
#endif
}

// Two f32 as a bf16x2 register: `lo` in the low half (the lower-indexed element). On sm_80+
// one `cvt.rn.bf16x2.f32` (round to nearest even, as `bf16_bits_of`; a NaN comes out as the
// canonical 0x7fff rather than with its payload kept); elsewhere the integer rounding.
__device__ __forceinline__ u32 mma_pack(float lo, float hi) {
#if !defined(SELFSUP_HOST_EMULATION) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return mma_bf16_bits(lo) | (mma_bf16_bits(hi) << 16);
#endif
}

__device__ __forceinline__ float mma_lo(u32 r) { return __uint_as_float(r << 16); }
__device__ __forceinline__ float mma_hi(u32 r) { return __uint_as_float(r & 0xffff0000u); }

// Four 8 x 8 matrices of bf16 from shared memory into mma fragments, one collective load
// (PTX ISA, "ldmatrix"): lane 8j + i passes the address of row i of matrix j (8 contiguous
// elements, 16-byte aligned); lane L receives in r[j] row L / 4 of matrix j, elements
// 2 (L % 4) and 2 (L % 4) + 1 (the low half first). With `_trans`, column L / 4 instead, rows
// 2 (L % 4) and 2 (L % 4) + 1: an mma B fragment of a matrix stored k-major. Under
// SELFSUP_HOST_EMULATION the same from the same addresses, gathered with warp shuffles.
__device__ __forceinline__ void mma_ldmatrix_x4(u32 r[4], const u16* row) {
#ifdef SELFSUP_HOST_EMULATION
    __emu_require(((size_t)row & 15) == 0, "ldmatrix: a row address is not 16-byte aligned");
    const int lane = threadIdx.x & 31;
    for (int j = 0; j < 4; ++j) {
        const u16* p = __shfl_sync(0xffffffffu, row, 8 * j + (lane >> 2));
        r[j] = *(const u32*)(p + 2 * (lane & 3));
    }
#else
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
#endif
}

__device__ __forceinline__ void mma_ldmatrix_x4_trans(u32 r[4], const u16* row) {
#ifdef SELFSUP_HOST_EMULATION
    __emu_require(((size_t)row & 15) == 0, "ldmatrix: a row address is not 16-byte aligned");
    const int lane = threadIdx.x & 31;
    for (int j = 0; j < 4; ++j) {
        const u16* p0 = __shfl_sync(0xffffffffu, row, 8 * j + 2 * (lane & 3));
        const u16* p1 = __shfl_sync(0xffffffffu, row, 8 * j + 2 * (lane & 3) + 1);
        r[j] = (u32)p0[lane >> 2] | ((u32)p1[lane >> 2] << 16);
    }
#else
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
#endif
}

// 2^x for softmax weights: one `ex2.approx.ftz.f32` on a GPU (relative error about 2^-22, far
// below the bf16 rounding the weights get next; results below 2^-126 flush to zero, as any
// weight that small is lost in a sum of ones anyway), `exp2f` elsewhere.
__device__ __forceinline__ float mma_exp2(float x) {
#if !defined(SELFSUP_HOST_EMULATION) && defined(__CUDA_ARCH__)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#else
    return exp2f(x);
#endif
}

// d += A (16 x 16, bf16) . B (16 x 8, bf16), f32 accumulators; a warp-wide collective.
__device__ __forceinline__ void mma_bf16(float d[4], const u32 a[4], const u32 b[2]) {
#ifdef SELFSUP_HOST_EMULATION
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int kp = 0; kp < 8; ++kp) {  // k = 2 kp, 2 kp + 1
        const int src = kp & 3, hi = kp >> 2;
        const u32 a_g = __shfl_sync(0xffffffffu, a[hi ? 2 : 0], g * 4 + src);
        const u32 a_g8 = __shfl_sync(0xffffffffu, a[hi ? 3 : 1], g * 4 + src);
        const u32 b_0 = __shfl_sync(0xffffffffu, b[hi], (2 * t) * 4 + src);
        const u32 b_1 = __shfl_sync(0xffffffffu, b[hi], (2 * t + 1) * 4 + src);
        d[0] += mma_lo(a_g) * mma_lo(b_0) + mma_hi(a_g) * mma_hi(b_0);
        d[1] += mma_lo(a_g) * mma_lo(b_1) + mma_hi(a_g) * mma_hi(b_1);
        d[2] += mma_lo(a_g8) * mma_lo(b_0) + mma_hi(a_g8) * mma_hi(b_0);
        d[3] += mma_lo(a_g8) * mma_lo(b_1) + mma_hi(a_g8) * mma_hi(b_1);
    }
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
