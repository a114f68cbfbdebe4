#!/usr/bin/env python3
"""The Gauss–Newton product of sslf against PyTorch formulations of it, on the same data.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/peers/gn_product_torch.py --users 1000000 --items 20000 --nnz 20000000 \\
        --rank 32 --item-exponent 0.5

It writes a synthetic data set with `sslf gen` (the degree exponents as given), times sslf's CPU
(and with --gpu its GPU) Gauss–Newton product on that file with `sslf bench`, times the same
product in PyTorch on the same file in three formulations, and prints sslf against the fastest:

- `naive`: per product, gather p_u, q_i, dp_u, dq_i for every entry, the per-entry dots, and two
  `index_add_` scatters over the whole entry set;
- `chunked`: the same in chunks of `--chunk` entries (131,072) into reused chunk buffers
  (`index_select(out=)`, `mul(out=)`, `sum(out=)`), so the temporaries stay small;
- `chunked+cached`: as `chunked`, with p_u and q_i gathered once per outer iteration into nnz×f
  buffers (they do not change between the products of one CG solve); per product only dp_u and
  dq_i are gathered. The gather is left out of the product's time, as an outer iteration
  amortises it over its CG iterations.

The product, for a direction v = (dP, dQ) at θ = (P, Q) with no biases and no ridge:
    s_ui = dp_u·q_i + p_u·dq_i,   (Gv)_P = Σ_i s_ui q_i,   (Gv)_Q = Σ_u s_ui p_u.

Every formulation is checked against `naive` before it is timed. Times are min / median / max
over the repeats. The last line is `RESULT cpu_ratio_vs_best=<x> copy_fraction=<y>`: the fastest
PyTorch median over sslf's CPU median, and sslf's share of the copy bandwidth `sslf bench`
measured in the same run.
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


def naive(u, i, P, Q, dP, dQ, **_):
    Pu, Qi = P[u], Q[i]
    s = (dP[u] * Qi).sum(1) + (Pu * dQ[i]).sum(1)
    outP = torch.zeros_like(P).index_add_(0, u, s[:, None] * Qi)
    outQ = torch.zeros_like(Q).index_add_(0, i, s[:, None] * Pu)
    return outP, outQ


class Chunked:
    """Chunked products with reused buffers; `cached` holds P[u] and Q[i] for the whole set."""

    def __init__(self, u, i, P, Q, chunk, cached):
        self.chunks = [(u[a:a + chunk], i[a:a + chunk], a) for a in range(0, len(u), chunk)]
        f = P.shape[1]
        self.buf = [torch.empty(chunk, f) for _ in range(4)]
        self.s = torch.empty(chunk)
        self.s2 = torch.empty(chunk)
        self.cached = (P[u], Q[i]) if cached else None

    def __call__(self, u, i, P, Q, dP, dQ):
        outP, outQ = torch.zeros_like(P), torch.zeros_like(Q)
        for uc, ic, a in self.chunks:
            n = len(uc)
            pu, qi, dpu, dqi = (b[:n] for b in self.buf)
            if self.cached is None:
                torch.index_select(P, 0, uc, out=pu)
                torch.index_select(Q, 0, ic, out=qi)
            else:
                pu, qi = self.cached[0][a:a + n], self.cached[1][a:a + n]
            torch.index_select(dP, 0, uc, out=dpu)
            torch.index_select(dQ, 0, ic, out=dqi)
            s, s2 = self.s[:n], self.s2[:n]
            torch.sum(dpu.mul_(qi), 1, out=s)
            torch.sum(dqi.mul_(pu), 1, out=s2)
            s.add_(s2)
            outP.index_add_(0, uc, torch.mul(qi, s[:, None], out=dpu))
            outQ.index_add_(0, ic, torch.mul(pu, s[:, None], out=dqi))
        return outP, outQ


def time_it(fn, args, repeats, warmup):
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times), statistics.median(times), max(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--nnz", type=int, default=2_000_000)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--user-exponent", type=float, default=0.5)
    ap.add_argument("--item-exponent", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=131_072)
    ap.add_argument("--sslf", default="target/release/sslf", help="path to the sslf binary")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both")
    ap.add_argument("--gpu", action="store_true", help="also time sslf's GPU backend")
    ap.add_argument("--tile-items", type=int, default=None,
                    help="sslf's cpu.tile_items (default: sslf's own; 0 untiled)")
    args = ap.parse_args()
    if not os.path.exists(args.sslf):
        sys.exit(f"{args.sslf}: not found (run `cargo build --release` first)")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.tsv")
        subprocess.run(
            [args.sslf, "gen", "--out", data, "--users", str(args.users), "--items",
             str(args.items), "--nnz", str(args.nnz), "--rank", "10",
             "--user-exponent", str(args.user_exponent),
             "--item-exponent", str(args.item_exponent)],
            check=True, stdout=subprocess.DEVNULL)
        backends = ["cpu", "gpu"] if args.gpu else ["cpu"]
        cfg = {
            "data": {"path": data, "format": "tsv", "test_fraction": 0.0,
                     "validation_fraction": 0.0},
            "rank": args.rank, "biases": False, "backends": backends,
            "ops": ["copy", "gn_product"], "repeats": args.repeats, "warmup": args.warmup,
            "threads": args.threads, "output": os.path.join(tmp, "bench.json"),
        }
        if args.tile_items is not None:
            cfg["cpu"] = {"tile_items": args.tile_items}
        cfg_path = os.path.join(tmp, "bench_config.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        subprocess.run([args.sslf, "bench", "-q", "-c", cfg_path], check=True,
                       stdout=subprocess.DEVNULL)
        with open(cfg["output"]) as f:
            rows = json.load(f)["rows"]
        # The same entries sslf read: the file's ids, made dense in order of first appearance as
        # sslf does (the product does not depend on the numbering).
        try:
            import pandas as pd
            triples = pd.read_csv(data, sep="\t", header=None, usecols=[0, 1],
                                  dtype=np.int64).to_numpy()
        except ImportError:
            triples = np.loadtxt(data, dtype=np.int64, usecols=(0, 1))
    uid = np.unique(triples[:, 0], return_inverse=True)[1]
    iid = np.unique(triples[:, 1], return_inverse=True)[1]
    u, i = torch.from_numpy(uid.astype(np.int64)), torch.from_numpy(iid.astype(np.int64))
    nnz = len(u)
    m, n = int(u.max()) + 1, int(i.max()) + 1

    g = torch.Generator().manual_seed(1)
    P, Q, dP, dQ = (torch.randn(r, args.rank, generator=g) * 0.1 for r in (m, n, m, n))
    operands = (u, i, P, Q, dP, dQ)
    formulations = {
        "naive": naive,
        "chunked": Chunked(u, i, P, Q, args.chunk, cached=False),
        "chunked+cached": Chunked(u, i, P, Q, args.chunk, cached=True),
    }
    want = naive(*operands)
    for name, fn in formulations.items():
        got = fn(*operands)
        for a, b in zip(got, want):
            if not torch.allclose(a, b, rtol=1e-3, atol=1e-4):
                sys.exit(f"{name}: differs from naive by {float((a - b).abs().max())}")
    torch_ms = {k: time_it(fn, operands, args.repeats, args.warmup)
                for k, fn in formulations.items()}

    def row(op, b):
        return next(r for r in rows if r["op"] == op and r["backend"] == b)

    print(f"Gauss–Newton product, {m} users × {n} items, {nnz} entries, rank {args.rank}, "
          f"degree exponents {args.user_exponent}/{args.item_exponent}, {args.threads} CPU "
          f"threads, torch {torch.__version__}")
    print(f"{'implementation':<26} {'min':>9} {'median':>9} {'max':>9} {'of copy':>8}")
    for b in backends:
        r = row("gn_product", b)
        frac = r.get("copy_fraction") or 0
        print(f"{'sslf ' + b:<26} {r['min_ms']:>9.1f} {r['ms']:>9.1f} {r['max_ms']:>9.1f} "
              f"{100 * frac:>7.0f}%")
    for k, (lo, med, hi) in torch_ms.items():
        print(f"{'pytorch cpu ' + k:<26} {lo:>9.1f} {med:>9.1f} {hi:>9.1f} {'-':>8}")
    best = min(torch_ms, key=lambda k: torch_ms[k][1])
    cpu = row("gn_product", "cpu")
    ratio = torch_ms[best][1] / cpu["ms"]
    print(f"fastest PyTorch: {best}; PyTorch median / sslf cpu median = {ratio:.2f}x "
          f"(above 1: sslf is faster)")
    print(f"RESULT cpu_ratio_vs_best={ratio:.2f} copy_fraction={cpu.get('copy_fraction') or 0:.2f}")


if __name__ == "__main__":
    main()
