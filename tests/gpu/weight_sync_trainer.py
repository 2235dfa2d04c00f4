"""The PyTorch side of nccl/examples/weight_sync.rs: rank 0, the "trainer".

torch for tensors and the TCPStore, and a few lines of ctypes over libnccl
(as vLLM's pynccl does) so that this process and the Rust engines share ONE
NCCL communicator. Load the same libnccl file as the engines: NCCL_LIBRARY
is its path (tests/gpu/weight_sync.sh passes it).

Environment: RANK (0), WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK,
NCCL_LIBRARY, WEIGHT_SYNC_RUN (default weight-sync), WEIGHT_SYNC_N (default
1048576), WEIGHT_SYNC_HOST_STORE=1 when engine rank 1 hosts the store (else
this process hosts it).
"""

import ctypes
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

NCCL_FLOAT32, NCCL_SUM = 7, 0


class UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_byte * 128)]


def main():
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    n = int(os.environ.get("WEIGHT_SYNC_N", str(1 << 20)))
    run = os.environ.get("WEIGHT_SYNC_RUN", "weight-sync")
    engine_hosts = os.environ.get("WEIGHT_SYNC_HOST_STORE") == "1"
    lib = ctypes.CDLL(os.environ["NCCL_LIBRARY"])
    lib.ncclGetErrorString.restype = ctypes.c_char_p
    lib.ncclCommInitRank.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, UniqueId, ctypes.c_int]
    coll = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.ncclBroadcast.argtypes = coll + [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.ncclAllReduce.argtypes = coll + [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.ncclCommFinalize.argtypes = [ctypes.c_void_p]
    lib.ncclCommDestroy.argtypes = [ctypes.c_void_p]

    def check(what, r):
        if r != 0:
            raise RuntimeError(f"{what} failed: {r} {lib.ncclGetErrorString(r).decode()}")

    version = ctypes.c_int()
    check("ncclGetVersion", lib.ncclGetVersion(ctypes.byref(version)))
    print(f"trainer: libnccl {version.value} from {os.environ['NCCL_LIBRARY']}, torch {torch.__version__}", flush=True)

    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=None,
        is_master=not engine_hosts, timeout=timedelta(seconds=120), wait_for_workers=False,
    )
    key = f"nccl-rs/{run}/0/uid"
    uid = UniqueId()
    if rank == 0:
        check("ncclGetUniqueId", lib.ncclGetUniqueId(ctypes.byref(uid)))
        store.set(key, ctypes.string_at(ctypes.addressof(uid), 128))
    else:
        ctypes.memmove(ctypes.addressof(uid), store.get(key), 128)

    torch.cuda.set_device(local)
    comm = ctypes.c_void_p()
    check("ncclCommInitRank", lib.ncclCommInitRank(ctypes.byref(comm), world, uid, rank))
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    w = (torch.arange(n, device="cuda") % 1000).float() * 0.5 + 1.0
    before = w.clone()
    check("ncclBroadcast", lib.ncclBroadcast(w.data_ptr(), w.data_ptr(), n, NCCL_FLOAT32, 0, comm, stream))
    x = torch.full((1024,), float(rank + 1), device="cuda")
    check("ncclAllReduce", lib.ncclAllReduce(x.data_ptr(), x.data_ptr(), 1024, NCCL_FLOAT32, NCCL_SUM, comm, stream))
    torch.cuda.synchronize()
    want = world * (world + 1) / 2
    ok = torch.equal(w, before) and bool(torch.all(x == want))
    check("ncclCommFinalize", lib.ncclCommFinalize(comm))
    check("ncclCommDestroy", lib.ncclCommDestroy(comm))
    if not ok:
        print(f"trainer: WRONG: weights kept {torch.equal(w, before)}, all_reduce {x[0].item()} != {want}", flush=True)
        return 1
    print(f"trainer: broadcast of {n} weights to {world - 1} engines OK, all_reduce OK (sum {want:g})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
