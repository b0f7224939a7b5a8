// conv_mma.cu: 2-D convolution (one group) as implicit GEMM on the tensor cores, bf16 operands
// and f32 accumulation (`mma_bf16`, common.cuh), for f32 tensors at bf16 matmul precision. The
// forward, the input gradient and the weight gradient each gather their operands' im2col
// elements from x, dy and the weight's bf16 copy as their tiles are loaded, so no column matrix
// is written or read (conv.cu's im2col + cuBLAS path writes one, and its backward the column
// gradient). CPU reference: `crate::cpu::conv` (operands rounded to bf16, f32 sums).
//
// Layout: x [n, c, h, w] and y, dy [n, c_out, oh, ow] f32, contiguous; w16 [c_out, c·kh·kw]
// bf16; L = oh·ow. X[k][p] = x[img, ci, oi·sh - ph + ki·dh, oj·sw - pw + kj·dw] (0 outside the
// image) for tap k = (ci, ki, kj) and position p = (img, oi, oj). Three products, M x N
// reducing over K:
//   conv_mma_fwd_<BM>:   y[img, co, l] = Σ_k W[co][k] X[k][p] (+ bias[co]); M = c_out, N = n·L,
//                        K = c·kh·kw.
//   conv_mma_dgrad_<BM>: dx[img, ci, iy, ix] = Σ over (co, ki, kj) of W[co][ci, ki, kj]
//                        dy[img, co, oi, oj] where oi·sh = iy + ph - ki·dh and
//                        oj·sw = ix + pw - kj·dw, one stride phase per blockIdx.z (inputs with
//                        the same (iy + ph) mod sh and (ix + pw) mod sw, reached by the same
//                        taps): M = c, N = the phase's n·h·w / (sh·sw) inputs, K = c_out times
//                        its taps (all kh·kw at stride 1; at stride 2 a 3x3's 9 split 4, 2, 2, 1),
//                        so no product multiplies a structural zero and no index is divided.
//   conv_mma_wgrad_<BM>: part[z][co][k] = Σ_p dy[co][p] X[k][p] over slice z of the position
//                        tiles; M = c_out, N = c·kh·kw, K = n·L. The slices' partial products
//                        are summed in order afterwards (a reduce kernel): deterministic, as
//                        every sum here is.
// Launch: grid (ceil(N / 128), ceil(M / BM), slices or phases), 2·BM threads: BM / 32 warps down
// and 2 across, each warp a 32 x 64 tile of m16n8k16 products. The reduction walks in tiles of
// 32: each tile is gathered into registers (the next tile's loads in flight during the current
// tile's products), rounded to bf16 and stored to shared memory, double buffered: A as
// [BM][32 + 8] (row-major), B transposed as [128][32 + 8] (a column's 32 reduction elements
// contiguous, their 32-bit pairs XOR-swizzled by the row: `cm_swizzle`), so every fragment is
// one 32-bit shared load and neither those loads nor the tile's stores conflict on banks. The
// B gather puts a warp's lanes where memory is contiguous: on 32 neighbouring columns (output
// or input positions; each thread keeps its column's decomposition for the whole reduction) in
// the forward and the input gradient, along the reduction (positions) in the weight gradient,
// whose columns (taps) come from a per-block table. The reduction index's decomposition, the
// same for every column, is computed once per tile by the first warp into a 32-entry table.
// Index arithmetic is 32-bit (the host checks that every tensor and product fits), divisions
// by the shape FastDiv's.

#define CM_BN 128
#define CM_BK 32
#define CM_LDS (CM_BK + 8)
// An index shift far outside any image: decomposed indices past the product's edge carry it,
// so their elements fail the bounds test and read as zero.
#define CM_FAR (1 << 29)

// Mirrors `cuda::conv_mma::ConvMmaShape`.
struct ConvMmaShape {
    int n, c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, c_out;
    int tiles_per_slice;  // reduction tiles per slice (all of them but in the weight gradient)
    FastDiv div_khkw, div_kw, div_l, div_ow;
};

// A decomposed index: an offset and two shifts (rows, columns), plus a second offset.
struct CmIdx {
    int off, y, x, aux;
};

// Tap k = (ci, ki, kj) of X: x's offset within an image and the tap's row and column shifts
// (aux 0); past K: far shifts (aux -1).
__device__ __forceinline__ CmIdx cm_x_tap(const ConvMmaShape& s, int k, int K) {
    if (k >= K) return {0, -CM_FAR, -CM_FAR, -1};
    const int ci = fdiv(k, s.div_khkw), r = k - ci * s.kh * s.kw;
    const int ki = fdiv(r, s.div_kw), kj = r - ki * s.kw;
    const int dy = ki * s.dh, dx = kj * s.dw;
    return {ci * s.h * s.w + dy * s.w + dx, dy, dx, 0};
}

// Position p = (img, oi, oj) of X: the x offset of its window's corner (image img, row
// oi·sh - ph, column oj·sw - pw, possibly outside the image), the corner's row and column, and
// aux = dy's offset of p in channel 0; past P: far shifts (aux -1).
__device__ __forceinline__ CmIdx cm_x_pos(const ConvMmaShape& s, int p, int P) {
    if (p >= P) return {0, -CM_FAR, -CM_FAR, -1};
    const int img = fdiv(p, s.div_l), l = p - img * s.oh * s.ow;
    const int oi = fdiv(l, s.div_ow), oj = l - oi * s.ow;
    const int y0 = oi * s.sh - s.ph, x0 = oj * s.sw - s.pw;
    return {img * s.c * s.h * s.w + y0 * s.w + x0, y0, x0, img * s.c_out * s.oh * s.ow + l};
}

// X at a position and a tap, as bf16 bits (0 outside the image).
__device__ __forceinline__ u32 cm_x(const float* x, const ConvMmaShape& s, CmIdx pos, CmIdx tap) {
    const int iy = pos.y + tap.y, ix = pos.x + tap.x;
    return ((unsigned)iy < (unsigned)s.h && (unsigned)ix < (unsigned)s.w) ? mma_bf16_bits(x[pos.off + tap.off])
                                                                         : 0u;
}

// The forward: A = W (row-major [c_out][K], bf16), B = X, columns the output positions.
struct CmFwd {
    const float* x;
    const u16* w;
    const float* bias;
    float* y;
    ConvMmaShape s;
    __device__ __forceinline__ int slice() const { return 0; }
    __device__ __forceinline__ int M() const { return s.c_out; }
    __device__ __forceinline__ int N() const { return s.n * s.oh * s.ow; }
    __device__ __forceinline__ int K() const { return s.c * s.kh * s.kw; }
    __device__ __forceinline__ CmIdx tab(int k) const { return cm_x_tap(s, k, K()); }
    __device__ __forceinline__ CmIdx col(int p) const { return cm_x_pos(s, p, N()); }
    static constexpr bool B_ALONG_K = false;
    // W's row m at k, k + 1 (k even): one 32-bit load when rows have an even length.
    __device__ __forceinline__ u32 a_pair(int m, int k, CmIdx, CmIdx) const {
        if (m >= M() || k >= K()) return 0u;
        const u16* r = w + m * K() + k;
        if (!(K() & 1)) return *(const u32*)r;
        return (u32)r[0] | (k + 1 < K() ? (u32)r[1] << 16 : 0u);
    }
    __device__ __forceinline__ u32 b(CmIdx pos, CmIdx tap) const { return cm_x(x, s, pos, tap); }
    __device__ __forceinline__ void store(int m, int p, float v) const {
        const int L = s.oh * s.ow, img = fdiv(p, s.div_l);
        y[(img * s.c_out + m) * L + (p - img * L)] = v + (bias ? bias[m] : 0.f);
    }
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
// kj·dw ≡ rx reach), so no product is a structural zero: A[ci][(co, ki, kj)] = W[co][ci, ki, kj]
// over those taps, B = dy at the output each tap of input q = (img, iy, ix) came from (0 past
// the output's edge), columns the phase's inputs.
struct CmDgrad {
    const float* dy;
    const u16* w;
    float* dx;
    ConvMmaShape s;
    CmPhaseAxis py, px;
    FastDiv div_cols, div_in_x, div_taps, div_taps_x;
    __device__ CmDgrad(const float* dy_, const u16* w_, float* dx_, ConvMmaShape s_)
        : dy(dy_), w(w_), dx(dx_), s(s_) {
        const int ry = blockIdx.z / s.sw, rx = blockIdx.z - ry * s.sw;
        py = cm_phase_axis(ry, s.sh, s.ph, s.dh, s.kh, s.h);
        px = cm_phase_axis(rx, s.sw, s.pw, s.dw, s.kw, s.w);
        div_cols = fastdiv_of(py.in_count * px.in_count);
        div_in_x = fastdiv_of(px.in_count);
        div_taps = fastdiv_of(py.count * px.count);
        div_taps_x = fastdiv_of(px.count);
    }
    __device__ __forceinline__ int slice() const { return 0; }
    __device__ __forceinline__ int M() const { return s.c; }
    __device__ __forceinline__ int N() const { return s.n * py.in_count * px.in_count; }
    __device__ __forceinline__ int K() const { return s.c_out * py.count * px.count; }
    // (co, i, j): dy's channel offset, the tap's output shifts, W's offset at ci = 0 (aux); past
    // K shifts that put every output out of reach (aux -1).
    __device__ __forceinline__ CmIdx tab(int k) const {
        if (k >= K()) return {0, CM_FAR, CM_FAR, -1};
        const int taps = py.count * px.count, co = fdiv(k, div_taps), r = k - co * taps;
        const int i = fdiv(r, div_taps_x), j = r - i * px.count;
        const int ki = py.first + i * py.step, kj = px.first + j * px.step;
        return {co * s.oh * s.ow, py.b0 + i * py.db, px.b0 + j * px.db,
                (co * s.c * s.kh + ki) * s.kw + kj};
    }
    // q-th input of the phase: dy's image offset, its row and column as output units (a0 + j),
    // and dx's offset at ci = 0 (aux).
    __device__ __forceinline__ CmIdx col(int q) const {
        if (q >= N()) return {0, -CM_FAR, -CM_FAR, 0};
        const int cols = py.in_count * px.in_count, img = fdiv(q, div_cols), r = q - img * cols;
        const int jy = fdiv(r, div_in_x), jx = r - jy * px.in_count;
        const int iy = py.in0 + jy * s.sh, ix = px.in0 + jx * s.sw;
        return {img * s.c_out * s.oh * s.ow, py.a0 + jy, px.a0 + jx, (img * s.c * s.h + iy) * s.w + ix};
    }
    static constexpr bool B_ALONG_K = false;
    __device__ __forceinline__ u32 a(int m, CmIdx tap) const {
        return (m < M() && tap.aux >= 0) ? (u32)w[tap.aux + m * s.kh * s.kw] : 0u;
    }
    __device__ __forceinline__ u32 a_pair(int m, int, CmIdx t0, CmIdx t1) const {
        return a(m, t0) | (a(m, t1) << 16);
    }
    __device__ __forceinline__ u32 b(CmIdx q, CmIdx tap) const {
        const int oi = q.y - tap.y, oj = q.x - tap.x;
        return ((unsigned)oi < (unsigned)s.oh && (unsigned)oj < (unsigned)s.ow)
                   ? mma_bf16_bits(dy[q.off + tap.off + oi * s.ow + oj])
                   : 0u;
    }
    __device__ __forceinline__ void store(int m, int q, float v) const { dx[col(q).aux + m * s.h * s.w] = v; }
};

// The weight gradient: A[co][p] = dy[img, co, l], B[p][k] = X[k][p], reducing over positions;
// slice blockIdx.z writes its partial product.
struct CmWgrad {
    const float* dy;
    const float* x;
    float* part;
    ConvMmaShape s;
    __device__ __forceinline__ int slice() const { return blockIdx.z; }
    __device__ __forceinline__ int M() const { return s.c_out; }
    __device__ __forceinline__ int N() const { return s.c * s.kh * s.kw; }
    __device__ __forceinline__ int K() const { return s.n * s.oh * s.ow; }
    __device__ __forceinline__ CmIdx tab(int p) const { return cm_x_pos(s, p, K()); }
    __device__ __forceinline__ CmIdx col(int k) const { return cm_x_tap(s, k, N()); }
    static constexpr bool B_ALONG_K = true;
    __device__ __forceinline__ u32 a(int m, CmIdx pos) const {
        return (m < M() && pos.aux >= 0) ? mma_bf16_bits(dy[pos.aux + m * s.oh * s.ow]) : 0u;
    }
    __device__ __forceinline__ u32 a_pair(int m, int, CmIdx p0, CmIdx p1) const {
        return a(m, p0) | (a(m, p1) << 16);
    }
    __device__ __forceinline__ u32 b(CmIdx tap, CmIdx pos) const { return cm_x(x, s, pos, tap); }
    __device__ __forceinline__ void store(int m, int k, float v) const {
        part[((i64)blockIdx.z * M() + m) * N() + k] = v;
    }
};

// The 32-bit word of B's shared row `row` that holds reduction pair `word` (0..15): XORed with
// bits 3-4 of the row, so that 32 neighbouring rows written at one word (a warp's stores with
// lanes along the columns) fall in 32 distinct banks instead of 8 (rows are 20 words apart),
// while a fragment load (8 rows of one 8-row group, 4 neighbouring words from a multiple of 4)
// still touches 32 distinct banks.
__device__ __forceinline__ int cm_swizzle(int row, int word) { return word ^ ((row >> 3) & 3); }

// The block's BM x 128 tile of problem `p`'s product over its reduction tiles
// [z · tiles_per_slice, (z + 1) · tiles_per_slice) (z = p.slice()), as the header describes.
template <int BM, typename P>
__device__ void conv_mma(const P& p) {
    constexpr int THREADS = 2 * BM, BPAIRS = CM_BN * CM_BK / 2 / THREADS;
    __shared__ __align__(16) u16 as[2][BM * CM_LDS];
    __shared__ __align__(16) u16 bs[2][CM_BN * CM_LDS];
    __shared__ CmIdx tab[2][CM_BK];
    __shared__ CmIdx coltab[P::B_ALONG_K ? CM_BN : 1];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wm = warp >> 1, wn = warp & 1;
    const int M = p.M(), N = p.N(), K = p.K();
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * CM_BN, bn = tid & (CM_BN - 1);
    const int tiles = (K + CM_BK - 1) / CM_BK, kt0 = p.slice() * p.s.tiles_per_slice;
    const int kt1 = min(kt0 + p.s.tiles_per_slice, tiles);
    const CmIdx col = P::B_ALONG_K ? CmIdx{0, 0, 0, 0} : p.col(n0 + bn);
    u32 ra[8], rb[BPAIRS];
    float acc[2][8][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;

    // Tile kt into registers: A as 8 pairs a thread (16 threads a row, along the reduction);
    // B as BPAIRS pairs, either of the thread's own column (P::B_ALONG_K false: a warp's lanes
    // on 32 neighbouring columns, which are neighbouring positions in memory for the forward
    // and the input gradient) or, for the weight gradient, 16 lanes along one column's
    // reduction (its neighbouring positions) with the columns from the block's table.
    auto gather = [&](int kt, const CmIdx* tb) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int e = i * THREADS + tid, r = e >> 4, kp = (e & 15) * 2;
            ra[i] = p.a_pair(m0 + r, kt * CM_BK + kp, tb[kp], tb[kp + 1]);
        }
#pragma unroll
        for (int i = 0; i < BPAIRS; ++i) {
            if (P::B_ALONG_K) {
                const int e = i * THREADS + tid, kp = (e & 15) * 2;
                const CmIdx c = coltab[e >> 4];
                rb[i] = p.b(c, tb[kp]) | (p.b(c, tb[kp + 1]) << 16);
            } else {
                const int kp = (i * (THREADS / CM_BN) + (tid / CM_BN)) * 2;
                rb[i] = p.b(col, tb[kp]) | (p.b(col, tb[kp + 1]) << 16);
            }
        }
    };
    auto put = [&](int buf) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int e = i * THREADS + tid;
            *(u32*)&as[buf][(e >> 4) * CM_LDS + (e & 15) * 2] = ra[i];
        }
#pragma unroll
        for (int i = 0; i < BPAIRS; ++i) {
            const int e = i * THREADS + tid;
            const int row = P::B_ALONG_K ? e >> 4 : bn;
            const int word = P::B_ALONG_K ? e & 15 : i * (THREADS / CM_BN) + (tid / CM_BN);
            *(u32*)&bs[buf][row * CM_LDS + 2 * cm_swizzle(row, word)] = rb[i];
        }
    };
    auto compute = [&](int buf) {
#pragma unroll
        for (int kk = 0; kk < CM_BK; kk += 16) {
            u32 af[2][4], bf[8][2];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                const u16* q = &as[buf][(wm * 32 + mt * 16 + g) * CM_LDS + kk + 2 * t];
                af[mt][0] = *(const u32*)q;
                af[mt][1] = *(const u32*)(q + 8 * CM_LDS);
                af[mt][2] = *(const u32*)(q + 8);
                af[mt][3] = *(const u32*)(q + 8 * CM_LDS + 8);
            }
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                const int row = wn * 64 + nt * 8 + g, word = kk / 2 + t;
                const u16* q = &bs[buf][row * CM_LDS];
                bf[nt][0] = *(const u32*)(q + 2 * cm_swizzle(row, word));
                bf[nt][1] = *(const u32*)(q + 2 * cm_swizzle(row, word + 4));
            }
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) mma_bf16(acc[mt][nt], af[mt], bf[nt]);
        }
    };

    if (kt0 < kt1) {
        if (P::B_ALONG_K)
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
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = m0 + wm * 32 + mt * 16 + g + (e >> 1) * 8;
                const int n = n0 + wn * 64 + nt * 8 + 2 * t + (e & 1);
                if (m < M && n < N) p.store(m, n, acc[mt][nt][e]);
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
