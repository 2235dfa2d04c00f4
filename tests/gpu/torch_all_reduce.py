"""The PyTorch column of the side-by-side benchmark (tests/gpu/side-by-side.sh):
torch.distributed.all_reduce, timed like c_all_reduce.c and nccl-bench.

    python3 torch_all_reduce.py MINBYTES MAXBYTES FACTOR ITERS WARMUP

World 1, or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT from a launcher.
Prints, per size: bytes time_us host_us algbw busbw (rank 0 only).
"""
import os
import sys
import time

import torch
import torch.distributed as dist


def main():
    minb, maxb, factor, iters, warmup = (int(x) for x in sys.argv[1:6])
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29511")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", 0))
    buf = torch.zeros(maxb // 4, dtype=torch.float32, device="cuda")
    a = torch.cuda.Event(enable_timing=True)
    b = torch.cuda.Event(enable_timing=True)
    nbytes = minb
    while nbytes <= maxb:
        t = buf[: max(1, nbytes // 4)]
        for _ in range(warmup):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        a.record()
        h0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        host = (time.perf_counter() - h0) * 1e6 / iters
        b.record()
        torch.cuda.synchronize()
        us = a.elapsed_time(b) * 1000.0 / iters
        size = t.numel() * 4
        algbw = size / (us * 1e3)
        if rank == 0:
            print(f"{size} {us:.3f} {host:.3f} {algbw:.3f} {algbw * 2 * (world - 1) / world:.3f}", flush=True)
        nbytes *= factor
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
