#!/usr/bin/python3
"""Plots a `lacuna bench sweep --csv` file: speedup over oneDNN dense bf16
versus sparsity, one line per batch size, one panel per shape x dtype, for the
planner's choice (format "auto"). Run with Debian's /usr/bin/python3
(python3-matplotlib)."""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(csv_path, png_path):
    rows = [r for r in csv.DictReader(open(csv_path)) if r["format"] == "auto"]
    if not rows:
        sys.exit(f"{csv_path}: no planner ('auto') rows to plot")
    panels = sorted({(r["shape"], r["dtype"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (shape, dtype) in zip(axes[0], panels):
        lines = defaultdict(list)
        for r in rows:
            if (r["shape"], r["dtype"]) == (shape, dtype):
                lines[int(r["batch"])].append((float(r["sparsity"]), float(r["speedup_vs_dense"])))
        for batch in sorted(lines):
            pts = sorted(lines[batch])
            ax.plot([100 * s for s, _ in pts], [v for _, v in pts], marker="o", label=f"batch {batch}")
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(f"{shape} {dtype} weights")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("speedup over oneDNN dense bf16")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot-sweep.py SWEEP.csv OUT.png")
    main(sys.argv[1], sys.argv[2])
