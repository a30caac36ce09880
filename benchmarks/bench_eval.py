"""Overhead of an evaluation run around the model, on SocioSeg-sized synthetic samples.

Writes a synthetic split (768 x 768 by default), then times :func:`socioseg.eval.run.evaluate`
with an oracle reasoner that answers instantly (stage 1 = the GT shifted, final = the GT), so
what is measured is everything but the model: decoding a sample, scoring both masks at the GT
resolution, one fsync'd jsonl row, contact-sheet tiles and the summary. Also times a rerun
(everything already done: read and check the rows, rewrite the summary) and a 2-shard merge.
Compare with the model's own time per sample (2.71 s reported for SocioReasoner-3B).

    python benchmarks/bench_eval.py [--samples 40] [--size 768] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from socioseg.data import load_socioseg
from socioseg.data.synth import write_dataset
from socioseg.eval.run import evaluate, merge
from socioseg.socioreasoner import InferenceConfig
from socioseg.types import ParsedAnswer, Prediction, StageResult


class OracleReasoner:
    """Answers from the ground truth at no cost (looked up by the satellite image's bytes)."""

    def __init__(self, dataset):
        self.config = InferenceConfig()
        self.truth = {self._key(s.sat): s.mask for s in dataset}

    @staticmethod
    def _key(image) -> str:
        return hashlib.sha1(image.tobytes()).hexdigest()

    def segment_batch(self, items, mode=None):
        predictions = []
        for sat, _, query in items:
            gt = self.truth[self._key(sat)]
            stages = [
                StageResult(name, "", "", ParsedAnswer("", ()), (), mask)
                for name, mask in (("stage1", np.roll(gt, 12, axis=1)), ("stage2", gt))
            ]
            predictions.append(
                Prediction(query, "two-stage", gt, *stages, sat.size, sat.size, "stage2")
            )
        return predictions


def _timed(label: str, n: int, function) -> None:
    started = time.perf_counter()
    function()
    seconds = time.perf_counter() - started
    print(f"{label:<34} {seconds:7.2f} s   {1000 * seconds / n:7.1f} ms per sample")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_dataset(root, args.samples, seed=0, size=args.size, split_ratios=(0, 0, 1))
        dataset = load_socioseg(root, "test", levels=root / "levels.json")
        oracle = OracleReasoner(dataset)
        n = args.samples
        run = {"batch_size": args.batch_size, "progress": False}
        print(f"{n} samples of {args.size} x {args.size}, batch size {args.batch_size}")
        _timed("evaluate (model excluded)", n, lambda: evaluate(oracle, dataset, root / "a", **run))
        _timed("rerun, nothing left to do", n, lambda: evaluate(oracle, dataset, root / "a", **run))
        for i in range(2):
            evaluate(oracle, dataset, root / "b", shard=(i, 2), **run)
        _timed("merge 2 shards", n, lambda: merge(root / "b"))


if __name__ == "__main__":
    main()
