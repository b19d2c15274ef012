// A small CPU emulator of the CUDA constructs the fna kernels use, so that their logic (indexing,
// block scans, warp reductions, online softmax, synchronisation, thread-block clusters) is tested
// on machines without a GPU. Each CUDA thread is a fiber (ucontext) on one OS thread. The CTAs of
// one thread-block cluster run CONCURRENTLY (their fibers are interleaved by one scheduler), so
// cluster barriers and distributed shared memory behave as on the device; clusters (and CTAs
// launched without a cluster) run one after another. __syncthreads is a barrier over the CTA's
// fibers, cluster_sync one over the cluster's; warp shuffles exchange through a per-warp buffer
// between two per-warp barriers (all kernels here use full warps and full masks). Threads run in
// a rotating order between barriers, so code that forgets a barrier tends to read stale data here
// as well. Device memory is host memory.
//
// Shared memory: dynamic shared memory (extern __shared__) is per CTA and garbage-filled.
// Static `__shared__` variables are C++ statics here, i.e. ONE copy for all CTAs: fine for
// kernels launched without clusters (CTAs run one after another), wrong for a cluster kernel, so
// cluster kernels keep all their shared state in dynamic shared memory (landmarks.cu does).
//
// The emulated device (emu::g_device) answers cudaDeviceGetAttribute, cudaFuncGetAttributes and
// cudaOccupancyMaxActiveClusters; tests change it to steer a launcher onto another path (an
// Ampere-like device without clusters, a smaller shared-memory limit, ...).
// Used by plugins/cpp_tests/emulate_kernels.py; not a general CUDA emulator.
#pragma once

#include <cuda_fp16.h>  // host-side __half, dim3, uint3, cudaError_t, cudaStream_t, launch configs

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

namespace emu {

struct Barrier {
    unsigned size = 0, arrived = 0;
    unsigned long gen = 0;
};

struct Block {
    uint3 idx{0, 0, 0};
    unsigned rank = 0;              // rank in its cluster
    std::vector<Barrier> barriers;  // 0: block, 1 + w: warp w
    std::vector<uint64_t> exchange; // [warps * 32]
    std::vector<unsigned char> dynamic_smem;
};

struct Fiber {
    ucontext_t ctx;
    std::unique_ptr<char[]> stack;  // untouched pages are never committed
    uint3 tid{0, 0, 0};
    unsigned linear = 0;
    bool done = false;
    Barrier* waiting = nullptr;     // the barrier it waits on, null if runnable
    Block* block = nullptr;
};

// The CTAs that run together: one cluster (or one CTA when the launch has no clusters).
struct Group {
    dim3 grid, block;
    unsigned cluster_size = 1;
    std::vector<Block> blocks;
    std::vector<Fiber> fibers;      // block-major
    Barrier cluster_barrier;
    std::function<void()> body;
    ucontext_t scheduler;
    Fiber* current = nullptr;
};

// What the emulated GPU reports (defaults: a Hopper part).
struct Device {
    int cc_major = 9, cc_minor = 0;
    int sm_count = 132;
    int smem_optin = 227 * 1024;   // cudaDevAttrMaxSharedMemoryPerBlockOptin
    int max_cluster = 16;          // largest cluster cudaOccupancyMaxActiveClusters accepts (0: no clusters)
    bool cluster_launch = true;    // cudaDevAttrClusterLaunch
};

inline Device g_device;
inline Group* g_group = nullptr;
inline long g_cluster_launches = 0;  // launches with more than one CTA per cluster (tests assert on it)

inline Block* current_block() { return g_group->current->block; }

inline void arrive(Barrier& bar) {
    Group* g = g_group;
    if (++bar.arrived == bar.size) {  // last one in: release everybody
        bar.arrived = 0;
        ++bar.gen;
        for (Fiber& f : g->fibers)
            if (f.waiting == &bar) f.waiting = nullptr;
        return;
    }
    Fiber* me = g->current;
    me->waiting = &bar;
    swapcontext(&me->ctx, &g->scheduler);
}

inline void trampoline() {
    g_group->body();
    g_group->current->done = true;
    // returning switches to uc_link (the scheduler)
}

inline unsigned linear_thread() { return g_group->current->linear; }
inline unsigned lane() { return linear_thread() % 32; }

template <typename T>
T warp_exchange(T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "warp_exchange: 8 bytes at most");
    Block* b = current_block();
    const unsigned lin = linear_thread(), warp = lin / 32, ln = lin % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    b->exchange[warp * 32 + ln] = bits;
    arrive(b->barriers[1 + warp]);
    const uint64_t got = b->exchange[warp * 32 + static_cast<unsigned>(src_lane)];
    arrive(b->barriers[1 + warp]);
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}

// ---- thread-block clusters (see plugins/fna/cluster.cuh for the device side)
inline unsigned cluster_rank() { return current_block()->rank; }
inline unsigned cluster_size() { return g_group->cluster_size; }
inline void cluster_sync() { arrive(g_group->cluster_barrier); }
// The address of `p` (a pointer into this CTA's dynamic shared memory) in CTA `rank`'s.
template <typename T>
T* map_shared_rank(T* p, unsigned rank) {
    Group* g = g_group;
    if (rank >= g->cluster_size) {
        std::fprintf(stderr, "emu: map_shared_rank(%u) outside a cluster of %u CTAs\n", rank, g->cluster_size);
        std::abort();
    }
    unsigned char* mine = current_block()->dynamic_smem.data();
    const std::ptrdiff_t off = reinterpret_cast<unsigned char*>(p) - mine;
    if (off < 0 || static_cast<size_t>(off) >= current_block()->dynamic_smem.size()) {
        std::fprintf(stderr, "emu: map_shared_rank of a pointer outside dynamic shared memory\n");
        std::abort();
    }
    return reinterpret_cast<T*>(g->blocks[rank].dynamic_smem.data() + off);
}

}  // namespace emu

#define threadIdx (::emu::g_group->current->tid)
#define blockIdx (::emu::current_block()->idx)
// blockDim/gridDim are the same for every thread of a launch: plain globals, set by emu::run (not
// macros, so that members of the same name, cudaLaunchConfig_t::blockDim, stay usable).
inline dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __expf expf
#define EMU_DYNAMIC_SMEM() (static_cast<void*>(::emu::current_block()->dynamic_smem.data()))

inline void __syncthreads() { emu::arrive(emu::current_block()->barriers[0]); }

template <typename T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    return emu::warp_exchange(v, static_cast<int>(emu::lane()) ^ lane_mask);
}
template <typename T>
T __shfl_up_sync(unsigned, T v, unsigned delta) {
    const int src = static_cast<int>(emu::lane()) - static_cast<int>(delta);
    return emu::warp_exchange(v, src < 0 ? static_cast<int>(emu::lane()) : src);
}
template <typename T>
T __shfl_sync(unsigned, T v, int src_lane) {
    return emu::warp_exchange(v, src_lane & 31);
}

// CUDA's integer min/max device overloads
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
// IEEE single operations, round to nearest, never contracted (the host compiles without FMA)
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }

// ---- runtime API subset
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }
template <typename F>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F) {
    std::memset(attr, 0, sizeof *attr);
    attr->binaryVersion = attr->ptxVersion = emu::g_device.cc_major * 10 + emu::g_device.cc_minor;
    attr->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int) {
    switch (attr) {
        case cudaDevAttrComputeCapabilityMajor: *v = emu::g_device.cc_major; break;
        case cudaDevAttrComputeCapabilityMinor: *v = emu::g_device.cc_minor; break;
        case cudaDevAttrMultiProcessorCount: *v = emu::g_device.sm_count; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = emu::g_device.smem_optin; break;
        case cudaDevAttrClusterLaunch: *v = emu::g_device.cluster_launch ? 1 : 0; break;
        default: *v = 0; return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t n) { *p = std::calloc(1, n ? n : 1); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }

namespace emu {

inline unsigned launch_cluster_dim(const cudaLaunchConfig_t* config) {
    for (unsigned i = 0; i < config->numAttrs; ++i)
        if (config->attrs[i].id == cudaLaunchAttributeClusterDimension) {
            const auto& c = config->attrs[i].val.clusterDim;
            if (c.y != 1 || c.z != 1) { std::fprintf(stderr, "emu: only clusters along x are emulated\n"); std::abort(); }
            return c.x;
        }
    return 1;
}

// Run the grid: clusters of `cluster` CTAs along x, each cluster's CTAs concurrently.
template <typename K, typename... Args>
cudaError_t run(K kernel, dim3 grid, dim3 block, size_t smem, unsigned cluster, Args... args) {
    const unsigned n = block.x * block.y * block.z;
    if (n % 32 != 0) std::abort();  // the kernels here use whole warps
    if (cluster == 0 || grid.x % cluster != 0) return cudaErrorInvalidValue;
    if (cluster > 1) {
        if (!g_device.cluster_launch || static_cast<int>(cluster) > g_device.max_cluster) return cudaErrorInvalidValue;
        ++g_cluster_launches;
    }
    if (smem > static_cast<size_t>(g_device.smem_optin)) return cudaErrorInvalidValue;
    constexpr size_t kStack = 128 * 1024;
    Group g;
    g.grid = grid;
    g.block = block;
    g.cluster_size = cluster;
    g.blocks.resize(cluster);
    g.fibers.resize(static_cast<size_t>(n) * cluster);
    for (unsigned r = 0; r < cluster; ++r) {
        Block& b = g.blocks[r];
        b.rank = r;
        b.barriers.resize(1 + n / 32);
        b.barriers[0].size = n;
        for (unsigned w = 0; w < n / 32; ++w) b.barriers[1 + w].size = 32;
        b.exchange.assign(n, 0);
        for (unsigned t = 0; t < n; ++t) {
            Fiber& f = g.fibers[r * n + t];
            f.stack.reset(new char[kStack]);
            f.linear = t;
            f.tid = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            f.block = &b;
        }
    }
    g.cluster_barrier.size = n * cluster;
    g.body = [&] { kernel(args...); };
    ::gridDim = grid;
    ::blockDim = block;
    g_group = &g;
    const unsigned total = n * cluster;
    unsigned rotate = 0;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x0 = 0; x0 < grid.x; x0 += cluster) {
                for (unsigned r = 0; r < cluster; ++r) {
                    Block& b = g.blocks[r];
                    b.idx = uint3{x0 + r, y, z};
                    for (auto& bar : b.barriers) bar.arrived = 0;
                    b.dynamic_smem.assign(smem + 16, 0xCD);  // garbage-filled, like real shared memory
                }
                g.cluster_barrier.arrived = 0;
                for (Fiber& f : g.fibers) {
                    f.done = false;
                    f.waiting = nullptr;
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.get();
                    f.ctx.uc_stack.ss_size = kStack;
                    f.ctx.uc_link = &g.scheduler;
                    makecontext(&f.ctx, trampoline, 0);
                }
                unsigned done = 0;
                while (done < total) {
                    bool progressed = false;
                    done = 0;
                    ++rotate;
                    for (unsigned k = 0; k < total; ++k) {
                        Fiber& f = g.fibers[(k + rotate * 7) % total];
                        if (f.done) { ++done; continue; }
                        if (f.waiting) continue;
                        g.current = &f;
                        swapcontext(&g.scheduler, &f.ctx);
                        progressed = true;
                        if (f.done) ++done;
                    }
                    if (!progressed && done < total) {
                        std::fprintf(stderr,
                                     "emu: deadlock in the cluster at block (%u,%u,%u): threads wait on a barrier others never reach\n",
                                     x0, y, z);
                        std::abort();
                    }
                }
            }
    g_group = nullptr;
    return cudaSuccess;
}

}  // namespace emu

template <typename F>
inline cudaError_t cudaOccupancyMaxActiveClusters(int* n, F, const cudaLaunchConfig_t* config) {
    const unsigned c = emu::launch_cluster_dim(config);
    const bool ok = emu::g_device.cluster_launch && static_cast<int>(c) <= emu::g_device.max_cluster &&
                    config->dynamicSmemBytes <= static_cast<size_t>(emu::g_device.smem_optin);
    *n = ok ? emu::g_device.sm_count / static_cast<int>(c) : 0;
    return cudaSuccess;
}

// cudaLaunchKernelEx(&config, kernel, args...): clusters from cudaLaunchAttributeClusterDimension.
template <typename... Exp, typename... Act>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(Exp...), Act&&... args) {
    return emu::run(kernel, config->gridDim, config->blockDim, config->dynamicSmemBytes, emu::launch_cluster_dim(config),
                    static_cast<Exp>(args)...);
}

// kernel<<<grid, block, smem, stream>>>(args...) is rewritten to emu_launch(kernel, grid, block, smem, stream, args...).
template <typename K, typename... Args>
void emu_launch(K kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t, Args... args) {
    if (emu::run(kernel, grid, block, smem, 1u, args...) != cudaSuccess) {
        std::fprintf(stderr, "emu: launch rejected (grid/shared memory)\n");
        std::abort();
    }
}
