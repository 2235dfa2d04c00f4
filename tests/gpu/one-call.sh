#!/usr/bin/env bash
# One call of the device tool, on a fresh machine (repository root, $OUT set):
# the releases named in RELEASES (tests/gpu/nccl-releases.sh) start building at
# once on cores 2-15 (niced), nccl-tests too (not niced); meanwhile, holding the
# GPU lock that the releases' checks take, the system NCCL 2.28.3 suite
# (.gpu/dyn/nccl_gpu, worlds 1 and 2) and, unless SKIP_BENCH=1, the benchmark's
# tracking part (BENCH_WORLDS, default 1; columns BENCH_COLS; 10 rounds; world 2
# needs XTASK=.gpu/dyn/xtask) run on cores 0-1; then the lock goes to
# the releases' checks, which are polled until END seconds (default 560).
# A marker process (`sleep 2000`, setsid) tells a later call whether
# background work outlived this one (it does while the machine stays warm:
# seen 2026-12-07), so NR_BUDGET (default 1100) may outlast the call: a call
# made at once after it collects the rest (wait while nccl-releases.sh runs,
# then read /tmp/nr/nr.log). Logs come back as $OUT/s.tgz, $OUT/nr.tgz.
#
#   RELEASES="2.27.7 2.18.3:group-mix,rl-nccl_gpu 2.19.4" NR_BUDGET=1100 \
#     bash tests/gpu/one-call.sh
#
# Carry: .gpu/rl, .gpu/dyn/nccl_gpu, .gpu/dyn/nccl-bench (benchmark), .gpu/src
# (the releases' and nccl-tests' tarballs), .gpu/prebuilt/<one tarball> (the
# 64 MiB limit leaves room for one).
O=$OUT; S=$SECONDS; mkdir -p $O/s /tmp/nccl-src /tmp/nr /tmp/nt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $O/s/machine.txt; nproc >> $O/s/machine.txt; cat $O/s/machine.txt
setsid nohup sleep 2000 > /dev/null 2>&1 < /dev/null &
exec 9> /tmp/nccl-src/gpu.lock; flock 9
BUDGET=${NR_BUDGET:-1100} LOG_ROOT=/tmp/nr taskset -c 2-15 setsid nohup bash tests/gpu/nccl-releases.sh $RELEASES > /tmp/nr/nr.log 2>&1 < /dev/null 9>&- &
tar -C /tmp/nt -xzf .gpu/src/nccl-tests.tar.gz; NT=$(ls -d /tmp/nt/*/ | head -1); NT=${NT%/}
[ "${SKIP_BENCH:-0}" = 1 ] || (taskset -c 2-15 make -C $NT -j14 MPI=0 CUDA_HOME=/usr/local/cuda NVCC_GENCODE=-gencode=arch=compute_90,code=sm_90 > /tmp/nt/build.log 2>&1; echo "nccl-tests built rc=$? t=$((SECONDS-S))") & NTPID=$!
export NCCL_RS_REQUIRE_GPU=1
LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu NCCL_RS_TEST_WORLDS=2 taskset -c 0-1 timeout 150 .gpu/dyn/nccl_gpu > $O/s/sys228.log 2>&1
echo "sys228 rc=$? t=$((SECONDS-S))"; grep -E "^nccl_gpu: |^  FAILED|PANIC" $O/s/sys228.log | head -8 | cut -c1-300
if [ "${SKIP_BENCH:-0}" != 1 ]; then
wait $NTPID
taskset -c 0-1 env TRACK_WORLDS=${BENCH_WORLDS:-1} ROUNDS_T=10 PARTS=tracking \
  TRACK_COLS="${BENCH_COLS:-c c-async c-nccl untracked default ncclbuf poolbuf}" \
  DYN_BENCH=.gpu/dyn/nccl-bench XTASK=${XTASK:-/bin/true} NT=$NT timeout 200 bash tests/gpu/side-by-side.sh $O/sbs > $O/s/sbs.log 2>&1
echo "sbs rc=$? t=$((SECONDS-S))"; grep -A12 "per column" $O/s/sbs.log | head -14
fi
flock -u 9; exec 9>&-
while ((SECONDS - S < ${END:-560})) && pgrep -f nccl-releases.sh > /dev/null; do sleep 5; done
grep -v "NOT RUN (not in ONLY)" /tmp/nr/nr.log
(cd /tmp/nr && tar czf $O/nr.tgz --exclude='*.a' --exclude='*.so*' .); tar czf $O/s.tgz -C $O $(cd $O && ls -d s sbs 2>/dev/null) && rm -rf $O/s $O/sbs
echo "t=$((SECONDS-S))"
