/*
 * compat-cuda13.h: lets NCCL 2.18 - 2.26 compile against the CUDA 13.0
 * toolkit. Force-included (-include) into every host and device compile by
 * tests/gpu/nccl-compat/apply.sh; nothing else includes it. NCCL 2.27 and
 * newer build with CUDA 13 as they are and never see it.
 *
 * Each block brings back a name that CUDA 13 removed, with the meaning it
 * had under CUDA 12, and nothing more:
 *
 *  1. cudaStreamGetCaptureInfo_v2/_v3, cudaGraphAddDependencies_v2,
 *     cudaStreamUpdateCaptureDependencies_v2: CUDA 13 removed the versioned
 *     names; the plain names now take the CUDA 12.3 "_v3"/"_v2" argument
 *     lists (with edge data). The _v2 capture query is the new one with no
 *     edge data asked for.
 *  2. cudaGraphAddDependencies and cudaStreamUpdateCaptureDependencies with
 *     their CUDA 12 argument lists (no edge data, 4 arguments): a call with
 *     4 arguments goes to a wrapper passing NULL edge data; a call with 5
 *     arguments is the CUDA 13 function. Without this a 4-argument call such
 *     as UpdateCaptureDependencies(s, nullptr, 0, cudaStreamSetCaptureDependencies)
 *     would still compile against CUDA 13 but mean something else (count 1,
 *     flags 0).
 *  3. PFN_cuXxx: CUDA 13's cudaTypedefs.h keeps only the versioned typedefs
 *     (PFN_cuXxx_vNNNN). NCCL 2.21 - 2.26 declare their driver entry points
 *     with the plain names and load them with cudaGetDriverEntryPoint, which
 *     returns the newest version for the runtime's CUDA version (13000). Each
 *     plain name here is the typedef whose arguments NCCL's calls use, and
 *     cudaGetDriverEntryPoint is pinned to that same version (through
 *     cudaGetDriverEntryPointByVersion), so the pointer's ABI is the typedef's:
 *     e.g. cuCtxGetDevice has a 13000 version with other arguments, and
 *     cuCtxCreate a 12050 one; NCCL calls the 2000 and 11040 ones. Every
 *     version asked for is at most 12010, which a CUDA 13 driver still serves.
 *     Names not in the table are asked for as before (the runtime's version).
 */
#ifndef NCCL_COMPAT_CUDA13_H
#define NCCL_COMPAT_CUDA13_H
/* enhcompat.cc (built with -DNCCL_COMPAT_CUDA13_OFF) declares its own
 * stand-ins for CUDA names and includes no CUDA header. */
#if defined(__cplusplus) && !defined(NCCL_COMPAT_CUDA13_OFF)
#include <cuda.h>
#include <cuda_runtime_api.h>
#if CUDART_VERSION >= 13000
#include <cudaTypedefs.h>
#include <string.h>

/* 1. removed versioned runtime names */
static inline cudaError_t cudaStreamGetCaptureInfo_v2(cudaStream_t stream, enum cudaStreamCaptureStatus *status,
    unsigned long long *id = NULL, cudaGraph_t *graph = NULL, const cudaGraphNode_t **deps = NULL, size_t *numDeps = NULL) {
  return cudaStreamGetCaptureInfo(stream, status, id, graph, deps, NULL, numDeps);
}
static inline cudaError_t cudaStreamGetCaptureInfo_v3(cudaStream_t stream, enum cudaStreamCaptureStatus *status,
    unsigned long long *id = NULL, cudaGraph_t *graph = NULL, const cudaGraphNode_t **deps = NULL,
    const cudaGraphEdgeData **edges = NULL, size_t *numDeps = NULL) {
  return cudaStreamGetCaptureInfo(stream, status, id, graph, deps, edges, numDeps);
}
static inline cudaError_t cudaGraphAddDependencies_v2(cudaGraph_t graph, const cudaGraphNode_t *from,
    const cudaGraphNode_t *to, const cudaGraphEdgeData *edges, size_t n) {
  return cudaGraphAddDependencies(graph, from, to, edges, n);
}
static inline cudaError_t cudaStreamUpdateCaptureDependencies_v2(cudaStream_t stream, cudaGraphNode_t *deps,
    const cudaGraphEdgeData *edges, size_t n, unsigned int flags = 0) {
  return cudaStreamUpdateCaptureDependencies(stream, deps, edges, n, flags);
}

/* 2. the CUDA 12 argument lists, chosen by argument count */
static inline cudaError_t ncclCompatGraphAddDependencies4(cudaGraph_t graph, const cudaGraphNode_t *from,
    const cudaGraphNode_t *to, size_t n) {
  return cudaGraphAddDependencies(graph, from, to, NULL, n);
}
static inline cudaError_t ncclCompatUpdateCaptureDependencies4(cudaStream_t stream, cudaGraphNode_t *deps,
    size_t n, unsigned int flags) {
  return cudaStreamUpdateCaptureDependencies(stream, deps, NULL, n, flags);
}
#define NCCL_COMPAT_5TH_OR_4TH(a, b, c, d, e, pick, ...) pick
#define cudaGraphAddDependencies(...) \
  NCCL_COMPAT_5TH_OR_4TH(__VA_ARGS__, cudaGraphAddDependencies, ncclCompatGraphAddDependencies4, ~)(__VA_ARGS__)
#define cudaStreamUpdateCaptureDependencies(...) \
  NCCL_COMPAT_5TH_OR_4TH(__VA_ARGS__, cudaStreamUpdateCaptureDependencies, ncclCompatUpdateCaptureDependencies4, ~)(__VA_ARGS__)

/* 3. plain PFN names, and the versions they are loaded at */
#define NCCL_COMPAT_PFNS(X) \
  X(cuDeviceGet, 2000) X(cuDeviceGetAttribute, 2000) X(cuGetErrorString, 6000) X(cuGetErrorName, 6000) \
  X(cuMemGetAddressRange, 3020) X(cuLaunchKernel, 4000) X(cuLaunchKernelEx, 11060) \
  X(cuCtxCreate, 11040) X(cuCtxDestroy, 4000) X(cuCtxGetCurrent, 4000) X(cuCtxSetCurrent, 4000) \
  X(cuCtxGetDevice, 2000) X(cuMemAddressReserve, 10020) X(cuMemAddressFree, 10020) X(cuMemCreate, 10020) \
  X(cuMemGetAllocationGranularity, 10020) X(cuMemExportToShareableHandle, 10020) \
  X(cuMemImportFromShareableHandle, 10020) X(cuMemMap, 10020) X(cuMemRelease, 10020) \
  X(cuMemRetainAllocationHandle, 11000) X(cuMemSetAccess, 10020) X(cuMemUnmap, 10020) \
  X(cuMemGetAllocationPropertiesFromHandle, 10020) X(cuPointerGetAttribute, 4000) \
  X(cuMemGetHandleForAddressRange, 11070) X(cuMulticastAddDevice, 12010) X(cuMulticastBindMem, 12010) \
  X(cuMulticastBindAddr, 12010) X(cuMulticastCreate, 12010) X(cuMulticastGetGranularity, 12010) \
  X(cuMulticastUnbind, 12010)
#define NCCL_COMPAT_PFN_TYPEDEF(sym, ver) typedef PFN_##sym##_v##ver PFN_##sym;
NCCL_COMPAT_PFNS(NCCL_COMPAT_PFN_TYPEDEF)
#undef NCCL_COMPAT_PFN_TYPEDEF

static inline unsigned int ncclCompatPfnVersion(const char *symbol) {
#define NCCL_COMPAT_PFN_VERSION(sym, ver) if (strcmp(symbol, #sym) == 0) return ver;
  NCCL_COMPAT_PFNS(NCCL_COMPAT_PFN_VERSION)
#undef NCCL_COMPAT_PFN_VERSION
  return CUDART_VERSION;
}
static inline cudaError_t ncclCompatGetDriverEntryPoint(const char *symbol, void **fn, unsigned long long flags,
    enum cudaDriverEntryPointQueryResult *status = NULL) {
  return cudaGetDriverEntryPointByVersion(symbol, fn, ncclCompatPfnVersion(symbol), flags, status);
}
#define cudaGetDriverEntryPoint ncclCompatGetDriverEntryPoint

#endif /* CUDART_VERSION >= 13000 */
#endif /* __cplusplus && !NCCL_COMPAT_CUDA13_OFF */
#endif /* NCCL_COMPAT_CUDA13_H */
