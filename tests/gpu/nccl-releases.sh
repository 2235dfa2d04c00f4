#!/usr/bin/env bash
# Several NCCL releases on the GPU machine in one command of at most BUDGET
# seconds (default 580): the releases that need building are built in the
# order given, MAX_BUILDS (default 1) at a time (niced, JOBS jobs each), and
# tests/gpu/nccl-from-source.sh's checks run on one release at a time (never
# two on the GPU at once, also across runs of this script sharing WORK):
# first on those already there (a prebuilt .gpu/prebuilt/nccl-V.tar.xz, or
# a build left in WORK), then on each build as it finishes, while the next
# builds run.
#
#   bash tests/gpu/nccl-releases.sh 2.30.7 2.26.6 2.27.7 2.18.3:group-mix
#
# (VERSION:STEP,STEP... runs only those checks on that release.)
#
# Carry what nccl-from-source.sh needs (.gpu/rl, .gpu/dyn/nccl_gpu, the static
# bundle) and, per release, .gpu/src/nccl-V.tar.gz or .gpu/prebuilt/nccl-V.tar.xz.
# Prints nccl-from-source.sh's CHECK lines under a "== V" heading, then one
# line per release: "RELEASE V: P passed, F failed, N not run".
#
# Environment: BUDGET, MAX_BUILDS, JOBS (per build, default 16), WORK (/tmp/nccl-src),
# LOG_ROOT (logs: LOG_ROOT/log-V, default WORK), STEPS (the checks after the
# build; default all of nccl-from-source.sh's), and what nccl-from-source.sh
# reads (STATIC_TGZ, FAULTS_QUICK, SANITIZE).
set -uo pipefail
(($# > 0)) || { echo "usage: bash tests/gpu/nccl-releases.sh VERSION..." >&2; exit 2; }
BUDGET=${BUDGET:-580}
export WORK=${WORK:-/tmp/nccl-src}
LOG_ROOT=${LOG_ROOT:-$WORK}
# one at a time: on 14 cores two builds at once took 253 and 315 s each, one
# alone 226 s (H100, 2026-12-07)
MAX_BUILDS=${MAX_BUILDS:-1}
STEPS=${STEPS:-api-2.29 rl-nccl_gpu device group-mix rl-cpu faults dyn-nccl_gpu static-link static-nccl_gpu sanitize}
mkdir -p "$WORK" "$LOG_ROOT"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# VERSION[:STEP,STEP...] arguments: the release, and its checks when not STEPS
declare -A steps_of=()
versions=()
for a in "$@"; do
  v=${a%%:*}
  versions+=("$v")
  [[ "$a" == *:* ]] && steps_of[$v]=${a#*:}
done

declare -A build_pid=() tally=()
ready=() queued=() building=()
for v in "${versions[@]}"; do
  if [ -e "$WORK/nccl-$v/build/lib/libnccl.so.2" ] || [ -f ".gpu/prebuilt/nccl-$v.tar.xz" ]; then
    ready+=("$v")
  else
    queued+=("$v")
  fi
done
echo "nccl-releases: ready ${ready[*]:-none}; to build ${queued[*]:-none} (at most $MAX_BUILDS at once, JOBS=${JOBS:-16} each)"

# starts builds from the queue while fewer than MAX_BUILDS run
start_builds() {
  while ((${#building[@]} < MAX_BUILDS && ${#queued[@]} > 0)); do
    local v=${queued[0]}
    queued=("${queued[@]:1}")
    mkdir -p "$LOG_ROOT/log-$v"
    LOG=$LOG_ROOT/log-$v ONLY=build BUDGET=$((BUDGET - SECONDS - 20)) JOBS=${JOBS:-16} \
      nice -n 10 bash "$HERE/nccl-from-source.sh" "$v" > "$LOG_ROOT/build-$v.out" 2>&1 &
    build_pid[$v]=$!
    building+=("$v")
    echo "nccl-releases: building $v (at $SECONDS s)"
  done
}

test_release() { # VERSION
  local v=$1 left=$((BUDGET - SECONDS)) out
  echo "== $v (at $SECONDS s)"
  if ((left < 60)); then
    echo "CHECK $v: NOT RUN (time budget: $left s left of $BUDGET)"
    tally[$v]="0 passed, 0 failed, all not run (time budget)"
    return
  fi
  # one release's checks on the GPU at a time, across runs of this script too
  # (the budget is what is left once the lock is held)
  out=$(flock "$WORK/gpu.lock" env LOG="$LOG_ROOT/log-$v" ONLY="${steps_of[$v]:-$STEPS}" \
    DEADLINE=$(($(date +%s) + BUDGET - SECONDS)) \
    bash -c 'BUDGET=$((DEADLINE - $(date +%s))) exec bash "$0" "$1"' "$HERE/nccl-from-source.sh" "$v" 2>&1)
  echo "$out" | grep -E "^(CHECK|nccl-from-source)"
  tally[$v]=$(echo "$out" | grep -oE "[0-9]+ passed, [0-9]+ failed, [0-9]+ not run" | tail -1)
}

start_builds
for v in "${ready[@]}"; do test_release "$v"; start_builds; done
# the builds, in the order they finish; the next start as they do
while ((${#building[@]} > 0)); do
  still=()
  for v in "${building[@]}"; do
    if kill -0 "${build_pid[$v]}" 2>/dev/null; then still+=("$v"); continue; fi
    wait "${build_pid[$v]}"
    building=("${still[@]}" "${building[@]:${#still[@]}+1}")
    start_builds
    echo "== $v (build, done at $SECONDS s)"
    grep -E "^(CHECK build|nccl-compat)" "$LOG_ROOT/build-$v.out"
    if grep -q "^CHECK build: passed" "$LOG_ROOT/build-$v.out"; then
      test_release "$v"
    else
      tally[$v]="0 passed, 1 failed (build), checks not run"
    fi
    continue 2
  done
  sleep 3
done

for v in "${versions[@]}"; do echo "RELEASE $v: ${tally[$v]:-no result}"; done
echo "nccl-releases: $SECONDS s"
