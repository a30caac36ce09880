"""scripts/policy_boxes.py: stage-1 boxes scored against the asked-for entity and the best one."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from socioseg.data.synth import MAX_QUERIES, generate_tile
from socioseg.types import Box, Target
from tests.scripts import load_script


class _Answers:
    """A stand-in policy: ``box_for(sample)`` is its one stage-1 box for each question."""

    def __init__(self, box_for):
        self.box_for = box_for

    def segment_batch(self, questions, mode):
        assert mode == "stage1"
        return [
            SimpleNamespace(stage1=SimpleNamespace(targets_image=self.box_for(q)))
            for q in questions
        ]


def _gt_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return Box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_a_box_fills_the_pixels_whose_centres_it_holds():
    filled = load_script("policy_boxes").box_mask([1, 2, 3, 3.4], (5, 5))
    expected = np.zeros((5, 5), bool)
    expected[2:3, 1:3] = True  # rows 2 (centre 2.5 < 3.4), columns 1 and 2
    assert np.array_equal(filled, expected)


def test_boxes_of_the_asked_for_entity_score_high_and_one_box_for_all_does_not():
    script = load_script("policy_boxes")
    tile = generate_tile(3, 0, 128, MAX_QUERIES, placement="random")
    masks = {s.query: np.asarray(s.mask, bool) for s in tile}

    answers, target, best = script.tile_scores(
        _Answers(lambda q: [Target(_gt_box(masks[q[2]]))]), tile, tile
    )
    assert len(set(answers)) == len(tile) > 1
    assert min(target) > 0.6 and best == target  # near-rectangles; the best is the target

    corner = Box(0, 0, 8, 8)
    answers, target, best = script.tile_scores(_Answers(lambda q: [Target(corner)]), tile, tile)
    assert answers == [((0, 0, 8, 8),)] * len(tile)
    for got, sample in zip(target, tile, strict=True):
        inside = np.asarray(sample.mask, bool)[:8, :8].sum()
        union = 64 + np.asarray(sample.mask, bool).sum() - inside
        assert got == inside / union


def test_answer_nll_changes_with_the_images_only_when_they_differ(tiny_vlm):
    """The image check scores the same answers twice: with each question's own images and with
    another tile's. Questions that share one tile's images score alike; a policy whose output
    depends on its images (any random one) scores two different tiles differently."""

    from socioseg.socioreasoner import InferenceConfig

    script = load_script("policy_boxes")
    reasoner = SimpleNamespace(
        vlm=tiny_vlm, config=InferenceConfig(min_pixels=56 * 56, max_pixels=56 * 56)
    )
    first, second = (generate_tile(3, i, 128, 2, placement="random") for i in (0, 1))
    same_images = [
        [replace(s, sat=first[0].sat, map=first[0].map) for s in t] for t in (first, second)
    ]
    own, other = script.image_reliance(reasoner, same_images)
    assert own == pytest.approx(other, rel=1e-6)
    own, other = script.image_reliance(reasoner, [first, second])
    assert abs(own - other) > 1e-4


def test_a_phase_asks_its_levels_and_names_with_a_kind_word_only():
    script = load_script("policy_boxes")
    sample = SimpleNamespace(level="socio-name", query="Riverside Middle School")
    levels = ("socio-class", "socio-name")
    assert script.asked(SimpleNamespace(**vars(sample), socio_class="School"), levels, True)
    assert not script.asked(SimpleNamespace(**vars(sample), socio_class="Park"), levels, True)
    assert script.asked(SimpleNamespace(**vars(sample), socio_class="Park"), levels, False)
    function = SimpleNamespace(level="socio-function", query="Educational", socio_class=None)
    assert not script.asked(function, levels, False)


def test_the_gate_asks_the_wanted_questions_and_fails_with_its_numbers(tiny_models, capsys):
    """A random policy does not pass gate B: exit 1, and the numbers are printed."""
    script = load_script("policy_boxes")
    vlm, sam = (str(folder) for folder in tiny_models)
    argv = ["--vlm", vlm, "--sam", sam, "--size", "128", "--questions", "3", "--gate", "0.3,2"]
    assert script.main([*argv, "--levels", "socio-name"]) == 1
    out = capsys.readouterr().out
    assert ": 3 questions on " in out
    assert "gate failed: target IoU " in out and "(needs > 0.3)" in out


def test_level_shares_split_the_questions_as_a_phase_draws_them(tiny_models, capsys):
    """7 questions at 0.4 / 0.4 / 0.2: 3 class, 3 function, 1 name (largest remainders), where
    tile order would ask mostly names; the last line gives each level's target IoU."""
    script = load_script("policy_boxes")
    vlm, sam = (str(folder) for folder in tiny_models)
    argv = ["--vlm", vlm, "--sam", sam, "--size", "128", "--questions", "7"]
    shares = "socio-class=0.4,socio-function=0.4,socio-name=0.2"
    assert script.main([*argv, "--level-shares", shares]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    counts = {
        part.split()[0]: int(part.split("(")[1].rstrip(")")) for part in last[10:].split(", ")
    }
    assert last.startswith("by level: ") and counts == {
        "socio-class": 3,
        "socio-function": 3,
        "socio-name": 1,
    }
    with pytest.raises(SystemExit):
        script.main([*argv, "--level-shares", "socio-class=0.5,school=0.5"])
    assert "--level-shares: 'school=0.5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--vlm", vlm, "--level-shares", shares])
    assert "--level-shares needs --questions" in capsys.readouterr().err


def test_too_few_tiles_for_the_questions_asked_is_said(tiny_models, capsys):
    script = load_script("policy_boxes")
    vlm, sam = (str(folder) for folder in tiny_models)
    argv = ["--vlm", vlm, "--sam", sam, "--size", "128", "--tiles", "1", "--questions", "9"]
    assert script.main([*argv, "--levels", "socio-name"]) == 0
    captured = capsys.readouterr()
    asked = int(captured.out.split(": ")[1].split(" questions")[0])
    assert 1 <= asked < 9 and f"only {asked} such questions on 1 tiles" in captured.err


def test_the_committed_phase_b_policy_picks_the_asked_for_entity_on_random_tiles():
    """checkpoints/mini-phase-b (docs/mini.md, run b10: gate B passed with target IoU 0.313,
    86 distinct answers of 90) on the first 20 gate-B questions of held-out tiles, split among
    levels as phase B draws them: measured target IoU 0.308, best-entity IoU 0.560, 20
    distinct answers (thresholds a little below). An untrained policy answers one box for
    every question and finds nothing."""
    from pathlib import Path

    from socioseg.types import LEVELS

    script = load_script("policy_boxes")
    folder = Path(__file__).resolve().parents[1] / "checkpoints" / "mini-phase-b"
    reasoner = script.greedy_reasoner(str(folder), "mini")
    shares = {"socio-class": 0.35, "socio-function": 0.35, "socio-name": 0.3}
    answers, target, best, _ = script.ask(reasoner, 1000, 256, LEVELS, True, 20, 200, shares)
    assert len(answers) == 20
    assert np.mean(target) > 0.25 and np.mean(best) > 0.5, (np.mean(target), np.mean(best))
    assert len(set(answers)) >= 16
