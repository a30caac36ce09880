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
from PIL import Image

from socioseg import prompts
from socioseg.geometry import Frames
from socioseg.render import render_feedback
from socioseg.rl.rewards import gt_boxes_from_mask
from socioseg.rl.rollout import Prompt

POINTS_PER_BOX = 2


def teacher_boxes(mask: np.ndarray, frames: Frames) -> list[list[int]]:
    """GT boxes of ``mask`` (image frame) as integer XYXY in the VLM frame."""
    boxes = np.asarray(gt_boxes_from_mask(mask), dtype=float).reshape(-1, 4)
    return np.rint(frames.points_array(boxes, "image", "vlm")).astype(int).tolist()


def teacher_points(mask: np.ndarray, box_image: list[float], frames: Frames) -> list[list[int]]:
    """Up to two points deep inside the mask within ``box_image``, in the VLM frame."""
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box_image)
    crop = np.ascontiguousarray(mask[y1:y2, x1:x2], dtype=np.uint8)
    if crop.size == 0 or not crop.any():
        return []
    depth = cv2.distanceTransform(crop, cv2.DIST_L2, 3)
    points = []
    for _ in range(POINTS_PER_BOX):
        y, x = np.unravel_index(int(depth.argmax()), depth.shape)
        if depth[y, x] <= 0:
            break
        points.append([x + x1 + 0.5, y + y1 + 0.5])
        cv2.circle(depth, (int(x), int(y)), max(2, int(depth[y, x])), 0, -1)
    vlm = frames.points_array(np.asarray(points, dtype=float), "image", "vlm")
    return np.rint(vlm).astype(int).tolist()


def teacher_examples(sample, min_pixels: int, max_pixels: int) -> list[tuple[Prompt, str]]:
    """(prompt, answer) pairs for both stages of one sample (objects with sat, map, mask)."""
    frames = Frames.for_image(sample.sat.size, min_pixels, max_pixels)
    mask = np.asarray(sample.mask, dtype=bool)
    vlm_map = sample.map.convert("RGB").resize(frames.vlm_size, Image.Resampling.BICUBIC)
    vlm_sat = sample.sat.convert("RGB").resize(frames.vlm_size, Image.Resampling.BICUBIC)
    boxes = teacher_boxes(mask, frames)
    image_boxes = gt_boxes_from_mask(mask)
    stage1_answer = json.dumps([{"bbox_2d": b} for b in boxes])
    stage2_answer = json.dumps(
        [
            {"bbox_2d": b, "points": teacher_points(mask, ib, frames)}
            for b, ib in zip(boxes, image_boxes, strict=True)
        ]
    )
    think = f"<think>The map labels {sample.query}; its outline is visible on the image.</think>"
    feedback = tuple(render_feedback(im, boxes, mask) for im in (vlm_map, vlm_sat))
    return [
        (
            Prompt(prompts.stage1_text(sample.query), (vlm_map, vlm_sat)),
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
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    logp = policy.response_logprobs(inputs, ids, mask)
    mask = mask.to(logp.device, logp.dtype)
    return -(logp * mask).sum() / mask.sum()
