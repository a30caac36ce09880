"""Segmentation metrics: hand-computed cases and a cross-check against a separate implementation."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import ndimage

from socioseg.metrics import (
    SampleScore,
    SegmentationScores,
    instance_counts,
    instance_iou_matrix,
    intersection_union,
    mask_iou,
    score_sample,
)


def mask(shape: tuple[int, int], *rects: tuple[int, int, int, int]) -> np.ndarray:
    """Bool mask with the given (row0, col0, row1, col1) half-open rectangles set."""
    out = np.zeros(shape, dtype=bool)
    for r0, c0, r1, c1 in rects:
        out[r0:r1, c0:c1] = True
    return out


EMPTY = mask((8, 8))
SQUARE = mask((8, 8), (1, 1, 3, 3))  # 4 pixels


# ---- hand-computed cases -------------------------------------------------------------------


def test_empty_gt() -> None:
    assert score_sample(SQUARE, EMPTY) == SampleScore(0, 4, 0.0, 0, 1, 0)
    assert mask_iou(SQUARE, EMPTY) == 0.0


def test_empty_prediction() -> None:
    assert score_sample(EMPTY, SQUARE) == SampleScore(0, 4, 0.0, 0, 0, 1)


def test_both_empty() -> None:
    assert score_sample(EMPTY, EMPTY) == SampleScore(0, 0, 1.0, 0, 0, 0)
    assert mask_iou(EMPTY, EMPTY) == 0.0
    assert mask_iou(EMPTY, EMPTY, empty=1.0) == 1.0
    assert intersection_union(EMPTY, EMPTY) == (0, 0)


def test_partial_overlap() -> None:
    pred = mask((8, 8), (1, 1, 3, 5))  # 8 pixels containing SQUARE
    assert intersection_union(pred, SQUARE) == (4, 8)
    assert mask_iou(pred, SQUARE) == 0.5
    # IoU exactly 0.5 is a true positive (>= 0.5).
    assert instance_counts(pred, SQUARE) == (1, 0, 0)
    pred = mask((8, 8), (1, 1, 3, 6))  # 10 pixels: IoU 0.4
    assert instance_counts(pred, SQUARE) == (0, 1, 1)


def test_several_instances() -> None:
    gt = mask((10, 10), (0, 0, 2, 2), (0, 5, 2, 7), (6, 0, 9, 3))  # 4 + 4 + 9 pixels
    pred = mask((10, 10), (0, 0, 2, 2), (0, 6, 2, 8), (6, 0, 7, 1), (9, 9, 10, 10))
    ious = instance_iou_matrix(pred, gt)
    assert ious.shape == (4, 3)
    assert sorted(ious.max(axis=1).tolist()) == pytest.approx([0.0, 1 / 9, 1 / 3, 1.0])
    # exact match: TP; half-shifted square IoU 2/6: no; 1 pixel of 9: no; stray pixel: FP.
    assert score_sample(pred, gt) == SampleScore(4 + 2 + 1, 17 + 10 - 7, 7 / 20, 1, 3, 2)


def test_one_prediction_covering_two_gt_instances() -> None:
    gt = mask((6, 12), (0, 0, 2, 2), (0, 4, 2, 6))  # two 2x2 squares
    pred = mask((6, 12), (0, 0, 2, 6))  # one 2x6 bar over both: IoU 4/12 with each
    assert score_sample(pred, gt) == SampleScore(8, 12, 8 / 12, 0, 1, 2)
    big_and_small = mask((8, 8), (0, 0, 4, 4), (0, 5, 1, 6))  # 16 + 1 pixels
    cover = mask((8, 8), (0, 0, 4, 4), (0, 4, 1, 6))  # 16 + bridge + the small one
    assert instance_counts(cover, big_and_small) == (1, 0, 1)  # IoU 16/18 with the big one


def test_components_are_8_connected() -> None:
    diagonal = np.eye(4, dtype=bool)
    assert instance_counts(diagonal, diagonal) == (1, 0, 0)
    two = mask((4, 4), (0, 0, 1, 1), (0, 2, 1, 3))  # a gap of one pixel: two instances
    assert instance_counts(two, two) == (2, 0, 0)


def test_non_bool_masks_and_zero_size() -> None:
    assert mask_iou(SQUARE.astype(np.uint8) * 255, SQUARE) == 1.0
    assert score_sample(SQUARE[:, ::2], SQUARE[:, ::2]).tp == 1  # strided views
    zero = np.zeros((0, 5), dtype=bool)
    assert score_sample(zero, zero) == SampleScore(0, 0, 1.0, 0, 0, 0)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 9\)"):
        score_sample(EMPTY, np.zeros((8, 9), dtype=bool))
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(8, 8\)"):
        mask_iou(np.zeros((4, 4), bool), EMPTY)
    with pytest.raises(ValueError, match="2-D"):
        intersection_union(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))


def test_sample_score_round_trip_and_validation() -> None:
    score = score_sample(mask((8, 8), (0, 0, 3, 3)), SQUARE)
    row = json.loads(json.dumps({"id": "x", **score.to_dict()}))
    assert SampleScore.from_dict(row) == score
    with pytest.raises(ValueError, match="lacks"):
        SampleScore.from_dict({"iou": 1.0})
    with pytest.raises(ValueError):
        SampleScore(5, 4, 1.0, 0, 0, 0)


# ---- the accumulator -----------------------------------------------------------------------


def test_split_metrics_by_hand() -> None:
    scores = SegmentationScores()
    scores.add(SampleScore(4, 8, 0.5, 1, 0, 0), "socio-name")
    scores.add(SampleScore(0, 0, 1.0, 0, 0, 0), "socio-name")
    scores.add(SampleScore(0, 4, 0.0, 0, 1, 1), "socio-class")
    result = scores.compute()
    assert list(result) == ["all", "socio-class", "socio-name"]
    assert result["all"] == {"cIoU": 4 / 12, "gIoU": 0.5, "F1": 2 / 4, "n": 3}
    assert result["socio-name"] == {"cIoU": 0.5, "gIoU": 0.75, "F1": 1.0, "n": 2}
    assert result["socio-class"] == {"cIoU": 0.0, "gIoU": 0.0, "F1": 0.0, "n": 1}
    assert len(scores) == 3


def test_all_empty_split_and_empty_accumulator() -> None:
    scores = SegmentationScores()
    assert all(math.isnan(scores.compute()["all"][k]) for k in ("cIoU", "gIoU", "F1"))
    scores.update(EMPTY, EMPTY)
    assert scores.compute() == {"all": {"cIoU": 1.0, "gIoU": 1.0, "F1": 1.0, "n": 1}}
    with pytest.raises(ValueError, match="reserved"):
        scores.add(SampleScore(0, 0, 1.0, 0, 0, 0), "all")


def test_merge_equals_single_pass() -> None:
    rng = np.random.default_rng(3)
    levels = ["socio-name", "socio-class", None, "socio-function"]
    samples = [
        (rng.random((12, 12)) < rng.random(), rng.random((12, 12)) < 0.3, levels[i % 4])
        for i in range(200)
    ]
    single = SegmentationScores()
    for pred, gt, level in samples:
        single.update(pred, gt, level)
    shards = [SegmentationScores() for _ in range(3)]
    for i, (pred, gt, level) in enumerate(samples):
        shards[(i * 7) % 3].update(pred, gt, level)
    for order in ([0, 1, 2], [2, 0, 1]):
        merged = SegmentationScores()
        for index in order:
            merged.merge(shards[index])
        assert merged.compute() == single.compute()  # exact, not approximate
    assert set(single.compute()) == {"all", "socio-name", "socio-class", "socio-function"}


# ---- cross-check against a separate implementation ------------------------------------------


def _reference(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, set[int], int, int] | None:
    """(intersection, union, possible TP counts, #pred, #gt) via ndimage + brute force.

    None when a side has more than 5 instances (too many permutations to enumerate).
    """
    structure = np.ones((3, 3), dtype=int)
    pred_labels, n_pred = ndimage.label(pred, structure=structure)
    gt_labels, n_gt = ndimage.label(gt, structure=structure)
    if max(n_pred, n_gt) > 5:
        return None
    pred_sets = [set(zip(*np.nonzero(pred_labels == i), strict=True)) for i in range(1, n_pred + 1)]
    gt_sets = [set(zip(*np.nonzero(gt_labels == j), strict=True)) for j in range(1, n_gt + 1)]
    iou = [[Fraction(len(p & g), len(p | g)) for g in gt_sets] for p in pred_sets]
    # Every one-to-one assignment of the smaller side into the larger; keep the TP counts of
    # all assignments with the maximal (exact) IoU sum.
    best, tps = Fraction(-1), set()
    if n_pred <= n_gt:
        pairs_list = [
            list(zip(range(n_pred), perm, strict=True))
            for perm in itertools.permutations(range(n_gt), n_pred)
        ]
    else:
        pairs_list = [
            list(zip(perm, range(n_gt), strict=True))
            for perm in itertools.permutations(range(n_pred), n_gt)
        ]
    for pairs in pairs_list:
        total = sum((iou[i][j] for i, j in pairs), Fraction(0))
        tp = sum(1 for i, j in pairs if iou[i][j] >= Fraction(1, 2))
        if total > best:
            best, tps = total, {tp}
        elif total == best:
            tps.add(tp)
    inter = sum(1 for a, b in zip(pred.ravel(), gt.ravel(), strict=True) if a and b)
    union = sum(1 for a, b in zip(pred.ravel(), gt.ravel(), strict=True) if a or b)
    return inter, union, tps, n_pred, n_gt


def _random_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    out = rng.random(shape) < rng.uniform(0.0, 0.25)
    for _ in range(rng.integers(0, 3)):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        out[r : r + rng.integers(1, 5), c : c + rng.integers(1, 5)] = True
    return out


def test_against_separate_implementation() -> None:
    rng = np.random.default_rng(0)
    scores, checked = SegmentationScores(), 0
    inter_sum = union_sum = tp_sum = fp_sum = fn_sum = 0
    iou_sum = Fraction(0)
    while checked < 2500:
        shape = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        gt = _random_mask(rng, shape)
        # Half the predictions are noisy copies of the GT, so that matches occur often.
        noise = rng.random(shape) < 0.1
        pred = gt ^ noise if rng.random() < 0.5 else _random_mask(rng, shape)
        reference = _reference(pred, gt)
        if reference is None:
            continue
        inter, union, tps, n_pred, n_gt = reference
        checked += 1
        score = scores.update(pred, gt)
        assert (score.intersection, score.union) == (inter, union)
        assert score.iou == (1.0 if union == 0 else inter / union)
        assert score.tp in tps
        assert (score.fp, score.fn) == (n_pred - score.tp, n_gt - score.tp)
        inter_sum, union_sum = inter_sum + inter, union_sum + union
        tp_sum, fp_sum, fn_sum = tp_sum + score.tp, fp_sum + score.fp, fn_sum + score.fn
        iou_sum += Fraction(1) if union == 0 else Fraction(inter, union)
    result = scores.compute()["all"]
    assert result["n"] == checked
    assert result["cIoU"] == pytest.approx(inter_sum / union_sum, abs=1e-15)
    assert result["gIoU"] == pytest.approx(float(iou_sum / checked), abs=1e-15)
    assert result["F1"] == pytest.approx(2 * tp_sum / (2 * tp_sum + fp_sum + fn_sum), abs=1e-15)
