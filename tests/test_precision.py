"""Training precision: bf16 compute keeps lr-1e-6 updates; stochastic rounding is unbiased."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from socioseg.train.optim import AdamW, stochastic_round_
from tests.test_trainer import config, trainer


def one_step(tiny_models, synth_dir, out, *overrides):
    """Train one step at lr 1e-6; returns (trainer, parameters before)."""
    cfg = config(tiny_models, synth_dir, "steps=1", "optim.lr=1e-6", *overrides)
    t = trainer(cfg, out)
    before = {k: v.detach().clone() for k, v in t.policy.model.named_parameters()}
    t.train()
    return t, before


def fraction_changed(t, before) -> float:
    changed = sum((before[k] != v).sum().item() for k, v in t.policy.model.named_parameters())
    return changed / sum(v.numel() for v in before.values())


def test_bf16_step_at_lr_1e6_changes_as_many_weights_as_float32(
    tiny_models,
    synth_dir,
    tmp_path,
):
    fp32, before32 = one_step(tiny_models, synth_dir, tmp_path / "fp32", "model.dtype=float32")
    bf16, before16 = one_step(tiny_models, synth_dir, tmp_path / "bf16", "model.dtype=bfloat16")
    assert bf16.precision.autocast and bf16.precision.master == torch.float32
    assert all(p.dtype == torch.float32 for p in bf16.policy.model.parameters())
    expected = fraction_changed(fp32, before32)
    assert expected > 0.5  # AdamW moves every weight whose gradient is not zero
    # Measured: 0.87276 (float32) and 0.87257 (bf16 compute): bf16 gradients can underflow
    # to exactly zero for a few weights; a bf16-stored model keeps only a few percent.
    assert fraction_changed(bf16, before16) == pytest.approx(expected, abs=1e-3)
    # The checkpoint holds the float32 master weights, and says so.
    saved = load_file(tmp_path / "bf16" / "checkpoint-1" / "model.safetensors")
    for name, param in bf16.policy.model.named_parameters():
        if name in saved:
            assert saved[name].dtype == torch.float32
            assert torch.equal(saved[name], param.detach()), name
    state = json.loads((tmp_path / "bf16" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["weights"] == "float32 master weights and AdamW states, bfloat16 compute"


def test_bf16_run_tracks_float32_over_20_steps(tiny_models, synth_dir, tmp_path):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        cfg = config(
            tiny_models,
            synth_dir,
            "steps=20",
            "batch_size=1",
            "optim.kl_beta=0.1",  # the loss then reflects how far the policy moved
            f"model.dtype={dtype}",
        )
        runs[dtype] = []
        trainer(cfg, tmp_path / dtype).train(on_log=lambda step, m, d=dtype: runs[d].append(m))
    loss = np.array([[m["train/loss"] for m in runs[d]] for d in runs])
    kl = np.array([[m["train/kl"] for m in runs[d]] for d in runs])
    assert np.all(kl[:, 0] == 0)  # the reference is stored like the policy: KL starts at 0
    assert kl[0, -1] > 0.05  # the policy moved away from the reference
    # Measured on this model: loss within 2.2e-4, KL within 1.2% of the float32 run.
    np.testing.assert_allclose(loss[1], loss[0], atol=1e-3)
    np.testing.assert_allclose(kl[1], kl[0], rtol=0.03, atol=1e-4)


def test_stochastic_rounding_is_unbiased_and_lands_on_a_neighbour():
    torch.manual_seed(0)
    low = torch.tensor([1.0, -0.01171875, 3.0e-3]).to(torch.bfloat16)
    # the next bfloat16 away from zero: one more unit in bit 16 of the float32 pattern
    high = (low.float().view(torch.int32) + (1 << 16)).view(torch.float32).to(torch.bfloat16)
    fraction = torch.tensor([0.1, 0.5, 0.9])
    value = low.float() + fraction * (high.float() - low.float())
    draws = torch.empty((20000, 3), dtype=torch.bfloat16)
    stochastic_round_(draws, value.expand(20000, 3).contiguous())
    assert torch.all((draws == low) | (draws == high))
    went_up = (draws == high).float().mean(0)
    assert torch.allclose(went_up, fraction, atol=0.015)


def test_stochastic_rounding_keeps_updates_that_round_to_nearest_loses():
    torch.manual_seed(0)
    start = torch.full((4096,), 0.5)
    grad = torch.ones(4096)
    params = {
        "fp32": torch.nn.Parameter(start.clone()),
        "sr": torch.nn.Parameter(start.to(torch.bfloat16)),
    }
    optimizers = {k: AdamW([p], lr=1e-5, weight_decay=0.0) for k, p in params.items()}
    for _ in range(50):
        for key, p in params.items():
            p.grad = grad.to(p.dtype)
            optimizers[key].step()
    moved = {k: float(start.mean() - p.detach().float().mean()) for k, p in params.items()}
    assert moved["fp32"] == pytest.approx(50 * 1e-5, rel=1e-2)  # Adam: lr per step
    # bfloat16's spacing below 0.5 is 2e-3: one step rounded to nearest would be lost ...
    assert torch.tensor(0.5 - 1e-5).to(torch.bfloat16) == 0.5
    # ... stochastic rounding keeps it in expectation
    assert moved["sr"] == pytest.approx(moved["fp32"], rel=0.05)
    assert params["sr"].dtype == torch.bfloat16
    assert optimizers["sr"].state[params["sr"]]["exp_avg"].dtype == torch.bfloat16


def test_adamw_matches_torch_and_its_state_reloads_safely(tmp_path):
    torch.manual_seed(0)
    start = torch.randn(64, 8)
    ours = torch.nn.Parameter(start.clone())
    theirs = torch.nn.Parameter(start.clone())
    mine = AdamW([ours], lr=1e-2, weight_decay=0.01, state_device="cpu")
    reference = torch.optim.AdamW([theirs], lr=1e-2, weight_decay=0.01)
    for step in range(5):
        grad = torch.randn(64, 8) * (step + 1)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        mine.step()
        reference.step()
    assert torch.allclose(ours, theirs, atol=1e-6)
    torch.save(mine.state_dict(), tmp_path / "opt.pt")
    again = AdamW([torch.nn.Parameter(ours.detach().clone())], lr=1e-2, state_device="cpu")
    again.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    (state,) = again.state.values()
    assert math.isclose(float(state["step"]), 5.0)
    assert state["exp_avg"].device.type == "cpu"
