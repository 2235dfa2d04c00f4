/* One NCCL group that mixes collectives and point-to-point calls, in C: what
 * the GPU suite's check "all_gather_v and all_to_all in one group" hands NCCL
 * before 2.28 (this crate makes all_gather_v from one ncclBroadcast per rank
 * and, before ncclAlltoAll, all_to_all from ncclSend/ncclRecv to every peer).
 * NCCL 2.18.3 faulted on that group with 2 ranks on one GPU; this program
 * tells whether NCCL does so without this crate, and MODE finds which part:
 *
 *   cc -O2 -o group_mix group_mix.c -I<nccl include> -I/usr/local/cuda/include \
 *      -L<nccl lib> -L/usr/local/cuda/lib64 -lnccl -lcudart
 *   RANK=r WORLD_SIZE=n NCCL_RS_ID_FILE=<file> NCCL_HOSTID=<per rank> \
 *      NCCL_SOCKET_IFNAME=lo MODE=mix|bcast|p2p ./group_mix
 *
 * MODE: mix (both in one group, the default), bcast (the broadcasts alone),
 * p2p (the sends and receives alone), mix-noself (both, but a rank's own
 * chunk copied with cudaMemcpyAsync instead of a send/recv to itself: NCCL
 * 2.19.4's notes say "Fix alltoallv crash on self-sendrecv", a change to how
 * scheduleP2pTasksToPlan fuses work, and this tells whether that is the
 * fault seen on 2.18.3). It is not: on the H100 (2026-12-07) mix-noself
 * faulted as mix did on 2.18.3, 2.19.4 and 2.21.5, and both passed on 2.23.4
 * and later (docs/versions.md). Rank 0 writes the unique id to
 * NCCL_RS_ID_FILE, the others read it (as tests/gpu/c_all_reduce.c does).
 * Every rank checks every value; exit 0 when right, 1 on a wrong value or an
 * NCCL or CUDA error (printed).
 */
#include <cuda_runtime.h>
#include <nccl.h>
#include "id_file.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { fprintf(stderr, "rank %d: %s:%d %s\n", rank, __FILE__, __LINE__, cudaGetErrorString(e)); return 1; } } while (0)
#define NK(x) do { ncclResult_t nk_res = (x); if (nk_res != ncclSuccess) { fprintf(stderr, "rank %d: %s:%d %s\n", rank, __FILE__, __LINE__, ncclGetErrorString(nk_res)); return 1; } } while (0)

static int rank;

int main(void) {
  rank = getenv("RANK") ? atoi(getenv("RANK")) : 0;
  int world = getenv("WORLD_SIZE") ? atoi(getenv("WORLD_SIZE")) : 1;
  const char *mode = getenv("MODE") ? getenv("MODE") : "mix";
  int bcast = strcmp(mode, "p2p") != 0, p2p = strcmp(mode, "bcast") != 0;
  int noself = strcmp(mode, "mix-noself") == 0;
  if (strcmp(mode, "mix") && strcmp(mode, "bcast") && strcmp(mode, "p2p") && !noself) {
    fprintf(stderr, "MODE=%s: one of mix bcast p2p mix-noself\n", mode);
    return 2;
  }
  if (world < 1 || world > 64) { fprintf(stderr, "WORLD_SIZE %d: 1 to 64\n", world); return 2; }
  ncclUniqueId id;
  int idr = id_from_file(&id, rank, world);
  if (idr) return idr;
  CK(cudaSetDevice(0));
  ncclComm_t comm;
  NK(ncclCommInitRank(&comm, world, id, rank));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

  /* all_gather_v: rank r contributes 3 + r floats of value 100 r + i */
  size_t total = 0, offs[64];
  for (int r = 0; r < world; r++) { offs[r] = total; total += 3 + r; }
  size_t mine = 3 + rank;
  float *send, *gathered, *a2a_send, *a2a_recv;
  const size_t chunk = 4;
  CK(cudaMalloc((void **)&send, mine * sizeof(float)));
  CK(cudaMalloc((void **)&gathered, total * sizeof(float)));
  CK(cudaMalloc((void **)&a2a_send, world * chunk * sizeof(float)));
  CK(cudaMalloc((void **)&a2a_recv, world * chunk * sizeof(float)));
  float h[64 * 4 + 64];
  for (size_t i = 0; i < mine; i++) h[i] = 100.0f * rank + i;
  CK(cudaMemcpy(send, h, mine * sizeof(float), cudaMemcpyHostToDevice));
  /* all_to_all: chunk p of rank r holds 1000 r + 10 p + i */
  for (int p = 0; p < world; p++)
    for (size_t i = 0; i < chunk; i++) h[p * chunk + i] = 1000.0f * rank + 10.0f * p + i;
  CK(cudaMemcpy(a2a_send, h, world * chunk * sizeof(float), cudaMemcpyHostToDevice));
  CK(cudaMemset(gathered, 0, total * sizeof(float)));
  CK(cudaMemset(a2a_recv, 0, world * chunk * sizeof(float)));
  /* the memsets run on the legacy stream, which a non-blocking stream does
   * not wait for: without this the own-chunk copy below (on s) can run first
   * and be zeroed afterwards */
  CK(cudaDeviceSynchronize());

  NK(ncclGroupStart());
  if (bcast)
    for (int r = 0; r < world; r++)
      NK(ncclBroadcast(r == rank ? (const void *)send : (const void *)(gathered + offs[r]),
                       gathered + offs[r], 3 + r, ncclFloat32, r, comm, s));
  if (p2p)
    for (int p = 0; p < world; p++) {
      if (noself && p == rank) {
        CK(cudaMemcpyAsync(a2a_recv + p * chunk, a2a_send + p * chunk, chunk * sizeof(float),
                           cudaMemcpyDeviceToDevice, s));
        continue;
      }
      NK(ncclSend(a2a_send + p * chunk, chunk, ncclFloat32, p, comm, s));
      NK(ncclRecv(a2a_recv + p * chunk, chunk, ncclFloat32, p, comm, s));
    }
  NK(ncclGroupEnd());
  CK(cudaStreamSynchronize(s));

  int wrong = 0;
  if (bcast) {
    CK(cudaMemcpy(h, gathered, total * sizeof(float), cudaMemcpyDeviceToHost));
    for (int r = 0; r < world; r++)
      for (size_t i = 0; i < (size_t)(3 + r); i++)
        if (h[offs[r] + i] != 100.0f * r + i) wrong++;
  }
  if (p2p) {
    CK(cudaMemcpy(h, a2a_recv, world * chunk * sizeof(float), cudaMemcpyDeviceToHost));
    for (int p = 0; p < world; p++)
      for (size_t i = 0; i < chunk; i++)
        if (h[p * chunk + i] != 1000.0f * p + 10.0f * rank + i) wrong++;
  }
  int version = 0;
  ncclGetVersion(&version);
  printf("group_mix: rank %d of %d, NCCL %d, mode %s: %s (%d wrong)\n", rank, world, version, mode,
         wrong ? "WRONG" : "right", wrong);
  NK(ncclCommFinalize(comm));
  NK(ncclCommDestroy(comm));
  return wrong ? 1 : 0;
}
