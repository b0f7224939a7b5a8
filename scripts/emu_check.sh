#!/usr/bin/env bash
# Runs the device suites (tensor, nn, ssl: every op with a CUDA arm against the CPU, a SmallCnn
# and every SSL method trained on the "GPU" against the CPU) on selfsup's CUDA emulator
# (tools/cuda-emu: libcuda/libnvrtc/libcublas stand-ins that run kernels/*.cu on the host).
# No GPU and no CUDA needed: a C++17 compiler on x86-64 Linux. This checks the kernels' logic
# and every launch's arguments, not speed and not what only real hardware shows (races,
# memory ordering, PTX); scripts/gpu_check.sh is the check on a real GPU.
#   bash scripts/emu_check.sh            # build the emulator, then run the three suites
#   bash scripts/emu_check.sh -- FILTER  # pass a test-name filter to the suites
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" != x86_64 ] || ! command -v "${CXX:-c++}" >/dev/null 2>&1; then
  echo "emu_check: skipped: the CUDA emulator needs x86-64 Linux and a C++17 compiler (c++ or \$CXX)"
  exit 0
fi
bash tools/cuda-emu/build.sh
shift_args=()
if [ "${1:-}" = "--" ]; then shift; shift_args=("$@"); fi
# Only the emulator's libraries on the search path, and its own kernel cache.
export LD_LIBRARY_PATH="$PWD/target/cuda-emu/lib"
export XDG_CACHE_HOME="$PWD/target/cuda-emu/cache"
cargo test --workspace --test devices --no-fail-fast -- \
  --test-threads=2 --nocapture "${shift_args[@]}" 2>&1 | tee target/cuda-emu/last-run.log
# A suite that found no device would have passed by skipping (--nocapture shows the tests' "skipped
# on GPU" lines): make sure it ran on the emulator.
if grep -q "skipped on GPU" target/cuda-emu/last-run.log; then
  echo "emu_check: FAILED: a device test skipped, so the emulator was not used" >&2
  exit 1
fi
echo "emu_check: the device suites ran on the CUDA emulator"
