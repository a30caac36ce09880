"""Supervised SAM2 training on entity masks with box and box + point prompts (SAM's recipe).

Each step draws ``batch_size`` samples (seeded) and one entity from each: an external contour
of the GT mask with area > ``GT_MIN_CONTOUR_AREA`` (the rule that makes the stage-1 reward's
GT boxes), its pixels inside that contour as the target. The prompt is the entity's bounding
box, each corner jittered by up to ``box_noise`` of the box side (SAM: 10%, at most 20 px),
and on a ``point_prob`` share of steps also 1 to ``max_points`` positive points drawn
uniformly from the entity's pixels (stage 2's shape of prompt). A sample whose mask holds no
such entity is passed over for another draw.

The image goes through :func:`socioseg.models.segmenter.preprocess` and the prompt through
:func:`~socioseg.models.segmenter.point_prompt` and
:func:`~socioseg.models.segmenter.prompt_coords`, exactly as
:class:`~socioseg.models.segmenter.Segmenter` prompts at inference (box corners with labels 2 and
3, points with label 1, the prompt encoder's padding point), so what is learned is what is
used. With ``min_pixels`` / ``max_pixels`` (and the policy family's ``factor``) the image is
first resized to that VLM frame (:func:`socioseg.engine.vlm_image`) and the prompt moved there
through :class:`~socioseg.geometry.Frames`, as the pipeline embeds the satellite image it
shows the policy (socioseg-mini: the 256 px tile at 252 px, resampled twice on its way to
SAM's 256 px input); without them SAM trains on the tile as stored.

Loss (SAM): ``focal_weight`` x sigmoid focal
(alpha 0.25, gamma 2) + ``dice_weight`` x dice on the best of the three multimask outputs
(the lowest loss; SAM back-propagates only that one; ``multimask_loss: all`` trains all
three), plus ``iou_weight`` x the MSE between
each output's predicted IoU and its actual IoU with the target. Logits are compared with the
target in the SAM frame (S x S), upsampled bilinearly as the segmenter does.

``embedding_weight`` > 0 adds that weight x the mean square of the image embedding the mask
decoder reads (the lowest-resolution one). Not part of SAM's recipe, which starts from a
pre-trained encoder: trained from scratch, the embedding grows (0.1-0.7 at initialisation, 18
after 1,000 steps, 139 in the shipped socioseg-mini SAM2) until it swamps the positional
encodings (std 0.7) that let a box or point name a place, and SAM2 stops reading its prompts
(docs/mini.md). 0.01 keeps it below 1.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from socioseg.engine import vlm_image
from socioseg.geometry import VLM_FACTOR, Frames
from socioseg.models.segmenter import (
    PREPROCESSOR_FILE,
    Segmenter,
    point_prompt,
    preprocess,
    prompt_coords,
)
from socioseg.train import model_folder
from socioseg.train.config import AdamWSettings, SupervisedConfig
from socioseg.train.optim import SupervisedUpdates
from socioseg.train.rewards import GT_MIN_CONTOUR_AREA
from socioseg.types import Box, Point, Target

# SAM caps the box jitter at 20 px of its 1024-px frame.
MAX_BOX_NOISE_PX = 20.0
_MAX_DRAWS = 1000


@dataclass
class SamTrainConfig(SupervisedConfig):
    """``socioseg train-sam``: the shared fields (:class:`SupervisedConfig`) and SAM's own."""

    sam: str = "mini-models/sam"  # SAM2 folder to start from (transformers format)
    steps: int = 1000
    batch_size: int = 8  # images per step, one entity each
    optim: AdamWSettings = field(default_factory=lambda: AdamWSettings(lr=3e-4, warmup_steps=50))
    point_prob: float = 0.5  # share of steps whose prompts also hold points
    max_points: int = 3
    box_noise: float = 0.1  # corner jitter, fraction of the box side
    # Which of the three multimask outputs learn the target: "min" the best one only (SAM: the
    # others stay free for ambiguous prompts), "all" every one (an entity prompt is not
    # ambiguous, and inference keeps whichever the IoU head ranks first).
    multimask_loss: Literal["min", "all"] = "min"
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    embedding_weight: float = 0.0  # x mean square of the image embedding (module docstring)
    # The VLM frame the pipeline embeds (module docstring); None: the tile as stored.
    min_pixels: int | None = None
    max_pixels: int | None = None
    factor: int = VLM_FACTOR  # the policy family's frame multiple (Qwen2.5-VL: 28)

    def _checks(self) -> list[tuple[bool, str]]:
        frame = (self.min_pixels, self.max_pixels)
        return [
            *super()._checks(),
            (
                (None not in frame) or frame == (None, None),
                "min_pixels and max_pixels: give both (the VLM frame) or neither",
            ),
            (
                None in frame or 0 < frame[0] <= frame[1],
                f"min_pixels {frame[0]} must be > 0 and <= max_pixels {frame[1]}",
            ),
            (self.factor >= 1, f"factor must be >= 1, got {self.factor}"),
            (0 <= self.point_prob <= 1, "point_prob must be in [0, 1]"),
            (self.max_points >= 1, "max_points must be >= 1"),
            (0 <= self.box_noise < 1, "box_noise must be in [0, 1)"),
            (self.embedding_weight >= 0, "embedding_weight must be >= 0"),
        ]


def entities(mask: np.ndarray) -> list[tuple[list[int], np.ndarray]]:
    """``(box, entity mask)`` per external contour of ``mask`` with area > GT_MIN_CONTOUR_AREA.

    ``mask``: H x W bool (image frame). ``box``: XYXY ints as ``gt_boxes_from_mask`` makes them;
    entity mask: H x W bool, the mask's pixels inside the filled contour.
    """
    import cv2

    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        if cv2.contourArea(contour) > GT_MIN_CONTOUR_AREA:
            x, y, w, h = cv2.boundingRect(contour)
            inside = np.zeros_like(binary)
            cv2.drawContours(inside, [contour], -1, 1, thickness=-1)
            out.append(([x, y, x + w, y + h], (inside > 0) & mask))
    return out


def sample_target(
    rng: np.random.Generator, box: list[int], entity: np.ndarray, n_points: int, noise: float
) -> Target:
    """A jittered box and ``n_points`` positive points inside ``entity`` (image frame)."""
    x1, y1, x2, y2 = box
    scale = np.array([x2 - x1, y2 - y1, x2 - x1, y2 - y1], dtype=float)
    jitter = rng.uniform(-1, 1, 4) * np.minimum(noise * scale, MAX_BOX_NOISE_PX)
    height, width = entity.shape
    bx = np.array(box, dtype=float) + jitter
    bx[[0, 2]] = bx[[0, 2]].clip(0, width)
    bx[[1, 3]] = bx[[1, 3]].clip(0, height)
    ys, xs = np.nonzero(entity)
    chosen = rng.integers(0, len(xs), n_points) if n_points else np.zeros(0, dtype=int)
    points = tuple(Point(float(xs[i]) + 0.5, float(ys[i]) + 0.5) for i in chosen)
    return Target(Box(*(float(v) for v in bx)), points)


def make_batch(samples: list, rng: np.random.Generator, config: SamTrainConfig, side: int, prep):
    """Model inputs and targets for one step; each of ``samples`` holds an entity (``_draw``).

    Returns a dict: ``pixel_values`` B x 3 x S x S float32; ``input_points`` B x 1 x (2 + P) x 2
    float32 in the S x S input and ``input_labels`` B x 1 x (2 + P) int32, the box corners
    (labels 2, 3) then P points (label 1), as :class:`~socioseg.models.segmenter.Segmenter` prompts;
    ``target`` B x S x S float32 in {0, 1}. Every row of a batch has the same P.
    """
    use_points = rng.random() < config.point_prob
    n_points = int(rng.integers(1, config.max_points + 1)) if use_points else 0
    pixels, points, labels, targets = [], [], [], []
    for sample in samples:
        mask = np.asarray(sample.mask, dtype=bool)
        found = entities(mask)
        box, entity = found[int(rng.integers(0, len(found)))]
        xy, point_labels = point_prompt(sample_target(rng, box, entity, n_points, config.box_noise))
        image = sample.sat
        if config.min_pixels is not None:
            frames = Frames.for_image(
                image.size, config.min_pixels, config.max_pixels, config.factor
            )
            image = vlm_image(image, frames)
            xy = frames.points_array(np.asarray(xy, dtype=np.float64), "image", "vlm")
        pixels.append(preprocess(image, prep)[0])
        points.append(prompt_coords(xy, image.size, side))
        labels.append(point_labels)
        resized = F.interpolate(
            torch.from_numpy(entity)[None, None].float(),
            (side, side),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        targets.append((resized[0, 0] > 0.5).float())
    return {
        "pixel_values": torch.stack(pixels),
        "input_points": torch.stack(points)[:, None],
        "input_labels": torch.tensor(labels, dtype=torch.int32)[:, None],
        "target": torch.stack(targets),
    }


def sam_loss(
    pred_masks: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, config: SamTrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """SAM's loss. ``pred_masks``: B x M x h x w logits; ``iou_pred``: B x M; ``target``:
    B x S x S in {0, 1}. Returns the scalar loss and its parts (focal, dice, iou_mse, miou)."""
    side = target.shape[-1]
    logits = F.interpolate(pred_masks.float(), (side, side), mode="bilinear", align_corners=False)
    t = target[:, None].expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = prob * t + (1 - prob) * (1 - t)
    focal = ((0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2).mean(dim=(-1, -2))
    dice = 1 - (2 * (prob * t).sum((-1, -2)) + 1) / (prob.sum((-1, -2)) + t.sum((-1, -2)) + 1)
    per_mask = config.focal_weight * focal + config.dice_weight * dice
    best = per_mask.argmin(dim=1)
    rows = torch.arange(len(best))
    mask_loss = per_mask[rows, best].mean() if config.multimask_loss == "min" else per_mask.mean()
    hard = (logits > 0).float()
    inter = (hard * t).sum((-1, -2))
    union = (hard + t).clamp(max=1).sum((-1, -2))
    actual = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    iou_mse = F.mse_loss(iou_pred.float(), actual.detach())
    loss = mask_loss + config.iou_weight * iou_mse
    chosen = iou_pred.argmax(dim=1)  # the mask inference keeps
    stats = {
        "focal": float(focal[rows, best].mean().detach()),
        "dice": float(dice[rows, best].mean().detach()),
        "iou_mse": float(iou_mse.detach()),
        "miou": float(actual[rows, chosen].mean()),
    }
    return loss, stats


def train_sam(
    config: SamTrainConfig,
    out: str | Path,
    overwrite: bool = False,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    resume: bool = False,
) -> Path:
    """Train SAM2 as the module docstring says; write it (weights + preprocessing) to ``out``.

    ``out`` ends up loadable by ``Segmenter.from_pretrained``. Returns ``Path(out)``.
    ``resume``: continue the interrupted run in ``out`` (:class:`model_folder.SupervisedRun`).
    """
    from socioseg.data.dataset import load_socioseg

    run = model_folder.SupervisedRun(out, config, overwrite, resume)
    segmenter = Segmenter.from_pretrained(config.sam, device=config.device, dtype="float32")
    dataset = load_socioseg(config.data, config.split)
    if len(dataset) == 0:
        raise ValueError(f"{config.data} [{config.split}] has no samples")
    model, side, prep = segmenter.model.train(), segmenter.input_size, segmenter.preprocessing
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    updates = SupervisedUpdates(model.parameters(), config)
    done, elapsed = run.restore(model, updates, rng)
    started, stats = time.perf_counter() - elapsed, {}
    for step in range(done + 1, config.steps + 1):
        samples = [_draw(dataset, rng) for _ in range(config.batch_size)]
        batch = {
            k: v.to(segmenter.device)
            for k, v in make_batch(samples, rng, config, side, prep).items()
        }
        target = batch.pop("target")
        output = model(**batch, multimask_output=True)
        loss, stats = sam_loss(output.pred_masks[:, 0], output.iou_scores[:, 0], target, config)
        embedding = output.image_embeddings[-1].float()
        stats["embedding_std"] = float(embedding.detach().std())
        if config.embedding_weight:
            loss = loss + config.embedding_weight * embedding.pow(2).mean()
        updates.step(loss)
        stats = {"loss": float(loss.detach()), **stats, "elapsed_s": time.perf_counter() - started}
        if step % config.log_every == 0 or step == config.steps:
            run.log.log(step, stats, csv_only=("elapsed_s",))
            if on_log is not None:
                on_log(step, stats)
        run.save(step, stats["elapsed_s"], model, updates, rng)
    model.eval().save_pretrained(run.tmp)
    (run.tmp / PREPROCESSOR_FILE).write_text(json.dumps(prep.to_dict(), indent=2) + "\n")
    record = {"command": "train-sam", "config": dataclasses.asdict(config), "last": stats}
    return run.publish(record)


def _draw(dataset, rng: np.random.Generator):
    """A random sample whose mask holds at least one entity (see the module docstring)."""
    for _ in range(_MAX_DRAWS):
        sample = dataset[int(rng.integers(0, len(dataset)))]
        if entities(np.asarray(sample.mask, dtype=bool)):
            return sample
    raise ValueError(f"no sample with a mask entity in {_MAX_DRAWS} draws: is the dataset empty?")
