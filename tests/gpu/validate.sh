#!/usr/bin/env bash
# GPU validation, run on the GPU machine (which has no Rust toolchain) from the
# repository root, with binaries built elsewhere (docs/validation.md says how):
#   DYN=<folder of dynamically linked test binaries: sys_cpu sys_gpu nccl_cpu nccl_gpu faults>
#   STATIC_TGZ=<bundle made by ../shared/gpu/bundle with NCCL_STATIC=1>
#   STATIC_NCCL_LIB=<folder of another libnccl_static.a to link them with (default: as recorded)>
#   XTASK=<the xtask binary, for `xtask launch`>
#   LOG=<folder for logs>  WORLDS=<rank counts for the process runs, default 2,4>
#   STEPS=<which steps, default "quick suites launch faults"; "bench" adds the benchmarks;
#          "versions", "launchers", "elastic" (RL=<the runtime-load build, .gpu/rl>) and "vs"
#          (NT=<nccl-tests source tree>) the checks of the later issues, below; "device"
#          the device-API example, tests/gpu/device-example.sh>
# Steps: quick = nccl-sys and CPU tests in both builds, ldd of the static ones;
# suites = the dynamic and static nccl_gpu suites side by side (world 1, then
# WORLDS as processes on the one GPU); launch = 2 and 4 ranks started by
# `xtask launch --one-gpu` bootstrap from its torchrun-style variables and
# all-reduce; faults = the faults suite (alone: it measures GPU memory);
# bench = nccl-bench's default sweep of every
# collective (world 1 and 2 ranks), small all_reduces on a symmetric pool's
# windows (--buffers symmetric, checked, world 1 and 2 ranks) and
# tests/gpu/side-by-side.sh.
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

tmp=$(mktemp -d)
# STATIC_NCCL_LIB: link the static programs against that folder's
# libnccl_static.a instead of the recorded one (tests/gpu/static-link.sh)
t0=$SECONDS; b=$(bash tests/gpu/static-link.sh "$STATIC_TGZ" "$tmp" "${STATIC_NCCL_LIB:-}" 2> "$LOG/static-replay.log") || { echo "replay FAILED"; tail -20 "$LOG/static-replay.log"; fails=$((fails+1)); b=$(ls -d "$tmp"/*/ | head -1); }
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

TORCH_LIB=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib
SYS_LIB=/usr/lib/x86_64-linux-gnu

if has versions; then
  # runtime-load (bindings of the 2.32.3 header, nothing linked) against the
  # system's 2.28.3 and PyTorch's 2.28.9, chosen with NCCL_RS_LIBRARY; the
  # dynamic build (2.28.3 header) on PyTorch's 2.28.9 through LD_LIBRARY_PATH
  : "${RL:?}"
  for lib in "$SYS_LIB" "$TORCH_LIB"; do
    v=$(basename "$(readlink -f "$lib/libnccl.so.2")" | sed 's/libnccl.so.//')
    [ "$v" = 2 ] && v=$(strings "$lib/libnccl.so.2" | grep -m1 -oE 'NCCL version [0-9.]+' | cut -d' ' -f3)
    echo "=== libnccl in $lib: $v"
    NCCL_RS_LIBRARY=$lib/libnccl.so.2 NCCL_RS_EXPECT_RUNTIME=$v run "rl-sys_cpu-$v" timeout 120 "$RL/sys_cpu"
    NCCL_RS_LIBRARY=$lib/libnccl.so.2 NCCL_RS_EXPECT_RUNTIME=$v run "rl-nccl_cpu-$v" timeout 120 "$RL/nccl_cpu"
    NCCL_RS_TEST_LIB=$lib/libnccl.so.2 run "rl-runtime_load-$v" timeout 120 "$RL/runtime_load"
    NCCL_RS_LIBRARY=$lib/libnccl.so.2 NCCL_RS_TEST_WORLDS=${WORLDS:-2,4} run "rl-nccl_gpu-$v" timeout 400 "$RL/nccl_gpu"
  done
  LD_LIBRARY_PATH=$TORCH_LIB NCCL_RS_TEST_WORLDS=2 run dyn-nccl_gpu-on-torch-lib timeout 300 "$DYN/nccl_gpu"
fi

if has launchers; then
  # the README's launcher commands as written: binaries where the README builds them
  mkdir -p target/release/examples
  cp "$DYN/nccl-bench" target/release/; cp "$DYN/weight_sync" target/release/examples/
  export PATH=/opt/torch/.venv/bin:$PATH LD_LIBRARY_PATH=$SYS_LIB
  NCCL_RS_SECRET=$(head -c 32 /dev/urandom | base64); export NCCL_RS_SECRET
  run torchrun-2 timeout 120 torchrun --nproc-per-node 2 --master-port 29611 --no-python sh -c 'NCCL_HOSTID=h$LOCAL_RANK NCCL_SOCKET_IFNAME=lo exec target/release/nccl-bench -c all_reduce -b 8 -e 1K'
  run torchrun-standalone-4 timeout 120 torchrun --standalone --nproc-per-node 4 --no-python sh -c 'NCCL_HOSTID=h$LOCAL_RANK NCCL_SOCKET_IFNAME=lo exec target/release/nccl-bench -c all_reduce -b 8 -e 1K'
  run mpirun-2 timeout 120 mpirun --allow-run-as-root -np 2 -x NCCL_RS_SECRET -x LD_LIBRARY_PATH sh -c 'NCCL_HOSTID=h$OMPI_COMM_WORLD_RANK NCCL_SOCKET_IFNAME=lo exec target/release/nccl-bench -c all_reduce -b 8 -e 1K'
  run xtask-launch-bench-2 timeout 120 "$XTASK" launch -n 2 --one-gpu -- target/release/nccl-bench -c all_reduce -b 8 -e 1K
  PYTHON=/opt/torch/.venv/bin/python3 run weight-sync timeout 300 tests/gpu/weight_sync.sh target/release/examples/weight_sync
  for f in torchrun-2 torchrun-standalone-4 mpirun-2 xtask-launch-bench-2; do
    echo "--- $f: $(grep -cE '^ *(\[rank 0\] )? +(8|1024) ' "$LOG/$f.log") table rows"; grep -E "rendezvous|agent store|store" "$LOG/$f.log" | head -3
  done
fi

if has elastic; then
  # shrink after a kill -9: runtime-load build on PyTorch's 2.28.9 (revoke is 2.28.7+),
  # and the dynamic build (2.28.3 header: shrink with the abort flag) on the same library
  : "${RL:?}"
  NCCL_RS_LIBRARY=$TORCH_LIB/libnccl.so.2 FAULTS_ONLY=survive run rl-faults-survive timeout 300 "$RL/faults"
  LD_LIBRARY_PATH=$TORCH_LIB FAULTS_ONLY=survive run dyn-faults-survive timeout 300 "$DYN/faults"
  NCCL_RS_LIBRARY=$TORCH_LIB/libnccl.so.2 run rl-survive-example timeout 120 "$XTASK" launch -n 3 --one-gpu --grace 60 -- "$RL/survive"
fi

if has vs; then
  : "${NT:?}"
  BENCH=$DYN/nccl-bench run vs-nccl-tests timeout 560 bash tests/gpu/vs-nccl-tests.sh "$LOG/vs"
  cat "$LOG/vs/ratios.md" 2>/dev/null
fi

if has device; then
  # the device-API example (a kernel on nccl_device.h): NVRTC, then nvcc -ptx;
  # world 1, then 2 ranks on the one GPU (which have no symmetric memory:
  # reported as not available)
  run device-example bash tests/gpu/device-example.sh "$DYN/device_all_reduce" "${XTASK:-}"
  grep "^device-example:" "$LOG/device-example.log"
fi

if has bench; then
  # the default sweep of every collective (what `cargo xtask bench` runs), world 1 and 2 ranks
  run bench-all-w1 timeout 240 "$DYN/nccl-bench" -c all -b 8 -e 128M -f 2 --no-progress --json "$LOG/bench-all-w1.json" --plot "$LOG/bench-all-w1.svg"
  run bench-all-w2 timeout 240 "$XTASK" launch -n 2 --one-gpu -- "$DYN/nccl-bench" -c all -b 8 -e 64K -f 8 -n 10 -w 2 --no-progress --json "$LOG/bench-all-w2.json"
  # small all_reduces on symmetric windows (registered once per size class, reused), checked
  run bench-sym-w1 timeout 120 "$DYN/nccl-bench" -c all_reduce -b 8 -e 1M -f 4 -C 1 --no-progress --buffers symmetric
  run bench-sym-w2 timeout 120 "$XTASK" launch -n 2 --one-gpu -- "$DYN/nccl-bench" -c all_reduce -b 8 -e 64K -f 8 -n 10 -w 2 -C 1 --no-progress --buffers symmetric
  grep -h "symmetric pool" "$LOG"/bench-sym-w*.log
  STATIC_BENCH=$(sbench) DYN_BENCH=$DYN/nccl-bench run side-by-side timeout 420 bash tests/gpu/side-by-side.sh "$LOG/sbs"
  cat "$LOG/side-by-side.log"
fi

echo "=== sizes"; ls -la "$DYN"/* "$b"/bin/* | awk '{print $5, $9}'
echo "validate.sh: $fails failure(s)"
exit $((fails > 0))
