#!/usr/bin/env python3
"""Reading a rating file: `sslf prepare` and `sslf bench`'s `load` op against pandas, in one run.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/peers/load_pandas.py --file ratings.tsv --repeats 3
    python3 benches/peers/load_pandas.py --users 1000000 --items 20000 --nnz 20000000

Without --file it first writes the data with `sslf gen`. For each repeat, in turn:
- `sslf prepare` on a config naming the file (parse, id maps, duplicate check, test and
  validation splits, and the prepared file written), timed from outside as wall-clock seconds;
- pandas `read_csv` (C engine, tab-separated, no header) with the ids read as strings, then
  `factorize` on both id columns (what sslf does: ids keep their spelling);
- the same with integer ids (pandas' fastest path; sslf has no such shortcut to take, since a
  file's ids are only known to be integers once read).
Then `sslf bench` with only the `load` op, for the parse-and-split time without process start or
the write, and the cached reload. The last line is
`RESULT prepare_ratio_vs_pandas_str=<x> prepare_ratio_vs_pandas_int=<y> cached_load_s=<z>`,
ratios being pandas' median seconds over sslf's (above 1: sslf is faster).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd


def spread(xs):
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


def pandas_load(path, ids):
    t = time.perf_counter()
    dtype = {"r": "float32"}
    if ids == "str":
        dtype.update({"u": str, "i": str})
    df = pd.read_csv(
        path, sep="\t", header=None, names=["u", "i", "r"], dtype=dtype, engine="c"
    )
    users, _ = pd.factorize(df["u"])
    items, _ = pd.factorize(df["i"])
    dt = time.perf_counter() - t
    assert len(users) == len(items) == len(df)
    return dt, len(df)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", help="a user<TAB>item<TAB>rating file (default: sslf gen writes one)")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--nnz", type=int, default=20_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sslf", default="target/release/sslf")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sslf-load-peer-")
    path = a.file
    if path is None:
        path = os.path.join(tmp, "ratings.tsv")
        subprocess.run(
            [a.sslf, "gen", "--out", path, "--users", str(a.users), "--items", str(a.items),
             "--nnz", str(a.nnz), "--rank", "32"],
            check=True,
        )
    size = os.path.getsize(path)
    cfg = os.path.join(tmp, "load.json")
    with open(cfg, "w") as f:
        json.dump({"data": {"path": os.path.abspath(path), "test_fraction": 0.2,
                            "validation_fraction": 0.05}}, f)
    out = os.path.join(tmp, "prepared.safetensors")
    sslf_s, pd_str, pd_int = [], [], []
    n = None
    for r in range(a.repeats):
        t = time.perf_counter()
        p = subprocess.run([a.sslf, "prepare", "-c", cfg, "--out", out, "--quiet"],
                           check=True, capture_output=True, text=True)
        sslf_s.append(time.perf_counter() - t)
        m = re.search(r"prepared (\d+) entries", p.stdout)
        n = int(m.group(1))
        dt, rows = pandas_load(path, "str")
        pd_str.append(dt)
        dt, rows2 = pandas_load(path, "int")
        pd_int.append(dt)
        assert rows == rows2 == n, (rows, rows2, n)
        print(f"repeat {r + 1}: sslf prepare {sslf_s[-1]:.2f} s | pandas str {pd_str[-1]:.2f} s"
              f" | pandas int {pd_int[-1]:.2f} s", flush=True)
    bench_cfg = os.path.join(tmp, "bench.json")
    with open(bench_cfg, "w") as f:
        json.dump({"name": "load-peer", "data": {"path": os.path.abspath(path),
                   "test_fraction": 0.2, "validation_fraction": 0.05},
                   "ops": ["load"], "warmup": 1, "repeats": a.repeats,
                   "output": os.path.join(tmp, "bench.json.out")}, f)
    subprocess.run([a.sslf, "bench", "-c", bench_cfg], check=True, capture_output=True)
    with open(os.path.join(tmp, "bench.json.out")) as f:
        rows = {r["op"]: r for r in json.load(f)["rows"]}
    load, cached = rows["load"], rows["load_cached"]
    print(f"file: {path} ({size / 1e6:.0f} MB, {n} entries)")
    print("seconds, min / median / max:")
    print(f"  sslf prepare (wall, process included)  {spread(sslf_s)}")
    print(f"  sslf bench load (parse + split)        {load['min_ms'] / 1e3:.2f} / "
          f"{load['ms'] / 1e3:.2f} / {load['max_ms'] / 1e3:.2f}")
    print(f"  sslf bench load_cached                 {cached['min_ms'] / 1e3:.3f} / "
          f"{cached['ms'] / 1e3:.3f} / {cached['max_ms'] / 1e3:.3f}")
    print(f"  pandas read_csv + factorize, str ids   {spread(pd_str)}")
    print(f"  pandas read_csv + factorize, int ids   {spread(pd_int)}")
    rs = statistics.median(pd_str) / statistics.median(sslf_s)
    ri = statistics.median(pd_int) / statistics.median(sslf_s)
    print(f"RESULT prepare_ratio_vs_pandas_str={rs:.2f} prepare_ratio_vs_pandas_int={ri:.2f} "
          f"cached_load_s={cached['ms'] / 1e3:.3f}")


if __name__ == "__main__":
    sys.exit(main())
