// random.cu: random draws from the counter-based Philox4x32-10 generator, bit-identical to the
// CPU's `crate::rng` / `crate::ops::random` for uniform and Bernoulli draws (the arithmetic uses
// the non-contracting __fmul_rn / __fadd_rn intrinsics so no FMA changes a rounding); normal
// draws use CUDA's log/cos and agree with the CPU to a few ulps.
//
// A draw of n values with `words` 32-bit words each starts at Philox block `start` of stream 0
// under key `seed`: word w of the draw is component w % 4 of block start + w / 4, and value i
// uses words i*words .. i*words + words.
// Kernels: `rand_<f32|f64>` (lo + span * u), `randn_<f32|f64>` (Box-Muller, mean + std * z),
// `bernoulli_<f32|f64>` (1 if u < p else 0). Launch: 1-D grid-stride over n, 256 threads.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ uint4 philox_block(u64 seed, u64 block) {
    u32 c0 = (u32)block, c1 = (u32)(block >> 32), c2 = 0, c3 = 0;
    u32 k0 = (u32)seed, k1 = (u32)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        u32 hi0 = __umulhi(PHILOX_M0, c0), lo0 = PHILOX_M0 * c0;
        u32 hi1 = __umulhi(PHILOX_M1, c2), lo1 = PHILOX_M1 * c2;
        u32 n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    return make_uint4(c0, c1, c2, c3);
}

// Word w of the draw starting at block `start`.
__device__ __forceinline__ u32 draw_word(u64 seed, u64 start, u64 w) {
    uint4 b = philox_block(seed, start + w / 4);
    switch (w % 4) {
        case 0: return b.x;
        case 1: return b.y;
        case 2: return b.z;
        default: return b.w;
    }
}

__device__ __forceinline__ float unit_f32(u32 x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }
__device__ __forceinline__ double unit_f64(u32 hi, u32 lo) {
    return (double)((((u64)hi << 32) | lo) >> 11) * (1.0 / 9007199254740992.0);
}
__device__ __forceinline__ double normal_pair(double u1, double u2) {
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

extern "C" __global__ void rand_f32(float* out, i64 n, u64 seed, u64 start, float lo, float span) {
    FOR_EACH_INDEX(i, n) { out[i] = __fadd_rn(lo, __fmul_rn(span, unit_f32(draw_word(seed, start, i)))); }
}
extern "C" __global__ void rand_f64(double* out, i64 n, u64 seed, u64 start, double lo, double span) {
    FOR_EACH_INDEX(i, n) {
        double u = unit_f64(draw_word(seed, start, 2 * i), draw_word(seed, start, 2 * i + 1));
        out[i] = __dadd_rn(lo, __dmul_rn(span, u));
    }
}
extern "C" __global__ void randn_f32(float* out, i64 n, u64 seed, u64 start, double mean, double std) {
    FOR_EACH_INDEX(i, n) {
        double z = normal_pair((double)unit_f32(draw_word(seed, start, 2 * i)),
                               (double)unit_f32(draw_word(seed, start, 2 * i + 1)));
        out[i] = (float)__dadd_rn(mean, __dmul_rn(std, z));
    }
}
extern "C" __global__ void randn_f64(double* out, i64 n, u64 seed, u64 start, double mean, double std) {
    FOR_EACH_INDEX(i, n) {
        double u1 = unit_f64(draw_word(seed, start, 4 * i), draw_word(seed, start, 4 * i + 1));
        double u2 = unit_f64(draw_word(seed, start, 4 * i + 2), draw_word(seed, start, 4 * i + 3));
        out[i] = __dadd_rn(mean, __dmul_rn(std, normal_pair(u1, u2)));
    }
}
extern "C" __global__ void bernoulli_f32(float* out, i64 n, u64 seed, u64 start, double p) {
    FOR_EACH_INDEX(i, n) { out[i] = (double)unit_f32(draw_word(seed, start, i)) < p ? 1.0f : 0.0f; }
}
extern "C" __global__ void bernoulli_f64(double* out, i64 n, u64 seed, u64 start, double p) {
    FOR_EACH_INDEX(i, n) { out[i] = (double)unit_f32(draw_word(seed, start, i)) < p ? 1.0 : 0.0; }
}
