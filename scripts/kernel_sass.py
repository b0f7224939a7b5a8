#!/usr/bin/env python3
"""What the tensor-core kernels issue per `mma.sync`, counted in their machine code (SASS) as
NVRTC compiles them for one architecture: no GPU needed. A kernel that issues many other
instructions per HMMA (address arithmetic, bounds tests, conversions, loads) is bound by
instruction issue long before the tensor cores are busy, so the count is a static measure of
how far a kernel is from their rate.

  python3 scripts/kernel_sass.py [--arch sm_90] [--file attention_mma ...] [--loops]

Needs libnvrtc (as scripts/kernel_resources.py finds it) and nvdisasm: on PATH, or from the
pip wheel `nvidia-cuda-nvdisasm` (`target/nvrtc-venv/bin/pip install nvidia-cuda-nvdisasm`).
For every kernel with an HMMA it prints the instructions of its main loop, the backward branch
whose body holds the most HMMAs: all of them, HMMA, the global and shared loads (LDS and ldmatrix's LDSM) and stores,
and instructions per HMMA. The loop is counted statically (once per iteration of the body as
written): an inner loop that the compiler kept (the last column counts them) is counted once,
not as often as it runs. --loops lists every loop.
"""
import argparse
import collections
import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_resources import compile_file, find_nvrtc  # noqa: E402


def find_nvdisasm():
    found = shutil.which("nvdisasm")
    if found:
        return found
    for p in glob.glob("target/nvrtc-venv/lib/python3*/site-packages/nvidia/*/bin/nvdisasm"):
        if not os.access(p, os.X_OK):
            os.chmod(p, 0o755)
        return p
    sys.exit("kernel_sass: no nvdisasm: target/nvrtc-venv/bin/pip install nvidia-cuda-nvdisasm "
             "(or put a CUDA toolkit's bin on PATH)")


def kernels_of(sass):
    """{kernel: (instructions, {label: index})} from nvdisasm's text."""
    out, kern = {}, None
    for line in sass.splitlines():
        m = re.match(r"\.text\.(\w+):", line)
        if m:
            kern = m.group(1)
            out[kern] = ([], {})
            continue
        if kern is None:
            continue
        m = re.match(r"(\.L_x_\d+):", line)
        if m:
            out[kern][1][m.group(1)] = len(out[kern][0])
            continue
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
        if m:
            out[kern][0].append(m.group(1))
    return out


def opcode(inst):
    return re.sub(r"^@!?U?P\w+\s+", "", inst).split()[0].split(".")[0]


def loops(insts, labels):
    """(start, end) of every backward branch's body."""
    found = []
    for i, inst in enumerate(insts):
        m = re.search(r"BRA\s+`\((\.L_x_\d+)\)", inst)
        if m and labels.get(m.group(1), len(insts)) <= i:
            found.append((labels[m.group(1)], i))
    return found


def row(kernel, body, inner):
    c = collections.Counter(opcode(i) for i in body)
    hmma = c["HMMA"]
    per = f"{len(body) / hmma:.1f}" if hmma else "-"
    return (f"| {kernel} | {len(body)} | {hmma} | {c['LDG']} | {c['LDS'] + c['LDSM']} | {c['STS']} | {c['STG']} "
            f"| {per} | {inner} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--file", action="append", help="kernel file stem (default: those with mma)")
    ap.add_argument("--loops", action="store_true", help="list every loop of every kernel")
    ap.add_argument("--lib", help="path of libnvrtc.so.13 (or .12)")
    args = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    lib = ctypes.CDLL(find_nvrtc(args.lib))
    nvdisasm = find_nvdisasm()
    files = [f[:-3] if f.endswith(".cu") else f for f in (args.file or [])] or sorted(os.path.basename(f)[:-3] for f in glob.glob("kernels/*_mma.cu"))
    print(f"{args.arch}: each kernel's main loop (the loop with the most HMMA), instructions per iteration\n")
    print("| kernel | instructions | HMMA | LDG | LDS | STS | STG | per HMMA | inner loops |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    listing = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in files:
            path = os.path.join(tmp, f"{name}.cubin")
            open(path, "wb").write(compile_file(lib, name, args.arch, cubin=True, who="kernel_sass")[1])
            sass = subprocess.run([nvdisasm, "-c", path], check=True, capture_output=True, text=True).stdout
            for kernel, (insts, labels) in sorted(kernels_of(sass).items()):
                found = loops(insts, labels)
                def inner(a, b):
                    return sum(1 for x, y in found if a <= x and y <= b and (x, y) != (a, b))

                with_mma = [(a, b) for a, b in found if any(opcode(i) == "HMMA" for i in insts[a:b + 1])]
                if with_mma:
                    # The main loop: most HMMA, then the smallest such body (the innermost).
                    a, b = min(with_mma, key=lambda ab: (-sum(opcode(i) == "HMMA" for i in insts[ab[0]:ab[1] + 1]),
                                                        ab[1] - ab[0]))
                    print(row(kernel, insts[a:b + 1], inner(a, b)))
                if args.loops:
                    listing += [row(f"{kernel} [{a}, {b}]", insts[a:b + 1], inner(a, b)) for a, b in found]
    if args.loops:
        print("\nEvery loop (start and end instruction):\n")
        print("| loop | instructions | HMMA | LDG | LDS | STS | STG | per HMMA | inner loops |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(listing))


if __name__ == "__main__":
    main()
