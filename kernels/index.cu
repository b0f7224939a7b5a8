// index.cu: row selection along one axis and its scatter-add adjoint, element gather and its
// adjoint. CPU reference: `crate::cpu::index`.
//
// Tensors are viewed as [outer, dim, inner] around the indexed axis (contiguous).
// `index_select_b<16|32|64>`: out[o, j, i] = src[o, ids[j], i] for j < n (any dtype, moved as
// 2/4/8-byte words); this is also the embedding lookup. Ids may come straight from the device
// (unchecked by the host): an id outside [0, dim) writes all-ones bits (NaN for every float
// dtype) instead of reading out of bounds.
// `index_add_<f32|f64>`: out[o, ids[j], i] += src[o, j, i] (out zeroed first; atomic adds, so
// repeated ids accumulate; summation order is unspecified); out-of-range ids are skipped.
// `gather_<f32|f64>`: out[o, j, i] = x[o, ids[o, j, i], i] with ids [outer, n, inner]; an id
// outside [0, dim) (ids straight from the device) gives NaN.
// `scatter_add_<f32|f64>`: out[o, ids[o, j, i], i] += src[o, j, i] (atomic; out-of-range ids
// skipped).
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

#define INDEX_ADD(NAME, T)                                                                     \
    extern "C" __global__ void NAME(const T* src, const i64* ids, T* out, i64 outer, i64 dim,  \
                                    i64 inner, i64 n) {                                        \
        FOR_EACH_INDEX(k, outer * n * inner) {                                                 \
            i64 i = k % inner, j = (k / inner) % n, o = k / (inner * n), id = ids[j];          \
            if (id >= 0 && id < dim) atomicAdd(out + (o * dim + id) * inner + i, src[k]);      \
        }                                                                                      \
    }
INDEX_ADD(index_add_f32, float)
INDEX_ADD(index_add_f64, double)

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

#define SCATTER_ADD(NAME, T)                                                                   \
    extern "C" __global__ void NAME(const T* src, const i64* ids, T* out, i64 outer, i64 dim,  \
                                    i64 inner, i64 n) {                                        \
        FOR_EACH_INDEX(k, outer * n * inner) {                                                 \
            i64 i = k % inner, o = k / (inner * n), id = ids[k];                               \
            if (id >= 0 && id < dim) atomicAdd(out + (o * dim + id) * inner + i, src[k]);      \
        }                                                                                      \
    }
SCATTER_ADD(scatter_add_f32, float)
SCATTER_ADD(scatter_add_f64, double)
