#!/usr/bin/env bash
# The default path's host cost on the GPU machine (docs/performance.md), from
# the repository root, with the binaries of tests/gpu/build.sh:
#
#   STEPS="breakdown profile tracking" DYN=.gpu/dyn NT=<nccl-tests tree> \
#     bash tests/gpu/default-path.sh OUT_DIR
#
# Steps (all by default):
#   breakdown  nccl-bench --breakdown (where an all_reduce's host time goes:
#              the raw NCCL call, the buffers' acquisition alone, the safe
#              call; CudaSlice and NcclBuffer on the pool; the CudaSlice call
#              with cudarc's tracking off), world 1 and 2
#              ranks on GPU 0, 10 rounds, each rank on cores of its own
#              (tests/gpu/pin.sh)
#   profile    where Nsight Systems is installed (nsys): the CUDA driver calls
#              of the default path (CudaSlice, tracking on) and of NcclBuffer,
#              counted and timed by nsys (its per-call times include its own
#              tracing); otherwise says it is not there
#   tracking   tests/gpu/side-by-side.sh part tracking, TRACK_WORLDS (default
#              "1 2"), ROUNDS_T (default 10) rounds, columns TRACK_COLS
#              (default: C on cudaMalloc and pool memory, nccl-tests, tracking
#              off, CudaSlice as a program gets it, NcclBuffer on the pool)
# System NCCL (/usr/lib/x86_64-linux-gnu). Each step's log is OUT_DIR/STEP*.log.
set -uo pipefail
out=${1:?usage: default-path.sh OUT_DIR}; mkdir -p "$out"
DYN=${DYN:-.gpu/dyn}
STEPS=${STEPS:-breakdown profile tracking}
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bench=$(realpath "$DYN/nccl-bench")
sizes=(-b 8 -e 32K -f 4)
rc=0
for step in $STEPS; do
  case $step in
    breakdown)
      bash tests/gpu/pin.sh "$bench" --breakdown 10 "${sizes[@]}" -n 200 -w 20 \
        > "$out/breakdown-w1.log" 2>&1 || { echo "breakdown world 1 FAILED"; rc=1; }
      timeout 300 "$DYN/xtask" launch -n 2 --one-gpu -- bash tests/gpu/pin.sh "$bench" \
        --breakdown 10 "${sizes[@]}" -n 50 -w 5 > "$out/breakdown-w2.log" 2>&1 ||
        { echo "breakdown 2 ranks FAILED"; rc=1; }
      for w in w1 w2; do echo "== breakdown $w"; grep -E '^(\[rank 0\] )?[# ]' "$out/breakdown-$w.log" | sed 's/^\[rank 0\] //'; done ;;
    profile)
      nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2> /dev/null | head -1)
      if [ -z "$nsys" ]; then
        echo "profile: NOT RUN (no nsys on this machine)" | tee "$out/profile.log"
        continue
      fi
      for buf in slice stream; do
        "$nsys" profile -t cuda -s none --cpuctxsw none -o "$out/prof-$buf" -f true \
          "$bench" -b 8 -e 8 -n 2000 -w 20 -C 0 --no-progress --buffers $buf > "$out/profile-$buf.log" 2>&1 &&
          "$nsys" stats -r cuda_api_sum -f csv "$out/prof-$buf.nsys-rep" > "$out/profile-$buf.csv" 2>> "$out/profile-$buf.log" ||
          { echo "profile $buf FAILED"; rc=1; }
        echo "== profile $buf: CUDA API calls (nsys cuda_api_sum; 2000 + 20 all_reduces + setup)"
        python3 - "$out/profile-$buf.csv" <<'PY'
import csv, sys
lines = open(sys.argv[1]).read().splitlines()
head = next((i for i, l in enumerate(lines) if "Num Calls" in l), None)
rows = list(csv.DictReader(lines[head:])) if head is not None else []
if not rows:
    print("  (no cuda_api_sum table)")
rows.sort(key=lambda r: -int(r.get("Num Calls", 0) or 0))
for r in rows[:12]:
    print(f'  {r["Name"]:<32} {r["Num Calls"]:>8} calls, avg {float(r["Avg (ns)"]):9.1f} ns, med {float(r["Med (ns)"]):9.1f} ns')
PY
        rm -f "$out/prof-$buf".{nsys-rep,sqlite}
      done ;;
    tracking)
      TRACK_WORLDS=${TRACK_WORLDS:-1 2} ROUNDS_T=${ROUNDS_T:-10} PARTS=tracking \
        TRACK_COLS="${TRACK_COLS:-c c-async untracked default poolbuf}" \
        DYN_BENCH=$DYN/nccl-bench XTASK=$DYN/xtask NT=${NT:-} \
        bash tests/gpu/side-by-side.sh "$out/sbs" > "$out/tracking.log" 2>&1 || { echo "tracking FAILED"; rc=1; }
      sed -n '/^## event tracking cost/,$p' "$out/tracking.log" ;;
    *) echo "unknown step $step"; rc=2 ;;
  esac
done
exit $rc
