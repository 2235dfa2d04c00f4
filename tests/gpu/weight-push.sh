#!/usr/bin/env bash
# The weight_push example (nccl/examples/weight_push.rs) on a machine of several GPUs, one GPU
# per rank: a trainer puts its weights into engines with put_signal, then broadcasts them, every
# value checked by the engines, both timed. From the repository root:
#
#   NCCL_LIB_DIR=/tmp/nccl-src/nccl-2.30.7/build/lib bash tests/gpu/weight-push.sh [PROGRAM]
#
# PROGRAM: default .gpu/rl/weight_push, the runtime-load build of tests/gpu/build.sh (bindings of
#   NCCL 2.32.3's header, so it has put_signal), which opens $NCCL_LIB_DIR/libnccl.so.2
#   (NCCL_RS_LIBRARY). .gpu/dyn/weight_push is built on the 2.28.3 header, which has no
#   ncclPutSignal: it reports put_signal Unsupported (exit 3) on any library. A dynamically linked
#   build of your own on a 2.29.2+ header loads $NCCL_LIB_DIR through LD_LIBRARY_PATH.
# NCCL_LIB_DIR: the folder of the libnccl.so.2 to run on (default /usr/lib/x86_64-linux-gnu). One-
#   sided puts need NCCL 2.29.2 or newer: e.g. the build/lib folder that tests/gpu/nccl-from-source.sh
#   leaves in its WORK folder (/tmp/nccl-src/nccl-VERSION/build/lib), or a pip wheel's
#   nvidia/nccl/lib. On an older one every world says NOT RUN (Unsupported).
# Worlds: trainer + 2 engines (world 3) with 3 GPUs or more, and world 5 (4 engines) with 5 or
#   more; a machine of 2 GPUs runs world 2. WORLDS="3 5" chooses.
# Environment passed on: WEIGHT_PUSH_SIZES, WEIGHT_PUSH_STEPS, WEIGHT_PUSH_WARMUP,
#   WEIGHT_PUSH_CHUNKS (the example's docs). TIMEOUT: seconds per world (default 300). LOG: folder
#   of the logs and of weight-push-wN.jsonl, rank 0's JSON lines (default /tmp/weight-push).
#
# One line per world: `CHECK weight-push world N: passed | FAILED (...) | NOT RUN (...)`.
# Exit: 0 every world passed; 1 one failed; 3 put_signal Unsupported; 4 NCCL made no windows;
# 2 nothing could start (no program, no library, too few GPUs).
set -uo pipefail
prog=${1:-.gpu/rl/weight_push}
[ -x "$prog" ] || { echo "weight-push: no program $prog (tests/gpu/build.sh makes it)" >&2; exit 2; }
prog=$(cd "$(dirname "$prog")" && pwd)/$(basename "$prog")
libdir=${NCCL_LIB_DIR:-/usr/lib/x86_64-linux-gnu}
[ -f "$libdir/libnccl.so.2" ] || { echo "weight-push: no libnccl.so.2 in $libdir (NCCL_LIB_DIR)" >&2; exit 2; }
libdir=$(cd "$libdir" && pwd)
LOG=${LOG:-/tmp/weight-push}
mkdir -p "$LOG"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if [ -z "${WORLDS:-}" ]; then
  WORLDS=
  [ "$gpus" -eq 2 ] && WORLDS=2
  [ "$gpus" -ge 3 ] && WORLDS=3
  [ "$gpus" -ge 5 ] && WORLDS="3 5"
fi
[ -n "$WORLDS" ] || { echo "weight-push: $gpus GPU(s): one GPU per rank needs at least 2" >&2; exit 2; }
export NCCL_NVLS_ENABLE=0
export NCCL_RS_LIBRARY=$libdir/libnccl.so.2
export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export NCCL_RS_SECRET=${NCCL_RS_SECRET:-$(head -c 32 /dev/urandom | base64)}
echo "weight-push: $prog, libnccl $libdir/libnccl.so.2, $gpus GPU(s), worlds $WORLDS"

result=0
for world in $WORLDS; do
  if [ "$world" -gt "$gpus" ]; then
    echo "CHECK weight-push world $world: NOT RUN (only $gpus GPU(s); one GPU per rank)"
    continue
  fi
  port=${PORT:-$((20000 + RANDOM % 9000))}
  log=$LOG/weight-push-w$world.log
  : > "$log"
  pids=()
  for ((r = 0; r < world; r++)); do
    ( env RANK="$r" WORLD_SIZE="$world" LOCAL_RANK="$r" LOCAL_WORLD_SIZE="$world" MASTER_ADDR=127.0.0.1 \
        MASTER_PORT="$port" timeout "${TIMEOUT:-300}" "$prog" 2>&1 | sed -u "s/^/[rank $r] /" | tee -a "$log"
      exit "${PIPESTATUS[0]}" ) &
    pids+=($!)
  done
  codes=()
  for p in "${pids[@]}"; do wait "$p"; codes+=($?); done
  grep -o '^\[rank 0\] {.*}$' "$log" | sed 's/^\[rank 0\] //' > "$LOG/weight-push-w$world.jsonl"
  uniq=$(printf '%s\n' "${codes[@]}" | sort -u | tr '\n' ' ')
  case "$uniq" in
    "0 ")
      echo "CHECK weight-push world $world: passed ($(wc -l < "$LOG/weight-push-w$world.jsonl") size(s), $LOG/weight-push-w$world.jsonl)" ;;
    "3 ")
      echo "CHECK weight-push world $world: NOT RUN (put_signal Unsupported: needs NCCL 2.29.2+ in the library and in the program's nccl.h)"
      [ $result = 0 ] && result=3 ;;
    "4 ")
      echo "CHECK weight-push world $world: NOT RUN (NCCL made no symmetric windows between these GPUs)"
      [ $result = 0 ] && result=4 ;;
    "5 ")
      echo "CHECK weight-push world $world: FAILED (no CUDA driver or no GPU visible; $log)"
      result=1 ;;
    *)
      echo "CHECK weight-push world $world: FAILED (exit codes by rank: ${codes[*]}; $log)"
      result=1 ;;
  esac
done
exit $result
