import re
from pathlib import Path

import pytest

from socioseg.train.config import ConfigError, load_config

CONFIGS = Path(__file__).parent.parent / "configs"


def test_shipped_released_config_has_the_released_settings():
    c = load_config(CONFIGS / "socioreasoner_3b.yaml")
    assert (c.batch_size, c.rollout.group_size, c.steps) == (128, 8, 250)
    assert (c.optim.lr, c.optim.weight_decay, c.optim.kl_beta, c.optim.clip_eps) == (
        1e-6,
        0.01,
        0.005,
        0.2,
    )
    assert (c.rollout.temperature, c.rollout.top_p, c.rollout.top_k) == (0.99, 0.99, 100)
    assert (c.rollout.max_prompt_tokens, c.rollout.max_response_tokens) == (4096, 2048)
    assert c.reward_variant == "released" and c.rollout.strategy == "released"


def test_tiny_config_loads():
    assert load_config(CONFIGS / "tiny_cpu.yaml").model.vlm == "tiny-models/vlm"


def test_overrides_are_typed_and_saved(tmp_path):
    c = load_config(
        None,
        ["optim.lr=2e-6", "model.lora={rank: 8}", "optim.clip_eps=1", "rollout.strategy=paper"],
    )
    assert c.optim.lr == 2e-6 and isinstance(c.optim.clip_eps, float)
    assert c.model.lora.rank == 8 and c.model.lora.alpha == 128
    c.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == c


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rollout.group_size=1", "group_size must be >= 2"),
        ("optim.lr=fast", "optim.lr = 'fast'"),
        ("optim.lr=true", "optim.lr = True"),
        ("rollout.strategy=best", "rollout.strategy = 'best'"),
        ("nosuch.field=1", "unknown field"),
        ("optim.nosuch=1", "optim.nosuch"),
        ("no-equals-sign", "section.field=value"),
        ("distributed=fsdp", None),
    ],
)
def test_bad_values_name_the_field(override, message):
    if message is None:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_lora_with_fsdp_is_refused():
    with pytest.raises(ConfigError, match=r"model\.lora needs distributed: ddp"):
        load_config(None, ["distributed=fsdp", "model.lora={}"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lora.rank=-1", "model.lora.rank must be >= 1, got -1"),
        ("model.lora={rank: 0}", "model.lora.rank must be >= 1, got 0"),
        ("model.lora.dropout=1.5", "model.lora.dropout must be in [0, 1)"),
        ("model.dtype=int8", "model.dtype 'int8' is not one of"),
        ("model.max_pixels=100", "model.max_pixels (100) must be >= min_pixels"),
        ("optim.weight_decay=-0.1", "optim.weight_decay must be >= 0"),
        ("optim.grad_clip=0", "optim.grad_clip must be > 0"),
        ("optim.master_weights=bf16", "optim.master_weights = 'bf16'"),
        ("rollout.top_k=-1", "rollout.top_k must be >= 0"),
        ("data.val_limit=0", "data.val_limit must be >= 1 or null"),
        ("optim.lr=[", "override 'optim.lr=[': not valid YAML"),
        ("model.dtype=float16", "model.dtype float16 cannot train without loss scaling"),
        (
            "optim.master_weights=bf16_stochastic_rounding",
            "bf16_stochastic_rounding needs model.dtype: bfloat16",
        ),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        load_config(None, [override])
    assert "\n" not in str(error.value)


def test_memory_levers_that_cannot_combine_are_refused():
    with pytest.raises(ConfigError, match="distributed: fsdp shards the optimizer itself"):
        load_config(None, ["distributed=fsdp", "optim.offload_optimizer_states=true"])
    with pytest.raises(ConfigError, match=r"model\.offload_reference needs full-parameter"):
        load_config(None, ["model.lora={rank: 8}", "model.offload_reference=true"])
    c = load_config(None, ["model.dtype=bf16", "optim.master_weights=bf16_stochastic_rounding"])
    assert c.optim.master_weights == "bf16_stochastic_rounding"


def test_invalid_yaml_names_the_file_and_line(tmp_path, capsys):
    from socioseg.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-6\n  clip_eps: [0.2\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(bad))}: not valid YAML at line \d+"):
        load_config(bad)
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bad.yaml: not valid YAML" in err
    assert main(["train", "--out", str(tmp_path / "run"), "model.lora.rank=-1"]) == 2
    assert "model.lora.rank must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was written


@pytest.mark.parametrize("config_name", ["mini_sft.yaml", "mini_sam.yaml", "mini_grpo.yaml"])
def test_every_training_command_reads_one_optim_section(config_name):
    from socioseg.train.config import AdamWSettings
    from socioseg.train.sam import SamTrainConfig
    from socioseg.train.sft import SftConfig

    cls = {"mini_sft.yaml": SftConfig, "mini_sam.yaml": SamTrainConfig}.get(config_name)
    config = load_config(Path("configs") / config_name, ["optim.lr=2e-4"], cls=cls)
    assert isinstance(config.optim, AdamWSettings)
    assert config.optim.lr == 2e-4
    assert {"lr", "weight_decay", "warmup_steps", "grad_clip"} <= set(vars(config.optim))


@pytest.mark.parametrize("key", ["lr", "warmup_steps", "weight_decay", "grad_clip"])
def test_an_old_flat_optimiser_key_names_its_new_place(tmp_path, key):
    from socioseg.train.sft import SftConfig

    path = tmp_path / "sft.yaml"
    path.write_text(f"steps: 3\n{key}: 1\n")
    with pytest.raises(ConfigError, match=rf"^{key} is now optim\.{key}: move it under an optim"):
        load_config(path, cls=SftConfig)
    with pytest.raises(ConfigError, match=rf"{key} is now optim\.{key}"):
        load_config(None, [f"{key}=1"], cls=SftConfig)
