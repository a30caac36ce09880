"""Shared fixtures: tiny random-weight models built once per test session."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """``(vlm_dir, sam_dir)`` of tiny models saved with save_pretrained."""
    from socioseg.models.builders import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_vlm(tiny_models):
    from socioseg.models.vlm import VisionLanguageModel

    return VisionLanguageModel.from_pretrained(str(tiny_models[0]), device="cpu")


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_models):
    from socioseg.models.segmenter import Segmenter

    return Segmenter.from_pretrained(str(tiny_models[1]), device="cpu")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    """A 12-sample synthetic SocioSeg folder of 128 px tiles (GRPO training tests)."""
    from socioseg.data.synth import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, n=12, seed=0, size=128)
    return out


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
