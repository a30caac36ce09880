"""scripts/name_reading.py: which map tokens hold a label's first word, and a short run."""

from __future__ import annotations

import pytest

from socioseg.geometry import Frames
from tests.scripts import load_script


def test_a_word_belongs_to_the_tokens_that_cover_enough_of_it():
    probe = load_script("name_reading")
    frames = Frames((84, 56), (84, 56))  # 3 x 2 tokens of 28 px, image and VLM frame alike
    words = [
        (20.0, 2.0, 40.0, 12.0),  # 8 of its 20 px wide left of x 28, 12 right: both tokens
        (60.0, 30.0, 66.0, 40.0),  # wholly inside token (1, 2)
        (2.0, 2.0, 27.0, 27.0),  # inside token (0, 0), which the first word already holds
    ]
    assert probe.word_tokens(words, frames, (2, 3)).tolist() == [0, 0, -1, -1, -1, 1]
    # only 10% of a word in a token is not enough
    assert probe.word_tokens([(25.2, 2.0, 53.2, 12.0)], frames, (2, 3)).tolist() == [
        -1, 0, -1, -1, -1, -1,
    ]  # fmt: skip


def test_a_crop_starts_at_its_first_word_in_the_policys_frame():
    """Without jitter, each crop's dark pixels (the text) start within 2 px of its left edge
    and the crop is the map's own pixels there (independently cut here from the VLM-frame
    map); one crop per entity label."""
    import numpy as np

    from socioseg.data.synth import generate_tile, tile_labels
    from socioseg.engine import vlm_image

    probe = load_script("name_reading")
    frames = Frames((256, 256), (252, 252))
    crops, texts = probe.word_crops(1000, 3, frames, np.random.default_rng(0), jitter=0)
    majors = [p for p in tile_labels(1000, 3, 256, placement="random") if p.label.major]
    assert texts == [p.label.text for p in majors] and crops.shape == (len(majors), 11, 40)
    tile = generate_tile(1000, 3, 256, placement="random")
    grey = np.asarray(vlm_image(tile[0].map, frames).convert("L"))
    for crop, placed in zip(crops, majors, strict=True):
        x, y = (round(v * 252 / 256) for v in placed.first_word[:2])
        want = grey[y : y + 11, x : x + 40] / 255
        assert np.allclose(crop[: want.shape[0], : want.shape[1]], want, atol=1e-6)
        dark = np.nonzero((crop < 0.6).any(0))[0]
        assert len(dark) and dark[0] <= 3, placed.label.text


@pytest.mark.parametrize("mode", [[], ["--vision-only"], ["--pixels"]])
def test_a_short_run_prints_the_held_out_shares(tiny_models, capsys, mode):
    probe = load_script("name_reading")
    args = ["--vlm", str(tiny_models[0]), "--steps", "1", "--every", "1", "--held-out", "2"]
    assert probe.main(args + mode) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert (
        [line.split(":")[0] for line in lines] == ["step 1"]
        if mode == ["--pixels"]
        else [
            "step 0",
            "step 1",
        ]
    )
    assert "labels right" in lines[-1]
