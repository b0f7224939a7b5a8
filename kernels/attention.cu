// attention.cu: fused scaled-dot-product self-attention on packed projections, flash style:
// the T x T scores are never stored; the forward keeps a running max and sum per query row
// (online softmax) and saves the row's log-sum-exp, the backward recomputes the probabilities
// from it. CPU reference: `crate::cpu::attention` (the same op, `Tensor::attention_qkv`).
//
// Layout: x is the contiguous packed projection [B, T, 3, H, dh] (queries, keys, values);
// out is [B, T, H, dh]; lse and the backward's row terms D_i = dO_i . O_i are [B, H, T]; the
// input gradient dx has x's layout. s_ij = scale * q_i . k_j; with `causal`, j <= i only.
// Launch: grid (ceil(T / 64), B * H), 64 threads; thread r of block (x, bh) owns query row
// (forward, dq) or key row (dk, dv) x * 64 + r of head bh and keeps that row and its
// accumulators in registers (DH >= dh, a template bound: 16, 32, 64 or 128 for f32, 64 for
// f64); the other side's rows stream through shared memory in tiles of AttTile<T>::K rows (32
// for f32, 16 for f64), and the forward stages each thread's scores of a tile there too.
// Kernels: `attention_fwd_<f32|f64>_<DH>` (out, lse), `attention_bwd_dq_<f32|f64>_<DH>` (dq
// and D), `attention_bwd_dkv_<f32|f64>_<DH>` (dk, dv; launched after dq, which writes D).

#define ATT_ROWS 64

template <typename T> struct AttTile {
    static const int K = sizeof(T) == 8 ? 16 : 32;
};

struct AttShape {
    i64 B, T, H, dh;
    __device__ __forceinline__ i64 qkv(i64 b, i64 t, int part, i64 h) const {
        return (((b * T + t) * 3 + part) * H + h) * dh;
    }
    __device__ __forceinline__ i64 row(i64 b, i64 t, i64 h) const { return ((b * T + t) * H + h) * dh; }
};

template <typename T> __device__ __forceinline__ T att_neg_inf();
template <> __device__ __forceinline__ float att_neg_inf<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double att_neg_inf<double>() {
    return -__longlong_as_double(0x7ff0000000000000LL);
}

// Loads rows [r0, r0 + TK) of part `part` (and of part `part2` when >= 0) of head (b, h) into
// shared tiles; rows past T and columns past dh are zero.
template <typename T, int DH, int TK>
__device__ __forceinline__ void att_load(const T* src, const AttShape& s, i64 b, i64 h, i64 r0, int part,
                                         T (*tile)[DH], const T* src2, int part2, T (*tile2)[DH]) {
    for (int e = threadIdx.x; e < TK * DH; e += blockDim.x) {
        const int r = e / DH, c = e % DH;
        const i64 t = r0 + r;
        const bool ok = t < s.T && c < s.dh;
        tile[r][c] = ok ? src[s.qkv(b, t, part, h) + c] : (T)0;
        if (src2) tile2[r][c] = ok ? src2[s.qkv(b, t, part2, h) + c] : (T)0;
    }
}

template <typename T, int DH>
__device__ void attention_fwd(const T* x, T* out, T* lse, AttShape s, int causal, double scale_d) {
    const int TK = AttTile<T>::K;
    __shared__ T ks[AttTile<T>::K][DH];
    __shared__ T vs[AttTile<T>::K][DH];
    __shared__ T scores[ATT_ROWS][AttTile<T>::K + 1];  // each thread's scores of the tile
    const T scale = (T)scale_d, NEG = att_neg_inf<T>();
    const i64 bh = blockIdx.y, b = bh / s.H, h = bh % s.H;
    const i64 row0 = (i64)blockIdx.x * ATT_ROWS, i = row0 + threadIdx.x;
    const bool active = i < s.T;
    T q[DH], acc[DH];
#pragma unroll
    for (int c = 0; c < DH; ++c) {
        q[c] = (active && c < s.dh) ? x[s.qkv(b, i, 0, h) + c] : (T)0;
        acc[c] = 0;
    }
    T m = NEG, l = 0;
    const i64 kend = causal ? min(s.T, row0 + ATT_ROWS) : s.T;
    for (i64 k0 = 0; k0 < kend; k0 += TK) {
        __syncthreads();  // the previous tile has been read by every thread
        att_load<T, DH, AttTile<T>::K>(x, s, b, h, k0, 1, ks, x, 2, vs);
        __syncthreads();
        if (!active) continue;
        T* sc = scores[threadIdx.x];
        T tmax = NEG;
#pragma unroll 1
        for (int r = 0; r < TK; ++r) {
            const i64 j = k0 + r;
            T d = 0;
#pragma unroll
            for (int c = 0; c < DH; ++c) d += q[c] * ks[r][c];
            const bool valid = j < s.T && (!causal || j <= i);
            sc[r] = valid ? d * scale : NEG;
            tmax = sc[r] > tmax ? sc[r] : tmax;
        }
        if (tmax == NEG) continue;  // every key of this tile is masked for this row
        const T mnew = m > tmax ? m : tmax;
        const T corr = exp(m - mnew);  // 0 while m is still -inf
        l *= corr;
#pragma unroll
        for (int c = 0; c < DH; ++c) acc[c] *= corr;
#pragma unroll 1
        for (int r = 0; r < TK; ++r) {
            const T p = sc[r] == NEG ? (T)0 : exp(sc[r] - mnew);
            l += p;
#pragma unroll
            for (int c = 0; c < DH; ++c) acc[c] += p * vs[r][c];
        }
        m = mnew;
    }
    if (!active) return;
    const T inv = (T)1 / l;
    for (int c = 0; c < DH && c < s.dh; ++c) out[s.row(b, i, h) + c] = acc[c] * inv;
    lse[bh * s.T + i] = m + log(l);
}

template <typename T, int DH>
__device__ void attention_bwd_dq(const T* x, const T* out, const T* lse, const T* g, T* dx, T* drow, AttShape s,
                                 int causal, double scale_d) {
    const int TK = AttTile<T>::K;
    __shared__ T ks[AttTile<T>::K][DH];
    __shared__ T vs[AttTile<T>::K][DH];
    const T scale = (T)scale_d;
    const i64 bh = blockIdx.y, b = bh / s.H, h = bh % s.H;
    const i64 row0 = (i64)blockIdx.x * ATT_ROWS, i = row0 + threadIdx.x;
    const bool active = i < s.T;
    T q[DH], go[DH], dq[DH];
    T di = 0;
#pragma unroll
    for (int c = 0; c < DH; ++c) {
        const bool ok = active && c < s.dh;
        q[c] = ok ? x[s.qkv(b, i, 0, h) + c] : (T)0;
        go[c] = ok ? g[s.row(b, i, h) + c] : (T)0;
        di += ok ? go[c] * out[s.row(b, i, h) + c] : (T)0;
        dq[c] = 0;
    }
    const T li = active ? lse[bh * s.T + i] : (T)0;
    if (active) drow[bh * s.T + i] = di;
    const i64 kend = causal ? min(s.T, row0 + ATT_ROWS) : s.T;
    for (i64 k0 = 0; k0 < kend; k0 += TK) {
        __syncthreads();
        att_load<T, DH, AttTile<T>::K>(x, s, b, h, k0, 1, ks, x, 2, vs);
        __syncthreads();
        if (!active) continue;
#pragma unroll 1
        for (int r = 0; r < TK; ++r) {
            const i64 j = k0 + r;
            if (j >= s.T || (causal && j > i)) continue;
            T d = 0, dp = 0;
#pragma unroll
            for (int c = 0; c < DH; ++c) {
                d += q[c] * ks[r][c];
                dp += go[c] * vs[r][c];
            }
            const T p = exp(d * scale - li);
            const T ds = p * (dp - di);
#pragma unroll
            for (int c = 0; c < DH; ++c) dq[c] += ds * ks[r][c];
        }
    }
    if (!active) return;
    for (int c = 0; c < DH && c < s.dh; ++c) dx[s.qkv(b, i, 0, h) + c] = dq[c] * scale;
}

template <typename T, int DH>
__device__ void attention_bwd_dkv(const T* x, const T* lse, const T* g, const T* drow, T* dx, AttShape s,
                                  int causal, double scale_d) {
    const int TQ = AttTile<T>::K;
    __shared__ T qs[AttTile<T>::K][DH];
    __shared__ T gs[AttTile<T>::K][DH];
    __shared__ T ls[AttTile<T>::K];
    __shared__ T ds_[AttTile<T>::K];
    const T scale = (T)scale_d;
    const i64 bh = blockIdx.y, b = bh / s.H, h = bh % s.H;
    const i64 row0 = (i64)blockIdx.x * ATT_ROWS, j = row0 + threadIdx.x;
    const bool active = j < s.T;
    T k[DH], v[DH], dk[DH], dv[DH];
#pragma unroll
    for (int c = 0; c < DH; ++c) {
        const bool ok = active && c < s.dh;
        k[c] = ok ? x[s.qkv(b, j, 1, h) + c] : (T)0;
        v[c] = ok ? x[s.qkv(b, j, 2, h) + c] : (T)0;
        dk[c] = 0;
        dv[c] = 0;
    }
    // With `causal`, query rows before this block's first key row see none of its keys.
    const i64 qstart = causal ? row0 / TQ * TQ : 0;
    for (i64 q0 = qstart; q0 < s.T; q0 += TQ) {
        __syncthreads();
        for (int e = threadIdx.x; e < TQ * DH; e += blockDim.x) {
            const int r = e / DH, c = e % DH;
            const i64 t = q0 + r;
            const bool ok = t < s.T && c < s.dh;
            qs[r][c] = ok ? x[s.qkv(b, t, 0, h) + c] : (T)0;
            gs[r][c] = ok ? g[s.row(b, t, h) + c] : (T)0;
        }
        for (int r = threadIdx.x; r < TQ; r += blockDim.x) {
            const i64 t = q0 + r;
            ls[r] = t < s.T ? lse[bh * s.T + t] : (T)0;
            ds_[r] = t < s.T ? drow[bh * s.T + t] : (T)0;
        }
        __syncthreads();
        if (!active) continue;
#pragma unroll 1
        for (int r = 0; r < TQ; ++r) {
            const i64 i = q0 + r;
            if (i >= s.T || (causal && j > i)) continue;
            T d = 0, dp = 0;
#pragma unroll
            for (int c = 0; c < DH; ++c) {
                d += qs[r][c] * k[c];
                dp += gs[r][c] * v[c];
            }
            const T p = exp(d * scale - ls[r]);
            const T dsv = p * (dp - ds_[r]);
#pragma unroll
            for (int c = 0; c < DH; ++c) {
                dv[c] += p * gs[r][c];
                dk[c] += dsv * qs[r][c];
            }
        }
    }
    if (!active) return;
    for (int c = 0; c < DH && c < s.dh; ++c) {
        dx[s.qkv(b, j, 1, h) + c] = dk[c] * scale;
        dx[s.qkv(b, j, 2, h) + c] = dv[c];
    }
}

#define ATTENTION(T, TAG, DH)                                                                  \
    extern "C" __global__ void attention_fwd_##TAG##_##DH(const T* x, T* out, T* lse, AttShape s, \
                                                          int causal, double scale) {          \
        attention_fwd<T, DH>(x, out, lse, s, causal, scale);                                   \
    }                                                                                          \
    extern "C" __global__ void attention_bwd_dq_##TAG##_##DH(const T* x, const T* out, const T* lse, \
                                                             const T* g, T* dx, T* drow, AttShape s, \
                                                             int causal, double scale) {       \
        attention_bwd_dq<T, DH>(x, out, lse, g, dx, drow, s, causal, scale);                   \
    }                                                                                          \
    extern "C" __global__ void attention_bwd_dkv_##TAG##_##DH(const T* x, const T* lse, const T* g, \
                                                              const T* drow, T* dx, AttShape s, \
                                                              int causal, double scale) {      \
        attention_bwd_dkv<T, DH>(x, lse, g, drow, dx, s, causal, scale);                       \
    }

ATTENTION(float, f32, 16)
ATTENTION(float, f32, 32)
ATTENTION(float, f32, 64)
ATTENTION(float, f32, 128)
ATTENTION(double, f64, 64)   // f64 (gradient checks, tests): one bound, heads up to 64 wide
