#!/usr/bin/env bash
# Runs the device suites (tensor, nn, ssl: every op with a CUDA arm against the CPU, a SmallCnn
# and every SSL method trained on the "GPU" against the CPU) on selfsup's CUDA emulator
# (tools/cuda-emu: libcuda/libnvrtc/libcublas stand-ins that run kernels/*.cu on the host).
# No GPU and no CUDA needed: a C++17 compiler on x86-64 Linux. This checks the kernels' logic
# and every launch's arguments, not speed and not what only real hardware shows (races,
# memory ordering, PTX); scripts/gpu_check.sh is the check on a real GPU.
#   bash scripts/emu_check.sh            # build the emulator, then run the three suites, with
#                                        # blocks and threads in ascending, then descending order
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
# Only the emulator's libraries on the search path, and its own kernel cache. The suites run
# twice: blocks and threads in ascending order (lib/), then in descending order (lib-reverse/),
# so a kernel that reads another thread's or block's writes without a barrier fails in one of
# the two.
export XDG_CACHE_HOME="$PWD/target/cuda-emu/cache"
launched=target/cuda-emu/launched.txt
rm -f "$launched"
for schedule in lib lib-reverse; do
  log=target/cuda-emu/last-run-$schedule.log
  echo "emu_check: the device suites on target/cuda-emu/$schedule"
  SELFSUP_EMU_LAUNCH_LOG="$PWD/$launched" LD_LIBRARY_PATH="$PWD/target/cuda-emu/$schedule" cargo test --workspace --test devices --no-fail-fast -- \
    --test-threads=2 --nocapture "${shift_args[@]}" 2>&1 | tee "$log"  # pipefail: a failure stops here
  # A suite that found no device would have passed by skipping (--nocapture shows the tests'
  # "skipped on GPU" lines): make sure it ran on the emulator.
  if grep -q "skipped on GPU" "$log"; then
    echo "emu_check: FAILED: a device test skipped, so the emulator was not used" >&2
    exit 1
  fi
done
# Every kernel of kernels/*.cu must be launched by some device test (with a filter, only
# reported). The kernel names: each file behind device.h, preprocessed as the emulator's NVRTC
# does to find them.
all=target/cuda-emu/all-kernels.txt
for f in kernels/*.cu; do
  { cat tools/cuda-emu/device.h; echo '#line 1 "kernel.cu"'; cat "$f"; } \
    | "${CXX:-c++}" -std=c++17 -E -DEMU_SCAN -I kernels -x c++ - 2>/dev/null \
    | grep -oE "EMU_KERNEL_MARK[[:space:]]+void[[:space:]]+[A-Za-z_0-9]+" | awk '{print $3}'
done | sort -u >"$all"
untested=$(sort -u "$launched" | comm -23 "$all" -)
if [ -n "$untested" ]; then
  echo "emu_check: kernels no device test launches: $(echo $untested)" >&2
  if [ ${#shift_args[@]} -eq 0 ]; then
    echo "emu_check: FAILED: add a device test (crates/*/tests/devices) that runs each kernel above" >&2
    exit 1
  fi
fi
echo "emu_check: the device suites ran on the CUDA emulator, in both schedules; $(wc -l <"$all") kernels, each launched by a test"
