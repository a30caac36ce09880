"""The output folder of a supervised run (``socioseg sft``, ``socioseg train-sam``).

Such a run writes ONE model folder, loadable by ``from_pretrained``. It is built in a staging
folder INSIDE ``out`` (:func:`socioseg.publish.staging_dir`) and its files are renamed into
``out`` at the end, so a failed run leaves nothing beside ``out`` and nothing that blocks a
rerun; ``training.json`` in it records how it was made and which files the run wrote. An
existing non-empty folder is refused unless ``overwrite`` is given, and even then only a folder
these commands wrote (one holding ``training.json``) takes the new model, replacing only the
files its record names: nothing else of the user's is ever deleted.

A run with ``save_every`` keeps its resumable state in the staging folder
(:class:`SupervisedRun`); after a kill, the same command with ``--resume`` continues it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from socioseg.publish import STAGING, STAGING_MARK, entries, is_staging, publish_dir, staging_dir
from socioseg.train.checkpoint import CheckpointError, safe_load
from socioseg.train.runlog import RunLog

RECORD_FILE = "training.json"
_STATE = re.compile(r"^resume-(\d+)$")  # a saved state in the staging folder
STATE_FILE, PROGRESS_FILE = "state.pt", "progress.json"


def prepare(out: str | Path, overwrite: bool, resume: bool = False) -> Path:
    """Check ``out`` can take a new model; returns the empty staging folder to write into
    (``resume``: the staging folder an interrupted run left, as it is, when there is one)."""
    out = Path(out)
    stage = out / STAGING
    if resume and is_staging(stage) and not stage.is_symlink():
        return stage
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


class SupervisedRun:
    """The staging folder of one ``sft`` / ``train-sam`` run, its log, and its saved state.

    Every ``config.save_every`` steps (never when it is None) the model's weights, the
    optimiser and schedule, both RNGs, the step and the wall time so far go to
    ``resume-N/`` in the staging folder (written under another name, then renamed; the older
    state is removed), so a killed run loses at most ``save_every`` steps. ``resume``:
    continue from the newest state an interrupted run left in ``out``, which must have been
    made with the same config; with none there, the run starts from step 0.
    """

    def __init__(self, out: str | Path, config, overwrite: bool, resume: bool) -> None:
        if resume and overwrite:
            raise CheckpointError("--resume and --overwrite exclude each other: pick one")
        self.out, self.config, self.resume = Path(out), config, resume
        self.tmp = prepare(out, overwrite, resume)
        self.log: RunLog | None = None

    def restore(self, model, updates, rng: np.random.Generator) -> tuple[int, float]:
        """Load the newest saved state (with ``resume``) into ``model``, ``updates`` (a
        ``SupervisedUpdates``) and ``rng``, and open the log from there. Returns the step
        reached and the seconds it took (0 and 0.0 for a new run)."""
        step, elapsed = 0, 0.0
        saved = self._saved()
        if self.resume and saved:
            folder = saved[-1][1]
            progress = json.loads((folder / PROGRESS_FILE).read_text())
            theirs, defaults = progress.get("config", {}), _defaults(type(self.config))
            differs = _differences(theirs, _plain(self.config), defaults=defaults)
            if differs:
                raise CheckpointError(
                    f"{self.out} holds an interrupted run with another config ({differs}): "
                    "resume it with its config, or drop --resume and pass --overwrite"
                )
            state = safe_load(folder / STATE_FILE)
            model.load_state_dict(state["model"])
            updates.optimizer.load_state_dict(state["optimizer"])
            updates.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            rng.bit_generator.state = progress["rng"]
            step, elapsed = int(progress["step"]), float(progress["elapsed_s"])
        self.log = RunLog(self.tmp, start_step=step)  # metrics.csv + tensorboard/ in the folder
        return step, elapsed

    def save(self, step: int, elapsed: float, model, updates, rng: np.random.Generator) -> None:
        """Keep the state after ``step`` when ``save_every`` asks for it (not at the end)."""
        every = self.config.save_every
        if every is None or step % every or step == self.config.steps:
            return
        partial = self.tmp / f".resume-{step}.tmp"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": updates.optimizer.state_dict(),
                "scheduler": updates.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            partial / STATE_FILE,
        )
        progress = {
            "step": step,
            "elapsed_s": elapsed,
            "rng": rng.bit_generator.state,
            "config": _plain(self.config),
        }
        (partial / PROGRESS_FILE).write_text(json.dumps(progress, indent=1) + "\n")
        partial.rename(self.tmp / f"resume-{step}")
        for older, folder in self._saved():
            if older != step:
                shutil.rmtree(folder)

    def publish(self, record: dict) -> Path:
        """Close the log, drop the saved states and publish the model folder (:func:`publish`)."""
        if self.log is not None:
            self.log.close()
        for _, folder in self._saved():
            shutil.rmtree(folder)
        return publish(self.tmp, self.out, record)

    def _saved(self) -> list[tuple[int, Path]]:
        """The complete saved states in the staging folder, oldest first."""
        found = []
        for path in self.tmp.iterdir():
            match = _STATE.match(path.name)
            if match and (path / PROGRESS_FILE).is_file() and (path / STATE_FILE).is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)


def _plain(config) -> dict:
    """``config`` as JSON reads it back (tuples as lists)."""
    return _plain_value(dataclasses.asdict(config))


def _defaults(config_class) -> dict:
    """The default of each field of a config dataclass that has one, as :func:`_plain` writes
    it (a section: its default instance)."""
    out = {}
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            out[field.name] = _plain_value(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
            out[field.name] = (
                _plain(value) if dataclasses.is_dataclass(value) else _plain_value(value)
            )
    return out


def _plain_value(value):
    """``value`` as JSON reads it back (tuples as lists)."""
    return json.loads(json.dumps(value))


def _differences(saved: dict, current: dict, prefix: str = "", defaults: dict | None = None) -> str:
    """The config fields (dotted) whose values differ, as one short phrase. A field the saved
    config lacks (the run predates it) counts at its default in ``defaults``: new fields
    default to what runs computed before them."""
    defaults = defaults or {}
    names = []
    for key in sorted(set(saved) | set(current)):
        a = saved[key] if key in saved else defaults.get(key)
        b = current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differences(a, b, f"{prefix}{key}.", defaults.get(key))
            names += [inner] if inner else []
        elif a != b:
            names.append(f"{prefix}{key}")
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
