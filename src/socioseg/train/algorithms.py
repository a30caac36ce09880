"""GRPO math as pure tensor functions: group advantages, the k3 KL, the clipped token loss.

Shapes: ``N`` responses (a multiple of the group size ``G``, groups contiguous), ``T`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ADVANTAGE_EPS = 1e-6


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    std_normalize: bool = True,
    reward_clip: float = 10.0,
    advantage_clip: float = 10.0,
) -> torch.Tensor:
    """Per-group normalised rewards.

    Args:
        rewards: ``N`` float tensor; rows ``[k*G, (k+1)*G)`` form group ``k``.
        group_size: ``G`` (>= 2).
        std_normalize: divide the centred rewards by the group's (unbiased) std + 1e-6;
            False gives the paper's text (mean subtraction only).

    Returns:
        ``N`` advantages, after clipping rewards and advantages to ``+-clip``.
    """
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size}")
    grouped = rewards.float().clamp(-reward_clip, reward_clip).view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if std_normalize:
        centred = centred / (grouped.std(dim=1, keepdim=True) + ADVANTAGE_EPS)
    return centred.clamp(-advantage_clip, advantage_clip).view(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): ``exp(r - l) - (r - l) - 1`` >= 0."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


@dataclass(frozen=True)
class LossStats:
    """Token-mean diagnostics of one loss call (detached floats)."""

    policy_loss: float
    kl: float
    clip_fraction: float
    ratio: float
    tokens: int


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float,
    kl_beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    total_tokens: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """PPO clipped surrogate on token ratios plus ``kl_beta`` x k3 KL, averaged over tokens.

    Args:
        logp, old_logp, ref_logp: ``N x T`` log-probs of the sampled tokens under the current,
            rollout-time and reference policies.
        advantages: ``N`` (one per response, broadcast over its tokens).
        mask: ``N x T``, 1 on response tokens.
        total_tokens: divisor of the token sum; pass the whole step's token count when the
            step is split into micro-batches, so the accumulated gradient is a token mean.

    Returns:
        The scalar loss and its diagnostics.
    """
    mask = mask.to(logp.dtype)
    tokens = mask.sum()
    divisor = tokens.clamp(min=1) if total_tokens is None else max(float(total_tokens), 1.0)
    ratio = torch.exp(logp - old_logp)
    adv = advantages.to(logp.dtype).unsqueeze(-1)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)
    kl = torch.zeros_like(logp)
    if kl_beta > 0:
        if ref_logp is None:
            raise ValueError("kl_beta > 0 needs ref_logp")
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + kl_beta * kl
    loss = (per_token * mask).sum() / divisor
    with torch.no_grad():
        count = tokens.clamp(min=1)
        stats = LossStats(
            policy_loss=float((torch.maximum(unclipped, clipped) * mask).sum() / count),
            kl=float((kl * mask).sum() / count),
            clip_fraction=float(((clipped > unclipped).to(mask.dtype) * mask).sum() / count),
            ratio=float((ratio * mask).sum() / count),
            tokens=int(tokens.item()),
        )
    return loss, stats
