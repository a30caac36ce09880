"""Checkpoints of a training run, and LoRA set-up.

``<out>/checkpoint-N/`` holds the policy in Hugging Face format with its processor files
(loadable by ``socioseg segment --vlm <out>/checkpoint-N``; with LoRA, the merged weights, plus
the adapter alone in ``adapter/``), ``optimizer.pt`` (optimizer and scheduler), one
``rng-rank{r}.pt`` per process, ``trainer_state.json`` (step and data position) and the resolved
``config.yaml``. A checkpoint is written to a temporary folder and renamed when complete, so a
run killed while saving leaves the previous checkpoint as the latest.
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

from socioseg.rl import parallel

if TYPE_CHECKING:
    from socioseg.rl.config import LoraSettings

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def latest(out_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``out_dir``, or None."""
    found = []
    for path in Path(out_dir).glob("checkpoint-*"):
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


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
    torch.save(
        {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        tmp / f"rng-rank{trainer.rank}.pt",
    )
    parallel.barrier()
    if trainer.rank == 0:
        state = {
            "step": trainer.step,
            "samples_seen": trainer.step * trainer.config.batch_size,
            "world_size": trainer.world,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    parallel.barrier()


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
        raise ValueError(
            f"{path} was written by {state['world_size']} processes, this run has "
            f"{trainer.world}: resume with the same number of processes"
        )
    saved = torch.load(path / "optimizer.pt", map_location=trainer.device, weights_only=False)
    parallel.load_optimizer_state(trainer.policy.model, trainer.optimizer, saved["optimizer"])
    trainer.scheduler.load_state_dict(saved["scheduler"])
    rng = torch.load(path / f"rng-rank{rank}.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"])
