"""render_feedback against an independent numpy implementation of SPEC §3 step 4."""

import numpy as np
import pytest
from PIL import Image

from socioseg.geometry import resize_mask_nearest
from socioseg.render import render_feedback, render_overlay
from socioseg.types import Box, Point, Target
from tests.conftest import noise_image


def reference_feedback(image: Image.Image, boxes, mask: np.ndarray) -> np.ndarray:
    """Blue outline width 2 (inward from the box edges, integer boxes), then red at 102/255.

    The composite follows Pillow's integer alpha-composite arithmetic over an opaque image.
    """
    out = np.asarray(image.convert("RGB")).astype(np.int64).copy()
    for x1, y1, x2, y2 in boxes:
        for k in range(2):
            out[y1 + k, x1 : x2 + 1] = (0, 0, 255)
            out[y2 - k, x1 : x2 + 1] = (0, 0, 255)
            out[y1 : y2 + 1, x1 + k] = (0, 0, 255)
            out[y1 : y2 + 1, x2 - k] = (0, 0, 255)
    h, w = out.shape[:2]
    rows = (np.arange(h) * mask.shape[0] // h) if mask.shape[0] != h else np.arange(h)
    cols = (np.arange(w) * mask.shape[1] // w) if mask.shape[1] != w else np.arange(w)
    m = mask[np.ix_(rows, cols)].astype(bool)
    alpha, bits = 102, 7
    coef1 = alpha * 255 * 255 * (1 << bits) // (alpha * 255 + 255 * (255 - alpha))
    coef2 = 255 * (1 << bits) - coef1
    red = np.array([255, 0, 0])
    tmp = red * coef1 + out[m] * coef2 + (0x80 << bits)
    out[m] = (((tmp >> 8) + tmp) >> 8) >> bits
    return out.astype(np.uint8)


@pytest.mark.parametrize("mask_size", [(100, 120), (50, 60), (173, 211)])
def test_render_feedback_matches_reference_pixel_for_pixel(mask_size):
    image = noise_image(120, 100, seed=1)
    rng = np.random.default_rng(2)
    mask = rng.random(mask_size) > 0.6
    boxes = [(5, 6, 60, 70), (50, 40, 110, 95)]
    ours = np.asarray(render_feedback(image, boxes, mask))
    assert ours.dtype == np.uint8 and ours.shape == (100, 120, 3)
    assert np.array_equal(ours, reference_feedback(image, boxes, mask))


def test_render_feedback_accepts_box_objects_and_empty_inputs():
    image = noise_image(64, 48)
    same = render_feedback(image, [], np.zeros((48, 64), bool))
    assert np.array_equal(np.asarray(same), np.asarray(image))
    a = render_feedback(image, [Box(1, 2, 30, 40)], np.zeros((10, 10), bool))
    b = render_feedback(image, [(1, 2, 30, 40)], np.zeros((10, 10), bool))
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_boxes_as_the_model_wrote_them_are_drawn_as_the_rectangle_they_span():
    image = noise_image(120, 100, seed=1)
    mask = np.zeros((100, 120), bool)
    inverted = np.asarray(render_feedback(image, [(60, 70, 5, 6)], mask))
    assert np.array_equal(inverted, reference_feedback(image, [(5, 6, 60, 70)], mask))
    # Sides far outside the image are invisible: only the top and bottom edges show.
    far = np.asarray(render_feedback(image, [(-1e12, 6, 1e15, 70)], mask))
    expected = np.asarray(image).copy()
    expected[[6, 7, 69, 70], :] = (0, 0, 255)
    assert np.array_equal(far, expected)
    skipped = render_feedback(image, [(float("nan"), 6, 60, 70)], mask)
    assert np.array_equal(np.asarray(skipped), np.asarray(image))
    # A box wholly beside or below the image (a sampled answer past the frame) shows nothing,
    # as PIL draws it on the full canvas; the boxes inside it are still drawn.
    for outside in [(130, 6, 140, 70), (5, 110, 60, 300), (-50, -40, -20, -10), (140, 6, 130, 70)]:
        drawn = render_feedback(image, [outside, (5, 6, 60, 70)], mask)
        assert np.array_equal(np.asarray(drawn), reference_feedback(image, [(5, 6, 60, 70)], mask))
        alone = render_feedback(image, [outside], mask)
        assert np.array_equal(np.asarray(alone), np.asarray(image))
    overlay = render_overlay(image, mask, [Target(Box(90, 80, -1e300, 1e300), (Point(1e300, 5),))])
    assert overlay.size == image.size


def test_mask_resize_uses_opencv_nearest_not_pil():
    mask = np.zeros((7, 7), bool)
    mask[3, :] = True
    ours = resize_mask_nearest(mask, (10, 10))
    pil = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((10, 10), 0)) > 0
    assert ours.shape == (10, 10)
    rows = np.arange(10) * 7 // 10  # OpenCV: floor(dst * src / dst_size)
    assert np.array_equal(ours, mask[rows][:, rows])
    assert not np.array_equal(ours, pil)


def test_overlay_draws_mask_boxes_and_points():
    image = Image.new("RGB", (100, 80), (0, 0, 0))
    mask = np.zeros((80, 100), bool)
    mask[10:20, 10:20] = True
    out = np.asarray(render_overlay(image, mask, [Target(Box(40, 40, 90, 70), (Point(60, 55),))]))
    assert out[15, 15].any() and not out[5, 5].any()
    assert tuple(out[55, 60]) != (0, 0, 0)
    assert tuple(out[40, 65]) != (0, 0, 0)


def test_overlay_legend_is_a_strip_below_the_unchanged_picture():
    image = Image.new("RGB", (240, 200), (10, 60, 10))
    mask = np.zeros((200, 240), bool)
    mask[50:90, 50:120] = True
    targets = [Target(Box(40, 40, 130, 100), (Point(80, 70),))]
    plain = np.asarray(render_overlay(image, mask, targets))
    with_legend = np.asarray(render_overlay(image, mask, targets, legend=True))
    assert with_legend.shape[1] == 240 and with_legend.shape[0] > 200
    assert np.array_equal(with_legend[:200], plain)
    strip = with_legend[200:].reshape(-1, 3)
    colours = {tuple(c) for c in strip}
    # The three marks appear in the strip in their overlay colours.
    assert (0, 255, 170) in colours and (255, 215, 0) in colours and (255, 40, 40) in colours
