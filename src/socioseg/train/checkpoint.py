"""Checkpoints of a training run, the run folder, and LoRA set-up.

``<out>/checkpoint-N/`` holds the policy in Hugging Face format with its processor files
(loadable by ``socioseg segment --vlm <out>/checkpoint-N``; with LoRA, the merged weights, plus
the adapter alone in ``adapter/``), ``optimizer.pt`` (optimizer and scheduler), one
``rng-rank{r}.pt`` per process, ``trainer_state.json`` (step, data position and the precision
the weights are stored in) and the resolved ``config.yaml``. The weights are the master
weights (float32 unless ``optim.master_weights`` says bfloat16), not a rounded copy; with
LoRA the float32 masters are the adapter's, and the merged model is in the compute dtype.

Written to a temporary folder, then ``complete.json`` (every file's size) and a rename, so a
checkpoint is either complete or not called ``checkpoint-N``. Resume takes the newest
checkpoint that is complete and loads (sizes as recorded, state files readable) and reports
each newer one it skipped. Files from elsewhere are untrusted: nothing is unpickled
(``torch.load(weights_only=True)``: tensors, numbers, strings and containers only; RNG states
are stored as plain lists).
"""

from __future__ import annotations

import copy
import json
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from socioseg.train import parallel

if TYPE_CHECKING:
    from socioseg.train.config import LoraSettings

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
COMPLETE_FILE = "complete.json"
# What a training run writes into its folder (removed by --overwrite, nothing else is).
_RUN_ENTRIES = ("checkpoint-*", ".checkpoint-*.tmp", "validation-*", "tensorboard", "config.yaml")


class CheckpointError(ValueError):
    """A run folder or checkpoint that cannot be used as asked; the message says what to do."""


def prepare_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into an existing run unless resuming it or told to replace it.

    ``overwrite`` removes what an earlier run wrote (checkpoints, logs, validations, config),
    so a later resume cannot mix the two runs; other files in the folder are left alone.
    """
    if resume and overwrite:
        raise CheckpointError("--resume and --overwrite exclude each other: pick one")
    found = sorted(p for pattern in _RUN_ENTRIES for p in Path(out_dir).glob(pattern))
    if not found or resume:
        return
    if not overwrite:
        raise CheckpointError(
            f"{out_dir} already holds a training run ({found[0].name}): pass --resume to "
            "continue it, --overwrite to replace it, or another --out"
        )
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def latest(out_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest usable checkpoint under ``out_dir`` (or None) and why newer ones were skipped."""
    found = []
    for path in Path(out_dir).glob("checkpoint-*"):
        match = _NAME.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    skipped = []
    for _, path in sorted(found, reverse=True):
        problem = _problem(path)
        if problem is None:
            return path, skipped
        skipped.append(f"{path.name} skipped: {problem}")
    return None, skipped


def _problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from, or None."""
    marker = path / COMPLETE_FILE
    if not marker.is_file():
        return f"incomplete (no {COMPLETE_FILE})"
    try:
        sizes = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{COMPLETE_FILE} is unreadable"
    for name, size in sizes.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            return f"{name} is missing or truncated"
    for name in sizes:
        if name.endswith(".pt"):
            try:  # memory-mapped: the check reads the structure, not every tensor
                safe_load(path / name, mmap=True)
            except CheckpointError as error:
                return str(error)
    return None


def safe_load(file: Path, device=None, mmap: bool = False):
    """``torch.load`` that never unpickles code (tensors, numbers, strings, containers)."""
    import pickle

    try:
        return torch.load(
            file, map_location=device, weights_only=True, mmap=mmap
        )  # tensors and plain containers only
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        reason = str(error).splitlines()[0][:200]
        raise CheckpointError(f"{file.name} cannot be loaded safely ({reason})") from None


def add_lora(model, settings: LoraSettings, adapter: Path | None = None):
    """Wrap ``model`` with LoRA adapters on the language model's linear layers only.

    ``adapter``: a saved adapter folder to resume from; None starts new adapters.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    names = "|".join(re.escape(n) for n in settings.target_modules)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        # The vision tower has layers of the same names; it stays frozen.
        target_modules=rf"^(?!.*visual).*\.({names})$",
    )
    return get_peft_model(model, config)


def save(trainer, path: Path) -> None:
    """Write ``trainer``'s full state to ``path`` (all processes call this)."""
    tmp = path.with_name(f".{path.name}.tmp")
    # Gathering sharded (FSDP) states needs every process; rank 0 writes them.
    weights = parallel.full_model_state(trainer.policy.model)
    optimizer = parallel.optimizer_state(trainer.policy.model, trainer.optimizer)
    if trainer.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _save_policy(trainer.policy, tmp, weights)
        torch.save(
            {"optimizer": optimizer, "scheduler": trainer.scheduler.state_dict()},
            tmp / "optimizer.pt",
        )
        trainer.config.save(tmp / "config.yaml")
    parallel.barrier()
    torch.save(_rng_state(), tmp / f"rng-rank{trainer.rank}.pt")
    parallel.barrier()
    if trainer.rank == 0:
        state = {
            "step": trainer.step,
            "samples_seen": trainer.step * trainer.config.batch_size,
            "world_size": trainer.world,
            "weights": trainer.precision.describe(),
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        sizes = {
            str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()
        }
        (tmp / COMPLETE_FILE).write_text(json.dumps({"files": sizes}, indent=1) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    parallel.barrier()


def _rng_state() -> dict:
    """Every RNG's state as lists and tensors (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    numpy = np.random.get_state(legacy=False)
    return {
        "python": [version, list(internal), gauss],
        "numpy": {
            "key": numpy["state"]["key"].tolist(),
            "pos": int(numpy["state"]["pos"]),
            "has_gauss": int(numpy["has_gauss"]),
            "gauss": float(numpy["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(rng: dict) -> None:
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    n = rng["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np.asarray(n["key"], dtype=np.uint32),
            n["pos"],
            n["has_gauss"],
            n["gauss"],
        )
    )
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _save_policy(policy, folder: Path, weights: dict | None) -> None:
    model = policy.model
    if hasattr(model, "peft_config"):
        model.save_pretrained(folder / "adapter")
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(folder, state_dict=weights)
    policy.processor.save_pretrained(folder)


def load_training_state(path: Path, trainer, rank: int) -> int:
    """Restore optimizer, scheduler and RNG states from ``path``; returns the step reached."""
    state = json.loads((path / STATE_FILE).read_text())
    if state["world_size"] != trainer.world:
        raise CheckpointError(
            f"{path} was written by {state['world_size']} processes, this run has "
            f"{trainer.world}: resume with the same number of processes"
        )
    saved = safe_load(path / "optimizer.pt", trainer.device)
    parallel.load_optimizer_state(trainer.policy.model, trainer.optimizer, saved["optimizer"])
    trainer.scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(safe_load(path / f"rng-rank{rank}.pt"))
    return int(state["step"])
