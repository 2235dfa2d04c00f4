#!/usr/bin/env bash
# GPU validation, run on the GPU machine (which has no Rust toolchain) from the
# repository root, with test binaries built elsewhere:
#   DYN=<folder of dynamically linked test binaries: sys_cpu sys_gpu nccl_cpu nccl_gpu faults>
#   STATIC_TGZ=<bundle made by ../shared/gpu/bundle with NCCL_STATIC=1>
#   LOG=<folder for logs>  WORLDS_DYN / WORLDS_STATIC=<rank counts, default 2,4>
# See docs/validation.md for how both are built. The dynamic and static GPU
# suites run at the same time (separate processes on the one GPU).
set -uo pipefail
: "${DYN:?}" "${STATIC_TGZ:?}" "${LOG:=.}"
export NCCL_RS_REQUIRE_GPU=1
# which of libnccl's fp8 kernels have sm_90 machine code (PTX-only ones are JIT-compiled at first use)
command -v cuobjdump >/dev/null && cuobjdump --list-elf /usr/lib/x86_64-linux-gnu/libnccl.so.2 2>/dev/null | grep -c sm_90 | sed 's/^/libnccl sm_90 ELF images: /'
mkdir -p "$LOG"
fails=0
summary() { grep -E "test result|passed|FAIL|GPU TEST NOT RUN|panicked|WATCHDOG|not run|world [0-9]" "$1" | tail -12; }
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
for t in sys_cpu sys_gpu nccl_cpu; do run "dynamic-$t" timeout 120 "$DYN/$t"; done
echo "=== ldd dynamic sys_gpu"; ldd "$DYN/sys_gpu" | grep -E "nccl|cuda" || true

tmp=$(mktemp -d); tar -C "$tmp" -xzf "$STATIC_TGZ"; b=$(ls -d "$tmp"/*/ | head -1)
t0=$SECONDS; (cd "$b" && ./replay > "$LOG/static-replay.log" 2>&1) || { echo "replay FAILED"; tail -20 "$LOG/static-replay.log"; fails=$((fails+1)); }
echo "static link (replay) took $((SECONDS-t0)) s"
sbin() { ls "$b"/bin/$1-* 2>/dev/null | head -1; }
for t in sys_cpu sys_gpu nccl_cpu nccl_gpu; do
  echo "=== ldd static $t"; ldd "$(sbin $t)" | grep -E "nccl|cudart" && { echo "static $t depends on libnccl/cudart!"; fails=$((fails+1)); } || echo "(no libnccl, no libcudart)"
done
for t in sys_cpu sys_gpu nccl_cpu; do run "static-$t" timeout 120 "$(sbin $t)"; done

# the two full GPU suites, side by side
NCCL_RS_TEST_WORLDS=${WORLDS_DYN:-2,4} run dynamic-nccl_gpu timeout 420 "$DYN/nccl_gpu" > "$LOG/dyn.summary" 2>&1 &
NCCL_RS_TEST_WORLDS=${WORLDS_STATIC:-2,4} run static-nccl_gpu timeout 420 "$(sbin nccl_gpu)" > "$LOG/static.summary" 2>&1 &
wait
cat "$LOG/dyn.summary" "$LOG/static.summary"
fails=$((fails + $(grep -c -- "--- .*FAILED" "$LOG/dyn.summary" "$LOG/static.summary" | awk -F: '{s+=$2} END {print s}')))
# many processes and failures (bootstrap, kill -9, never-join, abort, 1000 cycles)
run dynamic-faults timeout 400 "$DYN/faults"
# fp8 reductions, world 1 only, as a probe (they hung once)
NCCL_RS_TEST_FP8_REDUCE=1 NCCL_RS_TEST_ONLY_FP8=1 NCCL_RS_TEST_WATCHDOG_S=220 NCCL_RS_TEST_WORLDS= NCCL_RS_TEST_VERBOSE=1 \
  timeout 240 "$DYN/nccl_gpu" > "$LOG/fp8-probe.log" 2>&1; echo "fp8 reduction probe: exit $?"; grep -E "ok|FAIL|WATCHDOG" "$LOG/fp8-probe.log" | tail -5
echo "=== sizes"; ls -la "$DYN"/* "$b"/bin/* | awk '{print $5, $9}'
echo "validate.sh: $fails failure(s)"
exit $((fails > 0))
