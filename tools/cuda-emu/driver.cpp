// driver.cpp: libcuda.so of selfsup's CUDA emulator: the part of the CUDA driver API that
// cudarc and selfsup call, on the host. One device, "selfsup CUDA emulator", compute
// capability 9.0; device memory is host memory (a device pointer is a host address), every
// copy and launch runs synchronously when it is queued (so every stream is always idle), and
// a module is a shared library built by the emulator's NVRTC (nvrtc.cpp) from device.h plus a
// kernel file. Launches are serialised process-wide (the kernels' `__shared__` statics and the
// block scheduler of device.h exist once per module).
//
// It checks what a real driver would refuse and what a kernel run can detect: unknown
// pointers passed to copies and frees, launches with more than 1024 threads per block or a
// zero grid, barrier deadlocks; each is an error code, with a line on stderr naming it. An
// access beyond either end of a device buffer hits a guard page: the process aborts with a
// line naming the kernel and the buffer (`on_fault`).
#ifndef EMU_REVERSE
#define EMU_REVERSE 0  // 1 in the lib-reverse build: blocks and threads run in descending order
#endif
// 1 in the lib-host-only build, which measures the host's own cost of a step (scripts/host_cost.sh):
// launches are checked but not run, device-to-device copies and fills are skipped, and memory
// comes from per-size free lists without guard pages or fill, as from the real driver's pool.
#ifndef EMU_HOST_ONLY
#define EMU_HOST_ONLY 0
#endif
#include <dlfcn.h>
#include <elf.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

struct Module {
    void* handle;
};
typedef int (*LaunchFn)(void**, const unsigned*, const unsigned*, char*, int);
struct Function {
    LaunchFn launch;
    std::string name;
};

static std::mutex g_mu;                          // guards the allocation table
static std::recursive_mutex g_launch;            // serialises launches
static std::map<uintptr_t, size_t> g_allocs;     // live device allocations: address -> bytes
// Each allocation is its own mapping, its end against an inaccessible guard page and with one
// before it too: a kernel (or the emulated cuBLAS) that reads or writes past either end of a
// buffer faults at once, and `on_fault` names the kernel and the allocation. On a GPU that is
// garbage or an illegal-address error that ends the process's CUDA context.
struct Mapping {
    uintptr_t base;  // start of the mapping (the guard page before)
    size_t span;     // bytes mapped, both guard pages included
};
static std::map<uintptr_t, Mapping> g_maps;  // address -> its mapping (absent: plain heap)
static size_t g_page = 4096;
static std::atomic<const char*> g_kernel{nullptr};  // the kernel being run, for on_fault
static struct sigaction g_old_segv, g_old_bus;
static uint64_t g_used = 0, g_used_high = 0;
static int g_ctx_dummy, g_stream_dummy, g_pool_dummy;
// What a test can ask the emulator (selfsup_emu_counters): copies to the host (reads back),
// explicit waits (stream, context, event synchronisation), copies to the device, launches,
// bytes copied to the device, and copies to the device from pageable memory (not allocated by
// cuMemHostAlloc: on a GPU those may wait for the stream).
static std::atomic<unsigned long long> g_reads{0}, g_waits{0}, g_writes{0}, g_launches{0}, g_written_bytes{0},
    g_pageable_writes{0};
// Page-locked host allocations (cuMemHostAlloc): start -> bytes.
static std::map<uintptr_t, size_t> g_pinned;

static CUresult fail(CUresult code, const std::string& what) {
    std::fprintf(stderr, "selfsup CUDA emulator: %s\n", what.c_str());
    return code;
}

// Whether [p, p + bytes) lies inside one allocation of `table` (start -> bytes).
static bool inside(const std::map<uintptr_t, size_t>& table, uintptr_t p, size_t bytes) {
    std::lock_guard<std::mutex> g(g_mu);
    auto it = table.upper_bound(p);
    if (it == table.begin()) return false;
    --it;
    return p >= it->first && p + bytes <= it->first + it->second;
}
// Whether [p, p + bytes) lies inside one live device allocation.
static bool inside_allocation(CUdeviceptr p, size_t bytes) { return inside(g_allocs, (uintptr_t)p, bytes); }

// Appends `t` (or the decimal `v`) to the fault message; no allocation and little stack, since
// the handler runs on the thread's small alternate signal stack.
static char g_msg[1024];
static size_t g_msg_len = 0;
static void msg(const char* t) {
    while (*t && g_msg_len + 1 < sizeof g_msg) g_msg[g_msg_len++] = *t++;
}
static void msg_num(unsigned long long v) {
    char d[24];
    int n = 0;
    do d[n++] = (char)('0' + v % 10); while ((v /= 10) && n < 24);
    while (n > 0 && g_msg_len + 1 < sizeof g_msg) g_msg[g_msg_len++] = d[--n];
}

// SIGSEGV / SIGBUS: a fault in a guard page is an out-of-bounds access to device memory:
// say which kernel, which allocation and how far out, then abort. Any other fault goes to the
// handler that was there before (Rust's, which reports stack overflows).
static void on_fault(int sig, siginfo_t* si, void* ctx) {
    const uintptr_t a = (uintptr_t)si->si_addr;
    const char* kernel = g_kernel.load();
    if (g_mu.try_lock()) {
        for (const auto& [ptr, m] : g_maps) {
            const bool before = a >= m.base && a < m.base + g_page;
            const bool after = a >= m.base + m.span - g_page && a < m.base + m.span;
            if (!before && !after) continue;
            auto it = g_allocs.find(ptr);
            const size_t bytes = it == g_allocs.end() ? 0 : it->second;
            g_msg_len = 0;
            msg("selfsup CUDA emulator: ");
            msg(kernel ? "kernel " : "a copy or cuBLAS call");
            if (kernel) msg(kernel);
            msg(" touched device memory ");
            msg_num(before ? ptr - a : a - (ptr + bytes));
            msg(before ? " bytes before the start of a buffer of " : " bytes past the end of a buffer of ");
            msg_num(bytes);
            msg(" bytes (an out-of-bounds access: on a GPU it reads garbage or fails with an "
                "illegal-address error)\n");
            ssize_t w = write(2, g_msg, g_msg_len);
            (void)w;
            std::abort();
        }
        g_mu.unlock();
    }
    if (kernel) {
        g_msg_len = 0;
        msg("selfsup CUDA emulator: a fault while kernel ");
        msg(kernel);
        msg(" ran\n");
        ssize_t w = write(2, g_msg, g_msg_len);
        (void)w;
    }
    struct sigaction& old = sig == SIGBUS ? g_old_bus : g_old_segv;
    if (old.sa_flags & SA_SIGINFO) {
        old.sa_sigaction(sig, si, ctx);
    } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
        old.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);  // returning re-runs the access, which now ends the process
    }
}

// With SELFSUP_EMU_LAUNCH_LOG set (scripts/emu_check.sh sets it), each kernel's name is
// appended to that file the first time this process launches it, so the check can list the
// kernels no test runs.
static void note_launch(const std::string& name) {
    static const char* path = std::getenv("SELFSUP_EMU_LAUNCH_LOG");
    static std::set<std::string> seen;
    if (!path || !seen.insert(name).second) return;
    if (FILE* f = std::fopen(path, "a")) {
        std::fprintf(f, "%s\n", name.c_str());
        std::fclose(f);
    }
}

static void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        g_page = (size_t)sysconf(_SC_PAGESIZE);
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
    });
}

extern "C" {

// The emulator's own entry point (not a CUDA function): the counters above, in that order.
void selfsup_emu_counters(unsigned long long out[6]) {
    out[0] = g_reads.load();
    out[1] = g_waits.load();
    out[2] = g_writes.load();
    out[3] = g_launches.load();
    out[4] = g_written_bytes.load();
    out[5] = g_pageable_writes.load();
}

CUresult cuInit(unsigned) {
    install_fault_handler();
    return CUDA_SUCCESS;
}
CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    std::snprintf(name, (size_t)len, "selfsup CUDA emulator (host, not a GPU)");
    return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = (size_t)16 << 30;
    return CUDA_SUCCESS;
}
CUresult cuMemGetInfo_v2(size_t* free_b, size_t* total) {
    *total = (size_t)16 << 30;
    *free_b = *total - g_used;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice) {
    switch (attr) {
        case 1: *v = 1024; break;    // max threads per block
        case 2: case 3: *v = 1024; break;
        case 4: *v = 1024; break;
        case 5: *v = 2147483647; break;
        case 6: case 7: *v = 65535; break;
        case 8: *v = 48 * 1024; break;
        case 10: *v = 32; break;     // warp size
        case 16: *v = 132; break;    // multiprocessors (an H100 SXM or H200: 132)
        case 75: *v = 9; break;      // compute capability major
        case 76: *v = 0; break;      // minor
        case 115: *v = 1; break;     // memory pools supported
        default: *v = 0;
    }
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid(void* uuid, CUdevice) {
    std::memset(uuid, 0, 16);
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid_v2(void* uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }

CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice) {
    *ctx = &g_ctx_dummy;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(void*) { return CUDA_SUCCESS; }
CUresult cuCtxGetCurrent(void** ctx) {
    *ctx = &g_ctx_dummy;
    return CUDA_SUCCESS;
}
CUresult cuCtxPushCurrent_v2(void*) { return CUDA_SUCCESS; }
CUresult cuCtxPopCurrent_v2(void** ctx) {
    if (ctx) *ctx = &g_ctx_dummy;
    return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() {
    g_waits++;
    return CUDA_SUCCESS;
}
CUresult cuCtxGetDevice(CUdevice* d) {
    *d = 0;
    return CUDA_SUCCESS;
}

CUresult cuStreamCreate(void** s, unsigned) {
    *s = &g_stream_dummy;
    return CUDA_SUCCESS;
}
CUresult cuStreamCreateWithPriority(void** s, unsigned, int) {
    *s = &g_stream_dummy;
    return CUDA_SUCCESS;
}
CUresult cuStreamDestroy_v2(void*) { return CUDA_SUCCESS; }
CUresult cuStreamSynchronize(void*) {
    g_waits++;
    return CUDA_SUCCESS;
}
CUresult cuStreamQuery(void*) { return CUDA_SUCCESS; }
CUresult cuStreamWaitEvent(void*, void*, unsigned) { return CUDA_SUCCESS; }
// Work runs when it is queued, so an event completes when it is recorded: it holds the host
// time of that moment, and the time between two events is the host time the emulated work
// between them took.
struct EmuEvent {
    double ms = 0.0;
};
CUresult cuEventCreate(void** e, unsigned) {
    *e = new EmuEvent;
    return CUDA_SUCCESS;
}
CUresult cuEventRecord(void* e, void*) {
    ((EmuEvent*)e)->ms = std::chrono::duration<double, std::milli>(
                             std::chrono::steady_clock::now().time_since_epoch()).count();
    return CUDA_SUCCESS;
}
CUresult cuEventSynchronize(void*) {
    g_waits++;
    return CUDA_SUCCESS;
}
CUresult cuEventQuery(void*) { return CUDA_SUCCESS; }
CUresult cuEventDestroy_v2(void* e) {
    delete (EmuEvent*)e;
    return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime(float* ms, void* start, void* end) {
    *ms = (float)(((EmuEvent*)end)->ms - ((EmuEvent*)start)->ms);
    return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime_v2(float* ms, void* start, void* end) { return cuEventElapsedTime(ms, start, end); }

// The host-only build's pool: freed buffers kept by rounded size and handed out again.
static std::unordered_map<size_t, std::vector<void*>> g_pool;

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    if (bytes == 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc of 0 bytes");
    if (EMU_HOST_ONLY) {
        const size_t body = (bytes + 255) / 256 * 256;
        std::lock_guard<std::mutex> g(g_mu);
        auto& free_list = g_pool[body];
        void* m = nullptr;
        if (!free_list.empty()) {
            m = free_list.back();
            free_list.pop_back();
        } else {
            m = std::aligned_alloc(256, body);
        }
        if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
        g_allocs[(uintptr_t)m] = bytes;
        g_used += bytes;
        if (g_used > g_used_high) g_used_high = g_used;
        *p = (CUdeviceptr)(uintptr_t)m;
        return CUDA_SUCCESS;
    }
    install_fault_handler();
    // The buffer ends 256-byte aligned against the guard page after it (cuMemAlloc's alignment
    // is 256): reads in the last partial 256 bytes see the fill below, further ones fault.
    const size_t body = (bytes + 255) / 256 * 256;
    const size_t span = (body + g_page - 1) / g_page * g_page + 2 * g_page;
    void* base = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void* m = nullptr;
    if (base != MAP_FAILED && mprotect(base, g_page, PROT_NONE) == 0 &&
        mprotect((char*)base + span - g_page, g_page, PROT_NONE) == 0) {
        m = (char*)base + span - g_page - body;
    } else {
        // Out of mappings (vm.max_map_count): this one without guards.
        if (base != MAP_FAILED) munmap(base, span);
        base = nullptr;
        m = std::aligned_alloc(256, body);
    }
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    // Fresh device memory holds garbage on a GPU: fill it with NaN-patterned bytes so a kernel
    // that reads what it never wrote shows it.
    std::memset(m, 0xff, body);
    std::lock_guard<std::mutex> g(g_mu);
    if (base) g_maps[(uintptr_t)m] = Mapping{(uintptr_t)base, span};
    g_allocs[(uintptr_t)m] = bytes;
    g_used += bytes;
    if (g_used > g_used_high) g_used_high = g_used;
    *p = (CUdeviceptr)(uintptr_t)m;
    return CUDA_SUCCESS;
}
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, void*) { return cuMemAlloc_v2(p, bytes); }
CUresult cuMemFree_v2(CUdeviceptr p) {
    std::lock_guard<std::mutex> g(g_mu);
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end()) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFree of an address that is not an allocation");
    g_used -= it->second;
    if (EMU_HOST_ONLY) {
        g_pool[(it->second + 255) / 256 * 256].push_back((void*)(uintptr_t)p);
        g_allocs.erase(it);
        return CUDA_SUCCESS;
    }
    g_allocs.erase(it);
    auto m = g_maps.find((uintptr_t)p);
    if (m != g_maps.end()) {
        munmap((void*)m->second.base, m->second.span);
        g_maps.erase(m);
    } else {
        std::free((void*)(uintptr_t)p);
    }
    return CUDA_SUCCESS;
}
CUresult cuMemFreeAsync(CUdeviceptr p, void*) { return cuMemFree_v2(p); }

static CUresult copy(const char* what, void* dst, const void* src, size_t bytes, bool dst_dev, bool src_dev) {
    if (bytes == 0) return CUDA_SUCCESS;
    if (dst_dev && !inside_allocation((CUdeviceptr)(uintptr_t)dst, bytes))
        return fail(CUDA_ERROR_INVALID_VALUE, std::string(what) + ": destination outside any device allocation");
    if (src_dev && !inside_allocation((CUdeviceptr)(uintptr_t)src, bytes))
        return fail(CUDA_ERROR_INVALID_VALUE, std::string(what) + ": source outside any device allocation");
    if (EMU_HOST_ONLY && dst_dev && src_dev) return CUDA_SUCCESS;
    std::memmove(dst, src, bytes);
    return CUDA_SUCCESS;
}
CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    if (bytes == 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemHostAlloc of 0 bytes");
    void* m = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    std::lock_guard<std::mutex> g(g_mu);
    g_pinned[(uintptr_t)m] = bytes;
    *p = m;
    return CUDA_SUCCESS;
}
CUresult cuMemFreeHost(void* p) {
    std::lock_guard<std::mutex> g(g_mu);
    if (!g_pinned.erase((uintptr_t)p)) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFreeHost of an address cuMemHostAlloc did not return");
    std::free(p);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* h, size_t n) {
    g_writes++;
    g_written_bytes += n;
    if (!inside(g_pinned, (uintptr_t)h, n)) g_pageable_writes++;
    return copy("cuMemcpyHtoD", (void*)(uintptr_t)d, h, n, true, false);
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* h, size_t n, void*) { return cuMemcpyHtoD_v2(d, h, n); }
CUresult cuMemcpyDtoH_v2(void* h, CUdeviceptr d, size_t n) {
    g_reads++;
    return copy("cuMemcpyDtoH", h, (const void*)(uintptr_t)d, n, false, true);
}
CUresult cuMemcpyDtoHAsync_v2(void* h, CUdeviceptr d, size_t n, void*) { return cuMemcpyDtoH_v2(h, d, n); }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) {
    return copy("cuMemcpyDtoD", (void*)(uintptr_t)d, (const void*)(uintptr_t)s, n, true, true);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void*) { return cuMemcpyDtoD_v2(d, s, n); }
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
    if (!inside_allocation(d, n)) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemsetD8 outside any device allocation");
    if (EMU_HOST_ONLY) return CUDA_SUCCESS;
    std::memset((void*)(uintptr_t)d, v, n);
    return CUDA_SUCCESS;
}
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void*) { return cuMemsetD8_v2(d, v, n); }

CUresult cuDeviceGetDefaultMemPool(void** pool, CUdevice) {
    *pool = &g_pool_dummy;
    return CUDA_SUCCESS;
}
CUresult cuMemPoolSetAttribute(void*, int, void*) { return CUDA_SUCCESS; }
CUresult cuMemPoolGetAttribute(void*, int attr, void* value) {
    std::lock_guard<std::mutex> g(g_mu);
    uint64_t v = 0;
    switch (attr) {
        case 5: case 7: v = g_used; break;       // reserved / used, current
        case 6: case 8: v = g_used_high; break;  // reserved / used, high-water mark
        default: v = 0;
    }
    std::memcpy(value, &v, 8);
    return CUDA_SUCCESS;
}

// The image is an ELF shared library; its size is where its section header table ends.
CUresult cuModuleLoadData(Module** m, const void* image) {
    const Elf64_Ehdr* h = (const Elf64_Ehdr*)image;
    if (!image || std::memcmp(h->e_ident, ELFMAG, SELFMAG) != 0)
        return fail(CUDA_ERROR_INVALID_IMAGE, "module image is not an ELF file (not built by the emulator's NVRTC?)");
    const size_t size = (size_t)h->e_shoff + (size_t)h->e_shnum * h->e_shentsize;
    char path[] = "/tmp/selfsup-emu-module-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return fail(CUDA_ERROR_INVALID_IMAGE, "could not write the module to /tmp");
    bool ok = write(fd, image, size) == (ssize_t)size;
    close(fd);
    void* handle = ok ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : nullptr;
    const char* why = handle ? nullptr : dlerror();
    unlink(path);
    if (!handle) return fail(CUDA_ERROR_INVALID_IMAGE, std::string("could not load the module: ") + (why ? why : "write failed"));
    // The schedule this driver was built for (build.sh: lib/ ascending, lib-reverse/ descending).
    if (auto set = (void (*)(int))dlsym(handle, "emu_set_schedule")) set(EMU_REVERSE);
    *m = new Module{handle};
    return CUDA_SUCCESS;
}
CUresult cuModuleUnload(Module* m) {
    // Kept loaded: functions of it may still be cached by the caller.
    delete m;
    return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(Function** f, Module* m, const char* name) {
    if (!m) return CUDA_ERROR_INVALID_HANDLE;
    void* sym = dlsym(m->handle, (std::string("emu_launch_") + name).c_str());
    if (!sym) return CUDA_ERROR_NOT_FOUND;
    *f = new Function{(LaunchFn)sym, name};
    return CUDA_SUCCESS;
}
CUresult cuFuncGetAttribute(int* v, int, Function*) {
    *v = 0;
    return CUDA_SUCCESS;
}
CUresult cuFuncSetAttribute(Function*, int, int) { return CUDA_SUCCESS; }

CUresult cuLaunchKernel(Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void*, void** params, void** extra) {
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (extra) return fail(CUDA_ERROR_NOT_SUPPORTED, "cuLaunchKernel with `extra` arguments");
    if (shared > 0) return fail(CUDA_ERROR_NOT_SUPPORTED, f->name + ": dynamic shared memory is not emulated");
    if ((unsigned long long)bx * by * bz > 1024 || bx * by * bz == 0)
        return fail(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, f->name + ": block of " + std::to_string(bx) + "x" +
                                                            std::to_string(by) + "x" + std::to_string(bz) + " threads");
    if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535)
        return fail(CUDA_ERROR_INVALID_VALUE, f->name + ": invalid grid");
    const unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
    char err[512] = {0};
    g_launches++;
    std::lock_guard<std::recursive_mutex> g(g_launch);
    note_launch(f->name);
    if (EMU_HOST_ONLY) return CUDA_SUCCESS;
    g_kernel.store(f->name.c_str());
    const int rc = f->launch(params, grid, block, err, sizeof err);
    g_kernel.store(nullptr);
    if (rc != 0) return fail(CUDA_ERROR_LAUNCH_FAILED, f->name + ": " + err);
    return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult e, const char** s) {
    switch (e) {
        case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
        case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
        case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case CUDA_ERROR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
        case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
        case CUDA_ERROR_LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: *s = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"; break;
        case CUDA_ERROR_NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
        default: *s = "CUDA_ERROR_UNKNOWN";
    }
    return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult e, const char** s) { return cuGetErrorName(e, s); }

}  // extern "C"
