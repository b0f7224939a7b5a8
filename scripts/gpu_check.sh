#!/usr/bin/env bash
# The GPU check of issue 7, in two halves:
#   bash scripts/gpu_check.sh build   # here (needs Rust): test binaries into target/gpu-bins
#   bash scripts/gpu_check.sh run [NAME..]  # on the GPU machine (no Rust): runs them (or the
#                                     # named ones), logs to $OUT; each binary is stopped after
#                                     # TEST_TIMEOUT seconds (default 300)
#   bash scripts/gpu_check.sh env     # prints the LD_LIBRARY_PATH line `run` uses
# `run` puts the CUDA libraries it finds (CUDA toolkit, or PyTorch's pip wheels) on
# LD_LIBRARY_PATH, prints the device, then runs the tensor crate's unit tests and its device
# suite (tests/devices), which compare every op with a CUDA arm against the CPU, nn's device
# test (a SmallCnn trained on the GPU against the CPU) and ssl's (every method, GPU vs CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
bins=target/gpu-bins

# Prints an `export LD_LIBRARY_PATH=...` line adding the CUDA library directories found: the
# toolkit's, and those of NVIDIA's pip wheels (PyTorch's dependencies).
cuda_lib_env() {
  local dirs="" d lib py
  for d in /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && dirs="$dirs:$d"
  done
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1; then
      for d in $("$py" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
        for lib in "$d"/nvidia/*/lib "$d"/nvidia/cu*/lib; do [ -d "$lib" ] && dirs="$dirs:$lib"; done
      done
    fi
  done
  echo "export LD_LIBRARY_PATH=\"${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\""
}
case "$mode" in
build)
  rm -rf "$bins" && mkdir -p "$bins"
  { cargo test -p selfsup-tensor --lib --no-run --message-format=json 2>/dev/null
    cargo test -p selfsup-tensor -p selfsup-nn -p selfsup-ssl --test devices --no-run --message-format=json 2>/dev/null
  } | python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        pkg = m["package_id"].split("#")[-1].split("@")[0].split(":")[0]
        name = pkg + "-" + m["target"]["name"] + ("-lib" if m["target"]["kind"] == ["lib"] else "")
        shutil.copy(m["executable"], os.path.join(sys.argv[1], name))
        print(name)
' "$bins"
  strip "$bins"/* 2>/dev/null || true
  ls -la "$bins"
  ;;
run)
  out=${OUT:-target/gpu-out}
  mkdir -p "$out"
  eval "$(cuda_lib_env)"
  export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/selfsup-gpu-cache}"  # not under $OUT: at most 8 files come back
  {
    date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  } | tee "$out/device.txt"
  status=0
  names=("${@:2}")
  [ ${#names[@]} -gt 0 ] || names=($(ls "$bins"))
  for name in "${names[@]}"; do
    b="$bins/$name"
    echo "== $name"
    if [ ! -x "$b" ]; then
      echo "gpu_check: no test binary $b (run 'bash scripts/gpu_check.sh build' here, and carry $bins)"
      status=1
      continue
    fi
    rc=0
    timeout "${TEST_TIMEOUT:-300}" "$b" --test-threads=4 --nocapture >"$out/$name.log" 2>&1 || rc=$?
    [ $rc -eq 124 ] && echo "gpu_check: $name stopped after ${TEST_TIMEOUT:-300} s" | tee -a "$out/$name.log"
    [ $rc -eq 0 ] || status=1
    grep -E "^test result|FAILED|panicked|skipped" "$out/$name.log" | head -40
  done
  exit $status
  ;;
env)
  cuda_lib_env
  ;;
*)
  echo "usage: bash scripts/gpu_check.sh build|run|env" >&2
  exit 2
  ;;
esac
