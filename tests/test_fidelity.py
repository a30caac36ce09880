"""The SAM side as the released system runs it: VLM frame, the official predictor's transforms.

References here are written from the official ``sam2`` code's rules (SPEC, "The SAM side,
exactly as released"), not from socioseg's functions.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from PIL import Image  # noqa: E402

import socioseg  # noqa: E402
from socioseg.models.segmenter import Preprocessing, preprocess  # noqa: E402
from socioseg.socioreasoner import InferenceConfig, SocioReasoner  # noqa: E402
from socioseg.types import Box, Point, Target  # noqa: E402
from tests.conftest import noise_image  # noqa: E402
from tests.test_pipeline import ScriptedVLM  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _triangle_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``n_out x n_in`` antialiased bilinear weights (PIL's triangle filter), rows sum to 1."""
    scale = n_in / n_out
    half_width = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    distance = np.abs(np.arange(n_in)[None, :] + 0.5 - centres[:, None])
    weights = np.clip(1.0 - distance / half_width, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def official_transform(image: Image.Image, side: int) -> np.ndarray:
    """``3 x side x side`` float64: ToTensor, float resize with antialias, Normalize."""
    values = np.asarray(image.convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 255.0
    rows = _triangle_matrix(values.shape[1], side)
    cols = _triangle_matrix(values.shape[2], side)
    resized = np.stack([rows @ channel @ cols.T for channel in values])
    return (resized - MEAN[:, None, None]) / STD[:, None, None]


def test_preprocess_is_the_official_float_transform():
    rng = np.random.default_rng(0)
    sizes = [(756, 756, 256), (1000, 333, 256), (37, 91, 64), (300, 300, 300)]
    sizes += [(int(rng.integers(20, 900)), int(rng.integers(20, 900)), 128) for _ in range(4)]
    for width, height, side in sizes:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        ours = preprocess(image, Preprocessing(size=side))[0].numpy()
        assert ours.dtype == np.float32
        assert np.abs(ours - official_transform(image, side)).max() < 1e-5
        # torchvision's Resize on a float tensor is this call (its _functional_tensor.resize).
        tensor = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()).float() / 255
        resized = torch.nn.functional.interpolate(
            tensor[None], size=[side, side], mode="bilinear", align_corners=False, antialias=True
        )[0].numpy()
        normalised = (resized - MEAN[:, None, None]) / STD[:, None, None]
        assert np.abs(ours - normalised).max() < 2e-6
    # No rounding to uint8 anywhere: a resized value between two grey levels stays between.
    ramp = Image.fromarray(np.tile(np.array([[0, 1]], np.uint8), (2, 1))[..., None].repeat(3, 2))
    values = preprocess(ramp, Preprocessing(size=4, image_mean=(0, 0, 0), image_std=(1, 1, 1)))
    np.testing.assert_allclose(values[0, 0, 0].numpy() * 255, [0, 0.25, 0.75, 1], atol=1e-5)


_CAPABILITY_SCRIPT = """
import sys
import numpy as np
import torch
from PIL import Image
from socioseg.models.segmenter import Preprocessing, preprocess
rng = np.random.default_rng(1)
out = [torch.backends.cpu.get_cpu_capability().encode()]
for w, h in ((756, 756), (1100, 700)):
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    out.append(preprocess(image, Preprocessing(size=1024)).numpy().tobytes())
sys.stdout.buffer.write(b"|".join(x.hex().encode() for x in out))
"""


def _preprocess_in_subprocess(capability: str | None) -> list[bytes]:
    env = dict(os.environ, PYTHONPATH=str(Path(socioseg.__file__).parents[1]))
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run(
        [sys.executable, "-c", _CAPABILITY_SCRIPT], env=env, capture_output=True, check=True
    )
    return [bytes.fromhex(part.decode()) for part in done.stdout.split(b"|")]


def test_preprocess_is_the_same_on_every_cpu_capability():
    baseline = _preprocess_in_subprocess("default")
    native = _preprocess_in_subprocess(None)
    assert baseline[0] == b"DEFAULT"
    assert baseline[1:] == native[1:]


def official_sparse_prompt(model, target: Target, size: tuple[int, int], side: int):
    """The official predictor + prompt encoder: ``(N + 3) x C`` sparse prompt embeddings."""
    width, height = size
    box = target.box
    xy = [[box.x1, box.y1], [box.x2, box.y2]] + [p.as_list() for p in target.points]
    coords = torch.tensor(xy, dtype=torch.float32)  # transform_coords(normalize=True)
    coords[:, 0] = coords[:, 0] / width
    coords[:, 1] = coords[:, 1] / height
    coords = coords * side
    labels = [2, 3] + [1] * len(target.points) + [-1]  # box first, then points, then a pad
    points = torch.cat([coords + 0.5, torch.zeros(1, 2)])
    encoder = model.prompt_encoder
    unit = points / side
    angles = 2 * math.pi * ((2 * unit - 1) @ encoder.shared_embedding.positional_embedding)
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    for row, label in enumerate(labels):
        if label == -1:
            embedding[row] = encoder.not_a_point_embed.weight[0]
        else:
            embedding[row] = embedding[row] + encoder.point_embed.weight[label]
    return embedding


def test_prompts_reach_sam_as_the_official_predictor_builds_them(tiny_segmenter):
    segmenter = tiny_segmenter
    captured = []
    hook = segmenter.model.prompt_encoder.register_forward_hook(
        lambda _module, _args, output: captured.append(output[0])
    )
    targets = [
        Target(Box(30.5, 20, 250, 180), (Point(100, 90), Point(200.25, 150))),
        Target(Box(250, 180, 30, 20)),  # inverted: goes to SAM as given
    ]
    try:
        segmenter.segment(segmenter.embed(noise_image(300, 200)), targets)
    finally:
        hook.remove()
    assert len(captured) == 2
    for sparse, target in zip(captured, targets, strict=True):
        expected = official_sparse_prompt(segmenter.model, target, (300, 200), 256)
        torch.testing.assert_close(sparse[0, 0], expected)


STAGE1 = (
    '<think>a</think><answer>[{"bbox_2d": [100, 120, 420, 500]}, '
    '{"bbox_2d": [700, 600, 500, 300]}]</answer>'
)
STAGE2 = (
    '<answer>[{"bbox_2d": [100, 120, 420, 500], "points": [[200, 300], [350, 400, 9]]}, '
    '{"bbox_2d": [700, 600, 500, 300], "points": [[10, 10]]}]</answer>'
)


def reference_mask(model, sat: Image.Image, objects, vlm_size: tuple[int, int]) -> np.ndarray:
    """SPEC path from Sam2Model directly: VLM-frame image, per-object best mask, OR, nearest."""
    side = model.config.prompt_encoder_config.image_size
    vlm_sat = sat.resize(vlm_size, Image.Resampling.BICUBIC)
    pixel_values = torch.from_numpy(official_transform(vlm_sat, side)).float()[None]
    union = np.zeros((vlm_size[1], vlm_size[0]), dtype=bool)
    for box, points in objects:
        xy = torch.tensor([box[:2], box[2:], *points], dtype=torch.float32)
        xy = xy / torch.tensor(vlm_size, dtype=torch.float32) * side
        labels = torch.tensor([[[2, 3] + [1] * len(points)]], dtype=torch.int32)
        with torch.inference_mode():
            out = model(pixel_values=pixel_values, input_points=xy[None, None], input_labels=labels)
        logits = out.pred_masks[0, 0, int(out.iou_scores[0, 0].argmax())]
        up = torch.nn.functional.interpolate(
            logits[None, None], (vlm_size[1], vlm_size[0]), mode="bilinear", align_corners=False
        )[0, 0]
        union |= (up > 0).numpy()
    resized = cv2.resize(union.astype(np.uint8), sat.size, interpolation=cv2.INTER_NEAREST)
    return resized.astype(bool)


def test_pipeline_masks_equal_the_released_sam_path(tiny_vlm, tiny_segmenter):
    sat, map_ = noise_image(768, 768, 4), noise_image(768, 768, 5)
    vlm = ScriptedVLM(tiny_vlm, [[STAGE1], [STAGE2]])
    pred = SocioReasoner(vlm, tiny_segmenter, InferenceConfig()).segment(sat, map_, "Zoo")
    assert pred.vlm_size == (756, 756)
    stage1 = [([100, 120, 420, 500], []), ([700, 600, 500, 300], [])]
    stage2 = [([100, 120, 420, 500], [[200, 300], [350, 400]]), ([700, 600, 500, 300], [[10, 10]])]
    expected_coarse = reference_mask(tiny_segmenter.model, sat, stage1, (756, 756))
    expected_final = reference_mask(tiny_segmenter.model, sat, stage2, (756, 756))
    assert expected_final.any() and not np.array_equal(expected_final, expected_coarse)
    np.testing.assert_array_equal(pred.stage1.mask, expected_coarse)
    np.testing.assert_array_equal(pred.mask, expected_final)
    # The VLM and SAM saw one image: the stage-1 prompt's satellite is the 756 BICUBIC resize.
    vlm_sat = vlm.calls[0][1][0][1]
    assert vlm_sat.size == (756, 756)
    np.testing.assert_array_equal(
        np.asarray(vlm_sat), np.asarray(sat.resize((756, 756), Image.Resampling.BICUBIC))
    )


def test_odd_answers_reach_sam_and_files_stay_json(tiny_vlm, tiny_segmenter):
    import json

    from socioseg.outputs import prediction_to_json

    odd = (
        '<answer>[{"bbox_2d": [NaN, 1, 50, 50]}, {"bbox_2d": [1e400, 1, 50, 50]}, '
        '{"bbox_2d": [150, 120, 20, 10], "points": [[300, 300]]}, {"bbox_2d": [true, 0, 9, 9]}]'
        "</answer>"
    )
    vlm = ScriptedVLM(tiny_vlm, [[odd], [odd]])
    config = InferenceConfig(min_pixels=56 * 56)
    pred = SocioReasoner(vlm, tiny_segmenter, config).segment(
        noise_image(200, 150), noise_image(200, 150), "Park"
    )
    assert len(pred.stage1.parsed.targets) == 4 and len(pred.stage2.parsed.targets) == 4
    assert pred.final_source == "stage2" and pred.mask.shape == (150, 200)
    row = json.loads(json.dumps(prediction_to_json(pred), allow_nan=False))
    assert row["stage1"]["targets_image"][0]["bbox_2d"][0] is None
