"""The optimizer of a training run, and an AdamW for the memory levers torch's lacks.

torch's AdamW is used for float32 master weights with states on the device. The
:class:`AdamW` here implements the same update (decoupled weight decay, bias correction)
one parameter at a time, which allows two things:

- states kept in another device's memory (``state_device="cpu"``), streamed through the
  compute device for the parameter being updated;
- bfloat16 weights and states with stochastic rounding of the new weight (torchao's
  ``bf16_stochastic_round`` idea; torchao 0.18 keeps its plain AdamW private and compiles it
  with ``torch.compile``, so it is not used here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from socioseg.train.config import OptimSettings
    from socioseg.train.precision import Precision

_LOW_16_BITS_CLEARED = -65536  # 0xFFFF0000 as int32


def stochastic_round_(target: torch.Tensor, value: torch.Tensor) -> None:
    """Write float32 ``value`` into bfloat16 ``target``, rounding at random.

    Each element goes to one of its two bfloat16 neighbours with probability proportional to
    closeness, so ``E[target] == value``: a float32 number's low 16 bits plus uniform 16-bit
    noise carry into bit 16 exactly that often. Uses the device's default generator (saved
    with every checkpoint). ``target`` and ``value`` have the same shape.
    """
    bits = value.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=bits.device)
    rounded = (bits + noise).bitwise_and_(_LOW_16_BITS_CLEARED)
    target.copy_(rounded.view(torch.float32))  # exact: the low 16 bits are zero


class AdamW(torch.optim.Optimizer):
    """AdamW (as torch's) with optional CPU-resident states and stochastic rounding.

    Parameters of dtype bfloat16 get bfloat16 states and stochastically rounded updates;
    float32 parameters get float32 states and exact updates. The arithmetic is float32.
    """

    def __init__(
        self,
        params,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        state_device: str | torch.device | None = None,
    ):
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )
        self.state_device = None if state_device is None else torch.device(state_device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        if self.state_device is not None and torch.cuda.is_available():
            torch.cuda.synchronize()  # the states' copies home are asynchronous
        return loss

    def _new_state(self, p: torch.Tensor) -> dict:
        home = self.state_device or p.device
        pin = home.type == "cpu" and p.is_cuda

        def zeros():
            z = torch.zeros(p.shape, dtype=p.dtype, device=home)
            return z.pin_memory() if pin else z

        return {"step": torch.tensor(0.0), "exp_avg": zeros(), "exp_avg_sq": zeros()}

    def _update(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            state.update(self._new_state(p))
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        state["step"] += 1
        t = float(state["step"])
        m = state["exp_avg"].to(p.device, torch.float32, non_blocking=True)
        v = state["exp_avg_sq"].to(p.device, torch.float32, non_blocking=True)
        g = p.grad.float()
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        w = p if p.dtype == torch.float32 else p.float()
        w.mul_(1 - lr * group["weight_decay"])
        denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
        w.addcdiv_(m, denom, value=-lr / (1 - beta1**t))
        if w is not p:
            stochastic_round_(p, w)
        for key, value in (("exp_avg", m), ("exp_avg_sq", v)):
            if value is not state[key]:
                state[key].copy_(value, non_blocking=True)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # moves states to each parameter's device
        if self.state_device is not None:
            for state in self.state.values():
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key] = state[key].to(self.state_device)


def build_optimizer(params: list, settings: OptimSettings, precision: Precision):
    """torch's AdamW for float32 states on the device; :class:`AdamW` for the memory levers."""
    if precision.stochastic_rounding or settings.offload_optimizer_states:
        return AdamW(
            params,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            state_device="cpu" if settings.offload_optimizer_states else None,
        )
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


def warmup_cosine(warmup_steps: int, steps: int, floor: float = 0.1) -> Callable[[int], float]:
    """LR factor per step: linear warm-up over ``warmup_steps``, then cosine to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        return floor + (1 - floor) / 2 * (1 + math.cos(math.pi * done))

    return factor


class SupervisedUpdates:
    """The optimisation of ``socioseg sft`` and ``train-sam``, as a ``SupervisedConfig`` sets it:
    AdamW (``optim.lr``, ``optim.weight_decay``), :func:`warmup_cosine` over
    ``optim.warmup_steps`` / ``steps``, gradients clipped at ``optim.grad_clip``."""

    def __init__(self, params, config) -> None:
        settings = config.optim
        self.params = list(params)
        self.grad_clip = settings.grad_clip
        self.optimizer = torch.optim.AdamW(
            self.params, lr=settings.lr, weight_decay=settings.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(settings.warmup_steps, config.steps)
        )

    def step(self, loss: torch.Tensor) -> None:
        """One update from ``loss``: backward, clip, AdamW step, schedule step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
