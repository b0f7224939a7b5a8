#!/usr/bin/env bash
# GPU throughput against PyTorch eager on the same device, alternating the two engines:
#   bash scripts/gpu_bench.sh build       # here: the release `selfsup` (stripped) and the four
#                                         # Fashion-MNIST files into target/gpu-run (about 40 MB)
#   bash scripts/gpu_bench.sh run         # on the GPU machine; JSON lines into $OUT/bench.jsonl
#   bash scripts/gpu_bench.sh quickstart  # on the GPU machine: `selfsup quickstart --device cuda`
#                                         # on the carried Fashion-MNIST, log in $OUT (further
#                                         # arguments go to the quickstart, e.g. --steps 3)
# target/gpu-run is carried apart from gpu_check.sh's target/gpu-bins (test binaries), so each
# device call carries well under its 64 MiB.
# Workloads: sgemm in f32 (TF32 off), TF32 and bf16; simclr-step, gpt-step (shared/README.md);
# SimCLR at batch 512 with the SmallCnn and the CIFAR ResNet-18 (in f32 with TF32 off on both
# sides, and in bf16: ours `--precision bf16`, PyTorch's bf16 autocast), GPT-2 small in bf16 with its
# MFU (issue 7's table; its fused attention runs on the tensor cores, attention_mma.cu), and
# GPT-2 with the composed attention (bf16 matmuls over stored T x T scores) against it, and
# GPT-2 with the MLP and output-head fusions off (`--fusion composed`) to show what they buy,
# and the bf16 ResNet-18 row with each convolution's products as single GEMMs over all columns
# (`--fusion composed`: no per-image forward GEMMs, no sliced weight gradient) beside it, and
# with the implicit-GEMM convolution (`--conv implicit`: no column matrices, kernels/conv_mma.cu).
# simclr512, resnet512 and gpt2 also print a `gpu-profile` line (`--profile`): one more step
# with each launch timed, the device time by kernel, to size the next optimisation; PyTorch's
# side prints the same from torch.profiler.
# WORKLOADS="sgemm gpt2" picks some; BENCH_TIMEOUT (default 300) stops each engine's run of one.
set -euo pipefail
cd "$(dirname "$0")/.."
bins=target/gpu-run
fmnist=/usr/share/datasets/fashion-mnist
case "${1:-}" in
build)
  rm -rf "$bins" && mkdir -p "$bins"
  cargo build --release -p selfsup-cli
  cp target/release/selfsup "$bins/selfsup" && strip "$bins/selfsup"
  if [ -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
    mkdir -p "$bins/fashion-mnist" && cp "$fmnist"/*-ubyte.gz "$bins/fashion-mnist/"
  else
    echo "gpu_bench: no Fashion-MNIST in $fmnist (apt-get install dataset-fashion-mnist): the GPU quickstart will say so" >&2
  fi
  ls -la "$bins" "$bins"/fashion-mnist 2>/dev/null || true
  du -sh "$bins"
  ;;
quickstart)
  out=${OUT:-target/gpu-out}
  mkdir -p "$out"
  source <(bash scripts/gpu_check.sh env)
  export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/selfsup-gpu-cache}"  # not under $OUT: at most 8 files come back
  if [ ! -f "$bins/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
    echo "gpu_bench: $bins/fashion-mnist is missing: run 'bash scripts/gpu_bench.sh build' where Fashion-MNIST is installed, and carry $bins" >&2
    exit 1
  fi
  # The run's folder (checkpoints) stays out of $OUT; its metrics and pretraining log come back.
  run=/tmp/selfsup-gpu-quickstart
  date -u | tee "$out/quickstart.log"
  rc=0
  timeout "${QUICKSTART_TIMEOUT:-540}" "$bins/selfsup" quickstart --device cuda --data "$bins/fashion-mnist" \
    --out "$run" "${@:2}" 2>&1 | tee -a "$out/quickstart.log" || rc=$?
  cp "$run/metrics.json" "$out/quickstart-metrics.json" 2>/dev/null || true
  cp "$run/pretrain/log.jsonl" "$out/quickstart-pretrain-log.jsonl" 2>/dev/null || true
  exit $rc
  ;;
run)
  out=${OUT:-target/gpu-out}
  mkdir -p "$out"
  source <(bash scripts/gpu_check.sh env)
  rounds=${ROUNDS:-2}
  for r in $(seq 1 "$rounds"); do
    for w in ${WORKLOADS:-sgemm sgemm-tf32 sgemm-bf16 simclr simclr512 resnet512 resnet512-bf16 resnet512-bf16-implicit gpt gpt2 gpt2-unfused gpt2-composed resnet512-bf16-composed}; do
      case $w in
        sgemm) ours=(bench sgemm --sizes 256,512,1024,2048,4096); theirs=(sgemm) ;;
        sgemm-tf32) ours=(bench sgemm --sizes 1024,4096 --precision tf32); theirs=(sgemm --sizes 1024,4096 --precision tf32) ;;
        sgemm-bf16) ours=(bench sgemm --sizes 1024,4096,8192 --precision bf16); theirs=(sgemm --sizes 1024,4096,8192 --precision bf16) ;;
        simclr) ours=(bench simclr-step); theirs=(simclr) ;;
        simclr512) ours=(bench simclr-step --batch 512 --profile); theirs=(simclr --simclr-batch 512 --profile) ;;
        resnet512) ours=(bench simclr-step --backbone resnet18 --batch 512 --reps 5 --profile); theirs=(simclr --backbone resnet18 --simclr-batch 512 --reps 5 --profile) ;;
        resnet512-bf16) ours=(bench simclr-step --backbone resnet18 --batch 512 --reps 5 --precision bf16 --profile); theirs=(simclr --backbone resnet18 --simclr-batch 512 --reps 5 --precision bf16 --profile) ;;
        gpt) ours=(bench gpt-step); theirs=(gpt) ;;
        gpt2) ours=(bench gpt-step --model gpt2 --precision bf16 --reps 5 --profile); theirs=(gpt2 --reps 5 --profile) ;;
        gpt2-composed) ours=(bench gpt-step --model gpt2 --precision bf16 --reps 5 --attention composed); theirs=() ;;
        gpt2-unfused) ours=(bench gpt-step --model gpt2 --precision bf16 --reps 5 --fusion composed); theirs=() ;;
        resnet512-bf16-implicit) ours=(bench simclr-step --backbone resnet18 --batch 512 --reps 5 --precision bf16 --conv implicit --profile); theirs=() ;;
        resnet512-bf16-composed) ours=(bench simclr-step --backbone resnet18 --batch 512 --reps 5 --precision bf16 --fusion composed --profile); theirs=() ;;
      esac
      timeout "${BENCH_TIMEOUT:-300}" "$bins/selfsup" "${ours[@]}" --device cuda 2>>"$out/bench.err" | sed "s/^{/{\"round\": $r, \"engine\": \"selfsup\", /" | tee -a "$out/bench.jsonl" || echo "{\"round\": $r, \"engine\": \"selfsup\", \"workload\": \"$w\", \"failed\": true}" | tee -a "$out/bench.jsonl"
      if [ ${#theirs[@]} -gt 0 ]; then
        timeout "${BENCH_TIMEOUT:-300}" python3 scripts/torch_gpu_reference.py "${theirs[@]}" 2>>"$out/bench.err" | sed "s/^{/{\"round\": $r, /" | tee -a "$out/bench.jsonl" || true
      fi
    done
  done
  # The tables for docs/gpu.md: medians, ratios, MFU, each engine's longest kernels.
  python3 scripts/gpu_table.py "$out/bench.jsonl" | tee "$out/table.md" || echo "gpu_bench: gpu_table.py failed (the JSON lines are in $out/bench.jsonl)" >&2
  ;;
*)
  echo "usage: bash scripts/gpu_bench.sh build|run|quickstart" >&2
  exit 2
  ;;
esac
