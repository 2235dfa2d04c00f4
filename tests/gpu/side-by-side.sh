#!/usr/bin/env bash
# Side by side on a CUDA machine: the same all_reduce sweep through (1) a C
# program on libnccl, (2) torch.distributed, (3) nccl-bench linked statically
# and (4) dynamically; prints each and the ratios ours/C. Run from the
# repository root:
#   STATIC_BENCH=<static nccl-bench> DYN_BENCH=<dynamic nccl-bench> bash tests/gpu/side-by-side.sh [OUT_DIR]
# Sizes: 8 B .. 256 MiB, factor 4; 200 iterations, 20 warm-up; world 1 on GPU 0.
set -euo pipefail
out=${1:-/tmp/side-by-side}; mkdir -p "$out"
MIN=8 MAX=$((256 << 20)) F=4 N=200 W=20
: "${STATIC_BENCH:?}" "${DYN_BENCH:?}"
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/machine.txt"
python3 -c 'import torch; print("torch", torch.__version__, "nccl", ".".join(map(str, torch.cuda.nccl.version())))' | tee -a "$out/machine.txt"
cc -O2 -o "$out/c_all_reduce" tests/gpu/c_all_reduce.c -I/usr/local/cuda/include -L/usr/local/cuda/lib64 -lnccl -lcudart
for g in 0 1; do
  "$out/c_all_reduce" $MIN $MAX $F $N $W $g > "$out/c-graph$g.txt"
  gflag=(); [ $g = 1 ] && gflag=(-G)
  for kind in static dyn; do
    bin=$STATIC_BENCH; [ $kind = dyn ] && bin=$DYN_BENCH
    "$bin" -c all_reduce -b $MIN -e $MAX -f $F -n $N -w $W -C 0 --no-progress "${gflag[@]}" --json "$out/ours-$kind-graph$g.json" > "$out/ours-$kind-graph$g.txt"
  done
done
python3 tests/gpu/torch_all_reduce.py $MIN $MAX $F $N $W > "$out/torch.txt"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def table(path):
    return {int(l.split()[0]): [float(x) for x in l.split()[1:]] for l in open(path) if l.strip()}
def ours(path):
    return {r["bytes"]: [r["time_us"], r["host_us"], r["algbw_gbs"], r["busbw_gbs"]] for r in json.load(open(path))["results"] if not r["in_place"]}
for g in (0, 1):
    c = table(f"{out}/c-graph{g}.txt")
    cols = {"static": ours(f"{out}/ours-static-graph{g}.json"), "dynamic": ours(f"{out}/ours-dyn-graph{g}.json")}
    if g == 0:
        cols["torch"] = table(f"{out}/torch.txt")
    print(f"\n{'graph mode' if g else 'eager launches'}: per size, C time/host us, then ours/C (time, host) and algbw ratio")
    for size in sorted(c):
        ct, ch, ca = c[size][0], c[size][1], c[size][2]
        line = f"{size:>11} B  C {ct:8.2f} us host {ch:6.2f} us"
        for name, t in cols.items():
            b = min(t, key=lambda s: abs(s - size)) if t else None
            if b is None:
                continue
            tt, th, ta = t[b][0], t[b][1], t[b][2]
            line += f" | {name} time x{tt / ct:5.3f} host x{th / ch:5.3f} algbw x{ta / ca if ca else 0:5.3f}"
        print(line)
PY
