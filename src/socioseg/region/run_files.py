"""The run folder of ``segment-area`` and the processes sharing it.

Files: settings, per-tile rows and masks; append-only, resumable.

``run.json`` holds the settings and the sources (each input's absolute path and size, and what
made the map; written atomically): a rerun must match them, and a folder that holds anything
but a run (no ``run.json``) is refused, so nothing of the user's is used or overwritten
(:func:`claim_out`). Each finished
(query, tile) appends one JSON row to ``tiles.jsonl`` (``tiles.rank<r>.jsonl`` for rank ``r``
of a torchrun job, so processes never share a file) after its mask, if any, is saved under
``tiles/q<query index>/<tile>.npz``. Rows of every such file count as finished, so a run may
resume with another number of processes. A last line cut short by a kill is dropped; any other
line that is not a row is an error naming the file and line.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from socioseg.region.raster import AreaError

ROWS_GLOB = "tiles*.jsonl"
SETTINGS_FILE = "run.json"
MAP_FILE = "map.tif"
# What segment-area writes at the top of its folder (an input must not be one of them).
OUTPUT_NAMES = (SETTINGS_FILE, MAP_FILE, "mask.tif", "mask.png", "entities.geojson", "summary.json")


def claim_out(out: Path, inputs: dict[str, Path]) -> None:
    """Refuse an ``out`` that is a file, one whose outputs would replace an input, or a
    non-empty folder without ``run.json`` (the user's files: never used, never overwritten).
    The one exception is a folder holding only a map socioseg rendered there (a run stopped
    before it wrote ``run.json``)."""
    from socioseg.publish import others_listed, same_path
    from socioseg.region.map_file import is_our_map

    if out.exists() and not out.is_dir():
        raise AreaError(f"--out {out} is a file; pass a folder path")
    for name in OUTPUT_NAMES:
        for flag, path in inputs.items():
            if path is not None and same_path(out / name, path):
                raise AreaError(
                    f"--out {out}: its {name} would replace the input {flag} {path}; "
                    "pick another --out"
                )
    names = others_listed(out)
    if not names or (out / SETTINGS_FILE).is_file():
        return
    if names == MAP_FILE and is_our_map(out / MAP_FILE):
        return
    raise AreaError(
        f"--out {out} holds files segment-area did not write ({names}; no {SETTINGS_FILE}); "
        "they are left alone: pick a new or empty --out"
    )


def input_record(paths: dict[str, Path]) -> dict[str, dict]:
    """``{name: {"path": absolute path, "bytes": size}}``: which files a run was made from."""
    return {
        k: {"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size}
        for k, p in paths.items()
    }


def previous_settings(out: Path) -> dict | None:
    """The settings a run in ``out`` recorded, or ``None`` when there is none."""
    path = out / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        previous = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AreaError(f"{path}: not JSON ({exc}); delete it to start over") from exc
    if not isinstance(previous, dict):
        raise AreaError(f"{path}: not a settings object; delete it to start over")
    return previous


def rows_file_name(rank: int | None) -> str:
    return "tiles.jsonl" if rank is None else f"tiles.rank{rank}.jsonl"


class RunDir:
    """One run's files; ``rows`` maps ``(query index, tile id)`` to a slim row."""

    def __init__(self, out_dir: Path, settings: dict[str, Any], rank: int | None = None):
        self.root = out_dir
        self.tiles_dir = out_dir / "tiles"
        self.jsonl = out_dir / rows_file_name(rank)
        self.tiles_dir.mkdir(parents=True, exist_ok=True)
        self._check_settings(settings)
        self.reload()

    def _check_settings(self, settings: dict[str, Any]) -> None:
        path = self.root / SETTINGS_FILE
        previous = previous_settings(self.root)
        if previous is not None:
            changed = [k for k in settings if previous.get(k) != settings[k]]
            if changed:
                raise AreaError(
                    f"{self.root} holds a run with other settings or sources "
                    f"({', '.join(changed)}); use another --out directory or delete it"
                )
        tmp = path.with_name(f"{SETTINGS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(settings, indent=2) + "\n")
        os.replace(tmp, path)

    def reload(self) -> None:
        """Read the finished rows of every rows file (this process's own file is repaired)."""
        self.rows: dict[tuple[int, str], dict] = {}
        for path in sorted(self.root.glob(ROWS_GLOB)):
            for number, line in enumerate(self._complete_lines(path), start=1):
                row = _parse_row(path, number, line)
                key = (row.get("query_index", 0), row["tile"])
                if not row.get("mask_bbox") or self.mask_path(*key).exists():
                    self.rows[key] = slim(row)

    def _complete_lines(self, path: Path) -> list[str]:
        text = path.read_text()
        if text and not text.endswith("\n"):
            # A run killed mid-write leaves a partial last line: drop it (from our own file on
            # disk too, so appending continues cleanly; another rank's file is only read).
            text = text[: text.rfind("\n") + 1]
            if path == self.jsonl:
                path.write_text(text)
        return text.splitlines()

    def mask_path(self, query_index: int, tile_id: str) -> Path:
        return self.tiles_dir / f"q{query_index}" / f"{tile_id}.npz"

    def load_mask(self, query_index: int, tile_id: str) -> np.ndarray:
        with np.load(self.mask_path(query_index, tile_id)) as data:
            return data["mask"]

    def save(self, row: dict, mask: np.ndarray | None) -> None:
        key = (row.get("query_index", 0), row["tile"])
        if mask is not None:
            path = self.mask_path(*key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{row['tile']}.tmp.npz")
            np.savez_compressed(tmp, mask=mask)
            os.replace(tmp, path)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows[key] = slim(row)


def _parse_row(path: Path, number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise AreaError(
            f"{path}:{number}: not a JSON row ({exc.msg}); delete that line (its tile runs "
            "again) or the folder"
        ) from exc
    fields_ok = isinstance(row, dict) and isinstance(row.get("tile"), str)
    if not fields_ok or not isinstance(row.get("window"), list) or "status" not in row:
        raise AreaError(
            f"{path}:{number}: a row needs tile, window and status; delete that line (its tile "
            "runs again) or the folder"
        )
    return row


def slim(row: dict) -> dict:
    """The fields stitching needs; responses stay on disk so memory does not grow with them."""
    keys = ("tile", "window", "status", "mask_bbox", "query_index", "objects", "logprob")
    return {k: row.get(k) for k in keys}


@contextmanager
def ranks():
    """``(rank, world, share)``: ``share(value)`` is a barrier that returns rank 0's ``value``
    everywhere. Under torchrun it joins a gloo group for that only."""
    from socioseg import torchrun

    found = torchrun.rank_and_world()
    if found is None:
        yield 0, 1, lambda value=None: value
        return
    with torchrun.gloo_group() as group:
        yield found[0], found[1], lambda value=None: torchrun.broadcast(value, group)
