#!/usr/bin/env bash
# Builds selfsup's CUDA emulator (libcuda.so, libnvrtc.so, libcublas.so, libcublasLt.so that run the kernels of
# kernels/*.cu on the host) into target/cuda-emu/lib. x86-64 Linux with a C++17 compiler.
# Use: bash tools/cuda-emu/build.sh, then run a test binary with
# LD_LIBRARY_PATH=target/cuda-emu/lib (scripts/emu_check.sh does both).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/cuda-emu/lib"
mkdir -p "$out" "$root/target/cuda-emu/gen"
cxx=${CXX:-c++}
gen="$root/target/cuda-emu/gen"
{ printf 'R"EMUDEVICEH('; cat "$here/device.h"; printf ')EMUDEVICEH"\n'; } >"$gen/device_h.inc"
"$cxx" -std=c++17 -O2 -fPIC -shared -Wall -o "$out/libcuda.so" "$here/driver.cpp" -ldl
"$cxx" -std=c++17 -O2 -fPIC -shared -Wall -I"$gen" -o "$out/libnvrtc.so" "$here/nvrtc.cpp"
"$cxx" -std=c++17 -O2 -fPIC -shared -Wall -o "$out/libcublas.so" "$here/cublas.cpp"
"$cxx" -std=c++17 -O2 -fPIC -shared -Wall -o "$out/libcublasLt.so" "$here/cublaslt.cpp"
# The same libraries with a driver that runs blocks and threads in descending order (device.h,
# `reverse_order`), for finding races: scripts/emu_check.sh runs the suites on both.
rev="$root/target/cuda-emu/lib-reverse"
mkdir -p "$rev"
"$cxx" -std=c++17 -O2 -fPIC -shared -Wall -DEMU_REVERSE=1 -o "$rev/libcuda.so" "$here/driver.cpp" -ldl
cp "$out/libnvrtc.so" "$out/libcublas.so" "$out/libcublasLt.so" "$rev/"
# The same libraries with kernels and products checked but not run (EMU_HOST_ONLY), for measuring
# the host's own cost of a step: scripts/host_cost.sh.
host="$root/target/cuda-emu/lib-host-only"
mkdir -p "$host"
"$cxx" -std=c++17 -O2 -fPIC -shared -Wall -DEMU_HOST_ONLY=1 -o "$host/libcuda.so" "$here/driver.cpp" -ldl
"$cxx" -std=c++17 -O2 -fPIC -shared -Wall -DEMU_HOST_ONLY=1 -o "$host/libcublas.so" "$here/cublas.cpp"
"$cxx" -std=c++17 -O2 -fPIC -shared -Wall -DEMU_HOST_ONLY=1 -o "$host/libcublasLt.so" "$here/cublaslt.cpp"
cp "$out/libnvrtc.so" "$host/"
echo "built $out/{libcuda,libnvrtc,libcublas,libcublasLt}.so, $rev (descending schedule) and $host (kernels not run)"
