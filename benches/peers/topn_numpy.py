#!/usr/bin/env python3
"""Every user's top-N with NumPy, against `sslf bench`'s `topn` op on the same model, in one run.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/peers/topn_numpy.py --users 1000000 --items 20000 --nnz 20000000 --rank 32 --top 10

It runs `sslf bench` with only the `topn` op on synthetic data of that shape; the op writes the
model it times (random factors and biases, the data's entries as each user's seen items). The
peer loads that model file and computes the same lists the strongest way we know in NumPy:
blocks of users, scores = P_block @ Q.T + c (one BLAS sgemm per block), the user's seen items set
to -inf, `argpartition` for the N best, then a sort of those N. It checks its lists against
sslf's on a sample of users, and prints both times and the ratio. Last line:
`RESULT topn_ratio_vs_numpy=<x>`.
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


def load_safetensors(path):
    """Tensors (as NumPy arrays) and metadata of a safetensors file, without the package."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = memoryview(data)[8 + n :]
    dtypes = {"F32": np.float32, "U32": np.uint32, "U64": np.uint64}
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return out, meta


def topn_numpy(P, Q, b, c, mu, ptr, seen, top, block):
    """Every user's `top` best unseen items: (items, scores), both shaped users × top."""
    m = P.shape[0]
    items = np.empty((m, top), dtype=np.int64)
    scores = np.empty((m, top), dtype=np.float32)
    QT = np.ascontiguousarray(Q.T)
    for s in range(0, m, block):
        e = min(m, s + block)
        S = P[s:e] @ QT
        S += c[None, :]
        S += (mu + b[s:e])[:, None]
        lo, hi = int(ptr[s]), int(ptr[e])
        rows = np.repeat(np.arange(e - s), np.diff(ptr[s : e + 1]).astype(np.int64))
        S[rows, seen[lo:hi].astype(np.int64)] = -np.inf
        # The N largest without a negated copy of S.
        part = np.argpartition(S, S.shape[1] - top, axis=1)[:, -top:]
        ps = np.take_along_axis(S, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        items[s:e] = np.take_along_axis(part, order, axis=1)
        scores[s:e] = np.take_along_axis(ps, order, axis=1)
    return items, scores


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--nnz", type=int, default=20_000_000)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before the repeats (both sides)")
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--sslf", default="target/release/sslf")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="sslf-topn-")
    model = os.path.join(tmp, "model.safetensors")
    out = os.path.join(tmp, "bench.json")
    synth = {"n_users": a.users, "n_items": a.items, "nnz": a.nnz, "rank": 10, "seed": 1}
    cmd = [
        a.sslf, "bench", "--quiet", "--json", out,
        "--set", f"data.synthetic={json.dumps(synth)}",
        "--set", 'ops=["topn"]', "--set", "backends=[\"cpu\"]",
        "--set", f"rank={a.rank}", "--set", f"top_n={a.top}",
        "--set", f"repeats={a.repeats}", "--set", f"warmup={a.warmup}",
        "--set", f"topn_model={json.dumps(model)}",
    ]
    print("$", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    row = [r for r in json.load(open(out))["rows"] if r["op"] == "topn"][0]
    sslf_s = [row["min_ms"] / 1e3, row["ms"] / 1e3, row["max_ms"] / 1e3]

    t, meta = load_safetensors(model)
    P, Q, b, c = t["P"], t["Q"], t["b"], t["c"]
    mu = np.float32(float(meta["mu"]))
    ptr, seen = t["seen_ptr"], t["seen_items"]
    times = []
    for k in range(a.warmup + a.repeats):
        s = time.perf_counter()
        items, scores = topn_numpy(P, Q, b, c, mu, ptr, seen, a.top, a.block)
        if k >= a.warmup:
            times.append(time.perf_counter() - s)

    # sslf's lists for a sample of users, to check both compute the same thing.
    users_file = os.path.join(tmp, "who.txt")
    sample = list(range(0, a.users, max(1, a.users // 200)))
    with open(users_file, "w") as f:
        f.write("\n".join(str(u) for u in sample))
    recs = subprocess.run(
        [a.sslf, "recommend", "-m", model, "--users", users_file, "-n", str(a.top)],
        check=True, capture_output=True, text=True,
    ).stdout
    got = {}
    for line in recs.splitlines():
        u, i, _ = line.split("\t")
        got.setdefault(int(u), []).append(int(i))
    agree = sum(len(set(got[u]) & set(items[u].tolist())) for u in sample) / (a.top * len(sample))

    try:  # which BLAS ran, and on how many threads
        import threadpoolctl

        blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    except ImportError:
        blas = "unknown (pip install threadpoolctl to see)"
    np_s = [min(times), statistics.median(times), max(times)]
    print(f"shape: {a.users} users × {a.items} items, rank {a.rank}, top {a.top}; seen entries {len(seen)}")
    print(f"numpy ({np.__version__}, BLAS {blas}): min {np_s[0]:.2f} s, median {np_s[1]:.2f} s, max {np_s[2]:.2f} s")
    print(f"sslf topn (cpu): min {sslf_s[0]:.2f} s, median {sslf_s[1]:.2f} s, max {sslf_s[2]:.2f} s "
          f"({row['users_per_s']:.0f} users/s, {row['gflop_per_s']:.1f} GFLOP/s, "
          f"GEMM-only share {100 * row['gemm_fraction']:.0f}%)")
    print(f"agreement of the lists on {len(sample)} users: {100 * agree:.1f}%")
    print(f"RESULT topn_ratio_vs_numpy={np_s[1] / sslf_s[1]:.2f}")


if __name__ == "__main__":
    main()
