"""The one place coordinates and masks move between frames; see :mod:`socioseg.types`.

A :class:`Frames` object is built per satellite image. Its frames: ``image`` (the satellite's
own pixels), ``vlm`` (the resized image the VLM sees) and ``relative`` (0-1000 on each axis,
the grounding convention of Qwen3-VL and Qwen3.5 answers). Mapping coordinates is a pure
per-axis scaling (``x_dst = x_src * W_dst / W_src``): all frames cover the same extent of the
ground.
Masks move with OpenCV's nearest-neighbour rule (:func:`resize_mask_nearest`). SAM2 works in
the VLM frame (as the released system does), so there is no third frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from socioseg.types import Box, Point, Target

FrameName = Literal["image", "vlm", "relative"]

# Qwen2.5-VL's patch (14) times its 2x2 spatial merge: VLM frame sides are multiples of this.
# Other families pass their own (socioseg.models.families.PolicyFamily.factor: Qwen3-VL 32).
VLM_FACTOR = 28
# The relative frame's extent on each axis (Qwen3-VL's 0-1000 grounding coordinates).
RELATIVE_EXTENT = 1000
DEFAULT_MIN_PIXELS = 500 * 500
DEFAULT_MAX_PIXELS = 1344 * 1344
# Relative difference of width/height ratios above which map and satellite do not match.
ASPECT_TOLERANCE = 0.01


def smart_resize(
    height: int,
    width: int,
    factor: int = VLM_FACTOR,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """The Qwen-VL resize rule: ``(height, width)`` -> sides divisible by ``factor``.

    Both sides are rounded to the nearest multiple of ``factor``; then, if the area leaves
    ``[min_pixels, max_pixels]``, both are scaled by one factor to re-enter it. 768 x 768 with
    the defaults gives 756 x 756. Returns ``(new_height, new_width)``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} exceeds 200, Qwen2.5-VL cannot read it")
    new_h = max(factor, round(height / factor) * factor)
    new_w = max(factor, round(width / factor) * factor)
    if new_h * new_w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        new_h = max(factor, math.floor(height / beta / factor) * factor)
        new_w = max(factor, math.floor(width / beta / factor) * factor)
    elif new_h * new_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * beta / factor) * factor
        new_w = math.ceil(width * beta / factor) * factor
    return new_h, new_w


def same_aspect(sat_size: tuple[int, int], map_size: tuple[int, int]) -> bool:
    """Whether two ``(width, height)`` sizes have the same width/height ratio (within 1%)."""
    sat_ratio = sat_size[0] / sat_size[1]
    map_ratio = map_size[0] / map_size[1]
    return abs(sat_ratio - map_ratio) <= ASPECT_TOLERANCE * sat_ratio


def check_same_aspect(
    sat_size: tuple[int, int], map_size: tuple[int, int], sat_name: str, map_name: str
) -> None:
    """Raise ``ValueError`` naming both inputs when their width/height ratios differ."""
    if not same_aspect(sat_size, map_size):
        raise ValueError(
            f"{map_name} is {map_size[0]}x{map_size[1]} but {sat_name} is "
            f"{sat_size[0]}x{sat_size[1]}: map and satellite must show the same extent "
            "(same aspect ratio)"
        )


def resize_mask_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H x W mask to ``size = (width, height)`` with OpenCV's INTER_NEAREST.

    OpenCV's nearest rule differs from PIL's at some pixels; the released system uses OpenCV's.
    Returns bool H' x W'.
    """
    import cv2

    mask = np.asarray(mask)
    if mask.shape[:2] == (size[1], size[0]):
        return mask.astype(bool)
    resized = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    return resized.astype(bool)


@dataclass(frozen=True)
class Frames:
    """Sizes ``(width, height)`` of the frames of one satellite image (the relative frame is
    always ``RELATIVE_EXTENT`` on each axis)."""

    image_size: tuple[int, int]
    vlm_size: tuple[int, int]

    @classmethod
    def for_image(
        cls,
        image_size: tuple[int, int],
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        factor: int = VLM_FACTOR,
    ) -> Frames:
        """Frames of a ``(width, height)`` image, VLM frame from :func:`smart_resize` with the
        policy family's ``factor`` (sides are multiples of it)."""
        width, height = image_size
        vlm_h, vlm_w = smart_resize(height, width, factor, min_pixels, max_pixels)
        return cls((width, height), (vlm_w, vlm_h))

    def size(self, frame: FrameName) -> tuple[int, int]:
        relative = (RELATIVE_EXTENT, RELATIVE_EXTENT)
        return {"image": self.image_size, "vlm": self.vlm_size, "relative": relative}[frame]

    def scale(self, src: FrameName, dst: FrameName) -> tuple[float, float]:
        """``(sx, sy)`` such that ``x_dst = x_src * sx`` and ``y_dst = y_src * sy``."""
        (sw, sh), (dw, dh) = self.size(src), self.size(dst)
        return dw / sw, dh / sh

    def points_array(self, xy: np.ndarray, src: FrameName, dst: FrameName) -> np.ndarray:
        """``xy``: ``... x 2k`` float array of interleaved x, y (points or XYXY boxes)."""
        sx, sy = self.scale(src, dst)
        factors = np.tile(np.array([sx, sy], dtype=np.float64), xy.shape[-1] // 2)
        return np.asarray(xy, dtype=np.float64) * factors

    def box(self, box: Box, src: FrameName, dst: FrameName) -> Box:
        sx, sy = self.scale(src, dst)
        return Box(box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy)

    def point(self, point: Point, src: FrameName, dst: FrameName) -> Point:
        sx, sy = self.scale(src, dst)
        return Point(point.x * sx, point.y * sy)

    def target(self, target: Target, src: FrameName, dst: FrameName) -> Target:
        return Target(
            self.box(target.box, src, dst),
            tuple(self.point(p, src, dst) for p in target.points),
        )

    def targets(
        self, targets: Sequence[Target], src: FrameName, dst: FrameName
    ) -> tuple[Target, ...]:
        return tuple(self.target(t, src, dst) for t in targets)

    def mask(self, mask: np.ndarray, src: FrameName, dst: FrameName) -> np.ndarray:
        """An H x W mask of frame ``src`` resized to frame ``dst`` (OpenCV nearest); bool."""
        expected = self.size(src)
        if mask.shape[:2] != (expected[1], expected[0]):
            raise ValueError(
                f"mask is {mask.shape[1]}x{mask.shape[0]}, the {src} frame is "
                f"{expected[0]}x{expected[1]}"
            )
        return resize_mask_nearest(mask, self.size(dst))
