#!/usr/bin/env bash
# Links the programs of a static bundle (made by ../shared/gpu/bundle, see
# tests/gpu/build.sh) on the GPU machine:
#
#   tests/gpu/static-link.sh BUNDLE.tar.gz DEST [NCCL_LIB_DIR [PROGRAM...]]
#
# Unpacks the bundle into DEST and replays its recorded links with the
# bundle's own `replay`; prints the bundle's folder (the programs are in its
# bin/) on stdout, the linker's output on stderr.
#   NCCL_LIB_DIR  a folder whose libnccl_static.a is linked instead of the
#                 one the bundle was recorded for (its -L goes first, and the
#                 first folder that has the archive wins); empty: as recorded
#   PROGRAM...    the programs to link, by name (nccl_gpu, sys_gpu, faults,
#                 ...); none: all of them
set -euo pipefail
tgz=${1:?usage: static-link.sh BUNDLE.tar.gz DEST [NCCL_LIB_DIR [PROGRAM...]]}
dest=${2:?usage: static-link.sh BUNDLE.tar.gz DEST [NCCL_LIB_DIR [PROGRAM...]]}
lib=${3:-}
shift 2
shift $(($# > 0 ? 1 : 0))
mkdir -p "$dest"
tar -C "$dest" -xzf "$tgz"
b=$(ls -d "$dest"/*/ | head -1)
b=${b%/}
[ -x "$b/replay" ] || { echo "static-link.sh: $tgz has no replay script" >&2; exit 1; }
if [ -n "$lib" ]; then
  [ -f "$lib/libnccl_static.a" ] || { echo "static-link.sh: no libnccl_static.a in $lib" >&2; exit 1; }
  lib=$(cd "$lib" && pwd)
  q=$(printf '%q' "$lib")
  for f in "$b"/link-*.sh; do
    # every recorded link starts with `cc `: this folder's -L first
    sed -i "1s#^cc #cc -L $q #" "$f"
    grep -q "^cc -L $q " "$f" || { echo "static-link.sh: $f does not start with cc" >&2; exit 1; }
  done
fi
if [ $# -gt 0 ]; then
  mkdir -p "$b/unlinked"
  for f in "$b"/link-*.sh; do
    name=${f##*/link-}; name=${name%.sh}
    keep=0
    for p in "$@"; do
      # cargo's names: PROGRAM-<hash> (tests) or PROGRAM (binaries, examples)
      [[ $name == "$p" || $name == "$p"-* ]] && keep=1
    done
    [ $keep = 1 ] || mv "$f" "$b/unlinked/"
  done
  ls "$b"/link-*.sh > /dev/null 2>&1 || { echo "static-link.sh: the bundle has none of: $*" >&2; exit 1; }
fi
(cd "$b" && ./replay) >&2
echo "$b"
