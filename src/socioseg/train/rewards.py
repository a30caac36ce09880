"""Rewards for the two GRPO stages: pure functions of (model text, ground truth).

Each stage's reward is ``format + accuracy + length`` (SPEC §4). Two variants:

- ``"released"`` (default): the released training code, which produced the released
  checkpoint, with its exception-driven corner cases made explicit.
- ``"paper"``: the paper's text. Format is 0/1, a format of 0 makes the stage's total 0, and
  stage-1 accuracy counts the Hungarian-assigned box pairs with IoU > 0.5 over ``max(K, J)``.
  Length and stage-2 accuracy are as in ``"released"``.

Reading a response: the strings ``<|im_end|>``, ``<|endoftext|>`` and ``<pad>`` are removed;
*structure* is 1 when the whole remaining text matches
``<think>.*?</think>\\s*<answer>.*?</answer>`` (DOTALL); *the answer* is the stripped text
between the first ``<answer>`` and the next ``</answer>``, parsed as JSON. A single-quoted
answer is not JSON; only the stage-1 answer that stage 2 re-reads gets ``'`` replaced by ``"``
first. A *box object* is a JSON object whose ``bbox_2d`` is a list of 4 numbers.

Decisions where the released code only failed by accident (each keeps its reward outcome):

- *Numbers* are finite ints or floats, never bools (:func:`socioseg.answers.is_number`).
  ``NaN`` / ``Infinity`` parse (Python's ``json`` accepts them, as did the released code) but
  are not numbers, so a box or point holding one is invalid; checks that look only at the
  shape (stage-1 format items: key set and list length) still accept them, as they accept
  any other non-number. Integers too large for a float are not numbers either.
- Answers JSON cannot read (bad syntax, nesting too deep, integers with too many digits)
  count as "not JSON".
- Box IoU (inclusive pixels) is 0 when the union area is not positive (inverted boxes).
- The first ``MAX_BOXES`` GT boxes are kept for every part, so J is at most ``MAX_BOXES``.
  Stage-1 accuracy also keeps the first ``MAX_BOXES`` predicted boxes (K counts those), while
  stage-1 length uses the full length of the answer list.
- Stage 2: "``bbox_2d`` equals stage-1 box i" compares JSON values: numbers by value (``1``
  equals ``1.0``), a bool never equals a number.
- Paper variant, "schema-valid": stage 1, a non-empty list of box objects each with exactly
  the key ``bbox_2d``; stage 2, every element passes the stage-2 item test (its box repeats
  stage 1's and its points are valid and strictly inside). :class:`RewardParts` always holds
  each part's own value; only ``total`` is forced to 0 by a 0 format.

Coordinates are VLM-frame pixels (answers in another convention are mapped there first, see
``stage1_rewards``'s ``to_vlm``); :func:`gt_boxes_from_mask` works in the mask's own frame and
the caller maps its boxes to the VLM frame. No function here raises on model output.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from socioseg.answers import answer_text, clean_response, is_number
from socioseg.metrics import mask_iou

Variant = Literal["released", "paper"]
VARIANTS: tuple[str, ...] = ("released", "paper")

# A GT contour becomes a GT box when its cv2.contourArea exceeds this (pixels).
GT_MIN_CONTOUR_AREA = 10.0
# Boxes kept on each side (predicted, GT) when scoring stage 1.
MAX_BOXES = 120
# Stage-1 box matching: a hit needs IoU above this ...
BOX_IOU_THRESHOLD = 0.5
# ... and/or a mean absolute coordinate difference below this (VLM-frame pixels).
BOX_L1_THRESHOLD = 10.0
# Stage-1 length: exp(-LENGTH_RATE * |K - J| / J).
LENGTH_RATE = 2.0
# Stage-2 length: exp(-(n - POINTS_MU)^2 / (2 POINTS_SIGMA^2)), n = points in one element.
POINTS_MU = 2.0
POINTS_SIGMA = 2.0

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_NOT_JSON = object()  # sentinel: no answer, or text JSON cannot read (json null is None)


@dataclass(frozen=True)
class RewardParts:
    """One stage's reward. ``total`` = format + accuracy + length, except that in the
    ``"paper"`` variant a format of 0 makes ``total`` 0 (the parts keep their own values).

    Ranges: released format [0, 2], paper format {0, 1}; stage-1 accuracy [-1, 1] (released)
    or [0, 1] (paper); stage-2 accuracy [0, 1]; length [0, 1].
    """

    format: float
    accuracy: float
    length: float
    total: float


def gt_boxes_from_mask(mask: Any) -> list[list[int]]:
    """GT boxes of a mask: one per external contour with contour area > ``GT_MIN_CONTOUR_AREA``.

    Args:
        mask: H x W array, non-zero = foreground.

    Returns:
        ``[[x, y, x + w, y + h], ...]`` from OpenCV's ``boundingRect``, in the mask's own pixel
        frame and in OpenCV's contour order (the caller maps them to the VLM frame).
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be 2-D (H x W), got shape {array.shape}")
    if array.size == 0:
        return []  # OpenCV crashes on zero-size images
    binary = np.ascontiguousarray(array != 0, dtype=np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        if cv2.contourArea(contour) > GT_MIN_CONTOUR_AREA:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append([int(x), int(y), int(x + w), int(y + h)])
    return boxes


def stage1_rewards(
    response: str,
    gt_boxes: Sequence[Sequence[float]] | np.ndarray,
    variant: Variant = "released",
    to_vlm: Callable[[np.ndarray], np.ndarray] | None = None,
) -> RewardParts:
    """Reward one stage-1 (localisation) response.

    Args:
        response: the raw decoded stage-1 text.
        gt_boxes: J x 4 XYXY GT boxes in VLM-frame pixels (list of lists or array; J may be 0),
            e.g. :func:`gt_boxes_from_mask` mapped to the VLM frame.
        variant: ``"released"`` or ``"paper"``.
        to_vlm: maps the answer's K x 4 float64 boxes to VLM-frame pixels, for a family that
            answers in another convention (Qwen3-VL's relative 0-1000: ``Frames.points_array``
            from ``"relative"`` to ``"vlm"``); None: the answer is in VLM pixels already.

    Raises:
        ValueError: unknown variant, or ``gt_boxes`` is not J x 4 (a caller error).
    """
    _check_variant(variant)
    text = clean_response(response)
    answer = _load_json(answer_text(text))
    gt = _gt_array(gt_boxes)[:MAX_BOXES]
    predicted = _box_array(answer)
    if predicted is not None and to_vlm is not None:
        predicted = to_vlm(predicted)
    length = _stage1_length(answer, len(gt))
    if variant == "released":
        fmt = _structure(text) + _stage1_items(answer)
        accuracy = _released_box_accuracy(predicted, gt)
    else:
        fmt = float(_structure(text) == 1.0 and _stage1_schema_valid(answer))
        accuracy = _paper_box_accuracy(predicted, gt)
    return _parts(fmt, accuracy, length, variant)


def stage2_rewards(
    response: str,
    stage1_answer: str | None,
    pred_mask: Any,
    gt_mask: Any,
    variant: Variant = "released",
) -> RewardParts:
    """Reward one stage-2 (refinement) response.

    Args:
        response: the raw decoded stage-2 text.
        stage1_answer: the stage-1 answer text (between its answer tags, stripped) that the
            stage-2 prompt quoted, or None when stage 1 had none.
        pred_mask: H x W final mask, already at the GT's resolution (non-zero = foreground).
        gt_mask: H x W GT mask.
        variant: ``"released"`` or ``"paper"``.

    Raises:
        ValueError: unknown variant, or the masks' shapes differ (a caller error).
    """
    _check_variant(variant)
    text = clean_response(response)
    answer = _load_json(answer_text(text))
    stage1 = _load_json(None if stage1_answer is None else stage1_answer.replace("'", '"'))
    passed = _stage2_item_results(answer, stage1)
    accuracy = mask_iou(pred_mask, gt_mask, empty=0.0)
    length = _stage2_length(answer)
    if variant == "released":
        items = sum(passed) / len(passed) if passed else 0.0
        fmt = _structure(text) + items
    else:
        fmt = float(_structure(text) == 1.0 and bool(passed) and all(passed))
    return _parts(fmt, accuracy, length, variant)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown reward variant {variant!r}; valid variants: {VARIANTS}")


def _parts(fmt: float, accuracy: float, length: float, variant: str) -> RewardParts:
    fmt, accuracy, length = float(fmt), float(accuracy), float(length)
    total = 0.0 if variant == "paper" and fmt == 0.0 else fmt + accuracy + length
    return RewardParts(fmt, accuracy, length, total)


def _structure(text: str) -> float:
    return 1.0 if structure_matches(text) else 0.0


def structure_matches(text: str) -> bool:
    """``re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text, re.DOTALL)``, linearly.

    The pattern holds iff ``text`` starts with ``<think>``, ends with ``</answer>``, and some
    ``</think>`` after the opening tag is followed by whitespace only (``str.isspace``, the
    pattern's ``\\s``) and then ``<answer>`` ending before the closing tag. Occurrences of
    ``</think>`` do not overlap and neither do the whitespace runs after them, so the scan
    reads each character a bounded number of times (the pattern's backtracking does not).
    """
    if not (text.startswith(_THINK_OPEN) and text.endswith(_ANSWER_CLOSE)):
        return False
    last_open = len(text) - len(_ANSWER_CLOSE) - len(_ANSWER_OPEN)  # latest possible <answer>
    close = text.find(_THINK_CLOSE, len(_THINK_OPEN))
    while close >= 0:
        start = close + len(_THINK_CLOSE)
        end = start
        while end < len(text) and text[end].isspace():
            end += 1
        if end > last_open:
            return False  # later </think> tags leave even less room
        if text.startswith(_ANSWER_OPEN, end):
            return True
        close = text.find(_THINK_CLOSE, end)
    return False


def _load_json(text: str | None) -> Any:
    if text is None:
        return _NOT_JSON
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError, as is too many digits
        return _NOT_JSON


def _number(value: Any) -> bool:
    try:
        return is_number(value)
    except OverflowError:  # an int beyond float range: not a usable coordinate
        return False


def _is_box_object(item: Any) -> bool:
    box = item.get("bbox_2d") if isinstance(item, dict) else None
    return isinstance(box, list) and len(box) == 4 and all(map(_number, box))


def _is_object_list(answer: Any) -> bool:
    """A non-empty JSON list whose elements are all objects."""
    return isinstance(answer, list) and bool(answer) and all(isinstance(x, dict) for x in answer)


# ---- stage 1 -------------------------------------------------------------------------------


def _stage1_items(answer: Any) -> float:
    if not _is_object_list(answer):
        return 0.0
    good = sum(
        1
        for item in answer
        if set(item) == {"bbox_2d"}
        and isinstance(item["bbox_2d"], list)
        and len(item["bbox_2d"]) == 4
    )
    return good / len(answer)


def _stage1_schema_valid(answer: Any) -> bool:
    return _is_object_list(answer) and all(
        set(item) == {"bbox_2d"} and _is_box_object(item) for item in answer
    )


def _stage1_length(answer: Any, n_gt: int) -> float:
    if not isinstance(answer, list):
        return 0.0
    if not all(isinstance(x, dict) and isinstance(x.get("bbox_2d"), list) for x in answer):
        return 0.0
    if n_gt == 0:
        return 1.0 if not answer else 0.0
    return math.exp(-LENGTH_RATE * abs(len(answer) - n_gt) / n_gt)


def _gt_array(gt_boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    array = np.asarray(gt_boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"gt_boxes must be J x 4 XYXY boxes, got shape {array.shape}")
    return array


def _box_array(answer: Any) -> np.ndarray | None:
    """K x 4 float64 of the first MAX_BOXES boxes, or None unless a non-empty box-object list."""
    if not (isinstance(answer, list) and answer and all(map(_is_box_object, answer))):
        return None
    return np.array([item["bbox_2d"] for item in answer[:MAX_BOXES]], dtype=np.float64)


def _box_hits(predicted: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K x J bool matrices [IoU > BOX_IOU_THRESHOLD] and [L1 < BOX_L1_THRESHOLD]."""
    p, g = predicted[:, None, :], gt[None, :, :]
    # Huge or inverted coordinates may overflow or divide by zero; such pairs are no hit.
    with np.errstate(all="ignore"):
        width = np.maximum(
            0.0, np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]) + 1
        )
        height = np.maximum(
            0.0, np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]) + 1
        )
        inter = width * height
        area_p = (p[..., 2] - p[..., 0] + 1) * (p[..., 3] - p[..., 1] + 1)
        area_g = (g[..., 2] - g[..., 0] + 1) * (g[..., 3] - g[..., 1] + 1)
        union = area_p + area_g - inter
        iou = np.where(union > 0, inter / union, 0.0)
        l1 = np.abs(p - g).mean(axis=2)
    return iou > BOX_IOU_THRESHOLD, l1 < BOX_L1_THRESHOLD


def _released_box_accuracy(predicted: np.ndarray | None, gt: np.ndarray) -> float:
    if predicted is None or len(gt) == 0:
        return 0.0
    hit_iou, hit_l1 = _box_hits(predicted, gt)
    cost = 2.0 - hit_iou.astype(np.float64) - hit_l1
    rows, cols = linear_sum_assignment(cost)
    return float(np.sum(1.0 - cost[rows, cols])) / max(len(predicted), len(gt))


def _paper_box_accuracy(predicted: np.ndarray | None, gt: np.ndarray) -> float:
    if predicted is None or len(gt) == 0:
        return 0.0
    hit_iou, _ = _box_hits(predicted, gt)
    rows, cols = linear_sum_assignment(1.0 - hit_iou.astype(np.float64))
    return int(np.count_nonzero(hit_iou[rows, cols])) / max(len(predicted), len(gt))


# ---- stage 2 -------------------------------------------------------------------------------


def _stage2_item_results(answer: Any, stage1: Any) -> list[bool]:
    """Per-element pass/fail of the stage-2 format items; [] when the whole part is 0."""
    if not _is_object_list(answer):
        return []
    if not (isinstance(stage1, list) and all(map(_is_box_object, stage1))):
        return []
    if len(answer) != len(stage1):
        return []
    return [_stage2_item_ok(item, ref["bbox_2d"]) for item, ref in zip(answer, stage1, strict=True)]


def _same_box(value: Any, box: list[Any]) -> bool:
    # JSON-value equality against a list of 4 numbers: 1 equals 1.0, true never equals 1.
    return (
        isinstance(value, list)
        and len(value) == len(box)
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and v == b
            for v, b in zip(value, box, strict=True)
        )
    )


def _stage2_item_ok(item: dict[str, Any], box: list[Any]) -> bool:
    if not _same_box(item.get("bbox_2d"), box):
        return False
    points = item.get("points")
    if not isinstance(points, list):
        return False
    x1, y1, x2, y2 = box
    return all(
        isinstance(point, list)
        and len(point) == 2
        and all(map(_number, point))
        and x1 < point[0] < x2
        and y1 < point[1] < y2
        for point in points
    )


def _points_length(n: int) -> float:
    return math.exp(-((n - POINTS_MU) ** 2) / (2 * POINTS_SIGMA**2))


def _stage2_length(answer: Any) -> float:
    if not (isinstance(answer, list) and answer):
        return 0.0
    scores = [
        _points_length(len(item["points"]))
        if isinstance(item, dict) and isinstance(item.get("points"), list)
        else 0.0
        for item in answer
    ]
    return math.fsum(scores) / len(answer)
