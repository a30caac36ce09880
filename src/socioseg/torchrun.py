"""Running under torchrun: this process's rank, its device, and the process group.

torchrun (or ``accelerate launch``) starts one process per rank and sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; a plain ``python`` run is one process and needs none of this.
Evaluation and ``segment-area`` only need ranks to meet (a barrier, rank 0's value shared), so
they join a gloo group for that and leave it (:func:`gloo_group`); training keeps a group for
the whole run, NCCL on GPUs and gloo on CPU (:func:`join`). This is the only module that
reads those variables or creates a process group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

# Ranks wait at a barrier for the slowest shard; gloo's default 30 minutes is too short.
BARRIER_TIMEOUT = timedelta(hours=24)


def rank_and_world() -> tuple[int, int] | None:
    """``(rank, world size)`` when launched by torchrun with more than one process, else None."""
    world, rank = os.environ.get("WORLD_SIZE"), os.environ.get("RANK")
    if world is None or rank is None or int(world) <= 1:
        return None
    return int(rank), int(world)


def local_device():
    """``cuda:LOCAL_RANK`` (made the current CUDA device) when CUDA is there, else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def join(backend: str) -> tuple[int, int]:
    """``(rank, world size)``, joining the default process group (``backend``) if it is not
    joined yet; a single process returns ``(0, 1)`` and joins nothing. Training uses this."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


@contextmanager
def gloo_group() -> Iterator[object]:
    """A gloo group of all ranks for the block: the default group, created for the block and
    destroyed after it when none exists, else a new gloo group beside the caller's."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield None if created else dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    finally:
        if created:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (on gloo, so CPU-only runs work too)."""
    import torch.distributed as dist

    with gloo_group() as group:
        dist.barrier(group=group)


def broadcast(value: object, group: object) -> object:
    """Rank 0's ``value`` on every rank (a barrier too); ``group`` from :func:`gloo_group`."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]
