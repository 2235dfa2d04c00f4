#!/usr/bin/env bash
# nccl-bench side by side with NVIDIA's nccl-tests on the GPUs of this machine,
# same sizes, iterations and warm-up, rounds interleaved (round r runs every
# collective through both tools before round r+1), then ratio tables
# (tests/gpu/compare_tables.py). Run from the repository root on the GPU
# machine:
#   NT=<nccl-tests source tree> BENCH=<nccl-bench> XTASK=<xtask binary> \
#     bash tests/gpu/vs-nccl-tests.sh [OUT_DIR]
# NT is built here when NT/build is missing (make MPI=0, and MPI=1 into
# NT/build_mpi for the process-per-GPU mode when mpicc is found).
# Variables (defaults): GPUS (every visible GPU), MINB (8), MAXB (8G),
# ITERS (20), WARM (5), ROUNDS (3), MODES ("proc graph" and "ranks" when GPUS>1):
#   proc  — one process drives all GPUS (nccl-tests -g GPUS, nccl-bench -g GPUS)
#   graph — as proc, in CUDA-graph mode (nccl-tests -G 10, nccl-bench -G)
#   ranks — one process per GPU (mpirun -np GPUS nccl-tests -g 1;
#           xtask launch -n GPUS nccl-bench -g 1)
# COLLS (every collective both tools have). NCCL_NVLS_ENABLE stays 0.
set -uo pipefail
: "${NT:?nccl-tests source tree}" "${BENCH:?nccl-bench binary}"
out=${1:-/tmp/vs-nccl-tests}; mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
MINB=${MINB:-8} MAXB=${MAXB:-8G} ITERS=${ITERS:-20} WARM=${WARM:-5} ROUNDS=${ROUNDS:-3}
MODES=${MODES:-proc graph$([ "$GPUS" -gt 1 ] && echo " ranks")}
# nccl-tests program : nccl-bench collective
COLLS=${COLLS:-all_reduce:all_reduce all_gather:all_gather reduce_scatter:reduce_scatter broadcast:broadcast reduce:reduce alltoall:all_to_all gather:gather scatter:scatter sendrecv:sendrecv}
gencode=${NVCC_GENCODE:--gencode=arch=compute_90,code=sm_90}
if [ ! -x "$NT/build/all_reduce_perf" ]; then
  make -C "$NT" -j16 MPI=0 CUDA_HOME=/usr/local/cuda NVCC_GENCODE="$gencode" > "$out/build-nccl-tests.log" 2>&1 \
    || { echo "nccl-tests build failed"; tail -20 "$out/build-nccl-tests.log"; exit 1; }
fi
if [[ " $MODES " == *" ranks "* && ! -x "$NT/build_mpi/all_reduce_perf" ]] && command -v mpicc >/dev/null; then
  # Debian's Open MPI: include/ and lib/ under one folder
  inc=$(mpicc --showme:incdirs 2>/dev/null | cut -d' ' -f1)
  mpi_home=$(dirname "${inc:-$(dirname "$(command -v mpicc)")/include}")
  make -C "$NT" -j16 MPI=1 MPI_HOME="$mpi_home" BUILDDIR=build_mpi CUDA_HOME=/usr/local/cuda \
    NVCC_GENCODE="$gencode" > "$out/build-nccl-tests-mpi.log" 2>&1 \
    || echo "nccl-tests MPI build failed: the ranks mode is skipped (see $out/build-nccl-tests-mpi.log)"
fi
{
  date -u +%F; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  ls -l /usr/lib/x86_64-linux-gnu/libnccl.so.2; echo "GPUS=$GPUS MODES=$MODES ROUNDS=$ROUNDS ITERS=$ITERS WARM=$WARM sizes $MINB..$MAXB x2"
} | tee "$out/machine.txt"
common=(-b "$MINB" -e "$MAXB" -f 2 -n "$ITERS" -w "$WARM")
for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    mkdir -p "$out/$mode"
    for pair in $COLLS; do
      nt=${pair%%:*} ours=${pair##*:}
      case $mode in
        proc)
          "$NT/build/${nt}_perf" "${common[@]}" -g "$GPUS" -c 0 > "$out/$mode/$ours.nt.r$r.txt" 2>&1
          "$BENCH" -c "$ours" "${common[@]}" -g "$GPUS" --no-event-tracking --no-progress > "$out/$mode/$ours.ours.r$r.txt" 2>&1 ;;
        graph)
          "$NT/build/${nt}_perf" "${common[@]}" -g "$GPUS" -c 0 -G 10 > "$out/$mode/$ours.nt.r$r.txt" 2>&1
          "$BENCH" -c "$ours" "${common[@]}" -g "$GPUS" -G --no-progress > "$out/$mode/$ours.ours.r$r.txt" 2>&1 ;;
        ranks)
          [ -x "$NT/build_mpi/${nt}_perf" ] || continue
          mpirun --allow-run-as-root -np "$GPUS" -x NCCL_NVLS_ENABLE -x LD_LIBRARY_PATH \
            "$NT/build_mpi/${nt}_perf" "${common[@]}" -g 1 -c 0 > "$out/$mode/$ours.nt.r$r.txt" 2>&1
          "${XTASK:?}" launch -n "$GPUS" -- "$BENCH" -c "$ours" "${common[@]}" -g 1 --no-event-tracking --no-progress \
            > "$out/$mode/$ours.ours.r$r.txt" 2>&1 ;;
      esac
      echo "round $r $mode $ours: done"
    done
  done
done
python3 tests/gpu/compare_tables.py "$out" | tee "$out/ratios.md"
