#!/usr/bin/env python3
"""Turns the JSON lines of `bash scripts/gpu_bench.sh run` ($OUT/bench.jsonl) into the tables
docs/gpu.md records: per workload, selfsup's and PyTorch's medians over the rounds and their
ratio (higher is better for selfsup), GPT-2's MFU, and the ten longest kernels of each
engine's `gpu-profile` line (the last round's).

Usage: python3 scripts/gpu_table.py bench.jsonl [--top 10]
Standard library only; lines that are not JSON (or are failures) are counted and skipped.
"""
import argparse
import json
import statistics
from collections import defaultdict


def key(row):
    """The workload a measurement line belongs to, the same for both engines."""
    b = row.get("bench")
    if b == "sgemm":
        return ("sgemm", row.get("precision", "f32"), "n=%s" % row.get("n"))
    if b == "simclr-step":
        prec = row.get("precision", "f32")
        batch = "batch %s" % row.get("batch_images")
        batch = batch if prec == "f32" else batch + " " + prec
        # Our rows with the convolution's single-GEMM arrangement (--fusion composed) apart.
        if row.get("fusion", "fused") != "fused":
            batch += ", composed"
        # And those with the implicit-GEMM convolution (--conv implicit).
        if row.get("conv", "im2col") != "im2col":
            batch += ", " + row["conv"]
        return ("simclr-step", row.get("backbone", "small-cnn"), batch)
    if b == "gpt-step":
        model = row.get("model", "mini")
        attention = row.get("attention", "fused") if row.get("engine") != "torch" else "sdpa"
        # Our rows with the MLP and head fusions off (--fusion composed) are a workload apart.
        if row.get("fusion", "fused") != "fused":
            attention += ", unfused"
        return ("gpt-step", model, attention)
    return None


# The throughput figure of each workload (higher is better).
RATE = {"sgemm": "gflops", "simclr-step": "img_per_s", "gpt-step": "tok_per_s"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    rates = defaultdict(lambda: {"selfsup": [], "torch": []})
    mfu = defaultdict(list)
    profiles = []
    skipped = 0
    with open(args.jsonl) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            engine = row.get("engine", "selfsup")
            if row.get("failed") or row.get("error"):
                skipped += 1
                continue
            if row.get("bench") == "gpu-profile":
                profiles.append(row)
                continue
            k = key(row)
            if k is None:
                continue
            rate = row.get(RATE[k[0]])
            if rate is None:
                continue
            # PyTorch's GPT lines carry no attention variant: they pair with our fused one.
            if engine == "torch" and k[0] == "gpt-step":
                k = (k[0], k[1], "fused")
            rates[k][engine].append(float(rate))
            if "mfu" in row:
                mfu[(k, engine)].append(float(row["mfu"]))

    print("| workload | selfsup | PyTorch | ratio | rounds |")
    print("| --- | --- | --- | --- | --- |")
    for k in sorted(rates):
        ours, theirs = rates[k]["selfsup"], rates[k]["torch"]
        unit = RATE[k[0]]
        o = statistics.median(ours) if ours else None
        t = statistics.median(theirs) if theirs else None
        ratio = "%.2f" % (o / t) if o and t else "-"
        fmt = lambda v: "-" if v is None else ("%.1f" % v if v < 1000 else "{:,.0f}".format(v))
        extra = ""
        if (k, "selfsup") in mfu or (k, "torch") in mfu:
            m = lambda e: "%.3f" % statistics.median(mfu[(k, e)]) if mfu.get((k, e)) else "-"
            extra = " (MFU %s vs %s)" % (m("selfsup"), m("torch"))
        print("| %s %s | %s | %s | **%s**%s | %d / %d |" % (" ".join(k), unit, fmt(o), fmt(t), ratio, extra,
                                                         len(ours), len(theirs)))
    # One profile per engine and workload: the last round's.
    last = {}
    for p in profiles:
        if p.get("workload") == "gpt-step":
            what = p.get("workload"), p.get("model")
        else:
            prec = p.get("precision") or "f32"
            what = p.get("workload"), p.get("backbone") + ("" if prec == "f32" else " " + prec)
        if p.get("fusion", "fused") != "fused":
            what = what[0], what[1] + ", " + p["fusion"]
        if p.get("conv", "im2col") != "im2col":
            what = what[0], what[1] + ", " + p["conv"]
        last[(p.get("engine", "selfsup"), what)] = p
    for (engine, what), p in sorted(last.items()):
        print()
        queued = p.get("host_queue_ms")
        host = "" if queued is None else ", host queued the step in %.3f ms" % queued
        # Ours spans the step (idle gaps charged to the kernel before them); torch.profiler's
        # sums kernel durations.
        measure = "kernel time" if engine == "torch" else "device span"
        print("%s, %s %s: %s %.3f ms over %s launches of %s kernels%s" % (
            engine, what[0], what[1], measure, p.get("device_ms", 0.0), p.get("launches"), p.get("distinct_kernels"), host))
        print()
        print("| kernel | calls | ms | share |")
        print("| --- | --- | --- | --- |")
        for kern in p.get("kernels", [])[: args.top]:
            print("| `%s` | %d | %.3f | %.1f%% |" % (kern["name"][:90], kern["calls"], kern["ms"], 100 * kern["share"]))
    if skipped:
        print()
        print("(%d lines skipped: not JSON, failed, or errors)" % skipped)


if __name__ == "__main__":
    main()
