/* nccl-sys shim: nccl.h includes this CUDA header but uses nothing from it. */
#ifndef NCCL_SYS_SHIM_CUDA_FP16_H
#define NCCL_SYS_SHIM_CUDA_FP16_H
#endif
