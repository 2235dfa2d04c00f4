#!/usr/bin/env bash
# On a machine of several GPUs (NCCL_NVLS_ENABLE stays 0): the GPU suite with one process per GPU,
# the faults suite with one GPU per rank, nccl-bench -g G (one process, every collective, checked),
# and nccl-bench beside nccl-tests (tests/gpu/vs-nccl-tests.sh). From the repository root:
#   NT=<nccl-tests source tree> DYN=<.gpu/dyn> OUT=<log folder> bash tests/gpu/multi-gpu.sh
mkdir -p "${OUT:-/tmp/multi-gpu}"; G=$(nvidia-smi -L | wc -l)
set -u; export NCCL_NVLS_ENABLE=0 LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu NCCL_RS_REQUIRE_GPU=1
nvidia-smi -L; nvidia-smi topo -m | head -5
echo "=== nccl_gpu, one process per GPU (world $G) + world 1"
NCCL_RS_TEST_PER_GPU=1 NCCL_RS_TEST_WORLDS=$G timeout 150 ${DYN:-.gpu/dyn}/nccl_gpu > ${OUT:-/tmp/multi-gpu}/suite.log 2>&1; echo "rc $?"; grep -E "world|rank .*/|nccl_gpu:|FAIL" ${OUT:-/tmp/multi-gpu}/suite.log | tail -8
echo "=== faults: one GPU per rank"
FAULTS_ONLY=allreduce,kill,abort-thread timeout 120 ${DYN:-.gpu/dyn}/faults > ${OUT:-/tmp/multi-gpu}/faults.log 2>&1; echo "rc $?"; grep -E "^(ok|FAIL|faults:)" ${OUT:-/tmp/multi-gpu}/faults.log
echo "=== nccl-bench -g $G (one process, init_all + groups), every collective, checked"
timeout 120 ${DYN:-.gpu/dyn}/nccl-bench -g $G -c all -b 8 -e 1G -f 4 -n 10 -w 3 --no-progress > ${OUT:-/tmp/multi-gpu}/bench-g2.log 2>&1; echo "rc $?"; grep -E "^#  *[a-z_]+  \(|out of bounds|1073741824|268435456" ${OUT:-/tmp/multi-gpu}/bench-g2.log | head -30
echo "=== vs nccl-tests, $G GPUs"
NT=${NT:?nccl-tests source tree} BENCH=$(realpath ${DYN:-.gpu/dyn})/nccl-bench XTASK=$(realpath ${DYN:-.gpu/dyn})/xtask GPUS=$G MAXB=1G ITERS=10 WARM=3 ROUNDS=${ROUNDS:-3} MODES="${MODES:-proc ranks graph}" timeout ${VS_LIMIT:-3000} bash tests/gpu/vs-nccl-tests.sh ${OUT:-/tmp/multi-gpu}/vs > ${OUT:-/tmp/multi-gpu}/vs.log 2>&1; echo "rc $?"; tail -32 ${OUT:-/tmp/multi-gpu}/vs.log
tar -C ${OUT:-/tmp/multi-gpu} -czf ${OUT:-/tmp/multi-gpu}/vs.tgz vs; rm -rf ${OUT:-/tmp/multi-gpu}/vs
