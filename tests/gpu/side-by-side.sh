#!/usr/bin/env bash
# Side by side on a CUDA machine: the same all_reduce (f32, sum) through
#   (1) a C program on libnccl (tests/gpu/c_all_reduce.c, compiled here),
#   (2) a minimal Python ctypes binding of libnccl (tests/gpu/ctypes_all_reduce.py),
#   (3) torch.distributed (tests/gpu/torch_all_reduce.py),
#   (4) nccl-bench linked statically and (5) dynamically, each with cudarc's
#       event tracking on (the default) and off (--no-event-tracking),
# then prints ratios to C. Run from the repository root:
#   STATIC_BENCH=<static nccl-bench> DYN_BENCH=<dynamic nccl-bench> XTASK=<xtask binary> \
#     bash tests/gpu/side-by-side.sh [OUT_DIR]
# Part 1: world 1 on GPU 0, 8 B .. 256 MiB (x4), 200 iterations, 10 warm-up;
#   graph mode: one graph of 100 all_reduces, replayed once, then 10 timed
#   replays.
# Part 2: 2 ranks sharing GPU 0 (started by `xtask launch -n 2 --one-gpu`),
#   8 B .. 32 KiB (x4), 50 iterations (a call takes milliseconds over loopback
#   sockets).
# Both parts also compare non-blocking communicators (C and ours polling each
# call until it settles). Every column is run ROUNDS times (default 5 and 3),
# the columns interleaved round by round so that a slow spell of the machine
# hits all of them; per size the median of the rounds is reported.
# SKIP_TORCH=1 leaves torch out.
# Part "tracking": the cost of cross-stream event tracking, host time per
#   small all_reduce (8 B .. 32 KiB, x4), world 1 (200 iterations) and 2 ranks
#   on GPU 0 (50), ROUNDS_T rounds (default 10; the order of the columns
#   turns by one each round):
#     c           the C loop (cudaMalloc buffers)
#     c-async     the C loop on cudaMallocAsync buffers (the stream-ordered
#                 pool cudarc allocates CudaSlice from): the baseline of
#                 untracked, default and poolbuf
#     c-nccl      the C loop on ncclMemAlloc buffers: the baseline of ncclbuf
#     nccl-tests  all_reduce_perf -C 1 (its CPU time per call), world 1 only,
#                 when NT names an nccl-tests tree (built there if needed)
#     untracked   nccl-bench --no-event-tracking (CudaSlice buffers)
#     default     nccl-bench as a program gets it: CudaSlice buffers, cudarc's
#                 event tracking on, two streams in the context
#     ncclbuf     nccl-bench --buffers nccl: NcclBuffer, tracking on
#     poolbuf     nccl-bench --buffers stream: NcclBuffer on the stream-ordered
#                 pool (CudaSlice's memory, the library's tracking), tracking on
#     sym         nccl-bench --buffers symmetric: a SymmetricPool's windows
#                 (NCCL 2.27+; NCCL's symmetric kernels where it makes
#                 windows), tracking on; the time per call is printed too
#   It needs DYN_BENCH (or TRACK_BENCH) and XTASK only:
#     PARTS=tracking DYN_BENCH=.gpu/dyn/nccl-bench XTASK=.gpu/dyn/xtask \
#       [NT=<nccl-tests tree>] bash tests/gpu/side-by-side.sh /tmp/tracking
#   TRACK_WORLDS (default "1 2") picks its worlds, TRACK_COLS (default all
#   the columns above) its columns. Each rank runs on cores of its own
#   (tests/gpu/pin.sh: PIN_CORES per rank, default 4; PIN=0 leaves it
#   unpinned). Besides the medians per size, each column's ratio to C is also
#   taken round by round (the mean over sizes of its host time over C's in the
#   same round), and the median of those paired ratios reported with their
#   range: a slow spell of the machine then moves both sides of a ratio.
# PARTS (default "1 2 tracking") picks the parts.
set -euo pipefail
out=${1:-/tmp/side-by-side}; mkdir -p "$out"
PARTS=${PARTS:-1 2 tracking}
case " $PARTS " in *" 1 "*|*" 2 "*) : "${STATIC_BENCH:?}" "${DYN_BENCH:?}" "${XTASK:?}" ;; esac
case " $PARTS " in *" tracking "*) : "${TRACK_BENCH:=${DYN_BENCH:?}}" "${XTASK:?}" ;; esac
W=10
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export NCCL_LIB=/usr/lib/x86_64-linux-gnu/libnccl.so.2
{
  date -u +%F
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "with its own NCCL", ".".join(map(str, torch.cuda.nccl.version())))' || true
  ls -l "$NCCL_LIB" || true
} | tee "$out/machine.txt"
cc -O2 -o "$out/c_all_reduce" tests/gpu/c_all_reduce.c -I/usr/local/cuda/include -L/usr/local/cuda/lib64 -lnccl -lcudart

# per size and column, the median over files of "bytes time_us host_us algbw busbw" lines
median() { # OUT IN...
  local o=$1; shift
  python3 - "$o" "$@" <<'PY'
import sys
rows = {}
for path in sys.argv[2:]:
    for l in open(path):
        f = l.split()
        if len(f) >= 5:
            rows.setdefault(int(f[0]), []).append([float(x) for x in f[1:5]])
with open(sys.argv[1], "w") as out:
    for size in sorted(rows):
        runs = rows[size]
        med = [sorted(r[i] for r in runs)[len(runs) // 2] for i in range(4)]
        out.write(f"{size} " + " ".join(f"{x:.3f}" for x in med) + "\n")
PY
}
# one run of a column: NAME ROUND, then a command printing "bytes time_us
# host_us algbw busbw" lines (launched ranks print "[rank 0] ...")
run1() {
  local name=$1 r=$2; shift 2
  rm -f "${NCCL_RS_ID_FILE:-/nonexistent}"
  if "$@" > "$out/$name.raw$r" 2> "$out/$name.err$r"; then
    sed -e 's/^\[rank 0\] //' "$out/$name.raw$r" | grep -E '^[0-9]+ [0-9.]+ ' > "$out/$name.r$r" || true
  else
    echo "$name (round $r) FAILED:"; tail -n 5 "$out/$name.err$r" "$out/$name.raw$r" || true
  fi
}
# nccl-bench as such a command: its JSON (out of place) as the same columns
ours() { # JSON BIN ARGS...
  local json=$1; shift
  "$@" --json "$json" > /dev/null || return 1
  python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    if not r["in_place"]:
        print(r["bytes"], r["time_us"], r["host_us"], r["algbw_gbs"], r["busbw_gbs"])' "$json"
}

part() { # WORLD MIN MAX ITERS ROUNDS
  local world=$1 min=$2 max=$3 n=$4 rounds=$5 p="w$1" launch=() r
  [ "$world" = 1 ] || launch=("$XTASK" launch -n "$world" --one-gpu --)
  export NCCL_RS_ID_FILE=$out/id-$p
  local c=("$out/c_all_reduce" "$min" "$max" 4 "$n" $W)
  local b=(-c all_reduce -b "$min" -e "$max" -f 4 -n "$n" -w $W -C 1 --no-progress)
  local bg=(-c all_reduce -b "$min" -e "$max" -f 4 -n 100 -w $W -C 1 --no-progress -G)
  local t0=$SECONDS
  for r in $(seq 1 "$rounds"); do
    run1 "$p-c" "$r" "${launch[@]}" "${c[@]}" 0
    run1 "$p-ctypes" "$r" "${launch[@]}" python3 tests/gpu/ctypes_all_reduce.py "$min" "$max" 4 "$n" $W
    [ -n "${SKIP_TORCH:-}" ] || run1 "$p-torch" "$r" "${launch[@]}" python3 tests/gpu/torch_all_reduce.py "$min" "$max" 4 "$n" $W
    for kind in static dyn; do
      bin=$STATIC_BENCH; [ $kind = dyn ] && bin=$DYN_BENCH
      run1 "$p-ours-$kind" "$r" ours "$out/$p-ours-$kind.json" "${launch[@]}" "$bin" "${b[@]}"
      run1 "$p-ours-$kind-untracked" "$r" ours "$out/$p-ours-$kind-untracked.json" "${launch[@]}" "$bin" "${b[@]}" --no-event-tracking
    done
    # non-blocking communicators, both sides polling until each call settles
    run1 "$p-c-nonblocking" "$r" env NONBLOCKING=1 "${launch[@]}" "${c[@]}" 0
    run1 "$p-ours-dyn-nonblocking" "$r" ours "$out/$p-ours-dyn-nonblocking.json" "${launch[@]}" "$DYN_BENCH" "${b[@]}" --no-event-tracking --nonblocking
    if [ "$world" = 1 ]; then # graph mode: a graph of 100 all_reduces, 10 timed replays
      run1 "$p-c-graph" "$r" "$out/c_all_reduce" "$min" "$max" 4 100 $W 1
      for kind in static dyn; do
        bin=$STATIC_BENCH; [ $kind = dyn ] && bin=$DYN_BENCH
        run1 "$p-ours-$kind-graph" "$r" ours "$out/$p-ours-$kind-graph.json" "$bin" "${bg[@]}"
      done
    fi
  done
  for f in "$out/$p"-*.r1; do
    name=$(basename "$f" .r1)
    median "$out/$name.txt" "$out/$name".r[0-9]*
  done
  echo "part $p: $rounds rounds of $(ls "$out/$p"-*.r1 | wc -l) columns ($((SECONDS - t0)) s)"
}

# nccl-tests' all_reduce_perf (NT: its source tree), if given
nt_bin=
if [[ " $PARTS " == *" tracking "* && -n "${NT:-}" ]]; then
  if [ ! -x "$NT/build/all_reduce_perf" ]; then
    make -C "$NT" -j16 MPI=0 CUDA_HOME=/usr/local/cuda \
      NVCC_GENCODE="${NVCC_GENCODE:--gencode=arch=compute_90,code=sm_90}" > "$out/build-nccl-tests.log" 2>&1 \
      || echo "nccl-tests build failed (see $out/build-nccl-tests.log): its column is left out"
  fi
  [ -x "$NT/build/all_reduce_perf" ] && nt_bin=$NT/build/all_reduce_perf
fi
# nccl-tests as such a command: its out-of-place "time" (CPU time with -C 1)
# as both time and host columns
nt() { # BIN ARGS...
  "$@" | python3 -c '
import sys
for l in sys.stdin:
    f = l.split()
    if len(f) >= 8 and f[0].isdigit():
        print(f[0], f[5], f[5], f[6], f[7])'
}

tracking() { # WORLD ITERS ROUNDS
  local world=$1 n=$2 rounds=$3 p="t$1" launch=() pin=() r k cols
  # each rank on cores of its own (tests/gpu/pin.sh), unless PIN=0
  [ "${PIN:-1}" = 0 ] || pin=(bash tests/gpu/pin.sh)
  if [ "$world" = 1 ]; then launch=("${pin[@]}"); else launch=("$XTASK" launch -n "$world" --one-gpu -- "${pin[@]}"); fi
  export NCCL_RS_ID_FILE=$out/id-$p
  local min=8 max=$((32 << 10))
  local b=(-c all_reduce -b "$min" -e "$max" -f 4 -n "$n" -w $W -C 1 --no-progress)
  read -ra cols <<< "${TRACK_COLS:-c c-async c-nccl untracked default ncclbuf poolbuf sym}"
  [ "$world" != 1 ] || [ -z "$nt_bin" ] || cols+=(nccl-tests)
  local t0=$SECONDS
  for r in $(seq 1 "$rounds"); do
    for k in "${!cols[@]}"; do
      case ${cols[$(((k + r) % ${#cols[@]}))]} in
        c) run1 "$p-c" "$r" "${launch[@]}" "$out/c_all_reduce" "$min" "$max" 4 "$n" $W 0 ;;
        c-async) ALLOC=async run1 "$p-c-async" "$r" "${launch[@]}" "$out/c_all_reduce" "$min" "$max" 4 "$n" $W 0 ;;
        c-nccl) ALLOC=nccl run1 "$p-c-nccl" "$r" "${launch[@]}" "$out/c_all_reduce" "$min" "$max" 4 "$n" $W 0 ;;
        nccl-tests) run1 "$p-nccl-tests" "$r" nt "${pin[@]}" "$nt_bin" -b "$min" -e "$max" -f 4 -n "$n" -w $W -g 1 -c 0 -C 1 ;;
        untracked) run1 "$p-untracked" "$r" ours "$out/$p-untracked.json" "${launch[@]}" "$TRACK_BENCH" "${b[@]}" --no-event-tracking ;;
        default) run1 "$p-default" "$r" ours "$out/$p-default.json" "${launch[@]}" "$TRACK_BENCH" "${b[@]}" ;;
        ncclbuf) run1 "$p-ncclbuf" "$r" ours "$out/$p-ncclbuf.json" "${launch[@]}" "$TRACK_BENCH" "${b[@]}" --buffers nccl ;;
        poolbuf) run1 "$p-poolbuf" "$r" ours "$out/$p-poolbuf.json" "${launch[@]}" "$TRACK_BENCH" "${b[@]}" --buffers stream ;;
        sym) run1 "$p-sym" "$r" ours "$out/$p-sym.json" "${launch[@]}" "$TRACK_BENCH" "${b[@]}" --buffers symmetric ;;
      esac
    done
  done
  for k in "${cols[@]}"; do
    local files=("$out/$p-$k".r[0-9]*)
    [ ! -e "${files[0]}" ] || median "$out/$p-$k.txt" "${files[@]}"
  done
  echo "part $p: $rounds rounds of ${#cols[@]} columns ($((SECONDS - t0)) s)"
}

for part in $PARTS; do
  case $part in
    1) part 1 8 $((256 << 20)) 200 "${ROUNDS1:-5}" ;;
    2) part 2 8 $((32 << 10)) 50 "${ROUNDS2:-3}" ;;
    tracking)
      for w in ${TRACK_WORLDS:-1 2}; do
        case $w in 1) tracking 1 200 "${ROUNDS_T:-10}" ;; 2) tracking 2 50 "${ROUNDS_T:-10}" ;; esac
      done ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
done

python3 - "$out" <<'PY'
import os, re, sys
out = sys.argv[1]
def table(name):
    p = f"{out}/{name}.txt"
    if not os.path.exists(p):
        return {}
    rows = {}
    for l in open(p):
        f = l.split()
        if len(f) >= 5:
            rows[int(f[0])] = [float(x) for x in f[1:5]]
    return rows
def report(title, base, cols):
    c = table(base)
    if not c:
        return
    print(f"\n## {title}\nper size: C time and host us, then each column / C: time, host, algbw")
    tabs = {n: table(f) for n, f in cols}
    for size in sorted(c):
        ct, ch, ca = c[size][0], c[size][1], c[size][2]
        line = f"{size:>10} B  C {ct:8.2f} us host {ch:6.2f} us"
        for n, t in tabs.items():
            if size in t:
                tt, th, ta = t[size][0], t[size][1], t[size][2]
                line += f" | {n} x{tt / ct:.3f} x{th / ch:.3f} x{ta / ca if ca else 0:.3f}"
        print(line)
    # the small-message host-time summary (<= 64 KiB), and bandwidth at >= 64 MiB
    small = [s for s in c if s <= 65536]
    big = [s for s in c if s >= 64 << 20]
    for n, t in tabs.items():
        hs = [t[s][1] / c[s][1] for s in small if s in t]
        ts = [t[s][0] / c[s][0] for s in small if s in t]
        bw = [t[s][2] / c[s][2] for s in big if s in t and c[s][2]]
        msg = f"  {n:>22}: host/C (<= 64 KiB) mean x{sum(hs) / len(hs):.3f}" if hs else f"  {n:>22}: -"
        if hs:
            msg += f", median host {sorted(t[s][1] for s in small if s in t)[len(hs) // 2]:.2f} us vs C {sorted(c[s][1] for s in small)[len(small) // 2]:.2f} us"
            msg += f"; time/C mean x{sum(ts) / len(ts):.3f}"
        if bw:
            msg += f"; algbw/C (>= 64 MiB) min x{min(bw):.3f}"
        print(msg)
for w in (1, 2):
    cols = [(n, f"w{w}-{n}") for n in ("ctypes", "torch", "ours-static", "ours-dyn", "ours-static-untracked", "ours-dyn-untracked")]
    report(f"world {w}, eager launches, blocking communicators", f"w{w}-c", cols)
    report(f"world {w}, eager launches, non-blocking communicators", f"w{w}-c-nonblocking",
           [("ours-dyn-untracked-nonblocking", f"w{w}-ours-dyn-nonblocking")])
report("world 1, CUDA graph of 100 all_reduces (host = launch cost per op)", "w1-c-graph",
       [(n, f"w1-{n}") for n in ("ours-static-graph", "ours-dyn-graph")])

# the tracking part: host us per small all_reduce, per size and summarized
cols = ["c", "c-async", "c-nccl", "nccl-tests", "untracked", "default", "ncclbuf", "poolbuf", "sym"]
# each of ours beside the C loop on the same kind of memory
same_memory = {"untracked": "c-async", "default": "c-async", "ncclbuf": "c-nccl", "poolbuf": "c-async",
               "sym": "c-nccl"}
for w in (1, 2):
    tabs = {n: table(f"t{w}-{n}") for n in cols}
    tabs = {n: t for n, t in tabs.items() if t}
    if "c" not in tabs:
        continue
    rounds = {n: len([f for f in os.listdir(out) if re.fullmatch(rf"t{w}-{n}\.r\d+", f)]) for n in tabs}
    c = tabs["c"]
    print(f"\n## event tracking cost, world {w}: host us per all_reduce (f32 sum, out of place), "
          "median of the rounds per size")
    print(f"{'size':>8} " + " ".join(f"{n:>11}" for n in tabs))
    for size in sorted(c):
        print(f"{size:>6} B " + " ".join(f"{t[size][1]:>11.2f}" if size in t else f"{'-':>11}" for t in tabs.values()))
    print("per column: rounds, median over sizes of the host time, mean over sizes of the ratio to C"
          " (and to the C loop on the same kind of memory)")
    def ratio(t, base):
        sizes = [s for s in base if s in t]
        return sum(t[s][1] / base[s][1] for s in sizes) / len(sizes) if sizes else float("nan")
    for n, t in tabs.items():
        sizes = [s for s in c if s in t]
        hs = sorted(t[s][1] for s in sizes)
        line = f"  {n:>11}: {rounds[n]:>2} rounds, {hs[len(hs) // 2]:6.2f} us, x{ratio(t, c):.3f} of C"
        base = same_memory.get(n)
        if base in tabs:
            line += f", x{ratio(t, tabs[base]):.3f} of {base}"
        print(line)
    # paired: each round's ratio to C's same round, then the median over rounds
    def one_round(name, r):
        p = f"{out}/t{w}-{name}.r{r}"
        return {int(l.split()[0]): [float(x) for x in l.split()[1:5]] for l in open(p)
                if len(l.split()) >= 5} if os.path.exists(p) else {}
    nrounds = max(rounds.values())
    print("paired ratios: per round, the mean over sizes of host time / C's (and / the C loop on the"
          " same memory) in that round; the median over rounds [min - max]")
    for n in tabs:
        if n == "c":
            continue
        line = f"  {n:>11}:"
        for base in ("c", same_memory.get(n)):
            if base not in tabs:
                continue
            rs = []
            for r in range(1, nrounds + 1):
                a, b = one_round(n, r), one_round(base, r)
                sizes = [s for s in a if s in b and b[s][1] > 0]
                if sizes:
                    rs.append(sum(a[s][1] / b[s][1] for s in sizes) / len(sizes))
            if rs:
                rs.sort()
                line += f" x{rs[len(rs) // 2]:.3f} of {base} [{rs[0]:.3f} - {rs[-1]:.3f}, {len(rs)} rounds]"
        print(line)
    # symmetric windows change the kernels, not the host path: the GPU time
    print(f"time us per all_reduce (between events), world {w}, median of the rounds per size")
    print(f"{'size':>8} " + " ".join(f"{n:>11}" for n in tabs))
    for size in sorted(c):
        print(f"{size:>6} B " + " ".join(f"{t[size][0]:>11.2f}" if size in t else f"{'-':>11}" for t in tabs.values()))
PY
