"""scripts/gate_a.py: gate A of the mini curriculum, its IoU and its resumable run folder."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from safetensors.torch import load_file

from tests.scripts import load_script


def test_the_answer_iou_is_that_of_its_filled_boxes_with_the_square():
    gate = load_script("gate_a")
    box = [0, 0, 126, 126]  # tile px: the top-left quarter of a 252 px tile; 56 px frame: 28
    answer = '<answer>[{"bbox_2d": [0, 0, 28, 28]}]</answer>'
    assert gate.answer_iou(answer, box, 56) == 1.0
    half = '<answer>[{"bbox_2d": [0, 0, 14, 28]}]</answer>'
    assert gate.answer_iou(half, box, 56) == pytest.approx(0.5)
    # two boxes: their union; 28 x 28 of a 42 x 28 union
    two = '<answer>[{"bbox_2d": [0, 0, 28, 28]}, {"bbox_2d": [28, 0, 42, 28]}]</answer>'
    assert gate.answer_iou(two, box, 56) == pytest.approx(28 * 28 / (42 * 28))
    assert gate.answer_iou("no answer", box, 56) == 0.0


def test_position_targets_are_map_columns_then_satellite_rows(tmp_path):
    probe = load_script("position_probe")
    gate = load_script("gate_a")
    policy = probe.build_policy(tmp_path / "vlm", 56, 10.0, seed=0, mrope_section=[2, 7, 7])
    assert policy.model.config.text_config.rope_parameters["mrope_section"] == [2, 7, 7]
    digit = [policy.processor.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    targets = gate.position_targets(policy, 56).tolist()
    # 56 px: 2 x 2 merged tokens per image, row-major
    assert targets == [digit[c] for c in (0, 1) * 2] + [digit[r] for r in (0, 0, 1, 1)]


def test_a_run_stopped_and_resumed_ends_where_an_unbroken_run_does(tmp_path):
    gate = load_script("gate_a")
    common = ["--steps", "2", "--every", "2", "--held-out", "2", "--batch-size", "1"]
    common += ["--frame", "56"]
    whole = gate.main([str(tmp_path / "whole"), *common])
    assert whole["step"] == 2 and 0 <= whole["iou_share"] <= 1 and not whole["passed"]
    gate.main([str(tmp_path / "parts"), *common, "--stop-after", "1"])
    rows = list(csv.DictReader((tmp_path / "parts" / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["1"] and float(rows[0]["aux_position"]) > 0
    with (tmp_path / "parts" / "metrics.csv").open("a") as file:
        file.write("2,9.9,9.9,9.9\n")  # a killed session's step after the checkpoint
    resumed = gate.main([str(tmp_path / "parts"), *common])
    assert resumed.pop("elapsed_s") > 0 and whole.pop("elapsed_s") > 0
    assert resumed == whole
    lines = [
        (tmp_path / run / "metrics.csv").read_text().splitlines() for run in ("whole", "parts")
    ]
    assert [line.split(",")[:3] for line in lines[0]] == [line.split(",")[:3] for line in lines[1]]
    gates = list(csv.DictReader((tmp_path / "whole" / "gate.csv").open()))
    assert [r["step"] for r in gates] == ["2"]
    assert float(gates[0]["iou_share"]) == pytest.approx(whole["iou_share"], rel=1e-5)
    assert list((tmp_path / "whole" / "tensorboard").glob("events.out.tfevents.*"))
    weights = [
        load_file(tmp_path / run / "checkpoint/vlm/model.safetensors") for run in ("whole", "parts")
    ]
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    with pytest.raises(SystemExit) as refused:
        gate.main([str(tmp_path / "parts"), *common, "--lr", "0.5"])
    assert refused.value.code == 2


def test_a_folder_it_did_not_make_is_refused_untouched(tmp_path, capsys):
    gate = load_script("gate_a")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(SystemExit) as refused:
        gate.main([str(mine), "--steps", "1"])
    assert refused.value.code == 2
    assert "not empty and not a gate-A run" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    with pytest.raises(SystemExit) as refused:
        gate.main([str(broken), "--steps", "1"])
    assert refused.value.code == 2 and "run.json: unreadable" in capsys.readouterr().err


def test_target_attention_compares_with_the_share_the_square_covers(tmp_path):
    probe = load_script("position_probe")
    policy = probe.build_policy(tmp_path / "vlm", 56, 10.0, seed=0)
    prompt, answer, _ = probe.squares_sample(np.random.default_rng(0), 2, 56)
    quarter = [0, 0, 126, 126]  # the top-left merged token of a 2 x 2 grid, on both images
    rows = probe.target_attention(policy, [(prompt, answer, quarter)], 56)
    assert len(rows) == policy.model.config.text_config.num_hidden_layers
    assert all(0 <= on <= 1 and uniform == 0.25 for on, uniform in rows)
    assert policy.model.config._attn_implementation != "eager"  # put back as it was


def test_the_committed_phase_a_policy_reads_the_squares():
    """checkpoints/mini-phase-a (gate A passed there: 50.0% of the 48 held-out questions with
    IoU > 0.5, mean IoU 0.489) answers the first 16 of them as measured (31% above 0.5, mean
    IoU 0.443; thresholds a little below); an untrained policy scores 0. It is the mini's
    architecture, so make mini can start from it."""
    from pathlib import Path

    from socioseg.models.builders import MINI_VLM
    from socioseg.models.vlm import VisionLanguageModel

    gate, probe = load_script("gate_a"), load_script("position_probe")
    folder = Path(__file__).resolve().parents[1] / "checkpoints" / "mini-phase-a"
    policy = VisionLanguageModel.from_pretrained(str(folder), "cpu", "float32")
    text = policy.model.config.text_config
    assert text.num_hidden_layers == MINI_VLM["text_layers"]
    assert text.rope_parameters["rope_theta"] == MINI_VLM["rope_theta"]
    assert text.rope_parameters["mrope_section"] == MINI_VLM["mrope_section"]
    held_out = [
        probe.squares_sample(np.random.default_rng([probe.HELD_OUT_SEED, i]), 3, 252)
        for i in range(16)
    ]
    share, mean = gate.gate(policy, held_out, 252)
    assert mean > 0.38 and share >= 0.25
