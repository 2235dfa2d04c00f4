#!/usr/bin/env bash
# The device-API example (nccl/examples/device_all_reduce.rs) on a GPU: world 1,
# then 2 ranks on one GPU (`xtask launch -n 2 --one-gpu`), each with the kernel
# compiled by NVRTC first, then by `nvcc -ptx`. One summary line per attempt.
#
#   tests/gpu/device-example.sh EXAMPLE [XTASK]
#
# EXAMPLE: the example, built against the NCCL it runs with, e.g.
#   cargo build --release -p nccl-rs --example device_all_reduce
#   (target/release/examples/device_all_reduce; add --features runtime-load to
#   pick the libnccl at run time with NCCL_RS_LIBRARY)
# XTASK: the xtask binary, for the 2-rank runs (skipped, and said so, without it)
# Environment: NCCL_INCLUDE_DIR (the include folder of that NCCL: nccl.h and
#   nccl_device.h; default /usr/include), CUDA_HOME (default /usr/local/cuda),
#   LD_LIBRARY_PATH (the libnccl), NVCC (default $CUDA_HOME/bin/nvcc), ARCH
#   (nvcc's, default sm_90), TIMEOUT (seconds per run, default 300), WORLDS
#   (default "1 2"), NCCL_BEFORE_2_29=1 (the NCCL in use is 2.28: world 1 may
#   be "not available", see below).
#
# Exit codes of the example: 0 passed, 1 failed, 2 not available here (two
# ranks on one GPU under different NCCL_HOSTIDs are two "nodes": no symmetric
# memory, so NCCL refuses the device communicator), 3 the kernel did not
# compile. World 1 must pass with at least one compiler; world 2 may be "not
# available", which this script reports as such.
set -uo pipefail
example=${1:?usage: device-example.sh EXAMPLE [XTASK]}
xtask=${2:-}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export CUDA_HOME NCCL_INCLUDE_DIR=${NCCL_INCLUDE_DIR:-/usr/include}
NVCC=${NVCC:-$CUDA_HOME/bin/nvcc}
out=$(mktemp -d /tmp/device-example.XXXXXX)

# cudarc looks for libnvrtc.so (or .so.12): give it CUDA 13's .so.13 by that name
nvrtc_dir=$CUDA_HOME/lib64
if [ ! -e "$nvrtc_dir/libnvrtc.so" ]; then
  found=$(ls "$nvrtc_dir"/libnvrtc.so.* 2>/dev/null | grep -v alt | head -1)
  if [ -n "$found" ]; then ln -s "$found" "$out/libnvrtc.so"; nvrtc_dir=$out:$nvrtc_dir; fi
fi
export LD_LIBRARY_PATH=$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

ptx=$out/device_all_reduce.ptx
src=$(cd "$(dirname "$0")/../.." && pwd)/nccl/examples/device_all_reduce.cu
nvcc_log=$out/nvcc.log
if "$NVCC" -ptx -arch="${ARCH:-sm_90}" -std=c++17 -I"$NCCL_INCLUDE_DIR" -I"$CUDA_HOME/include" \
     -I"$CUDA_HOME/include/cccl" "$src" -o "$ptx" > "$nvcc_log" 2>&1; then
  echo "device-example: nvcc -ptx: compiled ($(wc -c < "$ptx") bytes)"
else
  echo "device-example: nvcc -ptx: FAILED ($(head -3 "$nvcc_log" | tr '\n' ' '))"
  rm -f "$ptx"
fi

status=0
summary() { # world, compiler, exit code, log
  local line
  line=$(grep -h "device_all_reduce:" "$4" | sort -u | tr '\n' ' ')
  case $3 in
    0) echo "device-example: world $1, $2: PASS: $line" ;;
    2) echo "device-example: world $1, $2: NOT AVAILABLE: $line" ;;
    *) echo "device-example: world $1, $2: FAILED (exit $3): ${line:-$(tail -3 "$4" | tr '\n' ' ')}" ;;
  esac
}
for world in ${WORLDS:-1 2}; do
  passed=0; unavailable=0
  for compiler in nvrtc nvcc; do
    args=()
    if [ $compiler = nvcc ]; then
      [ -f "$ptx" ] || { echo "device-example: world $world, nvcc: no PTX (nvcc failed above)"; continue; }
      args=(--ptx "$ptx")
    fi
    log=$out/world$world-$compiler.log
    if [ "$world" = 1 ]; then
      timeout "${TIMEOUT:-300}" "$example" "${args[@]}" > "$log" 2>&1; rc=$?
    elif [ -n "$xtask" ]; then
      timeout "${TIMEOUT:-300}" "$xtask" launch -n "$world" --one-gpu -- "$example" "${args[@]}" > "$log" 2>&1; rc=$?
    else
      echo "device-example: world $world, $compiler: not run (no XTASK given)"; continue
    fi
    # xtask launch fails when any rank fails: "not available" on every rank is exit 1 there
    if [ $rc != 0 ] && [ "$world" != 1 ] && [ "$(grep -c 'device_all_reduce: NOT AVAILABLE' "$log")" = "$world" ]; then rc=2; fi
    summary "$world" "$compiler" $rc "$log"
    [ $rc = 0 ] && passed=1
    [ $rc = 2 ] && unavailable=1
  done
  # NCCL 2.28 gives no symmetric memory to a communicator of one local rank
  # (ncclTransportCheckP2pType: no P2P with localRanks == 1), so world 1 may
  # only be "not available" there; from 2.29 on it must pass
  if [ "$world" = 1 ] && [ $passed = 0 ]; then
    if [ $unavailable = 1 ] && [ "${NCCL_BEFORE_2_29:-0}" = 1 ]; then
      echo "device-example: world 1 not available: NCCL before 2.29 (NCCL_BEFORE_2_29=1)"
    else
      status=1
    fi
  fi
  if [ "$world" != 1 ] && [ $passed = 0 ] && [ $unavailable = 0 ]; then status=1; fi
done
echo "device-example: logs in $out"
if [ $status = 0 ]; then echo "device-example: PASSED"; else echo "device-example: FAILED"; fi
exit $status
