"""scripts/sam_prompts.py: a SAM2's masks for an entity's own box and another's."""

from __future__ import annotations

import numpy as np

from socioseg.types import Box, Target
from tests.scripts import load_script


class _Stub:
    """A segmenter whose mask is the prompted box filled in, in the embedded image's frame."""

    def __init__(self, side: int) -> None:
        self.side = side

    def segment(self, embedding, targets):
        mask = np.zeros((self.side, self.side), bool)
        box = targets[0].box
        mask[round(box.y1) : round(box.y2), round(box.x1) : round(box.x2)] = True
        return mask


def test_a_mask_from_the_vlm_frame_comes_back_to_the_tile():
    script = load_script("sam_prompts")
    # a box over the left half of a 252 px VLM frame, read back on the 256 px tile
    mask = script.segment(_Stub(252), None, Target(Box(0, 0, 126, 252)), (256, 256))
    assert mask.shape == (256, 256)
    assert mask[:, :127].all() and not mask[:, 129:].any()
    same = script.segment(_Stub(256), None, Target(Box(0, 0, 10, 10)), (256, 256))
    assert same.sum() == 100  # already the tile's frame: unchanged


def test_the_script_prompts_in_the_vlm_frame(tiny_models, capsys):
    script = load_script("sam_prompts")
    argv = ["--sam", str(tiny_models[1]), "--tiles", "3", "--size", "128"]
    script.main([*argv, "--min-pixels", "3136", "--max-pixels", "12544"])
    out = capsys.readouterr().out
    assert "entities on 3 tiles" in out and out.strip().splitlines()[-1].count("|") == 4
