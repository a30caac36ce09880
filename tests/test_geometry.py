import numpy as np
import pytest

from socioseg.geometry import Frames, check_same_aspect, smart_resize
from socioseg.types import Box, Point, Target


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (768, 768, (756, 756)),  # the released SocioSeg tiles
        (1000, 500, (1008, 504)),  # rounded to multiples of 28, area within bounds
        (300, 300, (504, 504)),  # below 500*500: scaled up, ceil to 28
        (2000, 2000, (1344, 1344)),  # above 1344*1344: scaled down, floor to 28
        (768, 1024, (756, 1036)),
    ],
)
def test_smart_resize_by_hand(height, width, expected):
    assert smart_resize(height, width) == expected


def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as ref

    rng = np.random.default_rng(0)
    for height, width in rng.integers(28, 3000, size=(300, 2)):
        ours = smart_resize(int(height), int(width), min_pixels=3136, max_pixels=1003520)
        assert ours == tuple(ref(int(height), int(width), 28, 3136, 1003520))


def test_smart_resize_rejects_extreme_aspect():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 3000)


def test_frames_round_trip_on_non_square_image():
    frames = Frames.for_image((1024, 768))
    assert frames.vlm_size == (1036, 756)
    target = Target(Box(10.0, 20.0, 500.5, 700.0), (Point(100.0, 200.0),))
    there = frames.target(target, "image", "vlm")
    back = frames.target(there, "vlm", "image")
    assert back.box.as_list() == pytest.approx(target.box.as_list())
    assert back.points[0].as_list() == pytest.approx([100.0, 200.0])
    # x scales by 1036/1024, y by 756/768: per-axis, not one factor.
    assert there.box.x2 == pytest.approx(500.5 * 1036 / 1024)
    assert there.box.y2 == pytest.approx(700.0 * 756 / 768)


def test_frames_arrays_and_masks():
    frames = Frames.for_image((512, 256), min_pixels=56 * 56)
    assert frames.vlm_size == (504, 252)
    boxes = np.array([[0, 0, 504, 252], [63, 63, 126, 126]], dtype=float)
    assert frames.points_array(boxes, "vlm", "image").tolist() == [
        [0, 0, 512, 256],
        [64, 64, 128, 128],
    ]
    # Masks move with OpenCV's nearest rule: destination pixel i takes source floor(i * s).
    mask = np.zeros((252, 504), dtype=bool)
    mask[:, 62] = True
    moved = frames.mask(mask, "vlm", "image")
    assert moved.shape == (256, 512) and moved.dtype == bool
    expected_columns = [i for i in range(512) if int(i * 504 / 512) == 62]
    assert np.flatnonzero(moved[0]).tolist() == expected_columns == [63]
    with pytest.raises(ValueError, match="the vlm frame is 504x252"):
        frames.mask(np.zeros((256, 512), dtype=bool), "vlm", "image")


def test_same_aspect_check_names_the_files():
    check_same_aspect((768, 768), (512, 512), "sat.png", "map.png")
    with pytest.raises(ValueError, match=r"map\.png is 768x512 but sat\.png is 768x768"):
        check_same_aspect((768, 768), (768, 512), "sat.png", "map.png")
