#!/usr/bin/env bash
# apply.sh SRC_DIR VERSION: lets an unpacked NCCL 2.18 - 2.26 source tree
# build with the CUDA 13 toolkit; prints each change it makes. Idempotent
# (a tree already marked is left as it is). Releases 2.27 and newer build
# with CUDA 13 as they are: for them this does nothing and says so.
#
# Changes (docs/versions.md, "Building 2.18-2.26 with CUDA 13", says why):
#   1. makefiles/compat-cuda13.h (a copy of this folder's), force-included
#      into every host (CXXFLAGS) and device (NVCUFLAGS) compile: the CUDA
#      runtime names and PFN_ typedefs CUDA 13 removed, with their CUDA 12
#      meaning; driver entry points pinned to the versions NCCL calls.
#   2. only where the source includes <cuda/...> (libcu++, 2.26): C++17
#      instead of C++11 (CUDA 13's libcu++ refuses older), and
#      -I $(CUDA_INC)/cccl for the host compiler (CUDA 13 moved libcu++
#      there; nvcc adds it itself).
#   3. the default NVCC_GENCODE (used only when none is given) loses the
#      sm_50 - sm_72 targets, which CUDA 13 no longer has.
set -euo pipefail
SRC=${1:?usage: apply.sh SRC_DIR VERSION}
VERSION=${2:?usage: apply.sh SRC_DIR VERSION}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$SRC" && pwd)
MK=$SRC/makefiles/common.mk
say() { echo "nccl-compat $VERSION: $*"; }

IFS=. read -r major minor _ <<< "$VERSION"
if ((major != 2 || minor < 18 || minor > 26)); then
  say "nothing to do (shims are for 2.18 - 2.26)"; exit 0
fi
[ -f "$MK" ] || { say "no $MK" >&2; exit 1; }
if grep -q "compat-cuda13" "$MK"; then say "already applied to $MK"; exit 0; fi

# 1. the compat header, force-included
cp "$HERE/compat-cuda13.h" "$SRC/makefiles/compat-cuda13.h"
cat >> "$MK" <<MK

# compat-cuda13 (nccl-rs tests/gpu/nccl-compat/apply.sh): names CUDA 13 removed
CXXFLAGS  += -include $SRC/makefiles/compat-cuda13.h
NVCUFLAGS += -include $SRC/makefiles/compat-cuda13.h
# enhcompat.cc declares its own stand-ins for CUDA names, without CUDA headers
%enhcompat.o: CXXFLAGS += -DNCCL_COMPAT_CUDA13_OFF
MK
say "force-include makefiles/compat-cuda13.h in CXXFLAGS and NVCUFLAGS (not enhcompat.cc)"

# 2. libcu++ users: C++17 and the cccl include folder
if grep -rqE '#include *<cuda/' "$SRC/src"; then
  sed -i 's/-std=c++11/-std=c++17/g' "$MK"
  cat >> "$MK" <<'MK'
# compat-cuda13: CUDA 13's libcu++ (<cuda/...>) is under include/cccl and needs C++17
CXXFLAGS  += -I $(CUDA_INC)/cccl
MK
  say "source includes <cuda/...>: -std=c++11 -> -std=c++17, CXXFLAGS += -I \$(CUDA_INC)/cccl"
fi

# 3. the default gencode list without the targets CUDA 13 dropped
sed -i '/^\$(info NVCC_GENCODE is/i\
# compat-cuda13: CUDA 13 has no sm_50 - sm_72; only a default list is changed\
ifeq ($(origin NVCC_GENCODE),file)\
ifeq ($(shell test "0$(CUDA_MAJOR)" -ge 13; echo $$?),0)\
NVCC_GENCODE := $(filter-out %_35 %_50 %_52 %_53 %_60 %_61 %_62 %_70 %_72,$(NVCC_GENCODE))\
endif\
endif' "$MK"
grep -q '^NVCC_GENCODE := $(filter-out' "$MK" || { say "could not edit the default NVCC_GENCODE in $MK" >&2; exit 1; }
say "default NVCC_GENCODE (only when not given) drops sm_35 - sm_72 under CUDA 13"
