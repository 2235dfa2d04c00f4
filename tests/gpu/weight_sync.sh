#!/usr/bin/env bash
# One PyTorch trainer and N Rust engines in ONE NCCL communicator, on one GPU
# (each rank its own NCCL_HOSTID, NCCL_SOCKET_IFNAME=lo), meeting through a
# torch TCPStore, hosted first by the trainer, then by engine rank 1.
#
#   tests/gpu/weight_sync.sh ENGINE [NCCL_LIB_DIR] [N_ENGINES]
#
# ENGINE: the weight_sync example, built dynamically linked, e.g. here
#   NCCL_STATIC=0 NCCL_DIR=$PWD/target/nccl-deps/nvidia/nccl \
#     cargo build --release -p nccl-rs --example weight_sync
#   (target/release/examples/weight_sync)
# NCCL_LIB_DIR: the folder of the libnccl.so.2 BOTH sides load (the engines
#   through LD_LIBRARY_PATH, the trainer by path); default: the one of
#   $PYTHON's torch (nvidia/nccl/lib).
# Environment: PYTHON (default /opt/torch/.venv/bin/python3), GPU (default 0),
#   WEIGHT_SYNC_N (floats broadcast), HOSTS ("trainer engine": who hosts the
#   store, one run each), TIMEOUT (seconds per run, default 300).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
engine=${1:?usage: weight_sync.sh ENGINE [NCCL_LIB_DIR] [N_ENGINES]}
engine=$(cd "$(dirname "$engine")" && pwd)/$(basename "$engine")
PYTHON=${PYTHON:-/opt/torch/.venv/bin/python3}
libdir=${2:-$("$PYTHON" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))')}
engines=${3:-2}
world=$((engines + 1))
[ -f "$libdir/libnccl.so.2" ] || { echo "weight_sync: no libnccl.so.2 in $libdir" >&2; exit 2; }
echo "weight_sync: trainer $PYTHON, engine $engine, libnccl $libdir/libnccl.so.2, world $world"

failed=0
for host in ${HOSTS:-trainer engine}; do
  port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  common=(MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=$world NCCL_SOCKET_IFNAME=lo
          CUDA_VISIBLE_DEVICES=${GPU:-0} LOCAL_RANK=0 WEIGHT_SYNC_RUN=ws-$host-$$)
  [ "$host" = engine ] && common+=(WEIGHT_SYNC_HOST_STORE=1)
  [ -n "${WEIGHT_SYNC_N:-}" ] && common+=(WEIGHT_SYNC_N=$WEIGHT_SYNC_N)
  echo "== store hosted by the $host, port $port"
  pids=()
  ( env "${common[@]}" RANK=0 NCCL_HOSTID=ws-rank0 NCCL_LIBRARY="$libdir/libnccl.so.2" \
      timeout "${TIMEOUT:-300}" "$PYTHON" "$here/weight_sync_trainer.py" 2>&1 | sed -u 's/^/[rank 0] /'
    exit "${PIPESTATUS[0]}" ) &
  pids+=($!)
  for r in $(seq 1 "$engines"); do
    ( env "${common[@]}" RANK=$r NCCL_HOSTID=ws-rank$r LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        timeout "${TIMEOUT:-300}" "$engine" 2>&1 | sed -u "s/^/[rank $r] /"
      exit "${PIPESTATUS[0]}" ) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
done
if [ $failed = 0 ]; then echo "weight_sync: PASSED"; else echo "weight_sync: FAILED"; fi
exit $failed
