"""Where a SocioSeg split lives: folder layout, parquet/arrow on disk, or the Hub.

A *source* lists the sample ids of one split and hands back one undecoded sample at a time
(:class:`RawSample`: the stored query and a path or PNG bytes per image); decoding and checks
happen in :mod:`socioseg.data.dataset`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

FOLDER_FILES = {"map": "map.png", "sat": "sat.png", "mask": "mask.png"}
QUESTION_FILE = "question.json"
_SAMPLE_FILES = (*FOLDER_FILES.values(), QUESTION_FILE)
HF_COLUMNS = {
    "id": "id",
    "query": "problem",
    "map": "map_image",
    "sat": "sat_image",
    "mask": "mask_label",
}
SPLIT_ALIASES = {
    "val": ("val", "validation", "valid"),
    "validation": ("validation", "val", "valid"),
}
_KNOWN_SPLITS = ("train", "val", "validation", "valid", "test")


class DataError(ValueError):
    """A sample or a dataset source is unusable; the message says which, where and why."""


# Ids become file names (masks/<id>.png, <pred_dir>/<id>.png): bytes of a name, with room
# for a suffix, under the 255 of common file systems.
MAX_ID_BYTES = 200


def check_ids(ids: Sequence[object], description: str) -> list[str]:
    """The ids of one split, checked once when it is opened; :class:`DataError` otherwise.

    An id must be a non-empty string that is safe as a file name on its own: no ``/`` or
    ``\\``, no leading ``.`` (so neither ``.`` nor ``..``), no control characters, at most
    ``MAX_ID_BYTES`` bytes in UTF-8, and unique within the split. The message names the id,
    its position and the dataset.
    """
    seen: dict[str, int] = {}
    for index, sample_id in enumerate(ids):
        problem = id_problem(sample_id)
        if problem is None and sample_id in seen:
            problem = f"duplicates the id of sample {seen[sample_id]}"
        if problem is not None:
            raise DataError(
                f"{description}: sample {index} has id {sample_id!r}, which {problem}; ids must "
                "be unique names without '/', '\\' or a leading '.': fix the dataset's ids"
            )
        seen[sample_id] = index
    return list(seen)


def id_problem(sample_id: object) -> str | None:
    """Why ``sample_id`` cannot be a file name on its own (see :func:`check_ids`), or None."""
    if not isinstance(sample_id, str):
        return f"is not a string ({type(sample_id).__name__})"
    if not sample_id:
        return "is empty"
    if "/" in sample_id or "\\" in sample_id:
        return "contains a path separator"
    if sample_id.startswith("."):
        return "starts with '.'"
    if any(ord(c) < 32 or ord(c) == 127 for c in sample_id):
        return "contains a control character"
    if len(sample_id.encode("utf-8")) > MAX_ID_BYTES:
        return f"is longer than {MAX_ID_BYTES} bytes"
    return None


@dataclass(frozen=True)
class RawSample:
    """An undecoded sample: the query as stored and a reference per image (path or bytes)."""

    sample_id: str
    query: object
    query_where: str
    images: dict[str, tuple[str, object]]  # key -> (where, Path | bytes | dict | None)


class FolderSource:
    """One split folder of the folder layout: one sub-folder per sample, sorted by name."""

    def __init__(self, split_dir: Path) -> None:
        self.split_dir = split_dir
        dirs = (p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.dirs = sorted(dirs, key=lambda p: p.name)
        self.ids = check_ids([p.name for p in self.dirs], self.describe())

    def describe(self) -> str:
        return f"folder layout at {self.split_dir}"

    def raw(self, index: int) -> RawSample:
        sample_dir = self.dirs[index]
        images = {key: (name, sample_dir / name) for key, name in FOLDER_FILES.items()}
        return RawSample(self.ids[index], *read_question(self.ids[index], sample_dir), images)

    def query(self, index: int) -> object:
        return read_question(self.ids[index], self.dirs[index])[0]


class ArrowSource:
    """A ``datasets.Dataset`` with the SocioSeg columns, read one row at a time."""

    def __init__(self, dataset: datasets.Dataset, description: str) -> None:
        missing = [c for c in HF_COLUMNS.values() if c not in dataset.column_names]
        if missing:
            raise DataError(
                f"{description}: missing column(s) {', '.join(missing)}; found columns "
                f"{dataset.column_names}; expected {', '.join(HF_COLUMNS.values())}"
            )
        self.description = description
        # Arrow format hands back stored bytes; decoding stays ours (one sample at a time).
        self.table = dataset.with_format("arrow")
        ids = [str(v) if isinstance(v, int) else v for v in self.table["id"].to_pylist()]
        self.ids = check_ids(ids, description)

    def describe(self) -> str:
        return self.description

    def _row(self, index: int, columns: Sequence[str]) -> dict[str, object]:
        row = self.table[index]
        return {c: row.column(c)[0].as_py() for c in columns}

    def raw(self, index: int) -> RawSample:
        columns = [HF_COLUMNS[k] for k in ("query", "map", "sat", "mask")]
        row = self._row(index, columns)
        images = {k: (f"column '{HF_COLUMNS[k]}'", row[HF_COLUMNS[k]]) for k in FOLDER_FILES}
        query_col = HF_COLUMNS["query"]
        return RawSample(self.ids[index], row[query_col], f"column '{query_col}'", images)

    def query(self, index: int) -> object:
        return self._row(index, [HF_COLUMNS["query"]])[HF_COLUMNS["query"]]


def read_question(sample_id: str, sample_dir: Path) -> tuple[object, str]:
    """The stored query of a folder-layout sample and where it came from (for messages)."""
    path = sample_dir / QUESTION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"sample {sample_id!r}: {QUESTION_FILE}: file not found at {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise DataError(f"sample {sample_id!r}: {QUESTION_FILE}: unreadable ({reason})") from exc
    if not isinstance(data, dict) or "problem" not in data:
        raise DataError(
            f"sample {sample_id!r}: {QUESTION_FILE}: expected an object with key 'problem', "
            f"got {str(data)[:80]!r}"
        )
    return data["problem"], f"{QUESTION_FILE} 'problem'"


# --- finding the split ---------------------------------------------------------------------


def open_source(
    source: str | PathLike[str] | Sequence[str | PathLike[str]], split: str, cache_dir: str | None
) -> FolderSource | ArrowSource:
    """The split ``split`` of ``source`` (a folder, data file(s) or a Hub id); see load_socioseg."""
    if isinstance(source, (list, tuple)):
        return _open_files([Path(f) for f in source], split, cache_dir)
    path = Path(source)
    if path.is_dir():
        return _open_dir(path, split, cache_dir)
    if path.is_file():
        return _open_files([path], split, cache_dir)
    from socioseg.hub import dataset_is_on_hub

    dataset_is_on_hub(str(source))  # a missing local path is never sent to the Hub
    return _open_hub(str(source), split, cache_dir)


def _open_dir(root: Path, split: str, cache_dir: str | None) -> FolderSource | ArrowSource:
    if (root / "dataset_dict.json").is_file():
        return _open_saved_dict(root, split)
    if (root / "state.json").is_file():  # a single Dataset.save_to_disk folder: the split itself
        return _open_saved(root, f"save_to_disk folder {root}")
    for name in _split_names(split):
        split_dir = root / name
        if split_dir.is_dir() and (split_dir / "state.json").is_file():
            return _open_saved(split_dir, f"save_to_disk folder {split_dir}")
        if split_dir.is_dir() and _has_sample_dirs(split_dir):
            return FolderSource(split_dir)
    data_files = _data_files(root)
    if not data_files:
        folder_splits = sorted(p.name for p in root.iterdir() if p.is_dir() and _has_sample_dirs(p))
        hint = ""
        if not folder_splits and _has_sample_dirs(root):
            hint = f"; {root} holds sample folders itself: pass its parent folder"
        elif (root / split).is_dir():
            hint = f"; {root / split} has no sample folders (<id>/{{{', '.join(_SAMPLE_FILES)}}})"
        raise DataError(
            f"{root}: no split {split!r}; folder-layout splits found: {folder_splits or 'none'}; "
            f"no parquet or arrow files found{hint}"
        )
    for name in _split_names(split):
        chosen = [f for f in data_files if name.lower() in _split_candidates(f, root)]
        if chosen:
            return _open_files(chosen, split, cache_dir)
    found = sorted({c for f in data_files for c in _split_candidates(f, root)} & set(_KNOWN_SPLITS))
    listing = ", ".join(str(f.relative_to(root)) for f in data_files[:10])
    more = f" and {len(data_files) - 10} more" if len(data_files) > 10 else ""
    raise DataError(
        f"{root}: no split {split!r} among the data files; splits found: {found or 'none'}; "
        f"files: {listing}{more}"
    )


def _open_files(files: list[Path], split: str, cache_dir: str | None) -> ArrowSource:
    import datasets

    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"data file not found: {f}")
    kinds = {f.suffix.lower() for f in files}
    if not kinds <= {".parquet", ".arrow"}:
        raise DataError(f"unsupported data file type(s) {sorted(kinds)}; use .parquet or .arrow")
    import pyarrow
    from datasets.exceptions import DatasetGenerationError

    shown = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
    parquet = [str(f) for f in files if f.suffix.lower() == ".parquet"]
    from datasets.utils import logging as datasets_logging

    verbosity = datasets_logging.get_verbosity()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)  # its errors are reported below
    try:
        parts = []
        if parquet:
            parts.append(
                datasets.load_dataset(
                    "parquet", data_files={split: parquet}, split=split, cache_dir=cache_dir
                )
            )
        parts += [datasets.Dataset.from_file(str(f)) for f in files if f.suffix.lower() == ".arrow"]
    except (pyarrow.ArrowException, DatasetGenerationError) as exc:
        cause = exc.__cause__ or exc
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise DataError(f"{shown}: not a readable data file ({reason})") from exc
    finally:
        datasets_logging.set_verbosity(verbosity)
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return ArrowSource(dataset, f"split {split!r} from {shown}")


def _open_saved_dict(root: Path, split: str) -> ArrowSource:
    try:
        splits = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{root / 'dataset_dict.json'}: unreadable ({exc})") from exc
    for name in _split_names(split):
        if name in splits:
            return _open_saved(root / name, f"split {name!r} of save_to_disk folder {root}")
    raise DataError(f"{root}: no split {split!r} in dataset_dict.json; splits found: {splits}")


def _open_saved(path: Path, description: str) -> ArrowSource:
    import datasets

    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        raise DataError(f"{path}: holds several splits {list(dataset)}; pass its parent folder")
    return ArrowSource(dataset, description)


def _open_hub(hub_id: str, split: str, cache_dir: str | None) -> ArrowSource:
    import datasets

    for name in _split_names(split):
        try:
            dataset = datasets.load_dataset(hub_id, split=name, cache_dir=cache_dir)
        except ValueError as exc:  # datasets' "Unknown split ..." lists the splits it has
            if "split" not in str(exc).lower():
                raise
            error = exc
            continue
        return ArrowSource(dataset, f"split {name!r} of Hub dataset {hub_id}")
    raise DataError(f"Hub dataset {hub_id!r}: no split {split!r} ({error})") from error


def _split_names(split: str) -> tuple[str, ...]:
    return SPLIT_ALIASES.get(split, (split,))


def _has_sample_dirs(folder: Path) -> bool:
    for child in folder.iterdir():
        if child.is_dir() and any((child / n).exists() for n in _SAMPLE_FILES):
            return True
    return False


def _data_files(root: Path, max_depth: int = 4) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if len(rel.parts) > max_depth or any(p.startswith(".") for p in rel.parts):
            continue
        if path.suffix.lower() in (".parquet", ".arrow") and path.is_file():
            found.append(path)
    return found


def _split_candidates(path: Path, root: Path) -> set[str]:
    """Split names a data file may belong to: its name's prefix and its folders under root."""
    names = {p.lower() for p in path.relative_to(root).parts[:-1]}
    match = re.match(r"^([A-Za-z]+)(?:[-_.]|$)", path.stem)
    if match:
        names.add(match.group(1).lower())
    return names
