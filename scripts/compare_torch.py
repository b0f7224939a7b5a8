#!/usr/bin/env python3
"""Alternates `selfsup bench` and PyTorch's reference (../shared/peers/torch_reference.py) on
the same workloads, several rounds, and prints per-round figures and the median ratio.

Usage (from the repository root, after `cargo build --release`; PyTorch in a scratch venv):
  python3 scripts/compare_torch.py --python /tmp/tv/bin/python --rounds 5 sgemm simclr gpt
  python3 scripts/compare_torch.py --python /tmp/tv/bin/python --threads 1 sgemm

Peak memory is each process's maximum resident set (GNU time's %M), data loading included.
Ratios are ours / PyTorch's throughput (higher is better), computed per round from runs made
back to back, then the median over rounds: the machine's speed drifts between runs, so only
figures from one round are compared with each other. Standard library only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SELFSUP = os.path.join(ROOT, "target", "release", "selfsup")
TORCH_REF = os.path.join(ROOT, "..", "shared", "peers", "torch_reference.py")


LAST_RSS_MB = [0.0]


def json_lines(cmd):
    """Runs `cmd` under /usr/bin/time (peak RSS of the whole process, in LAST_RSS_MB) and
    returns its JSON stdout lines."""
    timed = ["/usr/bin/time", "-f", "MAXRSS_KB=%M"] + cmd if os.path.exists("/usr/bin/time") else cmd
    out = subprocess.run(timed, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-400:]}")
    LAST_RSS_MB[0] = 0.0
    for line in out.stderr.splitlines():
        if line.startswith("MAXRSS_KB="):
            LAST_RSS_MB[0] = int(line.split("=")[1]) / 1024
    rows = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def ours(workload, threads):
    name = {"sgemm": "sgemm", "simclr": "simclr-step", "gpt": "gpt-step"}[workload]
    rows = json_lines([SELFSUP, "bench", name, "--threads", str(threads)])
    if workload == "sgemm":
        return {r["n"]: r["gflops"] for r in rows if r.get("bench") == "sgemm"}
    key = "img_per_s" if workload == "simclr" else "tok_per_s"
    return {workload: r[key] for r in rows if r.get("bench") == name}


def torch(python, workload, threads):
    rows = json_lines([python, TORCH_REF, workload, "--threads", str(threads)])
    if workload == "sgemm":
        return {r["n"]: r["gflops_median"] for r in rows if r.get("bench") == "torch_sgemm"}
    if workload == "simclr":
        return {workload: r["img_per_s_median"] for r in rows
                if r.get("bench") == "torch_simclr_pure_step"}
    # gpt: the scaled-dot-product-attention variant is the reference figure.
    sdpa = [r["tok_per_s_median"] for r in rows
            if r.get("bench") == "torch_gpt_step" and r.get("attention") == "sdpa"]
    return {workload: sdpa[0]} if sdpa else {}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workloads", nargs="+", choices=["sgemm", "simclr", "gpt"])
    ap.add_argument("--python", required=True, help="python with torch installed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for w in args.workloads:
        per_key = {}
        rss = []
        for r in range(args.rounds):
            a = ours(w, args.threads)
            ra = LAST_RSS_MB[0]
            b = torch(args.python, w, args.threads)
            rss.append((ra, LAST_RSS_MB[0]))
            for k in a:
                if k in b:
                    per_key.setdefault(k, []).append((a[k], b[k]))
                    print(json.dumps({"workload": w, "key": k, "round": r + 1,
                                      "ours": a[k], "torch": b[k],
                                      "ratio": round(a[k] / b[k], 3)}), flush=True)
        for k, pairs in per_key.items():
            ratios = [x / y for x, y in pairs]
            print(json.dumps({
                "workload": w, "key": k, "threads": args.threads, "rounds": len(pairs),
                "ours_median": statistics.median(x for x, _ in pairs),
                "torch_median": statistics.median(y for _, y in pairs),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                "summary": True}), flush=True)
        print(json.dumps({
            "workload": w, "threads": args.threads,
            "ours_peak_rss_mb": round(statistics.median(x for x, _ in rss)),
            "torch_peak_rss_mb": round(statistics.median(y for _, y in rss)),
            "note": "peak RSS of the whole process (data loading included), median over rounds",
            "summary": True}), flush=True)


if __name__ == "__main__":
    main()
