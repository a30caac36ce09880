"""socioseg-mini: the name ``mini`` resolves to the package's folders (a local folder wins,
an install without them says so in one line); a model folder's own frame and decoding limits
apply on load without flags; ``socioseg sft`` writes a loadable policy that keeps them."""

from __future__ import annotations

import json
import shutil

import pytest

from socioseg.cli import build_parser, main
from socioseg.cli.model_options import inference_config as cli_inference_config
from socioseg.data.synth import write_dataset
from socioseg.geometry import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, smart_resize
from socioseg.models import sources
from socioseg.models.defaults import DEFAULTS_FILE, ModelDefaults
from socioseg.models.sources import QWEN_VL_TYPES, SAM_TYPES, SourceNotFoundError, model_source
from socioseg.models.vlm import VisionLanguageModel
from socioseg.socioreasoner import SocioReasoner


@pytest.fixture
def shipped(tmp_path, monkeypatch, tiny_models):
    """A package whose assets/mini holds copies of the tiny models."""
    mini = tmp_path / "package-mini"
    shutil.copytree(tiny_models[0], mini / "vlm")
    shutil.copytree(tiny_models[1], mini / "sam")
    monkeypatch.setattr(sources, "MINI_DIR", mini)
    monkeypatch.chdir(tmp_path)
    return mini


def test_mini_resolves_to_the_package_and_a_local_folder_wins(shipped, tmp_path, tiny_models):
    assert model_source("mini", QWEN_VL_TYPES, sources.VLM_WHAT) == str(shipped / "vlm")
    assert model_source("mini", SAM_TYPES, sources.SAM_WHAT) == str(shipped / "sam")
    shutil.copytree(tiny_models[1], tmp_path / "mini")
    assert model_source("mini", SAM_TYPES, sources.SAM_WHAT) == "mini"


def test_missing_mini_weights_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sources, "MINI_DIR", tmp_path / "empty")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceNotFoundError, match="no socioseg-mini weights"):
        model_source("mini", QWEN_VL_TYPES, sources.VLM_WHAT)
    code = main(["segment", "--example", "0", "--vlm", "mini", "--sam", "mini", "--out", "o"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "make mini" in err


def test_folder_frame_and_token_limits_apply_without_flags(shipped, tiny_models):
    ModelDefaults(3136, 12544, {"stage1": 7, "stage2": 9}).write(shipped / "vlm")
    reasoner = SocioReasoner.from_pretrained(vlm="mini", sam="mini", device="cpu")
    config = reasoner.config
    assert (config.min_pixels, config.max_pixels) == (3136, 12544)
    assert (config.sampling.max_new_tokens, config.stage2_max_new_tokens) == (7, 9)
    prediction = reasoner.segment(*_example(), "School", mode="stage1")
    assert prediction.vlm_size[::-1] == smart_resize(256, 256, min_pixels=3136, max_pixels=12544)
    # The CLI: the folder's values unless a flag says otherwise.
    args = build_parser().parse_args(["segment", "--example", "0", "--out", "o"])
    assert cli_inference_config(args, reasoner.vlm.processor.defaults).max_pixels == 12544
    args = build_parser().parse_args(
        ["segment", "--example", "0", "--out", "o", "--max-pixels", "9000"]
    )
    config = cli_inference_config(args, reasoner.vlm.processor.defaults)
    assert (config.min_pixels, config.max_pixels) == (3136, 9000)
    assert (config.sampling.max_new_tokens, config.stage2_max_new_tokens) == (7, 9)
    args = build_parser().parse_args(
        ["segment", "--example", "0", "--out", "o", "--max-new-tokens", "5"]
    )
    config = cli_inference_config(args, reasoner.vlm.processor.defaults)
    assert (config.sampling.max_new_tokens, config.stage2_max_new_tokens) == (5, None)
    args = build_parser().parse_args(["segment", "--example", "0", "--out", "o"])
    plain = cli_inference_config(args, ModelDefaults())
    assert (plain.min_pixels, plain.max_pixels) == (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    assert plain.sampling.max_new_tokens == 1024


def _example():
    from PIL import Image

    return Image.new("RGB", (256, 256), (90, 120, 90)), Image.new("RGB", (256, 256), "white")


def test_a_broken_defaults_file_is_one_line_naming_it(tmp_path):
    (tmp_path / DEFAULTS_FILE).write_text(json.dumps({"max_new_tokens": {"stage1": 0}}))
    with pytest.raises(ValueError, match=r"socioseg_inference\.json: max_new_tokens\.stage1"):
        ModelDefaults.read(tmp_path)
    (tmp_path / DEFAULTS_FILE).write_text(json.dumps({"min_pixels": 900, "max_pixels": 400}))
    with pytest.raises(ValueError, match="min_pixels 900 is above max_pixels 400"):
        ModelDefaults.read(tmp_path)


def test_sft_command_writes_a_policy_that_records_its_frame(tiny_models, tmp_path, capsys):
    write_dataset(tmp_path / "data", n=4, seed=0, size=128)
    out = tmp_path / "sft"
    args = ["sft", "--out", str(out), f"vlm={tiny_models[0]}", f"data={tmp_path / 'data'}"]
    args += ["steps=2", "batch_size=1", "min_pixels=3136", "max_pixels=12544", "log_every=1"]
    assert main(args) == 0
    assert "sft step 2: nll" in capsys.readouterr().out
    policy = VisionLanguageModel.from_pretrained(str(out), device="cpu")
    assert policy.processor.defaults == ModelDefaults(3136, 12544, {})
    assert json.loads((out / "training.json").read_text())["config"]["steps"] == 2
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,nll,elapsed_s" and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err


def test_the_mini_configs_load():
    from pathlib import Path

    from socioseg.train.config import TrainConfig, load_config
    from socioseg.train.sam import SamTrainConfig
    from socioseg.train.sft import SftConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    sam = load_config(configs / "mini_sam.yaml", cls=SamTrainConfig)
    assert sam.multimask_loss == "all" and sam.embedding_weight > 0
    frame = (224 * 224, 252 * 252)  # the mini's VLM frame, where SAM2 learns too
    assert (sam.min_pixels, sam.max_pixels) == frame
    phase_b = load_config(configs / "mini_phase_b.yaml", cls=SftConfig)
    assert phase_b.stages == ["stage1"] and phase_b.kind_word_names
    assert phase_b.aux.layer != phase_b.aux.entity_layer  # two labels, two layers
    assert phase_b.aux.entity_others
    phase_b2 = load_config(configs / "mini_phase_b2.yaml", cls=SftConfig)
    assert phase_b2.optim.lr < phase_b.optim.lr and phase_b2.aux.query > 0
    assert phase_b2.level_shares == phase_b.level_shares  # gate B asks these shares
    phase_c = load_config(configs / "mini_sft.yaml", cls=SftConfig)
    assert phase_c.stages == ["stage1", "stage2"] and phase_c.single_stage_share > 0
    for sft in (phase_b, phase_b2, phase_c):
        assert (sft.min_pixels, sft.max_pixels) == frame and sft.save_every
    grpo = load_config(configs / "mini_grpo.yaml")
    assert isinstance(grpo, TrainConfig) and grpo.batch_size % 2 == 0  # two GRPO processes
    assert (grpo.model.min_pixels, grpo.model.max_pixels) == (224 * 224, 252 * 252)
