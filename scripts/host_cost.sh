#!/usr/bin/env bash
# The host's own cost of a training step on the GPU path, measured without a GPU: the benchmark
# workloads of scripts/gpu_bench.sh run on the CUDA emulator's host-only build
# (target/cuda-emu/lib-host-only, tools/cuda-emu/build.sh: every launch and product is checked
# but not run, memory comes from free lists as from the driver's pool), so a step's time there is
# what the Rust side spends issuing it: autograd, shape checks, kernel lookup, launch arguments,
# allocation, uploads. On a GPU that time overlaps the kernels unless it is longer than they
# are; the real driver adds its own few microseconds per launch.
#   bash scripts/host_cost.sh            # every workload
#   bash scripts/host_cost.sh simclr512  # some (simclr512 simclr512-bf16 resnet512
#                                        # resnet512-bf16 gpt gpt2)
# Prints one JSON line per workload: host milliseconds per step, launches per step (from the
# emulator's count under --profile), and the microseconds per launch they make.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" != x86_64 ] || ! command -v "${CXX:-c++}" >/dev/null 2>&1; then
  echo "host_cost: skipped: the CUDA emulator needs x86-64 Linux and a C++17 compiler (c++ or \$CXX)"
  exit 0
fi
bash tools/cuda-emu/build.sh >/dev/null
cargo build --release -q -p selfsup-cli
export XDG_CACHE_HOME="$PWD/target/cuda-emu/cache"
export LD_LIBRARY_PATH="$PWD/target/cuda-emu/lib-host-only"
bin=target/release/selfsup
for w in "${@:-simclr512 simclr512-bf16 resnet512 resnet512-bf16 gpt gpt2}"; do
  for one in $w; do
    case "$one" in
      simclr512) reps=300 args=(bench simclr-step --batch 512) ;;
      simclr512-bf16) reps=300 args=(bench simclr-step --batch 512 --precision bf16) ;;
      resnet512) reps=60 args=(bench simclr-step --backbone resnet18 --batch 512) ;;
      resnet512-bf16) reps=60 args=(bench simclr-step --backbone resnet18 --batch 512 --precision bf16) ;;
      gpt) reps=300 args=(bench gpt-step) ;;
      gpt2) reps=30 args=(bench gpt-step --model gpt2 --precision bf16) ;;
      *) echo "host_cost: unknown workload $one" >&2; exit 2 ;;
    esac
    timing=$("$bin" "${args[@]}" --reps "$reps" --device cuda | tail -n 1)
    profile=$("$bin" "${args[@]}" --reps 3 --profile --device cuda | tail -n 1)
    python3 - "$one" "$timing" "$profile" <<'EOF'
import json, sys
name, timing, profile = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
if "img_per_s" in timing:
    ms = 1e3 * timing["batch_images"] / timing["img_per_s"]
else:
    ms = 1e3 * timing["tokens_per_step"] / timing["tok_per_s"]
launches = profile.get("launches")
print(json.dumps({
    "workload": name,
    "host_ms_per_step": round(ms, 3),
    "launches_per_step": launches,
    "host_us_per_launch": round(1e3 * ms / launches, 1) if launches else None,
}))
EOF
  done
done
