"""Does a SAM2 read its prompts? Its masks for each entity's own box against another's.

On synthetic tiles whose entities sit on random blocks (``--placement random``), every
entity of a tile is prompted twice through :class:`socioseg.models.segmenter.Segmenter`: with its
own GT box, and with the GT box of another entity on the same tile. A SAM2 that reads boxes
gives a high IoU with the entity in the first case and a low one in the second; one that
segments from an image prior gives about the same mask for both (the last column is the IoU
between the two masks).

    python scripts/sam_prompts.py --sam mini --tiles 40
"""

from __future__ import annotations

import argparse

import numpy as np

from socioseg.data.synth import MAX_QUERIES, generate_tile
from socioseg.metrics import mask_iou
from socioseg.models.segmenter import Segmenter
from socioseg.train.rewards import gt_boxes_from_mask
from socioseg.types import Box, Target


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
        masks, boxes = [], []
        for sample in named:  # the GT box as the rewards make it: one for one entity
            mask = np.asarray(sample.mask, bool)
            found = gt_boxes_from_mask(mask)
            if len(found) == 1:
                masks.append(mask)
                boxes.append(Target(Box(*map(float, found[0]))))
        if len(masks) < 2:
            continue
        embedding = segmenter.embed(tile[0].sat)
        for k, mask in enumerate(masks):
            right = segmenter.segment(embedding, [boxes[k]])
            wrong = segmenter.segment(embedding, [boxes[(k + 1) % len(boxes)]])
            own.append(mask_iou(right, mask, empty=1.0))
            other.append(mask_iou(wrong, mask, empty=1.0))
            same.append(mask_iou(right, wrong, empty=1.0))
    print(f"{args.sam}: {len(own)} entities on {args.tiles} tiles (seed {args.seed})")
    print("| own box: IoU with the entity | another's box: IoU with the entity | own vs another |")
    print("|---|---|---|")
    print(f"| {np.mean(own):.3f} | {np.mean(other):.3f} | {np.mean(same):.3f} |")


if __name__ == "__main__":
    main()
