"""GRPO math against hand computation."""

import math

import pytest
import torch

from socioseg.train.algorithms import clipped_policy_loss, group_advantages, k3_kl


def test_group_advantages_normalise_each_group_separately():
    rewards = torch.tensor([1.0, 3.0, 0.0, 0.0, 2.0, 4.0])
    adv = group_advantages(rewards, 2)
    s = math.sqrt(2.0)  # unbiased std of {1, 3}
    expected = [-1 / (s + 1e-6), 1 / (s + 1e-6), 0.0, 0.0, -1 / (s + 1e-6), 1 / (s + 1e-6)]
    assert adv.tolist() == pytest.approx(expected)


def test_group_advantages_mean_only_and_clipping():
    rewards = torch.tensor([0.0, 30.0, 5.0, 7.0])
    adv = group_advantages(rewards, 2, std_normalize=False)
    # rewards are clipped to +-10 first: {0, 10} -> -5, 5; then {5, 7} -> -1, 1
    assert adv.tolist() == pytest.approx([-5.0, 5.0, -1.0, 1.0])
    adv = group_advantages(torch.tensor([0.0, 30.0]), 2, std_normalize=False, advantage_clip=2)
    assert adv.tolist() == [-2.0, 2.0]


def test_group_advantages_reject_partial_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), 4)


def test_k3_kl_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    assert k3_kl(logp, ref).tolist() == pytest.approx([math.exp(-0.5) + 0.5 - 1, 0.0])


def test_clipped_loss_by_hand():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]])
    old = torch.tensor([[-1.5, -2.0], [-0.5, -0.9]])
    ref = torch.tensor([[-1.0, -2.5], [-0.4, -0.1]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = clipped_policy_loss(logp, old, adv, mask, clip_eps=0.2, kl_beta=0.1, ref_logp=ref)
    r = [math.exp(0.5), 1.0, 1.0]  # ratios on the three real tokens
    a = [1.0, 1.0, -2.0]
    pg = [max(-ai * ri, -ai * min(max(ri, 0.8), 1.2)) for ai, ri in zip(a, r, strict=True)]
    kl = [math.exp(0.0) - 0.0 - 1, math.exp(-0.5) + 0.5 - 1, math.exp(0.1) - 0.1 - 1]
    expected = sum(p + 0.1 * k for p, k in zip(pg, kl, strict=True)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats.tokens == 3
    assert stats.clip_fraction == pytest.approx(1 / 3)  # the first token's ratio e^0.5 > 1.2
    assert stats.kl == pytest.approx(sum(kl) / 3, rel=1e-6)


def test_loss_gradient_is_the_advantage_weighted_score():
    logp = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    loss, _ = clipped_policy_loss(
        logp, logp.detach(), torch.tensor([2.0]), torch.ones(1, 2), clip_eps=0.2
    )
    loss.backward()
    assert logp.grad.tolist() == [[-1.0, -1.0]]  # d(-A * ratio)/dlogp / 2 tokens


def test_total_tokens_divisor_makes_micro_batches_add_up():
    # float64 and a fixed draw: the sum is exact up to rounding, whatever the values cancel to
    generator = torch.Generator().manual_seed(0)
    logp = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    adv = torch.randn(4, generator=generator, dtype=torch.float64)
    mask = torch.ones(4, 3, dtype=torch.float64)
    whole, _ = clipped_policy_loss(logp, logp - 0.1, adv, mask, clip_eps=0.2)
    parts = [
        clipped_policy_loss(
            logp[i : i + 2],
            logp[i : i + 2] - 0.1,
            adv[i : i + 2],
            mask[i : i + 2],
            clip_eps=0.2,
            total_tokens=12,
        )[0]
        for i in (0, 2)
    ]
    assert (parts[0] + parts[1]).item() == pytest.approx(whole.item(), rel=1e-12)


def test_kl_needs_a_reference():
    with pytest.raises(ValueError, match="ref_logp"):
        clipped_policy_loss(
            torch.zeros(1, 1),
            torch.zeros(1, 1),
            torch.zeros(1),
            torch.ones(1, 1),
            clip_eps=0.2,
            kl_beta=0.1,
        )
