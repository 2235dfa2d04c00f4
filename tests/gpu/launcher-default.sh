#!/usr/bin/env bash
# The launcher default (blocking, peers connected during creation) against C and against
# --no-connect: host time per small all_reduce, 2 ranks on GPU 0 under `xtask launch --one-gpu`,
# 3 interleaved rounds, median per size. Run from the repository root on the GPU machine:
#   DYN=<folder with nccl-bench and xtask> bash tests/gpu/launcher-default.sh [OUT_DIR]
# 2 ranks on one GPU: C, ours (connect at creation, the default), ours --no-connect; interleaved
set -u; out=${1:-/tmp/launcher-default}; mkdir -p $out; export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu NCCL_RS_ID_FILE=$out/id
cc -O2 -o $out/c tests/gpu/c_all_reduce.c -I/usr/local/cuda/include -L/usr/local/cuda/lib64 -lnccl -lcudart
for r in 1 2 3; do
  rm -f $out/id; ${DYN:-.gpu/dyn}/xtask launch -n 2 --one-gpu -- $out/c 8 32768 4 50 10 0 > $out/c.$r 2>&1
  ${DYN:-.gpu/dyn}/xtask launch -n 2 --one-gpu -- ${DYN:-.gpu/dyn}/nccl-bench -c all_reduce -b 8 -e 32K -f 4 -n 50 -w 10 --no-progress --no-event-tracking --json $out/conn.$r.json > /dev/null 2>&1
  ${DYN:-.gpu/dyn}/xtask launch -n 2 --one-gpu -- ${DYN:-.gpu/dyn}/nccl-bench -c all_reduce -b 8 -e 32K -f 4 -n 50 -w 10 --no-progress --no-event-tracking --no-connect --json $out/noconn.$r.json > /dev/null 2>&1
done
python3 - $out <<'PY'
import json,sys,glob,statistics as st
d=sys.argv[1]
def ours(k):
    v={}
    for f in glob.glob(f"{d}/{k}.*.json"):
        for r in json.load(open(f))["results"]:
            if not r["in_place"]: v.setdefault(r["bytes"],[]).append(r["host_us"])
    return {b:st.median(x) for b,x in v.items()}
c={}
for f in glob.glob(f"{d}/c.*"):
    for l in open(f):
        l=l.replace("[rank 0] ","").split()
        if len(l)>=5 and l[0].isdigit(): c.setdefault(int(l[0]),[]).append(float(l[2]))
c={b:st.median(x) for b,x in c.items()}
a,b=ours("conn"),ours("noconn")
for s in sorted(c):
    print(f"{s:>7} B  C host {c[s]:6.2f} us | connect {a.get(s,0):6.2f} (x{a.get(s,0)/c[s]:.3f}) | no-connect {b.get(s,0):6.2f} (x{b.get(s,0)/c[s]:.3f})")
PY
