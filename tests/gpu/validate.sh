#!/usr/bin/env bash
# GPU validation, run on the GPU machine (which has no Rust toolchain) from the
# repository root, with binaries built elsewhere (docs/validation.md says how):
#   DYN=<folder of dynamically linked test binaries: sys_cpu sys_gpu nccl_cpu nccl_gpu faults>
#   STATIC_TGZ=<bundle made by ../shared/gpu/bundle with NCCL_STATIC=1>
#   XTASK=<the xtask binary, for `xtask launch`>
#   LOG=<folder for logs>  WORLDS=<rank counts for the process runs, default 2,4>
#   STEPS=<which steps, default "quick suites launch faults"; "bench" adds the benchmarks>
# Steps: quick = nccl-sys and CPU tests in both builds, ldd of the static ones;
# suites = the dynamic and static nccl_gpu suites side by side (world 1, then
# WORLDS as processes on the one GPU); launch = 2 and 4 ranks started by
# `xtask launch --one-gpu` bootstrap from its torchrun-style variables and
# all-reduce; faults = the faults suite (alone: it measures GPU memory);
# bench = nccl-bench's default sweep of every
# collective (world 1 and 2 ranks) and tests/gpu/side-by-side.sh.
set -uo pipefail
: "${DYN:?}" "${STATIC_TGZ:?}" "${LOG:=.}"
STEPS=${STEPS:-quick suites launch faults}
has() { [[ " $STEPS " == *" $1 "* ]]; }
export NCCL_RS_REQUIRE_GPU=1
mkdir -p "$LOG"
fails=0
summary() { grep -E "test result|passed|FAIL|GPU TEST NOT RUN|panicked|WATCHDOG|NOT RUN|world [0-9]|^ok " "$1" | tail -14; }
run() { # name, command...
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  if "$@" > "$LOG/$name.log" 2>&1; then echo "--- $name: ok ($((SECONDS-t0)) s)"; else echo "--- $name: FAILED ($?, $((SECONDS-t0)) s)"; fails=$((fails+1)); fi
  summary "$LOG/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
ls -la /usr/lib/x86_64-linux-gnu/libnccl* 2>/dev/null | head -5
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

tmp=$(mktemp -d); tar -C "$tmp" -xzf "$STATIC_TGZ"; b=$(ls -d "$tmp"/*/ | head -1)
t0=$SECONDS; (cd "$b" && ./replay > "$LOG/static-replay.log" 2>&1) || { echo "replay FAILED"; tail -20 "$LOG/static-replay.log"; fails=$((fails+1)); }
echo "static link (replay) of $(ls "$b"/bin | wc -l) programs took $((SECONDS-t0)) s"
sbin() { ls "$b"/bin/$1-* "$b"/bin/$1 2>/dev/null | head -1; }
# the nccl-bench program (its unit-test harness has the same name but links libtest)
sbench() { for f in "$b"/link-nccl_bench-*.sh; do grep -q libtest- "$f" || { f=${f##*/link-}; echo "$b/bin/${f%.sh}"; }; done; }

if has quick; then
  for t in sys_cpu sys_gpu nccl_cpu; do run "dynamic-$t" timeout 120 "$DYN/$t"; done
  echo "=== ldd dynamic sys_gpu"; ldd "$DYN/sys_gpu" | grep -E "nccl|cuda" || true
  for t in sys_cpu sys_gpu nccl_cpu nccl_gpu; do
    echo "=== ldd static $t"; ldd "$(sbin $t)" | grep -E "nccl|cudart" && { echo "static $t depends on libnccl/cudart!"; fails=$((fails+1)); } || echo "(no libnccl, no libcudart)"
  done
  for t in sys_cpu sys_gpu nccl_cpu; do run "static-$t" timeout 120 "$(sbin $t)"; done
fi

if has suites; then
  # the two full GPU suites, side by side
  NCCL_RS_TEST_WORLDS=${WORLDS:-2,4} run dynamic-nccl_gpu timeout 400 "$DYN/nccl_gpu" > "$LOG/dyn.summary" 2>&1 &
  NCCL_RS_TEST_WORLDS=${WORLDS:-2,4} run static-nccl_gpu timeout 400 "$(sbin nccl_gpu)" > "$LOG/static.summary" 2>&1 &
  wait
  cat "$LOG/dyn.summary" "$LOG/static.summary"
  fails=$((fails + $(cat "$LOG/dyn.summary" "$LOG/static.summary" | grep -c -- "--- .*FAILED")))
fi

if has launch; then
  : "${XTASK:?}"
  for n in 2 4; do
    FAULTS_SCENARIO=allreduce run "xtask-launch-$n" timeout 120 "$XTASK" launch -n $n --one-gpu -- "$DYN/faults"
    grep -c "^\[rank" "$LOG/xtask-launch-$n.log" | sed 's/^/rank-prefixed lines: /'
  done
fi

if has faults; then
  # alone on the GPU: the 1000-cycle check compares the GPU's free memory
  run dynamic-faults timeout 420 "$DYN/faults"
fi

if has bench; then
  # the default sweep of every collective (what `cargo xtask bench` runs), world 1 and 2 ranks
  run bench-all-w1 timeout 240 "$DYN/nccl-bench" -c all -b 8 -e 128M -f 2 --no-progress --json "$LOG/bench-all-w1.json" --plot "$LOG/bench-all-w1.svg"
  run bench-all-w2 timeout 240 "$XTASK" launch -n 2 --one-gpu -- "$DYN/nccl-bench" -c all -b 8 -e 64K -f 8 -n 10 -w 2 --no-progress --json "$LOG/bench-all-w2.json"
  STATIC_BENCH=$(sbench) DYN_BENCH=$DYN/nccl-bench run side-by-side timeout 420 bash tests/gpu/side-by-side.sh "$LOG/sbs"
  cat "$LOG/side-by-side.log"
fi

echo "=== sizes"; ls -la "$DYN"/* "$b"/bin/* | awk '{print $5, $9}'
echo "validate.sh: $fails failure(s)"
exit $((fails > 0))
