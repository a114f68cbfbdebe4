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
    ap.add_argument(
        "--target-valid",
        type=float,
        help="also report passes and seconds to the first epoch with validation RMSE ≤ this",
    )
    args = ap.parse_args()
    # A config may carry its own overrides: `file.json@KEY=VALUE@KEY=VALUE`.
    head = "| config | solver | best epoch | passes to best | seconds to best (median, min–max) | test RMSE |"
    rule = "| --- | --- | ---: | ---: | ---: | ---: |"
    if args.target_valid is not None:
        head += f" passes to valid ≤ {args.target_valid} | seconds to it (median, min–max) |"
        rule += " ---: | ---: |"
    print(head)
    print(rule)
    for spec in args.configs:
        cfg, *own = spec.split("@")
        runs, hits = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as out:
                cmd = [args.sslf, "train", "-c", cfg, "--output", out, "-q"]
                for s in args.set + own:
                    cmd += ["--set", s]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                with open(f"{out}/summary.json") as f:
                    runs.append(json.load(f))
                hit = None
                with open(f"{out}/metrics.jsonl") as f:
                    for line in f:
                        d = json.loads(line)
                        v = d.get("valid_rmse")
                        if args.target_valid is not None and v is not None and v <= args.target_valid:
                            hit = (d["passes"], d["elapsed_s"])
                            break
                hits.append(hit)
        s = runs[0]
        secs = [r["seconds_to_best"] for r in runs]
        test = s["test"]["rmse"] if s.get("test") else float("nan")
        row = (
            f"| {spec} | {s['solver']} | {s['best_epoch']} | {s['passes_to_best']} | "
            f"{statistics.median(secs):.2f} ({min(secs):.2f}–{max(secs):.2f}) | {test:.4f} |"
        )
        if args.target_valid is not None:
            if all(h is not None for h in hits):
                hs = [h[1] for h in hits]
                row += (
                    f" {hits[0][0]} | {statistics.median(hs):.2f} ({min(hs):.2f}–{max(hs):.2f}) |"
                )
            else:
                row += " not reached | – |"
        print(row)


if __name__ == "__main__":
    main()
