"""scripts/entity_probe.py: what the image tokens are labelled and where the answer looks."""

from __future__ import annotations

import numpy as np
import pytest

from socioseg.train.aux_labels import IGNORE
from tests.scripts import load_script

NONE, SCHOOL, PARK = 3, 5, 7


def test_token_verdicts_count_each_kind_of_answer():
    probe = load_script("entity_probe")
    labels = np.array([NONE, NONE, SCHOOL, SCHOOL, PARK, IGNORE])
    predicted = np.array([NONE, SCHOOL, SCHOOL, NONE, SCHOOL, SCHOOL])
    counts = probe.token_verdicts(predicted, labels, NONE)
    assert counts == {
        "none ok": 1,
        "none wrong": 1,
        "own class": 1,
        "none": 1,
        "other class": 1,
    }


def test_the_first_look_picks_the_target_only_above_each_other_entity():
    probe = load_script("entity_probe")
    mass = np.array([0.3, 0.25, 0.25, 0.2])
    target = np.array([True, False, False, False])
    one, two = np.array([False, True, False, False]), np.array([False, False, True, False])
    # 0.3 on the target beats 0.25 and 0.25 each, though not their 0.5 together
    assert probe.first_look(mass, target, [one, two]) == (0.3, 0.5, True)
    both = one | two
    assert probe.first_look(mass, target, [both]) == (0.3, 0.5, False)
    # a token the target shares with another entity counts for the target only
    overlap = np.array([True, True, False, False])
    assert probe.first_look(mass, target, [overlap]) == (0.3, 0.25, True)


def test_a_run_on_a_tiny_policy_prints_its_table(tiny_models, capsys):
    probe = load_script("entity_probe")
    vlm = str(tiny_models[0])
    args = ["--vlm", vlm, "--tiles", "1", "--entity-layer", "1", "--attention-layer", "1"]
    assert probe.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{vlm}: ") and "on 1 tiles (seed 1000)" in lines[0]
    cells = lines[3].strip("|").split("|")
    shares = [float(v) for v in cells[0].split("(")[0].split("/")]
    assert len(shares) == 3 and sum(shares) == pytest.approx(1, abs=0.02)
    assert 0 <= float(cells[2].strip(" %")) <= 100  # the asked class named at the first x
    target, others = (float(v) for v in cells[3].split("/"))
    assert 0 <= target <= 1 and 0 <= others <= 1 and target + others <= 1 + 1e-6


def test_a_folder_without_its_training_layers_needs_them_given(tiny_models):
    probe = load_script("entity_probe")
    with pytest.raises(SystemExit) as refused:
        probe.main(["--vlm", str(tiny_models[0])])
    assert refused.value.code == 2


def test_name_verdicts_tell_a_neighbours_name_from_another():
    probe = load_script("entity_probe")
    QINGHE, HEPING, HEXI = 11, 12, 13
    labels = np.array([QINGHE, QINGHE, QINGHE, HEPING, IGNORE])
    predicted = np.array([QINGHE, HEPING, HEXI, HEPING, QINGHE])
    counts = probe.name_verdicts(predicted, labels, {QINGHE, HEPING})
    assert counts == {"own name": 2, "a tile neighbour's": 1, "other name": 1}


def test_a_name_layer_adds_the_name_shares(tiny_models, capsys):
    probe = load_script("entity_probe")
    args = ["--vlm", str(tiny_models[0]), "--tiles", "1", "--entity-layer", "1"]
    assert probe.main([*args, "--attention-layer", "1", "--name-layer", "1"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("name labels after layer 1, on named entities' tokens (")
    shares = [float(v) for v in last.split("other name ")[1].split(" (chance")[0].split(" / ")]
    assert len(shares) == 3 and sum(shares) == pytest.approx(1, abs=0.02)
