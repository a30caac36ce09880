"""The learning curves of a socioseg-mini run (docs/mini-curves.png) from its CSV logs.

Reads what ``scripts/train_mini.py`` writes under its ``--out`` folder and draws one panel per
step of the curriculum that has a log: SAM2 (``sam/metrics.csv``: loss, IoU of the chosen
mask), phase A (``phase-a/metrics.csv``: answer NLL and the image-token labels;
``phase-a/gate.csv``: gate A's share of held-out questions with IoU > 0.5 and their mean
IoU), phases B and B2 (``phase-b/metrics.csv``, ``phase-b2/metrics.csv``), phase C
(``sft/metrics.csv``) and GRPO
(``grpo/metrics.csv`` + ``validation.csv``: mask IoU per stage). Noisy curves are smoothed
over ``--window`` logged rows, raw values faint. Needs matplotlib (``pip install -e ".[docs]"``).

    python scripts/plot_mini.py runs/mini --out docs/mini-curves.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

LABELS = ("nll", "aux_position", "aux_entity", "aux_attention", "aux_attention_first", "aux_query")


def read(path: Path) -> dict[str, np.ndarray] | None:
    """A CSV log as columns (None when there is no such file or it has no rows)."""
    if not path.is_file():
        return None
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = [values[: i + 1].mean() for i in range(window - 1)]
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def _curves(ax, log: dict[str, np.ndarray], keys, window: int, scale: str = "linear") -> None:
    for key in keys:
        if key in log:
            line = ax.plot(log["step"], log[key], alpha=0.2)[0]
            ax.plot(log["step"], smooth(log[key], window), color=line.get_color(), label=key)
    ax.set_yscale(scale)
    ax.legend(fontsize=8)


def panels(run: Path, window: int) -> list[tuple[str, callable]]:
    """(title, draw(ax)) for every step of ``run`` that has a log."""
    found = []
    sam = read(run / "sam" / "metrics.csv")
    if sam is not None:
        found.append(("SAM2 (train-sam)", lambda ax: _curves(ax, sam, ("loss", "miou"), window)))
    phase_a, gate_a = read(run / "phase-a" / "metrics.csv"), read(run / "phase-a" / "gate.csv")
    if phase_a is not None:

        def draw_a(ax):
            _curves(ax, phase_a, LABELS, 25, "log")
            if gate_a is not None:
                right = ax.twinx()
                right.plot(gate_a["step"], gate_a["iou_share"], "k^-", label="gate: IoU > 0.5")
                right.plot(gate_a["step"], gate_a["mean_iou"], "ks--", label="gate: mean IoU")
                right.axhline(0.5, color="k", lw=0.5)
                right.set_ylim(0, 1)
                right.legend(fontsize=8, loc="center right")

        found.append(("phase A: squares (losses; gate A)", draw_a))
    for folder, title in (
        ("phase-b", "phase B: stage 1, random tiles"),
        ("phase-b2", "phase B2: + first-digit labels"),
        ("sft", "phase C"),
    ):
        log = read(run / folder / "metrics.csv")
        if log is not None:
            found.append((title, lambda ax, log=log: _curves(ax, log, LABELS, window, "log")))
    grpo = read(run / "grpo" / "metrics.csv")
    if grpo is not None:
        validation = read(run / "grpo" / "validation.csv")

        def draw_grpo(ax):
            _curves(ax, grpo, ("stage1/iou", "stage2/iou"), window)
            if validation is not None:
                key = next((k for k in validation if k.lower().endswith("final_giou")), None)
                if key is not None:
                    ax.plot(validation["step"], validation[key], "k^--", label=key)
                    ax.legend(fontsize=8)

        found.append(("phase D: GRPO, rollout mask IoU", draw_grpo))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the --out folder of scripts/train_mini.py")
    parser.add_argument("--out", type=Path, default=Path("docs/mini-curves.png"))
    parser.add_argument("--window", type=int, default=10, help="moving-average rows")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = panels(args.run, args.window)
    if not found:
        raise SystemExit(f"{args.run}: no logs of scripts/train_mini.py there")
    columns = min(3, len(found))
    rows = -(-len(found) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(5.2 * columns, 3.8 * rows), constrained_layout=True, squeeze=False
    )
    for ax, (title, draw) in zip(axes.flat, found, strict=False):
        draw(ax)
        ax.set(title=title, xlabel="step")
    for ax in list(axes.flat)[len(found) :]:
        ax.set_visible(False)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
