// Thread-block clusters behind four calls, so that a kernel reads the same on Hopper, on older
// GPUs and in the CPU emulator (plugins/cpp_tests/emu/cuda_emu.h):
//   cluster_rank()          this CTA's rank in its cluster (0 without clusters)
//   cluster_size()          CTAs in the cluster (1 without clusters)
//   cluster_sync()          barrier over every thread of every CTA of the cluster, with
//                           release/acquire ordering of shared memory (a __syncthreads without)
//   cluster_map(p, rank)    the address of shared-memory pointer p in CTA `rank` (DSMEM)
// On sm_90+ these are cooperative_groups' cluster calls. Compiled for an older architecture the
// kernel can only run with clusters of one CTA: launchers check the kernel's binaryVersion
// (cudaFuncGetAttributes) before asking for more, so the fallback below is never wrong.
#pragma once

#include "cuda_common.cuh"

#if !defined(FNA_EMULATED) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#include <cooperative_groups.h>
#define FNA_DEVICE_CLUSTERS 1
#endif

namespace fna {
namespace cuda {

__device__ __forceinline__ unsigned cluster_rank() {
#if defined(FNA_EMULATED)
    return ::emu::cluster_rank();
#elif defined(FNA_DEVICE_CLUSTERS)
    return cooperative_groups::this_cluster().block_rank();
#else
    return 0;
#endif
}

__device__ __forceinline__ unsigned cluster_size() {
#if defined(FNA_EMULATED)
    return ::emu::cluster_size();
#elif defined(FNA_DEVICE_CLUSTERS)
    return cooperative_groups::this_cluster().num_blocks();
#else
    return 1;
#endif
}

__device__ __forceinline__ void cluster_sync() {
#if defined(FNA_EMULATED)
    ::emu::cluster_sync();
#elif defined(FNA_DEVICE_CLUSTERS)
    cooperative_groups::this_cluster().sync();
#else
    __syncthreads();
#endif
}

template <typename T>
__device__ __forceinline__ T* cluster_map(T* p, unsigned rank) {
#if defined(FNA_EMULATED)
    return ::emu::map_shared_rank(p, rank);
#elif defined(FNA_DEVICE_CLUSTERS)
    return cooperative_groups::this_cluster().map_shared_rank(p, rank);
#else
    (void)rank;
    return p;
#endif
}

}  // namespace cuda
}  // namespace fna
