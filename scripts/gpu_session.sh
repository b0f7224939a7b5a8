#!/usr/bin/env bash
# Issue 7's whole GPU verification as one device call, its steps in order of importance under
# one deadline, so that a session lent a GPU (15 minutes of device time, machine start
# included; at most 10 minutes a command) gets every result from one start:
#   bash scripts/gpu_session.sh build          # here: gpu_check.sh build + gpu_bench.sh build,
#                                              # packed into target/gpu-session/bundle.tar.xz
#                                              # (about 36 MB; a device call carries 64 MiB)
#   bash scripts/gpu_session.sh run [STEP..]   # there, carrying target/gpu-session: unpacks
#                                              # it, runs all steps unless some are named
# Steps, in this order:
#   device   nvidia-smi, the CUDA library path, every kernel file compiled (in parallel)
#   suite    the tensor crate's device suite (every op with a CUDA arm against the CPU)
#   targets  issue 7's throughput rows against PyTorch eager: gpt2 (bf16, MFU), simclr512,
#            resnet512, resnet512-bf16, each with its `gpu-profile` line; then ours alone with
#            the implicit-GEMM convolution, resnet512-bf16-implicit; two rounds (the table gives
#            medians), since session 36's single round left ResNet-18 f32 at 1.01, within noise
#   quick    `selfsup quickstart --device cuda` on the carried Fashion-MNIST
#   tests    the nn and ssl device suites and the tensor crate's unit tests
#   rest     the other bench rows: resnet512-bf16-composed, gpt2-unfused, gpt2-composed,
#            sgemm (f32, TF32, bf16), simclr, gpt
# DEADLINE (seconds from the start, default 540) bounds the whole run: each step gets at most
# its own cap and never more than the time left (less 15 s for the packing); a step that no
# longer fits is recorded as skipped. $OUT receives at most 6 files, refreshed after every step
# so that a run cut short still returns what it did: summary.txt (each step's exit status,
# seconds and result lines), device.txt, bench.jsonl, table.md (scripts/gpu_table.py),
# quickstart.txt and logs.tar.gz (every log). Kernels compiled by one step are reused by the
# next (the NVRTC disk cache, under /tmp).
set -uo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
deadline=${DEADLINE:-540}
work=/tmp/selfsup-gpu
out=${OUT:-target/gpu-out}

case "${1:-}" in
build)
  set -e
  bash scripts/gpu_check.sh build
  bash scripts/gpu_bench.sh build
  # One xz archive (the binaries shrink about 7 times; the IDX files are already gzipped).
  rm -rf target/gpu-session && mkdir -p target/gpu-session
  tar cJf target/gpu-session/bundle.tar.xz -C target gpu-bins gpu-run
  size=$(( $(du -sk target/gpu-session | cut -f1) + $(git ls-files -z | du -skc --files0-from=- | tail -1 | cut -f1) ))
  echo "gpu_session: target/gpu-session/bundle.tar.xz; about $(( size / 1024 )) MiB will travel with the tree (at most 64)"
  [ "$size" -lt $(( 60 * 1024 )) ] || { echo "gpu_session: too large for one device call" >&2; exit 1; }
  exit 0
  ;;
run) ;;
*)
  echo "usage: bash scripts/gpu_session.sh build|run [device suite targets quick tests rest]" >&2
  exit 2
  ;;
esac

if [ -f target/gpu-session/bundle.tar.xz ]; then
  # tar needs the xz program for -J; Python's tarfile (lzma is in its standard library) does not.
  tar xJf target/gpu-session/bundle.tar.xz -C target 2>/dev/null ||
    python3 -c 'import sys, tarfile
t = tarfile.open(sys.argv[1])
t.extractall(sys.argv[2], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))' \
      target/gpu-session/bundle.tar.xz target ||
    { echo "gpu_session: cannot unpack target/gpu-session/bundle.tar.xz" >&2; exit 1; }
elif [ ! -d target/gpu-bins ] || [ ! -d target/gpu-run ]; then
  echo "gpu_session: no target/gpu-session/bundle.tar.xz: run 'bash scripts/gpu_session.sh build' here and carry target/gpu-session" >&2
  exit 1
fi
steps=("${@:2}")
[ ${#steps[@]} -gt 0 ] || steps=(device suite targets quick tests rest)
rm -rf "$work" && mkdir -p "$work" "$out"
export XDG_CACHE_HOME=/tmp/selfsup-gpu-cache
summary="$out/summary.txt"
echo "gpu_session $(date -u +%FT%TZ), steps: ${steps[*]}, deadline ${deadline} s" >"$summary"

# Copies the results into $OUT (at most 6 files).
pack() {
  [ -f "$work/device.txt" ] && cp "$work/device.txt" "$out/"
  [ -f "$work/bench.jsonl" ] && cp "$work/bench.jsonl" "$out/" &&
    python3 scripts/gpu_table.py "$work/bench.jsonl" >"$out/table.md" 2>>"$work/table.err"
  [ -f "$work/quickstart.log" ] && cp "$work/quickstart.log" "$out/quickstart.txt"
  tar czf "$out/logs.tar.gz" -C "$work" . 2>/dev/null
}

# The seconds a step with cap $1 may run, or 0 when fewer than 20 are left.
allowance() {
  local left=$(( deadline - (SECONDS - started) - 15 ))
  [ "$left" -ge 20 ] || { echo 0; return; }
  echo $(( $1 < left ? $1 : left ))
}

# Runs `$2...` with at most $1 seconds, in a session of its own: at the limit everything it
# started is stopped (`timeout` alone would miss the processes that gpu_check.sh and
# gpu_bench.sh start under their own `timeout`s, which leave its process group). Status 124
# when stopped.
limited() {
  local secs=$1 pid end
  shift
  setsid "$@" &
  pid=$!
  end=$(( SECONDS + secs ))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $end ]; then
      pkill -TERM -s "$pid" 2>/dev/null || kill -TERM -- "-$pid" 2>/dev/null
      sleep 3
      pkill -KILL -s "$pid" 2>/dev/null || kill -KILL -- "-$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      return 124
    fi
    sleep 1
  done
  wait "$pid"
}

# Runs `$2...` as step $1 with cap $cap, recording its status, time and result lines.
step() {
  local name=$1 t0=$SECONDS rc=0 secs
  shift
  secs=$(allowance "$cap")
  if [ "$secs" -eq 0 ]; then
    echo "== $name: skipped (deadline)" | tee -a "$summary"
    return
  fi
  echo "== $name (up to $secs s)"
  limited "$secs" "$@" >"$work/$name.log" 2>&1 </dev/null || rc=$?
  echo "== $name: rc=$rc, $(( SECONDS - t0 )) s$([ $rc -eq 124 ] && echo ", stopped at its $secs s")" | tee -a "$summary"
  grep -hE "^test result|^== |FAILED|panicked|skipped|stopped after|^\{\"round\"|^\| SimCLR|^\| the same|^\| logistic|Total [0-9]+ s|kernel files|rror" \
    "$work/$name.log" | grep -v '"bench": "gpu-profile"' | cut -c1-400 | head -60 | tee -a "$summary"
  pack
}

for s in "${steps[@]}"; do
  case $s in
    # device also compiles every kernel file into the disk cache, on all cores at once (the
    # `selfsup` binary does that for any --device cuda command), so later steps start compiled.
    device) cap=60 step device bash -c 'date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee '"$work"'/device.txt; bash scripts/gpu_check.sh env; nvidia-smi; grep -m1 "model name" /proc/cpuinfo; nproc; source <(bash scripts/gpu_check.sh env); target/gpu-run/selfsup bench sgemm --device cuda --sizes 256 --reps 1' ;;
    suite) cap=180 step suite env OUT="$work/check" TEST_TIMEOUT=170 bash scripts/gpu_check.sh run selfsup-tensor-devices ;;
    targets) cap=290 step targets env OUT="$work" ROUNDS=2 WORKLOADS="gpt2 simclr512 resnet512 resnet512-bf16 resnet512-bf16-implicit" \
      BENCH_TIMEOUT=100 bash scripts/gpu_bench.sh run ;;
    quick) cap=200 step quick env OUT="$work" QUICKSTART_TIMEOUT=190 bash scripts/gpu_bench.sh quickstart ;;
    tests) cap=180 step tests env OUT="$work/check" TEST_TIMEOUT=120 bash scripts/gpu_check.sh run \
      selfsup-nn-devices selfsup-ssl-devices selfsup-tensor-selfsup_tensor-lib ;;
    rest) cap=300 step rest env OUT="$work" ROUNDS=1 WORKLOADS="resnet512-bf16-composed gpt2-unfused gpt2-composed sgemm-bf16 sgemm sgemm-tf32 simclr gpt" \
      BENCH_TIMEOUT=60 bash scripts/gpu_bench.sh run ;;
    *) echo "== $s: no such step (device suite targets quick tests rest)" | tee -a "$summary" ;;
  esac
done
pack
echo "gpu_session: done in $(( SECONDS - started )) s; results in $out" | tee -a "$summary"
