#!/usr/bin/env python3
"""The reference workloads of shared/README.md on a GPU in PyTorch eager, for comparing with
`selfsup bench <workload> --device cuda` in the same run (scripts/gpu_bench.sh alternates them).

Prints one JSON line per measurement, with the same keys as `selfsup bench`. Timings wait for
the GPU (torch.cuda.synchronize) after each repetition; medians over repetitions after warm-up.
TF32 is off unless --tf32, so f32 GEMMs are compared with f32 GEMMs. `sgemm --precision bf16`
multiplies bf16 tensors (f32 accumulation), the matmul peak the MFU of `gpt2` is measured
against; `gpt2` is GPT-2 small (12 layers, 12 heads, d=768, context 1024, vocab 50304, tied
head, GELU's tanh form) trained under bf16 autocast with AdamW.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sync():
    """Waits for the GPU (nothing to wait for in a `--device cpu` dry run)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def profile(args, workload, step, **tags):
    """With --profile: one more `step` under torch.profiler, printed as a `gpu-profile` line
    (device time by kernel, longest first), the same shape as `selfsup bench --profile`'s."""
    if not args.profile:
        return
    try:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile
        # Device kernels; in a `--device cpu` dry run, the CPU's operators instead.
        on_gpu = torch.cuda.is_available()
        sync()
        with torch_profile(activities=[ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU]) as prof:
            step()
            sync()
        rows = []
        for e in prof.key_averages():
            if on_gpu:
                us = getattr(e, "self_device_time_total", None)
                if us is None:
                    us = getattr(e, "self_cuda_time_total", 0)
            else:
                us = e.self_cpu_time_total
            kind = str(getattr(e, "device_type", "CUDA"))
            if us > 0 and ("CUDA" in kind or not on_gpu):
                rows.append((us / 1e3, e.count, e.key))
        rows.sort(reverse=True)
        total = sum(r[0] for r in rows)
        print(json.dumps({"bench": "gpu-profile", "engine": "torch", "workload": workload, **tags, "device_ms": round(total, 3),
                          "distinct_kernels": len(rows), "launches": sum(r[1] for r in rows),
                          "kernels": [{"name": k[:160], "calls": c, "ms": round(ms, 3), "share": round(ms / max(total, 1e-12), 3)}
                                      for ms, c, k in rows[:30]],
                          "other_ms": round(sum(r[0] for r in rows[30:]), 3)}))
    except Exception as e:  # the profile is an extra; the measurement above stands
        print(json.dumps({"bench": "gpu-profile", "engine": "torch", "workload": workload, "error": repr(e)[:300]}))


def matmul_gflops(n, dtype, reps, dev):
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    t = timed(lambda: a @ b, reps, 3)
    return statistics.median(2 * n**3 / s / 1e9 for s in t), len(t)


def sgemm(args, dev):
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    for n in args.sizes:
        gf, reps = matmul_gflops(n, dtype, args.reps * 5, dev)
        print(json.dumps({"bench": "sgemm", "engine": "torch", "device": str(dev), "precision": args.precision, "n": n, "reps": reps, "gflops": round(gf, 1)}))


def small_cnn():
    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(1, 32, 1), *block(32, 64, 2), *block(64, 128, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.short(x))


def resnet18(cin=1):
    """The CIFAR ResNet-18 (3x3 stem, stride 1, no max-pool), 512-d pooled features."""
    layers = [nn.Conv2d(cin, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    c = 64
    for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [BasicBlock(c, width, stride), BasicBlock(width, width, 1)]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def nt_xent(z, t):
    z = F.normalize(z, dim=-1)
    m = z.shape[0]
    n = m // 2
    sim = z @ z.t() / t
    sim = sim.masked_fill(torch.eye(m, dtype=torch.bool, device=z.device), float("-inf"))
    target = (torch.arange(m, device=z.device) + n) % m
    return F.cross_entropy(sim, target)


def simclr(args, dev):
    enc = (resnet18() if args.backbone == "resnet18" else small_cnn()).to(dev)
    feat = 512 if args.backbone == "resnet18" else 128
    head = nn.Sequential(nn.Linear(feat, 128), nn.ReLU(), nn.Linear(128, 64)).to(dev)
    opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr=1e-3)
    b = args.simclr_batch
    v1 = torch.randn(b, 1, 28, 28, device=dev)
    v2 = torch.randn(b, 1, 28, 28, device=dev)
    last = [0.0]

    # --precision bf16: convolutions and linears under bf16 autocast (BatchNorm and the loss in
    # f32), against `selfsup bench simclr-step --precision bf16`.
    autocast = args.precision == "bf16"

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            z = head(enc(torch.cat([v1, v2])))
        loss = nt_xent(z.float(), 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last[0] = loss.detach()

    t = timed(step, args.reps, 3)
    s = statistics.median(t)
    print(json.dumps({"bench": "simclr-step", "backbone": args.backbone, "engine": "torch", "device": str(dev), "precision": args.precision,
                      "batch_images": b, "reps": len(t),
                      "step_s": round(s, 5), "img_per_s": round(b / s), "last_loss": float(last[0])}))
    profile(args, "simclr-step", step, backbone=args.backbone, batch_images=b, precision=args.precision)


class Block(nn.Module):
    def __init__(self, d, h, gelu="none"):
        super().__init__()
        self.h, self.gelu = h, gelu
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate=self.gelu))


class Gpt(nn.Module):
    def __init__(self, vocab, ctx, d, h, layers, tied=False, gelu="none"):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, h, gelu) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)
        if tied:
            nn.init.normal_(self.tok.weight, std=0.02)
            self.head.weight = self.tok.weight

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def gpt(args, dev):
    vocab, ctx, d, h, layers, b = 96, 128, 128, 4, 4, 32
    model = Gpt(vocab, ctx, d, h, layers).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    ids = torch.randint(0, vocab, (b, ctx + 1), device=dev)
    x, y = ids[:, :-1], ids[:, 1:].reshape(-1)
    last = [0.0]

    def step():
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last[0] = loss.detach()

    t = timed(step, args.reps, 3)
    s = statistics.median(t)
    print(json.dumps({"bench": "gpt-step", "engine": "torch", "device": str(dev), "params": sum(p.numel() for p in model.parameters()),
                      "tokens_per_step": b * ctx, "reps": len(t), "step_s": round(s, 5), "tok_per_s": round(b * ctx / s),
                      "last_loss": float(last[0])}))


def gpt2(args, dev):
    """GPT-2 small under bf16 autocast: tokens/s and MFU against the bf16 matmul peak."""
    vocab, ctx, d, h, layers, b = 50304, 1024, 768, 12, 12, args.gpt2_batch
    # GELU's tanh form, as GPT-2 defines it (and `selfsup`'s gpt2 model).
    model = Gpt(vocab, ctx, d, h, layers, tied=True, gelu="tanh").to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    ids = torch.randint(0, vocab, (b, ctx + 1), device=dev)
    x, y = ids[:, :-1], ids[:, 1:].reshape(-1)
    last = [0.0]

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).reshape(-1, vocab).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last[0] = loss.detach()

    t = timed(step, args.reps, 3)
    s = statistics.median(t)
    params = sum(p.numel() for p in model.parameters())
    flops = 6 * params + 12 * layers * d * ctx
    achieved = b * ctx / s * flops / 1e9
    # The better of n = 4096 and 8192, as `selfsup bench gpt-step --model gpt2` measures it.
    peak = max(matmul_gflops(n, torch.bfloat16, 10, dev)[0] for n in (4096, 8192))
    print(json.dumps({"bench": "gpt-step", "model": "gpt2", "engine": "torch", "device": str(dev), "precision": "bf16-autocast",
                      "params": params, "batch": b, "tokens_per_step": b * ctx, "reps": len(t), "step_s": round(s, 5),
                      "tok_per_s": round(b * ctx / s), "model_gflop_per_token": round(flops / 1e9, 3),
                      "achieved_gflops": round(achieved), "matmul_peak_gflops": round(peak), "mfu": round(achieved / peak, 3),
                      "last_loss": float(last[0])}))
    profile(args, "gpt-step", step, model="gpt2")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["sgemm", "simclr", "gpt", "gpt2", "all"])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--simclr-batch", type=int, default=256)
    ap.add_argument("--backbone", choices=["small-cnn", "resnet18"], default="small-cnn")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--precision", choices=["f32", "tf32", "bf16"], default="f32")
    ap.add_argument("--gpt2-batch", type=int, default=8)
    ap.add_argument("--profile", action="store_true", help="also print a gpu-profile line (one step under torch.profiler)")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to dry-run this script where no GPU is")
    args = ap.parse_args()
    args.tf32 = args.tf32 or args.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    dev = torch.device(args.device)
    for name, fn in [("sgemm", sgemm), ("simclr", simclr), ("gpt", gpt), ("gpt2", gpt2)]:
        if args.what in (name, "all"):
            fn(args, dev)


if __name__ == "__main__":
    main()
