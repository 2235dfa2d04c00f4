#!/usr/bin/env bash
# Runs a command on cores of its own: rank RANK (0 when unset, as in world 1)
# gets PIN_CORES cores (default 4) from RANK * PIN_CORES on, so that ranks
# sharing the machine do not share cores, and each rank has the same cores in
# every column and round of a benchmark. Unpinned, and said on stderr, where
# taskset is missing or the machine has too few cores.
n=${PIN_CORES:-4} r=${RANK:-0}
first=$((r * n)) last=$((r * n + n - 1))
if command -v taskset > /dev/null && [ "$last" -lt "$(nproc --all)" ]; then
  exec taskset -c "$first-$last" "$@"
fi
echo "pin.sh: rank $r not pinned (no taskset, or core $last past the last)" >&2
exec "$@"
