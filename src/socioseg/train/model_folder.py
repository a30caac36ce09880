"""The output folder of a supervised run (``socioseg sft``, ``socioseg train-sam``).

Such a run writes ONE model folder, loadable by ``from_pretrained``. It is built in a staging
folder INSIDE ``out`` (:func:`socioseg.publish.staging_dir`) and its files are renamed into
``out`` at the end, so a failed run leaves nothing beside ``out`` and nothing that blocks a
rerun; ``training.json`` in it records how it was made and which files the run wrote. An
existing non-empty folder is refused unless ``overwrite`` is given, and even then only a folder
these commands wrote (one holding ``training.json``) takes the new model, replacing only the
files its record names: nothing else of the user's is ever deleted.
"""

from __future__ import annotations

import json
from pathlib import Path

from socioseg.publish import STAGING_MARK, entries, publish_dir, staging_dir
from socioseg.train.checkpoint import CheckpointError

RECORD_FILE = "training.json"


def prepare(out: str | Path, overwrite: bool) -> Path:
    """Check ``out`` can take a new model; returns the empty staging folder to write into."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise CheckpointError(f"--out {out} is a file; pass a folder path")
        if entries(out):
            if not overwrite:
                raise CheckpointError(
                    f"{out} is not empty: pass --overwrite to replace the model in it, "
                    "or another --out"
                )
            if not (out / RECORD_FILE).is_file():
                raise CheckpointError(
                    f"{out} holds files socioseg did not write (no {RECORD_FILE}); "
                    "--overwrite only replaces a model folder socioseg trained: pick another --out"
                )
    return staging_dir(out)


def _written_before(out: Path, new: list[str]) -> list[str]:
    """The names an earlier run recorded writing into ``out`` (its record file included); a
    record from before the list was kept (no ``files``) vouches for the names ``new`` has."""
    try:
        record = json.loads((out / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return []
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, list):
        return [name for name in new if (out / name).exists()]
    names = [f for f in files if isinstance(f, str) and "/" not in f and f not in ("", ".", "..")]
    return [*names, RECORD_FILE]


def publish(tmp: Path, out: str | Path, record: dict) -> Path:
    """Write ``record`` (plus the list of files) as ``training.json`` into the staging folder
    ``tmp`` and move its files into ``out``, replacing only what an earlier run wrote."""
    out = Path(out)
    files = [*sorted(p.name for p in tmp.iterdir() if p.name != STAGING_MARK), RECORD_FILE]
    (tmp / RECORD_FILE).write_text(json.dumps({**record, "files": files}, indent=2) + "\n")
    written_before = _written_before(out, files)
    for name in written_before:  # the earlier model's files that the new one does not replace
        stale = out / name
        if name not in files and stale.is_file():
            stale.unlink()
    publish_dir(tmp, out, replace=written_before)
    return out
