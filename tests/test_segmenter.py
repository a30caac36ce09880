"""SAM2 wrapper: pre/post-processing, prompt frames, embedding reuse, loading (tiny model, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from socioseg.models.builders import build_tiny_sam  # noqa: E402
from socioseg.models.segmenter import (  # noqa: E402
    PREPROCESSOR_FILE,
    Preprocessing,
    Segmenter,
    preprocess,
    upsample_logits,
)
from socioseg.types import Box, Point, Target  # noqa: E402

SIDE = 256
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny", image_size=SIDE)


@pytest.fixture(scope="module")
def segmenter(tiny_dir):
    return Segmenter.from_pretrained(tiny_dir)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


TARGETS = (
    Target(Box(10, 20, 200, 150)),
    Target(Box(60, 40, 380, 280), (Point(100, 100), Point(220, 180), Point(300, 250))),
    Target(Box(0, 0, 120, 290), (Point(50, 150),)),
)


def test_loads_its_preprocessing(segmenter, tiny_dir):
    assert segmenter.input_size == SIDE
    assert segmenter.preprocessing == Preprocessing(size=SIDE)
    saved = json.loads((tiny_dir / PREPROCESSOR_FILE).read_text())
    assert saved["size"] == {"height": SIDE, "width": SIDE}
    assert segmenter.device.type == "cpu" and segmenter.dtype == torch.float32


def test_preprocess_by_hand_without_resize():
    pixels = np.array([[[0, 128, 255], [10, 20, 30]], [[255, 255, 255], [1, 2, 3]]], np.uint8)
    values = preprocess(Image.fromarray(pixels), Preprocessing(size=2))
    assert values.shape == (1, 3, 2, 2) and values.dtype == torch.float32
    expected = (pixels / 255.0 - MEAN) / STD  # H x W x 3
    np.testing.assert_allclose(values[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_preprocess_by_hand_bilinear_resize():
    # 2 -> 4 bilinear (half-pixel centres, edges clamped): 0, 200 -> 0, 50, 150, 200.
    row = np.array([[0, 200], [0, 200]], np.uint8)
    image = Image.fromarray(np.stack([row] * 3, axis=-1))
    values = preprocess(image, Preprocessing(size=4, image_mean=(0, 0, 0), image_std=(1, 1, 1)))
    np.testing.assert_allclose(values[0, 0].numpy() * 255, [[0, 50, 150, 200]] * 4, atol=1e-4)
    # Downscaling a flat, non-square image keeps it flat (aspect ratio is not kept).
    flat = Image.new("RGB", (37, 11), (90, 30, 200))
    values = preprocess(flat, Preprocessing(size=8))
    assert values.shape == (1, 3, 8, 8)
    expected = (np.array([90, 30, 200]) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(values[0].mean(dim=(1, 2)).numpy(), expected, atol=1e-6)
    assert float(values.std(dim=(2, 3)).max()) < 1e-6


def test_other_modes_are_converted_to_rgb_by_pil():
    # Transparency is dropped as PIL's convert("RGB") drops it (the released loading does this).
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    values = preprocess(rgba, Preprocessing(size=4))
    np.testing.assert_allclose(
        values[0, :, 0, 0].numpy(), (np.array([10, 20, 30]) / 255 - MEAN) / STD, atol=1e-6
    )


def test_upsample_logits_is_bilinear_half_pixel():
    logits = torch.tensor([[[-1.0, 3.0]]])  # 1 x 1 x 2
    up = upsample_logits(logits, (4, 1))
    np.testing.assert_allclose(up[0, 0].numpy(), [-1.0, 0.0, 2.0, 3.0])


@pytest.mark.parametrize("size", [(400, 300), (123, 457), (SIDE, SIDE)])
def test_mask_has_image_size(segmenter, size):
    embedding = segmenter.embed(_image(*size))
    assert embedding.image_size == size
    mask = segmenter.segment(embedding, [Target(Box(5, 5, size[0] - 10, size[1] - 20))])
    assert mask.shape == (size[1], size[0]) and mask.dtype == bool


def test_no_targets_gives_empty_mask(segmenter):
    embedding = segmenter.embed(_image(64, 48))
    mask = segmenter.segment(embedding, [])
    assert mask.shape == (48, 64) and not mask.any()


def test_encoder_runs_once_per_image(segmenter):
    runs = []
    hook = segmenter.model.vision_encoder.register_forward_hook(lambda *_: runs.append(1))
    try:
        before = segmenter.encoder_calls
        embedding = segmenter.embed(_image(400, 300))
        for targets in (TARGETS[:1], TARGETS[1:], TARGETS, ()):
            segmenter.segment(embedding, targets)
    finally:
        hook.remove()
    assert segmenter.encoder_calls - before == 1
    assert len(runs) == 1


def test_targets_are_ored(segmenter):
    embedding = segmenter.embed(_image(400, 300))
    together = segmenter.segment(embedding, TARGETS)
    alone = [segmenter.segment(embedding, [t]) for t in TARGETS]
    np.testing.assert_array_equal(together, np.logical_or.reduce(alone))
    assert together.any() and not together.all()


def _full_forward_mask(segmenter, image, target) -> tuple[np.ndarray, torch.Tensor]:
    """Reference: one full ``Sam2Model`` forward, the box as corner points 2 and 3 first."""
    width, height = image.size
    box = target.box
    xy = np.array([[box.x1, box.y1], [box.x2, box.y2]] + [p.as_list() for p in target.points])
    coords = torch.tensor(xy, dtype=torch.float32)
    coords = coords / torch.tensor([width, height], dtype=torch.float32) * SIDE
    labels = torch.tensor([[[2, 3] + [1] * len(target.points)]], dtype=torch.int32)
    with torch.inference_mode():
        out = segmenter.model(
            pixel_values=preprocess(image, segmenter.preprocessing),
            input_points=coords[None, None],
            input_labels=labels,
        )
    best = int(out.iou_scores[0, 0].argmax())
    logits = out.pred_masks[0, 0, best]
    up = torch.nn.functional.interpolate(
        logits[None, None], (height, width), mode="bilinear", align_corners=False
    )
    return (up[0, 0] > 0).numpy(), logits


@pytest.mark.parametrize("target", TARGETS)
def test_embedding_reuse_equals_full_forward(segmenter, target):
    image = _image(400, 300, seed=3)
    embedding = segmenter.embed(image)
    expected, logits = _full_forward_mask(segmenter, image, target)
    ours, _ = segmenter._best_logits(embedding, target)
    torch.testing.assert_close(ours, logits)
    np.testing.assert_array_equal(segmenter.segment(embedding, [target]), expected)
    # The comparison has teeth: the tiny model's logits move when the prompt moves.
    shifted = Target(Box(*(v + 12 for v in target.box.as_list())), target.points)
    moved, _ = segmenter._best_logits(embedding, shifted)
    assert float((moved - logits).abs().mean()) > 1e-2


def test_save_load_round_trip_gives_identical_masks(segmenter, tiny_dir, tmp_path):
    image = _image(320, 200, seed=5)
    reference = segmenter.segment(segmenter.embed(image), TARGETS)
    segmenter.model.save_pretrained(tmp_path / "copy")
    (tmp_path / "copy" / PREPROCESSOR_FILE).write_text((tiny_dir / PREPROCESSOR_FILE).read_text())
    rebuilt = build_tiny_sam(tmp_path / "rebuilt", image_size=SIDE)  # same seed, same weights
    for folder in (tmp_path / "copy", rebuilt):
        other = Segmenter.from_pretrained(folder)
        np.testing.assert_array_equal(other.segment(other.embed(image), TARGETS), reference)


def test_load_errors_say_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        Segmenter.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        Segmenter.from_pretrained(tmp_path / "missing")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        Segmenter.from_pretrained(tmp_path / "weights.bin")
    other = tmp_path / "qwen"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    with pytest.raises(ValueError, match="not SAM2"):
        Segmenter.from_pretrained(other)


def test_preprocessing_must_match_the_prompt_encoder(tmp_path):
    folder = build_tiny_sam(tmp_path / "tiny", image_size=SIDE)
    data = json.loads((folder / PREPROCESSOR_FILE).read_text())
    data["size"] = {"height": 512, "width": 512}
    (folder / PREPROCESSOR_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="preprocessing resizes to 512x512"):
        Segmenter.from_pretrained(folder)
    with pytest.raises(ValueError, match="square"):
        Preprocessing.from_dict({"size": {"height": 512, "width": 256}}, 1024)
    # Without a preprocessor file the size comes from the model config.
    (folder / PREPROCESSOR_FILE).unlink()
    assert Segmenter.from_pretrained(folder).preprocessing == Preprocessing(size=SIDE)


def _prompt_change(folder) -> float:
    """Mean change of the untrained mask logits between two boxes, over their spread."""
    seg = Segmenter.from_pretrained(folder)
    embedding = seg.embed(_image(SIDE, SIDE))
    first, second = (
        seg._best_logits(embedding, Target(Box(*box)))[0]
        for box in ((8, 8, 72, 72), (150, 150, 240, 240))
    )
    return float((first - second).abs().mean() / first.std())


@pytest.mark.parametrize("init", ["transformers", "pytorch"])
def test_random_sam2_shares_one_positional_encoding_and_pytorch_init_hears_prompts(init, tmp_path):
    """The released SAM2 encodes image positions and prompt coordinates with one matrix; a
    from-scratch build gets that too (unless told not to), and with PyTorch's initialisation
    (the released training code's) its untrained masks move with the prompt."""
    from socioseg.models.builders import save_random_sam

    sizes = {
        "dims": (16, 32, 64, 128), "blocks": (1, 1, 2, 1), "heads": (1, 1, 2, 2),
        "windows": (8, 4, 4, 2), "global_block": 3, "decoder": (32, 64, 2),
    }  # fmt: skip
    folder = save_random_sam(tmp_path / init, SIDE, 0, **sizes, init=init)
    model = Segmenter.from_pretrained(folder).model
    image_pe = model.shared_image_embedding.positional_embedding
    assert torch.equal(image_pe, model.prompt_encoder.shared_embedding.positional_embedding)
    if init == "pytorch":
        assert _prompt_change(folder) > 0.05
    untied = save_random_sam(tmp_path / "untied", SIDE, 0, **sizes, tie_encodings=False)
    model = Segmenter.from_pretrained(untied).model
    assert not torch.equal(
        model.shared_image_embedding.positional_embedding,
        model.prompt_encoder.shared_embedding.positional_embedding,
    )
