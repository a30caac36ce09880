"""Does a SAM2 read its prompts? Its masks for each entity's own box against another's.

On synthetic tiles whose entities sit on random blocks (``--placement random``), every
entity of a tile is prompted twice through :class:`socioseg.segmenter.Segmenter`: with its
own GT box, and with the GT box of another entity on the same tile. A SAM2 that reads boxes
gives a high IoU with the entity in the first case and a low one in the second; one that
segments from an image prior gives about the same mask for both (the last column is the IoU
between the two masks).

    python scripts/sam_prompts.py --sam mini --tiles 40
"""

from __future__ import annotations

import argparse

import numpy as np

from socioseg.data import generate_tile
from socioseg.data.synth import MAX_QUERIES
from socioseg.segmenter import Segmenter
from socioseg.types import Box, Target


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def gt_box(mask: np.ndarray) -> Target:
    ys, xs = np.nonzero(mask)
    return Target(Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="mini", help="SAM2 folder, Hub id or 'mini'")
    parser.add_argument("--tiles", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1000, help="synthetic seed (held out: 1000)")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    segmenter = Segmenter.from_pretrained(args.sam, device="cpu")
    own, other, same = [], [], []
    for index in range(args.tiles):
        tile = generate_tile(args.seed, index, args.size, MAX_QUERIES, placement="random")
        # One entity each: the name queries, and the tile's own query when it is one.
        named = tile if tile[0].level == "socio-name" else tile[1:]
        masks = [np.asarray(s.mask, bool) for s in named]
        masks = [m for m in masks if m.sum() > 10]
        if len(masks) < 2:
            continue
        embedding = segmenter.embed(tile[0].sat)
        for k, mask in enumerate(masks):
            right = segmenter.segment(embedding, [gt_box(mask)])
            wrong = segmenter.segment(embedding, [gt_box(masks[(k + 1) % len(masks)])])
            own.append(iou(right, mask))
            other.append(iou(wrong, mask))
            same.append(iou(right, wrong))
    print(f"{args.sam}: {len(own)} entities on {args.tiles} tiles (seed {args.seed})")
    print("| own box: IoU with the entity | another's box: IoU with the entity | own vs another |")
    print("|---|---|---|")
    print(f"| {np.mean(own):.3f} | {np.mean(other):.3f} | {np.mean(same):.3f} |")


if __name__ == "__main__":
    main()
