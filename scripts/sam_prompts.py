"""Does a SAM2 read its prompts? Its masks for each entity's own box against another's.

On synthetic tiles whose entities sit on random blocks (``--placement random``), every
entity of a tile is prompted twice through :class:`socioseg.models.segmenter.Segmenter`: with its
own GT box, and with the GT box of another entity on the same tile. A SAM2 that reads boxes
gives a high IoU with the entity in the first case and a low one in the second; one that
segments from an image prior gives about the same mask for both (the last column is the IoU
between the two masks). ``--min-pixels`` / ``--max-pixels``: prompt SAM2 on the satellite
image in that VLM frame, as the pipeline does (boxes moved there, masks moved back).

    python scripts/sam_prompts.py --sam mini --tiles 40
    python scripts/sam_prompts.py --sam runs/mini/sam --min-pixels 50176 --max-pixels 63504
"""

from __future__ import annotations

import argparse

import numpy as np

from socioseg.data.synth import MAX_QUERIES, generate_tile
from socioseg.engine import vlm_image
from socioseg.geometry import VLM_FACTOR, Frames, resize_mask_nearest
from socioseg.metrics import mask_iou
from socioseg.models.segmenter import Segmenter
from socioseg.train.rewards import gt_boxes_from_mask
from socioseg.types import Box, Target


def segment(segmenter: Segmenter, embedding, box: Target, shape: tuple[int, int]) -> np.ndarray:
    """SAM2's mask for ``box`` on the embedded image, moved to the tile's ``shape`` (H, W)."""
    mask = segmenter.segment(embedding, [box])
    return mask if mask.shape == shape else resize_mask_nearest(mask, shape[::-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="mini", help="SAM2 folder, Hub id or 'mini'")
    parser.add_argument("--tiles", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1000, help="synthetic seed (held out: 1000)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--min-pixels", type=int, default=None, help="VLM frame (with max)")
    parser.add_argument("--max-pixels", type=int, default=None)
    args = parser.parse_args(argv)
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
        sat = tile[0].sat
        if args.min_pixels is not None:
            frames = Frames.for_image(sat.size, args.min_pixels, args.max_pixels, VLM_FACTOR)
            sat = vlm_image(sat, frames)
            boxes = [frames.target(box, "image", "vlm") for box in boxes]
        embedding = segmenter.embed(sat)
        for k, mask in enumerate(masks):
            right = segment(segmenter, embedding, boxes[k], mask.shape)
            wrong = segment(segmenter, embedding, boxes[(k + 1) % len(boxes)], mask.shape)
            own.append(mask_iou(right, mask, empty=1.0))
            other.append(mask_iou(wrong, mask, empty=1.0))
            same.append(mask_iou(right, wrong, empty=1.0))
    print(f"{args.sam}: {len(own)} entities on {args.tiles} tiles (seed {args.seed})")
    print("| own box: IoU with the entity | another's box: IoU with the entity | own vs another |")
    print("|---|---|---|")
    print(f"| {np.mean(own):.3f} | {np.mean(other):.3f} | {np.mean(same):.3f} |")


if __name__ == "__main__":
    main()
