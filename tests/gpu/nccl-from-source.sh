#!/usr/bin/env bash
# NCCL built from source on the GPU machine, and this repository's GPU checks
# against it, in one command of at most BUDGET seconds (default 560):
#
#   bash tests/gpu/nccl-from-source.sh VERSION          # e.g. 2.29.7, 2.30.7
#
# Run from the repository root on the GPU machine (CUDA in /usr/local/cuda,
# no Rust, no network), with what tests/gpu/build.sh made on the Rust
# machine: .gpu/rl (runtime-load build), .gpu/dyn (dynamic build on the
# 2.28.3 header), .gpu/static-nccl_gpu.tar.gz or .gpu/static.tar.gz (static
# links to replay; STATIC_TGZ chooses), and the
# source: .gpu/src/nccl-VERSION.tar.gz (`git archive --prefix=nccl-VERSION/
# vVERSION-1` of NVIDIA/nccl; docs/validation.md says how), or a library
# built elsewhere: .gpu/prebuilt/nccl-VERSION.tar.xz (BUILT.txt saying how,
# build/lib/libnccl.so*, build/include; tests/gpu/nccl-prebuild.sh makes it).
#
# Steps, each one line `CHECK <name>: passed|FAILED (<reason>)|NOT RUN (<why>)
# [<seconds> s]`:
#   build            unpack, for 2.18 - 2.26 apply the CUDA 13 shims
#                    (tests/gpu/nccl-compat/apply.sh; the line says so), then
#                    `make -j$JOBS src.build` for $GENCODE (sm_90); or unpack
#                    the prebuilt library (no libnccl_static.a: the static
#                    steps say NOT RUN)
#   api-2.29         faults' NCCL 2.29+ checks (grow/join, suspend/resume,
#                    revoke + ShrinkMode::Default, graph_usage_mode), runtime-load
#                    build; a check that says NOT RUN fails here; 2.29+ only
#   rl-nccl_gpu      the GPU suite, runtime-load build, NCCL_RS_LIBRARY = the new
#                    libnccl.so.2, world 1 and 2 ranks
#   device           the device-API example (tests/gpu/device-example.sh, world 1)
#                    on the runtime-load build, its kernel compiled against
#                    this release's nccl_device.h (build/include)
#   group-mix        tests/gpu/group_mix.c on the built library, 2 ranks on GPU 0:
#                    broadcasts alone, send/recv alone, both in one group with
#                    and without a send/recv of a rank to itself
#   rl-cpu           sys_cpu and nccl_cpu of the runtime-load build on it
#                    (NCCL_RS_EXPECT_RUNTIME=VERSION)
#   faults           faults' FAULTS_QUICK subset, runtime-load build
#   dyn-nccl_gpu     the GPU suite, dynamic build (2.28.3 header) on the new
#                    library through LD_LIBRARY_PATH, world 1 and 2 ranks;
#                    2.28+ only (older libraries lack symbols it links)
#   static-link      nccl_gpu of the static bundle linked against the new
#                    libnccl_static.a (tests/gpu/static-link.sh); no libnccl.so;
#                    2.28+ only (the bundle was recorded on the 2.28.3 header)
#   static-nccl_gpu  that program, world 1 and 2 ranks
#   sanitize         SANITIZE=1: compute-sanitizer memcheck of the world-1 suite
#                    (runtime-load build), invalid accesses only
# Each run checks that the library it reports is VERSION (the suite prints it).
#
# Environment: STATIC_TGZ, STATIC_MIN (the minor release of the header it was
# recorded on, default 28), WORK (build folder, default /tmp/nccl-src), LOG (logs, default
# $WORK/log-VERSION), JOBS (16), GENCODE, REBUILD=1 (build again although a
# build of VERSION is there), SANITIZE=1, FAULTS_QUICK (default
# allreduce,kill,never-join,abort-thread,survive), ONLY (names of the steps
# to run; the others say NOT RUN), BUDGET (seconds for the whole run; a step
# that would not fit says NOT RUN).
set -uo pipefail
VERSION=${1:?usage: bash tests/gpu/nccl-from-source.sh VERSION}
WORK=${WORK:-/tmp/nccl-src}
LOG=${LOG:-$WORK/log-$VERSION}
JOBS=${JOBS:-16}
GENCODE=${GENCODE:--gencode=arch=compute_90,code=sm_90}
BUDGET=${BUDGET:-560}
FAULTS_QUICK=${FAULTS_QUICK:-allreduce,kill,never-join,abort-thread,survive}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
TGZ=.gpu/src/nccl-$VERSION.tar.gz
# the static bundle: nccl_gpu's part (build.sh) if carried, else the whole
STATIC_TGZ=${STATIC_TGZ:-$( [ -f .gpu/static-nccl_gpu.tar.gz ] && echo .gpu/static-nccl_gpu.tar.gz || echo .gpu/static.tar.gz)}
# the minor release of the header STATIC_TGZ was recorded on (tests/gpu/build.sh: 2.28.3)
STATIC_MIN=${STATIC_MIN:-28}
SRC=$WORK/nccl-$VERSION
LIB=$SRC/build/lib
export NCCL_RS_REQUIRE_GPU=1
mkdir -p "$WORK" "$LOG"
LOG=$(cd "$LOG" && pwd)

passed=0 failed=0 notrun=0
report() { # name, passed|FAILED|NOT RUN, reason, seconds
  local line="CHECK $1: $2"
  [ -n "$3" ] && line+=" ($3)"
  echo "$line [$4 s]"
  case $2 in passed) passed=$((passed + 1)) ;; FAILED) failed=$((failed + 1)) ;; *) notrun=$((notrun + 1)) ;; esac
}
wanted() { [ -z "${ONLY:-}" ] || [[ " ${ONLY//,/ } " == *" $1 "* ]]; }
IFS=. read -r vmaj vmin _ <<< "$VERSION"
# at_least MINOR: this release is 2.MINOR or newer
at_least() { ((vmaj > 2 || (vmaj == 2 && vmin >= $1))); }
PREBUILT=.gpu/prebuilt/nccl-$VERSION.tar.xz
left() { echo $((BUDGET - SECONDS)); }
# the first lines of a log that say what failed, on one line
why() {
  grep -E "killed by timeout|FAIL|WATCHDOG|panicked|error|Error|NOT RUN|did not|refused" "$1" 2>/dev/null \
    | grep -v "^ok " | head -3 | tr '\n' ' ' | tr -s ' ' | cut -c1-300
}
# run NAME LIMIT NEED LOGFILE CMD...: runs CMD under `timeout` (which ends its
# whole process group: rank processes too) for at most LIMIT seconds, or the
# time left; says NOT RUN when less than NEED seconds are left. Sets rc.
rc=0 t0=0
run() {
  local name=$1 limit=$2 need=$3 log=$4; shift 4
  local l; l=$(left)
  t0=$SECONDS
  if ((l - 5 < need)); then rc=-1; report "$name" "NOT RUN" "time budget: ${l} s left of $BUDGET" 0; return; fi
  ((limit > l - 5)) && limit=$((l - 5))
  echo "=== $name: $*" > "$log"
  timeout -k 5 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  # first in the log, so that the reason shown starts with it
  ((rc == 124 || rc == 137)) && sed -i "1a (killed by timeout after $limit s)" "$log"
}
# the runtime a suite reports: "NCCL runtime X (header H), linked M"
runtime_of() { grep -m1 -oE "NCCL runtime [0-9.]+ \(header [0-9.]+\), linked [A-Za-z]+" "$1"; }
# the verdict of a suite run: exit code, the library it ran with, its tally
suite_verdict() { # name log expected-link-mode
  local name=$1 log=$2 mode=$3 rt tally
  rt=$(runtime_of "$log")
  tally=$(grep -E "^nccl_gpu: [0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
  if ((rc == -1)); then return; fi
  if ((rc != 0)); then
    report "$name" FAILED "exit $rc; ${tally:-no tally}; $(why "$log")" $((SECONDS - t0))
  elif [[ "$rt" != "NCCL runtime $VERSION "*"linked $mode" ]]; then
    report "$name" FAILED "ran with '${rt:-no runtime line}', expected NCCL $VERSION linked $mode" $((SECONDS - t0))
  else
    report "$name" passed "$tally; $rt" $((SECONDS - t0))
  fi
}
skip() { report "$1" "NOT RUN" "$2" 0; }

echo "nccl-from-source $VERSION: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1); $("$CUDA_HOME/bin/nvcc" --version 2>/dev/null | grep -o 'release [0-9.]*' | head -1); logs in $LOG"

# 1. build
built=0
# a library built elsewhere is used rather than building one here
if [ ! -e "$LIB/libnccl.so.2" ] && [ -f "$PREBUILT" ]; then
  rm -rf "$SRC" && mkdir -p "$SRC" && tar -C "$SRC" -xJf "$PREBUILT"
fi
if ! wanted build && [ -e "$LIB/libnccl.so.2" ]; then
  skip build "not asked for (ONLY); using the library in $SRC$([ -f "$SRC/BUILT.txt" ] && echo ", prebuilt: $(tr '\n' ' ' < "$SRC/BUILT.txt" | cut -c1-300)")"
  built=1
elif [ -e "$LIB/libnccl.so.2" ] && [ "${REBUILD:-0}" != 1 ]; then
  if [ -f "$SRC/BUILT.txt" ]; then
    report build passed "prebuilt ($PREBUILT): $(tr '\n' ' ' < "$SRC/BUILT.txt" | cut -c1-400)" 0
  else
    report build passed "reused $SRC/build$(grep -qs compat-cuda13 "$SRC/makefiles/common.mk" && echo ", CUDA 13 shims applied") (REBUILD=1 builds again)" 0
  fi
  built=1
elif [ ! -f "$TGZ" ]; then
  report build FAILED "no $TGZ and no $PREBUILT" 0
else
  rm -rf "$SRC"
  tar -C "$WORK" -xzf "$TGZ"
  # 2.18 - 2.26 do not build with CUDA 13 as they are: tests/gpu/nccl-compat
  # shims them (docs/versions.md, "Building 2.18-2.26 with CUDA 13")
  shims=
  if ((vmaj == 2 && vmin >= 18 && vmin < 27)); then
    if bash tests/gpu/nccl-compat/apply.sh "$SRC" "$VERSION" > "$LOG/compat.log" 2>&1; then
      cat "$LOG/compat.log"
      shims="CUDA 13 shims applied (tests/gpu/nccl-compat, $LOG/compat.log); "
    else
      cat "$LOG/compat.log"
      shims="CUDA 13 shims FAILED to apply (see $LOG/compat.log); "
    fi
  fi
  run build 480 60 "$LOG/build.log" make -C "$SRC" -j"$JOBS" src.build CUDA_HOME="$CUDA_HOME" NVCC_GENCODE="$GENCODE"
  if ((rc == -1)); then :
  elif ((rc == 0)) && [ -f "$LIB/libnccl_static.a" ] && [ -e "$LIB/libnccl.so.2" ]; then
    report build passed "${shims}$(basename "$(readlink -f "$LIB/libnccl.so.2")") $(stat -c %s "$(readlink -f "$LIB/libnccl.so.2")") B, libnccl_static.a $(stat -c %s "$LIB/libnccl_static.a") B" $((SECONDS - t0))
    built=1
  else
    report build FAILED "${shims}exit $rc; $(grep -m2 -E "error|Error" "$LOG/build.log" | tr '\n' ' ' | cut -c1-300)" $((SECONDS - t0))
  fi
fi
if [ $built = 0 ]; then
  for s in api-2.29 rl-nccl_gpu device group-mix rl-cpu faults dyn-nccl_gpu static-link static-nccl_gpu sanitize; do skip "$s" "no library: the build failed"; done
  echo "nccl-from-source $VERSION: $passed passed, $failed failed, $notrun not run ($SECONDS s)"
  exit 1
fi
SO=$LIB/libnccl.so.2

# 2. the 2.29+ API (faults: grow, suspend, shrink-default, graph-mode)
if wanted api-2.29 && ! at_least 29; then skip api-2.29 "NCCL 2.29+ API; this is $VERSION"
elif wanted api-2.29; then
  if [ ! -x .gpu/rl/faults ]; then skip api-2.29 "no .gpu/rl/faults (tests/gpu/build.sh)"; else
    NCCL_RS_LIBRARY=$SO FAULTS_ONLY=grow,suspend,shrink-default,graph-mode \
      run api-2.29 240 60 "$LOG/api-2.29.log" .gpu/rl/faults
    if ((rc != -1)); then
      tally=$(grep -E "^faults: [0-9]+ passed" "$LOG/api-2.29.log" | tail -1)
      nr=$(grep -c "^NOT RUN" "$LOG/api-2.29.log")
      if ((rc == 0 && nr == 0)) && [[ "$tally" == "faults: 4 passed, 0 failed" ]]; then
        report api-2.29 passed "$tally" $((SECONDS - t0))
      else
        report api-2.29 FAILED "exit $rc; ${tally:-no tally}; $nr not run; $(why "$LOG/api-2.29.log")" $((SECONDS - t0))
      fi
    fi
  fi
else skip api-2.29 "not in ONLY"; fi

# 3. the GPU suite, runtime-load build
if wanted rl-nccl_gpu; then
  if [ ! -x .gpu/rl/nccl_gpu ]; then skip rl-nccl_gpu "no .gpu/rl/nccl_gpu"; else
    NCCL_RS_LIBRARY=$SO NCCL_RS_TEST_WORLDS=2 run rl-nccl_gpu 200 40 "$LOG/rl-nccl_gpu.log" .gpu/rl/nccl_gpu
    suite_verdict rl-nccl_gpu "$LOG/rl-nccl_gpu.log" Runtime
  fi
else skip rl-nccl_gpu "not in ONLY"; fi

# 3b. the device-API example (a kernel on this release's nccl_device.h), world 1
if wanted device && ! at_least 28; then skip device "the device API is NCCL 2.28+"
elif wanted device; then
  if [ ! -x .gpu/rl/device_all_reduce ]; then skip device "no .gpu/rl/device_all_reduce"; else
    NCCL_BEFORE_2_29=$(at_least 29 && echo 0 || echo 1) \
      NCCL_RS_LIBRARY=$SO NCCL_INCLUDE_DIR=$SRC/build/include WORLDS=1 \
      run device 150 30 "$LOG/device.log" bash tests/gpu/device-example.sh .gpu/rl/device_all_reduce
    if ((rc != -1)); then
      lines=$(grep "^device-example:" "$LOG/device.log" | tr '\n' ' ' | cut -c1-300)
      if ((rc == 0)); then report device passed "$lines" $((SECONDS - t0))
      else report device FAILED "exit $rc; $lines $(why "$LOG/device.log")" $((SECONDS - t0)); fi
    fi
  fi
else skip device "not in ONLY"; fi

# 3c. a group mixing broadcasts and send/recv, in C (tests/gpu/group_mix.c),
#     2 ranks on GPU 0: each part alone, then both in one group
if wanted group-mix; then
  gm=$WORK/group_mix-$VERSION
  if ! cc -O2 -o "$gm" tests/gpu/group_mix.c -I"$SRC/build/include" -I"$CUDA_HOME/include" \
      -L"$LIB" -L"$CUDA_HOME/lib64" -lnccl -lcudart > "$LOG/group-mix.log" 2>&1; then
    report group-mix FAILED "does not compile: $(head -2 "$LOG/group-mix.log" | tr '\n' ' ')" 0
  else
    t0=$SECONDS gm_out=
    for mode in bcast p2p mix-noself mix; do
      rm -f "$WORK/gm-id"
      pids=()
      for r in 0 1; do
        LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} RANK=$r WORLD_SIZE=2 MODE=$mode \
          NCCL_RS_ID_FILE=$WORK/gm-id NCCL_HOSTID=group-mix-$r NCCL_SOCKET_IFNAME=lo \
          timeout 60 "$gm" >> "$LOG/group-mix.log" 2>&1 &
        pids+=($!)
      done
      codes=
      for p in "${pids[@]}"; do wait "$p"; codes+=" $?"; done
      gm_out+="$mode:$codes; "
    done
    if [[ "$gm_out" == "bcast: 0 0; p2p: 0 0; mix-noself: 0 0; mix: 0 0; " ]]; then
      report group-mix passed "exit codes $gm_out" $((SECONDS - t0))
    else
      report group-mix FAILED "exit codes $gm_out$(grep -m2 -E "rank [01]:|WRONG" "$LOG/group-mix.log" | tr '\n' ' ' | cut -c1-200)" $((SECONDS - t0))
    fi
  fi
else skip group-mix "not in ONLY"; fi

# 4. the CPU tests of the runtime-load build on this library
if wanted rl-cpu; then
  if [ ! -x .gpu/rl/sys_cpu ] || [ ! -x .gpu/rl/nccl_cpu ]; then skip rl-cpu "no .gpu/rl/sys_cpu or nccl_cpu"; else
    NCCL_RS_LIBRARY=$SO NCCL_RS_EXPECT_RUNTIME=$VERSION run rl-cpu 60 10 "$LOG/rl-cpu.log" \
      bash -c '.gpu/rl/sys_cpu && .gpu/rl/nccl_cpu'
    if ((rc != -1)); then
      tally=$(grep -E "^test result" "$LOG/rl-cpu.log" | sed -E 's/; [0-9]+ ignored.*//; s/test result: ok. //' | paste -sd, -)
      if ((rc == 0)); then report rl-cpu passed "$tally" $((SECONDS - t0))
      else report rl-cpu FAILED "exit $rc; $tally; $(why "$LOG/rl-cpu.log")" $((SECONDS - t0)); fi
    fi
  fi
else skip rl-cpu "not in ONLY"; fi

# 5. faults, a quick subset (alone on the GPU)
if wanted faults; then
  if [ ! -x .gpu/rl/faults ]; then skip faults "no .gpu/rl/faults"; else
    NCCL_RS_LIBRARY=$SO FAULTS_ONLY=$FAULTS_QUICK run faults 200 40 "$LOG/faults.log" .gpu/rl/faults
    if ((rc != -1)); then
      tally=$(grep -E "^faults: [0-9]+ passed" "$LOG/faults.log" | tail -1)
      if ((rc == 0)); then report faults passed "$FAULTS_QUICK: $tally" $((SECONDS - t0))
      else report faults FAILED "exit $rc; ${tally:-no tally}; $(why "$LOG/faults.log")" $((SECONDS - t0)); fi
    fi
  fi
else skip faults "not in ONLY"; fi

# 6. the dynamic build (2.28.3 header) on the newer library
if wanted dyn-nccl_gpu && ! at_least 28; then skip dyn-nccl_gpu "built on the 2.28.3 header: needs NCCL 2.28+"
elif wanted dyn-nccl_gpu; then
  if [ ! -x .gpu/dyn/nccl_gpu ]; then skip dyn-nccl_gpu "no .gpu/dyn/nccl_gpu"; else
    LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} NCCL_RS_TEST_WORLDS=2 \
      run dyn-nccl_gpu 200 40 "$LOG/dyn-nccl_gpu.log" .gpu/dyn/nccl_gpu
    suite_verdict dyn-nccl_gpu "$LOG/dyn-nccl_gpu.log" Dynamic
  fi
else skip dyn-nccl_gpu "not in ONLY"; fi

# 7. the static build, linked here against the new libnccl_static.a
sbin=
if ! wanted static-link && ! wanted static-nccl_gpu; then skip static-link "not in ONLY"
elif ! at_least "$STATIC_MIN"; then skip static-link "$STATIC_TGZ was recorded on a 2.$STATIC_MIN header: needs NCCL 2.$STATIC_MIN+"
elif [ ! -f "$LIB/libnccl_static.a" ]; then skip static-link "no libnccl_static.a (a prebuilt library brings only libnccl.so)"
else
  if [ ! -f "$STATIC_TGZ" ]; then skip static-link "no $STATIC_TGZ"; else
    rm -rf "$WORK/static-$VERSION"
    run static-link 120 20 "$LOG/static-link.log" bash tests/gpu/static-link.sh "$STATIC_TGZ" "$WORK/static-$VERSION" "$LIB" nccl_gpu
    if ((rc != -1)); then
      sbin=$(ls "$WORK/static-$VERSION"/*/bin/nccl_gpu-* 2>/dev/null | head -1)
      deps=$( [ -n "$sbin" ] && ldd "$sbin" 2>/dev/null | grep -E "libnccl|libcudart" | tr -s ' \t' ' ')
      if ((rc != 0)) || [ -z "$sbin" ]; then report static-link FAILED "exit $rc; $(tail -3 "$LOG/static-link.log" | tr '\n' ' ' | cut -c1-300)" $((SECONDS - t0)); sbin=
      elif [ -n "$deps" ]; then report static-link FAILED "the static nccl_gpu depends on: $deps" $((SECONDS - t0)); sbin=
      else report static-link passed "$(basename "$sbin"), $(stat -c %s "$sbin") B, no libnccl or libcudart in ldd" $((SECONDS - t0)); fi
    fi
  fi
fi
if wanted static-nccl_gpu; then
  if [ -z "$sbin" ]; then skip static-nccl_gpu "not linked"; else
    NCCL_RS_TEST_WORLDS=2 run static-nccl_gpu 200 40 "$LOG/static-nccl_gpu.log" "$sbin"
    suite_verdict static-nccl_gpu "$LOG/static-nccl_gpu.log" Static
  fi
else skip static-nccl_gpu "not in ONLY"; fi

# 8. compute-sanitizer memcheck of the world-1 suite: invalid accesses only.
#    NCCL probes CUDA calls that may fail (and handles their errors), so
#    failing API calls are not reported (--report-api-errors no).
if [ "${SANITIZE:-0}" != 1 ]; then skip sanitize "SANITIZE=1 not set"
elif ! wanted sanitize; then skip sanitize "not in ONLY"
elif [ ! -x "$CUDA_HOME/bin/compute-sanitizer" ]; then skip sanitize "no $CUDA_HOME/bin/compute-sanitizer"
else
  NCCL_RS_LIBRARY=$SO NCCL_RS_TEST_WORLDS='' NCCL_RS_TEST_WATCHDOG_S=300 \
    run sanitize 400 60 "$LOG/sanitize.log" "$CUDA_HOME/bin/compute-sanitizer" --tool memcheck \
      --error-exitcode 99 --report-api-errors no .gpu/rl/nccl_gpu
  if ((rc != -1)); then
    errs=$(grep -m1 -oE "ERROR SUMMARY: [0-9]+ errors?" "$LOG/sanitize.log")
    tally=$(grep -E "^nccl_gpu: [0-9]+ passed" "$LOG/sanitize.log" | tail -1)
    if ((rc == 0)) && [[ "$errs" == "ERROR SUMMARY: 0 errors" ]]; then report sanitize passed "$errs; $tally" $((SECONDS - t0))
    else report sanitize FAILED "exit $rc; ${errs:-no error summary}; ${tally:-no tally}; $(grep -m2 "Invalid" "$LOG/sanitize.log" | tr '\n' ' ' | cut -c1-200)" $((SECONDS - t0)); fi
  fi
fi

echo "nccl-from-source $VERSION: $passed passed, $failed failed, $notrun not run ($SECONDS s)"
exit $((failed > 0))
