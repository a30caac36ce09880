"""Helpers for the tests of resumable training runs: a kill at a given step, their logs."""

from __future__ import annotations

from pathlib import Path


class Killed(Exception):
    """Stands for a kill: raised from a run's ``on_log`` callback."""


def kill_at(step: int):
    """An ``on_log(step, stats)`` callback that raises :class:`Killed` when ``step`` is logged
    (the state saved before it is kept, nothing after)."""

    def on_log(at: int, _stats) -> None:
        if at == step:
            raise Killed

    return on_log


def metric_rows(folder: Path) -> list[list[str]]:
    """``folder/metrics.csv`` as rows of cells, without its wall-time column ``elapsed_s``."""
    lines = [line.split(",") for line in (folder / "metrics.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(lines[0]) if name != "elapsed_s"]
    return [[row[i] for i in keep] for row in lines]
