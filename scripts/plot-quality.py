#!/usr/bin/python3
"""Plots a `lacuna bench quality --csv` file: held-out perplexity versus
sparsity (left) beside decode speedup over dense bf16 versus sparsity
(right), one line per pruning method and dtype; the unpruned model of each
dtype starts every line. Run with Debian's /usr/bin/python3 (python3-matplotlib)."""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(csv_path, png_path):
    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        sys.exit(f"{csv_path}: no points to plot")
    unpruned = {r["dtype"]: r for r in rows if r["prune"] == "none"}
    lines = defaultdict(list)
    for r in rows:
        if r["prune"] != "none":
            lines[(r["prune"], r["dtype"])].append(r)
    fig, (ppl_ax, speed_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (prune, dtype), points in sorted(lines.items()):
        if dtype in unpruned:
            points = [unpruned[dtype]] + points
        points.sort(key=lambda r: float(r["sparsity"]))
        x = [100 * float(r["sparsity"]) for r in points]
        style = dict(marker="o", linestyle="-" if dtype == "bf16" else "--", label=f"{prune} {dtype}")
        ppl_ax.plot(x, [float(r["perplexity"]) for r in points], **style)
        speed_ax.plot(x, [float(r["speedup_vs_dense_bf16"]) for r in points], **style)
    ppl_ax.set_yscale("log")
    ppl_ax.set_xlabel("sparsity (%)")
    ppl_ax.set_ylabel("held-out perplexity (log scale)")
    ppl_ax.set_title("quality")
    speed_ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    speed_ax.set_xlabel("sparsity (%)")
    speed_ax.set_ylabel("decode speedup over dense bf16 (batch 1)")
    speed_ax.set_title("speed")
    for ax in (ppl_ax, speed_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot-quality.py QUALITY.csv OUT.png")
    main(sys.argv[1], sys.argv[2])
