"""The output folder of a supervised run (``socioseg sft``, ``socioseg train-sam``).

Such a run writes ONE model folder, loadable by ``from_pretrained``. It is written to a
temporary sibling and renamed at the end, so a folder under the final name is always complete;
``training.json`` in it records how it was made. An existing non-empty folder is refused
unless ``overwrite`` is given, and even then only a folder these commands wrote (one holding
``training.json``) is replaced: nothing else of the user's is ever deleted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from socioseg.train.checkpoint import CheckpointError

RECORD_FILE = "training.json"


def prepare(out: str | Path, overwrite: bool) -> Path:
    """Check ``out`` can take a new model; returns the empty temporary folder to write into."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise CheckpointError(f"--out {out} is a file; pass a folder path")
        if any(out.iterdir()):
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
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, out: str | Path, record: dict) -> Path:
    """Write ``record`` as ``training.json`` into ``tmp`` and move it to ``out``."""
    out = Path(out)
    (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
