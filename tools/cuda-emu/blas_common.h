// blas_common.h: what the emulator's cuBLAS and cuBLASLt share: status and data-type codes,
// TF32 rounding, reading an f32/bf16/f16 element, storing a bf16 one, and the column-major
// reference GEMM.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>
#include <initializer_list>

// 1 in the lib-host-only build (driver.cpp): products are checked but not computed.
#ifndef EMU_HOST_ONLY
#define EMU_HOST_ONLY 0
#endif

typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
enum { CUDA_R_32F = 0, CUDA_R_64F = 1, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum { COMPUTE_32F = 68, COMPUTE_32F_PEDANTIC = 69, COMPUTE_32F_FAST_16F = 74, COMPUTE_32F_FAST_16BF = 75,
       COMPUTE_32F_FAST_TF32 = 77, COMPUTE_64F = 70 };

static inline float round_tf32(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) >= 0x7f800000u) return x;  // inf / NaN unchanged
    u += 0xfffu + ((u >> 13) & 1u);
    u &= ~0x1fffu;
    float r;
    std::memcpy(&r, &u, 4);
    return r;
}

static inline float load(const void* p, int type, long long i) {
    switch (type) {
        case CUDA_R_32F: return ((const float*)p)[i];
        case CUDA_R_16BF: {
            uint32_t u = (uint32_t)((const uint16_t*)p)[i] << 16;
            float f;
            std::memcpy(&f, &u, 4);
            return f;
        }
        default: return (float)((const _Float16*)p)[i];
    }
}

// f32 to bf16, rounded to nearest even as the hardware stores it (NaN stays a quiet NaN).
static inline uint16_t store_bf16(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

template <typename T, typename LoadA, typename LoadB>
static inline void gemm(int ta, int tb, int m, int n, int k, T alpha, long long lda, long long ldb, T beta, T* C,
                 long long ldc, LoadA a_at, LoadB b_at) {
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            T acc = 0;
            for (int l = 0; l < k; ++l) {
                const long long ai = ta ? l + (long long)i * lda : i + (long long)l * lda;
                const long long bi = tb ? j + (long long)l * ldb : l + (long long)j * ldb;
                acc += a_at(ai) * b_at(bi);
            }
            T& c = C[i + (long long)j * ldc];
            c = beta == T(0) ? alpha * acc : alpha * acc + beta * c;
        }
}

