"""Time SAM2 through socioseg.models.segmenter: one image encoding, then prompts on its embedding.

    python benchmarks/bench_segmenter.py                 # tiny random model, built in a temp dir
    python benchmarks/bench_segmenter.py --sam facebook/sam2-hiera-large-hf --device cuda

Prints seconds for pre-processing, the encoder, a box prompt, a box + 3 points prompt, and a
prompt set of several boxes (one decoder call each, as the official predictor makes them), each
the median of --repeats runs after a warm-up. The default image is a 756 x 756 VLM-frame tile.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from socioseg.models.builders import build_tiny_sam
from socioseg.models.segmenter import Segmenter, preprocess
from socioseg.types import Box, Point, Target


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(segmenter: Segmenter) -> None:
    if segmenter.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", help="SAM2 Hub id or folder (default: a tiny random model)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--image-size", type=int, default=756, help="square test image side")
    parser.add_argument("--boxes", type=int, default=4, help="boxes in the multi-box prompt")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = args.sam or build_tiny_sam(f"{tmp}/tiny-sam")
        segmenter = Segmenter.from_pretrained(source, device=args.device, dtype=args.dtype)

    side = args.image_size
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    embedding = segmenter.embed(image)
    box = Target(Box(0.1 * side, 0.2 * side, 0.6 * side, 0.7 * side))
    points = Target(box.box, tuple(Point(f * side, f * side) for f in (0.3, 0.4, 0.5)))
    step = side / (args.boxes + 1)
    boxes = [
        Target(Box(i * step, i * step, (i + 1.5) * step, (i + 1.5) * step))
        for i in range(args.boxes)
    ]

    def timed(fn):
        def run():
            fn()
            _sync(segmenter)

        return _median_seconds(run, args.repeats)

    rows = [
        ("preprocess (CPU)", timed(lambda: preprocess(image, segmenter.preprocessing))),
        ("encoder (embed)", timed(lambda: segmenter.embed(image))),
        ("prompt: 1 box", timed(lambda: segmenter.segment(embedding, [box]))),
        ("prompt: 1 box + 3 points", timed(lambda: segmenter.segment(embedding, [points]))),
        (f"prompt: {args.boxes} boxes", timed(lambda: segmenter.segment(embedding, boxes))),
    ]
    n_params = sum(p.numel() for p in segmenter.model.parameters())
    print(
        f"model: {args.sam or 'tiny random'} ({n_params / 1e6:.2f}M params), "
        f"input {segmenter.input_size}x{segmenter.input_size}, image {side}x{side}, "
        f"device {segmenter.device}, dtype {segmenter.dtype}, torch threads "
        f"{torch.get_num_threads()}"
    )
    for name, seconds in rows:
        print(f"{name:<28} {seconds * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
