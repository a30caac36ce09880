"""Drawing: the stage-2 feedback images (SPEC §3 step 4) and overlays for people.

``render_feedback`` is part of the method: the released checkpoint reads images drawn exactly
this way, so its colours, widths, alpha and resize rule are compatibility constants.

Boxes reach SAM2 as the model wrote them (:mod:`socioseg.answers`), so some cannot be drawn as
given: Pillow refuses inverted corners and casts huge values to C ints. Such a box is drawn as
the rectangle it spans (corners sorted, far-away sides clamped just outside the image, which
leaves every visible pixel unchanged); a box with a NaN or infinite value is not drawn. Boxes
Pillow takes as they are are drawn untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from socioseg.geometry import resize_mask_nearest
from socioseg.types import Box, Target

FEEDBACK_BOX_COLOR = (0, 0, 255)
FEEDBACK_BOX_WIDTH = 2
FEEDBACK_MASK_RGBA = (255, 0, 0, 102)

OVERLAY_MASK_RGBA = (0, 255, 170, 110)
OVERLAY_BOX_COLOR = (255, 215, 0)
OVERLAY_POINT_COLOR = (255, 40, 40)


def _drawable(box: Box | Sequence[float], size: tuple[int, int], width: int) -> list[float] | None:
    """``[x1, y1, x2, y2]`` for ``ImageDraw.rectangle`` on an image of ``size``, or None."""
    x1, y1, x2, y2 = box.as_list() if isinstance(box, Box) else [float(v) for v in box]
    if not all(map(math.isfinite, (x1, y1, x2, y2))):
        return None
    # Sides farther out than the outline's width are invisible wherever they are.
    margin = width + 2
    (left, right), (top, bottom) = sorted((x1, x2)), sorted((y1, y2))
    corners = [
        max(left, -margin),
        max(top, -margin),
        min(right, size[0] + margin),
        min(bottom, size[1] + margin),
    ]
    if corners[0] > corners[2] or corners[1] > corners[3]:
        return None  # wholly outside the image: nothing of it would show
    return corners


def _composite_mask(rgba: Image.Image, mask: np.ndarray, color: tuple[int, ...]) -> Image.Image:
    mask = resize_mask_nearest(mask, rgba.size)
    layer = np.zeros((rgba.height, rgba.width, 4), dtype=np.uint8)
    layer[mask] = color
    return Image.alpha_composite(rgba, Image.fromarray(layer, "RGBA"))


def render_feedback(
    image: Image.Image, boxes: Sequence[Box | Sequence[float]], mask: np.ndarray
) -> Image.Image:
    """Draw stage-1 results onto one stage-2 input image.

    Args:
        image: the map or satellite image, already in the VLM frame.
        boxes: XYXY boxes in ``image``'s pixels (``Box`` or 4 numbers each).
        mask: H' x W' bool/0-1 coarse mask of any size; resized nearest-neighbour to ``image``.

    Returns:
        RGB image: blue box outlines (width 2), then the mask in red at alpha 102/255 on top.
    """
    rgba = image.convert("RGBA")
    draw = ImageDraw.Draw(rgba)
    for box in boxes:
        corners = _drawable(box, rgba.size, FEEDBACK_BOX_WIDTH)
        if corners is not None:
            draw.rectangle(corners, outline=FEEDBACK_BOX_COLOR, width=FEEDBACK_BOX_WIDTH)
    return _composite_mask(rgba, mask, FEEDBACK_MASK_RGBA).convert("RGB")


def feedback_images(
    vlm_map: Image.Image, vlm_sat: Image.Image, boxes: Sequence[Box], mask: np.ndarray
) -> tuple[Image.Image, Image.Image]:
    """Both stage-2 inputs: :func:`render_feedback` on the map and on the satellite image."""
    return render_feedback(vlm_map, boxes, mask), render_feedback(vlm_sat, boxes, mask)


def render_overlay(
    image: Image.Image, mask: np.ndarray, targets: Sequence[Target] = (), legend: bool = False
) -> Image.Image:
    """A picture for people: ``mask`` tinted over ``image``, then boxes and points on top.

    ``targets`` are in ``image``'s pixels; ``mask`` is resized nearest-neighbour to the image.
    With ``legend`` a strip below the image names the three marks (the image keeps its pixels).
    """
    rgba = _composite_mask(image.convert("RGBA"), mask, OVERLAY_MASK_RGBA)
    draw = ImageDraw.Draw(rgba)
    radius = max(3, round(min(image.size) / 150))
    width = max(2, radius // 2)
    for target in targets:
        corners = _drawable(target.box, rgba.size, width)
        if corners is not None:
            draw.rectangle(corners, outline=OVERLAY_BOX_COLOR, width=width)
        for p in target.points:
            if not (
                -radius <= p.x <= image.width + radius and -radius <= p.y <= image.height + radius
            ):
                continue  # not visible (or NaN)
            draw.ellipse(
                [p.x - radius, p.y - radius, p.x + radius, p.y + radius],
                fill=OVERLAY_POINT_COLOR,
                outline=(255, 255, 255),
            )
    out = rgba.convert("RGB")
    return _with_legend(out, radius, width) if legend else out


def _with_legend(image: Image.Image, radius: int, width: int) -> Image.Image:
    """``image`` above a dark strip: a mask swatch, a box outline and a point, each named."""
    from PIL import ImageFont

    height = max(18, round(image.width / 24))
    font = ImageFont.load_default(size=max(10, round(height * 0.6)))
    canvas = Image.new("RGB", (image.width, image.height + height), (32, 32, 32))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas, "RGBA")
    top, side = image.height + height // 4, height // 2
    x = height // 3
    for name in ("mask", "box", "point"):
        box = [x, top, x + side, top + side]
        if name == "mask":
            draw.rectangle(box, fill=OVERLAY_MASK_RGBA[:3])
        elif name == "box":
            draw.rectangle(box, outline=OVERLAY_BOX_COLOR, width=max(1, width // 2 + 1))
        else:
            r = min(radius, side // 2)
            cx, cy = x + side // 2, top + side // 2
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=OVERLAY_POINT_COLOR)
        x += side + height // 4
        draw.text((x, top + side / 2), name, fill=(235, 235, 235), font=font, anchor="lm")
        x += round(draw.textlength(name, font=font)) + height
    return canvas


def mask_image(mask: np.ndarray) -> Image.Image:
    """H x W bool mask -> 8-bit PNG-ready image with 0 and 255."""
    return Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, "L")
