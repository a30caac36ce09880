"""Small synthetic samples shipped with the package: one per query level with the default
placement (768 px), and one per level with every entity on a random block (256 px)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from socioseg.data.dataset import QUESTION_FILE, Sample, load_sample_dir
from socioseg.data.levels import LevelMap

LEVELS_FILE = "levels.json"


def _root() -> Path:
    return Path(str(resources.files("socioseg") / "assets" / "examples"))


def examples() -> list[Path]:
    """The example sample folders (folder layout), sorted by name."""
    root = _root()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / QUESTION_FILE).is_file())


def load_example(name_or_index: str | int = 0) -> Sample:
    """Load an example by folder name or position in :func:`examples`, with its level."""
    folders = examples()
    if isinstance(name_or_index, int):
        if not -len(folders) <= name_or_index < len(folders):
            raise IndexError(
                f"example index {name_or_index} out of range; there are {len(folders)}"
            )
        folder = folders[name_or_index]
    else:
        by_name = {p.name: p for p in folders}
        if name_or_index not in by_name:
            raise KeyError(f"no example named {name_or_index!r}; available: {sorted(by_name)}")
        folder = by_name[name_or_index]
    levels_path = _root() / LEVELS_FILE
    levels = LevelMap.from_file(levels_path) if levels_path.is_file() else None
    return load_sample_dir(folder, levels)
