"""Processes and model sharding: the only module that knows about DDP and FSDP.

Launch with ``torchrun --nproc-per-node N -m socioseg.cli train ...`` (or ``accelerate
launch``); a plain ``python`` run is one process. NCCL on GPUs, gloo on CPU.

- ``ddp``: each process holds the whole policy; gradients are averaged after the last
  micro-batch of a step.
- ``fsdp`` (FSDP2, ``torch.distributed.fsdp.fully_shard``): each decoder layer, the vision
  tower and the root are sharded, so parameters, gradients and AdamW states are split over
  the processes; state dicts are gathered in full for checkpoints.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from socioseg import torchrun


def init_distributed() -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; joins the process group when launched by torchrun."""
    device = torchrun.local_device()
    rank, world = torchrun.join("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def shard(policy, mode: str, world: int, device: torch.device):
    """Prepare ``policy.model`` for training; returns the module to run forwards through.

    ``fsdp`` shards ``policy.model`` in place (it stays usable for ``generate``); ``ddp`` with
    more than one process wraps it in ``DistributedDataParallel``.
    """
    if mode == "fsdp":
        from PIL import Image
        from torch.distributed.fsdp import fully_shard

        model = policy.model
        for layer in model.model.language_model.layers:
            fully_shard(layer)
        fully_shard(model.model.visual)
        fully_shard(model)
        # FSDP initialises on the first forward through the root; generate() calls the vision
        # tower before the root, so run one small forward first.
        image = Image.new("RGB", (56, 56))
        with torch.no_grad():
            model(**policy.encode(["init"], [[image, image]]))
        # The root stays gathered after a forward; reshard so that parameters() (and so the
        # optimizer) see the sharded parameters.
        model.reshard()
        return model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # Gradients as views into DDP's buckets: no second copy of the gradients.
        return DistributedDataParallel(policy.model, device_ids=ids, gradient_as_bucket_view=True)
    return policy.model


@contextmanager
def gradient_sync(module, enabled: bool):
    """Skip the gradient all-reduce for micro-batches before the last one of a step."""
    if enabled:
        yield
    elif hasattr(module, "no_sync"):  # DDP
        with module.no_sync():
            yield
    elif hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        yield


def as_float(value) -> float:
    """A Python float from a tensor that may be a DTensor (FSDP grad norms are)."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return float(value)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_model_state(model) -> dict | None:
    """The full state dict on CPU (every process must call; only rank 0 gets it for FSDP)."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def optimizer_state(model, optimizer) -> dict:
    """Optimizer state to save (full, on rank 0, for FSDP; every process must call)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model, optimizer, state: dict) -> None:
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(
        model, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True)
    )
