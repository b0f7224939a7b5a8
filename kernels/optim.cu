// optim.cu: fused in-place optimiser updates, one pass over a parameter, its gradient and its
// state (all contiguous, same length n). CPU reference: `crate::ops::optim` (adam_kernel,
// sgd_kernel); the host folds the bias corrections into `step_size` and `inv_sqrt_bc2`.
//
// `adam_step_<f32|f64>`: g' = g + l2 p; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
// p = p decay - step_size m / (sqrt(v) inv_sqrt_bc2 + eps)  (decay = 1 - lr wd for AdamW).
// `sgd_step_<f32|f64>`: d = g + wd p; with a momentum buffer b (non-null):
// b = first ? d : mu b + damp d, update = nesterov ? d + mu b : b; p -= lr update.
// Launch: 1-D grid-stride over n, 256 threads per block.

template <typename T>
__device__ void adam(T* p, const T* g, T* m, T* v, i64 n, double b1, double b2, double step_size,
                     double inv_sqrt_bc2, double eps, double decay, double l2) {
    FOR_EACH_INDEX(i, n) {
        T gi = g[i] + T(l2) * p[i];
        T mi = T(b1) * m[i] + T(1.0 - b1) * gi;
        T vi = T(b2) * v[i] + T(1.0 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * T(decay) - T(step_size) * mi / (sqrt(vi) * T(inv_sqrt_bc2) + T(eps));
    }
}

template <typename T>
__device__ void sgd(T* p, const T* g, T* b, i64 n, double lr, double mu, double damp, double wd,
                    int nesterov, int first) {
    FOR_EACH_INDEX(i, n) {
        T d = g[i] + T(wd) * p[i];
        T upd = d;
        if (b) {
            T bi = first ? d : T(mu) * b[i] + T(damp) * d;
            b[i] = bi;
            upd = nesterov ? d + T(mu) * bi : bi;
        }
        p[i] = p[i] - T(lr) * upd;
    }
}

#define OPTIM(TAG, T)                                                                          \
    extern "C" __global__ void adam_step_##TAG(T* p, const T* g, T* m, T* v, i64 n, double b1, \
                                               double b2, double step_size,                    \
                                               double inv_sqrt_bc2, double eps, double decay,  \
                                               double l2) {                                    \
        adam<T>(p, g, m, v, n, b1, b2, step_size, inv_sqrt_bc2, eps, decay, l2);               \
    }                                                                                          \
    extern "C" __global__ void sgd_step_##TAG(T* p, const T* g, T* b, i64 n, double lr,        \
                                              double mu, double damp, double wd, int nesterov, \
                                              int first) {                                     \
        sgd<T>(p, g, b, n, lr, mu, damp, wd, nesterov, first);                                 \
    }
OPTIM(f32, float)
OPTIM(f64, double)
