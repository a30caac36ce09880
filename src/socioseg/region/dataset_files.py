"""Where ``make-dataset`` writes: staging inside ``--out``, shared tile images, a size gate.

Every file is written into a staging folder inside ``--out`` and renamed into place at the end
(:mod:`socioseg.publish`), so a run that fails half-way leaves nothing that blocks its rerun.
The samples of one tile share its ``sat.png`` and ``map.png``: the first sample's files are
hard-linked into the others (copied where the file system has no hard links), so many labels
on one tile do not multiply the disk use. A dataset of more than :data:`LARGE_SAMPLES`
samples is written only when asked for (``--allow-large``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from socioseg.publish import others_listed
from socioseg.region.raster import AreaError

LARGE_SAMPLES = 20_000  # above this many samples make-dataset asks for --allow-large
FILES_PER_SAMPLE = 4  # sat.png, map.png, mask.png, question.json


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that holds anything but a staging folder of an earlier failed run."""
    names = others_listed(out)
    if names:
        raise AreaError(f"--out {out} is not empty ({names}); choose a new folder or delete it")


def check_size(samples: int, tiles: int, allow_large: bool) -> None:
    """Refuse more than :data:`LARGE_SAMPLES` samples unless ``allow_large``."""
    if samples > LARGE_SAMPLES and not allow_large:
        raise AreaError(
            f"the labels give {samples:,} samples ({samples * FILES_PER_SAMPLE:,} files over "
            f"{tiles:,} tiles); pass --allow-large to write them, or raise --min-pixels or "
            "choose fewer --levels"
        )


class TileImages:
    """Puts one tile's ``sat.png`` / ``map.png`` into sample folders: written once per tile,
    then hard-linked (or copied) from the first sample's folder."""

    def __init__(self) -> None:
        self.first: dict[str, Path] = {}  # file name -> the tile's first written copy
        self.linked = 0
        self.copied = 0

    def start_tile(self) -> None:
        self.first = {}

    def put(self, folder: Path, name: str, data: bytes) -> None:
        target = folder / name
        source = self.first.get(name)
        if source is None:
            target.write_bytes(data)
            self.first[name] = target
            return
        try:
            os.link(source, target)
            self.linked += 1
        except OSError:  # no hard links here (FAT, some network shares): a copy
            shutil.copyfile(source, target)
            self.copied += 1
