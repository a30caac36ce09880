"""The examples shipped with the package (``socioseg/assets/examples``), regenerated."""

from __future__ import annotations

import json
from dataclasses import replace
from os import PathLike
from pathlib import Path

import numpy as np

from socioseg.data.dataset import Sample
from socioseg.data.examples import LEVELS_FILE
from socioseg.data.synth.generate import sample_with_targets
from socioseg.data.writers import Encoded, write_folder_sample

RANDOM_SIZE = 256  # the tiles socioseg-mini trains on


def write_examples(out: str | PathLike[str], seed: int = 2026, size: int = 768) -> list[Path]:
    """Regenerate the shipped examples: the first single-target sample of each level with the
    default placement (``size`` px, ids ``synth-*``), then the same with every entity on a
    random block, at the 256 px socioseg-mini trains on (ids ``synth-random-*``)."""
    out = Path(out)
    chosen = _first_per_level(seed, size, "prominent")
    chosen += [
        replace(sample, id=sample.id.replace("synth-", "synth-random-", 1))
        for sample in _first_per_level(seed, RANDOM_SIZE, "random")
    ]
    folders = []
    levels = {}
    for sample in chosen:
        folder = out / sample.id
        write_folder_sample(Encoded.from_sample(sample, 1, optimize=True), folder)
        levels[sample.id] = {"level": sample.level, "class": sample.socio_class}
        folders.append(folder)
    (out / LEVELS_FILE).write_text(json.dumps(levels, indent=1) + "\n")
    return folders


def _first_per_level(seed: int, size: int, placement: str) -> list[Sample]:
    """The first single-target sample of each level (name, class, function) of ``seed``."""
    wanted = ["socio-name", "socio-class", "socio-function"]
    chosen: dict[str, Sample] = {}
    index = 0
    while len(chosen) < len(wanted):
        rng = np.random.default_rng([seed, index])
        sample, n_targets = sample_with_targets(rng, index, size, placement)
        if n_targets == 1 and sample.level not in chosen:
            chosen[sample.level] = sample
        index += 1
    return [chosen[level] for level in wanted]
