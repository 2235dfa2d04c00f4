/* nccl-sys shim: the one CUDA runtime type that nccl.h uses, so that bindgen
 * and the version probe need no CUDA toolkit (NVIDIA's pip wheels ship none).
 * The layout matches CUDA's: cudaStream_t is a pointer to an opaque struct. */
#ifndef NCCL_SYS_SHIM_CUDA_RUNTIME_H
#define NCCL_SYS_SHIM_CUDA_RUNTIME_H
#include <stddef.h> /* size_t, which the real cuda_runtime.h brings in too */
typedef struct CUstream_st *cudaStream_t;
#endif
