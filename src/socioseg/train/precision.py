"""How the policy is stored and computed during training, so that small updates are kept.

The released settings train at lr 1e-6 in bfloat16. bfloat16 has 8 significant bits: an
update of 1e-6 to a weight of about 0.01 is below half its spacing and rounds away, so a
model stored in bfloat16 barely moves while its logs look healthy. socioseg therefore never
updates plain bfloat16 weights. Two modes (``model.dtype`` is the compute dtype,
``optim.master_weights`` the storage):

- ``float32`` master weights (the default). Trainable parameters are stored in float32 (the
  master weights; checkpoints save them), and so are their gradients and AdamW states. When
  the compute dtype is bfloat16, the policy's forward runs under ``torch.autocast``: matmuls
  and convolutions see bfloat16 copies of the weights, norms and the loss stay float32.
  Frozen weights (the base model under LoRA) are stored in the compute dtype.
- ``bf16_stochastic_rounding``: weights, gradients and AdamW states in bfloat16 (half the
  memory); :class:`socioseg.train.optim.AdamW` rounds each new weight up or down at random in
  proportion to its distance, so the expected weight follows the float32 trajectory.

With LoRA only the adapters train; peft keeps them in float32 in both modes, and the frozen
base is stored in the compute dtype.

Autocast is attached to the policy model's ``forward`` (as accelerate does), so SAM and any
other model keep their own dtype. Within :func:`shared_casts` the bfloat16 copies of the
weights are made once and reused by every forward (a rollout's decoding steps), instead of
once per forward.
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from socioseg.models.device import resolve_dtype

if TYPE_CHECKING:
    from socioseg.train.config import TrainConfig


@dataclass(frozen=True)
class Precision:
    """``compute``: dtype of matmuls; ``master``: dtype of trainable weights, grads, states."""

    compute: torch.dtype
    master: torch.dtype
    device_type: str

    @property
    def autocast(self) -> bool:
        """True when the forward runs under autocast (float32 storage, lower compute)."""
        return self.master == torch.float32 and self.compute != torch.float32

    @property
    def stochastic_rounding(self) -> bool:
        return self.master == torch.bfloat16

    def load_dtype(self, trainable: bool) -> torch.dtype:
        """The dtype to load a model in: master dtype if it is trained, else compute dtype."""
        return self.master if trainable else self.compute

    def describe(self) -> str:
        """One line for logs and the saved config: what is stored and computed in what."""
        name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
        compute = name.get(self.compute, str(self.compute))
        if self.stochastic_rounding:
            return "bfloat16 weights and AdamW states, stochastic rounding"
        return f"float32 master weights and AdamW states, {compute} compute"


def resolve(config: TrainConfig, device: torch.device) -> Precision:
    """The precision a validated ``config`` asks for on ``device``."""
    compute = resolve_dtype(config.model.dtype, device)
    sr = config.optim.master_weights == "bf16_stochastic_rounding"
    return Precision(compute, torch.bfloat16 if sr else torch.float32, device.type)


def apply_autocast(model: torch.nn.Module, precision: Precision) -> None:
    """Make every forward of ``model`` (``generate``'s too) run under autocast if needed."""
    if not precision.autocast:
        return

    def autocast_forward(self, *args, **kwargs):
        with torch.autocast(precision.device_type, dtype=precision.compute):
            return type(self).forward(self, *args, **kwargs)

    model.forward = types.MethodType(autocast_forward, model)


@contextmanager
def shared_casts(precision: Precision):
    """Reuse autocast's low-precision weight copies across the forwards of this block.

    Autocast caches the casts of parameters until the OUTERMOST autocast context exits; a
    disabled outer context therefore keeps them for the whole block without putting anything
    else (SAM) under autocast. Weights must not change inside the block.
    """
    if not precision.autocast:
        yield
        return
    with torch.autocast(precision.device_type, enabled=False):
        yield
