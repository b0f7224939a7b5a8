// cublaslt.cpp: libcublasLt.so of selfsup's CUDA emulator: the one cuBLASLt product selfsup
// calls (`cuda::lt`: bf16 or f32 operands, f32 or bf16 output (C and D of one type), f32
// compute, with the DEFAULT, BIAS, GELU_AUX, GELU_AUX_BIAS or DGELU epilogue), as a plain
// column-major loop on the host over the emulator's device memory. Semantics as cuBLASLt
// documents them: D = alpha * op(A) * op(B) + beta * C (+ bias[i] on every column of D with
// the BIAS epilogues, the bias in D's type unless CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE says
// f32), summed in f32 and rounded once to D's type (to nearest even for bf16). GELU_AUX(_BIAS):
// that sum v (bias included) is stored in the aux buffer (D's type, leading dimension
// CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, a multiple of 8 no less than D's rows) and D =
// gelu(v) with GELU's tanh form, computed from the f32 v. DGELU: D = v * gelu'(aux), the
// derivative of the tanh form at the stored aux value. Layouts are column-major (rows, cols,
// ld) of the stored matrices, before op(); one batch entry.
#include "blas_common.h"

#include <cmath>
#include <cstdint>

namespace {
struct Layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};
struct Desc {
    int compute, scale;
    int transa = 0, transb = 0;
    uint32_t epilogue = 1;  // CUBLASLT_EPILOGUE_DEFAULT
    const void* bias = nullptr;
    int bias_type = -1;  // D's type
    void* aux = nullptr;
    int64_t aux_ld = 0;
};
// Attribute codes of cublasLtMatmulDescAttributes_t and epilogues that are emulated.
enum {
    DESC_TRANSA = 3,
    DESC_TRANSB = 4,
    DESC_EPILOGUE = 7,
    DESC_BIAS_POINTER = 8,
    DESC_AUX_POINTER = 11,
    DESC_AUX_LD = 12,
    DESC_BIAS_DATA_TYPE = 26
};
enum { EPILOGUE_DEFAULT = 1, EPILOGUE_BIAS = 4, EPILOGUE_GELU_AUX = 160, EPILOGUE_GELU_AUX_BIAS = 164, EPILOGUE_DGELU = 192 };
bool adds_bias(uint32_t e) { return e == EPILOGUE_BIAS || e == EPILOGUE_GELU_AUX_BIAS; }
bool uses_aux(uint32_t e) { return e == EPILOGUE_GELU_AUX || e == EPILOGUE_GELU_AUX_BIAS || e == EPILOGUE_DGELU; }
// GELU's tanh form and its derivative (the CPU op `gelu_tanh`'s formulas).
const double K0 = 0.7978845608028654, K1 = 0.044715;
float gelu_tanh(float x) {
    const double v = x;
    return (float)(0.5 * v * (1.0 + std::tanh(K0 * (v + K1 * v * v * v))));
}
float dgelu_tanh(float x) {
    const double v = x, t = std::tanh(K0 * (v + K1 * v * v * v));
    return (float)(0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * K0 * (1.0 + 3.0 * K1 * v * v));
}
struct HeuristicResult {  // cublasLtMatmulHeuristicResult_t
    uint64_t algo[8];
    size_t workspace_size;
    int state;
    float waves;
    int reserved[4];
};
int g_lt_handle;
int g_pref;
}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(void** h) {
    *h = &g_lt_handle;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(void*) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatrixLayoutCreate(Layout** l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    if (ld < (int64_t)(rows > 0 ? rows : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    *l = new Layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(Layout* l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(Desc** d, int compute, int scale) {
    *d = new Desc{compute, scale};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(Desc* d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(Desc* d, int attr, const void* buf, size_t size) {
    switch (attr) {
        case DESC_TRANSA:
        case DESC_TRANSB:
        case DESC_BIAS_DATA_TYPE:
            if (size != 4) return CUBLAS_STATUS_INVALID_VALUE;
            std::memcpy(attr == DESC_TRANSA ? &d->transa : attr == DESC_TRANSB ? &d->transb : &d->bias_type, buf, 4);
            return CUBLAS_STATUS_SUCCESS;
        case DESC_EPILOGUE:
            if (size != 4) return CUBLAS_STATUS_INVALID_VALUE;
            std::memcpy(&d->epilogue, buf, 4);
            return CUBLAS_STATUS_SUCCESS;
        case DESC_BIAS_POINTER:
            if (size != sizeof(void*)) return CUBLAS_STATUS_INVALID_VALUE;
            std::memcpy(&d->bias, buf, sizeof(void*));
            return CUBLAS_STATUS_SUCCESS;
        case DESC_AUX_POINTER:
            if (size != sizeof(void*)) return CUBLAS_STATUS_INVALID_VALUE;
            std::memcpy(&d->aux, buf, sizeof(void*));
            return CUBLAS_STATUS_SUCCESS;
        case DESC_AUX_LD:
            if (size != 8) return CUBLAS_STATUS_INVALID_VALUE;
            std::memcpy(&d->aux_ld, buf, 8);
            return CUBLAS_STATUS_SUCCESS;
        default:
            std::fprintf(stderr, "selfsup CUDA emulator: cublasLtMatmulDescSetAttribute: attribute %d not emulated\n",
                         attr);
            return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(void** p) {
    *p = &g_pref;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(void*) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(void*, int, const void*, size_t) { return CUBLAS_STATUS_SUCCESS; }

// Checks what the emulated product supports; one "algorithm" when it does.
static bool supported(const Desc* d, const Layout* a, const Layout* b, const Layout* c, const Layout* dd) {
    const bool ops = (a->type == CUDA_R_16BF || a->type == CUDA_R_32F) && b->type == a->type;
    const bool out = (dd->type == CUDA_R_32F || dd->type == CUDA_R_16BF) && c->type == dd->type;
    const int bias = d->bias_type == -1 ? dd->type : d->bias_type;
    return ops && out && d->compute == COMPUTE_32F && d->scale == CUDA_R_32F &&
           (d->epilogue == EPILOGUE_DEFAULT || adds_bias(d->epilogue) || uses_aux(d->epilogue)) &&
           (!uses_aux(d->epilogue) || (d->aux_ld % 8 == 0 && d->aux_ld >= (int64_t)dd->rows)) &&
           (bias == dd->type || bias == CUDA_R_32F);
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(void*, Desc* d, Layout* a, Layout* b, Layout* c, Layout* dd, void*,
                                              int requested, HeuristicResult* results, int* count) {
    *count = 0;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    if (!supported(d, a, b, c, dd)) return CUBLAS_STATUS_NOT_SUPPORTED;
    std::memset(&results[0], 0, sizeof(HeuristicResult));
    *count = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(void*, Desc* d, const void* alpha, const void* A, Layout* la, const void* B,
                              Layout* lb, const void* beta, const void* C, Layout* lc, void* D, Layout* ld,
                              const void*, void*, size_t, void*) {
    if (!supported(d, la, lb, lc, ld)) return CUBLAS_STATUS_NOT_SUPPORTED;
    // op(A) is m x k, op(B) k x n, D m x n.
    const long long m = (long long)ld->rows, n = (long long)ld->cols;
    const long long k = (long long)(d->transa ? la->rows : la->cols);
    const long long am = (long long)(d->transa ? la->cols : la->rows);
    const long long bk = (long long)(d->transb ? lb->cols : lb->rows);
    const long long bn = (long long)(d->transb ? lb->rows : lb->cols);
    if (am != m || bk != k || bn != n || (long long)lc->rows != m || (long long)lc->cols != n)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (adds_bias(d->epilogue) && d->bias == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    if (uses_aux(d->epilogue) && d->aux == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    if (EMU_HOST_ONLY) return CUBLAS_STATUS_SUCCESS;
    const float b0 = *(const float*)beta;
    // C is read before D is written (they may alias, as when D = C in place).
    std::vector<float> out((size_t)(m * n));
    for (long long j = 0; j < n; ++j)
        for (long long i = 0; i < m; ++i)
            out[i + j * m] = b0 == 0.0f ? 0.0f : b0 * load(C, lc->type, i + j * lc->ld);
    gemm<float>(d->transa, d->transb, (int)m, (int)n, (int)k, *(const float*)alpha, la->ld, lb->ld, 1.0f, out.data(),
                m, [&](long long i) { return load(A, la->type, i); }, [&](long long i) { return load(B, lb->type, i); });
    const int bias_type = d->bias_type == -1 ? ld->type : d->bias_type;
    for (long long j = 0; j < n; ++j)
        for (long long i = 0; i < m; ++i) {
            float v = out[i + j * m];
            if (adds_bias(d->epilogue)) v += load(d->bias, bias_type, i);
            const long long a = i + j * d->aux_ld;
            if (d->epilogue == EPILOGUE_GELU_AUX || d->epilogue == EPILOGUE_GELU_AUX_BIAS) {
                if (ld->type == CUDA_R_16BF)
                    ((uint16_t*)d->aux)[a] = store_bf16(v);
                else
                    ((float*)d->aux)[a] = v;
                v = gelu_tanh(v);
            } else if (d->epilogue == EPILOGUE_DGELU) {
                v *= dgelu_tanh(load(d->aux, ld->type, a));
            }
            if (ld->type == CUDA_R_16BF)
                ((uint16_t*)D)[i + j * ld->ld] = store_bf16(v);
            else
                ((float*)D)[i + j * ld->ld] = v;
        }
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
