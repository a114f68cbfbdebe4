#!/usr/bin/env python3
"""Time to accuracy of LIBMF (the `libmf` Python package), as a peer of `sslf train`.

LIBMF's SGD reads every training entry once per iteration, so one iteration is one pass. The
iteration count is chosen on a validation hold-out (a seeded random `--valid-fraction` of the
training file, like sslf's `data.validation_fraction`; LIBMF's own draw of the same size, not
sslf's exact split), then the test RMSE of that run is reported.

Settings are LIBMF's command-line defaults (k = 8, L2 = 0.1 on P and Q, L1 = 0, η = 0.1): the
package's own defaults differ (L1 0.04, L2 0). Predictions are computed here from the learned
P and Q (the package's `predict` returns wrong values in version 0.9.2); rows LIBMF never saw
(NaN factors) are predicted by its global mean, as LIBMF does.

    pip install numpy libmf
    python3 benches/peers/libmf_tta.py --train ../shared/data/ml-100k/train.tsv \
        --test ../shared/data/ml-100k/test.tsv [--k 8] [--max-iters 60] [--repeats 3]

Prints one line per iteration count, then
`RESULT libmf k=K best_iters=N passes=N seconds=S (min, max) valid_rmse=V test_rmse=R`, seconds
being the median fit time of the chosen count over `--repeats` runs.
"""
import argparse
import statistics
import time

import numpy as np
from libmf import mf


def read(path):
    return np.loadtxt(path, dtype=np.float64, ndmin=2)[:, :3]


def rmse(model, data):
    p = np.asarray(model.p_factors(), dtype=np.float64)
    q = np.asarray(model.q_factors(), dtype=np.float64)
    u, i = data[:, 0].astype(np.int64), data[:, 1].astype(np.int64)
    pred = np.full(len(data), float(model.model.b))
    ok = (u < len(p)) & (i < len(q))
    dots = np.sum(p[u[ok]] * q[i[ok]], axis=1)
    known = np.isfinite(dots)
    idx = np.flatnonzero(ok)[known]
    pred[idx] = dots[known]
    return float(np.sqrt(np.mean((pred - data[:, 2]) ** 2)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--valid-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--l2", type=float, default=0.1)
    ap.add_argument("--max-iters", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    train, test = read(args.train), read(args.test)
    rng = np.random.default_rng(args.seed)
    mask = rng.random(len(train)) < args.valid_fraction
    fit_set, valid = np.ascontiguousarray(train[~mask]), train[mask]
    opts = dict(
        k=args.k,
        nr_threads=args.threads,
        quiet=True,
        lambda_p1=0.0,
        lambda_q1=0.0,
        lambda_p2=args.l2,
        lambda_q2=args.l2,
    )
    best = None
    for iters in range(1, args.max_iters + 1):
        m = mf.MF(nr_iters=iters, **opts)
        m.fit(fit_set.copy())
        v = rmse(m, valid)
        print(f"iters {iters:3d} valid_rmse {v:.5f}", flush=True)
        if best is None or v < best[1] - 1e-5:
            best = (iters, v)
    iters = best[0]
    times, test_rmse = [], None
    for _ in range(args.repeats):
        m = mf.MF(nr_iters=iters, **opts)
        t0 = time.perf_counter()
        m.fit(fit_set.copy())
        times.append(time.perf_counter() - t0)
        test_rmse = rmse(m, test)
    print(
        f"RESULT libmf k={args.k} best_iters={iters} passes={iters} "
        f"seconds={statistics.median(times):.3f} (min {min(times):.3f}, max {max(times):.3f}) "
        f"valid_rmse={best[1]:.5f} test_rmse={test_rmse:.5f}"
    )


if __name__ == "__main__":
    main()
