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


@pytest.mark.parametrize("vision_only", [False, True])
def test_a_short_run_prints_the_held_out_shares(tiny_models, capsys, vision_only):
    probe = load_script("name_reading")
    args = ["--vlm", str(tiny_models[0]), "--steps", "1", "--every", "1", "--held-out", "2"]
    assert probe.main(args + ["--vision-only"] * vision_only) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert [line.split(":")[0] for line in lines] == ["step 0", "step 1"]
    assert "held-out tokens right" in lines[1] and "labels right" in lines[1]
