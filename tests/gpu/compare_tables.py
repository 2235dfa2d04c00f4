#!/usr/bin/env python3
"""Compares nccl-bench with NVIDIA's nccl-tests, run side by side by
tests/gpu/vs-nccl-tests.sh.

Usage: compare_tables.py OUT_DIR

Reads OUT_DIR/<mode>/<coll>.<tool>.r<round>.txt, where tool is `ours` (an
nccl-bench table: size count type redop root, then time algbw busbw #wrong
host twice) or `nt` (an nccl-tests table: the same without the host
columns). Per mode, collective and size it takes the median over rounds of
the out-of-place time and bus bandwidth of each tool, and prints Markdown:
for sizes >= 64 MiB the bus-bandwidth ratio ours/nccl-tests (goal >= 0.99),
for sizes <= 64 KiB the time ratio ours/nccl-tests (lower is better).
"""
import os
import re
import statistics
import sys


def rows(path):
    """size -> (time_us, busbw) of the out-of-place half of a table."""
    out = {}
    for line in open(path, errors="replace"):
        line = re.sub(r"^\[rank \d+\] ", "", line)
        f = line.split()
        if len(f) < 13 or not f[0].isdigit() or not f[1].isdigit():
            continue
        try:
            out[int(f[0])] = (float(f[5]), float(f[7]))
        except ValueError:
            continue  # N/A cells
    return out


def medians(paths):
    per_size = {}
    for p in paths:
        for size, v in rows(p).items():
            per_size.setdefault(size, []).append(v)
    return {
        s: (statistics.median(t for t, _ in vs), statistics.median(b for _, b in vs))
        for s, vs in per_size.items()
    }


def main():
    top = sys.argv[1]
    worst_bw, worst_t = [], []
    for mode in sorted(os.listdir(top)):
        d = os.path.join(top, mode)
        if not os.path.isdir(d):
            continue
        colls = sorted({f.split(".")[0] for f in os.listdir(d) if f.endswith(".txt")})
        print(f"\n### {mode}\n")
        print("| collective | busbw ratio ≥ 64 MiB (sizes: ratio) | time ratio ≤ 64 KiB (median, worst) |")
        print("| --- | --- | --- |")
        for c in colls:
            ours = medians([os.path.join(d, f) for f in os.listdir(d) if f.startswith(c + ".ours.")])
            nt = medians([os.path.join(d, f) for f in os.listdir(d) if f.startswith(c + ".nt.")])
            both = sorted(set(ours) & set(nt))
            big = [(s, ours[s][1] / nt[s][1]) for s in both if s >= 64 << 20 and nt[s][1] > 0]
            small = [ours[s][0] / nt[s][0] for s in both if s <= 64 << 10 and nt[s][0] > 0]
            bigtxt = ", ".join(f"{s >> 20} MiB: {r:.3f}" for s, r in big) or "—"
            smalltxt = (
                f"{statistics.median(small):.3f}, {max(small):.3f}" if small else "—"
            )
            worst_bw += [r for _, r in big]
            worst_t += small
            print(f"| {c} | {bigtxt} | {smalltxt} |")
    if worst_bw:
        print(f"\nlowest busbw ratio at >= 64 MiB: {min(worst_bw):.3f}")
    if worst_t:
        print(f"median time ratio at <= 64 KiB: {statistics.median(worst_t):.3f}")


if __name__ == "__main__":
    main()
