#!/usr/bin/env python3
"""PyTorch's GFLOP/s on the GEMM shapes of benches/linear_shapes.rs (the linear layers of the
GPT-mini step), median of 40 timed calls after 0.2 s of warm-up, one JSON line per shape.

Usage: /tmp/tv/bin/python scripts/torch_linear_shapes.py [--threads N]
"""
import argparse
import json
import time

import torch

SHAPES = [
    ("fwd_qkv_x.Wt", 4096, 128, 384, False, True),
    ("fwd_fc1_x.Wt", 4096, 128, 512, False, True),
    ("fwd_fc2_x.Wt", 4096, 512, 128, False, True),
    ("dx_qkv_dy.W", 4096, 384, 128, False, False),
    ("dx_fc2_dy.W", 4096, 128, 512, False, False),
    ("dW_qkv_dyT.x", 384, 4096, 128, True, False),
    ("dW_fc2_dyT.x", 128, 4096, 512, True, False),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name, m, k, n, at, bt in SHAPES:
        a = torch.randn(k, m).t() if at else torch.randn(m, k)
        b = torch.randn(n, k).t() if bt else torch.randn(k, n)
        start = time.perf_counter()
        while time.perf_counter() - start < 0.2:
            a @ b
        times = []
        for _ in range(40):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        times.sort()
        gflops = 2 * m * k * n / times[len(times) // 2] / 1e9
        print(json.dumps({"bench": "torch_linear_shape", "shape": name, "threads": args.threads,
                          "gflops": round(gflops, 1)}))


if __name__ == "__main__":
    main()
