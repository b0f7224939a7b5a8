// cublas.cpp: libcublas.so of selfsup's CUDA emulator: the strided-batched GEMMs selfsup calls
// (S, D, and GemmEx with f32/bf16/f16 operands, f32 output, f32/TF32 compute), as plain
// column-major loops on the host over the emulator's device memory (host addresses).
// Semantics as cuBLAS documents them: C = alpha * op(A) * op(B) + beta * C per batch entry,
// with C overwritten (never read) when beta is 0; TF32 compute rounds both operands to a
// 10-bit mantissa (to nearest even) first.
#include "blas_common.h"

static int g_handle_dummy;

// The leading-dimension rules cuBLAS checks (CUBLAS_STATUS_INVALID_VALUE otherwise): the rows of
// each matrix as stored, at least 1.
static bool bad_dims(int ta, int tb, int m, int n, int k, int lda, int ldb, int ldc, int batch) {
    auto at_least = [](int ld, int rows) { return ld >= (rows > 1 ? rows : 1); };
    if (m < 0 || n < 0 || k < 0 || batch < 0) return true;
    if (!at_least(lda, ta ? k : m) || !at_least(ldb, tb ? n : k) || !at_least(ldc, m)) {
        std::fprintf(stderr, "selfsup CUDA emulator: cuBLAS GEMM with a leading dimension below its "
                             "matrix's rows (m %d n %d k %d, lda %d ldb %d ldc %d, op %d %d)\n",
                     m, n, k, lda, ldb, ldc, ta, tb);
        return true;
    }
    return false;
}

template <typename T>
static cublasStatus_t gemm_strided(int ta, int tb, int m, int n, int k, const T* alpha, const T* A, int lda,
                                   long long sa, const T* B, int ldb, long long sb, const T* beta, T* C, int ldc,
                                   long long sc, int batch) {
    if (bad_dims(ta, tb, m, n, k, lda, ldb, ldc, batch)) return CUBLAS_STATUS_INVALID_VALUE;
    if (EMU_HOST_ONLY) return CUBLAS_STATUS_SUCCESS;
    for (int b = 0; b < batch; ++b) {
        const T *a = A + b * sa, *bb = B + b * sb;
        gemm<T>(ta, tb, m, n, k, *alpha, lda, ldb, *beta, C + b * sc, ldc, [&](long long i) { return a[i]; },
                [&](long long i) { return bb[i]; });
    }
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" {

cublasStatus_t cublasCreate_v2(void** h) {
    *h = &g_handle_dummy;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(void*) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream_v2(void*, void*) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(void*, int) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasGetVersion_v2(void*, int* v) {
    *v = 130000;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(void*, int ta, int tb, int m, int n, int k, const float* alpha,
                                         const float* A, int lda, long long sa, const float* B, int ldb,
                                         long long sb, const float* beta, float* C, int ldc, long long sc,
                                         int batch) {
    return gemm_strided(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

cublasStatus_t cublasDgemmStridedBatched(void*, int ta, int tb, int m, int n, int k, const double* alpha,
                                         const double* A, int lda, long long sa, const double* B, int ldb,
                                         long long sb, const double* beta, double* C, int ldc, long long sc,
                                         int batch) {
    return gemm_strided(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

cublasStatus_t cublasGemmStridedBatchedEx(void*, int ta, int tb, int m, int n, int k, const void* alpha,
                                          const void* A, int atype, int lda, long long sa, const void* B,
                                          int btype, int ldb, long long sb, const void* beta, void* C, int ctype,
                                          int ldc, long long sc, int batch, int compute, int) {
    if ((ctype != CUDA_R_32F && ctype != CUDA_R_16BF) ||
        (compute != COMPUTE_32F && compute != COMPUTE_32F_FAST_TF32 && compute != COMPUTE_32F_PEDANTIC)) {
        std::fprintf(stderr, "selfsup CUDA emulator: cublasGemmStridedBatchedEx: output type %d / compute type %d "
                             "not emulated (f32 or bf16 output, 32F or 32F_FAST_TF32 compute are)\n", ctype, compute);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    for (int t : {atype, btype})
        if (t != CUDA_R_32F && t != CUDA_R_16BF && t != CUDA_R_16F) return CUBLAS_STATUS_NOT_SUPPORTED;
    // cuBLAS's table of GemmEx types: A and B of one type; f32 operands give f32 output.
    if (atype != btype || (atype == CUDA_R_32F && ctype != CUDA_R_32F)) {
        std::fprintf(stderr, "selfsup CUDA emulator: cublasGemmStridedBatchedEx: types A %d B %d C %d "
                             "are not a combination cuBLAS supports\n", atype, btype, ctype);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (bad_dims(ta, tb, m, n, k, lda, ldb, ldc, batch)) return CUBLAS_STATUS_INVALID_VALUE;
    if (EMU_HOST_ONLY) return CUBLAS_STATUS_SUCCESS;
    const bool tf32 = compute == COMPUTE_32F_FAST_TF32;
    const int esz_a = atype == CUDA_R_32F ? 4 : 2, esz_b = btype == CUDA_R_32F ? 4 : 2;
    for (int b = 0; b < batch; ++b) {
        const char* a = (const char*)A + b * sa * esz_a;
        const char* bb = (const char*)B + b * sb * esz_b;
        auto at = [&](long long i) { float v = load(a, atype, i); return tf32 ? round_tf32(v) : v; };
        auto bt = [&](long long i) { float v = load(bb, btype, i); return tf32 ? round_tf32(v) : v; };
        if (ctype == CUDA_R_32F) {
            gemm<float>(ta, tb, m, n, k, *(const float*)alpha, lda, ldb, *(const float*)beta, (float*)C + b * sc,
                        ldc, at, bt);
            continue;
        }
        // bf16 output: accumulate in f32, round to nearest even on the store.
        uint16_t* c16 = (uint16_t*)C + b * sc;
        std::vector<float> tmp((size_t)ldc * n);
        for (size_t i = 0; i < tmp.size(); ++i) tmp[i] = load(c16, CUDA_R_16BF, (long long)i);
        gemm<float>(ta, tb, m, n, k, *(const float*)alpha, lda, ldb, *(const float*)beta, tmp.data(), ldc, at, bt);
        for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i) {
                const size_t at_ = i + (size_t)j * ldc;
                c16[at_] = store_bf16(tmp[at_]);
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
