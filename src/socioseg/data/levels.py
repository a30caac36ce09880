"""Query levels: which of socio-name / socio-class / socio-function a SocioSeg query is.

Neither on-disk layout of SocioSeg stores the level, so it comes from one of two places, in
this order:

1. a user-supplied mapping ``sample id -> level [, socio-class]`` (:class:`LevelMap`), read
   from CSV (columns ``id``, ``level`` and optionally ``class``) or JSON
   (``{id: level}`` or ``{id: {"level": ..., "class": ...}}``);
2. the query text itself, when it is one of the 10 socio-function names (exact match after
   stripping, case-insensitive).

Anything else is reported as ``"unknown"``: a name and a class query cannot be told apart
from the text alone, and guessing would silently skew per-level metrics.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from socioseg.types import LEVELS

FUNCTION_NAMES: tuple[str, ...] = (
    "Commercial service",
    "Sport and cultural",
    "Administrative",
    "Park and greenspace",
    "Business office",
    "Transportation stations",
    "Educational",
    "Industrial",
    "Medical",
    "Residential",
)
"""The 10 socio-functions (urban functional zones) of SocioSeg, as the queries spell them."""

_FUNCTION_KEYS: dict[str, str] = {name.lower(): name for name in FUNCTION_NAMES}


def function_name(query: str) -> str | None:
    """The canonical socio-function name ``query`` spells (stripped, case-insensitive), or None."""
    return _FUNCTION_KEYS.get(query.strip().lower())


class LevelFileError(ValueError):
    """A level mapping file is malformed; the message names the file, the row and the problem."""


@dataclass(frozen=True)
class LevelMap:
    """A mapping ``sample id -> (level, socio_class or None)``.

    Build it with :meth:`from_file` (CSV or JSON) or :meth:`from_dict`. Levels are validated
    against ``socioseg.types.LEVELS`` on construction.
    """

    entries: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    source: str = "<dict>"

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> LevelMap:
        """Read a ``.csv`` or ``.json`` level file (see the module docstring for the formats)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"level file not found: {path}")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            rows = _read_csv(path)
        elif suffix == ".json":
            rows = _read_json(path)
        else:
            raise LevelFileError(
                f"{path}: unsupported level file type {suffix!r}; use .csv or .json"
            )
        return cls._from_rows(rows, str(path))

    @classmethod
    def from_dict(cls, mapping: Mapping[str, object], source: str = "<dict>") -> LevelMap:
        """Build from ``{id: level}`` or ``{id: {"level": ..., "class": ...}}``."""
        return cls._from_rows(_json_rows(mapping, source), source)

    @classmethod
    def _from_rows(cls, rows: Iterable[tuple[str, str, object, object]], source: str) -> LevelMap:
        entries: dict[str, tuple[str, str | None]] = {}
        for where, sample_id, level, socio_class in rows:
            if not isinstance(sample_id, str) or not sample_id.strip():
                raise LevelFileError(f"{source}, {where}: empty sample id")
            if not isinstance(level, str) or level.strip().lower() not in LEVELS:
                raise LevelFileError(
                    f"{source}, {where}: invalid level {level!r} for id {sample_id!r}; "
                    f"valid levels: {', '.join(LEVELS)}"
                )
            if socio_class is not None and not isinstance(socio_class, str):
                raise LevelFileError(
                    f"{source}, {where}: class for id {sample_id!r} must be a string, "
                    f"got {socio_class!r}"
                )
            value = (level.strip().lower(), (socio_class or "").strip() or None)
            key = sample_id.strip()
            if key in entries and entries[key] != value:
                raise LevelFileError(
                    f"{source}, {where}: id {key!r} listed twice with different values "
                    f"{entries[key]} and {value}"
                )
            entries[key] = value
        return cls(entries=entries, source=source)

    def get(self, sample_id: str) -> tuple[str, str | None] | None:
        """``(level, socio_class)`` for ``sample_id``, or None when the id is not mapped."""
        return self.entries.get(sample_id)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def resolve_level(
    sample_id: str, query: str, level_map: LevelMap | None = None
) -> tuple[str, str | None]:
    """Level and socio-class of one sample: ``(level, socio_class or None)``.

    The mapping wins when it holds ``sample_id``; otherwise a query equal to one of
    :data:`FUNCTION_NAMES` is ``"socio-function"``; anything else is ``"unknown"``.
    """
    if level_map is not None:
        mapped = level_map.get(sample_id)
        if mapped is not None:
            return mapped
    if function_name(query) is not None:
        return "socio-function", None
    return "unknown", None


def _read_csv(path: Path) -> list[tuple[str, str, object, object]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("id", "level") if c not in columns]
        if missing:
            raise LevelFileError(
                f"{path}: missing column(s) {', '.join(missing)}; found columns {columns}; "
                "expected a header row 'id,level[,class]'"
            )
        rows = []
        # Row numbers count the header as line 1, like a spreadsheet shows them.
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): v for k, v in raw.items()}
            rows.append((f"row {line}", row.get("id") or "", row.get("level"), row.get("class")))
        return rows


def _read_json(path: Path) -> list[tuple[str, str, object, object]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise LevelFileError(f"{path}: not valid JSON ({reason})") from exc
    return _json_rows(data, str(path))


def _json_rows(data: object, source: str) -> list[tuple[str, str, object, object]]:
    if not isinstance(data, Mapping):
        raise LevelFileError(
            f"{source}: expected a JSON object {{id: level}} or {{id: {{'level': ..., "
            f"'class': ...}}}}, got {type(data).__name__}"
        )
    rows = []
    for sample_id, value in data.items():
        where = f"entry {sample_id!r}"
        if isinstance(value, Mapping):
            if "level" not in value:
                raise LevelFileError(f"{source}, {where}: object has no 'level' key")
            rows.append((where, sample_id, value["level"], value.get("class")))
        else:
            rows.append((where, sample_id, value, None))
    return rows
