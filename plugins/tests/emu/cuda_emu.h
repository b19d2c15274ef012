// A small CPU emulator of the CUDA constructs the fna kernels use, so that their logic (indexing,
// block scans, warp reductions, online softmax, synchronisation) is tested on machines without a
// GPU. Each CUDA thread is a fiber (ucontext) on one OS thread; blocks run one after another;
// __syncthreads is a barrier over the block's fibers; warp shuffles exchange through a per-warp
// buffer between two per-warp barriers (all kernels here use full warps and full masks). Threads
// run in a rotating order between barriers, so code that forgets a barrier tends to read stale
// data here as well. Device memory is host memory. Used by plugins/tests/emulate_kernels.py; not
// a general CUDA emulator.
#pragma once

#include <cuda_fp16.h>  // host-side __half, dim3, uint3, cudaError_t, cudaStream_t

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

namespace emu {

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    uint3 tid;
    unsigned linear = 0;
    bool done = false;
    int waiting = -1;        // barrier id it waits on, -1 if runnable
    unsigned long gen = 0;   // generation of that barrier when it started waiting
};

struct Barrier {
    unsigned size = 0, arrived = 0;
    unsigned long gen = 0;
};

struct Block {
    dim3 grid, block;
    std::vector<Fiber> fibers;
    std::vector<Barrier> barriers;  // 0: block, 1 + w: warp w
    std::vector<uint64_t> exchange;  // [warps * 32]
    std::vector<unsigned char> dynamic_smem;
    std::function<void()> body;
    ucontext_t scheduler;
    Fiber* current = nullptr;
};

inline Block* g_block = nullptr;
inline uint3 g_block_idx{0, 0, 0};

inline void arrive(int id) {
    Block* b = g_block;
    Barrier& bar = b->barriers[id];
    if (++bar.arrived == bar.size) {  // last one in: release everybody
        bar.arrived = 0;
        ++bar.gen;
        for (Fiber& f : b->fibers)
            if (f.waiting == id) f.waiting = -1;
        return;
    }
    Fiber* me = b->current;
    me->waiting = id;
    me->gen = bar.gen;
    swapcontext(&me->ctx, &b->scheduler);
}

inline void trampoline() {
    g_block->body();
    g_block->current->done = true;
    // returning switches to uc_link (the scheduler)
}

inline unsigned linear_thread() { return g_block->current->linear; }
inline unsigned lane() { return linear_thread() % 32; }

template <typename T>
T warp_exchange(T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "warp_exchange: 8 bytes at most");
    Block* b = g_block;
    const unsigned lin = linear_thread(), warp = lin / 32, ln = lin % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    b->exchange[warp * 32 + ln] = bits;
    arrive(1 + static_cast<int>(warp));
    const uint64_t got = b->exchange[warp * 32 + static_cast<unsigned>(src_lane)];
    arrive(1 + static_cast<int>(warp));
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}

}  // namespace emu

#define threadIdx (::emu::g_block->current->tid)
#define blockIdx (::emu::g_block_idx)
#define blockDim (::emu::g_block->block)
#define gridDim (::emu::g_block->grid)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __expf expf
#define EMU_DYNAMIC_SMEM() (static_cast<void*>(::emu::g_block->dynamic_smem.data()))

inline void __syncthreads() { emu::arrive(0); }

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

// ---- runtime API subset
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t n) { *p = std::calloc(1, n ? n : 1); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }

// kernel<<<grid, block, smem, stream>>>(args...) is rewritten to emu_launch(kernel, grid, block, smem, stream, args...).
template <typename K, typename... Args>
void emu_launch(K kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t, Args... args) {
    const unsigned n = block.x * block.y * block.z;
    if (n % 32 != 0) std::abort();  // the kernels here use whole warps
    constexpr size_t kStack = 128 * 1024;
    emu::Block b;
    b.grid = grid;
    b.block = block;
    b.fibers.resize(n);
    for (unsigned t = 0; t < n; ++t) {
        b.fibers[t].stack.resize(kStack);
        b.fibers[t].linear = t;
        b.fibers[t].tid = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    }
    b.barriers.resize(1 + n / 32);
    b.barriers[0].size = n;
    for (unsigned w = 0; w < n / 32; ++w) b.barriers[1 + w].size = 32;
    b.exchange.assign(n, 0);
    b.dynamic_smem.assign(smem + 16, 0xCD);  // garbage-filled, like real shared memory
    b.body = [&] { kernel(args...); };
    emu::g_block = &b;
    unsigned rotate = 0;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                emu::g_block_idx = uint3{x, y, z};
                for (auto& bar : b.barriers) bar.arrived = 0;
                for (emu::Fiber& f : b.fibers) {
                    f.done = false;
                    f.waiting = -1;
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = &b.scheduler;
                    makecontext(&f.ctx, emu::trampoline, 0);
                }
                unsigned done = 0;
                while (done < n) {
                    bool progressed = false;
                    done = 0;
                    ++rotate;
                    for (unsigned k = 0; k < n; ++k) {
                        emu::Fiber& f = b.fibers[(k + rotate * 7) % n];
                        if (f.done) { ++done; continue; }
                        if (f.waiting >= 0) continue;
                        b.current = &f;
                        swapcontext(&b.scheduler, &f.ctx);
                        progressed = true;
                        if (f.done) ++done;
                    }
                    if (!progressed && done < n) {
                        std::fprintf(stderr, "emu: deadlock in block (%u,%u,%u): threads wait on a barrier others never reach\n", x, y, z);
                        std::abort();
                    }
                }
            }
    emu::g_block = nullptr;
}
