"""The files of an evaluation folder: ``run.json`` (what ran) and ``predictions.jsonl`` (rows).

A row is one sample: ``index`` (position in the dataset), ``id``, ``status`` and, when
``status == "ok"``, ``query``, ``level``, ``socio_class``, ``gt_size`` [w, h], ``gt_pixels``
and ``score`` (one :class:`~socioseg.metrics.SampleScore` dict per stage). ``"skipped"`` rows
carry a ``reason`` instead. Rows are appended one whole line at a time with flush + fsync, so a
killed writer leaves at most a partial last line, which :func:`read_rows` ignores or cuts off.
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from socioseg.data.dataset import Sample
from socioseg.data.sources import id_problem
from socioseg.metrics import SampleScore
from socioseg.publish import write_text_atomic
from socioseg.torchrun import rank_and_world

SHARD_DIR = re.compile(r"shard-(\d+)-of-(\d+)")
ROWS_FILE = "predictions.jsonl"
RUN_FILE = "run.json"


class EvalError(ValueError):
    """An output folder, shard spec or prediction set that cannot be used; says why and what
    to do."""


def id_file(folder: str | Path, sample_id: str, suffix: str = ".png") -> Path:
    """``folder/<sample_id><suffix>``: the one place a sample id becomes a file name.

    Datasets check their ids when they are opened; this checks again (an id from elsewhere, a
    hand-made dataset) so that no id can name a file outside ``folder``.
    """
    problem = id_problem(sample_id)
    if problem is not None:
        raise EvalError(f"sample id {sample_id!r} {problem}: it cannot name a file in {folder}")
    return Path(folder) / f"{sample_id}{suffix}"


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages that decide a result (None when not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("socioseg", "torch", "transformers", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_info(
    kind: str,
    stages: Sequence[str],
    config: Mapping[str, Any],
    model_ids: Mapping[str, str] | None,
    dataset,
    n_selected: int,
) -> dict[str, Any]:
    """The content of ``run.json``; ``shard`` and ``contact`` (tile indices) start empty."""
    return {
        "kind": kind,
        "stages": list(stages),
        "config": json.loads(json.dumps(config, default=str)),
        "models": dict(model_ids or {}),
        "versions": package_versions(),
        "dataset": {
            "description": repr(dataset),
            "split": dataset.split,
            "n_samples": len(dataset),
            "n_selected": n_selected,
            "on_error": getattr(dataset, "on_error", "raise"),
        },
        "shard": None,
        "contact": [],
    }


def run_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What makes two run.json contents different runs, as ``"key: old -> new"``.

    Package versions, the batch size, the data's description (its path) and the contact-sheet
    samples may change between the parts of one run; results do not depend on them.
    """

    def key(info: Mapping[str, Any]) -> dict[str, Any]:
        config = {k: v for k, v in info["config"].items() if k != "batch_size"}
        return {
            "kind": info["kind"],
            **{f"config.{k}": v for k, v in config.items()},
            **{f"models.{k}": v for k, v in info["models"].items()},
            "split": info["dataset"]["split"],
            "samples selected": info["dataset"]["n_selected"],
            "shard": info["shard"],
        }

    a, b = key(old), key(new)
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def refuse_foreign_files(folder: Path) -> None:
    """:class:`EvalError` for a folder without ``run.json`` that holds anything: its files are
    the user's, and a run would write metrics.json, report.md, ... over them."""
    from socioseg.publish import others_listed

    shown = others_listed(folder)
    if shown:
        raise EvalError(
            f"{folder} holds files but no {RUN_FILE} ({shown}): it is not a socioseg "
            "evaluation folder and is left alone; choose a new or empty output folder"
        )


def claim_dir(work_dir: Path, info: Mapping[str, Any]) -> None:
    """Create ``work_dir`` for the run ``info``, or check that the run already there is it.

    Raises :class:`EvalError` listing the differences when the folder holds another run.
    """
    run_path = work_dir / RUN_FILE
    if run_path.is_file():
        differences = run_differences(read_json(run_path), info)
        if differences:
            raise EvalError(
                f"{work_dir} holds a different run ({'; '.join(differences)}); rerun with the "
                "same settings to resume it, or choose another output folder"
            )
    else:
        refuse_foreign_files(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_path, json.dumps(info, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a run folder; :class:`EvalError` naming it when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise EvalError(
            f"{path}: unreadable ({error!r}); choose another output folder, or delete the file "
            "to start this run again"
        ) from error
    if not isinstance(data, dict):
        raise EvalError(f"{path}: not a JSON object; choose another output folder")
    return data


def read_rows(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """The rows of a ``predictions.jsonl`` (``[]`` when it does not exist).

    A last line without its newline is what a killed run leaves: it is ignored, and with
    ``repair`` cut off the file so appending can go on. Any other unreadable line is an
    :class:`EvalError` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    rows = []
    for number, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise EvalError(f"{path}, line {number}: not a JSON row ({error!r})") from error
    return rows


class RowWriter:
    """Appends rows to a jsonl file: one whole line per row, flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("ab")

    def write(self, row: Mapping[str, Any]) -> None:
        self._file.write(_line(row).encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def write_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` as jsonl, atomically."""
    write_text_atomic(path, "".join(_line(row) for row in rows))


def _line(row: Mapping[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def scored_row(index: int, sample: Sample, scores: Mapping[str, SampleScore]) -> dict[str, Any]:
    """The row fields of a scored sample (scores at the GT resolution, one per stage)."""
    return {
        "index": index,
        "id": sample.id,
        "status": "ok",
        "query": sample.query,
        "level": sample.level,
        "socio_class": sample.socio_class,
        "gt_size": [int(sample.mask.shape[1]), int(sample.mask.shape[0])],
        "gt_pixels": int(np.count_nonzero(sample.mask)),
        "score": {stage: score.to_dict() for stage, score in scores.items()},
    }


def skipped_row(index: int, sample_id: str, reason: str) -> dict[str, Any]:
    """The row of a sample that could not be evaluated: listed, never scored."""
    return {"index": index, "id": sample_id, "status": "skipped", "reason": reason}


def parse_shard(spec: str | Sequence[int]) -> tuple[int, int]:
    """``"i/n"`` or ``(i, n)`` -> ``(i, n)``, checking ``0 <= i < n``."""
    try:
        i, n = (int(v) for v in (spec.split("/") if isinstance(spec, str) else spec))
    except (TypeError, ValueError) as error:
        raise EvalError(f"shard must look like 'i/n' (e.g. 0/4), got {spec!r}") from error
    if not 0 <= i < n:
        raise EvalError(f"shard {i}/{n}: need 0 <= i < n")
    return i, n


def result_dir(out_dir: str | Path, shard: str | Sequence[int] | None = None) -> Path:
    """The folder whose metrics.json ``evaluate(..., out_dir, shard=shard)`` writes last.

    ``out_dir/shard-<i>-of-<n>`` for a shard (given, or a torchrun rank other than 0, whose
    rank 0 merges into ``out_dir``), else ``out_dir``.
    """
    explicit = shard is not None
    shard = parse_shard(shard) if explicit else rank_and_world()
    if shard is None or shard[1] == 1 or (not explicit and shard[0] == 0):
        return Path(out_dir)
    return shard_dir(Path(out_dir), shard)


def shard_dir(out_dir: Path, shard: tuple[int, int] | None) -> Path:
    return out_dir if shard is None else out_dir / f"shard-{shard[0]}-of-{shard[1]}"


def n_selected(dataset, limit: int | None) -> int:
    """How many samples of ``dataset`` a run with ``limit`` selects (its first ones)."""
    if limit is None:
        return len(dataset)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    return min(limit, len(dataset))
