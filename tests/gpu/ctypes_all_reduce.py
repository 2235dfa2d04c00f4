"""The ctypes column of the side-by-side benchmark (tests/gpu/side-by-side.sh):
all_reduce through a minimal Python ctypes binding of libnccl and libcudart
(the way vLLM's pynccl calls NCCL), timed like c_all_reduce.c and nccl-bench.

    python3 ctypes_all_reduce.py MINBYTES MAXBYTES FACTOR ITERS WARMUP

World 1, or RANK/WORLD_SIZE with NCCL_RS_ID_FILE as for c_all_reduce.c.
Libraries: NCCL_LIB (default libnccl.so.2) and CUDART_LIB (default: the
first /usr/local/cuda/lib64/libcudart.so*). Prints, per size:
bytes time_us host_us algbw busbw (rank 0 only).
"""
import ctypes
import glob
import os
import sys
import time

def cudart_path():
    if "CUDART_LIB" in os.environ:
        return os.environ["CUDART_LIB"]
    found = sorted(glob.glob("/usr/local/cuda/lib64/libcudart.so*"))
    return found[0] if found else "libcudart.so"


nccl = ctypes.CDLL(os.environ.get("NCCL_LIB", "libnccl.so.2"))
cudart = ctypes.CDLL(cudart_path())


class UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_byte * 128)]


vp = ctypes.c_void_p
nccl.ncclGetErrorString.restype = ctypes.c_char_p
nccl.ncclGetUniqueId.argtypes = [ctypes.POINTER(UniqueId)]
nccl.ncclCommInitRank.argtypes = [ctypes.POINTER(vp), ctypes.c_int, UniqueId, ctypes.c_int]
nccl.ncclAllReduce.argtypes = [vp, vp, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, vp, vp]
nccl.ncclCommDestroy.argtypes = [vp]
cudart.cudaGetErrorString.restype = ctypes.c_char_p
cudart.cudaMalloc.argtypes = [ctypes.POINTER(vp), ctypes.c_size_t]
cudart.cudaMemset.argtypes = [vp, ctypes.c_int, ctypes.c_size_t]
cudart.cudaStreamCreateWithFlags.argtypes = [ctypes.POINTER(vp), ctypes.c_uint]
cudart.cudaStreamSynchronize.argtypes = [vp]
cudart.cudaEventCreate.argtypes = [ctypes.POINTER(vp)]
cudart.cudaEventRecord.argtypes = [vp, vp]
cudart.cudaEventElapsedTime.argtypes = [ctypes.POINTER(ctypes.c_float), vp, vp]

NCCL_FLOAT32, NCCL_SUM = 7, 0


def nk(r):
    if r != 0:
        raise RuntimeError(f"NCCL error {r}: {nccl.ncclGetErrorString(r).decode()}")


def ck(r):
    if r != 0:
        raise RuntimeError(f"CUDA error {r}: {cudart.cudaGetErrorString(r).decode()}")


def unique_id(rank, world):
    uid = UniqueId()
    if world == 1:
        nk(nccl.ncclGetUniqueId(ctypes.byref(uid)))
        return uid
    path = os.environ["NCCL_RS_ID_FILE"]
    if rank == 0:
        nk(nccl.ncclGetUniqueId(ctypes.byref(uid)))
        with open(path + ".tmp", "wb") as f:
            f.write(bytes(uid.internal))
        os.rename(path + ".tmp", path)
        return uid
    for _ in range(6000):
        if os.path.exists(path):
            break
        time.sleep(0.01)
    raw = open(path, "rb").read()
    ctypes.memmove(ctypes.byref(uid), raw, 128)
    return uid


def main():
    minb, maxb, factor, iters, warmup = (int(x) for x in sys.argv[1:6])
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    ck(cudart.cudaSetDevice(0))
    uid = unique_id(rank, world)
    comm = vp()
    nk(nccl.ncclCommInitRank(ctypes.byref(comm), world, uid, rank))
    stream = vp()
    ck(cudart.cudaStreamCreateWithFlags(ctypes.byref(stream), 1))  # non-blocking
    buf, out = vp(), vp()
    ck(cudart.cudaMalloc(ctypes.byref(buf), maxb))
    ck(cudart.cudaMalloc(ctypes.byref(out), maxb))
    ck(cudart.cudaMemset(buf, 0, maxb))
    a, b = vp(), vp()
    ck(cudart.cudaEventCreate(ctypes.byref(a)))
    ck(cudart.cudaEventCreate(ctypes.byref(b)))
    all_reduce = nccl.ncclAllReduce
    nbytes = minb
    while nbytes <= maxb:
        count = max(1, nbytes // 4)
        for _ in range(warmup):
            nk(all_reduce(buf, out, count, NCCL_FLOAT32, NCCL_SUM, comm, stream))
        ck(cudart.cudaStreamSynchronize(stream))
        ck(cudart.cudaEventRecord(a, stream))
        h0 = time.perf_counter()
        for _ in range(iters):
            nk(all_reduce(buf, out, count, NCCL_FLOAT32, NCCL_SUM, comm, stream))
        host = (time.perf_counter() - h0) * 1e6 / iters
        ck(cudart.cudaEventRecord(b, stream))
        ck(cudart.cudaStreamSynchronize(stream))
        ms = ctypes.c_float()
        ck(cudart.cudaEventElapsedTime(ctypes.byref(ms), a, b))
        us = ms.value * 1000.0 / iters
        size = count * 4
        algbw = size / (us * 1e3)
        if rank == 0:
            print(f"{size} {us:.3f} {host:.3f} {algbw:.3f} {algbw * 2 * (world - 1) / world:.3f}", flush=True)
        nbytes *= factor
    nk(nccl.ncclCommDestroy(comm))


if __name__ == "__main__":
    main()
