"""Throughput of the evaluation metrics on SocioSeg-sized masks.

Scores 4,000 random 768 x 768 prediction / GT pairs (a few elliptical blobs each, the
prediction a jittered copy of the GT plus a stray blob now and then) with
:class:`socioseg.metrics.SegmentationScores` and reports masks per second. Only scoring is
timed; drawing the masks is not.

    python benchmarks/bench_metrics.py [--pairs 4000] [--size 768] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from socioseg.metrics import SegmentationScores

LEVELS = ("socio-name", "socio-class", "socio-function")


def _draw(rng: np.random.Generator, size: int, blobs: np.ndarray) -> np.ndarray:
    canvas = np.zeros((size, size), dtype=np.uint8)
    for cx, cy, ax, ay, angle in blobs:
        cv2.ellipse(canvas, (int(cx), int(cy)), (int(ax), int(ay)), float(angle), 0, 360, 1, -1)
    return canvas.astype(bool)


def random_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A (prediction, GT) pair of H x W bool masks with 0-4 blobs each."""
    count = int(rng.integers(0, 5))
    blobs = np.column_stack(
        [
            rng.uniform(0, size, count),
            rng.uniform(0, size, count),
            rng.uniform(8, size / 6, count),
            rng.uniform(8, size / 6, count),
            rng.uniform(0, 180, count),
        ]
    )
    gt = _draw(rng, size, blobs)
    jittered = blobs + rng.normal(0, [size / 40, size / 40, 6, 6, 10], blobs.shape)
    keep = rng.random(count) > 0.15
    extra = rng.uniform([0, 0, 8, 8, 0], [size, size, size / 8, size / 8, 180], (1, 5))
    pred_blobs = np.vstack([jittered[keep], extra]) if rng.random() < 0.3 else jittered[keep]
    pred_blobs[:, 2:4] = np.maximum(pred_blobs[:, 2:4], 1)
    return _draw(rng, size, pred_blobs), gt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    scores = SegmentationScores()
    scoring = scoring_cpu = 0.0
    start = time.perf_counter()
    for index in range(args.pairs):
        pred, gt = random_pair(rng, args.size)
        tick, tick_cpu = time.perf_counter(), time.process_time()
        scores.update(pred, gt, LEVELS[index % len(LEVELS)])
        scoring += time.perf_counter() - tick
        scoring_cpu += time.process_time() - tick_cpu
    total = time.perf_counter() - start
    summary = scores.compute()["all"]

    print(f"pairs: {args.pairs} of {args.size}x{args.size}, cv2 threads: {cv2.getNumThreads()}")
    print(f"scoring: {scoring:.2f} s wall, {args.pairs / scoring:,.0f} mask pairs/s")
    print(f"scoring CPU time (all threads): {scoring_cpu:.2f} s")
    print(f"total incl. drawing the masks: {total:.2f} s")
    print("summary (all):", {k: round(v, 4) for k, v in summary.items()})


if __name__ == "__main__":
    main()
