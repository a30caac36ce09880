"""Stage rewards: tables of (response, expected parts) and a cross-check against a separate
implementation written from the SPEC text (brute-force assignment, pure-Python geometry)."""

from __future__ import annotations

import itertools
import json
import math
import re
import warnings
from dataclasses import astuple

import numpy as np
import pytest

from socioseg.train.rewards import (
    MAX_BOXES,
    VARIANTS,
    RewardParts,
    gt_boxes_from_mask,
    stage1_rewards,
    stage2_rewards,
    structure_matches,
)
from tests.test_answers import CountingStr

THINK = "<think>looking</think>"
E2 = math.exp(-2.0)  # stage-1 length when |K - J| = J


def respond(answer: str, think: str = THINK) -> str:
    return f"{think}<answer>{answer}</answer>"


def parts(fmt: float, accuracy: float, length: float, total: float | None = None) -> RewardParts:
    return RewardParts(fmt, accuracy, length, fmt + accuracy + length if total is None else total)


def assert_parts(actual: RewardParts, expected: RewardParts) -> None:
    assert isinstance(actual, RewardParts)
    assert astuple(actual) == pytest.approx(astuple(expected), abs=1e-12), (actual, expected)


GT1 = [[10, 10, 50, 50]]
BOX = '{"bbox_2d": [10, 10, 50, 50]}'

# (id, response, GT boxes, released parts, paper parts); parts(format, accuracy, length[, total])
# fmt: off
STAGE1_CASES = [
    ("perfect", respond(f"[{BOX}]"), GT1, parts(2, 1, 1), parts(1, 1, 1)),
    ("special strings", respond(f"[{BOX}]") + "<|im_end|><pad>", GT1,
     parts(2, 1, 1), parts(1, 1, 1)),
    ("whitespace", f"{THINK}\n <answer> [{BOX}] </answer>", GT1, parts(2, 1, 1), parts(1, 1, 1)),
    ("missing think", f"<answer>[{BOX}]</answer>", GT1, parts(1, 1, 1), parts(0, 1, 1, 0)),
    ("text before think", "Sure. " + respond(f"[{BOX}]"), GT1, parts(1, 1, 1), parts(0, 1, 1, 0)),
    ("truncated answer", f"{THINK}<answer>[{BOX}]", GT1, parts(0, 0, 0), parts(0, 0, 0)),
    ("single-quoted", respond("[{'bbox_2d': [10, 10, 50, 50]}]"), GT1,
     parts(1, 0, 0), parts(0, 0, 0)),
    ("extra keys", respond('[{"bbox_2d": [10, 10, 50, 50], "label": "zoo"}]'), GT1,
     parts(1, 1, 1), parts(0, 1, 1, 0)),
    ("bool coordinate", respond('[{"bbox_2d": [true, 10, 50, 50]}]'), GT1,
     parts(2, 0, 1), parts(0, 0, 1, 0)),
    ("string coordinate", respond('[{"bbox_2d": ["10", 10, 50, 50]}]'), GT1,
     parts(2, 0, 1), parts(0, 0, 1, 0)),
    ("NaN coordinate", respond('[{"bbox_2d": [NaN, 10, 50, 50]}]'), GT1,
     parts(2, 0, 1), parts(0, 0, 1, 0)),
    ("huge integer", respond('[{"bbox_2d": [1' + "0" * 400 + ", 10, 50, 50]}]"), GT1,
     parts(2, 0, 1), parts(0, 0, 1, 0)),
    ("too many digits", respond('[{"bbox_2d": [1' + "0" * 5000 + ", 10, 50, 50]}]"), GT1,
     parts(1, 0, 0), parts(0, 0, 0)),
    ("deep nesting", respond("[" * 100_000), GT1, parts(1, 0, 0), parts(0, 0, 0)),
    ("float box", respond('[{"bbox_2d": [10.4, 9.6, 50.0, 50]}]'), GT1,
     parts(2, 1, 1), parts(1, 1, 1)),
    ("three coordinates", respond('[{"bbox_2d": [10, 10, 50]}]'), GT1,
     parts(1, 0, 1), parts(0, 0, 1, 0)),
    ("bbox not a list", respond('[{"bbox_2d": "10,10,50,50"}]'), GT1,
     parts(1, 0, 0), parts(0, 0, 0)),
    ("non-object element", respond(f"[{BOX}, 5]"), GT1, parts(1, 0, 0), parts(0, 0, 0)),
    ("half the elements valid", respond(f'[{BOX}, {{"box": [1, 2, 3, 4]}}]'), GT1,
     parts(1.5, 0, 0), parts(0, 0, 0)),
    ("object, not list", respond(BOX), GT1, parts(1, 0, 0), parts(0, 0, 0)),
    ("null answer", respond("null"), GT1, parts(1, 0, 0), parts(0, 0, 0)),
    ("empty list", respond("[]"), GT1, parts(1, 0, E2), parts(0, 0, E2, 0)),
    ("duplicate boxes", respond(f"[{BOX}, {BOX}]"), GT1, parts(2, 0.5, E2), parts(1, 0.5, E2)),
    ("both criteria missed", respond(f"[{BOX}]"), [[10, 10, 90, 90]],
     parts(2, -1, 1), parts(1, 0, 1)),
    # L1 = 8 < 10 but no overlap: one criterion earns 0.
    ("l1 only", respond('[{"bbox_2d": [0, 0, 4, 4]}]'), [[8, 8, 12, 12]],
     parts(2, 0, 1), parts(1, 0, 1)),
    # IoU 0.81 but L1 exactly 10 (not < 10).
    ("iou only, l1 on threshold", respond('[{"bbox_2d": [0, 0, 200, 200]}]'), [[0, 0, 180, 180]],
     parts(2, 0, 1), parts(1, 1, 1)),
    # Inclusive pixels: 10x10 inside 10x20 is IoU exactly 0.5, which is not > 0.5.
    ("iou exactly 0.5", respond('[{"bbox_2d": [0, 0, 9, 9]}]'), [[0, 0, 9, 19]],
     parts(2, 0, 1), parts(1, 0, 1)),
    ("swapped order", respond(f'[{{"bbox_2d": [100, 100, 150, 150]}}, {BOX}]'),
     [[10, 10, 50, 50], [100, 100, 150, 150]], parts(2, 1, 1), parts(1, 1, 1)),
    ("fewer predictions", respond(f"[{BOX}]"), [[10, 10, 50, 50], [100, 100, 150, 150]],
     parts(2, 0.5, math.exp(-1)), parts(1, 0.5, math.exp(-1))),
    ("no target, one box", respond(f"[{BOX}]"), [], parts(2, 0, 0), parts(1, 0, 0)),
    ("no target, empty list", respond("[]"), [], parts(1, 0, 1), parts(0, 0, 1, 0)),
    ("no target, no answer", THINK, [], parts(0, 0, 0), parts(0, 0, 0)),
    ("inverted box", respond('[{"bbox_2d": [50, 50, 10, 10]}]'), GT1,
     parts(2, -1, 1), parts(1, 0, 1)),
]
# fmt: on


@pytest.mark.parametrize(
    ("response", "gt", "released", "paper"),
    [case[1:] for case in STAGE1_CASES],
    ids=[case[0] for case in STAGE1_CASES],
)
def test_stage1_table(response: str, gt: list, released: RewardParts, paper: RewardParts) -> None:
    assert_parts(stage1_rewards(response, gt), released)
    assert_parts(stage1_rewards(response, gt, "released"), released)
    assert_parts(stage1_rewards(response, np.asarray(gt, dtype=float), "paper"), paper)


def test_stage1_keeps_first_120_boxes() -> None:
    gt = [[4 * i, 0, 4 * i + 2, 2] for i in range(MAX_BOXES + 10)]
    answer = json.dumps([{"bbox_2d": box} for box in gt[:MAX_BOXES]])
    assert_parts(stage1_rewards(respond(answer), gt), parts(2, 1, 1))
    # 130 predictions: accuracy sees the first 120 of each side, length sees all 130 vs J = 120.
    answer = json.dumps([{"bbox_2d": box} for box in gt])
    assert_parts(stage1_rewards(respond(answer), gt), parts(2, 1, math.exp(-2 * 10 / MAX_BOXES)))


STAGE1_ANSWER = '[{"bbox_2d": [10, 10, 50, 50]}]'
TWO_BOXES = '[{"bbox_2d": [10, 10, 50, 50]}, {"bbox_2d": [60, 60, 90, 90]}]'
B1 = '"bbox_2d": [10, 10, 50, 50]'
PTS = '"points": [[20, 20], [30, 30]]'
G0 = math.exp(-4 / 8)  # stage-2 length for 0 or 4 points
G1 = math.exp(-1 / 8)  # ... for 1 or 3 points

# (id, response, stage-1 answer, released format, length, paper format); the accuracy is always
# the mask IoU.
# fmt: off
STAGE2_CASES = [
    ("perfect", respond(f"[{{{B1}, {PTS}}}]"), STAGE1_ANSWER, 2, 1, 1),
    ("no think", f"<answer>[{{{B1}, {PTS}}}]</answer>", STAGE1_ANSWER, 1, 1, 0),
    ("point on left edge", respond(f'[{{{B1}, "points": [[10, 20], [30, 30]]}}]'),
     STAGE1_ANSWER, 1, 1, 0),
    ("point on bottom edge", respond(f'[{{{B1}, "points": [[20, 50]]}}]'), STAGE1_ANSWER, 1, G1, 0),
    ("point just inside", respond(f'[{{{B1}, "points": [[10.5, 49.9]]}}]'),
     STAGE1_ANSWER, 2, G1, 1),
    ("no points", respond(f'[{{{B1}, "points": []}}]'), STAGE1_ANSWER, 2, G0, 1),
    ("four points", respond(f'[{{{B1}, "points": [[20, 20], [21, 21], [22, 22], [23, 23]]}}]'),
     STAGE1_ANSWER, 2, G0, 1),
    ("points missing", respond(f"[{{{B1}}}]"), STAGE1_ANSWER, 1, 0, 0),
    ("points not a list", respond(f'[{{{B1}, "points": 3}}]'), STAGE1_ANSWER, 1, 0, 0),
    ("malformed point", respond(f'[{{{B1}, "points": [[20]]}}]'), STAGE1_ANSWER, 1, G1, 0),
    ("bool point", respond(f'[{{{B1}, "points": [[true, 20]]}}]'), STAGE1_ANSWER, 1, G1, 0),
    ("NaN point", respond(f'[{{{B1}, "points": [[NaN, 20]]}}]'), STAGE1_ANSWER, 1, G1, 0),
    ("extra keys", respond(f'[{{{B1}, {PTS}, "why": "x"}}]'), STAGE1_ANSWER, 2, 1, 1),
    ("float copy of box", respond(f'[{{"bbox_2d": [10.0, 10, 50, 50], {PTS}}}]'),
     STAGE1_ANSWER, 2, 1, 1),
    ("different box", respond(f'[{{"bbox_2d": [10, 10, 50, 51], {PTS}}}]'),
     STAGE1_ANSWER, 1, 1, 0),
    ("bool box", respond(f'[{{"bbox_2d": [true, 10, 50, 50], {PTS}}}]'),
     '[{"bbox_2d": [1, 10, 50, 50]}]', 1, 1, 0),
    ("single-quoted stage 1", respond(f"[{{{B1}, {PTS}}}]"),
     "[{'bbox_2d': [10, 10, 50, 50]}]", 2, 1, 1),
    ("single-quoted stage 2", respond(f"[{{{B1}, {PTS}}}]".replace('"', "'")),
     STAGE1_ANSWER, 1, 0, 0),
    ("no stage-1 answer", respond(f"[{{{B1}, {PTS}}}]"), None, 1, 1, 0),
    ("stage 1 not box objects", respond(f'[{{"bbox_2d": [10, 10, 50], {PTS}}}]'),
     '[{"bbox_2d": [10, 10, 50]}]', 1, 1, 0),
    ("fewer than stage 1", respond(f"[{{{B1}, {PTS}}}]"), TWO_BOXES, 1, 1, 0),
    ("more than stage 1", respond(f"[{{{B1}, {PTS}}}, {{{B1}, {PTS}}}]"), STAGE1_ANSWER, 1, 1, 0),
    ("one of two valid",
     respond(f'[{{{B1}, {PTS}}}, {{"bbox_2d": [60, 60, 90, 90], "points": [[95, 70]]}}]'),
     TWO_BOXES, 1.5, (1 + G1) / 2, 0),
    ("non-object element", respond(f"[{{{B1}, {PTS}}}, 7]"), TWO_BOXES, 1, 0.5, 0),
    ("empty list", respond("[]"), "[]", 1, 0, 0),
    ("truncated", f"{THINK}<answer>[{{{B1}, {PTS}}}]", STAGE1_ANSWER, 0, 0, 0),
]
# fmt: on


@pytest.mark.parametrize(
    ("response", "stage1", "fmt", "length", "paper_fmt"),
    [case[1:] for case in STAGE2_CASES],
    ids=[case[0] for case in STAGE2_CASES],
)
def test_stage2_table(
    response: str, stage1: str | None, fmt: float, length: float, paper_fmt: int
) -> None:
    gt = np.zeros((6, 6), dtype=bool)
    gt[1:3, 1:3] = True
    pred = np.zeros((6, 6), dtype=bool)
    pred[1:3, 1:5] = True  # IoU 4 / 8
    assert_parts(stage2_rewards(response, stage1, pred, gt), parts(fmt, 0.5, length))
    expected_paper = parts(paper_fmt, 0.5, length, None if paper_fmt else 0)
    assert_parts(stage2_rewards(response, stage1, pred, gt, "paper"), expected_paper)


def test_stage2_accuracy_is_zero_for_two_empty_masks() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    response = respond(f'[{{"bbox_2d": [10, 10, 50, 50], {PTS}}}]')
    assert_parts(stage2_rewards(response, STAGE1_ANSWER, empty, empty), parts(2, 0, 1))


def test_caller_errors_raise() -> None:
    with pytest.raises(ValueError, match=r"released.*paper"):
        stage1_rewards(respond("[]"), GT1, "grpo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"released.*paper"):
        stage2_rewards("", None, np.zeros((2, 2)), np.zeros((2, 2)), "Paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 3\)"):
        stage2_rewards("", None, np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="J x 4"):
        stage1_rewards("", [1, 2, 3, 4])


ODD_RESPONSES = [
    "",
    "</answer><answer>",
    "<answer></answer>" * 3,
    '<think></think><answer>[{"bbox_2d": [1e308, -1e308, 1e308, 1e308]}]</answer>',
    '<think></think><answer>[{"bbox_2d": [-1e308, 0, 1e308, 5]}]</answer>',
    '<think></think><answer>[{"bbox_2d": [Infinity, 0, 1, 1], "points": [[-Infinity, 1]]}]',
    '<think>\u00e9\U0001f600</think><answer>[{}, [], "", {"bbox_2d": null}]</answer>',
    "<answer>" + "{" * 50_000 + "</answer>",
]


@pytest.mark.parametrize("response", ODD_RESPONSES)
def test_never_raises_or_warns_on_odd_output(response: str) -> None:
    mask = np.ones((3, 3), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for variant in VARIANTS:
            one = stage1_rewards(response, [[0, 0, 5, 5], [-1e308, 0, 1e308, 5]], variant)
            two = stage2_rewards(response, STAGE1_ANSWER, mask, mask, variant)
            for result in (one, two):
                assert all(math.isfinite(v) for v in astuple(result))
                assert -1 <= result.accuracy <= 1 and 0 <= result.length <= 1


def test_gt_boxes_from_mask() -> None:
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[2:7, 3:8] = 255  # 5x5: contour area 16, kept
    mask[20:23, 20:23] = 255  # 3x3: contour area 4, dropped
    mask[30:35, 10:30] = 1  # 5x20: kept
    assert sorted(gt_boxes_from_mask(mask)) == [[3, 2, 8, 7], [10, 30, 30, 35]]
    assert gt_boxes_from_mask(np.zeros((5, 5), dtype=bool)) == []
    assert gt_boxes_from_mask(np.zeros((0, 5), dtype=bool)) == []


# ---- cross-check against a separate implementation of the SPEC text --------------------------


def _ref_num(v: object) -> bool:
    return type(v) in (int, float) and abs(v) <= 1.7976931348623157e308  # False for NaN too


def _ref_answer(response: str) -> object:
    for special in ("<|im_end|>", "<|endoftext|>", "<pad>"):
        response = response.replace(special, "")
    match = re.search(r"<answer>(.*?)</answer>", response, re.DOTALL)
    if match is None:
        return "NOT JSON"
    try:
        return json.loads(match.group(1).strip())
    except (ValueError, RecursionError):
        return "NOT JSON"


def _ref_structure(response: str) -> int:
    for special in ("<|im_end|>", "<|endoftext|>", "<pad>"):
        response = response.replace(special, "")
    pattern = r"<think>.*?</think>\s*<answer>.*?</answer>"
    return int(re.fullmatch(pattern, response, re.DOTALL) is not None)


def _ref_box_object(x: object) -> bool:
    if type(x) is not dict or "bbox_2d" not in x:
        return False
    box = x["bbox_2d"]
    return type(box) is list and len(box) == 4 and all(_ref_num(v) for v in box)


def _ref_iou(a: list, b: list) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(
        0, min(a[3], b[3]) - max(a[1], b[1]) + 1
    )
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union if union > 0 else 0.0


def _ref_best_assignment(score: list[list[int]], k: int, j: int) -> int:
    """Max over one-to-one assignments of the summed integer scores (brute force)."""
    if k <= j:
        return max(
            sum(score[i][p[i]] for i in range(k)) for p in itertools.permutations(range(j), k)
        )
    return max(sum(score[p[c]][c] for c in range(j)) for p in itertools.permutations(range(k), j))


def _ref_stage1(response: str, gt: list, variant: str) -> RewardParts:
    answer, structure = _ref_answer(response), _ref_structure(response)
    gt = gt[:120]
    objects = type(answer) is list and len(answer) > 0 and all(type(x) is dict for x in answer)
    if variant == "released":
        good = (
            [
                set(x) == {"bbox_2d"} and type(x["bbox_2d"]) is list and len(x["bbox_2d"]) == 4
                for x in answer
            ]
            if objects
            else []
        )
        fmt = structure + (sum(good) / len(good) if good else 0)
    else:
        fmt = int(
            structure == 1
            and objects
            and all(set(x) == {"bbox_2d"} and _ref_box_object(x) for x in answer)
        )
    accuracy = 0.0
    if objects and all(_ref_box_object(x) for x in answer) and gt:
        pred = [x["bbox_2d"] for x in answer][:120]
        iou_hit = [[int(_ref_iou(p, g) > 0.5) for g in gt] for p in pred]
        if variant == "released":
            l1_hit = [
                [int(sum(abs(a - b) for a, b in zip(p, g, strict=True)) / 4 < 10) for g in gt]
                for p in pred
            ]
            score = [
                [iou_hit[i][c] + l1_hit[i][c] - 1 for c in range(len(gt))] for i in range(len(pred))
            ]
        else:
            score = iou_hit
        accuracy = _ref_best_assignment(score, len(pred), len(gt)) / max(len(pred), len(gt))
    length = 0.0
    if type(answer) is list and all(
        type(x) is dict and type(x.get("bbox_2d")) is list for x in answer
    ):
        k, j = len(answer), len(gt)
        length = (1.0 if k == 0 else 0.0) if j == 0 else math.exp(-2 * abs(k - j) / j)
    return _ref_parts(fmt, accuracy, length, variant)


def _ref_parts(fmt: float, accuracy: float, length: float, variant: str) -> RewardParts:
    total = 0.0 if variant == "paper" and fmt == 0 else fmt + accuracy + length
    return RewardParts(fmt, accuracy, length, total)


def _ref_stage2(response: str, stage1: str | None, iou: float, variant: str) -> RewardParts:
    answer, structure = _ref_answer(response), _ref_structure(response)
    try:
        first = json.loads(stage1.replace("'", '"')) if stage1 is not None else None
    except ValueError:
        first = None
    good: list[bool] = []
    if (
        type(answer) is list
        and answer
        and all(type(x) is dict for x in answer)
        and type(first) is list
        and all(_ref_box_object(x) for x in first)
        and len(first) == len(answer)
    ):
        for element, reference in zip(answer, first, strict=True):
            box, ref_box, points = (
                element.get("bbox_2d"),
                reference["bbox_2d"],
                element.get("points"),
            )
            ok = (
                type(box) is list
                and len(box) == 4
                and all(
                    type(v) in (int, float) and v == w for v, w in zip(box, ref_box, strict=True)
                )
                and type(points) is list
            )
            if ok:
                for point in points:
                    well_formed = (
                        type(point) is list and len(point) == 2 and all(map(_ref_num, point))
                    )
                    x_in = well_formed and ref_box[0] < point[0] < ref_box[2]
                    ok = ok and x_in and ref_box[1] < point[1] < ref_box[3]
            good.append(ok)
    if variant == "released":
        fmt = structure + (sum(good) / len(good) if good else 0)
    else:
        fmt = int(structure == 1 and len(good) > 0 and all(good))
    length = 0.0
    if type(answer) is list and answer:
        total = 0.0
        for x in answer:
            if type(x) is dict and type(x.get("points")) is list:
                total += math.exp(-((len(x["points"]) - 2) ** 2) / 8)
        length = total / len(answer)
    return _ref_parts(fmt, iou, length, variant)


def _random_value(rng: np.random.Generator) -> object:
    return [1, "a", None, True, [1, 2], {"x": 1}, 2.5, float("nan")][rng.integers(0, 8)]


def _is_number_box(box: object) -> bool:
    return isinstance(box, list) and len(box) == 4 and all(map(_ref_num, box))


def _random_box(rng: np.random.Generator, near: list | None) -> object:
    kind = rng.integers(0, 10)
    if near is not None and kind < 5:
        return [int(v + rng.integers(-12, 13)) if kind < 4 else float(v) for v in near]
    if kind < 7:
        x, y = (int(v) for v in rng.integers(0, 200, 2))
        return [x, y, x + int(rng.integers(-5, 60)), y + int(rng.integers(-5, 60))]
    box = [int(v) for v in rng.integers(0, 200, 4)]
    if kind == 7:
        box[rng.integers(0, 4)] = _random_value(rng)
        return box
    return box[: rng.integers(0, 4)] if kind == 8 else [*box, 1]


def _random_points(rng: np.random.Generator, box: object) -> object:
    if rng.random() < 0.08:
        return _random_value(rng)
    usable = isinstance(box, list) and len(box) == 4 and all(map(_ref_num, box))
    points: list[object] = []
    for _ in range(rng.integers(0, 5)):
        mode = rng.integers(0, 10)
        if usable and mode < 7:  # inside (unless the box is degenerate)
            tx, ty = rng.random(2)
            points.append([box[0] + tx * (box[2] - box[0]), box[1] + ty * (box[3] - box[1])])
        elif usable and mode < 9:  # on the left edge, or a pixel either side of it
            points.append([box[0] + int(rng.integers(-1, 2)), (box[1] + box[3]) / 2])
        elif mode == 9:
            points.append(_random_value(rng))
        else:
            points.append([int(v) for v in rng.integers(0, 200, 2)])
    return points


def _random_item(rng: np.random.Generator, box: object, with_points: bool) -> object:
    kind = rng.integers(0, 12)
    if kind == 0:
        return _random_value(rng)
    item: dict[str, object] = {"bbox_2d": box} if kind != 1 else {"box": box}
    if with_points and kind != 2:
        item["points"] = _random_points(rng, box)
    if kind == 3:
        item["label"] = "x"
    return item


def _wrap(rng: np.random.Generator, answer: object) -> str:
    text = json.dumps(answer)
    kind = rng.integers(0, 20)
    if kind == 0:
        text = text.replace('"', "'")
    elif kind == 1:
        text = text[: rng.integers(0, len(text) + 1)]
    elif kind == 2:
        text = "none"
    think = ["<think>a</think>", "<think>b</think>\n", "", "<think>unclosed", "x<think>c</think>"]
    head = think[min(rng.integers(0, 8), 4) if rng.random() < 0.5 else 0]
    tail = ["", "<|im_end|>", "<pad><pad>", " trailing"][rng.integers(0, 4)]
    if rng.random() < 0.08:
        return f"{head}<answer>{text}{tail}"
    return f"{head}<answer> {text} </answer>{tail}"


def _valid_box(rng: np.random.Generator) -> list[int]:
    x, y = (int(v) for v in rng.integers(0, 200, 2))
    return [x, y, x + int(rng.integers(1, 60)), y + int(rng.integers(1, 60))]


def test_stage1_against_separate_implementation() -> None:
    rng = np.random.default_rng(1)
    for _ in range(2000):
        gt = [_valid_box(rng) for _ in range(rng.integers(0, 4))]
        near = [gt[rng.integers(0, len(gt))] if gt else None for _ in range(rng.integers(0, 5))]
        if rng.random() < 0.5:  # well-formed: box objects, mostly near a GT box
            answer: object = [{"bbox_2d": _random_box(rng, box)} for box in near]
            answer = [x for x in answer if _is_number_box(x["bbox_2d"])]
        elif rng.random() < 0.9:
            answer = [_random_item(rng, _random_box(rng, box), False) for box in near]
        else:
            answer = _random_value(rng)
        response = _wrap(rng, answer)
        for variant in VARIANTS:
            expected = _ref_stage1(response, gt, variant)
            assert_parts(stage1_rewards(response, gt, variant), expected)


def test_stage2_against_separate_implementation() -> None:
    rng = np.random.default_rng(2)
    masks = [rng.random((5, 5)) < p for p in (0.0, 0.2, 0.5)]
    for _ in range(2000):
        well_formed = rng.random() < 0.5
        if well_formed:
            boxes: list[object] = [_valid_box(rng) for _ in range(rng.integers(1, 4))]
            stage1: str | None = json.dumps([{"bbox_2d": box} for box in boxes])
        else:
            boxes = [_random_box(rng, None) for _ in range(rng.integers(0, 4))]
            stage1_items = [
                _random_item(rng, box, False) if rng.random() < 0.1 else {"bbox_2d": box}
                for box in boxes
            ]
            stage1 = json.dumps(stage1_items)
            if rng.random() < 0.1:
                stage1 = stage1.replace('"', "'")
            elif rng.random() < 0.05:
                stage1 = None
        copies = [
            b if rng.random() < 0.8 else _random_box(rng, b if _is_number_box(b) else None)
            for b in boxes
        ]
        if rng.random() < 0.15:
            copies = copies[:-1] if rng.random() < 0.5 else [*copies, _random_box(rng, None)]
        if well_formed:
            items = [{"bbox_2d": box, "points": _random_points(rng, box)} for box in copies]
        else:
            items = [_random_item(rng, box, True) for box in copies]
        response = _wrap(rng, items)
        pred, gt = masks[rng.integers(0, 3)], masks[rng.integers(0, 3)]
        union = np.count_nonzero(pred | gt)
        iou = np.count_nonzero(pred & gt) / union if union else 0.0
        for variant in VARIANTS:
            expected = _ref_stage2(response, stage1, iou, variant)
            assert_parts(stage2_rewards(response, stage1, pred, gt, variant), expected)


# ---- structure: the released pattern, checked in linear time ---------------------------------

_STRUCTURE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_PIECES = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "\u3000", "\x1c", "\x85"]
_PIECES += ["a", "<", ">", "</", "think>", "<answer", "answer>", "</think", "{}", "\t\r"]


def _structure_corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    corpus = []
    for _ in range(n):
        pieces = [_PIECES[i] for i in rng.integers(0, len(_PIECES), rng.integers(0, 14))]
        shape = rng.integers(0, 3)
        if shape == 1:  # close to well-formed: tags in order with noise in between
            pieces = ["<think>", *pieces[:3], "</think>", *pieces[3:5], "<answer>", *pieces[5:]]
            pieces.append("</answer>")
        elif shape == 2:
            pieces = ["<think>", *pieces, "</answer>"]
        corpus.append("".join(pieces))
    return corpus


def test_structure_equals_the_released_pattern_on_generated_responses():
    corpus = _structure_corpus(5000, seed=4)
    corpus += [respond("[]"), respond("[]", think="<think></think> \n"), "<think></think><answer>"]
    results = [structure_matches(text) for text in corpus]
    assert results == [_STRUCTURE.fullmatch(text) is not None for text in corpus]
    assert 500 < sum(results) < len(corpus) - 500  # both outcomes are well represented


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "<think>" * n + "</answer>",
        lambda n: "<think>" + "</think> " * n + "</answer>",
        lambda n: "<think>" + ("</think>" + " " * 7 + "x") * n + "<answer></answer>",
        lambda n: "<think></think>" + " " * n + "</answer>",
    ],
)
def test_structure_check_is_linear(make):
    def work(n: int) -> int:
        text = CountingStr(make(n))
        structure_matches(text)
        return text.work

    small, large = work(4000), work(8000)
    assert small >= len(make(4000)) // 2  # the scan reads the text through the counter
    assert large <= 2.1 * small + 100
