"""The memory plan: its arithmetic against measured peaks, the 3B plans, `train --dry-run`."""

from pathlib import Path

import pytest
import torch

from socioseg.cli import main
from socioseg.train.config import load_config
from socioseg.train.memory_plan import (
    PROMPT_TEXT_TOKENS,
    TensorMeter,
    count_parameters,
    measure_update,
    model_config,
    plan,
    prompt_shape,
)
from socioseg.train.rollout import collect_rollouts
from tests.test_trainer import config, trainer

CONFIGS = Path(__file__).parent.parent / "configs"


def measured_update_peak(t) -> tuple[int, int, int]:
    rollouts = collect_rollouts(
        t.policy,
        t.segmenter,
        t.batch_samples(0),
        t.config.rollout,
        min_pixels=3136,
        max_pixels=12544,
        seed=0,
    )
    return measure_update(t, rollouts)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.dtype=bfloat16"],
        ["model.gradient_checkpointing=true"],
        ["model.dtype=bfloat16", "optim.master_weights=bf16_stochastic_rounding"],
    ],
)
def test_plan_is_within_15_percent_of_the_measured_update_peak(
    tiny_models,
    synth_dir,
    tmp_path,
    overrides,
):
    # one micro-batch of all 8 responses (2 prompts x G 2 x 2 stages), as the plan assumes;
    # every row with its own prompt (a micro-batch of stage-2 rows, the plan's peak)
    cfg = config(
        tiny_models, synth_dir, "optim.micro_batch_size=8", "rollout.share_prefix=false", *overrides
    )
    t = trainer(cfg, tmp_path)
    peak, prompt, response = measured_update_peak(t)
    planned_cfg = config(
        tiny_models,
        synth_dir,
        "optim.micro_batch_size=8",
        f"rollout.max_response_tokens={response}",
        *overrides,
    )
    planned = plan(
        planned_cfg, model_cfg=t.policy.model.config, device_type="cpu", prompt_tokens=prompt
    )
    # Measured (plan / peak, MB): float32 56.7 / 54.6, bf16 autocast 39.3 / 42.3, gradient
    # checkpointing 33.0 / 31.8, bf16 with stochastic rounding 35.3 / 36.5.
    assert planned.update_peak == pytest.approx(peak, rel=0.15)


def test_plan_counts_weights_gradients_and_states_by_hand(tiny_models, synth_dir):
    model_cfg = model_config(str(tiny_models[0]))
    from transformers import Qwen2_5_VLForConditionalGeneration

    n = sum(p.numel() for p in Qwen2_5_VLForConditionalGeneration(model_cfg).parameters())
    cfg = config(tiny_models, synth_dir, "model.dtype=bfloat16")
    p = plan(cfg, model_cfg=model_cfg)
    assert (p.parameters, p.trainable) == (n, n)
    assert p.gpu["weights"] == p.gpu["gradients"] == 4 * n  # float32 masters
    assert p.gpu["optimizer states"] == 8 * n and p.gpu["reference"] == 4 * n
    assert p.gpu["autocast copies (rollout)"] == 2 * n
    fsdp = plan(
        config(tiny_models, synth_dir, "model.dtype=bfloat16", "distributed=fsdp", "batch_size=4"),
        world_size=4,
        model_cfg=model_cfg,
    )
    assert fsdp.gpu["optimizer states"] == 2 * n and fsdp.gpu["weights"] == n
    offload = plan(
        config(
            tiny_models,
            synth_dir,
            "optim.offload_optimizer_states=true",
            "model.offload_reference=true",
        ),
        model_cfg=model_cfg,
    )
    assert offload.gpu["optimizer states"] == offload.gpu["reference"] == 0
    assert offload.host == {"optimizer states": 8 * n, "reference": 4 * n}


def test_lora_trainable_count_equals_peft(tiny_models, synth_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from socioseg.train.checkpoint import add_lora

    cfg = config(tiny_models, synth_dir, "model.lora={rank: 4}")
    model = add_lora(
        Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_models[0]), cfg.model.lora
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count_parameters(model_config(str(tiny_models[0])), cfg.model.lora)[1] == trainable


def test_3b_plans_say_where_the_shipped_configs_fit():
    released = load_config(CONFIGS / "socioreasoner_3b.yaml")
    p = plan(released)
    assert 3.70e9 < p.parameters < 3.80e9  # Qwen2.5-VL-3B: 3.75 B
    assert not p.fits(80) and p.fits(141)
    assert plan(load_config(CONFIGS / "socioreasoner_3b.yaml", ["distributed=fsdp"]), 8).fits(80)
    one_gpu = load_config(CONFIGS / "socioreasoner_3b_1gpu.yaml")
    assert one_gpu.model.lora is None and one_gpu.optim.master_weights == "float32"
    assert one_gpu.optim.lr == released.optim.lr and one_gpu.rollout == released.rollout.__class__(
        **{**released.rollout.__dict__, "generation_batch_size": 32}
    )
    assert plan(one_gpu).fits(80)


def test_dry_run_prints_the_plan_and_loads_nothing(capsys):
    assert (
        main(["train", "--dry-run", "--config", str(CONFIGS / "socioreasoner_3b_1gpu.yaml")]) == 0
    )
    out = capsys.readouterr().out
    assert "parameters: 3.755 B" in out and "optimizer states" in out
    assert "fits a 80 GB GPU" in out and "does NOT fit" not in out
    assert main(["train", "--dry-run", "model.vlm=/nonexistent/vlm"]) == 2
    assert "model.vlm" in capsys.readouterr().err


def test_meter_counts_live_tensor_bytes():
    meter = TensorMeter()
    with meter:
        a = torch.zeros(1000)  # 4000 bytes
        b = torch.ones(500, dtype=torch.float64)  # 4000 bytes
        del a
        c = b.view(50, 10)  # a view: no new storage
        d = torch.empty(250)  # 1000 bytes
    assert meter.peak == 8000 and meter.now == 5000
    del b, c, d
    assert meter.now == 0


def test_offloading_levers_change_memory_not_results(tiny_models, synth_dir, tmp_path):
    runs = {}
    for name, lever in (
        ("resident", []),
        ("offload_reference", ["model.offload_reference=true"]),
        ("offload_states", ["optim.offload_optimizer_states=true"]),
    ):
        t = trainer(config(tiny_models, synth_dir, "steps=2", *lever), tmp_path / name)
        metrics = t.train()
        runs[name] = (metrics, torch.cat([p.detach().flatten() for p in t.params]))
    base_metrics, base_params = runs.pop("resident")
    for name, (metrics, params) in runs.items():
        for key in ("train/loss", "train/kl", "train/grad_norm"):
            assert metrics[key] == pytest.approx(base_metrics[key], rel=1e-5, abs=1e-8), name
        assert torch.allclose(params, base_params, atol=1e-6), name


def test_qwen3_vl_plans_fit_the_cards_their_configs_name():
    """Qwen3-VL-2B/4B (2.13 / 4.44 B): full-parameter on 80 GB, LoRA on 24 GB."""
    lora_24 = ["model.lora={}", "model.offload_reference=false", "rollout.generation_batch_size=8"]
    for name, low, high in (("qwen3vl_2b_1gpu", 2.10e9, 2.15e9), ("qwen3vl_4b_1gpu", 4.4e9, 4.5e9)):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        p = plan(cfg)
        assert low < p.parameters < high and p.fits(80)
        assert plan(load_config(CONFIGS / f"{name}.yaml", lora_24)).fits(24)
        # 768 px tiles stay 768 px (a multiple of 32): 48 x 48 patches of 16 px, 2 x 2 merged.
        assert prompt_shape(cfg, 768, "qwen3_vl") == (2 * 24 * 24 + PROMPT_TEXT_TOKENS, 2 * 48 * 48)
    assert not plan(
        load_config(CONFIGS / "qwen3vl_4b_1gpu.yaml", ["rollout.generation_batch_size=32"])
    ).fits(80)


def test_qwen3_5_plans_fit_the_cards_their_configs_name():
    """Qwen3.5-2B/4B: full-parameter on 80 GB (4B with AdamW's moments in host memory; on the
    GPU they do not fit), LoRA on 24 GB; the rollout cache of a hybrid model by hand."""
    lora_24 = ["model.lora={}", "model.offload_reference=false", "rollout.generation_batch_size=8"]
    for name, low, high in (("qwen3_5_2b_1gpu", 2.2e9, 2.25e9), ("qwen3_5_4b_1gpu", 4.5e9, 4.6e9)):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        p = plan(cfg)
        assert low < p.parameters < high and p.fits(80)
        assert plan(load_config(CONFIGS / f"{name}.yaml", lora_24)).fits(24)
    moments_on_gpu = ["optim.offload_optimizer_states=false"]
    assert not plan(load_config(CONFIGS / "qwen3_5_4b_1gpu.yaml", moments_on_gpu)).fits(80)

    # 2B: 24 layers, 6 of them full attention (2 KV heads of 256) and 18 Gated-DeltaNet ones
    # (16 key and 16 value heads of 128, conv kernel 4); bfloat16 cache, float32 recurrent state.
    cfg = load_config(CONFIGS / "qwen3_5_2b_1gpu.yaml")
    prompt, _ = prompt_shape(cfg, 768, "qwen3_5")
    rows, tokens = 32, prompt + 2048
    keys_values = rows * tokens * 2 * 6 * (2 * 256) * 2
    conv = (2 * 16 * 128 + 16 * 128) * 4 * 2
    recurrent = 16 * 128 * 128 * 4
    assert plan(cfg).gpu["KV cache (rollout)"] == keys_values + rows * 18 * (conv + recurrent)
