#!/usr/bin/env python3
"""Time to accuracy: runs `sslf train` on each config `--repeats` times and prints a Markdown table
of passes and seconds to the best validation epoch (median, min–max over the repeats) and the test
RMSE at that epoch. Passes and RMSE are deterministic; seconds are not.

    cargo build --release
    python3 benches/tta.py configs/ml100k-slf.json configs/ml100k-adam.json … [--repeats 3]
"""
import argparse
import json
import statistics
import subprocess
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sslf", default="target/release/sslf")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run")
    args = ap.parse_args()
    print("| config | solver | best epoch | passes to best | seconds to best (median, min–max) | test RMSE |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for cfg in args.configs:
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as out:
                cmd = [args.sslf, "train", "-c", cfg, "--output", out, "-q"]
                for s in args.set:
                    cmd += ["--set", s]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                with open(f"{out}/summary.json") as f:
                    runs.append(json.load(f))
        s = runs[0]
        secs = [r["seconds_to_best"] for r in runs]
        test = s["test"]["rmse"] if s.get("test") else float("nan")
        print(
            f"| {cfg} | {s['solver']} | {s['best_epoch']} | {s['passes_to_best']} | "
            f"{statistics.median(secs):.2f} ({min(secs):.2f}–{max(secs):.2f}) | {test:.4f} |"
        )


if __name__ == "__main__":
    main()
