// attention_mma.cu: fused scaled-dot-product self-attention on the tensor cores (bf16 operands,
// f32 accumulation: `mma.sync.m16n8k16`), flash style, for f32 tensors when the run's matmul
// precision is bf16. Same op, layout and saved state as attention.cu (whose f32 kernels run on
// the CUDA cores); CPU reference: `crate::cpu::attention` (in f32: the tests compare with
// bf16 tolerances).
//
// Layout: x is the contiguous packed projection [B, T, 3, H, dh] (queries, keys, values; f32,
// or bf16 in the `_bf16_` and `_bf16o_` kernels, which `Tensor::qkv_attention` feeds from a
// product stored in bf16); out and its gradient are [B, T, H, dh] (f32, or bf16 in the
// `_bf16o_` kernels, which write the output projection's bf16 operand); lse (natural log of the
// row's sum of exp(s_ij)) and D_i = dO_i . O_i are [B, H, T] (f32); dx has x's layout and dtype. s_ij = scale * q_i . k_j; with `causal`, j <= i only.
// Launch: grid (ceil(T / 64), B * H), 128 threads = 4 warps; warp w of block (x, bh) owns rows
// x * 64 + 16 w .. + 16 (queries in the forward and dq kernels, keys in the dk/dv kernel; with
// `causal` the forward and dq take their row blocks in reverse order, the longest first) and
// keeps their fragments and accumulators in registers; the other side streams through shared
// memory in tiles of 64 rows, row-major [64][DH + 8] bf16, converted as they are loaded (one
// float4, or for bf16 x one 8-byte load, a thread a pass when dh is a multiple of 4 and the
// rows are aligned for it; rows past T and columns past dh are zero;
// DH >= dh is a template bound, 32 or 64). Every B fragment comes from `ldmatrix` (common.cuh):
// plain for products with a tile's transpose (S = Q K^T), transposing for products with the
// tile itself (P V), so no tile is stored twice; the 8-element row padding puts the 8 rows an
// ldmatrix phase reads in distinct banks. Only tiles that cross the diagonal or T test each
// score against the mask.
// Probabilities and dS are rounded to bf16 for their products, as in FlashAttention-2.
// Kernels: `attention_mma_fwd_<DH>` (out, lse), `attention_mma_bwd_dq_<DH>` (dq and D),
// `attention_mma_bwd_dkv_<DH>` (dk, dv; launched after dq, which writes D), the same three as
// `attention_mma_{fwd,bwd_dq,bwd_dkv}_bf16_<DH>` for bf16 x and dx (dq, dk, dv rounded once as
// they are stored, in pairs of columns when dh is even), and as `..._bf16o_<DH>` for bf16 x,
// dx, out and output gradient (out rounded once as it is stored, a NaN as the canonical one;
// D from the stored out).
//
// Fragment layouts and `mma_bf16`: common.cuh.

#define MMA_ROWS 64
#define MMA_TILE 64
#define MMA_THREADS 128
#define MMA_LOG2E 1.4426950408889634f
#define MMA_LN2 0.6931471805599453f

struct MmaShape {
    i64 B, T, H, dh;
};

// The rows of one head in a tensor of f32 or bf16 (u16) elements X: row t at base + t * stride
// (elements). `vec`: every row starts aligned to 4 elements and dh is a multiple of 4, so a
// row's columns load 4 at a time (a float4, or 8 bytes of bf16).
template <typename X>
struct MmaRows {
    const X* base;
    i64 stride;
    bool vec;
};

template <typename X>
__device__ __forceinline__ MmaRows<X> mma_rows(const X* p, i64 first, i64 stride, int dh) {
    const X* base = p + first;
    return {base, stride, dh % 4 == 0 && stride % 4 == 0 && ((size_t)base % (4 * sizeof(X))) == 0};
}

// Columns c .. c + 3 of the row at `p` (zero past dh; `ok`: the row is before T and c < dh),
// as two bf16x2 registers.
template <bool VEC>
__device__ __forceinline__ uint2 mma_fetch4(const float* p, bool ok, int c, int dh) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (ok) {
        if (VEC) {
            v = *(const float4*)p;
        } else {
            v.x = p[0];
            if (c + 1 < dh) v.y = p[1];
            if (c + 2 < dh) v.z = p[2];
            if (c + 3 < dh) v.w = p[3];
        }
    }
    return make_uint2(mma_pack(v.x, v.y), mma_pack(v.z, v.w));
}

// The same for a row of bf16 (its bits as they are).
template <bool VEC>
__device__ __forceinline__ uint2 mma_fetch4(const u16* p, bool ok, int c, int dh) {
    if (!ok) return make_uint2(0u, 0u);
    if (VEC) return *(const uint2*)p;
    const u32 e1 = c + 1 < dh ? p[1] : 0u, e2 = c + 2 < dh ? p[2] : 0u, e3 = c + 3 < dh ? p[3] : 0u;
    return make_uint2((u32)p[0] | (e1 << 16), e2 | (e3 << 16));
}

// Loads the 64 rows from r0 of `src` as bf16 into `rows` ([64][DH + 8], row-major): each
// thread moves 4 columns of a row per pass (one float4 or 8-byte load where `src.vec`, one
// 8-byte store), its row pointer stepping by a fixed stride; a warp covers 2 (DH 64) or 4
// (DH 32) whole rows, so its loads are contiguous.
template <int DH, bool VEC, typename X>
__device__ __forceinline__ void mma_load_as(const MmaRows<X>& src, int r0, int T, int dh, u16* rows) {
    constexpr int QUADS = DH / 4, ROWS_PER_PASS = MMA_THREADS / QUADS;
    constexpr int UNROLL = VEC ? MMA_TILE / ROWS_PER_PASS : 1;  // the element path is the rare one
    const int c = 4 * (threadIdx.x % QUADS), rr = threadIdx.x / QUADS;
    const bool col_ok = c < dh;
    const X* p = src.base + (i64)(r0 + rr) * src.stride + c;
    const i64 step = (i64)ROWS_PER_PASS * src.stride;
    u16* dst = rows + rr * (DH + 8) + c;
#pragma unroll UNROLL
    for (int pass = 0; pass < MMA_TILE / ROWS_PER_PASS; ++pass) {
        const bool ok = col_ok && r0 + rr + pass * ROWS_PER_PASS < T;
        *(uint2*)(dst + pass * ROWS_PER_PASS * (DH + 8)) = mma_fetch4<VEC>(p + pass * step, ok, c, dh);
    }
}

// `mma_load_as` with vector loads where the rows allow them (GPT-style heads: dh a multiple
// of 4), element loads otherwise.
template <int DH, typename X>
__device__ __forceinline__ void mma_load(const MmaRows<X>& src, int r0, int T, int dh, u16* rows) {
    if (src.vec)
        mma_load_as<DH, true>(src, r0, T, dh, rows);
    else
        mma_load_as<DH, false>(src, r0, T, dh, rows);
}

// A fragments of the warp's 16 rows (from `rows`, [64][DH + 8]), all DH / 16 k-steps.
template <int DH>
__device__ __forceinline__ void mma_a_frags(const u16* rows, int r0, u32 f[][4]) {
    const int LD = DH + 8, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int kk = 0; kk < DH / 16; ++kk) {
        const u16* p = rows + (r0 + g) * LD + kk * 16 + 2 * t;
        f[kk][0] = *(const u32*)p;
        f[kk][1] = *(const u32*)(p + 8 * LD);
        f[kk][2] = *(const u32*)(p + 8);
        f[kk][3] = *(const u32*)(p + 8 * LD + 8);
    }
}

// acc[n] (16 x 8 chunk n of a 16 x 64 tile) = A (16 x DH, fragments `a`) . M^T, where M's 64
// rows are stored row-major in `m` ([64][DH + 8]): B[k][n] = M[n][k], so a B fragment is row
// g of an 8 x 8 block of M: one ldmatrix gives the four of 32 reduction columns.
template <int DH>
__device__ __forceinline__ void mma_times_rows_t(const u32 a[][4], const u16* m, float acc[8][4]) {
    const int LD = DH + 8, lane = threadIdx.x & 31;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
        for (int kp = 0; kp < DH / 32; ++kp) {
            u32 r[4];  // matrices: columns 32 kp + 0, 8, 16, 24 of rows 8 n ..
            mma_ldmatrix_x4(r, m + (n * 8 + (lane & 7)) * LD + kp * 32 + (lane >> 3) * 8);
            const u32 b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            mma_bf16(acc[n], a[2 * kp], b0);
            mma_bf16(acc[n], a[2 * kp + 1], b1);
        }
    }
}

// acc[n] (16 x 8 chunk n of a 16 x DH tile) += P (16 x 64, f32 in C layout, rounded to bf16)
// . M, where M (64 x DH) is stored row-major in `m` ([64][DH + 8]): B[k][n] = M[k][n], so a B
// fragment is column g of an 8 x 8 block: one transposing ldmatrix gives two n chunks' worth.
template <int DH>
__device__ __forceinline__ void mma_p_times(const float p[8][4], const u16* m, float acc[][4]) {
    const int LD = DH + 8, lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < MMA_TILE / 16; ++kk) {
        const u32 a[4] = {mma_pack(p[2 * kk][0], p[2 * kk][1]), mma_pack(p[2 * kk][2], p[2 * kk][3]),
                          mma_pack(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                          mma_pack(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < DH / 16; ++np) {
            u32 r[4];  // matrices: rows 16 kk + 0, 8 of columns 16 np, then of 16 np + 8
            mma_ldmatrix_x4_trans(r, m + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + np * 16 +
                                         (lane >> 4) * 8);
            const u32 b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            mma_bf16(acc[2 * np], a, b0);
            mma_bf16(acc[2 * np + 1], a, b1);
        }
    }
}

// The sum of `v` over the 4 lanes that hold one row of a C fragment.
__device__ __forceinline__ float mma_row_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float mma_row_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// Block and warp coordinates shared by the three kernels. With `causal` the row blocks run in
// reverse order (the forward's and dq's last blocks see the most keys, so they start first and
// the grid's tail is short).
struct MmaBlock {
    int T, dh, H, b, h, row0, wrow, warp, g, t;
    i64 bh, qkv_stride, row_stride;
    __device__ __forceinline__ MmaBlock(const MmaShape& s, bool reverse) {
        T = (int)s.T;
        dh = (int)s.dh;
        H = (int)s.H;
        bh = blockIdx.y;
        b = (int)(bh / H);
        h = (int)(bh % H);
        const int bx = reverse ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
        row0 = bx * MMA_ROWS;
        warp = threadIdx.x >> 5;
        g = (threadIdx.x & 31) >> 2;
        t = threadIdx.x & 3;
        wrow = row0 + warp * 16;
        qkv_stride = 3 * (i64)H * dh;
        row_stride = (i64)H * dh;
    }
    // Part `part` (0 queries, 1 keys, 2 values) of the packed projection [B, T, 3, H, dh].
    template <typename X>
    __device__ __forceinline__ MmaRows<X> qkv(const X* x, int part) const {
        return mma_rows(x, (((i64)b * T * 3 + part) * H + h) * dh, qkv_stride, dh);
    }
    // A [B, T, H, dh] tensor's rows of this head.
    template <typename O>
    __device__ __forceinline__ MmaRows<O> rows(const O* p) const {
        return mma_rows(p, ((i64)b * T * H + h) * dh, row_stride, dh);
    }
};

// Stores the warp's 16 x DH accumulator tile times `scale` as rows of `dst` (row i at
// dst + i * stride, columns past dh and rows past T skipped).
template <int DH>
__device__ __forceinline__ void mma_store_rows(const float acc[][4], float scale, float* dst, i64 stride,
                                               const MmaBlock& k) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = k.wrow + k.g + 8 * r;
        if (i >= k.T) continue;
        float* p = dst + (i64)i * stride;
#pragma unroll
        for (int n = 0; n < DH / 8; ++n) {
            const int c = n * 8 + 2 * k.t;
            if (c < k.dh) p[c] = acc[n][2 * r] * scale;
            if (c + 1 < k.dh) p[c + 1] = acc[n][2 * r + 1] * scale;
        }
    }
}

// The same into bf16 rows, each value rounded once; a thread's two adjacent columns as one
// 4-byte store when dh and the stride are even and dst is 4-byte aligned (so every pair is).
template <int DH>
__device__ __forceinline__ void mma_store_rows(const float acc[][4], float scale, u16* dst, i64 stride,
                                               const MmaBlock& k) {
    const bool pairs = ((k.dh | stride) & 1) == 0 && ((size_t)dst & 3) == 0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = k.wrow + k.g + 8 * r;
        if (i >= k.T) continue;
        u16* p = dst + (i64)i * stride;
#pragma unroll
        for (int n = 0; n < DH / 8; ++n) {
            const int c = n * 8 + 2 * k.t;
            if (c >= k.dh) continue;
            const float lo = acc[n][2 * r] * scale, hi = acc[n][2 * r + 1] * scale;
            if (pairs) {
                *(u32*)(p + c) = (u32)bf16_bits_of(lo) | ((u32)bf16_bits_of(hi) << 16);
            } else {
                p[c] = bf16_bits_of(lo);
                if (c + 1 < k.dh) p[c + 1] = bf16_bits_of(hi);
            }
        }
    }
}

// An element of out or its gradient as f32.
__device__ __forceinline__ float mma_value(float v) { return v; }
__device__ __forceinline__ float mma_value(u16 v) { return bf16_value(v); }

// Stores the forward's output: the warp's 16 x DH tile as rows of f32 `dst` (row i at
// dst + i * stride), directly from the accumulators.
template <int DH>
__device__ __forceinline__ void mma_stage_rows(const float acc[][4], float* dst, i64 stride, const MmaBlock& k,
                                               u16*) {
    mma_store_rows<DH>(acc, 1.f, dst, stride, k);
}

// The same into bf16 rows, staged in the tile buffer `stage` ([64][DH + 8]) once every warp is
// done with it (all threads call this): each value rounded once (`mma_pack`) into the warp's
// 16 rows there, then copied out 8 bytes (4 columns) a thread where the rows allow it,
// element by element otherwise. Staged, the kernel fits 128 registers (4 blocks an SM on
// sm_90); storing from the accumulators as `mma_store_rows` does took 137.
template <int DH>
__device__ __forceinline__ void mma_stage_rows(const float acc[][4], u16* dst, i64 stride, const MmaBlock& k,
                                               u16* stage) {
    const int LD = DH + 8, lane = threadIdx.x & 31;
    __syncthreads();
    u16* rows = stage + k.warp * 16 * LD;
#pragma unroll
    for (int n = 0; n < DH / 8; ++n)
#pragma unroll
        for (int r = 0; r < 2; ++r)
            *(u32*)(rows + (k.g + 8 * r) * LD + n * 8 + 2 * k.t) = mma_pack(acc[n][2 * r], acc[n][2 * r + 1]);
    __syncwarp();
    const bool vec = k.dh % 4 == 0 && stride % 4 == 0 && ((size_t)dst & 7) == 0;
    constexpr int QUADS = DH / 4;
    for (int e = lane; e < 16 * QUADS; e += 32) {
        const int rr = e / QUADS, c = 4 * (e % QUADS), i = k.wrow + rr;
        if (i >= k.T || c >= k.dh) continue;
        const u16* src = rows + rr * LD + c;
        u16* p = dst + (i64)i * stride + c;
        if (vec) {
            *(uint2*)p = *(const uint2*)src;
        } else {
            for (int j = 0; j < 4 && c + j < k.dh; ++j) p[j] = src[j];
        }
    }
}

template <int DH, typename X, typename O>
__device__ void attention_mma_fwd(const X* x, O* out, float* lse, MmaShape s, int causal, double scale_d) {
    __shared__ __align__(16) u16 ks[MMA_TILE * (DH + 8)];
    __shared__ __align__(16) u16 vs[MMA_TILE * (DH + 8)];
    const MmaBlock k(s, causal);
    const int T = k.T, g = k.g, t = k.t, wrow = k.wrow;
    const float sl2 = (float)scale_d * MMA_LOG2E, NEG = -__int_as_float(0x7f800000);
    const MmaRows<X> qs = k.qkv(x, 0), kr = k.qkv(x, 1), vr = k.qkv(x, 2);

    mma_load<DH>(qs, k.row0, T, k.dh, ks);
    __syncthreads();
    u32 qf[DH / 16][4];
    mma_a_frags<DH>(ks, k.warp * 16, qf);
    float o[DH / 8][4];
#pragma unroll
    for (int n = 0; n < DH / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {NEG, NEG}, l[2] = {0.f, 0.f};  // rows g and g + 8, log2 units; l per lane
    const int kend = causal ? min(T, k.row0 + MMA_ROWS) : T;
    for (int k0 = 0; k0 < kend; k0 += MMA_TILE) {
        __syncthreads();  // every warp is done with the previous tile (and with Q in ks)
        mma_load<DH>(kr, k0, T, k.dh, ks);
        mma_load<DH>(vr, k0, T, k.dh, vs);
        __syncthreads();
        if (wrow >= T || (causal && k0 > wrow + 15)) continue;  // nothing of this tile for the warp
        float sc[8][4];
        mma_times_rows_t<DH>(qf, ks, sc);
        // Only a tile past T or across the diagonal has keys to mask (warp-uniform).
        const bool edge = k0 + MMA_TILE > T || (causal && k0 + MMA_TILE - 1 > wrow);
        float mx[2] = {NEG, NEG};
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float v = sc[n][e] * sl2;
                if (edge) {
                    const int j = k0 + n * 8 + 2 * t + (e & 1), i = wrow + g + (e >> 1) * 8;
                    if (j >= T || (causal && j > i)) v = NEG;
                }
                sc[n][e] = v;
                mx[e >> 1] = fmaxf(mx[e >> 1], v);
            }
        float ref[2], corr[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const float mnew = fmaxf(m[r], mma_row_max(mx[r]));
            ref[r] = mnew == NEG ? 0.f : mnew;  // a row with no key yet keeps zeros
            corr[r] = mma_exp2(m[r] - ref[r]);
            m[r] = mnew;
            l[r] *= corr[r];
        }
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                sc[n][e] = mma_exp2(sc[n][e] - ref[e >> 1]);
                l[e >> 1] += sc[n][e];
            }
#pragma unroll
        for (int n = 0; n < DH / 8; ++n) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
        mma_p_times<DH>(sc, vs, o);
    }
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] = mma_row_sum(l[r]);
        inv[r] = 1.f / l[r];
        const int i = wrow + g + 8 * r;
        if (i < T && t == 0) lse[k.bh * T + i] = m[r] * MMA_LN2 + logf(l[r]);
    }
#pragma unroll
    for (int n = 0; n < DH / 8; ++n) {
        o[n][0] *= inv[0];
        o[n][1] *= inv[0];
        o[n][2] *= inv[1];
        o[n][3] *= inv[1];
    }
    mma_stage_rows<DH>(o, out + ((i64)k.b * T * k.H + k.h) * k.dh, k.row_stride, k, ks);
}

template <int DH, typename X, typename O>
__device__ void attention_mma_bwd_dq(const X* x, const O* out, const float* lse, const O* gr, X* dx,
                                     float* drow, MmaShape s, int causal, double scale_d) {
    __shared__ __align__(16) u16 ks[MMA_TILE * (DH + 8)];
    __shared__ __align__(16) u16 vs[MMA_TILE * (DH + 8)];
    __shared__ float rl[MMA_ROWS], rd[MMA_ROWS];
    const MmaBlock k(s, causal);
    const int T = k.T, g = k.g, t = k.t, wrow = k.wrow;
    const float sl2 = (float)scale_d * MMA_LOG2E;
    const MmaRows<X> qs = k.qkv(x, 0), kr = k.qkv(x, 1), vr = k.qkv(x, 2);
    const MmaRows<O> go = k.rows(gr);

    // Row terms: lse in log2 units and D_i = dO_i . O_i (f32, also written out for dk/dv): two
    // threads a row, each over half its columns.
    {
        const MmaRows<O> oo = k.rows(out);
        const int r = threadIdx.x >> 1, half = threadIdx.x & 1, i = k.row0 + r;
        float d = 0.f, li = 0.f;
        if (i < T) {
            const O *po = oo.base + (i64)i * oo.stride, *pg = go.base + (i64)i * go.stride;
            for (int c = half; c < k.dh; c += 2) d += mma_value(po[c]) * mma_value(pg[c]);
            li = lse[k.bh * T + i] * MMA_LOG2E;
        }
        d += __shfl_xor_sync(0xffffffffu, d, 1);
        if (half == 0) {
            if (i < T) drow[k.bh * T + i] = d;
            rl[r] = li;
            rd[r] = d;
        }
    }
    mma_load<DH>(qs, k.row0, T, k.dh, ks);
    mma_load<DH>(go, k.row0, T, k.dh, vs);
    __syncthreads();
    u32 qf[DH / 16][4], gf[DH / 16][4];
    mma_a_frags<DH>(ks, k.warp * 16, qf);
    mma_a_frags<DH>(vs, k.warp * 16, gf);
    const float li[2] = {rl[k.warp * 16 + g], rl[k.warp * 16 + g + 8]};
    const float di[2] = {rd[k.warp * 16 + g], rd[k.warp * 16 + g + 8]};
    float dq[DH / 8][4];
#pragma unroll
    for (int n = 0; n < DH / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;
    const int kend = causal ? min(T, k.row0 + MMA_ROWS) : T;
    for (int k0 = 0; k0 < kend; k0 += MMA_TILE) {
        __syncthreads();
        mma_load<DH>(kr, k0, T, k.dh, ks);
        mma_load<DH>(vr, k0, T, k.dh, vs);
        __syncthreads();
        if (wrow >= T || (causal && k0 > wrow + 15)) continue;
        float p[8][4], dp[8][4];
        mma_times_rows_t<DH>(qf, ks, p);
        mma_times_rows_t<DH>(gf, vs, dp);
        // Rows past T are never stored, so only keys need masking, and only at an edge tile.
        const bool edge = k0 + MMA_TILE > T || (causal && k0 + MMA_TILE - 1 > wrow);
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float pr = mma_exp2(p[n][e] * sl2 - li[e >> 1]);
                if (edge) {
                    const int j = k0 + n * 8 + 2 * t + (e & 1), i = wrow + g + (e >> 1) * 8;
                    if (j >= T || (causal && j > i)) pr = 0.f;
                }
                p[n][e] = pr * (dp[n][e] - di[e >> 1]);  // dS / scale
            }
        mma_p_times<DH>(p, ks, dq);
    }
    mma_store_rows<DH>(dq, (float)scale_d, dx + (((i64)k.b * T * 3) * k.H + k.h) * k.dh, k.qkv_stride, k);
}

template <int DH, typename X, typename O>
__device__ void attention_mma_bwd_dkv(const X* x, const float* lse, const O* gr, const float* drow, X* dx,
                                      MmaShape s, int causal, double scale_d) {
    __shared__ __align__(16) u16 qs[MMA_TILE * (DH + 8)];
    __shared__ __align__(16) u16 gs[MMA_TILE * (DH + 8)];
    __shared__ float rl[MMA_TILE], rd[MMA_TILE];
    // Key blocks in order: with `causal` the first see the most queries.
    const MmaBlock k(s, false);
    const int T = k.T, g = k.g, t = k.t, wrow = k.wrow;
    const float sl2 = (float)scale_d * MMA_LOG2E;
    const MmaRows<X> qr = k.qkv(x, 0), kr = k.qkv(x, 1), vr = k.qkv(x, 2);
    const MmaRows<O> go = k.rows(gr);

    mma_load<DH>(kr, k.row0, T, k.dh, qs);
    mma_load<DH>(vr, k.row0, T, k.dh, gs);
    __syncthreads();
    u32 kf[DH / 16][4], vf[DH / 16][4];
    mma_a_frags<DH>(qs, k.warp * 16, kf);
    mma_a_frags<DH>(gs, k.warp * 16, vf);
    float dk[DH / 8][4], dv[DH / 8][4];
#pragma unroll
    for (int n = 0; n < DH / 8; ++n) {
        dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.f;
        dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.f;
    }
    // With `causal`, query rows before this block's first key row see none of its keys.
    const int qstart = causal ? k.row0 : 0;
    for (int q0 = qstart; q0 < T; q0 += MMA_TILE) {
        __syncthreads();
        mma_load<DH>(qr, q0, T, k.dh, qs);
        mma_load<DH>(go, q0, T, k.dh, gs);
        if (threadIdx.x < MMA_TILE) {
            const int r = threadIdx.x, i = q0 + r;
            rl[r] = i < T ? lse[k.bh * T + i] * MMA_LOG2E : 0.f;
            rd[r] = i < T ? drow[k.bh * T + i] : 0.f;
        }
        __syncthreads();
        if (wrow >= T || (causal && q0 + MMA_TILE - 1 < wrow)) continue;
        float p[8][4], dp[8][4];  // transposed: rows are this warp's keys, columns queries
        mma_times_rows_t<DH>(kf, qs, p);
        mma_times_rows_t<DH>(vf, gs, dp);
        // Queries past T must not count (their sums run over queries); keys past T are never
        // stored. Only a tile past T or across the diagonal has any to mask (warp-uniform).
        const bool edge = q0 + MMA_TILE > T || (causal && q0 < wrow + 15);
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int c = n * 8 + 2 * t + (e & 1);
                float pr = mma_exp2(p[n][e] * sl2 - rl[c]);
                if (edge) {
                    const int i = q0 + c, j = wrow + g + (e >> 1) * 8;
                    if (i >= T || (causal && j > i)) pr = 0.f;
                }
                p[n][e] = pr;
                dp[n][e] = pr * (dp[n][e] - rd[c]);  // dS^T / scale
            }
        mma_p_times<DH>(p, gs, dv);
        mma_p_times<DH>(dp, qs, dk);
    }
    const i64 first = (((i64)k.b * T * 3) * k.H + k.h) * k.dh;
    mma_store_rows<DH>(dk, (float)scale_d, dx + first + k.row_stride, k.qkv_stride, k);
    mma_store_rows<DH>(dv, 1.f, dx + first + 2 * k.row_stride, k.qkv_stride, k);
}

// The three kernels for head-width bound DH with x and dx of element type X and out and its
// gradient of element type O, named with TAG (empty for f32, `bf16_` for bf16 x, `bf16o_` for
// bf16 x and out).
#define ATTENTION_MMA(DH, TAG, X, O)                                                               \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS) attention_mma_fwd_##TAG##DH(         \
        const X* x, O* out, float* lse, MmaShape s, int causal, double scale) {                   \
        attention_mma_fwd<DH>(x, out, lse, s, causal, scale);                                      \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS) attention_mma_bwd_dq_##TAG##DH(      \
        const X* x, const O* out, const float* lse, const O* g, X* dx, float* drow, MmaShape s,   \
        int causal, double scale) {                                                                \
        attention_mma_bwd_dq<DH>(x, out, lse, g, dx, drow, s, causal, scale);                      \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS) attention_mma_bwd_dkv_##TAG##DH(     \
        const X* x, const float* lse, const O* g, const float* drow, X* dx, MmaShape s,           \
        int causal, double scale) {                                                                \
        attention_mma_bwd_dkv<DH>(x, lse, g, drow, dx, s, causal, scale);                          \
    }

ATTENTION_MMA(32, , float, float)
ATTENTION_MMA(64, , float, float)
ATTENTION_MMA(32, bf16_, u16, float)
ATTENTION_MMA(64, bf16_, u16, float)
ATTENTION_MMA(32, bf16o_, u16, u16)
ATTENTION_MMA(64, bf16o_, u16, u16)
