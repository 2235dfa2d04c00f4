/* The C baseline of the side-by-side benchmark (tests/gpu/side-by-side.sh):
 * all_reduce over libnccl, timed as nccl-tests and nccl-bench time it.
 *
 *   cc -O2 -o c_all_reduce c_all_reduce.c -I/usr/local/cuda/include \
 *      -L/usr/local/cuda/lib64 -lnccl -lcudart
 *   ./c_all_reduce MINBYTES MAXBYTES FACTOR ITERS WARMUP GRAPH(0|1)
 *
 * World 1 on GPU 0, or RANK/WORLD_SIZE set with NCCL_RS_ID_FILE naming a file
 * where rank 0 writes the unique id and the others read it (ranks sharing one
 * GPU need NCCL_HOSTID and NCCL_SOCKET_IFNAME=lo, as with our launcher).
 * NONBLOCKING=1 makes the communicator non-blocking (config.blocking = 0):
 * every call that answers ncclInProgress is then polled with
 * ncclCommGetAsyncError until it is done, without sleeping.
 * ALLOC picks where the buffers live: "malloc" (cudaMalloc, the default),
 * "async" (cudaMallocAsync on the stream: the stream-ordered pool cudarc's
 * CudaSlice comes from) or "nccl" (ncclMemAlloc: what NcclBuffer holds), so
 * that each of our columns has a C loop on the same kind of memory.
 * Prints, per size: bytes time_us host_us algbw busbw (rank 0 only).
 */
#include <cuda_runtime.h>
#include <nccl.h>
#include "id_file.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)
static ncclComm_t comm;
/* a non-blocking call's ncclInProgress: poll until the communicator settles */
static ncclResult_t settle(ncclResult_t r) {
  while (r == ncclInProgress) {
    ncclResult_t st = ncclCommGetAsyncError(comm, &r);
    if (st != ncclSuccess) return st;
  }
  return r;
}
#define NK(x) do { ncclResult_t r = settle(x); if (r != ncclSuccess) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, ncclGetErrorString(r)); exit(1); } } while (0)

/* graph mode: timed replays of the captured loop, as nccl-bench -G */
#define REPLAYS 10

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc != 7) { fprintf(stderr, "usage: %s MINBYTES MAXBYTES FACTOR ITERS WARMUP GRAPH\n", argv[0]); return 2; }
  size_t minb = strtoull(argv[1], 0, 10), maxb = strtoull(argv[2], 0, 10);
  int factor = atoi(argv[3]), iters = atoi(argv[4]), warmup = atoi(argv[5]), graph = atoi(argv[6]);
  int rank = getenv("RANK") ? atoi(getenv("RANK")) : 0;
  int world = getenv("WORLD_SIZE") ? atoi(getenv("WORLD_SIZE")) : 1;
  ncclUniqueId id;
  int idr = id_from_file(&id, rank, world);
  if (idr) return idr;
  CK(cudaSetDevice(0));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = getenv("NONBLOCKING") && atoi(getenv("NONBLOCKING")) ? 0 : 1;
  NK(ncclCommInitRankConfig(&comm, world, id, rank, &config));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  float *buf, *out;
  const char *alloc = getenv("ALLOC") ? getenv("ALLOC") : "malloc";
  if (!strcmp(alloc, "async")) {
    CK(cudaMallocAsync((void **)&buf, maxb, s));
    CK(cudaMallocAsync((void **)&out, maxb, s));
    CK(cudaStreamSynchronize(s));
  } else if (!strcmp(alloc, "nccl")) {
    NK(ncclMemAlloc((void **)&buf, maxb));
    NK(ncclMemAlloc((void **)&out, maxb));
  } else if (!strcmp(alloc, "malloc")) {
    CK(cudaMalloc((void **)&buf, maxb));
    CK(cudaMalloc((void **)&out, maxb));
  } else {
    fprintf(stderr, "ALLOC=%s: one of malloc async nccl\n", alloc);
    return 2;
  }
  CK(cudaMemset(buf, 0, maxb));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (size_t bytes = minb; bytes <= maxb; bytes *= factor) {
    size_t count = bytes / sizeof(float);
    if (count == 0) count = 1;
    for (int i = 0; i < warmup; i++) NK(ncclAllReduce(buf, out, count, ncclFloat32, ncclSum, comm, s));
    CK(cudaStreamSynchronize(s));
    double host;
    if (graph) {
      cudaGraph_t g;
      cudaGraphExec_t ge;
      CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < iters; i++) NK(ncclAllReduce(buf, out, count, ncclFloat32, ncclSum, comm, s));
      CK(cudaStreamEndCapture(s, &g));
      CK(cudaGraphInstantiate(&ge, g, 0));
      /* one replay first (the first launch uploads the graph), then REPLAYS timed */
      CK(cudaGraphLaunch(ge, s));
      CK(cudaStreamSynchronize(s));
      CK(cudaEventRecord(a, s));
      double t = now_us();
      for (int r = 0; r < REPLAYS; r++) CK(cudaGraphLaunch(ge, s));
      host = (now_us() - t) / (iters * REPLAYS);
      CK(cudaEventRecord(b, s));
      CK(cudaStreamSynchronize(s));
      CK(cudaGraphExecDestroy(ge));
      CK(cudaGraphDestroy(g));
    } else {
      CK(cudaEventRecord(a, s));
      double t = now_us();
      for (int i = 0; i < iters; i++) NK(ncclAllReduce(buf, out, count, ncclFloat32, ncclSum, comm, s));
      host = (now_us() - t) / iters;
      CK(cudaEventRecord(b, s));
      CK(cudaStreamSynchronize(s));
    }
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    double us = ms * 1000.0 / (iters * (graph ? REPLAYS : 1));
    double algbw = (double)(count * sizeof(float)) / (us * 1e3);
    if (rank == 0) printf("%zu %.3f %.3f %.3f %.3f\n", count * sizeof(float), us, host, algbw, algbw * 2.0 * (world - 1) / world);
  }
  NK(ncclCommFinalize(comm));
  NK(ncclCommDestroy(comm));
  return 0;
}
