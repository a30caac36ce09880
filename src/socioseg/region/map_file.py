"""A map GeoTIFF that socioseg wrote carries a tag saying so, and what it was made from.

Only such a file is ever replaced (``map --overwrite``) or reused (a ``segment-area`` rerun
with the same map source); any other file is the user's.
"""

from __future__ import annotations

import json
from pathlib import Path

MADE_TAG = "SOCIOSEG_MAP"  # the tag's name; its value: the map source's description as JSON
NOTES_TAG = "SOCIOSEG_NOTES"  # what the user should know about the map, a JSON list of lines


def made_tag(description: dict) -> str:
    """The tag's value for a map made from a source with this ``describe()``."""
    return json.dumps(description, sort_keys=True)


def _tag(path: Path, name: str = MADE_TAG) -> str | None:
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file() or path.is_symlink():
        return None
    try:
        import rasterio
    except ImportError:  # without socioseg[gis] no map was made here
        return None
    try:
        with rasterio.open(path) as ds:
            return ds.tags().get(name)
    except rasterio.errors.RasterioIOError:
        return None


def map_notes(path: Path) -> list[str]:
    """The notes a map socioseg made carries (skipped OSM nodes, ...); ``[]`` for any other."""
    if _tag(path) is None:
        return []
    try:
        notes = json.loads(_tag(path, NOTES_TAG) or "[]")
    except ValueError:
        return []
    return [n for n in notes if isinstance(n, str)] if isinstance(notes, list) else []


def is_our_map(path: Path) -> bool:
    """Whether ``path`` is a map GeoTIFF socioseg wrote."""
    return _tag(path) is not None


def map_made_from(path: Path, description: dict) -> bool:
    """Whether ``path`` is a map socioseg made from a source with this ``describe()``."""
    return _tag(path) == made_tag(description)
