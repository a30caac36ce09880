import re
from pathlib import Path

import pytest

from socioseg.rl.config import ConfigError, load_config

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
