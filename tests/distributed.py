"""Run a function in two spawned processes that form a gloo group, as torchrun would."""

from __future__ import annotations

import os
import socket


def _entry(rank, worker, port, world, args):
    import torch

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    worker(rank, *args)


def run_processes(worker, *args, world: int = 2) -> None:
    """Call ``worker(rank, *args)`` in ``world`` processes with torchrun's environment set.

    ``worker`` must be importable (a module-level function); results go through files.
    """
    import torch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(
        _entry, args=(worker, port, world, args), nprocs=world, start_method="spawn"
    )
