"""SocioSeg loading: both on-disk layouts, the Hub, lazy per-sample decoding, strict validation.

Layouts (SPEC section 2):

- folder: ``<root>/<split>/<sample_id>/{map.png, sat.png, mask.png, question.json}``, where
  ``question.json`` is ``{"problem": "<query>"}``;
- Hugging Face: parquet or arrow with columns ``id``, ``problem``, ``map_image``, ``sat_image``,
  ``mask_label`` (Image features), on disk (``data/<split>-*.parquet``, ``<split>/*.parquet``,
  ``save_to_disk`` folders, loose ``.arrow`` files) or on the Hub (``vvangfaye/SocioSeg``).

Nothing is decoded when a dataset is built: ``dataset[i]`` reads and checks sample ``i`` only.
A sample that fails a check raises :class:`DataError` naming the sample, the file or field and
the problem; with ``on_error="skip"`` iteration skips it and records why in
``dataset.skipped``. A broken sample never turns into an empty mask or an empty query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from socioseg.data.levels import LevelMap, resolve_level
from socioseg.data.sources import (
    FOLDER_FILES,
    HF_COLUMNS,
    QUESTION_FILE,
    ArrowSource,
    DataError,
    FolderSource,
    RawSample,
    open_source,
    read_question,
)
from socioseg.geometry import same_aspect
from socioseg.images import SIXTEEN_BIT_MODES

__all__ = [
    "FOLDER_FILES",
    "HF_COLUMNS",
    "QUESTION_FILE",
    "DataError",
    "Sample",
    "SocioSegDataset",
    "load_sample_dir",
    "load_socioseg",
    "mask_from_image",
]

OnError = Literal["raise", "skip"]
LEVELS_FILE = "levels.json"  # beside a dataset: used unless levels are given
ON_ERROR: tuple[str, ...] = ("raise", "skip")


@dataclass(frozen=True)
class Sample:
    """One SocioSeg sample.

    ``sat`` and ``map`` are RGB images of the same extent (their sizes may differ, their aspect
    ratios may not). ``mask`` is ``H x W`` ``bool`` in the satellite image frame (``H x W`` =
    ``sat.height x sat.width``), True on the queried entity. ``level`` is one of
    ``socioseg.types.LEVELS``; ``socio_class`` is the target's POI class when known.
    """

    id: str
    query: str
    sat: Image.Image
    map: Image.Image
    mask: np.ndarray
    level: str = "unknown"
    socio_class: str | None = None


class SocioSegDataset:
    """A lazy, validated sequence of :class:`Sample`.

    ``len(ds)`` and ``ds.ids`` need no decoding; ``ds[i]`` decodes and checks sample ``i`` only
    (raising :class:`DataError` when it is broken, whatever ``on_error`` says). Iteration yields
    samples in order; with ``on_error="skip"`` broken ones are left out and listed in
    :attr:`skipped` as ``(id, reason)``.
    """

    def __init__(
        self,
        source: FolderSource | ArrowSource,
        split: str,
        levels: LevelMap | None = None,
        on_error: OnError = "raise",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self._source = source
        self.split = split
        self.level_map = levels
        self.on_error = on_error
        self._skipped: dict[str, str] = {}

    def __repr__(self) -> str:
        return (
            f"SocioSegDataset(split={self.split!r}, n={len(self)}, "
            f"source={self._source.describe()!r})"
        )

    def __len__(self) -> int:
        return len(self._source.ids)

    @property
    def ids(self) -> list[str]:
        """Sample ids in dataset order (no decoding)."""
        return list(self._source.ids)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(sample id, reason)`` for every sample iteration skipped (``on_error="skip"``)."""
        return list(self._skipped.items())

    def __getitem__(self, index: int) -> Sample:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return _decode(self._source.raw(int(index) % n), self.level_map)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            try:
                sample = self[index]
            except DataError as exc:
                if self.on_error == "raise":
                    raise
                self._skipped[self._source.ids[index]] = str(exc)
                continue
            yield sample

    def query(self, index: int) -> str:
        """The query of sample ``index``, without decoding any image."""
        sample_id = self._source.ids[index]
        return _check_query(sample_id, self._source.query(index), "query")

    def place(self, index: int) -> bytes:
        """A digest of sample ``index``'s satellite image and map as stored (their encoded
        bytes, read, not decoded): samples with the same digest show the same place. The
        same picture stored with other bytes (re-encoded) counts as another place."""
        raw = self._source.raw(index)
        digest = hashlib.sha256()
        for key in ("sat", "map"):
            where, ref = raw.images[key]
            if isinstance(ref, dict):  # a datasets Image feature: {"bytes": ..., "path": ...}
                ref = ref.get("bytes") or ref.get("path")
            if isinstance(ref, (bytes, bytearray, memoryview)):
                digest.update(len(ref).to_bytes(8, "little"))
                digest.update(ref)
            elif isinstance(ref, (str, Path)) and Path(ref).is_file():
                digest.update(Path(ref).stat().st_size.to_bytes(8, "little"))
                with open(ref, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            else:
                what = "missing" if ref is None or isinstance(ref, (str, Path)) else "not an image"
                raise DataError(f"sample {raw.sample_id!r}: {where}: image is {what}")
        return digest.digest()

    def level(self, index: int) -> tuple[str, str | None]:
        """``(level, socio_class)`` of sample ``index``, without decoding any image."""
        return resolve_level(self._source.ids[index], self.query(index), self.level_map)


def load_socioseg(
    source: str | PathLike[str] | Sequence[str | PathLike[str]],
    split: str = "test",
    levels: LevelMap | str | PathLike[str] | None = None,
    on_error: OnError = "raise",
    *,
    cache_dir: str | PathLike[str] | None = None,
) -> SocioSegDataset:
    """Open one split of SocioSeg without decoding any image.

    ``source`` is one of:

    - a folder in the folder layout (``<source>/<split>/<id>/...``);
    - a folder of Hugging Face data files: ``<split>-*.parquet`` / ``<split>.parquet`` /
      ``.arrow`` files at any depth up to 4 (``data/test-00000-of-00001.parquet``), or files
      under a ``<split>/`` folder; ``"val"`` also finds ``validation``;
    - a ``save_to_disk`` folder (a DatasetDict, or a single Dataset taken as the split);
    - a parquet/arrow file or a list of them, taken as the split as they are;
    - a Hub dataset id such as ``"vvangfaye/SocioSeg"`` (when no such path exists).

    Parquet is converted once by ``datasets`` into its cache (``cache_dir``, default the
    ``datasets`` cache); arrow files and ``save_to_disk`` folders are memory-mapped in place.
    ``levels`` is a :class:`LevelMap` or a path to a CSV/JSON level file (see
    :mod:`socioseg.data.levels`); when None, a ``levels.json`` in the ``source`` folder (as
    ``socioseg synth`` writes it) is used if there is one (``dataset.level_map.source`` says
    which file). ``on_error``: ``"raise"`` or ``"skip"`` (see
    :class:`SocioSegDataset`). Raises :class:`DataError` when the split is missing (listing the
    splits found) or columns are missing; ``FileNotFoundError`` for a path that does not exist.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if levels is None:
        levels = _levels_beside(source)
    if levels is None or isinstance(levels, LevelMap):
        level_map = levels
    else:
        level_map = LevelMap.from_file(levels)
    src = open_source(source, split, None if cache_dir is None else str(cache_dir))
    return SocioSegDataset(src, split, level_map, on_error)


def _levels_beside(source: object) -> Path | None:
    """``<source>/levels.json`` when ``source`` is a local folder that has one."""
    if isinstance(source, (str, PathLike)):
        candidate = Path(source) / LEVELS_FILE
        if candidate.is_file():
            return candidate
    return None


def load_sample_dir(sample_dir: str | PathLike[str], levels: LevelMap | None = None) -> Sample:
    """Load one folder-layout sample directory (``map.png, sat.png, mask.png, question.json``)."""
    sample_dir = Path(sample_dir)
    if not sample_dir.is_dir():
        raise FileNotFoundError(f"sample folder not found: {sample_dir}")
    images = {key: (name, sample_dir / name) for key, name in FOLDER_FILES.items()}
    return _decode(
        RawSample(sample_dir.name, *read_question(sample_dir.name, sample_dir), images), levels
    )


# --- decoding and validation ---------------------------------------------------------------


def _decode(raw: RawSample, level_map: LevelMap | None) -> Sample:
    query = _check_query(raw.sample_id, raw.query, raw.query_where)
    sat = _open_image(raw.sample_id, *raw.images["sat"], mode="RGB")
    map_image = _open_image(raw.sample_id, *raw.images["map"], mode="RGB")
    mask_image = _open_image(raw.sample_id, *raw.images["mask"], mode=None)
    if mask_image.size != sat.size:
        raise DataError(
            f"sample {raw.sample_id!r}: {raw.images['mask'][0]}: mask size {_wxh(mask_image.size)} "
            f"differs from the satellite image size {_wxh(sat.size)}"
        )
    if not same_aspect(sat.size, map_image.size):
        raise DataError(
            f"sample {raw.sample_id!r}: {raw.images['map'][0]}: map size {_wxh(map_image.size)} "
            f"has a different aspect ratio from the satellite image {_wxh(sat.size)}"
        )
    mask = mask_from_image(mask_image)
    level, socio_class = resolve_level(raw.sample_id, query, level_map)
    return Sample(raw.sample_id, query, sat, map_image, mask, level, socio_class)


def mask_from_image(image: Image.Image) -> np.ndarray:
    """The SocioSeg mask rule: H x W bool, True where the grayscale value is > 0.

    Single-channel images of any depth (16-bit, 32-bit, float) are compared with 0 as stored,
    so a 16-bit value of 1 is foreground; other modes go through Pillow's grayscale.
    """
    if image.mode in ("I", "F", *SIXTEEN_BIT_MODES):
        return np.asarray(image) > 0
    return np.asarray(image.convert("L")) > 0


def _check_query(sample_id: str, query: object, where: str) -> str:
    if not isinstance(query, str):
        raise DataError(
            f"sample {sample_id!r}: {where}: query must be a string, got {type(query).__name__}"
        )
    if not query.strip():
        raise DataError(f"sample {sample_id!r}: {where}: query is empty")
    return query.strip()


def _open_image(sample_id: str, where: str, ref: object, mode: str | None) -> Image.Image:
    """Decode one image fully (:func:`socioseg.images.read_image`: truncated files fail here)."""
    from socioseg.images import ImageError, read_image

    if isinstance(ref, dict):  # a datasets Image feature: {"bytes": ..., "path": ...}
        ref = ref.get("bytes") or ref.get("path")
    if ref is None:
        raise DataError(f"sample {sample_id!r}: {where}: image is missing (null)")
    if not isinstance(ref, (str, Path, bytes, bytearray, memoryview)):
        raise DataError(f"sample {sample_id!r}: {where}: not an image ({type(ref).__name__})")
    try:
        return read_image(ref, f"sample {sample_id!r}: {where}", mode=mode)
    except ImageError as exc:
        raise DataError(str(exc)) from exc


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
