// index.cu: row selection along one axis and its scatter-add adjoint, element gather and its
// adjoint. CPU reference: `crate::cpu::index`.
//
// Tensors are viewed as [outer, dim, inner] around the indexed axis (contiguous).
// `index_select_b<16|32|64>`: out[o, j, i] = src[o, ids[j], i] for j < n (any dtype, moved as
// 2/4/8-byte words); this is also the embedding lookup. Ids may come straight from the device
// (unchecked by the host): an id outside [0, dim) writes all-ones bits (NaN for every float
// dtype) instead of reading out of bounds.
// index_add: out[o, ids[j], i] += src[o, j, i] (out zeroed first; repeated ids accumulate;
// out-of-range ids are skipped), deterministic, in three steps: `index_keys` makes a
// (key, value) pair per index, key = ids[j] (dim for an id outside [0, dim), which sorts last
// and is skipped), value = j; sort.cu sorts the pairs by key, stably, so each id's positions j
// are consecutive and ascending; `index_add_sorted_<f32|f64>`: the thread of (o, s, i) whose
// sorted place s starts an id's run finds the run's end by binary search and writes
// out[o, id, i] = the sum of src[o, j, i] over the run, in order of j, eight loads in flight:
// the CPU's order, so its values bit for bit, in every run (out zeroed first for the ids that
// never occur).
// `gather_<f32|f64>`: out[o, j, i] = x[o, ids[o, j, i], i] with ids [outer, n, inner]; an id
// outside [0, dim) (ids straight from the device) gives NaN.
// scatter_add: out[o, ids[o, j, i], i] += src[o, j, i] (out zeroed first; out-of-range ids
// skipped), deterministic the same way: `scatter_keys` pairs each element's id with its flat
// index k = (o * n + j) * inner + i, sort.cu sorts them by id, `column_keys` gives each sorted
// pair its column o * inner + i, and a second stable sort by column leaves every (column, id)
// run consecutive with j ascending; `scatter_add_sorted_<f32|f64>`: the thread of sorted place
// s that starts a run writes the run's sum, in order of j (the CPU's order).
// Launch: 1-D grid-stride over the elements of the [outer, n, inner] side, 256 threads.

#define INDEX_SELECT(NAME, T)                                                                  \
    extern "C" __global__ void NAME(const T* src, const i64* ids, T* out, i64 outer, i64 dim,  \
                                    i64 inner, i64 n) {                                        \
        FOR_EACH_INDEX(k, outer * n * inner) {                                                 \
            i64 i = k % inner, j = (k / inner) % n, o = k / (inner * n), id = ids[j];          \
            out[k] = (id >= 0 && id < dim) ? src[(o * dim + id) * inner + i] : (T)~(T)0;       \
        }                                                                                      \
    }
INDEX_SELECT(index_select_b16, u16)
INDEX_SELECT(index_select_b32, u32)
INDEX_SELECT(index_select_b64, u64)

#define GATHER(NAME, T)                                                                        \
    extern "C" __global__ void NAME(const T* x, const i64* ids, T* out, i64 outer, i64 dim,    \
                                    i64 inner, i64 n) {                                        \
        FOR_EACH_INDEX(k, outer * n * inner) {                                                 \
            i64 i = k % inner, o = k / (inner * n), id = ids[k];                               \
            out[k] = (id >= 0 && id < dim) ? x[(o * dim + id) * inner + i]                     \
                                           : (T)__longlong_as_double(0x7ff8000000000000LL);    \
        }                                                                                      \
    }
GATHER(gather_f32, float)
GATHER(gather_f64, double)

extern "C" __global__ void index_keys(const i64* ids, u32* keys, u32* vals, i64 n, i64 dim) {
    FOR_EACH_INDEX(j, n) {
        const i64 id = ids[j];
        keys[j] = (u32)((id >= 0 && id < dim) ? id : dim);
        vals[j] = (u32)j;
    }
}

// The sum of src rows order[s..end) at column i, in order, with eight loads in flight: a run
// as long as a common token's (hundreds of places) would otherwise be a chain of dependent
// loads. The additions stay in order, so the result is the sequential sum's.
template <typename T>
__device__ __forceinline__ T run_sum(const T* base, const u32* order, i64 s, i64 end, i64 inner) {
    T acc = T(0);
    i64 e = s;
    for (; e + 8 <= end; e += 8) {
        T v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) v[u] = base[(i64)order[e + u] * inner];
#pragma unroll
        for (int u = 0; u < 8; ++u) acc += v[u];
    }
    for (; e < end; ++e) acc += base[(i64)order[e] * inner];
    return acc;
}

// The end of the run of `key` that starts at s in the sorted keys[0..n) (binary search).
__device__ __forceinline__ i64 run_end(const u32* keys, i64 s, i64 n, u32 key) {
    i64 lo = s + 1, hi = n;
    while (lo < hi) {
        const i64 mid = lo + (hi - lo) / 2;
        if (keys[mid] == key) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

#define INDEX_ADD_SORTED(NAME, T)                                                              \
    extern "C" __global__ void NAME(const T* src, const u32* keys, const u32* order, T* out,   \
                                    i64 outer, i64 dim, i64 inner, i64 n) {                    \
        FOR_EACH_INDEX(k, outer * n * inner) {                                                 \
            const i64 i = k % inner, s = (k / inner) % n, o = k / (inner * n);                 \
            const u32 key = keys[s];                                                           \
            if ((i64)key >= dim || (s > 0 && keys[s - 1] == key)) continue;                    \
            const i64 end = run_end(keys, s, n, key);                                          \
            out[(o * dim + key) * inner + i] =                                                 \
                run_sum<T>(src + o * n * inner + i, order, s, end, inner);                     \
        }                                                                                      \
    }
INDEX_ADD_SORTED(index_add_sorted_f32, float)
INDEX_ADD_SORTED(index_add_sorted_f64, double)

extern "C" __global__ void scatter_keys(const i64* ids, u32* keys, u32* vals, i64 total, i64 dim) {
    FOR_EACH_INDEX(k, total) {
        const i64 id = ids[k];
        keys[k] = (u32)((id >= 0 && id < dim) ? id : dim);
        vals[k] = (u32)k;
    }
}

// The column o * inner + i of flat index k = (o * n + j) * inner + i.
__device__ __forceinline__ i64 scatter_column(i64 k, i64 n, i64 inner) {
    return (k / (n * inner)) * inner + k % inner;
}

extern "C" __global__ void column_keys(const u32* order, u32* keys, i64 total, i64 n, i64 inner) {
    FOR_EACH_INDEX(s, total) { keys[s] = (u32)scatter_column(order[s], n, inner); }
}

#define SCATTER_ADD_SORTED(NAME, T)                                                            \
    extern "C" __global__ void NAME(const T* src, const i64* ids, const u32* order, T* out,    \
                                    i64 outer, i64 dim, i64 inner, i64 n) {                    \
        const i64 total = outer * n * inner;                                                   \
        FOR_EACH_INDEX(s, total) {                                                             \
            const i64 k = order[s], id = ids[k], col = scatter_column(k, n, inner);            \
            if (id < 0 || id >= dim) continue;                                                 \
            if (s > 0) {                                                                       \
                const i64 kp = order[s - 1];                                                   \
                if (ids[kp] == id && scatter_column(kp, n, inner) == col) continue;            \
            }                                                                                  \
            T acc = T(0);                                                                      \
            for (i64 e = s; e < total; ++e) {                                                  \
                const i64 ke = order[e];                                                       \
                if (ids[ke] != id || scatter_column(ke, n, inner) != col) break;               \
                acc += src[ke];                                                                \
            }                                                                                  \
            out[((col / inner) * dim + id) * inner + col % inner] = acc;                       \
        }                                                                                      \
    }
SCATTER_ADD_SORTED(scatter_add_sorted_f32, float)
SCATTER_ADD_SORTED(scatter_add_sorted_f64, double)
