// A small CPU emulator of the CUDA constructs the fna kernels use, so that their logic (indexing,
// block scans, warp reductions, online softmax, synchronisation) is tested on machines without a
// GPU. Each CUDA thread is a std::thread; blocks run one after another; __syncthreads is a
// std::barrier over the block; warp shuffles exchange through a per-warp buffer between two
// per-warp barriers (all kernels here use full warps and full masks). Device memory is host
// memory. Used by plugins/tests/emulate_kernels.py; not a general CUDA emulator.
#pragma once

#include <cuda_fp16.h>  // host-side __half, dim3, uint3, cudaError_t, cudaStream_t

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace emu {

struct Block {
    dim3 grid, block;
    std::unique_ptr<std::barrier<>> sync;
    std::vector<std::unique_ptr<std::barrier<>>> warp_sync;
    std::vector<uint64_t> exchange;  // [warps * 32]
    std::vector<unsigned char> dynamic_smem;
};

inline thread_local Block* tl_block = nullptr;
inline thread_local uint3 tl_thread{0, 0, 0};
inline thread_local uint3 tl_block_idx{0, 0, 0};

inline unsigned linear_thread() {
    return tl_thread.x + tl_block->block.x * (tl_thread.y + tl_block->block.y * tl_thread.z);
}

template <typename T>
T warp_exchange(T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "warp_exchange: 8 bytes at most");
    Block* b = tl_block;
    const unsigned lin = linear_thread(), warp = lin / 32, lane = lin % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    b->exchange[warp * 32 + lane] = bits;
    b->warp_sync[warp]->arrive_and_wait();
    const uint64_t got = b->exchange[warp * 32 + static_cast<unsigned>(src_lane)];
    b->warp_sync[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}

inline unsigned lane() { return linear_thread() % 32; }

}  // namespace emu

#define threadIdx (::emu::tl_thread)
#define blockIdx (::emu::tl_block_idx)
#define blockDim (::emu::tl_block->block)
#define gridDim (::emu::tl_block->grid)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __expf expf
#define EMU_DYNAMIC_SMEM() (static_cast<void*>(::emu::tl_block->dynamic_smem.data()))

inline void __syncthreads() { emu::tl_block->sync->arrive_and_wait(); }

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
// One std::thread per CUDA thread of a block, reused for every block of the grid (blocks run one
// after another, separated by a barrier, so static __shared__ storage is reused like on a GPU).
template <typename K, typename... Args>
void emu_launch(K kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t, Args... args) {
    const unsigned n = block.x * block.y * block.z;
    if (n % 32 != 0) std::abort();  // the kernels here use whole warps
    emu::Block b;
    b.grid = grid;
    b.block = block;
    b.sync = std::make_unique<std::barrier<>>(n);
    for (unsigned w = 0; w < n / 32; ++w) b.warp_sync.push_back(std::make_unique<std::barrier<>>(32));
    b.exchange.assign(n, 0);
    b.dynamic_smem.assign(smem + 16, 0xCD);  // garbage-filled, like real shared memory
    std::barrier<> block_done(n);
    std::vector<std::thread> threads;
    threads.reserve(n);
    for (unsigned t = 0; t < n; ++t)
        threads.emplace_back([&, t] {
            emu::tl_block = &b;
            emu::tl_thread = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            for (unsigned z = 0; z < grid.z; ++z)
                for (unsigned y = 0; y < grid.y; ++y)
                    for (unsigned x = 0; x < grid.x; ++x) {
                        emu::tl_block_idx = uint3{x, y, z};
                        kernel(args...);
                        block_done.arrive_and_wait();
                    }
        });
    for (auto& th : threads) th.join();
}
