"""The learning curves of a socioseg-mini run (docs/mini-curves.png) from its CSV logs.

Reads ``<run>/sam/metrics.csv`` (train-sam), ``<run>/sft/metrics.csv`` (the warm-up) and
``<run>/grpo/metrics.csv`` + ``validation.csv`` (GRPO) and draws four panels: SAM2's loss and
the IoU of its chosen mask, the warm-up's NLL, and GRPO's rewards and mask IoU per stage
(a moving average over ``--window`` steps, raw values faint). Needs matplotlib
(``pip install -e ".[docs]"``).

    python scripts/plot_mini.py runs/mini --out docs/mini-curves.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def read(path: Path) -> dict[str, np.ndarray]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no rows; is the run finished?")
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = [values[: i + 1].mean() for i in range(window - 1)]
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the --out folder of scripts/train_mini.py")
    parser.add_argument("--out", type=Path, default=Path("docs/mini-curves.png"))
    parser.add_argument("--window", type=int, default=10, help="GRPO moving-average steps")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sam, sft = read(args.run / "sam" / "metrics.csv"), read(args.run / "sft" / "metrics.csv")
    grpo = read(args.run / "grpo" / "metrics.csv")
    validation = args.run / "grpo" / "validation.csv"
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    ax = axes[0, 0]
    ax.plot(sam["step"], sam["loss"], label="loss (20 focal + dice + IoU MSE)")
    ax.plot(sam["step"], sam["miou"], label="IoU of the chosen mask (batch)")
    ax.set(title="1. train-sam: SAM2 on box (+ point) prompts", xlabel="step")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(sft["step"], sft["nll"], color="tab:purple")
    ax.set(title="2. sft: warm-up on teacher answers", xlabel="step", ylabel="token NLL")
    ax.set_yscale("log")
    for ax, what, label in (
        (axes[1, 0], "reward_total", "reward (format + accuracy + length)"),
        (axes[1, 1], "iou", "mask IoU of the rollouts"),
    ):
        for stage, color in (("stage1", "tab:blue"), ("stage2", "tab:orange")):
            values = grpo[f"{stage}/{what}"]
            ax.plot(grpo["step"], values, color=color, alpha=0.2)
            ax.plot(grpo["step"], smooth(values, args.window), color=color, label=stage)
        ax.set(title=f"3. train (GRPO): {label}", xlabel="step")
        ax.legend()
    if validation.is_file():
        val = read(validation)
        key = next((k for k in val if k.lower().endswith("final_giou")), None)
        if key is not None:
            axes[1, 1].plot(val["step"], val[key], "k^--", label=f"validation {key}")
            axes[1, 1].legend()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
