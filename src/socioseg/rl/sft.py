"""Supervised warm-up on the answer format: teacher answers built from ground-truth masks.

A policy that never writes ``<answer>[...]</answer>`` earns zero reward in every rollout, so
GRPO has nothing to compare. A short supervised phase on answers made from the GT (its boxes
for stage 1, its boxes plus interior points for stage 2) fixes that for small or fresh models.
The released checkpoint was trained with RL only; this is a tool for new models.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from socioseg import prompts
from socioseg.engine import vlm_images
from socioseg.geometry import Frames
from socioseg.render import feedback_images
from socioseg.rl.rewards import gt_boxes_from_mask
from socioseg.rl.rollout import Prompt
from socioseg.vlm import pad_right

POINTS_PER_BOX = 2


def teacher_boxes(mask: np.ndarray, frames: Frames) -> list[list[int]]:
    """GT boxes of ``mask`` (image frame) as integer XYXY in the VLM frame."""
    boxes = np.asarray(gt_boxes_from_mask(mask), dtype=float).reshape(-1, 4)
    return np.rint(frames.points_array(boxes, "image", "vlm")).astype(int).tolist()


def teacher_points(
    mask: np.ndarray, box_image: list[float], box_vlm: list[int], frames: Frames
) -> list[list[int]]:
    """Up to two points deep inside the mask within its box, in the VLM frame.

    ``box_image`` / ``box_vlm``: the same GT box in the image and VLM frames. Points are strictly
    inside ``box_vlm`` (the stage-2 reward's rule), so boxes too thin for that get none.
    """
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box_image)
    crop = np.ascontiguousarray(mask[y1:y2, x1:x2], dtype=np.uint8)
    if crop.size == 0 or not crop.any():
        return []
    # A background border, so that depth also counts the distance to the box's edges.
    padded = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1].copy()
    points = []
    for _ in range(POINTS_PER_BOX):
        y, x = np.unravel_index(int(depth.argmax()), depth.shape)
        if depth[y, x] <= 0:
            break
        points.append([x + x1 + 0.5, y + y1 + 0.5])
        cv2.circle(depth, (int(x), int(y)), max(2, int(depth[y, x])), 0, -1)
    bx1, by1, bx2, by2 = box_vlm
    if not points or bx2 - bx1 < 2 or by2 - by1 < 2:
        return []
    vlm = np.rint(frames.points_array(np.asarray(points, dtype=float), "image", "vlm"))
    vlm[:, 0] = vlm[:, 0].clip(bx1 + 1, bx2 - 1)  # rounding must not land on the edge
    vlm[:, 1] = vlm[:, 1].clip(by1 + 1, by2 - 1)
    return vlm.astype(int).tolist()


def teacher_examples(sample, min_pixels: int, max_pixels: int) -> list[tuple[Prompt, str]]:
    """(prompt, answer) pairs for both stages of one sample (objects with sat, map, mask)."""
    frames = Frames.for_image(sample.sat.size, min_pixels, max_pixels)
    mask = np.asarray(sample.mask, dtype=bool)
    images = vlm_images(sample.sat, sample.map, frames)
    boxes = teacher_boxes(mask, frames)
    image_boxes = gt_boxes_from_mask(mask)
    stage1_answer = json.dumps([{"bbox_2d": b} for b in boxes])
    stage2_answer = json.dumps(
        [
            {"bbox_2d": b, "points": teacher_points(mask, ib, b, frames)}
            for b, ib in zip(boxes, image_boxes, strict=True)
        ]
    )
    think = f"<think>The map labels {sample.query}; its outline is visible on the image.</think>"
    feedback = feedback_images(*images, boxes, mask)
    return [
        (
            Prompt(prompts.stage1_text(sample.query), images),
            f"{think}<answer>{stage1_answer}</answer>",
        ),
        (
            Prompt(prompts.stage2_text(sample.query, stage1_answer), feedback),
            f"{think}<answer>{stage2_answer}</answer>",
        ),
    ]


def supervised_loss(policy, examples: list[tuple[Prompt, str]]) -> torch.Tensor:
    """Token-mean negative log-likelihood of the answers (each followed by ``<|im_end|>``)."""
    tokenizer = policy.processor.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    inputs = policy.encode([p.text for p, _ in examples], [list(p.images) for p, _ in examples])
    sequences = [[*tokenizer(answer).input_ids, end] for _, answer in examples]
    ids, mask = pad_right(sequences, tokenizer.pad_token_id)
    logp = policy.response_logprobs(inputs, ids, mask)
    mask = mask.to(logp.device, logp.dtype)
    return -(logp * mask).sum() / mask.sum()
