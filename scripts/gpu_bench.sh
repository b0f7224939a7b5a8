#!/usr/bin/env bash
# GPU throughput against PyTorch eager on the same device, alternating the two engines:
#   bash scripts/gpu_bench.sh build   # here: release `selfsup` into target/gpu-bins
#   bash scripts/gpu_bench.sh run     # on the GPU machine; JSON lines into $OUT/bench.jsonl
# Workloads: sgemm (f32, TF32 off), simclr-step, gpt-step (shared/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bins=target/gpu-bins
case "${1:-}" in
build)
  mkdir -p "$bins"
  cargo build --release -p selfsup-cli
  cp target/release/selfsup "$bins/selfsup" && strip "$bins/selfsup"
  ls -la "$bins/selfsup"
  ;;
run)
  out=${OUT:-target/gpu-out}
  mkdir -p "$out"
  source <(bash scripts/gpu_check.sh env)
  rounds=${ROUNDS:-2}
  for r in $(seq 1 "$rounds"); do
    for w in sgemm simclr gpt; do
      case $w in
        sgemm) ours=(bench sgemm --sizes 256,512,1024,2048,4096) ;;
        simclr) ours=(bench simclr-step) ;;
        gpt) ours=(bench gpt-step) ;;
      esac
      "$bins/selfsup" "${ours[@]}" --device cuda 2>>"$out/bench.err" | sed "s/^{/{\"round\": $r, \"engine\": \"selfsup\", /" | tee -a "$out/bench.jsonl"
      python3 scripts/torch_gpu_reference.py "$w" 2>>"$out/bench.err" | sed "s/^{/{\"round\": $r, /" | tee -a "$out/bench.jsonl"
    done
  done
  ;;
*)
  echo "usage: bash scripts/gpu_bench.sh build|run" >&2
  exit 2
  ;;
esac
