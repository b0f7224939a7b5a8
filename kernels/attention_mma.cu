// attention_mma.cu: fused scaled-dot-product self-attention on the tensor cores (bf16 operands,
// f32 accumulation: `mma.sync.m16n8k16`), flash style, for f32 tensors when the run's matmul
// precision is bf16. Same op, layout and saved state as attention.cu (whose f32 kernels run on
// the CUDA cores); CPU reference: `crate::cpu::attention` (in f32: the tests compare with
// bf16 tolerances).
//
// Layout: x is the contiguous packed projection [B, T, 3, H, dh] (f32: queries, keys, values);
// out is [B, T, H, dh]; lse (natural log of the row's sum of exp(s_ij)) and D_i = dO_i . O_i
// are [B, H, T]; dx has x's layout. s_ij = scale * q_i . k_j; with `causal`, j <= i only.
// Launch: grid (ceil(T / 64), B * H), 128 threads = 4 warps; warp w of block (x, bh) owns rows
// x * 64 + 16 w .. + 16 (queries in the forward and dq kernels, keys in the dk/dv kernel) and
// keeps their fragments and accumulators in registers; the other side streams through shared
// memory in tiles of 64 rows, converted to bf16 as they are loaded (rows past T and columns
// past dh are zero; DH >= dh is a template bound, 32 or 64). Tiles used as the B operand along
// their rows are stored transposed, so every fragment is one 32-bit shared load; rows are
// padded by 8 bf16 so the 8 rows a fragment load touches fall in distinct banks.
// Probabilities and dS are rounded to bf16 for their products, as in FlashAttention-2.
// Kernels: `attention_mma_fwd_<DH>` (out, lse), `attention_mma_bwd_dq_<DH>` (dq and D),
// `attention_mma_bwd_dkv_<DH>` (dk, dv; launched after dq, which writes D).
//
// Fragment layouts and `mma_bf16`: common.cuh.

#define MMA_ROWS 64
#define MMA_TILE 64
#define MMA_LOG2E 1.4426950408889634f
#define MMA_LN2 0.6931471805599453f

struct MmaShape {
    i64 B, T, H, dh;
    __device__ __forceinline__ i64 qkv(i64 b, i64 t, int part, i64 h) const {
        return (((b * T + t) * 3 + part) * H + h) * dh;
    }
    __device__ __forceinline__ i64 row(i64 b, i64 t, i64 h) const { return ((b * T + t) * H + h) * dh; }
};

// Loads the 64 rows from r0 of f32 `src` (row t of head (b, h) at `off(t)`), as bf16: into
// `rows` ([64][DH + 8], row-major) and/or `cols` ([DH][64 + 8], transposed), either may be null.
template <int DH, typename Off>
__device__ __forceinline__ void mma_load(const float* src, Off off, i64 r0, i64 T, i64 dh, u16* rows, u16* cols) {
    const int LD = DH + 8, LDT = MMA_TILE + 8;
    for (int e = threadIdx.x; e < MMA_TILE * DH / 2; e += blockDim.x) {
        const int r = e / (DH / 2), c = 2 * (e % (DH / 2));
        const i64 t = r0 + r;
        float v0 = 0.f, v1 = 0.f;
        if (t < T) {
            const float* p = src + off(t);
            if (c < dh) v0 = p[c];
            if (c + 1 < dh) v1 = p[c + 1];
        }
        const u32 w = mma_pack(v0, v1);
        if (rows) *(u32*)&rows[r * LD + c] = w;
        if (cols) {
            cols[c * LDT + r] = (u16)(w & 0xffffu);
            cols[(c + 1) * LDT + r] = (u16)(w >> 16);
        }
    }
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
// rows are stored row-major in `m` ([64][DH + 8]): B[k][n] = M[n][k].
template <int DH>
__device__ __forceinline__ void mma_times_rows_t(const u32 a[][4], const u16* m, float acc[8][4]) {
    const int LD = DH + 8, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < DH / 16; ++kk) {
            const u16* p = m + (n * 8 + g) * LD + kk * 16 + 2 * t;
            const u32 b[2] = {*(const u32*)p, *(const u32*)(p + 8)};
            mma_bf16(acc[n], a[kk], b);
        }
    }
}

// acc[n] (16 x 8 chunk n of a 16 x DH tile) += P (16 x 64, f32 in C layout, rounded to bf16)
// . M, where M (64 x DH) is stored transposed in `mt` ([DH][64 + 8]): B[k][n] = M[k][n].
template <int DH>
__device__ __forceinline__ void mma_p_times(const float p[8][4], const u16* mt, float acc[][4]) {
    const int LDT = MMA_TILE + 8, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int kk = 0; kk < MMA_TILE / 16; ++kk) {
        const u32 a[4] = {mma_pack(p[2 * kk][0], p[2 * kk][1]), mma_pack(p[2 * kk][2], p[2 * kk][3]),
                          mma_pack(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                          mma_pack(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
        for (int n = 0; n < DH / 8; ++n) {
            const u16* q = mt + (n * 8 + g) * LDT + kk * 16 + 2 * t;
            const u32 b[2] = {*(const u32*)q, *(const u32*)(q + 8)};
            mma_bf16(acc[n], a, b);
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

template <int DH>
__device__ void attention_mma_fwd(const float* x, float* out, float* lse, MmaShape s, int causal, double scale_d) {
    const int LD = DH + 8, LDT = MMA_TILE + 8;
    __shared__ __align__(16) u16 ks[MMA_TILE * (DH + 8)];
    __shared__ __align__(16) u16 vt[DH * (MMA_TILE + 8)];
    const i64 bh = blockIdx.y, b = bh / s.H, h = bh % s.H;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const i64 row0 = (i64)blockIdx.x * MMA_ROWS, wrow = row0 + warp * 16;
    const float sl2 = (float)scale_d * MMA_LOG2E, NEG = -__int_as_float(0x7f800000);

    mma_load<DH>(x, [&](i64 r) { return s.qkv(b, r, 0, h); }, row0, s.T, s.dh, ks, (u16*)0);
    __syncthreads();
    u32 qf[DH / 16][4];
    mma_a_frags<DH>(ks, warp * 16, qf);
    float o[DH / 8][4];
#pragma unroll
    for (int n = 0; n < DH / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {NEG, NEG}, l[2] = {0.f, 0.f};  // rows g and g + 8, log2 units; l per lane
    const i64 kend = causal ? min(s.T, row0 + MMA_ROWS) : s.T;
    for (i64 k0 = 0; k0 < kend; k0 += MMA_TILE) {
        __syncthreads();  // every warp is done with the previous tile (and with Q in ks)
        mma_load<DH>(x, [&](i64 r) { return s.qkv(b, r, 1, h); }, k0, s.T, s.dh, ks, (u16*)0);
        mma_load<DH>(x, [&](i64 r) { return s.qkv(b, r, 2, h); }, k0, s.T, s.dh, (u16*)0, vt);
        __syncthreads();
        if (wrow >= s.T || (causal && k0 > wrow + 15)) continue;  // nothing of this tile for the warp
        float sc[8][4];
        mma_times_rows_t<DH>(qf, ks, sc);
        float mx[2] = {NEG, NEG};
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const i64 j = k0 + n * 8 + 2 * t + (e & 1), i = wrow + g + (e >> 1) * 8;
                const bool ok = j < s.T && (!causal || j <= i);
                sc[n][e] = ok ? sc[n][e] * sl2 : NEG;
                mx[e >> 1] = fmaxf(mx[e >> 1], sc[n][e]);
            }
        float ref[2], corr[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const float mnew = fmaxf(m[r], mma_row_max(mx[r]));
            ref[r] = mnew == NEG ? 0.f : mnew;  // a row with no key yet keeps zeros
            corr[r] = exp2f(m[r] - ref[r]);
            m[r] = mnew;
            l[r] *= corr[r];
        }
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                sc[n][e] = exp2f(sc[n][e] - ref[e >> 1]);
                l[e >> 1] += sc[n][e];
            }
#pragma unroll
        for (int n = 0; n < DH / 8; ++n) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
        mma_p_times<DH>(sc, vt, o);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] = mma_row_sum(l[r]);
        const i64 i = wrow + g + 8 * r;
        if (i < s.T) {
            const float inv = 1.f / l[r];
            float* po = out + s.row(b, i, h);
#pragma unroll
            for (int n = 0; n < DH / 8; ++n) {
                const int c = n * 8 + 2 * t;
                if (c < s.dh) po[c] = o[n][2 * r] * inv;
                if (c + 1 < s.dh) po[c + 1] = o[n][2 * r + 1] * inv;
            }
            if (t == 0) lse[bh * s.T + i] = m[r] * MMA_LN2 + logf(l[r]);
        }
    }
}

template <int DH>
__device__ void attention_mma_bwd_dq(const float* x, const float* out, const float* lse, const float* gr, float* dx,
                                     float* drow, MmaShape s, int causal, double scale_d) {
    const int LD = DH + 8;
    __shared__ __align__(16) u16 ks[MMA_TILE * (DH + 8)];
    __shared__ __align__(16) u16 vs[MMA_TILE * (DH + 8)];
    __shared__ __align__(16) u16 kt[DH * (MMA_TILE + 8)];
    __shared__ float rl[MMA_ROWS], rd[MMA_ROWS];
    const i64 bh = blockIdx.y, b = bh / s.H, h = bh % s.H;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const i64 row0 = (i64)blockIdx.x * MMA_ROWS, wrow = row0 + warp * 16;
    const float sl2 = (float)scale_d * MMA_LOG2E;

    // Row terms: lse in log2 units and D_i = dO_i . O_i (f32, also written out for dk/dv).
    for (int r = threadIdx.x; r < MMA_ROWS; r += blockDim.x) {
        const i64 i = row0 + r;
        float d = 0.f, li = 0.f;
        if (i < s.T) {
            const float *po = out + s.row(b, i, h), *pg = gr + s.row(b, i, h);
            for (i64 c = 0; c < s.dh; ++c) d += po[c] * pg[c];
            drow[bh * s.T + i] = d;
            li = lse[bh * s.T + i] * MMA_LOG2E;
        }
        rl[r] = li;
        rd[r] = d;
    }
    mma_load<DH>(x, [&](i64 r) { return s.qkv(b, r, 0, h); }, row0, s.T, s.dh, ks, (u16*)0);
    mma_load<DH>(gr, [&](i64 r) { return s.row(b, r, h); }, row0, s.T, s.dh, vs, (u16*)0);
    __syncthreads();
    u32 qf[DH / 16][4], gf[DH / 16][4];
    mma_a_frags<DH>(ks, warp * 16, qf);
    mma_a_frags<DH>(vs, warp * 16, gf);
    const float li[2] = {rl[warp * 16 + g], rl[warp * 16 + g + 8]};
    const float di[2] = {rd[warp * 16 + g], rd[warp * 16 + g + 8]};
    float dq[DH / 8][4];
#pragma unroll
    for (int n = 0; n < DH / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;
    const i64 kend = causal ? min(s.T, row0 + MMA_ROWS) : s.T;
    for (i64 k0 = 0; k0 < kend; k0 += MMA_TILE) {
        __syncthreads();
        mma_load<DH>(x, [&](i64 r) { return s.qkv(b, r, 1, h); }, k0, s.T, s.dh, ks, kt);
        mma_load<DH>(x, [&](i64 r) { return s.qkv(b, r, 2, h); }, k0, s.T, s.dh, vs, (u16*)0);
        __syncthreads();
        if (wrow >= s.T || (causal && k0 > wrow + 15)) continue;
        float p[8][4], dp[8][4];
        mma_times_rows_t<DH>(qf, ks, p);
        mma_times_rows_t<DH>(gf, vs, dp);
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const i64 j = k0 + n * 8 + 2 * t + (e & 1), i = wrow + g + (e >> 1) * 8;
                const bool ok = j < s.T && i < s.T && (!causal || j <= i);
                const float pr = ok ? exp2f(p[n][e] * sl2 - li[e >> 1]) : 0.f;
                p[n][e] = pr * (dp[n][e] - di[e >> 1]);  // dS / scale
            }
        mma_p_times<DH>(p, kt, dq);
    }
    const float sc = (float)scale_d;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const i64 i = wrow + g + 8 * r;
        if (i >= s.T) continue;
        float* pd = dx + s.qkv(b, i, 0, h);
#pragma unroll
        for (int n = 0; n < DH / 8; ++n) {
            const int c = n * 8 + 2 * t;
            if (c < s.dh) pd[c] = dq[n][2 * r] * sc;
            if (c + 1 < s.dh) pd[c + 1] = dq[n][2 * r + 1] * sc;
        }
    }
}

template <int DH>
__device__ void attention_mma_bwd_dkv(const float* x, const float* lse, const float* gr, const float* drow, float* dx,
                                      MmaShape s, int causal, double scale_d) {
    __shared__ __align__(16) u16 qs[MMA_TILE * (DH + 8)];
    __shared__ __align__(16) u16 qt[DH * (MMA_TILE + 8)];
    __shared__ __align__(16) u16 gs[MMA_TILE * (DH + 8)];
    __shared__ __align__(16) u16 gt[DH * (MMA_TILE + 8)];
    __shared__ float rl[MMA_TILE], rd[MMA_TILE];
    const i64 bh = blockIdx.y, b = bh / s.H, h = bh % s.H;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const i64 row0 = (i64)blockIdx.x * MMA_ROWS, wrow = row0 + warp * 16;
    const float sl2 = (float)scale_d * MMA_LOG2E;

    mma_load<DH>(x, [&](i64 r) { return s.qkv(b, r, 1, h); }, row0, s.T, s.dh, qs, (u16*)0);
    mma_load<DH>(x, [&](i64 r) { return s.qkv(b, r, 2, h); }, row0, s.T, s.dh, gs, (u16*)0);
    __syncthreads();
    u32 kf[DH / 16][4], vf[DH / 16][4];
    mma_a_frags<DH>(qs, warp * 16, kf);
    mma_a_frags<DH>(gs, warp * 16, vf);
    float dk[DH / 8][4], dv[DH / 8][4];
#pragma unroll
    for (int n = 0; n < DH / 8; ++n) {
        dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.f;
        dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.f;
    }
    // With `causal`, query rows before this block's first key row see none of its keys.
    const i64 qstart = causal ? row0 : 0;
    for (i64 q0 = qstart; q0 < s.T; q0 += MMA_TILE) {
        __syncthreads();
        mma_load<DH>(x, [&](i64 r) { return s.qkv(b, r, 0, h); }, q0, s.T, s.dh, qs, qt);
        mma_load<DH>(gr, [&](i64 r) { return s.row(b, r, h); }, q0, s.T, s.dh, gs, gt);
        for (int r = threadIdx.x; r < MMA_TILE; r += blockDim.x) {
            const i64 i = q0 + r;
            rl[r] = i < s.T ? lse[bh * s.T + i] * MMA_LOG2E : 0.f;
            rd[r] = i < s.T ? drow[bh * s.T + i] : 0.f;
        }
        __syncthreads();
        if (wrow >= s.T || (causal && q0 + MMA_TILE - 1 < wrow)) continue;
        float p[8][4], dp[8][4];  // transposed: rows are this warp's keys, columns queries
        mma_times_rows_t<DH>(kf, qs, p);
        mma_times_rows_t<DH>(vf, gs, dp);
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int c = n * 8 + 2 * t + (e & 1);
                const i64 i = q0 + c, j = wrow + g + (e >> 1) * 8;
                const bool ok = i < s.T && j < s.T && (!causal || j <= i);
                const float pr = ok ? exp2f(p[n][e] * sl2 - rl[c]) : 0.f;
                p[n][e] = pr;
                dp[n][e] = pr * (dp[n][e] - rd[c]);  // dS^T / scale
            }
        mma_p_times<DH>(p, gt, dv);
        mma_p_times<DH>(dp, qt, dk);
    }
    const float sc = (float)scale_d;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const i64 j = wrow + g + 8 * r;
        if (j >= s.T) continue;
        float *pk = dx + s.qkv(b, j, 1, h), *pv = dx + s.qkv(b, j, 2, h);
#pragma unroll
        for (int n = 0; n < DH / 8; ++n) {
            const int c = n * 8 + 2 * t;
            if (c < s.dh) {
                pk[c] = dk[n][2 * r] * sc;
                pv[c] = dv[n][2 * r];
            }
            if (c + 1 < s.dh) {
                pk[c + 1] = dk[n][2 * r + 1] * sc;
                pv[c + 1] = dv[n][2 * r + 1];
            }
        }
    }
}

#define ATTENTION_MMA(DH)                                                                                  \
    extern "C" __global__ void __launch_bounds__(128) attention_mma_fwd_##DH(                             \
        const float* x, float* out, float* lse, MmaShape s, int causal, double scale) {                   \
        attention_mma_fwd<DH>(x, out, lse, s, causal, scale);                                              \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(128) attention_mma_bwd_dq_##DH(                          \
        const float* x, const float* out, const float* lse, const float* g, float* dx, float* drow,       \
        MmaShape s, int causal, double scale) {                                                            \
        attention_mma_bwd_dq<DH>(x, out, lse, g, dx, drow, s, causal, scale);                              \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(128) attention_mma_bwd_dkv_##DH(                         \
        const float* x, const float* lse, const float* g, const float* drow, float* dx, MmaShape s,       \
        int causal, double scale) {                                                                        \
        attention_mma_bwd_dkv<DH>(x, lse, g, drow, dx, s, causal, scale);                                  \
    }

ATTENTION_MMA(32)
ATTENTION_MMA(64)
