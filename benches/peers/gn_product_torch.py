#!/usr/bin/env python3
"""The Gauss–Newton product of sslf, written in PyTorch, timed on the same data as `sslf bench`.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/peers/gn_product_torch.py --users 1000000 --items 20000 --nnz 20000000 --rank 32

It writes a synthetic data set with `sslf gen`, times sslf's CPU (and, when one is present, GPU)
Gauss–Newton product with `sslf bench`, times the same product in PyTorch with index_add on the CPU
(and on CUDA when present), and prints the ratios in one table.

The product, for a direction v = (dP, dQ) at θ = (P, Q) with no biases and no ridge:
    s_ui = dp_u·q_i + p_u·dq_i,   (Gv)_P = Σ_i s_ui q_i,   (Gv)_Q = Σ_u s_ui p_u.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def gn_product(u, i, P, Q, dP, dQ):
    """One Gauss–Newton product: two gathers, a per-entry dot, two index_add scatters."""
    Pu, Qi = P[u], Q[i]
    s = (dP[u] * Qi).sum(1) + (Pu * dQ[i]).sum(1)
    outP = torch.zeros_like(P).index_add_(0, u, s[:, None] * Qi)
    outQ = torch.zeros_like(Q).index_add_(0, i, s[:, None] * Pu)
    return outP, outQ


def time_torch(u, i, m, n, rank, device, repeats, warmup):
    g = torch.Generator().manual_seed(1)
    P, Q, dP, dQ = (torch.randn(r, rank, generator=g) * 0.1 for r in (m, n, m, n))
    u, i, P, Q, dP, dQ = (t.to(device) for t in (u, i, P, Q, dP, dQ))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        gn_product(u, i, P, Q, dP, dQ)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gn_product(u, i, P, Q, dP, dQ)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--nnz", type=int, default=2_000_000)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sslf", default="target/release/sslf", help="path to the sslf binary")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both")
    ap.add_argument("--gpu", action="store_true", help="also time sslf's GPU backend")
    args = ap.parse_args()
    if not os.path.exists(args.sslf):
        sys.exit(f"{args.sslf}: not found (run `cargo build --release` first)")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.tsv")
        subprocess.run(
            [args.sslf, "gen", "--out", data, "--users", str(args.users), "--items",
             str(args.items), "--nnz", str(args.nnz), "--rank", "10"],
            check=True, stdout=subprocess.DEVNULL)
        triples = np.fromfile(data, dtype=np.float64, sep=" ").reshape(-1, 3)
        u = torch.from_numpy(triples[:, 0].astype(np.int64))
        i = torch.from_numpy(triples[:, 1].astype(np.int64))
        nnz = len(u)
        m, n = int(u.max()) + 1, int(i.max()) + 1

        backends = ["cpu", "gpu"] if args.gpu else ["cpu"]
        cfg = {
            "data": {"path": data, "format": "tsv"},
            "rank": args.rank, "biases": False, "backends": backends,
            "ops": ["copy", "gn_product"], "repeats": args.repeats, "warmup": args.warmup,
            "threads": args.threads, "output": os.path.join(tmp, "bench.json"),
        }
        cfg_path = os.path.join(tmp, "bench_config.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        subprocess.run([args.sslf, "bench", "-q", "-c", cfg_path], check=True,
                       stdout=subprocess.DEVNULL)
        with open(cfg["output"]) as f:
            rows = json.load(f)["rows"]

    sslf_ms = {r["backend"]: r["ms"] for r in rows if r["op"] == "gn_product"}
    sslf_frac = {r["backend"]: r["copy_fraction"] for r in rows if r["op"] == "gn_product"}
    torch_ms = {"cpu": time_torch(u, i, m, n, args.rank, "cpu", args.repeats, args.warmup)}
    if torch.cuda.is_available():
        torch_ms["cuda"] = time_torch(u, i, m, n, args.rank, "cuda", args.repeats, args.warmup)

    print(f"Gauss–Newton product, {m} users × {n} items, {nnz} entries, rank {args.rank}, "
          f"{args.threads} CPU threads, torch {torch.__version__}")
    print(f"{'implementation':<22} {'ms':>10} {'of copy BW':>11}")
    for b, ms in sslf_ms.items():
        print(f"{'sslf ' + b:<22} {ms:>10.2f} {100 * (sslf_frac[b] or 0):>10.0f}%")
    for d, ms in torch_ms.items():
        print(f"{'pytorch ' + d:<22} {ms:>10.2f} {'-':>11}")
    print("ratios (PyTorch time / sslf time; above 1 means sslf is faster):")
    print(f"  cpu: sslf cpu vs pytorch cpu: {torch_ms['cpu'] / sslf_ms['cpu']:.2f}x")
    if "cuda" in torch_ms and "gpu" in sslf_ms:
        print(f"  gpu: sslf gpu vs pytorch cuda: {torch_ms['cuda'] / sslf_ms['gpu']:.2f}x")


if __name__ == "__main__":
    main()
