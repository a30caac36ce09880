"""Defaults that suit what is at hand: short answers from random models, levels.json beside a
dataset, a shard's own folder printed."""

from __future__ import annotations

import json

from socioseg.cli import main
from socioseg.data.synth import write_dataset
from socioseg.eval.run import result_dir
from socioseg.models.builders import RANDOM_MODEL_MAX_NEW_TOKENS


def test_eval_shard_on_random_models(tiny_models, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "eval"
    write_dataset(data, 10, seed=3, size=128)
    argv = ["eval", "--data", data, "--out", out, "--limit", "2", "--shard", "1/2"]
    argv += ["--greedy", "--min-pixels", "3136", "--max-pixels", "12544"]
    argv += ["--vlm", tiny_models[0], "--sam", tiny_models[1]]
    assert main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    shard = out / "shard-1-of-2"
    assert f"wrote {shard}/metrics.json" in captured.out
    assert f"decodes {RANDOM_MODEL_MAX_NEW_TOKENS} tokens at most" in captured.err
    config = json.loads((shard / "run.json").read_text())["config"]
    assert config["inference"]["sampling"]["max_new_tokens"] == RANDOM_MODEL_MAX_NEW_TOKENS
    assert config["levels"] == str(data / "levels.json")
    levels = json.loads((data / "levels.json").read_text())
    row = json.loads((shard / "predictions.jsonl").read_text().splitlines()[0])
    assert row["level"] == levels[row["id"]]["level"]
    for response in (row["stage1"]["response"], row["stage2"]["response"]):
        assert len(response) <= 32 * 16  # 32 tokens of a byte-level BPE with short merges


def test_result_dir(monkeypatch, tmp_path):
    assert result_dir(tmp_path) == tmp_path
    assert result_dir(tmp_path, "0/1") == tmp_path
    assert result_dir(tmp_path, "2/3") == tmp_path / "shard-2-of-3"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    assert result_dir(tmp_path) == tmp_path  # rank 0 merges into the run folder
    monkeypatch.setenv("RANK", "3")
    assert result_dir(tmp_path) == tmp_path / "shard-3-of-4"


def test_demo_runs_socioseg_mini_offline_and_a_real_vlm_brings_the_real_sam(monkeypatch):
    import socioseg.cli.inference
    import socioseg.demo

    chosen = []
    monkeypatch.setattr(
        socioseg.cli.inference, "reasoner_factory", lambda a: chosen.append((a.vlm, a.sam))
    )
    monkeypatch.setattr(socioseg.demo, "run_demo", lambda *a, **k: None)
    assert main(["demo"]) == 0
    assert main(["demo", "--vlm", "vvangfaye/SocioReasoner-3B"]) == 0
    assert main(["demo", "--vlm", "mini", "--sam", "my/sam"]) == 0
    assert chosen == [
        ("mini", "mini"),
        ("vvangfaye/SocioReasoner-3B", "facebook/sam2-hiera-large-hf"),
        ("mini", "my/sam"),
    ]
