#!/usr/bin/env python3
"""Does sharpness help the sparsest rows? Trains each method on the ml-100k training split (no
refit, so every model is the best-validation epoch of the same 95% of train) for several seeds,
predicts the test split with `sslf predict`, and prints test RMSE per bucket of user and of item
training degree: mean ± std over seeds per method, and each method's difference from the first,
paired by seed (mean ± standard error). Needs numpy and pandas.

    cargo build --release
    python3 benches/sam_by_degree.py      # slf, sslf (ascent, row ρ 0.0125), sslf-curvature ρ 0.1; seeds 1–5
    python3 benches/sam_by_degree.py --seeds 1 2 3 --method "row=configs/ml100k-sslf-curvature.json@solver.sam_scale=row@solver.rho=0.05"
"""
import argparse
import os
import subprocess
import tempfile

import numpy as np
import pandas as pd

DATA = "../shared/data/ml-100k"
METHODS = [
    "slf=configs/ml100k-slf.json",
    "sslf ascent row ρ 0.0125=configs/ml100k-sslf.json",
    "sslf curvature ρ 0.1=configs/ml100k-sslf-curvature.json",
]


def read(path, names):
    return pd.read_csv(path, sep="\t", header=None, usecols=range(len(names)), names=names)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--method", action="append", help="LABEL=CONFIG[@KEY=VALUE…] (repeatable)")
    ap.add_argument("--sslf", default="target/release/sslf")
    args = ap.parse_args()
    methods = args.method or METHODS
    train = read(f"{DATA}/train.tsv", ["u", "i", "r"])
    test = read(f"{DATA}/test.tsv", ["u", "i", "r"])
    deg = {"user": test.u.map(train.u.value_counts()).fillna(0),
           "item": test.i.map(train.i.value_counts()).fillna(0)}
    bins = {"user": [0, 20, 50, 100, 200, np.inf], "item": [-1, 10, 30, 100, 300, np.inf]}
    err = {}  # label -> seeds × test entries
    with tempfile.TemporaryDirectory() as tmp:
        for spec in methods:
            label, rest = spec.split("=", 1)
            config, *sets = rest.split("@")
            rows = []
            for seed in args.seeds:
                out = os.path.join(tmp, f"{len(err)}-{seed}")
                cmd = [args.sslf, "train", "-c", config, "-q", "--output", out,
                       "--set", f"train.seed={seed}", "--set", "train.refit=false"]
                for s in sets:
                    cmd += ["--set", s]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                pred = os.path.join(tmp, f"{len(err)}-{seed}.tsv")
                subprocess.run([args.sslf, "predict", "-m", os.path.join(out, "model.safetensors"),
                                "-p", f"{DATA}/test.tsv", "-o", pred], check=True)
                p = read(pred, ["u", "i", "p"])
                assert len(p) == len(test) and (p.u.values == test.u.values).all()
                rows.append(p.p.values - test.r.values)
            err[label] = np.array(rows)
    labels = list(err)
    base = labels[0]
    for side in ("user", "item"):
        cats = pd.cut(deg[side], bins[side])
        print(f"\nTest RMSE by {side} training degree ({len(args.seeds)} seeds):\n")
        print("| degree | entries | " + " | ".join(labels)
              + "".join(f" | {x} − {base}" for x in labels[1:]) + " |")
        print("| --- | ---: |" + " ---: |" * (2 * len(labels) - 1))
        for c in cats.cat.categories:
            m = (cats == c).values
            rmse = {k: np.sqrt((e[:, m] ** 2).mean(axis=1)) for k, e in err.items()}
            cells = [f"{rmse[k].mean():.4f} ± {rmse[k].std(ddof=1):.4f}" for k in labels]
            for k in labels[1:]:
                d = rmse[k] - rmse[base]
                cells.append(f"{d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f}")
            print(f"| {c} | {m.sum()} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
