/* nccl-sys shim: the CUDA runtime types that nccl.h uses, so that bindgen
 * and the version probe need no CUDA toolkit (NVIDIA's pip wheels ship none).
 * The layouts match CUDA's: both are pointers to opaque structs. */
#ifndef NCCL_SYS_SHIM_CUDA_RUNTIME_H
#define NCCL_SYS_SHIM_CUDA_RUNTIME_H
#include <stddef.h> /* size_t, which the real cuda_runtime.h brings in too */
/* nccl.h includes cuda_bf16.h (and, from 2.24, cuda_fp8.h) only for CUDA 11+
 * (11.8+); every NCCL >= 2.18 is built with CUDA 12 or newer. */
#ifndef CUDART_VERSION
#define CUDART_VERSION 12000
#endif
typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t; /* ncclCollConfig_t, NCCL 2.32+ */
#endif
