"""scripts/position_probe.py: coloured squares whose boxes the policy is taught to read off."""

from __future__ import annotations

import json
import math
import re

import numpy as np

from socioseg import prompts
from tests.scripts import load_script


def test_the_answer_is_the_asked_for_square_in_the_vlm_frame():
    probe = load_script("position_probe")
    for seed in range(5):
        prompt, answer, box = probe.squares_sample(np.random.default_rng(seed), 3, 112, filler=2)
        x1, y1, x2, y2 = box
        query = re.search(r"find '(.*)' with bboxs", prompt.text).group(1)
        colour = query.split()[0]
        assert prompt.text == prompts.stage1_text(query)
        image = np.asarray(prompt.images[0])
        inside = np.all(image == probe.COLORS[colour], axis=-1)
        # the asked-for colour fills the box and nothing else: its squares never overlap
        assert inside[y1:y2, x1:x2].all() and inside.sum() == (x2 - x1) * (y2 - y1)
        painted = np.any(image != probe.GREY, axis=-1).sum()
        assert painted > inside.sum()  # two more squares of other colours
        boxes = json.loads(answer.split("<answer>")[1].removesuffix("</answer>"))
        assert boxes == [{"bbox_2d": [round(v * 112 / 252) for v in box]}]
        assert answer.startswith(f"<think>The map labels {query};")


def test_a_short_run_reports_the_nll_with_own_and_other_images():
    rows = load_script("position_probe").main(
        ["--steps", "2", "--every", "1", "--held-out", "3", "--batch-size", "1", "--frame", "56"]
    )
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert all(math.isfinite(row[key]) and row[key] > 0 for key in ("nll", "own", "other"))


def test_the_probed_policy_has_the_asked_for_rope_base_and_frame(tmp_path):
    from socioseg.models.builders import MINI_MAX_NEW_TOKENS

    probe = load_script("position_probe")
    policy = probe.build_policy(tmp_path / "vlm", 56, 10.0, seed=0)
    assert policy.model.config.text_config.rope_parameters["rope_theta"] == 10.0
    # the phases after gate A load its policy with the frame and the mini's answer lengths
    assert policy.processor.defaults.max_new_tokens == MINI_MAX_NEW_TOKENS
    assert (policy.processor.defaults.min_pixels, policy.processor.defaults.max_pixels) == (
        56 * 56,
        56 * 56,
    )
    text = probe.build_policy(tmp_path / "mini", 56, None, seed=0).model.config.text_config
    assert text.num_hidden_layers == 6 and text.rope_parameters["rope_theta"] == 10.0
    assert text.rope_parameters["mrope_section"] == [6, 5, 5]  # the mini's, none asked
    image = np.zeros((252, 252, 3), np.uint8)
    inputs = policy.encode(["x"], [[image, image]])
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]] * 2  # 56 px: 4 x 4 patches of 14
