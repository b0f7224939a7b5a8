// device.h: the CUDA device environment, emulated on the host, for compiling selfsup's
// kernels (kernels/*.cu) with a host C++ compiler. The emulator's NVRTC (nvrtc.cpp) puts this
// file in front of each kernel source; its driver (driver.cpp) loads the result as a shared
// library and runs launches through the `emu_launch_<kernel>` entry points generated for it.
//
// What it emulates: a launch runs its blocks one after another on the calling thread (in
// ascending order, or descending with the lib-reverse driver: see `reverse_order`); the
// threads of a block are fibers (own stacks, switched by a few instructions of assembly, x86-64
// only) that run until they finish or reach a barrier. `__syncthreads` waits for every live
// thread of the block, the warp shuffles for the 32 lanes of the warp; a barrier that can never
// be passed (threads waiting while the others finished or wait elsewhere) fails the launch
// with a message instead of hanging, and so does a full-mask warp intrinsic in a warp with
// lanes that exited or do not exist (`check_full_warp`). `__shared__` variables are statics: one copy, which is
// what a block sees, since blocks never overlap; it starts each block filled with 0xff bytes
// (NaN), as a GPU's shared memory starts undefined. Atomics are plain read-modify-writes (nothing
// runs concurrently inside a launch).
//
// What it does not emulate: timing, memory ordering between blocks, races, bank conflicts,
// register or shared-memory limits, PTX (`asm`: kernels offer a host branch under
// SELFSUP_HOST_EMULATION), fast-math intrinsics' reduced precision, FMA contraction.
#pragma once
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <string>

#define SELFSUP_HOST_EMULATION 1
#ifdef EMU_SCAN
#define __global__ EMU_KERNEL_MARK
#else
#define __global__
#endif
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
};
typedef dim3 uint3;
// A load through the read-only data path; here a plain load.
template <typename T> inline T __ldg(const T* p) { return *p; }
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
// CUDA's vector types, with their alignment (a misaligned vector load fails on a GPU; here it
// is as undefined as there).
struct __attribute__((aligned(8))) uint2 {
    unsigned x, y;
};
inline uint2 make_uint2(unsigned a, unsigned b) { return uint2{a, b}; }
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }

namespace emu {

extern "C" void emu_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.globl emu_switch
.hidden emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch, .-emu_switch
)");

enum State { READY, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

struct Fiber {
    void* sp;
    dim3 idx;
    int linear;
    State state;
};

// The block being run (one at a time per module: the driver serialises launches).
struct Block {
    std::vector<Fiber> fibers;
    void* sched_sp = nullptr;
    int cur = 0;
    int live = 0;
    int at_block = 0;
    std::vector<int> warp_live, at_warp;
    std::vector<uint64_t> exchange;
    char* stacks = nullptr;
    size_t stack_count = 0;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    std::string error;
};
// The emulator's own state lives in .data (`EMU_STATE`): .bss holds only the kernels'
// `__shared__` statics, which every block starts with poisoned (see `poison_shared`).
#define EMU_STATE __attribute__((section(".data.emu")))
static Block B EMU_STATE;
static dim3 blockIdx EMU_STATE, blockDim EMU_STATE, gridDim EMU_STATE;
// The order blocks and threads run in: ascending (the default), or descending when the driver
// built as lib-reverse sets it (emu_set_schedule). A kernel that is correct on a GPU gives the
// same result either way (up to the order of floating-point atomics); one that reads what
// another thread or block writes without a barrier between them is right in at most one of
// the two orders, so running the suites in both finds such races in either direction.
static bool reverse_order EMU_STATE = false;
static const size_t STACK = 128 * 1024;

inline dim3 current_thread() { return B.fibers[B.cur].idx; }

inline void yield_to_scheduler() { emu_switch(&B.fibers[B.cur].sp, B.sched_sp); }

inline void release_block_if_complete() {
    if (B.at_block > 0 && B.at_block == B.live) {
        for (auto& f : B.fibers)
            if (f.state == AT_BLOCK_BARRIER) f.state = READY;
        B.at_block = 0;
    }
}

inline void release_warp_if_complete(int w) {
    if (B.at_warp[w] > 0 && B.at_warp[w] == B.warp_live[w]) {
        for (size_t i = (size_t)w * 32; i < B.fibers.size() && i < (size_t)w * 32 + 32; ++i)
            if (B.fibers[i].state == AT_WARP_BARRIER) B.fibers[i].state = READY;
        B.at_warp[w] = 0;
    }
}

inline void syncthreads() {
    Fiber& me = B.fibers[B.cur];
    me.state = AT_BLOCK_BARRIER;
    B.at_block++;
    release_block_if_complete();
    if (me.state != READY) yield_to_scheduler();
}

// A `_sync` warp intrinsic with the full mask needs all 32 lanes of the warp running: on a GPU
// it is undefined when some have exited or the warp is a block's partial last warp (it may
// hang or read garbage). Here every lane of a warp waits for the others anyway, so such a call
// would pass: it fails the launch instead.
inline void check_full_warp(unsigned mask, const char* what) {
    const int w = B.fibers[B.cur].linear >> 5;
    if (mask == 0xffffffffu && B.warp_live[w] != 32 && B.error.empty())
        B.error = std::string(what) + " with a full mask in warp " + std::to_string(w) + " of block (" +
                  std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
                  std::to_string(blockIdx.z) + ") while only " + std::to_string(B.warp_live[w]) +
                  " of its 32 lanes run (the others exited or do not exist): undefined on a GPU";
}

// Fails the launch with `what` unless `ok`: for the preconditions of the PTX that kernels
// emulate under SELFSUP_HOST_EMULATION (e.g. ldmatrix's 16-byte aligned rows), which a GPU
// would break on.
inline void require(bool ok, const char* what) {
    if (!ok && B.error.empty())
        B.error = std::string(what) + " in block (" + std::to_string(blockIdx.x) + "," +
                  std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) + ")";
}

inline void syncwarp() {
    Fiber& me = B.fibers[B.cur];
    const int w = me.linear >> 5;
    me.state = AT_WARP_BARRIER;
    B.at_warp[w]++;
    release_warp_if_complete(w);
    if (me.state != READY) yield_to_scheduler();
}

extern "C" inline void fiber_main() {
    B.body(B.body_arg);
    Fiber& me = B.fibers[B.cur];
    me.state = DONE;
    B.live--;
    B.warp_live[me.linear >> 5]--;
    release_block_if_complete();
    release_warp_if_complete(me.linear >> 5);
    void* dead;
    emu_switch(&dead, B.sched_sp);
    std::abort();  // never resumed
}

// The bounds of this module's .bss (hidden: this shared library's own, not the executable's).
extern "C" char __bss_start[] __attribute__((visibility("hidden")));
extern "C" char _end[] __attribute__((visibility("hidden")));

// Shared memory is uninitialised when a block starts on a GPU. `__shared__` variables are
// zero-initialised statics here, so this fills the module's .bss (those statics, and the C
// runtime's `completed.0` flag, which only an unload reads: modules are never unloaded) with
// 0xff bytes before each block: a float read before any thread wrote it is NaN, an integer -1,
// and the result shows it, where the static would have held zeros or the previous block's data.
inline void poison_shared() { std::memset(__bss_start, 0xff, (size_t)(_end - __bss_start)); }

// Runs one block of `n` threads of `body(arg)`; false (with B.error) on a barrier deadlock.
inline bool run_block(dim3 block, void (*body)(void*), void* arg) {
    poison_shared();
    B.error.clear();
    const int n = (int)(block.x * block.y * block.z);
    if (B.stack_count < (size_t)n) {
        std::free(B.stacks);
        B.stacks = (char*)std::malloc(STACK * (size_t)n);
        if (!B.stacks) {
            B.stack_count = 0;
            B.error = "out of host memory for fiber stacks";
            return false;
        }
        B.stack_count = (size_t)n;
    }
    B.fibers.assign(n, Fiber{});
    const int warps = (n + 31) / 32;
    B.warp_live.assign(warps, 0);
    B.at_warp.assign(warps, 0);
    B.exchange.assign(n, 0);
    B.live = n;
    B.at_block = 0;
    B.body = body;
    B.body_arg = arg;
    for (int i = 0; i < n; ++i) {
        Fiber& f = B.fibers[i];
        f.linear = i;
        f.idx = dim3{(unsigned)(i % block.x), (unsigned)((i / block.x) % block.y), (unsigned)(i / (block.x * block.y))};
        f.state = READY;
        B.warp_live[i >> 5]++;
        // Stack: 16-byte aligned top; a dummy return address, fiber_main as the address
        // emu_switch returns to, and six zeroed callee-saved registers below it.
        uintptr_t top = ((uintptr_t)(B.stacks + STACK * (size_t)(i + 1))) & ~(uintptr_t)15;
        void** sp = (void**)top;
        *--sp = nullptr;
        *--sp = (void*)&fiber_main;
        for (int r = 0; r < 6; ++r) *--sp = nullptr;
        f.sp = sp;
    }
    int done = 0;
    while (done < n) {
        bool ran = false;
        done = 0;
        for (int k = 0; k < n; ++k) {
            const int i = reverse_order ? n - 1 - k : k;
            if (B.fibers[i].state == DONE) {
                done++;
                continue;
            }
            if (B.fibers[i].state != READY) continue;
            B.cur = i;
            emu_switch(&B.sched_sp, B.fibers[i].sp);
            ran = true;
            if (B.fibers[i].state == DONE) done++;
        }
        if (!ran && done < n) {
            int at_block = 0, at_warp = 0;
            for (auto& f : B.fibers) {
                at_block += f.state == AT_BLOCK_BARRIER;
                at_warp += f.state == AT_WARP_BARRIER;
            }
            B.error = "barrier deadlock in block (" + std::to_string(blockIdx.x) + "," +
                      std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) + "): " +
                      std::to_string(at_block) + " thread(s) wait at __syncthreads and " +
                      std::to_string(at_warp) + " at a warp shuffle, " + std::to_string(done) +
                      " finished";
            return false;
        }
    }
    return B.error.empty();  // set by a check inside the block (check_full_warp)
}

template <typename F, typename Tuple, size_t... I>
void call_with(F f, Tuple& t, std::index_sequence<I...>) {
    f(std::get<I>(t)...);
}

template <typename... A> struct Call {
    void (*f)(A...);
    std::tuple<std::decay_t<A>...> args;
    static void run(void* self) {
        Call* c = (Call*)self;
        call_with(c->f, c->args, std::index_sequence_for<A...>{});
    }
};

template <typename... A, size_t... I>
std::tuple<std::decay_t<A>...> unpack(void** params, std::index_sequence<I...>) {
    return std::tuple<std::decay_t<A>...>(*static_cast<std::decay_t<A>*>(params[I])...);
}

// Runs kernel `f` over the grid; 0 on success, else 1 with the reason in `err`.
template <typename... A>
int launch(void (*f)(A...), void** params, const unsigned* grid, const unsigned* block, char* err,
           int errlen) {
    Call<A...> c{f, unpack<A...>(params, std::index_sequence_for<A...>{})};
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    const bool rev = reverse_order;
    for (unsigned zz = 0; zz < grid[2]; ++zz)
        for (unsigned yy = 0; yy < grid[1]; ++yy)
            for (unsigned xx = 0; xx < grid[0]; ++xx) {
                const unsigned x = rev ? grid[0] - 1 - xx : xx, y = rev ? grid[1] - 1 - yy : yy,
                               z = rev ? grid[2] - 1 - zz : zz;
                blockIdx = dim3{x, y, z};
                if (!run_block(blockDim, &Call<A...>::run, &c)) {
                    std::snprintf(err, (size_t)errlen, "%s", B.error.c_str());
                    return 1;
                }
            }
    return 0;
}

// A warp shuffle: every lane of the warp publishes `v`, then reads the value of the lane
// `source(lane)` names (its own when that lane is outside its `width` segment).
template <typename T, typename Source> T shuffle(unsigned mask, T v, Source source) {
    check_full_warp(mask, "a warp shuffle");
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    const int lin = B.fibers[B.cur].linear, lane = lin & 31;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    B.exchange[lin] = bits;
    syncwarp();
    T r;
    std::memcpy(&r, &B.exchange[lin - lane + source(lane)], sizeof(T));
    syncwarp();
    return r;
}

template <typename T> T shfl_down(unsigned m, T v, unsigned delta, int width) {
    return shuffle(m, v, [&](int lane) { return (lane % width) + (int)delta < width ? lane + (int)delta : lane; });
}

template <typename T> T shfl_xor(unsigned m, T v, int mask, int width) {
    return shuffle(m, v, [&](int lane) {
        const int other = lane ^ mask;
        return other / width == lane / width ? other : lane;
    });
}

template <typename T> T shfl(unsigned m, T v, int src_lane, int width) {
    return shuffle(m, v, [&](int lane) { return (lane / width) * width + (src_lane % width); });
}

// PTX's cvt.rzi for a float-to-integer conversion: toward zero, saturating, NaN to 0 (a host
// cast of an out-of-range value is undefined behaviour). Other conversions are plain casts.
template <typename D, typename S> D cvt_rzi_sat(S x) {
    if constexpr (std::is_floating_point<S>::value && std::is_integral<D>::value) {
        if (x != x) return 0;
        if (x <= (S)std::numeric_limits<D>::min()) return std::numeric_limits<D>::min();
        if (x >= (S)std::numeric_limits<D>::max()) return std::numeric_limits<D>::max();
        return (D)x;
    } else {
        return (D)x;
    }
}

}  // namespace emu

// Called by the driver after it loads the module: 1 runs blocks and threads in descending order.
extern "C" void emu_set_schedule(int reverse) { emu::reverse_order = reverse != 0; }

using emu::blockDim;
using emu::blockIdx;
using emu::gridDim;
#define threadIdx (emu::current_thread())
#define warpSize 32

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    emu::check_full_warp(mask, "__syncwarp");
    emu::syncwarp();
}
template <typename T> T __shfl_down_sync(unsigned m, T v, unsigned delta, int width = 32) {
    return emu::shfl_down(m, v, delta, width);
}
template <typename T> T __shfl_xor_sync(unsigned m, T v, int mask, int width = 32) {
    return emu::shfl_xor(m, v, mask, width);
}
template <typename T> T __shfl_sync(unsigned m, T v, int src, int width = 32) { return emu::shfl(m, v, src, width); }
inline void __emu_require(bool ok, const char* what) { emu::require(ok, what); }

template <typename T> T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T> T atomicMax(T* p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}

inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline double __longlong_as_double(long long x) { double f; std::memcpy(&f, &x, 8); return f; }
inline long long __double_as_longlong(double x) { long long i; std::memcpy(&i, &x, 8); return i; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }

// CUDA's min/max: on floats they are fminf/fmaxf (a NaN operand loses); on mixed integer types
// the usual arithmetic conversions.
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
// The other min/max overloads (device code calls them unqualified on mixed integer types too).
template <typename A, typename B> inline auto min(A a, B b) -> std::common_type_t<A, B> {
    return b < a ? b : a;
}
template <typename A, typename B> inline auto max(A a, B b) -> std::common_type_t<A, B> {
    return a < b ? b : a;
}
