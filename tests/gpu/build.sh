#!/usr/bin/env bash
# Builds, on a machine with Rust but without a GPU, what tests/gpu/validate.sh
# and tests/gpu/side-by-side.sh run on the GPU machine, into .gpu/ (ignored):
#   .gpu/dyn/          dynamically linked: sys_cpu sys_gpu nccl_cpu nccl_gpu faults nccl-bench xtask,
#                      the examples hello, weight_sync, survive, device_all_reduce and weight_push
#                      (which, on this header, can only report put_signal Unsupported)
#   .gpu/rl/           feature runtime-load (nothing linked), bindings of NCCL 2.32.3's header
#                      (target/nccl-headers, fetched by `cargo xtask bindgen --check`):
#                      sys_cpu nccl_cpu nccl_gpu faults runtime_load, the examples survive,
#                      device_all_reduce and weight_push (tests/gpu/weight-push.sh runs it on
#                      NCCL 2.29.2+)
#   .gpu/static.tar.gz the same programs, recorded for a static link there
#                      (../shared/gpu/bundle; tests/gpu/static-link.sh unpacks it
#                      and links them there, against the system's libnccl_static.a
#                      or that of another folder, e.g. NCCL built from source)
#   .gpu/static-nccl_gpu.tar.gz  the part of it that links nccl_gpu alone
# and lists what is carried to the GPU machine, with .gpu/src (NCCL source
# tarballs for tests/gpu/nccl-from-source.sh, made by hand: docs/validation.md).
# Needs the NCCL wheel that `cargo xtask ci` installs (run `cargo xtask bindgen
# --check` once) and, for the static bundle, the bundle tool in ../shared/gpu.
# The header used must be the same NCCL version as the GPU machine's library.
set -euo pipefail
cd "$(dirname "$0")/../.."
deps=$PWD/target/nccl-deps
export LIBCLANG_PATH=${LIBCLANG_PATH:-$deps/libclang/clang/native}
NCCL_DIR=$deps/nvidia/nccl cargo test --release --no-run -p nccl-rs-tests
NCCL_DIR=$deps/nvidia/nccl cargo build --release -p nccl-rs --features bench --bin nccl-bench \
  --example hello --example weight_sync --example survive --example weight_push \
  --example device_all_reduce
cargo build --release -p xtask
# the newest test program NAME-<hash> in cargo's deps folder DIR (not its .d)
newest() {
  local f best=
  for f in "$1/$2"-*; do
    [[ $f == *.d ]] && continue
    [[ -z $best || $f -nt $best ]] && best=$f
  done
  [ -n "$best" ] || { echo "build.sh: no $1/$2-*" >&2; return 1; }
  echo "$best"
}
rm -rf .gpu/dyn && mkdir -p .gpu/dyn
for t in sys_cpu sys_gpu nccl_cpu nccl_gpu faults; do
  cp "$(newest target/release/deps "$t")" ".gpu/dyn/$t"
done
cp target/release/nccl-bench target/release/xtask target/release/examples/hello \
  target/release/examples/weight_sync \
  target/release/examples/survive target/release/examples/weight_push \
  target/release/examples/device_all_reduce .gpu/dyn/
# runtime-load, on the newest header, in a target folder of its own
rl=$PWD/target/gpu-rl
env -u NCCL_DIR CARGO_TARGET_DIR=$rl NCCL_INCLUDE_DIR=$PWD/target/nccl-headers/2.32.3 \
  cargo test --release --no-run -p nccl-rs-tests --features runtime-load
env -u NCCL_DIR CARGO_TARGET_DIR=$rl NCCL_INCLUDE_DIR=$PWD/target/nccl-headers/2.32.3 \
  cargo build --release -p nccl-rs --features runtime-load --example survive --example weight_push \
  --example device_all_reduce
rm -rf .gpu/rl && mkdir -p .gpu/rl
for t in sys_cpu nccl_cpu nccl_gpu faults runtime_load; do
  cp "$(newest "$rl/release/deps" "$t")" ".gpu/rl/$t"
done
cp "$rl/release/examples/survive" "$rl/release/examples/weight_push" \
  "$rl/release/examples/device_all_reduce" .gpu/rl/
if [ -x ../shared/gpu/bundle ]; then
  env -u NCCL_DIR NCCL_STATIC=1 NCCL_INCLUDE_DIR=$deps/nvidia/nccl/include \
    NCCL_LIB_DIR=/usr/lib/x86_64-linux-gnu CUDA_HOME=/usr/local/cuda \
    ../shared/gpu/bundle .gpu/static cargo test --release --no-run -p nccl-rs-tests \
    -p nccl-rs --features nccl-rs/bench
  # the part of the bundle that links nccl_gpu alone (what
  # tests/gpu/nccl-from-source.sh links), a third smaller to carry
  link=$(ls .gpu/static/link-nccl_gpu-*.sh)
  { echo static/replay; echo "static/${link##*/}"
    tr ' ' '\n' < "$link" | grep '^files/' | sed 's/\\//g; s#^#static/#'; } | sort -u > .gpu/static-nccl_gpu.list
  tar -C .gpu -czf .gpu/static-nccl_gpu.tar.gz -T .gpu/static-nccl_gpu.list
  rm .gpu/static-nccl_gpu.list
else
  echo "no ../shared/gpu/bundle: static bundle not made" >&2
fi
carried=(.gpu/dyn .gpu/rl .gpu/static.tar.gz .gpu/static-nccl_gpu.tar.gz)
[ -d .gpu/src ] && carried+=(.gpu/src)
ls -la "${carried[@]}"
# what a run there may carry: the device tool's limit is 64 MiB with the
# working tree, so carry single files where all of it is too much
du -b "${carried[@]}"
