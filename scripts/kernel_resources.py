#!/usr/bin/env python3
"""What every kernel of kernels/*.cu costs in registers, spills and shared memory, as ptxas
reports it when NVRTC compiles the file the way selfsup does (common.cuh first, --std=c++17,
one architecture). Needs libnvrtc only (no GPU, no nvcc): CI's target/nvrtc-venv, a PyTorch
CUDA wheel's nvidia/cu13/lib, or a CUDA toolkit.

  python3 scripts/kernel_resources.py [--arch sm_90] [--all] [--lib PATH/libnvrtc.so.13]

Prints a markdown table of the kernels that use more than 64 registers or spill (--all: every
kernel), then one line per architecture: kernels, the most registers, how many spill. With
`limit` = the largest block (a multiple of 32, at most 1024) whose registers fit the 64K a
block may hold (registers are given out 8 per thread at a time), a launch of more threads
than `limit` fails with "too many resources requested for launch"; selfsup launches at most
256 threads a block (crates/tensor/src/cuda: BLOCK, attention's 64 and 128).
"""
import argparse
import ctypes
import glob
import os
import re
import sys


def find_nvrtc(explicit):
    if explicit:
        return explicit
    dirs = os.environ.get("LD_LIBRARY_PATH", "").split(":")
    dirs += glob.glob("target/nvrtc-venv/lib/python3*/site-packages/nvidia/*/lib")
    dirs += glob.glob("target/nvrtc-venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib")
    dirs += ["/usr/local/cuda/lib64"]
    for d in dirs:
        for name in ("libnvrtc.so.13", "libnvrtc.so.12"):
            p = os.path.join(d, name)
            if d and os.path.exists(p):
                return p
    sys.exit("kernel_resources: no libnvrtc.so.13/.12 found: pip install nvidia-cuda-nvrtc "
             "(or run .ci/run once, which makes target/nvrtc-venv), or pass --lib")


def compile_file(lib, name, arch, extra=(), cubin=False, who="kernel_resources"):
    """Compiles kernels/<name>.cu (common.cuh first, --std=c++17, `arch`, `extra` options) as
    selfsup does: (NVRTC's log, the CUBIN when `cubin`, else None); exits on an error."""
    common = open("kernels/common.cuh").read()
    src = common + f"\n// ---- {name}.cu\n" + open(f"kernels/{name}.cu").read()
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), None, 0, None, None) != 0:
        sys.exit(f"{who}: nvrtcCreateProgram failed for {name}.cu")
    opts = [b"--std=c++17", f"--gpu-architecture={arch}".encode(), *extra]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace")
    binary = None
    if rc == 0 and cubin:
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, buf)
        binary = buf.raw
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    if rc != 0:
        sys.exit(f"{who}: {name}.cu does not compile for {arch}:\n{text}")
    return text, binary


def ptxas_report(lib, name, arch):
    text, _ = compile_file(lib, name, arch, extra=[b"--ptxas-options=-v"])
    rows, cur = [], None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            cur = {"file": name, "kernel": m.group(1), "regs": 0, "spill_st": 0, "spill_ld": 0,
                   "stack": 0, "smem": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
        m = re.search(r"(\d+) bytes smem", line)
        if m:
            cur["smem"] = int(m.group(1))
    return rows


def block_limit(regs):
    per_thread = max(8, -(-regs // 8) * 8)
    return min(1024, 65536 // (per_thread * 32) * 32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", action="append", help="sm_XY (repeatable; default sm_90)")
    ap.add_argument("--all", action="store_true", help="every kernel, not only the heavy ones")
    ap.add_argument("--lib", help="path of libnvrtc.so.13 (or .12)")
    args = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    lib = ctypes.CDLL(find_nvrtc(args.lib))
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    files = sorted(os.path.basename(f)[:-3] for f in glob.glob("kernels/*.cu"))
    summary = []
    print(f"NVRTC {major.value}.{minor.value}\n")
    print("| arch | file | kernel | registers | limit (threads) | spill stores / loads (B) | stack (B) | static smem (B) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for arch in args.arch or ["sm_90"]:
        rows = [r for f in files for r in ptxas_report(lib, f, arch)]
        for r in sorted(rows, key=lambda r: (-r["regs"], r["kernel"])):
            if args.all or r["regs"] > 64 or r["spill_st"] or r["spill_ld"]:
                print(f"| {arch} | {r['file']} | {r['kernel']} | {r['regs']} | {block_limit(r['regs'])} "
                      f"| {r['spill_st']} / {r['spill_ld']} | {r['stack']} | {r['smem']} |")
        spilling = sum(1 for r in rows if r["spill_st"] or r["spill_ld"])
        summary.append(f"{arch}: {len(rows)} kernels in {len(files)} files; most registers "
                       f"{max(r['regs'] for r in rows)}; {sum(1 for r in rows if r['regs'] > 64)} "
                       f"use more than 64; {spilling} spill; most static shared memory "
                       f"{max(r['smem'] for r in rows)} B")
    print()
    print("\n".join(summary))


if __name__ == "__main__":
    main()
