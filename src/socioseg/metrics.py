"""Segmentation metrics: the one IoU definition shared by evaluation and the training rewards.

All masks are ``H x W`` arrays read as booleans (any non-zero value is foreground), compared at
the ground truth's resolution: the caller resizes the prediction first, and a shape mismatch is
an error, never a silent broadcast.

Definitions (per split, and per query level):

- **IoU** of one sample: ``|pred & gt| / |pred | gt|``. When the union is empty (both masks
  empty) :func:`mask_iou` returns its ``empty`` argument: the rewards use 0 (nothing to find
  earns nothing), the metrics use 1 (correctly predicting nothing is a perfect answer).
- **gIoU**: the mean over samples of the per-sample IoU, a sample where both masks are empty
  scoring 1.
- **cIoU**: the sum over samples of the intersections divided by the sum over samples of the
  unions (pixel counts). When the total union is 0, every sample had both masks empty, and
  cIoU is 1.
- **F1** (instance level; the paper does not define it): the instances of a mask are its
  8-connected components. The prediction's and the GT's instances are matched one-to-one by the
  Hungarian assignment that maximises the summed IoU; a matched pair is a true positive when
  its IoU is >= 0.5. Per sample, FP = predicted instances - TP and FN = GT instances - TP.
  TP, FP and FN are summed over the split and F1 = 2 TP / (2 TP + FP + FN), which is 1 when
  the split holds no instance at all (every mask empty).

All three are fractions in [0, 1]. A split with no samples reports NaN for each.

Scores of shards merge exactly: integer counts are summed, and gIoU is the correctly rounded
sum (:func:`math.fsum`) of the stored per-sample IoUs, so merging shards in any order gives
bit-for-bit the numbers of a single pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

# A matched pair of instances is a true positive at or above this IoU.
INSTANCE_IOU_THRESHOLD = 0.5
# Instances are connected components under this pixel connectivity.
INSTANCE_CONNECTIVITY = 8
# The key under which :meth:`SegmentationScores.compute` reports every sample together.
ALL = "all"


def _as_bool(mask: Any) -> np.ndarray:
    array = np.asarray(mask)
    return array if array.dtype == np.bool_ else array != 0


def _check_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_bool(pred), _as_bool(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction mask has shape {pred.shape} but GT mask has shape {gt.shape}; "
            "resize the prediction to the GT resolution first"
        )
    if pred.ndim != 2:
        raise ValueError(f"masks must be 2-D (H x W), got shape {pred.shape}")
    return pred, gt


def intersection_union(pred: Any, gt: Any) -> tuple[int, int]:
    """Pixel counts ``(|pred & gt|, |pred | gt|)``.

    Args:
        pred: H x W mask (bool, or any dtype where non-zero is foreground), GT resolution.
        gt: H x W mask, same shape.

    Raises:
        ValueError: the shapes differ (both are named) or the masks are not 2-D.
    """
    pred, gt = _check_pair(pred, gt)
    intersection = int(np.count_nonzero(pred & gt))
    union = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt)) - intersection
    return intersection, union


def mask_iou(pred: Any, gt: Any, empty: float = 0.0) -> float:
    """IoU of two H x W masks; ``empty`` when their union is empty.

    The rewards call this with ``empty=0.0``; gIoU uses 1.0 (both masks empty is a perfect
    answer).
    """
    intersection, union = intersection_union(pred, gt)
    return float(empty) if union == 0 else intersection / union


def _labels(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of labels including the background 0, H x W int32 label image)."""
    mask = np.ascontiguousarray(mask).view(np.uint8)
    return cv2.connectedComponents(mask, connectivity=INSTANCE_CONNECTIVITY)


def _joint_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(P + 1) x (G + 1) int64 pixel counts of (pred instance, GT instance) label pairs.

    Row / column 0 is the background; only pixels of the union are counted, so entry [0, 0] is
    0, the table sums to the union and ``table[1:, 1:]`` sums to the intersection. One bincount
    over the union's pixels replaces a loop over instance pairs.
    """
    union = pred | gt
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        # Also keeps zero-size arrays away from OpenCV, which crashes on them.
        return np.zeros((1, 1), dtype=np.int64)
    cols = np.flatnonzero(union.any(axis=0))
    # Labelling only the union's bounding box gives the same components, for less work.
    window = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    n_pred, pred_labels = _labels(pred[window])
    n_gt, gt_labels = _labels(gt[window])
    where = np.flatnonzero(union[window])
    joint = pred_labels.ravel()[where].astype(np.int64) * n_gt + gt_labels.ravel()[where]
    return np.bincount(joint, minlength=n_pred * n_gt).reshape(n_pred, n_gt)


def _instance_ious(table: np.ndarray) -> np.ndarray:
    inter = table[1:, 1:]
    union = table[1:, :].sum(axis=1)[:, None] + table[:, 1:].sum(axis=0)[None, :] - inter
    return inter / union


def instance_iou_matrix(pred: Any, gt: Any) -> np.ndarray:
    """IoU between every predicted and every GT instance (8-connected components).

    Returns:
        P x G float64 array, P / G = number of predicted / GT instances, rows and columns in
        OpenCV's component label order.
    """
    pred, gt = _check_pair(pred, gt)
    return _instance_ious(_joint_counts(pred, gt))


def _match(ious: np.ndarray) -> tuple[int, int, int]:
    n_pred, n_gt = ious.shape
    if n_pred == 0 or n_gt == 0:
        return 0, n_pred, n_gt
    rows, cols = linear_sum_assignment(ious, maximize=True)
    tp = int(np.count_nonzero(ious[rows, cols] >= INSTANCE_IOU_THRESHOLD))
    return tp, n_pred - tp, n_gt - tp


def instance_counts(pred: Any, gt: Any) -> tuple[int, int, int]:
    """Instance-level ``(TP, FP, FN)`` of one sample, as defined in the module docstring."""
    return _match(instance_iou_matrix(pred, gt))


@dataclass(frozen=True)
class SampleScore:
    """Everything the split metrics need from one sample.

    ``intersection`` / ``union`` are pixel counts at the GT resolution; ``iou`` follows the
    gIoU convention (1.0 when both masks are empty); ``tp`` / ``fp`` / ``fn`` are instance
    counts.
    """

    intersection: int
    union: int
    iou: float
    tp: int
    fp: int
    fn: int

    def __post_init__(self) -> None:
        counts = (self.intersection, self.union, self.tp, self.fp, self.fn)
        if any(isinstance(c, bool) or not isinstance(c, int | np.integer) for c in counts):
            raise ValueError(f"SampleScore counts must be integers, got {self}")
        if min(counts) < 0 or self.intersection > self.union:
            raise ValueError(f"SampleScore counts must be >= 0 with intersection <= union: {self}")
        if not 0.0 <= self.iou <= 1.0:
            raise ValueError(f"SampleScore iou must lie in [0, 1], got {self.iou}")

    def to_dict(self) -> dict[str, int | float]:
        """Plain ``{"intersection", "union", "iou", "tp", "fp", "fn"}`` (JSON-safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> SampleScore:
        """Read the fields written by :meth:`to_dict`; other keys in ``row`` are ignored."""
        missing = [name for name in _SCORE_FIELDS if name not in row]
        if missing:
            raise ValueError(f"row lacks SampleScore fields {missing}; it has {sorted(row)}")
        return cls(
            intersection=int(row["intersection"]),
            union=int(row["union"]),
            iou=float(row["iou"]),
            tp=int(row["tp"]),
            fp=int(row["fp"]),
            fn=int(row["fn"]),
        )


_SCORE_FIELDS = ("intersection", "union", "iou", "tp", "fp", "fn")


def score_sample(pred: Any, gt: Any) -> SampleScore:
    """Score one prediction against its GT (both H x W, GT resolution; non-zero = foreground).

    Raises:
        ValueError: the shapes differ.
    """
    pred, gt = _check_pair(pred, gt)
    table = _joint_counts(pred, gt)
    intersection = int(table[1:, 1:].sum())
    union = int(table.sum())
    iou = 1.0 if union == 0 else intersection / union
    tp, fp, fn = _match(_instance_ious(table))
    return SampleScore(intersection, union, iou, tp, fp, fn)


@dataclass
class _Totals:
    intersection: int = 0
    union: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    ious: list[float] = field(default_factory=list)

    def add(self, score: SampleScore) -> None:
        self.intersection += int(score.intersection)
        self.union += int(score.union)
        self.tp += int(score.tp)
        self.fp += int(score.fp)
        self.fn += int(score.fn)
        self.ious.append(float(score.iou))

    def merge(self, other: _Totals) -> None:
        self.intersection += other.intersection
        self.union += other.union
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.ious.extend(other.ious)

    def summary(self) -> dict[str, float | int]:
        n = len(self.ious)
        if n == 0:
            return {"cIoU": math.nan, "gIoU": math.nan, "F1": math.nan, "n": 0}
        # A zero total union means every sample had both masks empty: all perfect.
        ciou = 1.0 if self.union == 0 else self.intersection / self.union
        denominator = 2 * self.tp + self.fp + self.fn
        f1 = 1.0 if denominator == 0 else 2 * self.tp / denominator
        return {"cIoU": ciou, "gIoU": math.fsum(self.ious) / n, "F1": f1, "n": n}


class SegmentationScores:
    """Accumulates :class:`SampleScore` s over a split, overall and per query level.

    Example::

        scores = SegmentationScores()
        for pred, gt, level in samples:
            scores.update(pred, gt, level)
        scores.compute()  # {"all": {"cIoU": .., "gIoU": .., "F1": .., "n": ..}, "socio-name": ..}

    Shards merge exactly (see the module docstring): ``a.merge(b)`` then ``a.compute()`` equals
    scoring all of ``a``'s and ``b``'s samples in one accumulator.
    """

    def __init__(self) -> None:
        self._totals: dict[str, _Totals] = {ALL: _Totals()}

    def update(self, pred: Any, gt: Any, level: str | None = None) -> SampleScore:
        """Score one H x W prediction against its H x W GT, record it, and return the score."""
        score = score_sample(pred, gt)
        self.add(score, level)
        return score

    def add(self, score: SampleScore, level: str | None = None) -> None:
        """Record an already computed score (e.g. read back from an eval row)."""
        if level == ALL:
            raise ValueError(f"{ALL!r} is reserved for the whole split; use another level name")
        self._totals[ALL].add(score)
        if level is not None:
            self._totals.setdefault(level, _Totals()).add(score)

    def merge(self, other: SegmentationScores) -> None:
        """Add every sample recorded in ``other`` (another shard) to this accumulator."""
        for level, totals in other._totals.items():
            self._totals.setdefault(level, _Totals()).merge(totals)

    def __len__(self) -> int:
        return len(self._totals[ALL].ious)

    def compute(self) -> dict[str, dict[str, float | int]]:
        """``{"all": {"cIoU", "gIoU", "F1", "n"}, "<level>": {...}, ...}``, fractions in [0, 1].

        Levels appear in sorted order after ``"all"``; a level appears once it got a sample.
        """
        levels = sorted(level for level in self._totals if level != ALL)
        return {level: self._totals[level].summary() for level in (ALL, *levels)}
