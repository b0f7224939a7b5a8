// sort.cu: a stable sort of (u32 key, u32 value) pairs by key, least significant digit first
// (radix 256, one pass per 8 key bits), for the deterministic scatter-adds (index.cu's
// `index_add_sorted`). CPU reference: a stable sort by key (`slice::sort_by_key`).
//
// Keys and values are flat arrays of n < 2^31 pairs, cut into tiles of SORT_TILE pairs, one
// block of 256 threads (one per digit value) per tile. A pass over digit `shift / 8`:
// `radix_hist`: hist[d * tiles + t] = how many keys of tile t have digit d (shared-memory
// integer counts: exact, so the same in every run).
// `radix_scan`: hist becomes its exclusive prefix sum, in place (one block of 1,024 threads:
// each sums a contiguous chunk, the chunk totals are scanned in shared memory, each chunk is
// rewritten), so hist[d * tiles + t] is where tile t's first key of digit d goes.
// `radix_scatter`: thread d of tile t walks the tile's keys in order and moves those of digit d
// to consecutive places from hist[d * tiles + t]: keys of one digit keep their order, which is
// what makes the sort stable and the passes compose.
// Launch: `radix_hist` and `radix_scatter` a grid of `tiles` blocks of 256 threads;
// `radix_scan` one block of 1,024 threads.

#define SORT_TILE 512
#define SORT_RADIX 256

extern "C" __global__ void radix_hist(const u32* keys, u32* hist, i64 n, int shift) {
    __shared__ u32 counts[SORT_RADIX];
    const i64 tiles = (n + SORT_TILE - 1) / SORT_TILE;
    const i64 t0 = (i64)blockIdx.x * SORT_TILE;
    const i64 t1 = t0 + SORT_TILE < n ? t0 + SORT_TILE : n;
    counts[threadIdx.x] = 0;
    __syncthreads();
    for (i64 k = t0 + threadIdx.x; k < t1; k += blockDim.x)
        atomicAdd(&counts[(keys[k] >> shift) & (SORT_RADIX - 1)], 1u);
    __syncthreads();
    hist[(i64)threadIdx.x * tiles + blockIdx.x] = counts[threadIdx.x];
}

extern "C" __global__ void radix_scan(u32* hist, i64 len) {
    __shared__ u32 totals[1024];
    const i64 per = (len + blockDim.x - 1) / blockDim.x;
    const i64 c0 = (i64)threadIdx.x * per;
    const i64 c1 = c0 + per < len ? c0 + per : len;
    u32 sum = 0;
    for (i64 k = c0; k < c1; ++k) sum += hist[k];
    totals[threadIdx.x] = sum;
    __syncthreads();
    // Inclusive scan of the chunk totals (Hillis-Steele: log2(1024) rounds).
    for (unsigned int off = 1; off < blockDim.x; off <<= 1) {
        const u32 v = threadIdx.x >= off ? totals[threadIdx.x - off] : 0u;
        __syncthreads();
        totals[threadIdx.x] += v;
        __syncthreads();
    }
    u32 run = totals[threadIdx.x] - sum;
    for (i64 k = c0; k < c1; ++k) {
        const u32 v = hist[k];
        hist[k] = run;
        run += v;
    }
}

extern "C" __global__ void radix_scatter(const u32* keys, const u32* vals, u32* keys_out,
                                         u32* vals_out, const u32* hist, i64 n, int shift) {
    __shared__ u32 tile[SORT_TILE];
    const i64 tiles = (n + SORT_TILE - 1) / SORT_TILE;
    const i64 t0 = (i64)blockIdx.x * SORT_TILE;
    const int len = (int)((t0 + SORT_TILE < n ? t0 + SORT_TILE : n) - t0);
    for (int k = threadIdx.x; k < len; k += blockDim.x) tile[k] = keys[t0 + k];
    __syncthreads();
    const u32 digit = threadIdx.x;
    u32 at = hist[(i64)digit * tiles + blockIdx.x];
    for (int k = 0; k < len; ++k) {
        const u32 key = tile[k];
        if (((key >> shift) & (SORT_RADIX - 1)) == digit) {
            keys_out[at] = key;
            vals_out[at] = vals[t0 + k];
            ++at;
        }
    }
}
