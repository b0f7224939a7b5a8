// conv.cu: im2col and its adjoint col2im, for 2-D convolution as im2col + GEMM (cuBLAS) on the
// GPU. CPU reference: `crate::cpu::conv` (which computes the same convolution directly).
//
// Layout: x is [n, c, h, w] contiguous; cols is [n, c, kh, kw, oh, ow] contiguous, i.e.
// [n, c*kh*kw, oh*ow], so that per group the GEMM weight[c_out/g, c_in/g*kh*kw] ·
// cols[c_in/g*kh*kw, oh*ow] gives the output. Tap (ki, kj) of output (oi, oj) reads input row
// oi*sh - ph + ki*dh and column oj*sw - pw + kj*dw, zero outside the image.
// `im2col_<f32|f64>`: one thread per cols element (grid-stride).
// `col2im_<f32|f64>`: one thread per x element, summing every (tap, output) that read it
// (a gather, so no atomics and a fixed summation order).

struct ConvShape {
    i64 n, c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw;
};

template <typename T> __device__ void im2col(const T* x, T* cols, ConvShape s) {
    FOR_EACH_INDEX(k, s.n * s.c * s.kh * s.kw * s.oh * s.ow) {
        i64 oj = k % s.ow, oi = (k / s.ow) % s.oh;
        i64 kj = (k / (s.ow * s.oh)) % s.kw, ki = (k / (s.ow * s.oh * s.kw)) % s.kh;
        i64 nc = k / (s.ow * s.oh * s.kw * s.kh);
        i64 r = oi * s.sh - s.ph + ki * s.dh, q = oj * s.sw - s.pw + kj * s.dw;
        cols[k] = (r >= 0 && r < s.h && q >= 0 && q < s.w) ? x[(nc * s.h + r) * s.w + q] : T(0);
    }
}

template <typename T> __device__ void col2im(const T* cols, T* x, ConvShape s) {
    FOR_EACH_INDEX(k, s.n * s.c * s.h * s.w) {
        i64 q = k % s.w, r = (k / s.w) % s.h, nc = k / (s.w * s.h);
        T acc = T(0);
        for (i64 ki = 0; ki < s.kh; ++ki) {
            i64 t = r + s.ph - ki * s.dh;
            if (t < 0 || t % s.sh != 0) continue;
            i64 oi = t / s.sh;
            if (oi >= s.oh) continue;
            for (i64 kj = 0; kj < s.kw; ++kj) {
                i64 u = q + s.pw - kj * s.dw;
                if (u < 0 || u % s.sw != 0) continue;
                i64 oj = u / s.sw;
                if (oj >= s.ow) continue;
                acc += cols[(((nc * s.kh + ki) * s.kw + kj) * s.oh + oi) * s.ow + oj];
            }
        }
        x[k] = acc;
    }
}

extern "C" __global__ void im2col_f32(const float* x, float* cols, ConvShape s) { im2col<float>(x, cols, s); }
extern "C" __global__ void im2col_f64(const double* x, double* cols, ConvShape s) { im2col<double>(x, cols, s); }
extern "C" __global__ void col2im_f32(const float* cols, float* x, ConvShape s) { col2im<float>(cols, x, s); }
extern "C" __global__ void col2im_f64(const double* cols, double* x, ConvShape s) { col2im<double>(cols, x, s); }
