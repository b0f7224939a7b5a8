// conv_mma.cu: 2-D convolution (one group) as implicit GEMM on the tensor cores, bf16 operands
// and f32 accumulation (`mma_bf16`, common.cuh), for f32 tensors at bf16 matmul precision. The
// forward, the input gradient and the weight gradient each gather their operands' im2col
// elements from x and dy as their tiles are loaded, so no column matrix is written or read
// (conv.cu's im2col + cuBLAS path writes one, and its backward the column gradient). CPU
// reference: `crate::cpu::conv` (operands rounded to bf16, f32 sums).
//
// Layout: x [n, c, h, w] and y, dy [n, c_out, oh, ow] f32, contiguous; w [c_out, c, kh, kw]
// f32; L = oh·ow. X[k][p] = x[img, ci, oi·sh - ph + ki·dh, oj·sw - pw + kj·dw] (0 outside the
// image) for tap k = (ci, ki, kj) and position p = (img, oi, oj). Three products, M x N
// reducing over K:
//   conv_mma_fwd_<BM>:   y[img, co, l] = Σ_k W[co][k] X[k][p] (+ bias[co]); M = c_out, N = n·L,
//                        K = c·kh·kw. A: W packed by conv_mma_pack_w.
//   conv_mma_dgrad_<BM>: dx[img, ci, iy, ix] = Σ over (co, ki, kj) of W[co][ci, ki, kj]
//                        dy[img, co, oi, oj] where oi·sh = iy + ph - ki·dh and
//                        oj·sw = ix + pw - kj·dw, one stride phase per blockIdx.z (inputs with
//                        the same (iy + ph) mod sh and (ix + pw) mod sw, reached by the same
//                        taps): M = c, N = the phase's n·h·w / (sh·sw) inputs, K = c_out times
//                        its taps (all kh·kw at stride 1; at stride 2 a 3x3's 9 split 4, 2, 2, 1),
//                        so no product multiplies a structural zero and no index is divided.
//                        A: W rearranged per phase by conv_mma_pack_wt.
//   conv_mma_wgrad_<BM>: part[z][co][k] = Σ_p dy[co][p] X[k][p] over slice z of the position
//                        tiles; M = c_out, N = c·kh·kw, K = n·L. The slices' partial products
//                        are summed in order afterwards (a reduce kernel): deterministic, as
//                        every sum here is.
// The packed A of the forward and the input gradient is bf16, row-major with rows of s.lda
// elements (a multiple of 8, zeros past K), so a tile's rows load as 16-byte vectors.
//
// Launch: grid (ceil(N / 128), ceil(M / BM), slices or phases), 2·BM threads: BM / 32 warps down
// and 2 across, each warp a 32 x 64 tile of m16n8k16 products. The reduction walks in tiles of
// 32: each tile is gathered into registers (the next tile's loads in flight during the current
// tile's products), rounded to bf16 and stored to shared memory, double buffered, as A
// [BM][32 + 8] and B [128][32 + 8] (a column's 32 reduction elements contiguous); rows 80 bytes
// apart put any 8 rows' 16-byte pieces in distinct banks, so every fragment comes from one
// `ldmatrix.x4` (common.cuh) without conflict. B gathers put a warp's lanes where memory is
// contiguous: on 32 neighbouring columns (output or input positions) in the forward and the
// input gradient, each thread keeping its column's base pointer and storing its run of 16 or
// 32 reduction elements as 16-byte pieces; along the reduction (positions) in the weight
// gradient, whose columns (taps) come from a per-block table. The reduction index's
// decomposition, the same for every column, is computed once per tile by the first warp into a
// 32-entry table.
//
// Bounds without per-element index arithmetic: an element is inside the image (or the output)
// exactly when its row and its column are. For a column (or, in the weight gradient, a
// position) the kernel builds once a mask with bit i set where the window's row i falls outside
// and bit 15 + j where its column j does (`cm_outside`), plus bit 31; a tap carries its row and
// column bits (bit 31 alone past K), so an element is zero exactly when the AND of the two is
// non-zero: one instruction. Kernel sides are at most 15 (`cuda::conv_mma::fits`). Index
// arithmetic is 32-bit (the host checks that every tensor and product fits), divisions by the
// shape FastDiv's.

#define CM_BN 128
#define CM_BK 32
#define CM_LDS (CM_BK + 8)
// A validity mask: bits 0..14 the rows, 15..29 the columns of a window, bit 31 past the edge.
#define CM_AXIS 15
#define CM_PAST (1u << 31)

// Mirrors `cuda::conv_mma::ConvMmaShape`.
struct ConvMmaShape {
    int n, c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, c_out;
    int tiles_per_slice;  // reduction tiles per slice (all of them but in the weight gradient)
    int lda;              // row length of the packed A (forward, input gradient)
    FastDiv div_khkw, div_kw, div_l, div_ow;
};

// Bit i (i < count) set where start + i·step falls outside [0, bound).
__device__ __forceinline__ u32 cm_outside(int start, int step, int count, int bound) {
    u32 m = 0;
    for (int i = 0; i < count; ++i) m |= (u32)((unsigned)(start + i * step) >= (unsigned)bound) << i;
    return m;
}

// A reduction term's (or, in the weight gradient, a column's) offset, never negative, and its
// row and column bits (CM_PAST alone past the edge). Unsigned offsets added to a 64-bit base
// cost one instruction (a widening multiply-add) per address.
struct __align__(8) CmTap {
    u32 off;
    u32 bits;
};

// Tap k = (ci, ki, kj) of X: its offset in x from a window's corner.
__device__ __forceinline__ CmTap cm_x_tap(const ConvMmaShape& s, int k, int K) {
    if (k >= K) return {0, CM_PAST};
    const int ci = fdiv(k, s.div_khkw), r = k - ci * s.kh * s.kw;
    const int ki = fdiv(r, s.div_kw), kj = r - ki * s.kw;
    return {(u32)(ci * s.h * s.w + ki * s.dh * s.w + kj * s.dw), (1u << ki) | (1u << (CM_AXIS + kj))};
}

// x from the corner of the first window, which padding can put up to ph rows and pw columns
// before the image: windows' offsets are counted from there, so none is negative.
__device__ __forceinline__ const float* cm_x_origin(const float* x, const ConvMmaShape& s) {
    return x - (s.ph * s.w + s.pw);
}

// Position p = (img, oi, oj) of X: the offset from `cm_x_origin` of its window's corner (image
// img, row oi·sh - ph, column oj·sw - pw, possibly outside the image), the window's outside
// mask, and dy's offset of p in channel 0; past P every bit (dy -1).
struct __align__(16) CmWin {
    u32 off;
    u32 inv;
    int dy, unused;
};
__device__ __forceinline__ CmWin cm_x_win(const ConvMmaShape& s, int p, int P) {
    if (p >= P) return {0, ~0u, -1, 0};
    const int img = fdiv(p, s.div_l), l = p - img * s.oh * s.ow;
    const int oi = fdiv(l, s.div_ow), oj = l - oi * s.ow;
    const int y0 = oi * s.sh - s.ph, x0 = oj * s.sw - s.pw;
    const u32 inv = CM_PAST | cm_outside(y0, s.dh, s.kh, s.h) | (cm_outside(x0, s.dw, s.kw, s.w) << CM_AXIS);
    return {(u32)(img * s.c * s.h * s.w + y0 * s.w + x0 + s.ph * s.w + s.pw), inv, img * s.c_out * s.oh * s.ow + l, 0};
}

// `p`, which the compiler can no longer see through: a base pointer that a loop adds offsets
// to stays one 64-bit register pair (one widening multiply-add an address), rather than being
// rebuilt from the kernel's parameter and a 64-bit offset at every load.
template <typename T> __device__ __forceinline__ T* cm_opaque(T* p) {
#if !defined(SELFSUP_HOST_EMULATION) && defined(__CUDA_ARCH__)
    asm("mov.b64 %0, %0;" : "+l"(p));
#endif
    return p;
}

// *p = v for p in global memory (which cm_opaque hides from the compiler): `st.global`, not a
// generic store.
__device__ __forceinline__ void cm_store(float* p, float v) {
#if !defined(SELFSUP_HOST_EMULATION) && defined(__CUDA_ARCH__)
    asm volatile("st.global.f32 [%0], %1;" ::"l"(p), "f"(v) : "memory");
#else
    *p = v;
#endif
}

// A thread's column of B in the forward and the input gradient: the pointer its taps' offsets
// are added to, and its outside mask.
struct CmCol {
    const float* base;
    u32 inv;
};

// The forward: A = W packed, B = X, columns the output positions.
struct CmFwd {
    const float* x;
    const u16* w;
    const float* bias;
    float* y;
    ConvMmaShape s;
    using Tab = CmTap;
    using Col = CmTap;  // unused
    static constexpr bool B_ALONG_K = false;
    __device__ __forceinline__ int slice() const { return 0; }
    __device__ __forceinline__ int M() const { return s.c_out; }
    __device__ __forceinline__ int N() const { return s.n * s.oh * s.ow; }
    __device__ __forceinline__ int K() const { return s.c * s.kh * s.kw; }
    __device__ __forceinline__ const u16* a_rows() const { return w; }
    __device__ __forceinline__ CmTap tab(int k) const { return cm_x_tap(s, k, K()); }
    __device__ __forceinline__ CmCol col(int p) const {
        const CmWin c = cm_x_win(s, p, N());
        return {cm_opaque(cm_x_origin(x, s) + c.off), c.inv};
    }
    // The output: position p's element in channel 0, channels L apart, plus the bias.
    __device__ __forceinline__ float* out_col(int p) const {
        const int L = s.oh * s.ow, img = fdiv(p, s.div_l);
        return y + (img * s.c_out * L + (p - img * L));
    }
    __device__ __forceinline__ int out_stride() const { return s.oh * s.ow; }
    __device__ __forceinline__ float out_bias(int m) const { return bias ? bias[m] : 0.f; }
};

// The taps of one axis that reach the inputs of phase r (those with input + padding ≡ r mod
// stride), and those inputs: taps first + i·step for i < count; inputs in0 + j·stride for
// j < in_count. Input in0 + j·stride and tap first + i·step meet at output (a0 + j) - (b0 + i·db):
// for each, (input + padding - r) / stride and (tap·dilation - r) / stride, both exact.
struct CmPhaseAxis {
    int first, step, count, b0, db, in0, in_count, a0;
};
__device__ __forceinline__ CmPhaseAxis cm_phase_axis(int r, int stride, int pad, int dil, int k, int in) {
    int g = dil, y = stride;  // g = gcd(dil, stride): taps congruent mod stride / g act alike
    while (y) {
        const int t = g % y;
        g = y;
        y = t;
    }
    CmPhaseAxis a;
    a.step = stride / g;
    a.first = k;  // none
    for (int t = 0; t < a.step && t < k; ++t)
        if ((t * dil) % stride == r) {
            a.first = t;
            break;
        }
    a.count = a.first < k ? (k - 1 - a.first) / a.step + 1 : 0;
    a.b0 = a.first < k ? (a.first * dil - r) / stride : 0;
    a.db = dil / g;
    a.in0 = ((r - pad) % stride + stride) % stride;
    a.in_count = a.in0 < in ? (in - 1 - a.in0) / stride + 1 : 0;
    a.a0 = (a.in0 + pad - r) / stride;
    return a;
}

// The input gradient of one stride phase (blockIdx.z = ry·sw + rx: the inputs with
// (iy + ph) mod sh = ry and (ix + pw) mod sw = rx, which only the taps with ki·dh ≡ ry and
// kj·dw ≡ rx reach), so no product is a structural zero: A[ci][(co, i, j)] = W[co][ci, ki, kj]
// over those taps (packed per phase), B = dy at the output each tap of input q = (img, iy, ix)
// came from (0 past the output's edge), columns the phase's inputs.
struct CmDgrad {
    const float* dy;
    const u16* w;
    float* dx;
    ConvMmaShape s;
    CmPhaseAxis py, px;
    FastDiv div_cols, div_in_x, div_taps, div_taps_x;
    int reach;  // the largest output shift of a tap, (b0 + (count - 1)·db)·ow + its column's
    using Tab = CmTap;
    using Col = CmTap;  // unused
    static constexpr bool B_ALONG_K = false;
    __device__ CmDgrad(const float* dy_, const u16* w_, float* dx_, ConvMmaShape s_)
        : dy(dy_), w(w_), dx(dx_), s(s_) {
        const int ry = blockIdx.z / s.sw, rx = blockIdx.z - ry * s.sw;
        py = cm_phase_axis(ry, s.sh, s.ph, s.dh, s.kh, s.h);
        px = cm_phase_axis(rx, s.sw, s.pw, s.dw, s.kw, s.w);
        div_cols = fastdiv_of(py.in_count * px.in_count);
        div_in_x = fastdiv_of(px.in_count);
        div_taps = fastdiv_of(py.count * px.count);
        div_taps_x = fastdiv_of(px.count);
        reach = py.count && px.count
                    ? (py.b0 + (py.count - 1) * py.db) * s.ow + px.b0 + (px.count - 1) * px.db
                    : 0;
    }
    __device__ __forceinline__ int slice() const { return 0; }
    __device__ __forceinline__ int M() const { return s.c; }
    __device__ __forceinline__ int N() const { return s.n * py.in_count * px.in_count; }
    __device__ __forceinline__ int K() const { return s.c_out * py.count * px.count; }
    __device__ __forceinline__ const u16* a_rows() const { return w + blockIdx.z * s.c * s.lda; }
    // (co, i, j): dy's offset from the column's base (channel co, back by the tap's output
    // shifts, forward by `reach` so that it is not negative) and the tap's bits.
    __device__ __forceinline__ CmTap tab(int k) const {
        if (k >= K()) return {0, CM_PAST};
        const int taps = py.count * px.count, co = fdiv(k, div_taps), r = k - co * taps;
        const int i = fdiv(r, div_taps_x), j = r - i * px.count;
        return {(u32)(co * s.oh * s.ow + reach - (py.b0 + i * py.db) * s.ow - (px.b0 + j * px.db)),
                (1u << i) | (1u << (CM_AXIS + j))};
    }
    // The q-th input of the phase: image img, row and column jy, jx of the phase's inputs.
    __device__ __forceinline__ void input(int q, int& img, int& jy, int& jx) const {
        const int cols = py.in_count * px.in_count;
        img = fdiv(q, div_cols);
        const int r = q - img * cols;
        jy = fdiv(r, div_in_x);
        jx = r - jy * px.in_count;
    }
    // Its base: dy at its output units (a0 + jy, a0 + jx) in channel 0, which tap (co, i, j)
    // moves back by (b0 + i·db, b0 + j·db); outside where that leaves the output.
    __device__ __forceinline__ CmCol col(int q) const {
        if (q >= N()) return {dy, ~0u};
        int img, jy, jx;
        input(q, img, jy, jx);
        const int oy = py.a0 + jy, ox = px.a0 + jx;
        const u32 inv = CM_PAST | cm_outside(oy - py.b0, -py.db, py.count, s.oh) |
                        (cm_outside(ox - px.b0, -px.db, px.count, s.ow) << CM_AXIS);
        return {cm_opaque(dy + (img * s.c_out * s.oh * s.ow + oy * s.ow + ox - reach)), inv};
    }
    // dx: the input's element in channel 0, channels h·w apart.
    __device__ __forceinline__ float* out_col(int q) const {
        int img, jy, jx;
        input(q, img, jy, jx);
        return dx + ((img * s.c * s.h + py.in0 + jy * s.sh) * s.w + px.in0 + jx * s.sw);
    }
    __device__ __forceinline__ int out_stride() const { return s.h * s.w; }
    __device__ __forceinline__ float out_bias(int) const { return 0.f; }
};

// The weight gradient: A[co][p] = dy[img, co, l], B[p][k] = X[k][p], reducing over positions
// (the table: windows), columns the taps; slice blockIdx.z writes its partial product.
struct CmWgrad {
    const float* dy;
    const float* x;
    float* part;
    ConvMmaShape s;
    using Tab = CmWin;
    using Col = CmTap;
    static constexpr bool B_ALONG_K = true;
    __device__ __forceinline__ int slice() const { return blockIdx.z; }
    __device__ __forceinline__ int M() const { return s.c_out; }
    __device__ __forceinline__ int N() const { return s.c * s.kh * s.kw; }
    __device__ __forceinline__ int K() const { return s.n * s.oh * s.ow; }
    __device__ __forceinline__ CmWin tab(int p) const { return cm_x_win(s, p, K()); }
    __device__ __forceinline__ CmTap col(int k) const { return cm_x_tap(s, k, N()); }
    // The slice's partial product, row-major [M][N].
    __device__ __forceinline__ float* out_col(int k) const { return part + (i64)blockIdx.z * M() * N() + k; }
    __device__ __forceinline__ int out_stride() const { return N(); }
    __device__ __forceinline__ float out_bias(int) const { return 0.f; }
};

// The block's BM x 128 tile of problem `p`'s product over its reduction tiles
// [z · tiles_per_slice, (z + 1) · tiles_per_slice) (z = p.slice()), as the header describes.
template <int BM, typename P>
__device__ void conv_mma(const P& p) {
    constexpr int THREADS = 2 * BM, BWORDS = CM_BN * CM_BK / 2 / THREADS;
    constexpr bool ALONG = P::B_ALONG_K;
    // Forward and input gradient: THREADS / 128 threads share a column, each KPT terms of it.
    constexpr int KPT = CM_BK * CM_BN / THREADS;
    __shared__ __align__(16) u16 as[2][BM * CM_LDS];
    __shared__ __align__(16) u16 bs[2][CM_BN * CM_LDS];
    __shared__ __align__(16) typename P::Tab tab[2][CM_BK];
    __shared__ __align__(16) typename P::Col coltab[ALONG ? CM_BN : 1];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 1, wn = warp & 1, g = lane >> 2, t = lane & 3;
    const int M = p.M(), N = p.N(), K = p.K();
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * CM_BN, bn = tid & (CM_BN - 1);
    const int tiles = (K + CM_BK - 1) / CM_BK, kt0 = p.slice() * p.s.tiles_per_slice;
    const int kt1 = min(kt0 + p.s.tiles_per_slice, tiles);
    float acc[2][8][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;

    // A of the forward and the input gradient: BM rows of four 8-element pieces, two pieces a
    // thread (piece i·THREADS + tid: row (i·THREADS + tid) / 4), each one 16-byte load.
    const u16* arow[2];
    bool arow_in[2];
    CmCol col{nullptr, 0};
    if constexpr (!ALONG) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int e = i * THREADS + tid, r = e >> 2;
            arow_in[i] = m0 + r < M;
            arow[i] = p.a_rows() + (arow_in[i] ? (m0 + r) * p.s.lda + (e & 3) * 8 : 0);
        }
        col = p.col(n0 + bn);
    }
    // A of the weight gradient: dy's rows m0 + i·THREADS / 16 + tid / 16 for i < arows (those
    // below M), astep elements apart, 16 threads a row along the positions.
    const float* dyrow = nullptr;
    const float* xorg = nullptr;
    int arows = 0, astep = 0;
    if constexpr (ALONG) {
        const int L = p.s.oh * p.s.ow, r0 = m0 + (tid >> 4);
        astep = (THREADS / 16) * L;
        arows = r0 < M ? (M - r0 + THREADS / 16 - 1) / (THREADS / 16) : 0;
        dyrow = p.dy + (r0 < M ? r0 * L : 0);
        xorg = cm_x_origin(p.x, p.s);
    }
    uint4 ra4[2];
    u32 ra[ALONG ? 8 : 1], rb[BWORDS];

    auto gather = [&](int kt, const typename P::Tab* tb) {
        if constexpr (!ALONG) {
            const int k0 = kt * CM_BK;
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int e = i * THREADS + tid;
                ra4[i] = (arow_in[i] && k0 + (e & 3) * 8 < p.s.lda) ? *(const uint4*)(arow[i] + k0)
                                                                    : make_uint4(0, 0, 0, 0);
            }
            // This thread's KPT terms of its column, two taps (one 16-byte table read) a word.
            const int kb = (tid / CM_BN) * KPT;
#pragma unroll
            for (int j = 0; j < BWORDS; ++j) {
                const uint4 tt = *(const uint4*)&tb[kb + 2 * j];
                const float v0 = (col.inv & tt.y) ? 0.f : __ldg(col.base + tt.x);
                const float v1 = (col.inv & tt.w) ? 0.f : __ldg(col.base + tt.z);
                rb[j] = mma_pack(v0, v1);
            }
        } else {
            // A: 8 words a thread, 16 threads a row along the positions; B: 16 threads a column
            // (a tap of the block's table) along the positions. A thread's two positions are
            // the same in every row and column: (tid % 16)·2 and the next.
            const int kp = (tid & 15) * 2;
            const CmWin q0 = tb[kp], q1 = tb[kp + 1];
            // dy at the two positions in the thread's first row, and x at their windows.
            // Rows past M, or a position past the reduction, read nothing (that position's B
            // is zero too, but an infinite dy times zero would still make a NaN).
            const float* a0 = cm_opaque(dyrow + (u32)max(q0.dy, 0));
            const float* a1 = cm_opaque(dyrow + (u32)max(q1.dy, 0));
            const float* b0 = cm_opaque(xorg + q0.off);
            const float* b1 = cm_opaque(xorg + q1.off);
            const int rows0 = q0.dy >= 0 ? arows : 0, rows1 = q1.dy >= 0 ? arows : 0;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                ra[i] = mma_pack(i < rows0 ? __ldg(a0) : 0.f, i < rows1 ? __ldg(a1) : 0.f);
                a0 += astep;
                a1 += astep;
            }
#pragma unroll
            for (int i = 0; i < BWORDS; ++i) {
                const CmTap c = coltab[i * (THREADS / 16) + (tid >> 4)];
                rb[i] = mma_pack((q0.inv & c.bits) ? 0.f : __ldg(b0 + c.off),
                                 (q1.inv & c.bits) ? 0.f : __ldg(b1 + c.off));
            }
        }
    };
    auto put = [&](int buf) {
        if constexpr (!ALONG) {
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int e = i * THREADS + tid;
                *(uint4*)&as[buf][(e >> 2) * CM_LDS + (e & 3) * 8] = ra4[i];
            }
            u16* q = &bs[buf][bn * CM_LDS + (tid / CM_BN) * KPT];
#pragma unroll
            for (int j = 0; j < BWORDS; j += 4)
                *(uint4*)(q + 2 * j) = make_uint4(rb[j], rb[j + 1], rb[j + 2], rb[j + 3]);
        } else {
            // Word i of the thread: row i·THREADS / 16 + tid / 16, word tid % 16.
            const int at = (tid >> 4) * CM_LDS + (tid & 15) * 2;
#pragma unroll
            for (int i = 0; i < 8; ++i) *(u32*)&as[buf][at + i * (THREADS / 16) * CM_LDS] = ra[i];
#pragma unroll
            for (int i = 0; i < BWORDS; ++i) *(u32*)&bs[buf][at + i * (THREADS / 16) * CM_LDS] = rb[i];
        }
    };
    // Fragments by ldmatrix.x4: A's matrices (rows 0-7, 8-15) x (k 0-7, 8-15) as a0..a3; B's
    // (k 0-7, 8-15) of two neighbouring 8-column groups as their b0, b1.
    auto compute = [&](int buf) {
#pragma unroll
        for (int kk = 0; kk < CM_BK; kk += 16) {
            u32 af[2][4], bf[8][2];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
                mma_ldmatrix_x4(af[mt], &as[buf][(wm * 32 + mt * 16 + (lane & 15)) * CM_LDS + kk + 8 * (lane >> 4)]);
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                u32 r[4];
                const int row = wn * 64 + np * 16 + (lane & 7) + 8 * (lane >> 4);
                mma_ldmatrix_x4(r, &bs[buf][row * CM_LDS + kk + 8 * ((lane >> 3) & 1)]);
                bf[2 * np][0] = r[0];
                bf[2 * np][1] = r[1];
                bf[2 * np + 1][0] = r[2];
                bf[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) mma_bf16(acc[mt][nt], af[mt], bf[nt]);
        }
    };

    if (kt0 < kt1) {
        if constexpr (ALONG)
            for (int c = tid; c < CM_BN; c += THREADS) coltab[c] = p.col(n0 + c);
        if (tid < CM_BK) tab[0][tid] = p.tab(kt0 * CM_BK + tid);
        __syncthreads();
        gather(kt0, tab[0]);
        if (tid < CM_BK && kt0 + 1 < kt1) tab[1][tid] = p.tab((kt0 + 1) * CM_BK + tid);
        put(0);
        __syncthreads();
        for (int kt = kt0; kt < kt1; ++kt) {
            const int cur = (kt - kt0) & 1;
            const bool more = kt + 1 < kt1;
            if (more) gather(kt + 1, tab[cur ^ 1]);  // its table was written before the last barrier
            compute(cur);
            if (more) put(cur ^ 1);  // that buffer's readers passed the last barrier
            if (tid < CM_BK && kt + 2 < kt1) tab[cur][tid] = p.tab((kt + 2) * CM_BK + tid);
            __syncthreads();
        }
    }
    // The thread's 4 rows (their bias and offset found once) by 16 columns (each column's
    // address found once: the decomposition of a position is several multiply-highs); a block
    // inside the product on both axes (every one but the edges) tests nothing.
    const bool full = m0 + BM <= M && n0 + CM_BN <= N;
    const int stride = p.out_stride();
    float bias_of[4];
    int row_off[4];
    bool row_in[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {  // rows g, g + 8 of product rows mt = r / 2
        const int m = m0 + wm * 32 + (r >> 1) * 16 + g + (r & 1) * 8;
        row_in[r] = full || m < M;
        bias_of[r] = row_in[r] ? p.out_bias(m) : 0.f;
        row_off[r] = m * stride;
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const int n = n0 + wn * 64 + nt * 8 + 2 * t + c;
            if (!full && n >= N) continue;
            float* out = cm_opaque(p.out_col(n));
#pragma unroll
            for (int r = 0; r < 4; ++r)
                if (row_in[r]) cm_store(out + row_off[r], acc[r >> 1][nt][(r & 1) * 2 + c] + bias_of[r]);
        }
}

#define CONV_MMA_KERNELS(BM)                                                                           \
    extern "C" __global__ void __launch_bounds__(2 * BM, 256 / BM)                                     \
        conv_mma_fwd_##BM(const float* x, const u16* w, const float* bias, float* y, ConvMmaShape s) { \
        conv_mma<BM>(CmFwd{x, w, bias, y, s});                                                         \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(2 * BM, 256 / BM)                                     \
        conv_mma_dgrad_##BM(const float* dy, const u16* w, float* dx, ConvMmaShape s) {                \
        conv_mma<BM>(CmDgrad(dy, w, dx, s));                                                           \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(2 * BM, 256 / BM)                                     \
        conv_mma_wgrad_##BM(const float* dy, const float* x, float* part, ConvMmaShape s) {            \
        conv_mma<BM>(CmWgrad{dy, x, part, s});                                                         \
    }

CONV_MMA_KERNELS(64)
CONV_MMA_KERNELS(128)

// The forward's A: w (f32 [c_out][K], K = c·kh·kw) as bf16 rows of s.lda elements, zeros past K.
// Launch: a grid-stride loop over c_out·lda elements.
extern "C" __global__ void conv_mma_pack_w(const float* w, u16* a, ConvMmaShape s) {
    const int K = s.c * s.kh * s.kw;
    FOR_EACH_INDEX(i, (i64)s.c_out * s.lda) {
        const int m = (int)i / s.lda, k = (int)i - m * s.lda;
        a[i] = k < K ? (u16)mma_bf16_bits(w[m * K + k]) : (u16)0;
    }
}

// The input gradient's A of stride phase z = blockIdx.y (ry·sw + rx): rows ci, terms
// (co, i, j) over the phase's taps in CmDgrad::tab's order, W[co][ci, ki, kj] as bf16, rows of
// s.lda elements (zeros past the phase's K), phase z's c rows from row z·c. Launch: grid
// (blocks, sh·sw), a grid-stride loop along x over c·lda elements.
extern "C" __global__ void conv_mma_pack_wt(const float* w, u16* a, ConvMmaShape s) {
    const int z = blockIdx.y, ry = z / s.sw, rx = z - ry * s.sw;
    const CmPhaseAxis py = cm_phase_axis(ry, s.sh, s.ph, s.dh, s.kh, s.h);
    const CmPhaseAxis px = cm_phase_axis(rx, s.sw, s.pw, s.dw, s.kw, s.w);
    const int taps = py.count * px.count, K = s.c_out * taps;
    u16* dst = a + (i64)z * s.c * s.lda;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < s.c * s.lda; i += gridDim.x * blockDim.x) {
        const int ci = i / s.lda, k = i - ci * s.lda;
        u16 v = 0;
        if (k < K) {
            const int co = k / taps, r = k - co * taps, ti = r / px.count, tj = r - ti * px.count;
            const int ki = py.first + ti * py.step, kj = px.first + tj * px.step;
            v = (u16)mma_bf16_bits(w[((co * s.c + ci) * s.kh + ki) * s.kw + kj]);
        }
        dst[i] = v;
    }
}
