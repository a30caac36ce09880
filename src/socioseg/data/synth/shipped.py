"""The three examples shipped with the package (``socioseg/assets/examples``), regenerated."""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np

from socioseg.data.dataset import Sample
from socioseg.data.examples import LEVELS_FILE
from socioseg.data.synth.generate import sample_with_targets
from socioseg.data.writers import Encoded, write_folder_sample


def write_examples(out: str | PathLike[str], seed: int = 2026, size: int = 768) -> list[Path]:
    """Regenerate the shipped examples: the first single-target sample of each level."""
    out = Path(out)
    wanted = ["socio-name", "socio-class", "socio-function"]
    chosen: dict[str, Sample] = {}
    index = 0
    while len(chosen) < len(wanted):
        sample, n_targets = sample_with_targets(np.random.default_rng([seed, index]), index, size)
        if n_targets == 1 and sample.level not in chosen:
            chosen[sample.level] = sample
        index += 1
    folders = []
    levels = {}
    for level in wanted:
        sample = chosen[level]
        folder = out / sample.id
        write_folder_sample(Encoded.from_sample(sample, 1, optimize=True), folder)
        levels[sample.id] = {"level": sample.level, "class": sample.socio_class}
        folders.append(folder)
    (out / LEVELS_FILE).write_text(json.dumps(levels, indent=1) + "\n")
    return folders
