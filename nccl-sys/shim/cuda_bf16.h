/* nccl-sys shim: nccl.h includes this CUDA header and, before NCCL 2.24,
 * declares ncclBfloat16 only when it defines __CUDA_BF16_TYPES_EXIST__ (as
 * CUDA 11+'s does; libnccl supports bf16 either way). Nothing else is used. */
#ifndef NCCL_SYS_SHIM_CUDA_BF16_H
#define NCCL_SYS_SHIM_CUDA_BF16_H
#define __CUDA_BF16_TYPES_EXIST__
#endif
