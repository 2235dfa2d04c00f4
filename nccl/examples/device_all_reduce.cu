// The kernel of examples/device_all_reduce.rs: a sum over the ranks of the
// LSA team (the ranks whose memory this GPU can load and store), written
// against NCCL's device API (nccl_device.h, NCCL 2.28.3+). Compiled at run
// time by NVRTC, or ahead of time with `nvcc -ptx`.
//
// Every rank of the LSA team runs it with the same grid; CTA `b` uses LSA
// barrier `b`, so the device communicator needs at least gridDim.x LSA
// barriers. `send` and `recv` are windows registered on every rank;
// element offsets are in floats from the window's start.

#include <nccl_device.h>

extern "C" __global__ void lsa_all_reduce_f32(ncclWindow_t send, ncclWindow_t recv, size_t count,
                                              ncclDevComm devComm) {
  // every peer has written its input before anyone reads it
  ncclLsaBarrierSession<ncclCoopCta> bar{ncclCoopCta(), devComm, ncclTeamLsa(devComm),
                                         devComm.lsaBarrier, blockIdx.x};
  bar.sync(ncclCoopCta(), cuda::memory_order_acquire);

  const int lsaRank = devComm.lsaRank;
  const int lsaSize = devComm.lsaSize;
  // the elements are spread over every thread of every LSA rank
  const size_t first = threadIdx.x + (size_t)blockDim.x * (lsaRank + (size_t)blockIdx.x * lsaSize);
  const size_t step = (size_t)blockDim.x * gridDim.x * lsaSize;
  for (size_t i = first; i < count; i += step) {
    float v = 0.0f;
    for (int peer = 0; peer < lsaSize; peer++) {
      const float* in = (const float*)ncclGetLsaPointer(send, 0, peer);
      v += in[i];
    }
    for (int peer = 0; peer < lsaSize; peer++) {
      float* out = (float*)ncclGetLsaPointer(recv, 0, peer);
      out[i] = v;
    }
  }
  // every peer's writes into this rank's `recv` are done before the kernel ends
  bar.sync(ncclCoopCta(), cuda::memory_order_release);
}
